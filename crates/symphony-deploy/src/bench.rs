//! Benchmark of admission on a 3-master cluster on loopback: mutual TLS between the
//! masters, fsync on every Raft write (the crate's durability contract), the deployed
//! state machine. An *admitted task* is a `Submit` command replicated and final with
//! 2 of 3 signatures: the point where the gateway answers `202`. The gateway's HTTP
//! and signature checks are not in the loop (they scale with gateways, not with
//! consensus); the campaign execution that follows is not either.
//!
//! Measured (`symphony bench admission --tasks 30000`, release build, 2 shared cores,
//! loopback, mutual TLS, fsync on): 64 in flight 6.3–8.6k tasks/s, p50 6.5–9.0 ms,
//! p99 13.8–19.5 ms; 128 in flight 13.8k tasks/s, p99 15 ms; 256 in flight 12k tasks/s,
//! p99 32 ms. Leader stopped: new leader after 0.54–0.66 s. A debug build on a loaded
//! machine misses openraft's per-RPC deadline (the heartbeat interval) and re-elects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use symphony_consensus::Tuning;
use symphony_node::network::CampaignSpec;
use tokio::sync::Semaphore;

use crate::loopback::{empty_genesis, leader_of, start_nodes, LoopbackOptions, Node};
use crate::state::DeployCommand;
use crate::DeployError;

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionFigures {
    /// Tasks admitted.
    pub tasks: u64,
    /// Concurrent submitters.
    pub concurrency: usize,
    /// Admitted tasks per second.
    pub tasks_per_s: f64,
    /// Median admission latency.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Time from killing the leader to a new leader being known to the survivors.
    pub leader_change_ms: f64,
    /// First write accepted after the kill, from the kill.
    pub first_write_after_kill_ms: f64,
}

async fn start_cluster(dir: &std::path::Path) -> Result<Vec<Node>, DeployError> {
    let options = LoopbackOptions {
        cluster_id: "bench".into(),
        key_seed: None,
        mutual_tls: std::env::var_os("SYMPHONY_BENCH_PLAINTEXT").is_none(),
        // Entries of ~256 submissions (~180 KB): a follower appends and fsyncs one
        // within openraft's per-RPC deadline (the heartbeat interval) even on a
        // loaded machine; 1,024 (~700 KB) timed out on 2 busy cores.
        tuning: Tuning {
            max_batch_commands: 256,
            ..Tuning::default()
        },
    };
    Ok(start_nodes(dir, &empty_genesis(), &options).await?.0)
}

fn submission(spec: &CampaignSpec, i: u64) -> DeployCommand {
    DeployCommand::Submit {
        request_id: crate::state::request_id("advertiser:bench", i),
        caller: "advertiser:bench".into(),
        submission: crate::state::TaskSubmission {
            spec: spec.clone(),
            nonce: i,
            attempt_signatures: vec!["ab".repeat(64); 4],
        },
        received_at_ms: 0,
    }
}

/// Runs `tasks` admissions with `concurrency` in flight, then kills the leader.
pub async fn admission(
    dir: &std::path::Path,
    spec: CampaignSpec,
    tasks: u64,
    concurrency: usize,
) -> Result<AdmissionFigures, DeployError> {
    let nodes = start_cluster(dir).await?;
    let leader = leader_of(&nodes).unwrap_or(1);
    let entry = nodes[(leader - 1) as usize].clone();
    // Warm-up.
    for i in 0..100 {
        let bytes = bcs::to_bytes(&submission(&spec, u64::MAX - i))
            .map_err(|e| DeployError::Encoding(e.to_string()))?;
        entry.client_write(bytes).await?;
    }
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks as usize);
    for i in 0..tasks {
        let bytes = bcs::to_bytes(&submission(&spec, i))
            .map_err(|e| DeployError::Encoding(e.to_string()))?;
        let node = entry.clone();
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| DeployError::Http(e.to_string()))?;
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = node.client_write(bytes).await;
            drop(permit);
            r.map(|_| t.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    for h in handles {
        let d = h.await.map_err(|e| DeployError::Http(e.to_string()))??;
        latencies.push(d.as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or(0.0)
    };
    let (p50_ms, p99_ms) = (pct(0.50), pct(0.99));

    // Kill the leader (stop it as a crash: no handover) and time the election.
    let killed = Instant::now();
    entry.shutdown().await?;
    let survivors: Vec<Node> = nodes
        .iter()
        .filter(|n| n.metrics().node_id != leader)
        .cloned()
        .collect();
    let leader_change_ms = loop {
        if survivors
            .iter()
            .any(|n| n.metrics().is_leader && n.metrics().node_id != leader)
        {
            break killed.elapsed().as_secs_f64() * 1000.0;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            return Err(DeployError::Http("no new leader within 30 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let bytes = bcs::to_bytes(&submission(&spec, u64::MAX / 2))
        .map_err(|e| DeployError::Encoding(e.to_string()))?;
    survivors[0].client_write(bytes).await?;
    let first_write_after_kill_ms = killed.elapsed().as_secs_f64() * 1000.0;
    for n in &survivors {
        let _ = n.shutdown().await;
    }
    Ok(AdmissionFigures {
        tasks,
        concurrency,
        tasks_per_s: tasks as f64 / elapsed,
        p50_ms,
        p99_ms,
        leader_change_ms,
        first_write_after_kill_ms,
    })
}
