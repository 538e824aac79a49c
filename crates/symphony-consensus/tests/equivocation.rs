//! A master signing two roots for one index is caught; the evidence verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{command, Cluster};
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use symphony_consensus::{
    AddOutcome, CertificateCollector, CertificateError, EquivocationEvidence, MasterKeys,
    SignedStatement, Tuning,
};

fn three_keys() -> (MasterKeys, BTreeMap<u64, SigningKey>) {
    let signing: BTreeMap<u64, SigningKey> = (1..=3)
        .map(|id| (id, SigningKey::generate(&mut OsRng)))
        .collect();
    let keys = MasterKeys::new(
        "c",
        signing
            .iter()
            .map(|(id, k)| (*id, k.verifying_key()))
            .collect(),
    );
    (keys, signing)
}

#[test]
fn collector_keeps_equivocation_evidence() {
    let (keys, signing) = three_keys();
    let collector = CertificateCollector::new(keys.clone());
    let root_a = [1u8; 32];
    let root_b = [2u8; 32];
    let a1 = SignedStatement::sign("c", 7, root_a, 1, &signing[&1]);
    let b1 = SignedStatement::sign("c", 7, root_b, 1, &signing[&1]);
    assert_eq!(collector.add(a1.clone()).unwrap(), AddOutcome::Recorded);
    assert_eq!(collector.add(a1.clone()).unwrap(), AddOutcome::Duplicate);
    let AddOutcome::Equivocation(evidence) = collector.add(b1.clone()).unwrap() else {
        panic!("equivocation not detected");
    };
    assert_eq!(evidence.signer(), 1);
    assert_eq!(
        (evidence.first.clone(), evidence.second.clone()),
        (a1.clone(), b1.clone())
    );
    evidence.verify(&keys).unwrap();
    assert_eq!(collector.evidence(), vec![*evidence.clone()]);
    // The equivocator's second root does not count: root A becomes final with node 2.
    let a2 = SignedStatement::sign("c", 7, root_a, 2, &signing[&2]);
    let AddOutcome::Finalized(certificate) = collector.add(a2).unwrap() else {
        panic!("index 7 should be final");
    };
    assert_eq!(certificate.state_root, root_a);
    assert!(certificate.is_final(&keys));
    assert_eq!(collector.final_index(), Some(7));

    // Evidence that is not an equivocation, or whose signature was tampered with, fails.
    let same = EquivocationEvidence {
        first: a1.clone(),
        second: a1.clone(),
    };
    assert_eq!(same.verify(&keys), Err(CertificateError::NotEquivocation));
    let other_signer = EquivocationEvidence {
        first: a1.clone(),
        second: SignedStatement::sign("c", 7, root_b, 2, &signing[&2]),
    };
    assert_eq!(
        other_signer.verify(&keys),
        Err(CertificateError::NotEquivocation)
    );
    let mut tampered = (*evidence).clone();
    tampered.second.state_root = [3u8; 32];
    assert!(matches!(
        tampered.verify(&keys),
        Err(CertificateError::BadSignature { signer: 1, .. })
    ));
    // Forged statements are refused outright and never become evidence.
    let forged = SignedStatement::sign("c", 8, root_a, 3, &SigningKey::generate(&mut OsRng));
    assert!(matches!(
        collector.add(forged),
        Err(CertificateError::BadSignature { .. })
    ));
    let unknown = SignedStatement::sign("c", 8, root_a, 9, &signing[&1]);
    assert_eq!(
        collector.add(unknown),
        Err(CertificateError::UnknownSigner { signer: 9 })
    );
    assert_eq!(collector.evidence().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_node_detects_master_signing_conflicting_root() {
    let test = async {
        let cluster = Cluster::start(Tuning::default()).await;
        let (_, certificate) = cluster.node(1).client_write(command(1)).await.unwrap();
        // Wait until node 3's honest statement reached node 1.
        let node1 = cluster.node(1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while node1
            .collector()
            .certificate(certificate.log_index)
            .map(|c| c.signatures.len())
            != Some(3)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "all three masters sign"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Master 3 now signs a different root for the same index.
        let mut bad_root = certificate.state_root;
        bad_root[0] ^= 0xff;
        let conflicting = SignedStatement::sign(
            common::CLUSTER_ID,
            certificate.log_index,
            bad_root,
            3,
            &cluster.signing_keys[&3],
        );
        let outcome = node1.collector().add(conflicting).unwrap();
        assert!(matches!(outcome, AddOutcome::Equivocation(_)));
        let evidence = node1.collector().evidence();
        assert_eq!(evidence.len(), 1);
        assert_eq!(evidence[0].signer(), 3);
        evidence[0].verify(&cluster.keys).unwrap();
        // Evidence verifies for anyone holding the master keys, e.g. after transport.
        let bytes = serde_json::to_vec(&evidence[0]).unwrap();
        let decoded: EquivocationEvidence = serde_json::from_slice(&bytes).unwrap();
        decoded.verify(&cluster.keys).unwrap();
        cluster.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .unwrap();
}
