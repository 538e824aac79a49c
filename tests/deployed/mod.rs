//! Test harness: a devnet of real `symphony` processes on 127.0.0.1. Every child is
//! killed when the harness is dropped, also when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use symphony_deploy::client::{GatewayClient, HttpReply};
use symphony_deploy::devnet::{DevnetLayout, DevnetParams};
use symphony_node::network::{CampaignSpec, Quiet};
use tempfile::TempDir;

pub const NOW_MS: u64 = 1_795_219_200_000;
pub const SUBJECTS: u64 = 2_000;
pub const RECORDS: u64 = 20_000;
pub const SEED: u64 = 42;
pub const LUCKIN: &str = include_str!("../../examples/luckin.toml");

pub fn luckin() -> CampaignSpec {
    toml::from_str(LUCKIN).unwrap()
}

/// The audience the embedded demo delivers for the devnet's data and seed (sorted).
pub fn embedded_audience() -> Vec<String> {
    embedded_audiences(1).remove(0)
}

/// The embedded network with the devnet's data size for `seed`, in `dir`.
pub fn embedded_network(
    dir: &std::path::Path,
    seed: u64,
) -> symphony_node::network::EmbeddedNetwork {
    use symphony_node::network::{EmbeddedNetwork, NetworkParams};
    EmbeddedNetwork::build(
        dir,
        &NetworkParams {
            subjects: SUBJECTS,
            vaults: 4,
            records: RECORDS,
            seed,
            now_ms: NOW_MS,
        },
        &[luckin().advertiser.as_str()],
        &mut Quiet,
    )
    .unwrap()
}

/// The audiences (sorted) of `n` successive Luckin campaigns on one embedded
/// network with the devnet's data and seed: later campaigns lose the subjects whose
/// privacy budget the earlier ones used up.
pub fn embedded_audiences(n: u64) -> Vec<Vec<String>> {
    use symphony_node::network::{advertiser_key, SignedRequest};
    let dir = tempfile::tempdir().unwrap();
    let spec = luckin();
    let mut net = embedded_network(dir.path(), SEED);
    (1..=n)
        .map(|nonce| {
            let key = advertiser_key(SEED, &spec.advertiser);
            let req = SignedRequest::sign(spec.clone(), nonce, &key).unwrap();
            let outcome = net.run_campaign(&req, &mut Quiet).unwrap();
            assert_eq!(outcome.states.last().map(String::as_str), Some("completed"));
            let mut audience = outcome.audience;
            audience.sort();
            audience
        })
        .collect()
}

pub struct Net {
    pub layout: DevnetLayout,
    pub children: BTreeMap<String, Child>,
    /// Extra environment of a node's process, by node name (fault injection).
    pub env: BTreeMap<String, Vec<(String, String)>>,
    pub client: GatewayClient,
    pub rt: tokio::runtime::Runtime,
    pub dir: TempDir,
    /// Masters stopped (SIGSTOP) and not yet continued: not asked anything (a stopped
    /// master accepts connections but never answers).
    pub stopped: BTreeSet<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Net {
    pub fn start(enterprises: u32) -> Net {
        Net::start_with_env(enterprises, BTreeMap::new())
    }

    /// [`Net::start`] with extra environment for some nodes' processes.
    pub fn start_with_env(enterprises: u32, env: BTreeMap<String, Vec<(String, String)>>) -> Net {
        Net::start_sized(enterprises, SUBJECTS, RECORDS, env)
    }

    /// [`Net::start_with_env`] over a devnet of `subjects` people and `records`
    /// purchase records.
    pub fn start_sized(
        enterprises: u32,
        subjects: u64,
        records: u64,
        env: BTreeMap<String, Vec<(String, String)>>,
    ) -> Net {
        Net::start_governed(enterprises, subjects, records, env, None, None)
    }

    /// [`Net::start_sized`] with the genesis policy's epoch length `epoch_length_ms`
    /// (`None`: policy v1's hour) and epoch capacity `max_tasks_per_epoch`.
    pub fn start_governed(
        enterprises: u32,
        subjects: u64,
        records: u64,
        env: BTreeMap<String, Vec<(String, String)>>,
        epoch_length_ms: Option<u64>,
        max_tasks_per_epoch: Option<u64>,
    ) -> Net {
        Net::start_with_candidates(
            enterprises,
            subjects,
            records,
            env,
            (epoch_length_ms, max_tasks_per_epoch),
            &[],
        )
    }

    /// [`Net::start_governed`] where the enterprises at positions `candidates` run
    /// but are not genesis members (`devnet::mark_candidates`): they receive slices
    /// only once a membership proposal for their Vault is approved.
    pub fn start_with_candidates(
        enterprises: u32,
        subjects: u64,
        records: u64,
        env: BTreeMap<String, Vec<(String, String)>>,
        epochs: (Option<u64>, Option<u64>),
        candidates: &[usize],
    ) -> Net {
        Net::start_full(
            enterprises,
            subjects,
            records,
            env,
            epochs,
            candidates,
            false,
        )
    }

    /// A devnet of `enterprises` nodes whose producer `producer:alice` also has her
    /// Personal Vault `pv-alice` hosted on one more enterprise process
    /// (`enterprise-<enterprises>`).
    pub fn start_with_personal_vault(enterprises: u32) -> Net {
        Net::start_full(
            enterprises,
            SUBJECTS,
            RECORDS,
            BTreeMap::new(),
            (None, None),
            &[],
            true,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_full(
        enterprises: u32,
        subjects: u64,
        records: u64,
        env: BTreeMap<String, Vec<(String, String)>>,
        (epoch_length_ms, max_tasks_per_epoch): (Option<u64>, Option<u64>),
        candidates: &[usize],
        personal_vault: bool,
    ) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let layout = symphony_deploy::devnet::prepare(
            dir.path(),
            &DevnetParams {
                enterprises,
                subjects,
                records,
                seed: SEED,
                now_ms: NOW_MS,
                advertiser: "advertiser:luckin".into(),
                rate_limit_per_s: 1_000,
                epoch_length_ms,
                max_tasks_per_epoch,
                personal_vault,
            },
            &mut Quiet,
        )
        .unwrap();
        let candidates: Vec<String> = candidates
            .iter()
            .map(|i| layout.enterprises[*i].vault_id.clone())
            .collect();
        symphony_deploy::devnet::mark_candidates(&layout, &candidates).unwrap();
        let client = advertiser_client(&layout, &BTreeSet::new());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut net = Net {
            layout,
            children: BTreeMap::new(),
            env,
            client,
            rt,
            dir,
            stopped: BTreeSet::new(),
        };
        for i in 0..net.layout.enterprises.len() {
            net.spawn(&format!("enterprise-{i}"));
        }
        for id in 1..=3 {
            net.spawn(&format!("master-{id}"));
        }
        net.wait_leader(None, Duration::from_secs(30));
        net
    }

    pub fn spawn(&mut self, name: &str) {
        let (role, config) = if let Some(id) = name.strip_prefix("master-") {
            let id: u64 = id.parse().unwrap();
            let m = self.layout.masters.iter().find(|m| m.id == id).unwrap();
            ("master", m.config.clone())
        } else {
            let i: usize = name.strip_prefix("enterprise-").unwrap().parse().unwrap();
            ("enterprise", self.layout.enterprises[i].config.clone())
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_symphony"))
            .args([role, "--config"])
            .arg(&config)
            .envs(self.env.get(name).cloned().unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(name.to_owned(), child);
    }

    /// SIGKILL.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.children.remove(name) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGSTOP: the process stalls (all its threads), as a paused VM or a long GC
    /// pause would; requests go to the other masters until [`Net::cont`].
    pub fn stop(&mut self, name: &str) {
        signal(self.pid(name), "-STOP");
        self.mark_stopped(name);
    }

    /// SIGCONT to a stopped process.
    pub fn cont(&mut self, name: &str) {
        signal(self.pid(name), "-CONT");
        self.stopped.remove(name);
        self.client = advertiser_client(&self.layout, &self.stopped);
    }

    fn mark_stopped(&mut self, name: &str) {
        self.stopped.insert(name.to_owned());
        self.client = advertiser_client(&self.layout, &self.stopped);
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.children[name].id()
    }

    /// Waits until a master stops itself (`SYMPHONY_FAULT_STOP_AT`); returns its name.
    pub fn wait_self_stopped(&mut self, timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            let found = self
                .children
                .iter()
                .filter(|(n, _)| n.starts_with("master-") && !self.stopped.contains(*n))
                .find(|(_, c)| process_state(c.id()) == Some('T'))
                .map(|(n, _)| n.clone());
            if let Some(name) = found {
                self.mark_stopped(&name);
                return name;
            }
            assert!(
                t.elapsed() < timeout,
                "no master stopped within {timeout:?}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn views(&self) -> Vec<Option<Value>> {
        self.layout
            .masters
            .iter()
            .map(|m| {
                let name = format!("master-{}", m.id);
                let alive = self.children.contains_key(&name) && !self.stopped.contains(&name);
                if !alive {
                    return None;
                }
                self.rt
                    .block_on(self.client.get_plain(m.gateway, "/v1/cluster"))
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|r| r.json())
            })
            .collect()
    }

    /// Waits for a leader (other than `not`) seen by a running master.
    pub fn wait_leader(&self, not: Option<u64>, timeout: Duration) -> u64 {
        let t = Instant::now();
        loop {
            for v in self.views().into_iter().flatten() {
                if v["is_leader"].as_bool() == Some(true) {
                    let l = v["node_id"].as_u64().unwrap();
                    if Some(l) != not {
                        return l;
                    }
                }
            }
            assert!(
                t.elapsed() < timeout,
                "no leader within {timeout:?}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["master-1", "master-2", "master-3"] {
            let text = std::fs::read_to_string(self.layout.dir.join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("\n--- {name} ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn submit(&self, spec: CampaignSpec) -> HttpReply {
        self.rt
            .block_on(
                self.client
                    .submit(symphony_node::task::TaskSpec::Query(spec)),
            )
            .unwrap()
    }

    /// A client signing as `caller` (a devnet caller: advertiser, model operator,
    /// analyst).
    pub fn client_of(&self, caller: &str) -> GatewayClient {
        let roots = symphony_deploy::tls::load_roots(&self.layout.ca).unwrap();
        let tls = symphony_deploy::tls::public_client(roots).unwrap();
        let path = self.layout.caller_key(caller).unwrap();
        let key = symphony_deploy::config::read_signing_key("k", path).unwrap();
        GatewayClient::new(self.layout.gateways(), tls, caller.to_owned(), key)
    }

    pub fn submit_ok(&self, spec: CampaignSpec) -> String {
        let r = self.submit(spec);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        r.json()["request_id"].as_str().unwrap().to_owned()
    }

    pub fn get(&self, path: &str) -> HttpReply {
        self.rt
            .block_on(self.client.signed("GET", path, Vec::new()))
            .unwrap()
    }

    pub fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        let t = Instant::now();
        loop {
            if let Ok(r) = self.rt.block_on(self.client.signed(
                "GET",
                &format!("/v1/tasks/{id}"),
                Vec::new(),
            )) {
                let v = r.json();
                let s = v["status"].as_str().unwrap_or("");
                if s == "completed" || s == "rejected" {
                    return v;
                }
            }
            assert!(
                t.elapsed() < timeout,
                "{id} not final within {timeout:?}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn result(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/tasks/{id}/result"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// Waits until every running master applied the same index with the same root.
    pub fn wait_converged(&self, timeout: Duration) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let views: Vec<Value> = self.views().into_iter().flatten().collect();
            let running = self
                .children
                .keys()
                .filter(|k| k.starts_with("master-") && !self.stopped.contains(*k))
                .count();
            if views.len() == running
                && views.windows(2).all(|w| {
                    w[0]["state_root"] == w[1]["state_root"]
                        && w[0]["last_applied_index"] == w[1]["last_applied_index"]
                })
            {
                return views;
            }
            assert!(
                t.elapsed() < timeout,
                "masters did not converge: {views:?}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks every running enterprise node, as master-1 over mutual TLS, to release
    /// `task_id`'s reservations; returns how many subjects each still held.
    pub fn release_on_vaults(&self, task_id: &str) -> Vec<u64> {
        use symphony_node::enterprise::EnterpriseEndpoint;
        let dir = &self.layout.dir;
        let tls = symphony_deploy::tls::TlsMaterial::load(
            &dir.join("tls/ca.pem"),
            &dir.join("tls/master-1.pem"),
            &dir.join("tls/master-1.key"),
        )
        .unwrap();
        let security = symphony_consensus::transport::TransportSecurity::MutualTls(
            symphony_consensus::transport::MutualTls {
                client: tls.mutual_client().unwrap(),
                server: tls.mutual_server().unwrap(),
            },
        );
        let task = symphony_core::ids::TaskId::new(task_id.to_owned()).unwrap();
        let mut held = Vec::new();
        for (i, e) in self.layout.enterprises.iter().enumerate() {
            if !self.children.contains_key(&format!("enterprise-{i}")) {
                continue;
            }
            let remote = symphony_deploy::rpc::RemoteEnterprise::new(
                symphony_core::ids::VaultId::new(e.vault_id.clone()).unwrap(),
                e.addr.to_string(),
                security.clone(),
                self.rt.handle().clone(),
                Duration::from_secs(10),
            );
            held.push(remote.release(&task).unwrap());
        }
        held
    }
}

/// The advertiser's client of every gateway but those of `stopped` masters.
fn advertiser_client(layout: &DevnetLayout, stopped: &BTreeSet<String>) -> GatewayClient {
    let roots = symphony_deploy::tls::load_roots(&layout.ca).unwrap();
    let tls = symphony_deploy::tls::public_client(roots).unwrap();
    let key = symphony_deploy::config::read_signing_key("k", &layout.advertiser_key).unwrap();
    let gateways = layout
        .masters
        .iter()
        .filter(|m| !stopped.contains(&format!("master-{}", m.id)))
        .map(|m| m.gateway)
        .collect();
    GatewayClient::new(gateways, tls, layout.advertiser.clone(), key)
}

/// `kill <signal> <pid>` (the workspace forbids the unsafe signal call).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// A process's state letter from `/proc/<pid>/stat` (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `symphony demo SCENARIO --json` on `subjects` people, `records` records and `seed`.
pub fn demo_json(scenario: &str, subjects: u64, records: u64, seed: u64) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(["demo", scenario, "--json", "--subjects"])
        .arg(subjects.to_string())
        .arg("--records")
        .arg(records.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo {scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `symphony ARGS… --dir <the devnet>`: `(success, stdout, stderr)`.
pub fn cli(net: &Net, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(args)
        .arg("--dir")
        .arg(&net.layout.dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `symphony ARGS… --dir <the devnet> --json`, which must succeed: its JSON.
pub fn cli_json(net: &Net, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = cli(net, &all);
    assert!(ok, "symphony {args:?} failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The envelope of the task a request ran (its latest attempt), from `/evidence`.
pub fn envelope_of(net: &Net, request_id: &str) -> Value {
    let r = net.get(&format!("/v1/tasks/{request_id}/evidence"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["task"]["envelope"]["body"].clone()
}
