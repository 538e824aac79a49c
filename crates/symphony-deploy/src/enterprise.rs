//! The enterprise process: opens the Vault, starts its enclave, and serves the
//! enterprise RPC over mutual TLS until stopped.

use std::sync::Arc;

use symphony_consensus::transport::{MutualTls, TransportSecurity};
use symphony_enclave::SoftwareEnclave;
use symphony_node::bundle::slice_code_identity;
use symphony_node::enterprise::EnterpriseNode;
use symphony_vault::{Vault, VaultKey};

use crate::config::{parse_addr, read_secret, read_signing_key, EnterpriseConfig};
use crate::tls::TlsMaterial;
use crate::DeployError;

/// Entropy for the Vault's nonces: the same derivation the embedded network uses.
pub fn vault_entropy(vault_id: &str) -> [u8; 32] {
    symphony_core::encoding::tagged_hash("scp/vault-entropy", vault_id.as_bytes()).0
}

/// Runs an enterprise node until `shutdown` resolves.
pub async fn run(
    config: EnterpriseConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DeployError> {
    let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let security = TransportSecurity::MutualTls(MutualTls {
        client: tls.mutual_client()?,
        server: tls.mutual_server()?,
    });
    let key = VaultKey::from_bytes(read_secret("vault_key_file", &config.vault_key_file)?);
    let platform = read_signing_key("platform_key_file", &config.platform_key_file)?;
    let vault_path = config.vault_path.clone();
    let vault_id = config.vault_id.clone();
    let vault = tokio::task::spawn_blocking(move || {
        Vault::open(&vault_path, &key, vault_entropy(&vault_id))
    })
    .await
    .map_err(|e| DeployError::Io(std::io::Error::other(e)))?
    .map_err(|e| DeployError::Node(e.into()))?;
    if vault.vault_id().as_str() != config.vault_id {
        return Err(DeployError::Config(format!(
            "vault_id: config says {:?} but the Vault file holds {:?}",
            config.vault_id,
            vault.vault_id().as_str()
        )));
    }
    let enclave = SoftwareEnclave::new(platform, &slice_code_identity());
    let node = Arc::new(EnterpriseNode::new(vault, enclave));
    let addr = parse_addr("listen_addr", &config.listen_addr)?;
    let listener = symphony_consensus::bind_retrying(addr).await?;
    tracing::info!(vault = %config.vault_id, %addr, "enterprise node serving (mutual TLS)");
    tokio::select! {
        () = crate::rpc::serve(listener, security, node) => {}
        () = shutdown => {}
    }
    tracing::info!(vault = %config.vault_id, "enterprise node stopped");
    Ok(())
}
