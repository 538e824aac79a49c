//! A local devnet on 127.0.0.1: CA and node certificates, keys, configs, and Vaults
//! seeded by the same data generator and key derivations as the embedded network
//! (so the same seed selects the same audience). Starting the processes is the
//! CLI's job (`symphony devnet up`); tests start them the same way.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use symphony_core::encoding::tagged_hash;
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
    /// Seed.
    pub seed: u64,
    /// Process ids by node name, once started.
    #[serde(default)]
    pub pids: BTreeMap<String, u32>,
}

impl DevnetLayout {
    /// Reads `DIR/devnet.json`.
    pub fn load(dir: &Path) -> Result<Self, DeployError> {
        let text = std::fs::read_to_string(dir.join("devnet.json"))
            .map_err(|e| DeployError::Config(format!("{}/devnet.json: {e}", dir.display())))?;
        serde_json::from_str(&text).map_err(|e| DeployError::Config(format!("devnet.json: {e}")))
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
}

/// The secret the embedded network derives for `label` under `seed`.
fn derived_secret(seed: u64, label: &str) -> [u8; 32] {
    tagged_hash(label, &seed.to_le_bytes()).0
}

fn free_port() -> Result<SocketAddr, DeployError> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
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
    let net = EmbeddedNetwork::build(
        &dir,
        &NetworkParams {
            subjects: params.subjects,
            vaults: params.enterprises,
            records: params.records,
            seed: params.seed,
            now_ms: params.now_ms,
        },
        &[params.advertiser.as_str()],
        obs,
    )?;
    let vault_ids = net.generated.vault_ids.clone();
    drop(net);

    let (ca_cert, ca_key) = crate::tls::generate_ca()?;
    std::fs::write(dir.join("tls/ca.pem"), &ca_cert)?;
    write_private(&dir.join("tls/ca.key"), &ca_key)?;

    let adv = advertiser_key(params.seed, &params.advertiser);
    let adv_file = dir.join("keys/advertiser.key");
    write_secret(&adv_file, &adv.to_bytes())?;
    let aggregator_file = dir.join("keys/aggregator.key");
    write_secret(
        &aggregator_file,
        &derived_secret(params.seed, "scp/master-platform/0"),
    )?;

    let mut enterprises = Vec::new();
    let mut enterprise_entries = Vec::new();
    for (i, vid) in vault_ids.iter().enumerate() {
        let addr = free_port()?;
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
        let (raft, gateway) = (free_port()?, free_port()?);
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
            tls: node_tls(&dir, &ca_key, &format!("master-{id}"))?,
            masters: entries.clone(),
            enterprises: enterprise_entries.clone(),
            callers: vec![CallerEntry {
                actor: params.advertiser.clone(),
                public_key: hex::encode(adv.verifying_key().to_bytes()),
                balance_micro_sym: 1_000_000 * symphony_economics::MICRO_SYM_PER_SYM,
            }],
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
    let layout = DevnetLayout {
        dir: dir.clone(),
        masters,
        enterprises,
        ca: dir.join("tls/ca.pem"),
        advertiser: params.advertiser.clone(),
        advertiser_key: adv_file,
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
