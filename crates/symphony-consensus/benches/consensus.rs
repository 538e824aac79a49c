//! Throughput, write latency and failover time of a 3-master cluster on loopback,
//! fsync on (redb `Durability::Immediate`). Prints figures; no assertions on speed.
//!
//! `BENCH_CLIENTS` (default 256) concurrent clients, `BENCH_SECS` (default 5) per phase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{command, Cluster, Node};
use symphony_consensus::Tuning;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `clients` tasks write unique ids for `secs` through the given nodes (round robin).
async fn write_phase(
    name: &str,
    nodes: Vec<Node>,
    clients: u64,
    secs: u64,
    next_id: Arc<AtomicU64>,
) {
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let node = nodes[(c as usize) % nodes.len()].clone();
        let next_id = next_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match node.client_write(command(id)).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{name}: {clients} clients, {:.0} final commands/s ({} in {elapsed:.1}s, {errors} errors), \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len() as f64 / elapsed,
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn failover_phase(cluster: &mut Cluster, rounds: u32) {
    let mut elections = Vec::new();
    let mut first_writes = Vec::new();
    for round in 0..rounds {
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        let killed_at = Instant::now();
        cluster.stop(leader).await;
        let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
        elections.push(killed_at.elapsed());
        // Time until a client write is final again (through the new leader).
        let id = 900_000_000 + u64::from(round);
        cluster
            .node(new_leader)
            .client_write(command(id))
            .await
            .unwrap();
        first_writes.push(killed_at.elapsed());
        cluster.restart(leader).await;
        cluster.wait_converged(Duration::from_secs(20)).await;
    }
    let ms = |d: &Vec<Duration>| {
        d.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "leader stopped -> new leader agreed by survivors (ms): [{}]",
        ms(&elections)
    );
    println!(
        "leader stopped -> first final write (ms): [{}]",
        ms(&first_writes)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clients = env_or("BENCH_CLIENTS", 256);
        let secs = env_or("BENCH_SECS", 5);
        let defaults = Tuning::default();
        let tuning = Tuning {
            max_batches_in_flight: env_or("BENCH_IN_FLIGHT", defaults.max_batches_in_flight as u64) as usize,
            ..defaults
        };
        println!(
            "3 masters on 127.0.0.1, redb Durability::Immediate, heartbeat {} ms, election {}-{} ms",
            tuning.heartbeat_interval_ms, tuning.election_timeout_min_ms, tuning.election_timeout_max_ms
        );
        let mut cluster = Cluster::start(tuning).await;
        let next_id = Arc::new(AtomicU64::new(0));
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        write_phase("sequential (1 client, via leader)", vec![cluster.node(leader)], 1, secs.min(2), next_id.clone()).await;
        write_phase("concurrent via leader", vec![cluster.node(leader)], clients, secs, next_id.clone()).await;
        write_phase("concurrent via all 3 nodes (followers forward)", cluster.running(), clients, secs, next_id.clone()).await;
        failover_phase(&mut cluster, 3).await;
        cluster.shutdown().await;
    });
}
