//! Process configuration (TOML). Parsing is two steps: serde reads the file into raw
//! strings, then [`MasterConfig::validate`] / [`EnterpriseConfig::validate`] check
//! every value and name the offending key, e.g.
//! `masters[1].addr: invalid socket address "x"`.
//!
//! Gateway keys of `master.toml` (see [`MasterConfig`] for all keys):
//!
//! | key | meaning |
//! |---|---|
//! | `rate_limit_per_s`, `rate_limit_burst` | token bucket per caller; over it a request gets `429` |
//! | `body_limit_bytes` | largest request body (1 KiB..=16 MiB); over it `413` |
//! | `request_window_ms` | accepted clock skew of a signed request; outside it `401` |
//! | `max_pending_requests` | most task requests acknowledged and not yet final in the cluster (optional, default [`DEFAULT_MAX_PENDING_REQUESTS`]); a submission arriving when the queue holds that many is refused with `503` and nothing is proposed |
//!
//! Governance keys (optional; every master of a cluster must carry the same values):
//!
//! | key | meaning |
//! |---|---|
//! | `epoch_length_ms` | the genesis policy's epoch length (default: policy v1's, one hour); must divide a 365-day year. The leader closes an epoch by time when its clock passes the epoch's opening + this length |
//! | `max_tasks_per_epoch` | the genesis policy's epoch capacity: tasks admitted per epoch before the leader closes it by capacity (default: none) |

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::DeployError;

/// TLS files of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// One master as every master knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterEntry {
    /// Raft node id (1, 2, 3).
    pub id: u64,
    /// Raft RPC address.
    pub addr: String,
    /// Public API gateway address.
    pub gateway: String,
    /// Commit-statement verifying key (hex).
    pub public_key: String,
}

/// One enterprise node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseEntry {
    /// The hosted Vault.
    pub vault_id: String,
    /// RPC address.
    pub addr: String,
    /// Its enclave platform public key (hex), trusted by the attestation verifier.
    pub platform_public_key: String,
    /// A member from genesis (default). `false`: a candidate that receives slices
    /// only once an `enterprise_membership` proposal for its Vault is approved.
    #[serde(default = "genesis_member")]
    pub genesis_member: bool,
}

fn genesis_member() -> bool {
    true
}

/// A registered task submitter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerEntry {
    /// Actor id, e.g. `advertiser:luckin`.
    pub actor: String,
    /// ed25519 public key (hex).
    pub public_key: String,
    /// Genesis balance in µSYM.
    pub balance_micro_sym: u64,
}

/// Default of [`MasterConfig::max_pending_requests`].
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 10_000;

fn default_max_pending_requests() -> usize {
    DEFAULT_MAX_PENDING_REQUESTS
}

/// `master.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// This master's id.
    pub node_id: u64,
    /// Cluster identity (part of every commit statement).
    pub cluster_id: String,
    /// Raft log, snapshots and logs of this master.
    pub data_dir: PathBuf,
    /// File with this master's commit signing key (hex seed).
    pub signing_key_file: PathBuf,
    /// File with the aggregation enclave's platform key (hex seed).
    pub aggregator_key_file: PathBuf,
    /// Injected "now" (ms) for the protocol flow; `None` = wall clock at admission.
    #[serde(default)]
    pub fixed_now_ms: Option<u64>,
    /// Requests per second per caller across all the cluster's gateways: each
    /// gateway enforces its share (a third with three masters).
    pub rate_limit_per_s: u32,
    /// Burst per caller across all gateways (each gateway: its share, at least 1).
    pub rate_limit_burst: u32,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Accepted clock skew of signed requests.
    pub request_window_ms: u64,
    /// Bound of the request queue: most task requests acknowledged and not yet final
    /// (queued or running, as this master's replica counts them). A submission that
    /// arrives when the queue is full is refused with `503` before anything is
    /// proposed. Optional; default [`DEFAULT_MAX_PENDING_REQUESTS`]; must be > 0.
    #[serde(default = "default_max_pending_requests")]
    pub max_pending_requests: usize,
    /// Epoch length of the genesis policy, ms (a devnet may run short epochs);
    /// `None` = policy v1's (one hour). Must divide a 365-day year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_length_ms: Option<u64>,
    /// Tasks admitted per epoch before the capacity trigger closes it; `None` = no
    /// bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks_per_epoch: Option<u64>,
    /// TLS files.
    pub tls: TlsFiles,
    /// All masters, this one included.
    pub masters: Vec<MasterEntry>,
    /// Enterprise nodes.
    pub enterprises: Vec<EnterpriseEntry>,
    /// Registered callers.
    pub callers: Vec<CallerEntry>,
}

/// `enterprise.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    /// The hosted Vault.
    pub vault_id: String,
    /// RPC listen address.
    pub listen_addr: String,
    /// The Vault's redb file.
    pub vault_path: PathBuf,
    /// File with the Vault key (hex).
    pub vault_key_file: PathBuf,
    /// File with the enclave platform key (hex seed).
    pub platform_key_file: PathBuf,
    /// TLS files.
    pub tls: TlsFiles,
}

fn invalid(key: &str, msg: impl std::fmt::Display) -> DeployError {
    DeployError::Config(format!("{key}: {msg}"))
}

/// Parses `value` as a socket address, naming `key` on error.
pub fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, DeployError> {
    value
        .parse()
        .map_err(|_| invalid(key, format!("invalid socket address {value:?}")))
}

/// Parses a hex ed25519 public key, naming `key` on error.
pub fn parse_public_key(key: &str, value: &str) -> Result<VerifyingKey, DeployError> {
    let bytes: [u8; 32] = hex::decode(value.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid(key, format!("expected 64 hex digits, got {value:?}")))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| invalid(key, "not a valid ed25519 public key"))
}

/// Reads a hex 32-byte secret from a file, naming `key` on error.
pub fn read_secret(key: &str, path: &Path) -> Result<[u8; 32], DeployError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid(key, format!("{} must hold 64 hex digits", path.display())))
}

/// Reads an ed25519 signing key file.
pub fn read_signing_key(key: &str, path: &Path) -> Result<SigningKey, DeployError> {
    Ok(SigningKey::from_bytes(&read_secret(key, path)?))
}

/// Writes a secret as hex (mode 0600 on unix).
pub fn write_secret(path: &Path, secret: &[u8; 32]) -> Result<(), DeployError> {
    std::fs::write(path, hex::encode(secret))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, DeployError> {
    toml::from_str(text).map_err(|e| DeployError::Config(e.to_string()))
}

fn parse_validated<T: for<'de> Deserialize<'de>>(
    text: &str,
    validate: impl Fn(&T) -> Result<(), DeployError>,
) -> Result<T, DeployError> {
    let config: T = parse_toml(text)?;
    validate(&config)?;
    Ok(config)
}

fn load_validated<T: for<'de> Deserialize<'de>>(
    path: &Path,
    validate: impl Fn(&T) -> Result<(), DeployError>,
) -> Result<T, DeployError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DeployError::Config(format!("{}: {e}", path.display())))?;
    parse_validated(&text, validate)
}

fn check_path(key: &str, p: &Path) -> Result<(), DeployError> {
    if p.exists() {
        Ok(())
    } else {
        Err(invalid(key, format!("{} does not exist", p.display())))
    }
}

impl MasterConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, DeployError> {
        load_validated(path, Self::validate)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DeployError> {
        parse_validated(text, Self::validate)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), DeployError> {
        if self.cluster_id.is_empty() {
            return Err(invalid("cluster_id", "must not be empty"));
        }
        let mut ids = BTreeSet::new();
        for (i, m) in self.masters.iter().enumerate() {
            parse_addr(&format!("masters[{i}].addr"), &m.addr)?;
            parse_addr(&format!("masters[{i}].gateway"), &m.gateway)?;
            parse_public_key(&format!("masters[{i}].public_key"), &m.public_key)?;
            if !ids.insert(m.id) {
                return Err(invalid(
                    &format!("masters[{i}].id"),
                    format!("duplicate id {}", m.id),
                ));
            }
        }
        if self.masters.len() != 3 {
            return Err(invalid(
                "masters",
                format!(
                    "exactly 3 masters are needed (2-of-3 finality), found {}",
                    self.masters.len()
                ),
            ));
        }
        if !ids.contains(&self.node_id) {
            return Err(invalid(
                "node_id",
                format!("{} is not listed in masters", self.node_id),
            ));
        }
        for (i, e) in self.enterprises.iter().enumerate() {
            parse_addr(&format!("enterprises[{i}].addr"), &e.addr)?;
            parse_public_key(
                &format!("enterprises[{i}].platform_public_key"),
                &e.platform_public_key,
            )?;
            symphony_core::ids::VaultId::new(e.vault_id.clone())
                .map_err(|err| invalid(&format!("enterprises[{i}].vault_id"), err))?;
        }
        for (i, c) in self.callers.iter().enumerate() {
            parse_public_key(&format!("callers[{i}].public_key"), &c.public_key)?;
            symphony_core::ids::ActorId::new(c.actor.clone())
                .map_err(|err| invalid(&format!("callers[{i}].actor"), err))?;
        }
        if self.rate_limit_per_s == 0 || self.rate_limit_burst == 0 {
            return Err(invalid(
                "rate_limit_per_s",
                "rate limit and burst must be > 0",
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.body_limit_bytes) {
            return Err(invalid("body_limit_bytes", "must be in 1024..=16777216"));
        }
        if self.request_window_ms == 0 {
            return Err(invalid("request_window_ms", "must be > 0"));
        }
        if self.max_pending_requests == 0 {
            return Err(invalid(
                "max_pending_requests",
                "must be > 0 (the most task requests acknowledged and not yet final)",
            ));
        }
        self.genesis_policy()?;
        if self.max_tasks_per_epoch == Some(0) {
            return Err(invalid(
                "max_tasks_per_epoch",
                "must be > 0 (tasks admitted per epoch before it closes by capacity)",
            ));
        }
        check_path("signing_key_file", &self.signing_key_file)?;
        check_path("aggregator_key_file", &self.aggregator_key_file)?;
        check_path("tls.ca", &self.tls.ca)?;
        check_path("tls.cert", &self.tls.cert)?;
        check_path("tls.key", &self.tls.key)?;
        Ok(())
    }

    /// The genesis policy of the cluster: policy v1 with this file's epoch length.
    pub fn genesis_policy(&self) -> Result<symphony_economics::PolicyParams, DeployError> {
        let mut params = symphony_economics::PolicyParams::default_v1();
        if let Some(length) = self.epoch_length_ms {
            params.epochs.epoch_length_ms = length;
            params.validate().map_err(|e| {
                invalid(
                    "epoch_length_ms",
                    format!("{length} ms: must be positive and divide a 365-day year ({e})"),
                )
            })?;
        }
        Ok(params)
    }

    /// This master's entry.
    pub fn me(&self) -> Result<&MasterEntry, DeployError> {
        self.masters
            .iter()
            .find(|m| m.id == self.node_id)
            .ok_or_else(|| invalid("node_id", "not listed in masters"))
    }
}

impl EnterpriseConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, DeployError> {
        load_validated(path, Self::validate)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DeployError> {
        parse_validated(text, Self::validate)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), DeployError> {
        symphony_core::ids::VaultId::new(self.vault_id.clone())
            .map_err(|err| invalid("vault_id", err))?;
        parse_addr("listen_addr", &self.listen_addr)?;
        check_path("vault_path", &self.vault_path)?;
        check_path("vault_key_file", &self.vault_key_file)?;
        check_path("platform_key_file", &self.platform_key_file)?;
        check_path("tls.ca", &self.tls.ca)?;
        check_path("tls.cert", &self.tls.cert)?;
        check_path("tls.key", &self.tls.key)?;
        Ok(())
    }
}

/// Generates a new ed25519 key (OS randomness), writes its secret to `path` (0600),
/// and returns the public key.
pub fn new_key_file(path: &Path) -> Result<VerifyingKey, DeployError> {
    if path.exists() {
        return Err(DeployError::Config(format!(
            "{} exists; refusing to overwrite a key",
            path.display()
        )));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_secret(path, &key.to_bytes())?;
    Ok(key.verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master_toml(addr: &str) -> String {
        master_toml_with(addr, "")
    }

    fn master_toml_with(addr: &str, extra: &str) -> String {
        let key = hex::encode(
            SigningKey::from_bytes(&[1u8; 32])
                .verifying_key()
                .to_bytes(),
        );
        format!(
            r#"
node_id = 1
cluster_id = "c"
data_dir = "/tmp/x"
signing_key_file = "/nonexistent"
aggregator_key_file = "/nonexistent"
rate_limit_per_s = 10
rate_limit_burst = 10
body_limit_bytes = 65536
request_window_ms = 1000
{extra}
enterprises = []
callers = []
[tls]
ca = "/nonexistent"
cert = "/nonexistent"
key = "/nonexistent"
[[masters]]
id = 1
addr = "127.0.0.1:1"
gateway = "127.0.0.1:2"
public_key = "{key}"
[[masters]]
id = 2
addr = "{addr}"
gateway = "127.0.0.1:4"
public_key = "{key}"
[[masters]]
id = 3
addr = "127.0.0.1:5"
gateway = "127.0.0.1:6"
public_key = "{key}"
"#
        )
    }

    #[test]
    fn validation_errors_name_the_key() {
        let e = MasterConfig::from_toml(&master_toml("x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"masters[1].addr: invalid socket address "x""#),
            "{e}"
        );
        let e = MasterConfig::from_toml(&master_toml("127.0.0.1:3"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("signing_key_file: /nonexistent does not exist"),
            "{e}"
        );
        let e = MasterConfig::from_toml("node_id = \"one\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node_id"), "{e}");
        let e = EnterpriseConfig::from_toml("vault_id = \"v\"\nlisten_addr = \"nope\"\nvault_path = \"/\"\nvault_key_file = \"/\"\nplatform_key_file = \"/\"\n[tls]\nca = \"/\"\ncert = \"/\"\nkey = \"/\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"listen_addr: invalid socket address "nope""#),
            "{e}"
        );
    }

    #[test]
    fn max_pending_requests_defaults_and_is_validated() {
        // Absent: the default (validation then stops at the first missing file).
        let parsed: MasterConfig = toml::from_str(&master_toml("127.0.0.1:3")).unwrap();
        assert_eq!(parsed.max_pending_requests, DEFAULT_MAX_PENDING_REQUESTS);
        let parsed: MasterConfig =
            toml::from_str(&master_toml_with("127.0.0.1:3", "max_pending_requests = 7")).unwrap();
        assert_eq!(parsed.max_pending_requests, 7);
        let e =
            MasterConfig::from_toml(&master_toml_with("127.0.0.1:3", "max_pending_requests = 0"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("max_pending_requests: must be > 0"), "{e}");
        let e = MasterConfig::from_toml(&master_toml_with(
            "127.0.0.1:3",
            "max_pending_requests = -1",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_pending_requests"), "{e}");
        let e = MasterConfig::from_toml(&master_toml_with(
            "127.0.0.1:3",
            "max_pending_requests = \"many\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_pending_requests"), "{e}");
    }
}
