//! Crash faults on loopback: leader killed mid-writes, one and two masters down,
//! restart from the redb files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{command, Cluster, CounterSet, Node};
use symphony_consensus::{ConsensusError, Tuning};

const TEST_LIMIT: Duration = Duration::from_secs(90);

fn failover_tuning() -> Tuning {
    Tuning {
        // Small snapshots so a restarted node must catch up by snapshot.
        snapshot_every_entries: 20,
        log_entries_kept_after_snapshot: 5,
        write_timeout_ms: 4_000,
        ..Tuning::default()
    }
}

/// Every acknowledged id applied exactly once on every running node; nothing twice.
fn assert_exactly_once(cluster: &Cluster, acked: &BTreeSet<u64>) {
    for node in cluster.running() {
        node.with_state(|s: &CounterSet| {
            for id in acked {
                assert_eq!(
                    s.counts.get(id),
                    Some(&1),
                    "acked id {id} on node {}",
                    node.metrics().node_id
                );
            }
            assert!(
                s.counts.values().all(|c| *c == 1),
                "some command applied twice"
            );
        });
    }
}

struct ClientLog {
    acked: Vec<u64>,
    acked_after_kill: usize,
    failed: Vec<u64>,
}

async fn run_client(
    node: Node,
    first_id: u64,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
) -> ClientLog {
    let mut log = ClientLog {
        acked: Vec::new(),
        acked_after_kill: 0,
        failed: Vec::new(),
    };
    let mut id = first_id;
    while !stop.load(Ordering::Relaxed) {
        match node.client_write(command(id)).await {
            Ok((response, _certificate)) => {
                assert_eq!(response, 1u32.to_be_bytes().to_vec());
                log.acked.push(id);
                if killed.load(Ordering::Relaxed) {
                    log.acked_after_kill += 1;
                }
            }
            Err(_) => {
                log.failed.push(id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        id += 1;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_writes_then_restarts_and_catches_up() {
    let test = async {
        let mut cluster = Cluster::start(failover_tuning()).await;
        let old_leader = cluster.wait_leader(Duration::from_secs(10)).await;
        for id in 0..10 {
            cluster
                .node(old_leader)
                .client_write(command(id))
                .await
                .unwrap();
        }

        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for (n, node) in cluster.running().into_iter().enumerate() {
            for c in 0..2u64 {
                let first_id = 1_000_000 * (n as u64 * 2 + c + 1);
                clients.push(tokio::spawn(run_client(
                    node.clone(),
                    first_id,
                    stop.clone(),
                    killed.clone(),
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let old_log_index = cluster.node(old_leader).metrics().last_log_index.unwrap();
        let killed_at = Instant::now();
        cluster.stop(old_leader).await;
        killed.store(true, Ordering::Relaxed);
        let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
        let election = killed_at.elapsed();
        assert_ne!(new_leader, old_leader);
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop.store(true, Ordering::Relaxed);
        let mut acked: BTreeSet<u64> = (0..10).collect();
        let mut acked_after_kill = 0;
        for client in clients {
            let log = client.await.unwrap();
            acked.extend(log.acked);
            acked_after_kill += log.acked_after_kill;
            let _ = log.failed;
        }
        assert!(
            acked_after_kill > 0,
            "writes continue after the leader is killed"
        );
        eprintln!(
            "new leader after {election:?}; {} acknowledged writes",
            acked.len()
        );
        cluster.wait_converged(Duration::from_secs(10)).await;
        assert_exactly_once(&cluster, &acked);

        // Push the survivors' logs (and snapshots) well past what the old leader holds.
        for id in 0..60u64 {
            let node = cluster.node(new_leader);
            node.client_write(command(100_000_000 + id)).await.unwrap();
            acked.insert(100_000_000 + id);
        }
        cluster.restart(old_leader).await;
        let (index, _root) = cluster.wait_converged(Duration::from_secs(20)).await;
        let restarted = cluster.node(old_leader);
        assert!(index > old_log_index);
        let snapshot_index = restarted.metrics().snapshot_index.unwrap();
        assert!(
            snapshot_index > old_log_index,
            "restarted node caught up by snapshot ({snapshot_index} > {old_log_index})"
        );
        assert_exactly_once(&cluster, &acked);
        // It takes writes again, and certificates include its signature eventually.
        let (_, certificate) = restarted.client_write(command(200_000_000)).await.unwrap();
        assert!(certificate.is_final(&cluster.keys));
        cluster.shutdown().await;
    };
    tokio::time::timeout(TEST_LIMIT, test).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_down_commits_two_down_refuses_then_recovers() {
    let test = async {
        let tuning = Tuning {
            write_timeout_ms: 1_500,
            ..failover_tuning()
        };
        let mut cluster = Cluster::start(tuning).await;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        let mut acked = BTreeSet::new();
        for id in 0..9u64 {
            cluster
                .node(id % 3 + 1)
                .client_write(command(id))
                .await
                .unwrap();
            acked.insert(id);
        }

        cluster.stop(followers[0]).await;
        for id in 10..20u64 {
            let via = if id % 2 == 0 { leader } else { followers[1] };
            cluster.node(via).client_write(command(id)).await.unwrap();
            acked.insert(id);
        }

        cluster.stop(followers[1]).await;
        let started = Instant::now();
        let refused = cluster.node(leader).client_write(command(100)).await;
        let waited = started.elapsed();
        assert!(
            matches!(refused, Err(ConsensusError::Unavailable { .. })),
            "two masters down: {refused:?}"
        );
        assert!(
            waited < Duration::from_millis(2_500),
            "bounded refusal, took {waited:?}"
        );
        assert!(refused.unwrap_err().to_string().contains("no quorum"));

        cluster.restart(followers[0]).await;
        cluster.restart(followers[1]).await;
        cluster.wait_leader(Duration::from_secs(10)).await;
        for id in 20..30u64 {
            cluster
                .node(id % 3 + 1)
                .client_write(command(id))
                .await
                .unwrap();
            acked.insert(id);
        }
        cluster.wait_converged(Duration::from_secs(10)).await;
        assert_exactly_once(&cluster, &acked);
        cluster.shutdown().await;
    };
    tokio::time::timeout(TEST_LIMIT, test).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_cluster_restart_restores_from_redb() {
    let test = async {
        let mut cluster = Cluster::start(failover_tuning()).await;
        let mut acked = BTreeSet::new();
        for id in 0..50u64 {
            cluster
                .node(id % 3 + 1)
                .client_write(command(id))
                .await
                .unwrap();
            acked.insert(id);
        }
        let (_, root_before) = cluster.wait_converged(Duration::from_secs(10)).await;
        for id in 1..=3 {
            cluster.stop(id).await;
        }
        for id in 1..=3 {
            cluster.restart(id).await;
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        // A new leader commits a blank entry; roots only change on commands.
        let (_, root_after) = cluster.wait_converged(Duration::from_secs(10)).await;
        assert_eq!(root_before, root_after);
        assert_exactly_once(&cluster, &acked);
        for node in cluster.running() {
            node.with_state(|s: &CounterSet| assert_eq!(s.counts.len(), 50));
        }
        cluster.node(1).client_write(command(50)).await.unwrap();
        cluster.shutdown().await;
    };
    tokio::time::timeout(TEST_LIMIT, test).await.unwrap();
}
