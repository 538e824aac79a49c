//! CLI of the deployed network: node processes, keys, devnet, tasks, benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use symphony_deploy::client::GatewayClient;
use symphony_deploy::config::{read_signing_key, EnterpriseConfig, MasterConfig};
use symphony_deploy::devnet::{DevnetLayout, DevnetParams};
use symphony_node::network::CampaignSpec;
use symphony_node::task::TaskSpec;

/// `--config FILE` of a node process.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's TOML configuration.
    #[arg(long)]
    config: PathBuf,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate an ed25519 key; writes the secret (hex) and prints the public key.
    New {
        /// Where to write the secret.
        #[arg(long, default_value = "symphony.key")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct DirArg {
    /// Devnet directory.
    #[arg(long, default_value = "symphony-devnet")]
    dir: PathBuf,
}

#[derive(Subcommand)]
pub enum DevnetCmd {
    /// Write configs, keys, CA and seeded Vaults, and start the processes in the background.
    Up {
        /// Masters (2-of-3 finality needs exactly 3).
        #[arg(long, default_value_t = 3)]
        masters: u32,
        /// Enterprise nodes (one Vault each).
        #[arg(long, default_value_t = 4)]
        enterprises: u32,
        /// People in the synthetic population (the default is the training demo's
        /// size: examples/train.toml's acceptance criteria, held-out AUC ≥ 0.6 under
        /// its DP noise, are not met on 2,000 people).
        #[arg(long, default_value_t = 20_000)]
        subjects: u64,
        /// Purchase records in total.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Seed of data and derived keys.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Epoch length in ms (default: policy v1's hour); short epochs close by
        /// time while you watch (`symphony epoch show`). Must divide a 365-day year.
        #[arg(long)]
        epoch_length_ms: Option<u64>,
        /// Tasks admitted per epoch before the epoch closes by capacity.
        #[arg(long)]
        max_tasks_per_epoch: Option<u64>,
        /// Also host the data producer's Personal Vault (`pv-alice`) on one more
        /// enterprise process: `symphony producer consent|budget --dir` reach it.
        #[arg(long)]
        producer_vault: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show every node: up or down, leader, term, state root.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stop every process of the devnet (files are kept; `up` restarts them).
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Submit a campaign (TOML as examples/luckin.toml).
    Submit {
        /// Campaign file.
        spec: PathBuf,
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
        /// Print the audience bound, ε and fee estimate over the devnet's Vaults
        /// without sending anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every task request of the devnet's callers, newest first: id, class,
    /// status, when it was received.
    #[command(after_help = "Example:\n  symphony task list --dir symphony-devnet")]
    List {
        #[command(flatten)]
        dir: DirArg,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Status and lifecycle of a task request.
    Status {
        /// Request id.
        id: String,
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
    },
    /// Follow a task through its lifecycle until it is final.
    Watch {
        /// Request id.
        id: String,
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
    },
    /// The settled result (submitter only, after completion).
    Result {
        /// Request id.
        id: String,
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
        /// A `train` task: the directory its model.safetensors, model_card.json and
        /// training curve are written to. A query: a `.csv` file the whole delivered
        /// audience is written to (one contact handle per line).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Field-level accuracy of receipt OCR per degradation level, and receipts/s.
    Parse(crate::producer_cmd::BenchParseArgs),
    /// Federated training on the embedded network at a bench size, timed by phase
    /// (admission, each part of a round, finish).
    Train(crate::train_cmd::BenchTrainArgs),
    /// The Luckin campaign on the embedded network at a bench size, admission →
    /// delivered by plane, against a plaintext scan-and-filter of the same records.
    Luckin(crate::luckin_bench::BenchLuckinArgs),
    /// Vault import with the default (atomic) options: a generated record file into a
    /// fresh Vault; rows/s, MB/s and the split between preparing and writing.
    Import(crate::import_bench::BenchImportArgs),
    /// An epoch's producer payouts as one Merkle commitment (claims with proofs)
    /// against one ledger account write per producer.
    Payouts(crate::payouts_bench::BenchPayoutsArgs),
    /// Admitted tasks/s and latency on 3 masters (loopback, mutual TLS, fsync), then
    /// the time to a new leader after the leader is killed.
    Admission {
        /// Tasks to admit.
        #[arg(long, default_value_t = 50_000)]
        tasks: u64,
        /// Submissions in flight.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// Admitted tasks/s and latency through the HTTPS API gateways of 3 masters
    /// (loopback, fsync on): signed requests, nonce and rate checks, JSON, then the
    /// consensus `Submit`, over kept-alive connections. No campaign runs.
    Gateway(BenchGatewayArgs),
}

/// `symphony bench gateway`.
#[derive(Args)]
pub struct BenchGatewayArgs {
    /// Tasks to admit in the timed part.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u64,
    /// Kept-alive connections, one request in flight on each. By Little's law,
    /// 5,000 tasks/s with 128 in flight means a mean latency of 25.6 ms, so a
    /// p99 under 20 ms needs fewer: the default is 64.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Registered callers the tasks are spread over (each has its own key,
    /// nonces and rate bucket; the rate limit is set high enough never to refuse).
    #[arg(long, default_value_t = 64)]
    pub callers: usize,
    /// Send every request to the leader's gateway (default: spread over the
    /// three; a follower forwards to the leader).
    #[arg(long)]
    pub leader_only: bool,
    /// After the closed loop, an open loop on a fresh cluster: `--tasks` tasks
    /// due at this many per second whether or not earlier ones were answered,
    /// each task's latency counted from the time it was due (waiting for a free
    /// connection included). The latency at a given load, which a closed loop
    /// cannot show: there, latency is the connection count over the throughput.
    /// 0 skips it.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// Connections of the open loop: enough that they are not what limits it.
    #[arg(long, default_value_t = 128)]
    pub rate_connections: usize,
    /// Write every timed task as a CSV line `loop,start_ms,latency_ms` (loop:
    /// `closed` or `open`; start: when it was sent, or due in the open loop) to
    /// this file, to see whether slow requests are spread out or come in stalls.
    #[arg(long, value_name = "FILE")]
    pub latency_log: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `bench gateway --json`: the closed loop's figures as before, and the open
/// loop's under `at_rate`.
#[derive(serde::Serialize)]
struct GatewayReport {
    #[serde(flatten)]
    saturation: symphony_deploy::bench::GatewayFigures,
    at_rate: Option<symphony_deploy::bench::GatewayFigures>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `symphony master --config FILE`.
pub fn master(args: NodeArgs) -> Result<()> {
    let config = MasterConfig::load(&args.config)?;
    init_logs();
    runtime()?.block_on(symphony_deploy::master::run(config, shutdown_signal()))?;
    Ok(())
}

/// `symphony enterprise --config FILE`.
pub fn enterprise(args: NodeArgs) -> Result<()> {
    let config = EnterpriseConfig::load(&args.config)?;
    init_logs();
    runtime()?.block_on(symphony_deploy::enterprise::run(config, shutdown_signal()))?;
    Ok(())
}

/// `symphony keys ...`.
pub fn keys(cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::New { out } => {
            let public = symphony_deploy::config::new_key_file(&out)?;
            println!("secret key written to {} (mode 0600)", out.display());
            println!("public key: {}", hex::encode(public.to_bytes()));
            Ok(())
        }
    }
}

fn alive(pid: u32) -> bool {
    symphony_deploy::devnet::process_alive(pid)
}

/// Starts every node of `layout` that is not running (moving the ports if one was
/// taken since they were chosen); records the pids.
pub fn start_processes(layout: &mut DevnetLayout) -> Result<()> {
    let exe = std::env::current_exe()?;
    let report = symphony_deploy::devnet::start_processes(layout, &exe, Duration::from_secs(60))?;
    if report.port_moves > 0 {
        println!(
            "  a port was taken by another process: ports moved {} time(s); configs rewritten",
            report.port_moves
        );
    }
    Ok(())
}

fn client_for(layout: &DevnetLayout) -> Result<GatewayClient> {
    caller_client(layout, &layout.advertiser)
}

/// A gateway client signing as `caller` with its devnet key.
pub(crate) fn caller_client(layout: &DevnetLayout, caller: &str) -> Result<GatewayClient> {
    let roots = symphony_deploy::tls::load_roots(&layout.ca)?;
    let tls = symphony_deploy::tls::public_client(roots)?;
    let Some(path) = layout.caller_key(caller) else {
        bail!(
            "{caller:?} is not a caller of this devnet (callers: {})",
            layout.caller_names().join(", ")
        );
    };
    let key = read_signing_key("caller key", path)?;
    Ok(GatewayClient::new(
        layout.gateways(),
        tls,
        caller.to_owned(),
        key,
    ))
}

/// GET `path` as the devnet caller that owns request `id` (a request is visible to
/// its submitter only: the callers are tried in turn).
fn get_as_owner(
    rt: &tokio::runtime::Runtime,
    layout: &DevnetLayout,
    path: &str,
) -> Result<symphony_deploy::client::HttpReply> {
    let mut last = None;
    for caller in layout.caller_names() {
        let client = caller_client(layout, &caller)?;
        let r = rt.block_on(client.signed("GET", path, Vec::new()))?;
        if r.status == 403 || r.status == 404 {
            last = Some(r);
            continue;
        }
        return Ok(r);
    }
    last.ok_or_else(|| anyhow::anyhow!("the devnet has no callers"))
}

/// `GET /v1/tasks/{id}{tail}` as the request's owner (`tail`: "" or "/result").
fn get_task(
    rt: &tokio::runtime::Runtime,
    layout: &DevnetLayout,
    id: &str,
    tail: &str,
) -> Result<symphony_deploy::client::HttpReply> {
    let path = format!(
        "/v1/tasks/{}{tail}",
        symphony_deploy::client::encode_segment(id)
    );
    get_as_owner(rt, layout, &path)
}

async fn cluster_views(client: &GatewayClient, addrs: &[SocketAddr]) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            client
                .get_plain(*a, "/v1/cluster")
                .await
                .ok()
                .filter(|r| r.status == 200)
                .map(|r| r.json()),
        );
    }
    out
}

/// `symphony devnet ...`.
pub fn devnet(cmd: DevnetCmd, now_ms: u64) -> Result<()> {
    match cmd {
        DevnetCmd::Up {
            masters,
            enterprises,
            subjects,
            records,
            seed,
            epoch_length_ms,
            max_tasks_per_epoch,
            producer_vault,
            dir,
        } => {
            if masters != 3 {
                bail!("--masters: 2-of-3 finality needs exactly 3 masters, got {masters}");
            }
            let params = DevnetParams {
                enterprises,
                subjects,
                records,
                seed,
                now_ms,
                advertiser: "advertiser:luckin".into(),
                rate_limit_per_s: 100,
                epoch_length_ms,
                max_tasks_per_epoch,
                personal_vault: producer_vault,
            };
            devnet_up(&dir.dir, &params)
        }
        DevnetCmd::Status { dir, json } => devnet_status(&dir.dir, json),
        DevnetCmd::Down { dir } => devnet_down(&dir.dir),
    }
}

/// `devnet up`: writes the devnet in `dir` (or restarts the one there), starts its
/// processes and waits for a leader.
fn devnet_up(dir: &std::path::Path, params: &DevnetParams) -> Result<()> {
    let mut layout = if dir.join("devnet.json").exists() {
        println!("restarting the devnet in {}", dir.display());
        DevnetLayout::load(dir)?
    } else {
        std::fs::create_dir_all(dir)?;
        println!(
            "writing a devnet to {} ({} enterprise nodes, {} people, {} records, seed {})",
            dir.display(),
            params.enterprises,
            params.subjects,
            params.records,
            params.seed
        );
        symphony_deploy::devnet::prepare(dir, params, &mut ConsentReport)?
    };
    start_processes(&mut layout)?;
    let client = client_for(&layout)?;
    let rt = runtime()?;
    let started = Instant::now();
    let leader = rt.block_on(async {
        loop {
            let views = cluster_views(&client, &layout.gateways()).await;
            if let Some(l) = views.iter().flatten().find_map(|v| v["leader"].as_u64()) {
                return Some(l);
            }
            if started.elapsed() > Duration::from_secs(60) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let Some(leader) = leader else {
        bail!(
            "no leader after 60 s; see the logs in {}",
            layout.dir.display()
        );
    };
    println!(
        "devnet up in {:.1} s (leader: master-{leader})",
        started.elapsed().as_secs_f64()
    );
    print_devnet(&layout, leader);
    Ok(())
}

/// The devnet's addresses, keys and files, for its operator.
fn print_devnet(layout: &DevnetLayout, leader: u64) {
    for m in &layout.masters {
        println!(
            "  master-{}   gateway https://{}   raft {}",
            m.id, m.gateway, m.raft
        );
    }
    for (i, e) in layout.enterprises.iter().enumerate() {
        println!("  enterprise-{i} {} rpc {}", e.vault_id, e.addr);
    }
    // Every master's gateway serves the explorer; the leader's first.
    let explorer = layout
        .masters
        .iter()
        .find(|m| m.id == leader)
        .or(layout.masters.first())
        .map(|m| format!("https://{}/explorer", m.gateway));
    if let Some(url) = explorer {
        println!(
            "  explorer: {url}   (TLS from the devnet's CA {}; every master's gateway serves it)",
            layout.ca.display()
        );
    }
    println!(
        "  CA: {}   advertiser key: {}",
        layout.ca.display(),
        layout.advertiser_key.display()
    );
    for (caller, key) in &layout.callers {
        println!("  caller {caller:<30} key {}", key.display());
    }
    println!("  pids and manifest: {}/devnet.json", layout.dir.display());
}

/// `devnet status`: each process, and each master's view of the cluster.
fn devnet_status(dir: &std::path::Path, json: bool) -> Result<()> {
    let layout = DevnetLayout::load(dir)?;
    let client = client_for(&layout)?;
    let views = runtime()?.block_on(cluster_views(&client, &layout.gateways()));
    let mut nodes = Vec::new();
    for (m, v) in layout.masters.iter().zip(&views) {
        let name = format!("master-{}", m.id);
        let pid = layout.pids.get(&name).copied();
        nodes.push(serde_json::json!({
            "name": name, "gateway": m.gateway.to_string(), "pid": pid,
            "running": pid.is_some_and(alive), "view": v,
        }));
    }
    for (i, e) in layout.enterprises.iter().enumerate() {
        let name = format!("enterprise-{i}");
        let pid = layout.pids.get(&name).copied();
        nodes.push(serde_json::json!({
            "name": name, "vault_id": e.vault_id, "addr": e.addr.to_string(), "pid": pid,
            "running": pid.is_some_and(alive),
        }));
    }
    if json {
        crate::output::print_json(&serde_json::json!({ "nodes": nodes }))?;
        return Ok(());
    }
    for n in &nodes {
        let up = if n["running"].as_bool() == Some(true) {
            "up  "
        } else {
            "DOWN"
        };
        let v = &n["view"];
        if v.is_object() {
            println!(
                "  {up} {:<14} leader {} term {} applied {} final {} root {}…",
                n["name"].as_str().unwrap_or(""),
                v["leader"],
                v["term"],
                v["last_applied_index"],
                v["final_index"],
                v["state_root"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(16)
                    .collect::<String>()
            );
        } else {
            println!(
                "  {up} {:<14} {}",
                n["name"].as_str().unwrap_or(""),
                n["addr"].as_str().or(n["gateway"].as_str()).unwrap_or("")
            );
        }
    }
    Ok(())
}

/// `devnet down`: stops the processes (TERM, then KILL after 5 s); files are kept.
fn devnet_down(dir: &std::path::Path) -> Result<()> {
    let mut layout = DevnetLayout::load(dir)?;
    for (name, pid) in &layout.pids {
        if !alive(*pid) {
            continue;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let t = Instant::now();
        while alive(*pid) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(*pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        println!("  stopped {name} (pid {pid})");
    }
    layout.pids.clear();
    layout.save()?;
    println!("devnet down; files kept in {}", layout.dir.display());
    Ok(())
}

/// Prints the devnet's per-Vault consent counts while it is written.
struct ConsentReport;

impl symphony_node::network::Observer for ConsentReport {
    fn step(&mut self, name: &str, detail: &str) {
        if name == "consent" {
            println!("  {detail}");
        }
    }
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
}

fn print_reply(r: &symphony_deploy::client::HttpReply, json: bool) -> Result<Value> {
    let v = r.json();
    if r.status >= 400 {
        bail!(
            "gateway refused ({}): {}",
            r.status,
            v["error"]
                .as_str()
                .unwrap_or(&String::from_utf8_lossy(&r.body))
        );
    }
    if json {
        crate::output::print_json(&v)?;
    }
    Ok(v)
}

/// `symphony task ...`.
pub fn task(cmd: TaskCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        TaskCmd::Submit {
            spec,
            dir,
            json,
            dry_run,
        } => task_submit(&rt, &spec, &dir.dir, json, dry_run),
        TaskCmd::List { dir, json } => task_list(&rt, &dir.dir, json),
        TaskCmd::Status { id, dir, json } => task_status(&rt, &id, &dir.dir, json),
        TaskCmd::Watch { id, dir, json } => task_watch(&rt, &id, &dir.dir, json),
        TaskCmd::Result { id, dir, json, out } => task_result(&rt, &id, &dir.dir, json, &out),
    }
}

/// `task submit`: signs and submits a task spec (or prices it with `--dry-run`).
fn task_submit(
    rt: &tokio::runtime::Runtime,
    spec: &std::path::Path,
    dir: &std::path::Path,
    json: bool,
    dry_run: bool,
) -> Result<()> {
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("reading {}", spec.display()))?;
    let spec =
        TaskSpec::from_toml(&text).with_context(|| format!("task spec {}", spec.display()))?;
    let layout = DevnetLayout::load(dir)?;
    if dry_run {
        let vaults = u32::try_from(layout.enterprises.len()).unwrap_or(u32::MAX);
        return crate::quote_cmd::print_dry_run(&spec, vaults, json);
    }
    let client = caller_client(&layout, spec.submitter())?;
    let r = rt.block_on(client.submit(spec))?;
    let v = print_reply(&r, json)?;
    if !json {
        println!(
            "acknowledged: {} (log index {}, {} certificate signatures)",
            v["request_id"].as_str().unwrap_or(""),
            v["log_index"],
            v["certificate_signatures"]
        );
        println!(
            "follow it with: symphony task watch {}",
            v["request_id"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `task list`: every caller's requests, newest first.
fn task_list(rt: &tokio::runtime::Runtime, dir: &std::path::Path, json: bool) -> Result<()> {
    let layout = DevnetLayout::load(dir)?;
    let mut rows: Vec<Value> = Vec::new();
    for caller in layout.caller_names() {
        let client = caller_client(&layout, &caller)?;
        let r = rt.block_on(client.signed("GET", "/v1/tasks", Vec::new()))?;
        if r.status != 200 {
            bail!(
                "listing {caller}'s requests: gateway answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let v = r.json();
        for mut req in v["requests"].as_array().cloned().unwrap_or_default() {
            req["caller"] = Value::String(caller.clone());
            rows.push(req);
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r["seq"].as_u64().unwrap_or(0)));
    if json {
        crate::output::print_json_line(&serde_json::json!({ "requests": rows }))?;
        return Ok(());
    }
    if rows.is_empty() {
        println!("no task requests yet (`symphony task submit examples/luckin.toml`)");
        return Ok(());
    }
    println!(
        "{:<28} {:<8} {:<10} {:<24} caller",
        "request", "class", "status", "received (UTC)"
    );
    for r in &rows {
        println!(
            "{:<28} {:<8} {:<10} {:<24} {}",
            r["request_id"].as_str().unwrap_or("?"),
            r["task_class"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            symphony_core::time::iso8601(r["received_at_ms"].as_u64().unwrap_or(0)),
            r["caller"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `task status`: a request's status and lifecycle.
fn task_status(
    rt: &tokio::runtime::Runtime,
    id: &str,
    dir: &std::path::Path,
    json: bool,
) -> Result<()> {
    let layout = DevnetLayout::load(dir)?;
    let r = get_task(rt, &layout, id, "")?;
    let v = print_reply(&r, json)?;
    if !json {
        println!(
            "{id}: {}  lifecycle: {}",
            v["status"].as_str().unwrap_or("?"),
            lifecycle(&v)
        );
        if let Some(reason) = v["reason"].as_str().or(v["error"].as_str()) {
            println!("  reason: {reason}");
        }
    }
    Ok(())
}

/// `task watch`: follows a request's lifecycle until it is final.
fn task_watch(
    rt: &tokio::runtime::Runtime,
    id: &str,
    dir: &std::path::Path,
    json: bool,
) -> Result<()> {
    let layout = DevnetLayout::load(dir)?;
    let started = Instant::now();
    let mut shown = 0usize;
    loop {
        let r = get_task(rt, &layout, id, "")?;
        let v = print_reply(&r, false)?;
        let states: Vec<String> = v["lifecycle"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if states.len() < shown {
            shown = 0; // a new attempt started after a leader change
            println!("  (new attempt {})", v["attempts"]);
        }
        for s in &states[shown..] {
            if json {
                crate::output::print_json_line(
                    &serde_json::json!({"t_s": started.elapsed().as_secs_f64(), "state": s}),
                )?;
            } else {
                println!("  [{:6.2}s] {s}", started.elapsed().as_secs_f64());
            }
        }
        shown = states.len();
        let status = v["status"].as_str().unwrap_or("");
        if status == "completed" || status == "rejected" || status == "timed_out" {
            if !json {
                println!("{id}: {status}");
            }
            let reason = v["error"].as_str().or(v["reason"].as_str());
            return crate::ended(id, &[status.to_owned()], reason);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `task result`: a finished request's outcome (the audience or the model written
/// to `out`).
fn task_result(
    rt: &tokio::runtime::Runtime,
    id: &str,
    dir: &std::path::Path,
    json: bool,
    out: &std::path::Path,
) -> Result<()> {
    let layout = DevnetLayout::load(dir)?;
    let r = get_task(rt, &layout, id, "/result")?;
    let v = print_reply(&r, json)?;
    let o = &v["outcome"];
    let status = v["status"].as_str().unwrap_or("?").to_owned();
    let reason = o["reason"].as_str().or(v["error"].as_str());
    let end = || crate::ended(id, std::slice::from_ref(&status), reason);
    let written = if v["task_class"] == "train" && !v["artifacts"].is_null() {
        write_artifacts(&v, out)?
    } else {
        Vec::new()
    };
    if json {
        return end();
    }
    println!(
        "{id}: {} ({})",
        v["status"].as_str().unwrap_or("?"),
        v["task_class"].as_str().unwrap_or("?")
    );
    if o.is_null() {
        // Refused before the protocol flow produced an outcome.
        if let Some(e) = v["error"].as_str() {
            println!("  reason: {e}");
        }
        return end();
    }
    println!(
        "  task {}  lifecycle {}",
        o["task_id"],
        lifecycle(&serde_json::json!({"lifecycle": o["states"]}))
    );
    match v["task_class"].as_str() {
        Some("compute") => print_groups(o),
        Some("train") => {
            println!(
                "  rounds {} of max {} (stop {})  held-out AUC {}  accuracy {}  MIA advantage {}  ε {} of {}",
                o["rounds_run"],
                o["max_rounds"],
                o["stop_reason"],
                o["auc_holdout"],
                o["accuracy_holdout"],
                o["mia_advantage"],
                o["epsilon_spent"],
                o["epsilon_allocation"]
            );
            for p in &written {
                println!("  wrote {}", p.display());
            }
            if written.is_empty() {
                println!("  no model delivered (the run was not accepted)");
            }
        }
        _ => {
            println!(
                "  eligible {}  delivered {} / cap {}  vaults {} / quorum {}",
                o["eligible_count"],
                o["delivered_count"],
                o["audience_cap"],
                o["vaults_responded"],
                o["minimum_vault_quorum"]
            );
            print_audience(o, out)?;
        }
    }
    let sym = |k: &str| symphony_economics::format_sym(o[k].as_u64().unwrap_or(0));
    println!(
        "  fee {} (locked {}, refund {})",
        sym("fee_total"),
        sym("fee_locked"),
        sym("refund")
    );
    if let Some(reason) = reason {
        println!("  reason: {reason}");
    }
    end()
}

/// The delivered audience of a query: the first handles, and the whole audience in
/// `out` when it names a `.csv` file.
fn print_audience(o: &Value, out: &std::path::Path) -> Result<()> {
    const SHOWN: usize = 10;
    let audience: Vec<&str> = o["audience"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str())
        .collect();
    if audience.is_empty() {
        println!("  audience: none delivered");
        return Ok(());
    }
    println!("  audience ({} contact handles):", audience.len());
    for h in audience.iter().take(SHOWN) {
        println!("    {h}");
    }
    let csv = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if csv {
        let mut text = String::from("contact\n");
        for h in &audience {
            text.push_str(h);
            text.push('\n');
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        println!("  wrote all {} to {}", audience.len(), out.display());
    } else if audience.len() > SHOWN {
        println!(
            "    … {} more (`--out audience.csv` writes them all, `--json` prints them)",
            audience.len() - SHOWN
        );
    }
    Ok(())
}

/// The groups table of a `compute` result.
fn print_groups(o: &Value) {
    println!("  {:<20} {:>10} {:>14}", "group", "count", "value");
    for g in o["groups"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {:>10} {:>14}",
            g["group"].as_str().unwrap_or("?"),
            g["count"],
            g["value"]
        );
    }
    if let Some(s) = o["suppressed_groups"].as_array().filter(|s| !s.is_empty()) {
        println!(
            "  suppressed (below minimum_result_cardinality): {}",
            s.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Writes a `train` result's model.safetensors, model_card.json and the training curve
/// (PNG and CSV) into `out`.
fn write_artifacts(v: &Value, out: &std::path::Path) -> Result<Vec<PathBuf>> {
    let a = &v["artifacts"];
    if a.is_null() {
        bail!(
            "no model artifacts for this request (status {}): nothing was delivered",
            v["status"]
        );
    }
    let model = a["model.safetensors"]["data"]
        .as_str()
        .context("artifacts: model.safetensors data missing")?;
    let model = hex::decode(model).context("artifacts: model.safetensors is not hex")?;
    let card = serde_json::to_string_pretty(&a["model_card.json"])?; // a file
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let model_path = out.join("model.safetensors");
    let card_path = out.join("model_card.json");
    std::fs::write(&model_path, model)
        .with_context(|| format!("writing {}", model_path.display()))?;
    std::fs::write(&card_path, card).with_context(|| format!("writing {}", card_path.display()))?;
    // The curve is drawn here from the card's rounds (what the masters released).
    let c = &a["model_card.json"];
    let rounds: Vec<symphony_node::training::RoundSummary> =
        serde_json::from_value(c["rounds"].clone()).context("model_card.json: rounds")?;
    let task = symphony_core::ids::TaskId::new(c["task_id"].as_str().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("model_card.json: task_id: {e}"))?;
    let curve = symphony_node::training::registry::write_curve(out, &task, &rounds)?;
    Ok(vec![
        model_path,
        card_path,
        curve,
        out.join("training_curve.csv"),
    ])
}

fn lifecycle(v: &Value) -> String {
    v["lifecycle"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .unwrap_or_default()
}

/// `symphony bench ...`.
pub fn bench(cmd: BenchCmd, spec_text: &str) -> Result<()> {
    match cmd {
        BenchCmd::Parse(args) => crate::producer_cmd::bench(args),
        BenchCmd::Train(args) => crate::train_cmd::bench_train(args, crate::DEMO_NOW_MS),
        BenchCmd::Luckin(args) => crate::luckin_bench::bench(args),
        BenchCmd::Import(args) => crate::import_bench::bench(args),
        BenchCmd::Payouts(args) => crate::payouts_bench::bench(args),
        BenchCmd::Admission {
            tasks,
            concurrency,
            json,
        } => {
            let spec: CampaignSpec = toml::from_str(spec_text)?;
            if std::env::var_os("SYMPHONY_BENCH_LOG").is_some() {
                init_logs();
            }
            let dir = tempfile::tempdir()?;
            let f = runtime()?.block_on(symphony_deploy::bench::admission(
                dir.path(),
                spec,
                tasks,
                concurrency,
            ))?;
            if json {
                crate::output::print_bench_json("admission", &f)?;
            } else {
                println!("admission on 3 masters (loopback, mutual TLS, fsync on): {} tasks, {} in flight", f.tasks, f.concurrency);
                println!(
                    "  {:.0} tasks/s   p50 {:.2} ms   p99 {:.2} ms",
                    f.tasks_per_s, f.p50_ms, f.p99_ms
                );
                println!(
                    "  leader killed: new leader after {:.0} ms, first write final after {:.0} ms",
                    f.leader_change_ms, f.first_write_after_kill_ms
                );
            }
            Ok(())
        }
        BenchCmd::Gateway(args) => bench_gateway(args, spec_text),
    }
}

/// `symphony bench gateway`: the closed loop, then the open loop at `--rate`, each
/// on a fresh cluster.
fn bench_gateway(args: BenchGatewayArgs, spec_text: &str) -> Result<()> {
    check_gateway_args(&args)?;
    // Opened before the runs, so a bad path is refused before minutes of work.
    let mut log_file = args
        .latency_log
        .as_ref()
        .map(|p| {
            std::fs::File::create(p)
                .with_context(|| format!("--latency-log {}: cannot create", p.display()))
        })
        .transpose()?;
    let spec: CampaignSpec = toml::from_str(spec_text)?;
    if std::env::var_os("SYMPHONY_BENCH_LOG").is_some() {
        init_logs();
    }
    let rt = runtime()?;
    let run = symphony_deploy::bench::GatewayRun {
        tasks: args.tasks,
        concurrency: args.concurrency,
        callers: args.callers,
        leader_only: args.leader_only,
        rate: None,
    };
    let dir = tempfile::tempdir()?;
    let saturation = rt.block_on(symphony_deploy::bench::gateway(
        dir.path(),
        spec.clone(),
        run.clone(),
    ))?;
    drop(dir);
    let at_rate = if args.rate > 0.0 {
        let dir = tempfile::tempdir()?;
        let run = symphony_deploy::bench::GatewayRun {
            concurrency: args.rate_connections,
            rate: Some(args.rate),
            ..run
        };
        Some(rt.block_on(symphony_deploy::bench::gateway(dir.path(), spec, run))?)
    } else {
        None
    };
    if let (Some(file), Some(path)) = (log_file.as_mut(), &args.latency_log) {
        write_latency_log(file, &saturation, at_rate.as_ref())
            .with_context(|| format!("--latency-log {}: cannot write", path.display()))?;
    }
    if args.json {
        let report = GatewayReport {
            saturation,
            at_rate,
        };
        return crate::output::print_bench_json("gateway", &report);
    }
    print_gateway(&saturation, at_rate.as_ref());
    Ok(())
}

fn check_gateway_args(args: &BenchGatewayArgs) -> Result<()> {
    if args.tasks == 0 {
        bail!("--tasks must be > 0");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be > 0");
    }
    if args.callers == 0 {
        bail!("--callers must be > 0");
    }
    let rate = args.rate;
    if !(rate.is_finite() && rate >= 0.0) {
        bail!("--rate must be a number of tasks/s (0 skips the open loop), not {rate}");
    }
    if rate > 0.0 && args.rate_connections == 0 {
        bail!("--rate-connections must be > 0");
    }
    Ok(())
}

/// `loop,start_ms,latency_ms` for every timed task of both loops.
fn write_latency_log(
    file: &mut std::fs::File,
    saturation: &symphony_deploy::bench::GatewayFigures,
    at_rate: Option<&symphony_deploy::bench::GatewayFigures>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut csv = String::from("loop,start_ms,latency_ms\n");
    for (label, figures) in [("closed", Some(saturation)), ("open", at_rate)] {
        for (at, latency) in figures.map(|f| f.samples.as_slice()).unwrap_or(&[]) {
            csv.push_str(&format!("{label},{at:.3},{latency:.3}\n"));
        }
    }
    file.write_all(csv.as_bytes())
}

fn print_gateway(
    f: &symphony_deploy::bench::GatewayFigures,
    at_rate: Option<&symphony_deploy::bench::GatewayFigures>,
) {
    println!("admission through the HTTPS gateway, 3 masters (loopback, mutual TLS, fsync on)");
    println!(
        "  {} tasks per loop, {} callers, {} gateway(s), rate limit {}/s per caller (never the bottleneck)",
        f.tasks, f.callers, f.gateways, f.rate_limit_per_s
    );
    println!(
        "  {:<34} {:>10} {:>10} {:>10} {:>10}",
        "", "tasks/s", "p50 ms", "p99 ms", "max ms"
    );
    let row = |label: String, f: &symphony_deploy::bench::GatewayFigures| {
        println!(
            "  {:<34} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
            label, f.tasks_per_s, f.p50_ms, f.p99_ms, f.max_ms
        );
    };
    row(format!("closed loop, {} connections", f.concurrency), f);
    if let Some(r) = at_rate {
        row(
            format!(
                "open loop at {:.0}/s, {} conns",
                r.offered_per_s.unwrap_or(0.0),
                r.concurrency
            ),
            r,
        );
    }
    println!(
        "  requests in the replicated queue: {}",
        f.requests_in_state
    );
    let c = &f.consensus;
    println!(
        "  on the leader, closed loop ({} writes): committed and applied p50 {:.1} ms, p99 {:.1} ms; then 2-of-3 certificate p50 {:.1} ms, p99 {:.1} ms",
        c.writes, c.commit_p50_ms, c.commit_p99_ms, c.certificate_p50_ms, c.certificate_p99_ms
    );
}
