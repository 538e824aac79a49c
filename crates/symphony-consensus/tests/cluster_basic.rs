//! Three masters on loopback: replication, equal roots, final certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{command, Cluster, CounterSet};
use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;
use symphony_consensus::{certificate::statement_bytes, CertificateError, Tuning};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_from_any_node_commit_with_final_certificates() {
    let cluster = tokio::time::timeout(Duration::from_secs(20), Cluster::start(Tuning::default()))
        .await
        .unwrap();
    let test = async {
        assert!(matches!(
            cluster.node(2).initialize_cluster().await,
            Err(symphony_consensus::ConsensusError::AlreadyInitialized)
        ));
        let mut certificates = Vec::new();
        for id in 0..30u64 {
            let node = cluster.node(id % 3 + 1);
            let (response, certificate) = node.client_write(command(id)).await.unwrap();
            assert_eq!(
                response,
                1u32.to_be_bytes().to_vec(),
                "first application of {id}"
            );
            assert!(certificate.is_final(&cluster.keys));
            assert!(certificate.valid_signers(&cluster.keys).len() >= 2);
            assert!(node.final_index() >= Some(certificate.log_index));
            certificates.push(certificate);
        }
        let indices: Vec<u64> = certificates.iter().map(|c| c.log_index).collect();
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "indices grow: {indices:?}"
        );

        let (index, root) = cluster.wait_converged(Duration::from_secs(10)).await;
        assert!(index >= *indices.last().unwrap());
        for node in cluster.running() {
            node.with_state(|s: &CounterSet| {
                assert_eq!(s.counts.len(), 30);
                assert!(s.counts.values().all(|c| *c == 1));
            });
            assert_eq!(node.state_root(), (Some(index), root));
        }
        // The last certificate certifies the root every node holds at that index.
        let last = certificates.last().unwrap();
        if last.log_index == index {
            assert_eq!(last.state_root, root);
        }

        // One signature is not final.
        let mut single = last.clone();
        let keep = *single.signatures.keys().next().unwrap();
        single.signatures.retain(|id, _| *id == keep);
        assert!(!single.is_final(&cluster.keys));
        assert!(matches!(
            single.verify(&cluster.keys),
            Err(CertificateError::NotFinal {
                valid_count: 1,
                quorum: 2,
                ..
            })
        ));

        // A forged signature (right signer id, wrong key) is rejected.
        let forger = SigningKey::generate(&mut OsRng);
        let mut forged = last.clone();
        let victim = *forged.signatures.keys().next().unwrap();
        let bad = forger.sign(&statement_bytes(
            &forged.cluster_id,
            forged.log_index,
            &forged.state_root,
        ));
        forged.signatures.insert(victim, bad);
        assert!(!forged.is_final(&cluster.keys));
        assert!(matches!(
            forged.verify(&cluster.keys),
            Err(CertificateError::BadSignature { .. })
        ));
        // A valid signature moved to another root is rejected too.
        let mut moved = last.clone();
        moved.state_root[0] ^= 1;
        assert!(!moved.is_final(&cluster.keys));
        // Three signatures, one forged: only the two genuine ones count as valid signers.
        let mut padded = last.clone();
        for (id, key) in &cluster.signing_keys {
            padded.signatures.insert(
                *id,
                key.sign(&statement_bytes(
                    &padded.cluster_id,
                    padded.log_index,
                    &padded.state_root,
                )),
            );
        }
        padded.signatures.insert(victim, bad);
        assert_eq!(padded.valid_signers(&cluster.keys).len(), 2);
        assert!(
            !padded.is_final(&cluster.keys),
            "a forged signature taints the certificate"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_from_the_network_and_oversized_commands_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let test = async {
        let cluster = Cluster::start(Tuning::default()).await;
        let node = cluster.node(2);

        // A well-framed but undecodable request gets an answer, and the connection lives.
        let mut stream = tokio::net::TcpStream::connect(node.local_addr())
            .await
            .unwrap();
        let garbage = [0xffu8; 16];
        stream
            .write_all(&(garbage.len() as u32).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&garbage).await.unwrap();
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.unwrap();
        assert!(u32::from_be_bytes(len) > 0, "a BadRequest answer");

        // A frame length above the limit closes the connection without reading it.
        let mut stream = tokio::net::TcpStream::connect(node.local_addr())
            .await
            .unwrap();
        stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "connection closed: {read:?}"
        );

        // Oversized commands are refused before anything is proposed.
        let too_big = vec![0u8; Tuning::default().max_command_bytes + 1];
        let refused = node.client_write(too_big).await;
        assert!(matches!(
            refused,
            Err(symphony_consensus::ConsensusError::CommandTooLarge { .. })
        ));

        // The cluster is unaffected.
        let (response, certificate) = node.client_write(command(7)).await.unwrap();
        assert_eq!(response, 1u32.to_be_bytes().to_vec());
        assert!(certificate.is_final(&cluster.keys));
        cluster.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .unwrap();
}

#[tokio::test]
async fn config_with_foreign_signing_key_is_refused() {
    let cluster = Cluster::start(Tuning::default()).await;
    let mut config = cluster.configs[&1].clone();
    config.signing_key = SigningKey::generate(&mut OsRng);
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    let refused = symphony_consensus::ConsensusNode::start(config, CounterSet::default()).await;
    let Err(symphony_consensus::ConsensusError::Config(message)) = refused else {
        panic!("expected a configuration error");
    };
    assert!(message.contains("signing_key"), "{message}");
    cluster.shutdown().await;
}
