//! A local devnet on 127.0.0.1: CA and node certificates, keys, configs, and Vaults
//! seeded by the same data generator and key derivations as the embedded network
//! (so the same seed selects the same audience). [`start_processes`] starts the
//! node processes (`symphony devnet up`).
//!
//! Ports: [`prepare`] picks free ports by binding port 0 on 127.0.0.1 (all held until
//! every port is chosen, so no two nodes share one) and releases them for the
//! processes, which bind them later: another process may take one in between.
//! [`start_processes`] therefore waits until every node reports that it listens;
//! a node that exits because its address is in use makes it stop the nodes it
//! started, move the ports ([`reassign_ports`]) and try again (up to
//! [`START_ATTEMPTS`] times). Raft ports are moved only while the devnet has never
//! run (the Raft membership, stored in the log, records them); on a devnet that ran
//! before, a taken Raft port is reported as an error naming it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use symphony_core::consent::UsageScope;
use symphony_core::encoding::tagged_hash;
use symphony_core::envelope::TaskClass;
use symphony_core::ids::ActorId;
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Observer};

use crate::config::{
    write_secret, CallerEntry, EnterpriseConfig, EnterpriseEntry, MasterConfig, MasterEntry,
    TlsFiles,
};
use crate::DeployError;

/// What to build.
#[derive(Clone, Debug)]
pub struct DevnetParams {
    /// Enterprise nodes (one Vault each).
    pub enterprises: u32,
    /// People in the synthetic population.
    pub subjects: u64,
    /// Purchase records.
    pub records: u64,
    /// Seed of the data and derived keys.
    pub seed: u64,
    /// Injected protocol time.
    pub now_ms: u64,
    /// Registered advertiser.
    pub advertiser: String,
    /// Gateway rate limit per caller.
    pub rate_limit_per_s: u32,
    /// Epoch length of the genesis policy, ms (`None`: policy v1's hour); short
    /// epochs let a devnet close epochs by time.
    pub epoch_length_ms: Option<u64>,
    /// Tasks admitted per epoch before it closes by capacity (`None`: no bound).
    pub max_tasks_per_epoch: Option<u64>,
    /// Host the data producer's Personal Vault (`pv-alice`, seed 002) on one more
    /// enterprise process: its consent and budget routes reach it, and it takes
    /// part in tasks like any Vault.
    pub personal_vault: bool,
}

/// One master of a devnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetMaster {
    /// Raft id.
    pub id: u64,
    /// Config file.
    pub config: PathBuf,
    /// Gateway address.
    pub gateway: SocketAddr,
    /// Raft address.
    pub raft: SocketAddr,
}

/// One enterprise node of a devnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetEnterprise {
    /// Vault id.
    pub vault_id: String,
    /// Config file.
    pub config: PathBuf,
    /// RPC address.
    pub addr: SocketAddr,
}

/// The devnet manifest (`devnet.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevnetLayout {
    /// Root directory.
    pub dir: PathBuf,
    /// Masters.
    pub masters: Vec<DevnetMaster>,
    /// Enterprise nodes.
    pub enterprises: Vec<DevnetEnterprise>,
    /// CA certificate (clients trust it).
    pub ca: PathBuf,
    /// Advertiser id.
    pub advertiser: String,
    /// Advertiser key file.
    pub advertiser_key: PathBuf,
    /// Every registered caller's request-signing key file, by actor id (the
    /// submitters of `examples/*.toml`); empty in a devnet written before callers
    /// of other classes existed.
    #[serde(default)]
    pub callers: BTreeMap<String, PathBuf>,
    /// Seed.
    pub seed: u64,
    /// Process ids by node name, once started.
    #[serde(default)]
    pub pids: BTreeMap<String, u32>,
}

impl DevnetLayout {
    /// Reads `DIR/devnet.json`.
    pub fn load(dir: &Path) -> Result<Self, DeployError> {
        let path = dir.join("devnet.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    " (no devnet in {}: run `symphony devnet up` first, or pass --dir)",
                    dir.display()
                )
            } else {
                String::new()
            };
            DeployError::Config(format!("{}: {e}{hint}", path.display()))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| DeployError::Config(format!("{}: {e}", path.display())))
    }

    /// Writes `DIR/devnet.json`.
    pub fn save(&self) -> Result<(), DeployError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| DeployError::Encoding(e.to_string()))?;
        std::fs::write(self.dir.join("devnet.json"), text)?;
        Ok(())
    }

    /// Gateway addresses.
    pub fn gateways(&self) -> Vec<SocketAddr> {
        self.masters.iter().map(|m| m.gateway).collect()
    }

    /// The key file of `actor` (the advertiser's for a devnet without caller list).
    pub fn caller_key(&self, actor: &str) -> Option<&Path> {
        self.callers
            .get(actor)
            .map(PathBuf::as_path)
            .or_else(|| (actor == self.advertiser).then_some(self.advertiser_key.as_path()))
    }

    /// The commit signing key file of the master with governance index `index`
    /// (0, 1, 2: the masters in node-id order, as the state machine numbers
    /// their votes; index 0 is node 1 in a devnet).
    pub fn governance_key(&self, index: u8) -> Result<PathBuf, DeployError> {
        let mut masters: Vec<&DevnetMaster> = self.masters.iter().collect();
        masters.sort_by_key(|m| m.id);
        let m = masters.get(usize::from(index)).ok_or_else(|| {
            DeployError::Config(format!(
                "master-{index}: this devnet has masters 0 to {} (governance index = node id - 1)",
                masters.len().saturating_sub(1)
            ))
        })?;
        Ok(read_toml::<MasterConfig>(&m.config)?.signing_key_file)
    }

    /// Every caller with a key in this devnet (the advertiser first).
    pub fn caller_names(&self) -> Vec<String> {
        let mut names = vec![self.advertiser.clone()];
        for c in self.callers.keys() {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
        names
    }
}

/// The callers a devnet registers besides its advertiser: the submitters of
/// `examples/luckin.toml` (query), `examples/train.toml` (train) and
/// `examples/compute.toml` (compute). Each may submit every class on every Vault.
pub const DEVNET_CALLERS: [&str; 3] = [
    "advertiser:luckin",
    "model-operator:luckin-growth",
    "analyst:luckin-insights",
];

/// The data producer a devnet registers as a caller (`producer:alice`, 1,000 SYM).
pub const DEVNET_PRODUCER: &str = "alice";

/// The secret the embedded network derives for `label` under `seed`.
fn derived_secret(seed: u64, label: &str) -> [u8; 32] {
    tagged_hash(label, &seed.to_le_bytes()).0
}

/// Free ports on 127.0.0.1, each held (bound) until the picker is dropped, so the
/// ports it hands out are distinct.
///
/// They come from below the kernel's ephemeral range when it can: a devnet process
/// that restarts (after a crash, or a kill in the fault tests) binds its port again,
/// and a port in the ephemeral range may meanwhile have become the source port of
/// some outgoing connection or another `bind(0)`, so the restart would fail with
/// "address in use". Ports below the range are never handed out that way.
#[derive(Default)]
struct PortPicker(Vec<TcpListener>);

/// Where devnet ports are drawn from when the ephemeral range leaves room below it.
const DEVNET_PORTS_FROM: u16 = 10_000;

impl PortPicker {
    fn pick(&mut self) -> Result<SocketAddr, DeployError> {
        if let Some(low) = ephemeral_low() {
            if low > DEVNET_PORTS_FROM + 1_000 {
                for _ in 0..256 {
                    let port =
                        rand::Rng::gen_range(&mut rand::thread_rng(), DEVNET_PORTS_FROM..low);
                    if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                        let addr = l.local_addr()?;
                        self.0.push(l);
                        return Ok(addr);
                    }
                }
            }
        }
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        self.0.push(l);
        Ok(addr)
    }
}

/// The low end of the kernel's ephemeral port range (Linux), if it can be read.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Makes the Vaults `vaults` of a prepared devnet candidates instead of genesis
/// members: every master's configuration keeps them (their processes run and the
/// masters trust their enclave keys) but sends them slices only once an
/// `enterprise_membership` proposal for them is approved. Refuses a Vault the
/// devnet does not have.
pub fn mark_candidates(layout: &DevnetLayout, vaults: &[String]) -> Result<(), DeployError> {
    for v in vaults {
        if !layout.enterprises.iter().any(|e| &e.vault_id == v) {
            return Err(DeployError::Config(format!(
                "{v} is not an enterprise of the devnet in {}",
                layout.dir.display()
            )));
        }
    }
    for m in &layout.masters {
        let mut config = MasterConfig::load(&m.config)?;
        for e in &mut config.enterprises {
            if vaults.contains(&e.vault_id) {
                e.genesis_member = false;
            }
        }
        write_toml(&m.config, &config)?;
    }
    Ok(())
}

fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), DeployError> {
    let text = toml::to_string_pretty(value).map_err(|e| DeployError::Encoding(e.to_string()))?;
    std::fs::write(path, text)?;
    Ok(())
}

fn node_tls(dir: &Path, ca_key: &str, name: &str) -> Result<TlsFiles, DeployError> {
    let (cert, key) = crate::tls::issue_node_cert(ca_key, name)?;
    let cert_path = dir.join("tls").join(format!("{name}.pem"));
    let key_path = dir.join("tls").join(format!("{name}.key"));
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    Ok(TlsFiles {
        ca: dir.join("tls").join("ca.pem"),
        cert: cert_path,
        key: key_path,
    })
}

/// Adds the devnet producer's Personal Vault to `net` (in `dir/vaults`), holding
/// her identity, home, consent (personal, marketing, analytics) and one Luckin
/// Coffee receipt in Singapore she uploaded earlier; its id.
fn add_personal_vault(
    net: &mut EmbeddedNetwork,
    dir: &Path,
    params: &DevnetParams,
    obs: &mut dyn Observer,
) -> Result<String, DeployError> {
    use symphony_node::producer::demo::{add_producer, producer_receipts, PRODUCER_SUBJECT};
    let node = |e: symphony_node::NodeError| DeployError::Node(e);
    let pv = add_producer(net, dir, params.now_ms, obs).map_err(node)?;
    let subject = symphony_core::ids::SubjectId::new(PRODUCER_SUBJECT)
        .map_err(|e| DeployError::Config(e.to_string()))?;
    let receipt = producer_receipts(params.seed, 1, params.now_ms)
        .into_iter()
        .next()
        .ok_or_else(|| DeployError::Config("no Luckin receipt in the corpus".into()))?;
    net.enterprises[pv]
        .vault()
        .insert_batch(&[(
            subject,
            symphony_vault::record::Record::Purchase(receipt.to_purchase()),
        )])
        .map_err(|e| DeployError::Node(e.into()))?;
    Ok(net.enterprises[pv].vault_id().to_string())
}

/// Writes a devnet into `dir` (which must not hold one already).
pub fn prepare(
    dir: &Path,
    params: &DevnetParams,
    obs: &mut dyn Observer,
) -> Result<DevnetLayout, DeployError> {
    if dir.join("devnet.json").exists() {
        return Err(DeployError::Config(format!(
            "{} already holds a devnet (devnet.json); run `symphony devnet down` or pick another --dir",
            dir.display()
        )));
    }
    for sub in ["keys", "tls"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let dir = dir.canonicalize()?;
    let mut actors: Vec<&str> = vec![params.advertiser.as_str()];
    for a in DEVNET_CALLERS {
        if !actors.contains(&a) {
            actors.push(a);
        }
    }
    let net = EmbeddedNetwork::build(
        &dir,
        &NetworkParams {
            subjects: params.subjects,
            vaults: params.enterprises,
            records: params.records,
            seed: params.seed,
            now_ms: params.now_ms,
        },
        &actors,
        obs,
    )?;
    // Every caller may submit every class on every Vault (the build permits
    // query); each class's usage scope must have consenting subjects.
    for e in &net.enterprises {
        for a in &actors {
            let actor = ActorId::new(*a).map_err(|e| DeployError::Config(e.to_string()))?;
            for class in [TaskClass::Compute, TaskClass::Train] {
                e.vault()
                    .permit(&actor, class)
                    .map_err(|e| DeployError::Node(e.into()))?;
            }
        }
        let mut counts = Vec::new();
        for scope in [
            UsageScope::Marketing,
            UsageScope::Analytics,
            UsageScope::Training,
        ] {
            let n = e
                .vault()
                .consented_subjects(scope, params.now_ms)
                .map_err(|e| DeployError::Node(e.into()))?
                .len();
            if n == 0 {
                return Err(DeployError::Config(format!(
                    "{}: no subject consented to {scope:?}; the devnet could not run that class",
                    e.vault_id()
                )));
            }
            counts.push(format!("{scope:?} {n}"));
        }
        obs.step(
            "consent",
            &format!(
                "{}: subjects with consent: {}",
                e.vault_id(),
                counts.join(", ")
            ),
        );
    }
    let mut net = net;
    let mut vault_ids = net.generated.vault_ids.clone();
    if params.personal_vault {
        vault_ids.push(add_personal_vault(&mut net, &dir, params, obs)?);
    }
    drop(net);

    let (ca_cert, ca_key) = crate::tls::generate_ca()?;
    std::fs::write(dir.join("tls/ca.pem"), &ca_cert)?;
    write_private(&dir.join("tls/ca.key"), &ca_key)?;

    let adv = advertiser_key(params.seed, &params.advertiser);
    let adv_file = dir.join("keys/advertiser.key");
    write_secret(&adv_file, &adv.to_bytes())?;
    let mut caller_files = BTreeMap::new();
    let mut caller_entries = Vec::new();
    for a in &actors {
        let key = advertiser_key(params.seed, a);
        let file = if *a == params.advertiser {
            adv_file.clone()
        } else {
            let f = dir.join(format!("keys/caller-{}.key", a.replace([':', '/'], "_")));
            write_secret(&f, &key.to_bytes())?;
            f
        };
        caller_files.insert((*a).to_owned(), file);
        caller_entries.push(CallerEntry {
            actor: (*a).to_owned(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            balance_micro_sym: 1_000_000 * symphony_economics::MICRO_SYM_PER_SYM,
        });
    }
    // A data producer (seed 002): a caller signing the producer routes with its own
    // key (`gateway/producer_routes.rs`), funded so that it can bond S_producer.
    let producer = format!("producer:{DEVNET_PRODUCER}");
    let producer_key =
        SigningKey::from_bytes(&derived_secret(params.seed, "scp/producer-key/devnet"));
    let producer_file = dir.join(format!("keys/caller-producer_{DEVNET_PRODUCER}.key"));
    write_secret(&producer_file, &producer_key.to_bytes())?;
    caller_files.insert(producer.clone(), producer_file);
    caller_entries.push(CallerEntry {
        actor: producer,
        public_key: hex::encode(producer_key.verifying_key().to_bytes()),
        balance_micro_sym: 1_000 * symphony_economics::MICRO_SYM_PER_SYM,
    });
    let aggregator_file = dir.join("keys/aggregator.key");
    write_secret(
        &aggregator_file,
        &derived_secret(params.seed, "scp/master-platform/0"),
    )?;

    let mut ports = PortPicker::default();
    let mut enterprises = Vec::new();
    let mut enterprise_entries = Vec::new();
    for (i, vid) in vault_ids.iter().enumerate() {
        let addr = ports.pick()?;
        let vault_key_file = dir.join(format!("keys/{vid}.vault.key"));
        write_secret(
            &vault_key_file,
            &derived_secret(params.seed, &format!("scp/vault-key/{vid}")),
        )?;
        let platform = derived_secret(params.seed, &format!("scp/enterprise-platform/{i}"));
        let platform_key_file = dir.join(format!("keys/enterprise-{i}.platform.key"));
        write_secret(&platform_key_file, &platform)?;
        let config = EnterpriseConfig {
            vault_id: vid.clone(),
            listen_addr: addr.to_string(),
            vault_path: dir.join("vaults").join(format!("{vid}.redb")),
            vault_key_file,
            platform_key_file,
            tls: node_tls(&dir, &ca_key, &format!("enterprise-{i}"))?,
        };
        let path = dir.join(format!("enterprise-{i}.toml"));
        write_toml(&path, &config)?;
        enterprise_entries.push(EnterpriseEntry {
            vault_id: vid.clone(),
            addr: addr.to_string(),
            platform_public_key: hex::encode(
                SigningKey::from_bytes(&platform).verifying_key().to_bytes(),
            ),
            genesis_member: true,
        });
        enterprises.push(DevnetEnterprise {
            vault_id: vid.clone(),
            config: path,
            addr,
        });
    }

    let mut masters = Vec::new();
    let mut entries = Vec::new();
    let mut signing = Vec::new();
    for id in 1..=3u64 {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let key_file = dir.join(format!("keys/master-{id}.key"));
        write_secret(&key_file, &key.to_bytes())?;
        let (raft, gateway) = (ports.pick()?, ports.pick()?);
        entries.push(MasterEntry {
            id,
            addr: raft.to_string(),
            gateway: gateway.to_string(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
        });
        signing.push((id, key_file, raft, gateway));
    }
    for (id, key_file, raft, gateway) in signing {
        let config = MasterConfig {
            node_id: id,
            cluster_id: "symphony-devnet".into(),
            data_dir: dir.join(format!("master-{id}")),
            signing_key_file: key_file,
            aggregator_key_file: aggregator_file.clone(),
            fixed_now_ms: Some(params.now_ms),
            rate_limit_per_s: params.rate_limit_per_s,
            rate_limit_burst: params.rate_limit_per_s.saturating_mul(2),
            body_limit_bytes: 64 * 1024,
            request_window_ms: 60_000,
            max_pending_requests: crate::config::DEFAULT_MAX_PENDING_REQUESTS,
            epoch_length_ms: params.epoch_length_ms,
            max_tasks_per_epoch: params.max_tasks_per_epoch,
            tls: node_tls(&dir, &ca_key, &format!("master-{id}"))?,
            masters: entries.clone(),
            enterprises: enterprise_entries.clone(),
            callers: caller_entries.clone(),
        };
        let path = dir.join(format!("master-{id}.toml"));
        write_toml(&path, &config)?;
        masters.push(DevnetMaster {
            id,
            config: path,
            gateway,
            raft,
        });
    }
    drop(ports);
    let layout = DevnetLayout {
        dir: dir.clone(),
        masters,
        enterprises,
        ca: dir.join("tls/ca.pem"),
        advertiser: params.advertiser.clone(),
        advertiser_key: adv_file,
        callers: caller_files,
        seed: params.seed,
        pids: BTreeMap::new(),
    };
    layout.save()?;
    Ok(layout)
}

fn write_private(path: &Path, text: &str) -> Result<(), DeployError> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Start attempts of [`start_processes`] when a port turns out to be taken.
pub const START_ATTEMPTS: usize = 4;

/// Log text of a master once its Raft and gateway listeners are bound.
const MASTER_READY: &str = "master running";
/// Log text of an enterprise node once its RPC listener is bound.
const ENTERPRISE_READY: &str = "enterprise node serving";
/// Log text of a Raft listener that could not bind (`ConsensusError::Listen`).
const RAFT_LISTEN_FAILED: &str = "cannot listen on";

/// Whether process `pid` runs (exists and is not a zombie; Linux `/proc`).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// A node process started by [`start_processes`]. Dropping it leaves the process
/// running (devnet processes outlive `symphony devnet up`).
#[derive(Debug)]
pub struct StartedNode {
    /// `master-1`, `enterprise-0`, ...
    pub name: String,
    /// The process.
    pub child: Child,
}

/// What [`start_processes`] did.
#[derive(Debug, Default)]
pub struct StartReport {
    /// The processes it started (nodes already running are left alone).
    pub started: Vec<StartedNode>,
    /// Times the ports were moved because one was taken.
    pub port_moves: usize,
}

/// `(name, role, config)` of every node, enterprises first.
fn nodes_of(layout: &DevnetLayout) -> Vec<(String, &'static str, PathBuf)> {
    let mut nodes = Vec::new();
    for (i, e) in layout.enterprises.iter().enumerate() {
        nodes.push((format!("enterprise-{i}"), "enterprise", e.config.clone()));
    }
    for m in &layout.masters {
        nodes.push((format!("master-{}", m.id), "master", m.config.clone()));
    }
    nodes
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, DeployError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DeployError::Config(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| DeployError::Config(format!("{}: {e}", path.display())))
}

/// The Raft directories of the masters (`data_dir/raft`).
fn raft_dirs(layout: &DevnetLayout) -> Result<Vec<PathBuf>, DeployError> {
    layout
        .masters
        .iter()
        .map(|m| Ok(read_toml::<MasterConfig>(&m.config)?.data_dir.join("raft")))
        .collect()
}

fn log_path(layout: &DevnetLayout, name: &str) -> PathBuf {
    layout.dir.join(format!("{name}.log"))
}

fn log_tail(layout: &DevnetLayout, name: &str) -> String {
    let text = std::fs::read_to_string(log_path(layout, name)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn address_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("os error 98")
}

fn spawn_node(
    layout: &DevnetLayout,
    exe: &Path,
    name: &str,
    role: &str,
    config: &Path,
) -> Result<Child, DeployError> {
    let log = std::fs::File::create(log_path(layout, name))?;
    let mut cmd = Command::new(exe);
    cmd.args([role, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        // Own process group: Ctrl-C in the terminal of `devnet up` does not stop it.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn().map_err(|e| {
        DeployError::Io(std::io::Error::new(
            e.kind(),
            format!("starting {name} ({}): {e}", exe.display()),
        ))
    })
}

/// Why a start attempt failed.
struct Failure {
    name: String,
    log: String,
    exited: bool,
}

/// Waits until every started node logged that it listens, or one exited.
fn wait_ready(
    layout: &DevnetLayout,
    started: &mut [StartedNode],
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut not_ready = None;
        for node in started.iter_mut() {
            let exited = !matches!(node.child.try_wait(), Ok(None));
            let log = std::fs::read_to_string(log_path(layout, &node.name)).unwrap_or_default();
            if exited {
                return Err(Failure {
                    name: node.name.clone(),
                    log,
                    exited: true,
                });
            }
            let marker = if node.name.starts_with("master-") {
                MASTER_READY
            } else {
                ENTERPRISE_READY
            };
            if !log.contains(marker) && not_ready.is_none() {
                not_ready = Some(node.name.clone());
            }
        }
        let Some(name) = not_ready else {
            return Ok(());
        };
        if Instant::now() > deadline {
            return Err(Failure {
                name,
                log: String::new(),
                exited: false,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(started: Vec<StartedNode>) {
    for mut node in started {
        let _ = node.child.kill();
        let _ = node.child.wait();
    }
}

/// Starts every node of `layout` that is not running, with `exe` (the `symphony`
/// binary) as `exe master|enterprise --config FILE`, and waits up to
/// `ready_timeout` until each started node logged that it listens. Records the pids
/// in `devnet.json`.
///
/// A node that exits because an address is in use (another process took a port
/// after [`prepare`] chose it) makes it stop the nodes it started, move the ports
/// and start again, up to [`START_ATTEMPTS`] times — only when no node of the devnet
/// was running before (running nodes hold the old addresses). Raft ports are moved
/// only on a devnet that never ran; its Raft directories, written by the failed
/// attempt, are removed first.
pub fn start_processes(
    layout: &mut DevnetLayout,
    exe: &Path,
    ready_timeout: Duration,
) -> Result<StartReport, DeployError> {
    let nodes = nodes_of(layout);
    let running_before: Vec<String> = nodes
        .iter()
        .filter(|(name, _, _)| layout.pids.get(name).is_some_and(|p| process_alive(*p)))
        .map(|(name, _, _)| name.clone())
        .collect();
    let raft_dirs = raft_dirs(layout)?;
    let never_ran = raft_dirs.iter().all(|d| !d.exists());
    let mut report = StartReport::default();
    for attempt in 1..=START_ATTEMPTS {
        let mut started = Vec::new();
        for (name, role, config) in &nodes {
            if running_before.contains(name) {
                continue;
            }
            match spawn_node(layout, exe, name, role, config) {
                Ok(child) => {
                    layout.pids.insert(name.clone(), child.id());
                    started.push(StartedNode {
                        name: name.clone(),
                        child,
                    });
                }
                Err(e) => {
                    stop(started);
                    return Err(e);
                }
            }
        }
        layout.save()?;
        let failure = match wait_ready(layout, &mut started, ready_timeout) {
            Ok(()) => {
                report.started = started;
                return Ok(report);
            }
            Err(f) => f,
        };
        for node in &started {
            layout.pids.remove(&node.name);
        }
        stop(started);
        layout.save()?;
        let name = &failure.name;
        if !failure.exited {
            return Err(DeployError::Config(format!(
                "{name} did not report that it listens within {ready_timeout:?}; stopped the \
                 nodes started; see {}",
                log_path(layout, name).display()
            )));
        }
        let tail = log_tail(layout, name);
        if !address_in_use(&failure.log) {
            return Err(DeployError::Config(format!(
                "{name} exited at start; stopped the nodes started; last log lines of {}:\n{tail}",
                log_path(layout, name).display()
            )));
        }
        if !running_before.is_empty() {
            return Err(DeployError::Config(format!(
                "{name}: an address in its config is taken by another process, and the ports \
                 cannot be moved while {} run with the current ones; run `symphony devnet down` \
                 and `up` again. Log:\n{tail}",
                running_before.join(", ")
            )));
        }
        if !never_ran && failure.log.contains(RAFT_LISTEN_FAILED) {
            let raft = layout
                .masters
                .iter()
                .find(|m| format!("master-{}", m.id) == *name)
                .map(|m| m.raft.to_string())
                .unwrap_or_default();
            return Err(DeployError::Config(format!(
                "{name}: its Raft address {raft} is taken by another process; the Raft \
                 membership of this devnet records it, so it cannot be moved: free the port \
                 and run `symphony devnet up` again. Log:\n{tail}"
            )));
        }
        if attempt == START_ATTEMPTS {
            return Err(DeployError::Config(format!(
                "{name}: address in use after {START_ATTEMPTS} attempts with new ports. \
                 Log:\n{tail}"
            )));
        }
        if never_ran {
            for d in &raft_dirs {
                if d.exists() {
                    std::fs::remove_dir_all(d)?;
                }
            }
        }
        reassign_ports(layout, never_ran)?;
        report.port_moves += 1;
    }
    Err(DeployError::Config(format!(
        "no start within {START_ATTEMPTS} attempts"
    )))
}

/// Picks new free ports for every enterprise node and gateway (and every Raft
/// address when `raft` is set) and rewrites the configs and `devnet.json`. Only for
/// a stopped devnet; Raft addresses only for one that never ran.
pub fn reassign_ports(layout: &mut DevnetLayout, raft: bool) -> Result<(), DeployError> {
    let mut ports = PortPicker::default();
    let mut enterprise_addrs = BTreeMap::new();
    for e in &mut layout.enterprises {
        e.addr = ports.pick()?;
        let mut config: EnterpriseConfig = read_toml(&e.config)?;
        config.listen_addr = e.addr.to_string();
        write_toml(&e.config, &config)?;
        enterprise_addrs.insert(e.vault_id.clone(), e.addr);
    }
    for m in &mut layout.masters {
        m.gateway = ports.pick()?;
        if raft {
            m.raft = ports.pick()?;
        }
    }
    let masters: BTreeMap<u64, (SocketAddr, SocketAddr)> = layout
        .masters
        .iter()
        .map(|m| (m.id, (m.raft, m.gateway)))
        .collect();
    for m in &layout.masters {
        let mut config: MasterConfig = read_toml(&m.config)?;
        for entry in &mut config.masters {
            if let Some((raft, gateway)) = masters.get(&entry.id) {
                entry.addr = raft.to_string();
                entry.gateway = gateway.to_string();
            }
        }
        for entry in &mut config.enterprises {
            if let Some(addr) = enterprise_addrs.get(&entry.vault_id) {
                entry.addr = addr.to_string();
            }
        }
        write_toml(&m.config, &config)?;
    }
    drop(ports);
    layout.save()
}
