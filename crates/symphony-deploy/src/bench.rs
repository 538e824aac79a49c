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
//!
//! [`gateway`] measures the same admission through the real HTTPS gateways
//! ([`GatewayBed`]): TLS, the caller's ed25519 header signature, nonce cache, rate
//! limiter, queue bound, JSON, the attempt signatures of the body decoded (they are
//! verified by the leader before the first attempt, not on this path), then `Submit`.
//! Callers keep their connections alive; the rate limit is set to 1,000,000/s per
//! caller and the queue is unbounded, so neither refuses anything (every request
//! must be answered `202`). Measured (`symphony bench gateway --tasks 20000`, release
//! build, 2 shared cores with load average ~2 from other work, loopback, mutual TLS
//! between masters, fsync on, 64 callers, connections spread over the 3 gateways):
//! 64 connections 1.30k tasks/s, p50 48 ms, p99 82 ms; 128 connections 1.43k tasks/s,
//! p50 87 ms, p99 150 ms; 256 connections 1.65k tasks/s, p50 139 ms, p99 752 ms; 128
//! connections all to the leader's gateway 1.38k tasks/s, p99 159 ms. Clients, three
//! gateways and three masters share the 2 cores; ed25519 (perf: ~50 % of all CPU in
//! curve25519 — the gateway's header and attempt-signature checks and the clients'
//! signing) and JSON cost more than consensus, so the gateway, not Raft, bounds
//! admission on this machine. With the 4 attempt signatures batch-verified
//! (`ed25519_dalek::verify_batch`), on a quiet machine (load < 1), 128 connections:
//! 2.2k → 2.6–3.0k tasks/s, p50 43–49 ms, p99 61–72 ms. One signature check per
//! request at the gateway (the attempt signatures verified by the leader before the
//! first attempt), a master's own commit statements and already-recorded ones not
//! verified again, and mimalloc in the binary (2 Dec 2026, load 1.0–2.4, run in turn
//! with the previous binary): 2.3–2.5k → 3.5–4.1k tasks/s, p99 78 → 56–68 ms.
//!
//! The callers now run on their own runtime (own threads), as separate client
//! processes would, and the default is 64 connections (Little's law: 128 in flight
//! at 5,000/s is a 25.6 ms mean). The figures now include where the leader's time
//! went (`consensus`: [`symphony_consensus::WriteLatency`]). Where a request's time
//! goes (64 connections, loaded machine): Raft `client_write` of its batch (leader and one
//! follower fsync, apply) p50 8–13 ms, p99 27–41 ms; the wait for the 2-of-3
//! certificate after the leader applied p50 2–3 ms; a log commit (redb, fsync) p50
//! 0.2–0.5 ms but p90 3–4 ms and p99 9–10 ms when other work writes to the disk.
//! A plain append-only file with `fdatasync` instead of redb for the log showed the
//! same fsync tail (p90 4 ms) and 5–10 % more tasks/s, so the log stays in redb.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use symphony_consensus::{NodeId, Tuning};
use symphony_core::encoding::tagged_hash;
use symphony_node::network::CampaignSpec;
use symphony_node::task::TaskSpec;
use tokio::sync::{Barrier, Semaphore};

use crate::auth::{sign_headers, RequestTarget};
use crate::client::{sign_submission, Connection};
use crate::gateway::{Gateway, GatewaySettings};
use crate::loopback::{empty_genesis, leader_of, start_nodes, LoopbackOptions, Node};
use crate::master::now_ms;
use crate::replicator::Cluster;
use crate::state::DeployCommand;
use crate::tls::{generate_ca, issue_node_cert, load_roots, public_client, TlsMaterial};
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

fn bench_options() -> LoopbackOptions {
    LoopbackOptions {
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
    }
}

async fn start_cluster(dir: &std::path::Path) -> Result<Vec<Node>, DeployError> {
    Ok(start_nodes(dir, &empty_genesis(), &bench_options())
        .await?
        .0)
}

fn submission(spec: &CampaignSpec, i: u64) -> DeployCommand {
    DeployCommand::Submit {
        request_id: crate::state::request_id("advertiser:bench", i),
        caller: "advertiser:bench".into(),
        submission: crate::state::TaskSubmission {
            spec: TaskSpec::Query(spec.clone()),
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

/// Three loopback masters, each with its real HTTPS [`Gateway`] on a port-0 listener
/// of 127.0.0.1 (signed requests, nonce cache, rate limiter, queue bound, JSON, then
/// consensus `Submit`). No campaign worker runs: acknowledged requests stay queued.
/// The benchmark and the gateway tests run on it.
pub struct GatewayBed {
    /// The masters, master 1 first.
    pub nodes: Vec<Node>,
    /// Gateway of master `i + 1` at index `i`.
    pub gateways: Vec<SocketAddr>,
    /// Client TLS trusting the gateways' CA.
    pub client_tls: Arc<rustls::ClientConfig>,
    members: Vec<(NodeId, VerifyingKey)>,
    servers: Vec<tokio::task::JoinHandle<Result<(), DeployError>>>,
}

impl GatewayBed {
    /// Starts the masters under `dir` with the given options and one gateway per
    /// master enforcing `settings` (its `node_id` is replaced by each master's).
    /// Must run inside a multi-thread tokio runtime.
    pub async fn start(
        dir: &Path,
        options: &LoopbackOptions,
        settings: GatewaySettings,
    ) -> Result<Self, DeployError> {
        Self::start_with_genesis(dir, options, settings, &empty_genesis()).await
    }

    /// [`GatewayBed::start`] from a given ledger genesis (funded accounts).
    pub async fn start_with_genesis(
        dir: &Path,
        options: &LoopbackOptions,
        settings: GatewaySettings,
        genesis: &symphony_ledger::Genesis,
    ) -> Result<Self, DeployError> {
        let (nodes, members) = start_nodes(&dir.join("masters"), genesis, options).await?;
        let tls_dir = dir.join("gateway-tls");
        std::fs::create_dir_all(&tls_dir)?;
        let (ca_cert, ca_key) = generate_ca()?;
        let ca_path = tls_dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert)?;
        let mut gateways = Vec::new();
        let mut servers = Vec::new();
        for node in &nodes {
            let id = node.metrics().node_id;
            let (cert, key) = issue_node_cert(&ca_key, &format!("gateway-{id}"))?;
            let (cert_path, key_path) = (
                tls_dir.join(format!("gateway-{id}.pem")),
                tls_dir.join(format!("gateway-{id}.key")),
            );
            std::fs::write(&cert_path, cert)?;
            std::fs::write(&key_path, key)?;
            let server_tls = TlsMaterial::load(&ca_path, &cert_path, &key_path)?.public_server()?;
            let cluster = Cluster::new(
                node.clone(),
                tokio::runtime::Handle::current(),
                members.clone(),
            );
            let gateway = Gateway::with_settings(
                GatewaySettings {
                    node_id: id,
                    ..settings.clone()
                },
                cluster,
                server_tls,
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            gateways.push(listener.local_addr()?);
            servers.push(tokio::spawn(gateway.serve(listener)));
        }
        let client_tls = public_client(load_roots(&ca_path)?)?;
        Ok(Self {
            nodes,
            gateways,
            client_tls,
            members,
            servers,
        })
    }

    /// A consensus handle on master `index + 1` (writes bypass the gateway).
    pub fn cluster(&self, index: usize) -> Option<Cluster> {
        let node = self.nodes.get(index)?.clone();
        Some(Cluster::new(
            node,
            tokio::runtime::Handle::current(),
            self.members.clone(),
        ))
    }

    /// The gateway of the current leader (first gateway if no leader is known).
    pub fn leader_gateway(&self) -> SocketAddr {
        let leader = leader_of(&self.nodes);
        self.nodes
            .iter()
            .zip(&self.gateways)
            .find(|(n, _)| Some(n.metrics().node_id) == leader)
            .map_or(self.gateways[0], |(_, g)| *g)
    }

    /// Stops the gateways and the masters.
    pub async fn shutdown(self) -> Result<(), DeployError> {
        for s in &self.servers {
            s.abort();
        }
        for n in &self.nodes {
            n.shutdown().await?;
        }
        Ok(())
    }
}

/// Figures of one gateway run.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayFigures {
    /// Tasks admitted (each answered `202`) in the timed part.
    pub tasks: u64,
    /// Kept-alive HTTPS connections, one request in flight on each.
    pub concurrency: usize,
    /// Distinct registered callers (each with its own key, nonces and rate bucket).
    pub callers: usize,
    /// Gateways the connections were spread over (3: every master; 1: the leader's).
    pub gateways: usize,
    /// Rate limit per caller configured on every gateway (tokens/s and burst).
    pub rate_limit_per_s: u32,
    /// Admitted tasks per second.
    pub tasks_per_s: f64,
    /// The open loop's offered load (tasks/s), `None` for a closed loop.
    pub offered_per_s: Option<f64>,
    /// Median latency: request sent to `202` read; in an open loop, from the time
    /// the task was due.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Requests in the replicated queue after the run (timed tasks + warm-up).
    pub requests_in_state: u64,
    /// Where the timed writes' time went on the leader (which proposes them all):
    /// batcher to committed and applied, then to the 2-of-3 certificate.
    pub consensus: symphony_consensus::WriteLatency,
    /// Every timed task as (start, latency) in ms, by start: the start is when it
    /// was sent (closed loop) or due (open loop), from the start of the timed
    /// part. Shows whether slow requests are spread out or come in stalls
    /// (`symphony bench gateway --latency-log FILE`).
    #[serde(skip)]
    pub samples: Vec<(f64, f64)>,
}

/// What a gateway run does.
#[derive(Debug, Clone)]
pub struct GatewayRun {
    /// Tasks in the timed part.
    pub tasks: u64,
    /// Connections (= requests in flight).
    pub concurrency: usize,
    /// Registered callers the tasks are spread over.
    pub callers: usize,
    /// Send everything to the leader's gateway (otherwise round-robin over the three;
    /// a follower's gateway forwards the `Submit` to the leader).
    pub leader_only: bool,
    /// Open loop: task `i` is due at `i / rate` seconds after the start, whether or
    /// not earlier answers came back, and its latency counts from that due time (so
    /// time spent waiting for a free connection counts too: no coordinated
    /// omission). `None`: closed loop, each connection sends its next request as soon
    /// as the previous one is answered (the saturation throughput).
    pub rate: Option<f64>,
}

/// The signing key of bench caller `i`.
fn bench_caller(i: usize) -> (String, SigningKey) {
    let seed = tagged_hash("scp/bench-caller", &(i as u64).to_le_bytes());
    (
        format!("advertiser:bench-{i}"),
        SigningKey::from_bytes(&seed.0),
    )
}

/// A submission signed before the clock starts: its JSON body (with the 4 attempt
/// signatures) and its request headers (the caller's signature over method, the
/// gateway's `host:port`, path, body, nonce and time), for one gateway.
struct Prepared {
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

fn prepare_submission(
    spec: &CampaignSpec,
    (name, key): &(String, SigningKey),
    nonce: u64,
    gateway: SocketAddr,
) -> Result<Prepared, DeployError> {
    let mut spec = spec.clone();
    spec.advertiser = name.clone();
    let submission = sign_submission(TaskSpec::Query(spec), nonce, key)?;
    let body = serde_json::to_vec(&submission).map_err(|e| DeployError::Encoding(e.to_string()))?;
    let host = gateway.to_string();
    let target = RequestTarget {
        method: "POST",
        host: &host,
        path: "/v1/tasks",
    };
    let headers = sign_headers(key, name, target, &body, nonce, now_ms());
    Ok(Prepared { body, headers })
}

/// Sends one prepared submission; `Ok` only for a `202`.
async fn send_prepared(conn: &mut Connection, prepared: &Prepared) -> Result<(), DeployError> {
    let reply = conn
        .request(
            "POST",
            "/v1/tasks",
            &prepared.headers,
            prepared.body.clone(),
        )
        .await?;
    if reply.status != 202 {
        let nonce = prepared
            .headers
            .iter()
            .find(|(h, _)| *h == crate::auth::HEADER_NONCE);
        return Err(DeployError::Http(format!(
            "submission (nonce {}) answered {}: {}",
            nonce.map_or("?", |(_, n)| n.as_str()),
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }
    Ok(())
}

/// One prepared task per queue entry, with its index (its due time in an open loop).
type Queue = (AtomicUsize, Vec<(u64, Prepared)>);

/// Everything the gateway bench sends, signed before the clock starts: one warm-up
/// per connection and, per gateway, the queue of timed tasks addressed to it.
///
/// Nonces: warm-up requests take 1..=concurrency of caller (w % callers), timed
/// tasks take nonces from 2^40 up, so no two requests share (caller, nonce).
/// Connection `w` goes to gateway `w % targets`; task `i` to gateway `i % targets`,
/// taken by the next free connection to that gateway (its header names it).
fn prepare_work(
    spec: &CampaignSpec,
    keys: &[(String, SigningKey)],
    run: &GatewayRun,
    targets: &[SocketAddr],
) -> Result<(Vec<Prepared>, Arc<Vec<Queue>>), DeployError> {
    let mut warmups = Vec::with_capacity(run.concurrency);
    for w in 0..run.concurrency {
        let key = &keys[w % run.callers];
        let gateway = targets[w % targets.len()];
        warmups.push(prepare_submission(spec, key, w as u64 + 1, gateway)?);
    }
    let mut queues: Vec<Vec<(u64, Prepared)>> = targets.iter().map(|_| Vec::new()).collect();
    for i in 0..run.tasks {
        let key = &keys[(i % run.callers as u64) as usize];
        let t = (i % targets.len() as u64) as usize;
        queues[t].push((i, prepare_submission(spec, key, (1 << 40) + i, targets[t])?));
    }
    let queues = queues
        .into_iter()
        .map(|q| (AtomicUsize::new(0), q))
        .collect();
    Ok((warmups, Arc::new(queues)))
}

/// One connection's timed part: takes the next task of its gateway's queue until
/// none is left and returns each one's latency. Closed loop (`interval` `None`):
/// sent at once, timed from the send. Open loop: sent when due (`start` plus its
/// index times `interval`), timed from then.
async fn send_queue(
    mut conn: Connection,
    (next, queue): &Queue,
    start: tokio::time::Instant,
    interval: Option<Duration>,
) -> Result<Vec<(Duration, Duration)>, DeployError> {
    let mut latencies = Vec::new();
    while let Some((i, prepared)) = queue.get(next.fetch_add(1, Ordering::Relaxed)) {
        let from = match interval {
            None => tokio::time::Instant::now(),
            Some(interval) => {
                let due = start + interval.mul_f64(*i as f64);
                tokio::time::sleep_until(due).await;
                due
            }
        };
        send_prepared(&mut conn, prepared).await?;
        latencies.push((from - start, from.elapsed()));
    }
    Ok(latencies)
}

/// The callers' runtime; dropped without waiting (its tasks are done or failed), since
/// a runtime may not block while dropped inside another.
struct CallersRuntime(Option<tokio::runtime::Runtime>);

impl Drop for CallersRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Admission through the HTTPS gateways of 3 loopback masters (mutual TLS between
/// masters unless `SYMPHONY_BENCH_PLAINTEXT`, fsync on): `run.tasks` signed
/// submissions over `run.concurrency` kept-alive connections, spread over
/// `run.callers` registered callers. The rate limit (1,000,000/s per caller) and the
/// queue bound (unbounded: no worker drains the queue here) are set so that neither
/// refuses anything; every request must be answered `202`, else the run fails.
///
/// Every request — its body with the 4 attempt signatures and its header signature
/// — is signed before the clock starts, as separate client machines would sign
/// them: the bench's own callers do not take CPU from the gateways and masters
/// they measure (on 2 shared cores, signing in the timed part cost ~10 % of it).
/// The gateways verify every header signature in the timed part, as always.
pub async fn gateway(
    dir: &Path,
    spec: CampaignSpec,
    run: GatewayRun,
) -> Result<GatewayFigures, DeployError> {
    if run.tasks == 0 || run.concurrency == 0 || run.callers == 0 {
        return Err(DeployError::Config(
            "--tasks, --concurrency and --callers must be > 0".into(),
        ));
    }
    if let Some(rate) = run.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(DeployError::Config(format!(
            "--rate must be a positive number of tasks/s, not {rate}"
        )));
    }
    const RATE: u32 = 1_000_000;
    let keys: Vec<(String, SigningKey)> = (0..run.callers).map(bench_caller).collect();
    let settings = GatewaySettings {
        node_id: 0,
        callers: keys
            .iter()
            .map(|(n, k)| (n.clone(), k.verifying_key()))
            .collect(),
        request_window_ms: 600_000,
        body_limit_bytes: 64 * 1024,
        rate_limit_per_s: RATE,
        rate_limit_burst: RATE,
        max_pending_requests: usize::MAX,
    };
    let bed = GatewayBed::start(dir, &bench_options(), settings).await?;
    let targets: Vec<SocketAddr> = if run.leader_only {
        vec![bed.leader_gateway()]
    } else {
        bed.gateways.clone()
    };
    let (warmups, queues) = prepare_work(&spec, &keys, &run, &targets)?;
    // The callers run on their own threads, as separate client processes would: on
    // one runtime with the gateways and masters, 128 client tasks queue ahead of Raft's
    // and the gateways' work and the figures measure the bench's scheduling, not the
    // masters (same 2 cores either way; measured +20 % tasks/s at 64 connections).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-callers")
        .enable_all()
        .build()?;
    let callers = rt.handle().clone();
    let callers_rt = CallersRuntime(Some(rt));
    let barrier = Arc::new(Barrier::new(run.concurrency + 1));
    // The start of the timed part, set once every connection is warm.
    let start = Arc::new(std::sync::OnceLock::<tokio::time::Instant>::new());
    // (tokio's timer fires on whole milliseconds: a task may be sent up to 1 ms
    // after it was due, and that delay counts in its latency.)
    let interval = run.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut handles = Vec::with_capacity(run.concurrency);
    for (w, warmup) in warmups.into_iter().enumerate() {
        let (queues, barrier, start) = (queues.clone(), barrier.clone(), start.clone());
        let t = w % targets.len();
        let addr = targets[t];
        let tls = bed.client_tls.clone();
        handles.push(callers.spawn(async move {
            let ready = async {
                let mut conn = Connection::open(addr, tls).await?;
                send_prepared(&mut conn, &warmup).await?;
                Ok::<_, DeployError>(conn)
            }
            .await;
            barrier.wait().await; // every connection warm
            barrier.wait().await; // the start time is set
            let start = *start.get().ok_or_else(|| {
                DeployError::Config("the timed part started without a start time".into())
            })?;
            send_queue(ready?, &queues[t], start, interval).await
        }));
    }
    barrier.wait().await;
    let _ = start.set(tokio::time::Instant::now());
    barrier.wait().await;
    let started = Instant::now();
    for n in &bed.nodes {
        n.reset_write_latency();
    }
    let mut samples = Vec::with_capacity(run.tasks as usize);
    let mut failure = None;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for h in handles {
        match h.await.map_err(|e| DeployError::Http(e.to_string()))? {
            Ok(l) => samples.extend(l.into_iter().map(|(at, d)| (ms(at), ms(d)))),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut latencies: Vec<f64> = samples.iter().map(|(_, l)| *l).collect();
    let elapsed = started.elapsed().as_secs_f64();
    drop(callers_rt);
    let leader = leader_of(&bed.nodes);
    let leader_node = bed
        .nodes
        .iter()
        .find(|n| Some(n.metrics().node_id) == leader)
        .unwrap_or(&bed.nodes[0]);
    let requests_in_state = leader_node.with_state(|s| s.requests().count() as u64);
    let consensus = leader_node.write_latency();
    bed.shutdown().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or(0.0)
    };
    Ok(GatewayFigures {
        tasks: latencies.len() as u64,
        concurrency: run.concurrency,
        callers: run.callers,
        gateways: targets.len(),
        rate_limit_per_s: RATE,
        tasks_per_s: latencies.len() as f64 / elapsed,
        offered_per_s: run.rate,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        requests_in_state,
        consensus,
        samples,
    })
}
