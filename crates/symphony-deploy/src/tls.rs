//! Mutual TLS material: a devnet certificate authority, node certificates, and the
//! rustls configurations every connection uses.
//!
//! Every node (master, enterprise) holds a certificate issued by the network's CA
//! with SANs `localhost` and `127.0.0.1` (devnet) and both server and client
//! usage. Node-to-node connections (Raft RPC, enterprise RPC) require a client
//! certificate from the same CA; the public API gateway only presents its own.
//! Crypto is `ring` (no C toolchain beyond `cc`, quick to build).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::DeployError;

const CA_NAME: &str = "Symphony devnet CA";

fn tls_err(what: &str, e: impl std::fmt::Display) -> DeployError {
    DeployError::Tls(format!("{what}: {e}"))
}

fn ca_params() -> Result<CertificateParams, DeployError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A new CA: `(certificate PEM, private key PEM)`.
pub fn generate_ca() -> Result<(String, String), DeployError> {
    let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(|e| tls_err("CA certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A node certificate for `name` issued by the CA: `(certificate PEM, key PEM)`.
pub fn issue_node_cert(ca_key_pem: &str, name: &str) -> Result<(String, String), DeployError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| tls_err("CA key", e))?;
    // Same DN and key as the stored CA certificate, so issued certificates chain to it.
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(|e| tls_err("CA certificate", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err(name, e))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e| tls_err("SAN localhost", e))?,
        ),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(|e| tls_err("node key", e))?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| tls_err("node certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A node's TLS identity and the CA it trusts.
#[derive(Debug)]
pub struct TlsMaterial {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates in a PEM file, as a root store.
pub fn load_roots(ca_path: &Path) -> Result<Arc<RootCertStore>, DeployError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_path)
        .map_err(|e| tls_err(&ca_path.display().to_string(), e))?;
    for cert in certs {
        let cert = cert.map_err(|e| tls_err(&ca_path.display().to_string(), e))?;
        roots
            .add(cert)
            .map_err(|e| tls_err(&ca_path.display().to_string(), e))?;
    }
    if roots.is_empty() {
        return Err(tls_err(
            &ca_path.display().to_string(),
            "no certificate in file",
        ));
    }
    Ok(Arc::new(roots))
}

impl TlsMaterial {
    /// Loads the CA certificate, this node's certificate and its private key (PEM).
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, DeployError> {
        let roots = load_roots(ca)?;
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| tls_err(&cert.display().to_string(), e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err(&cert.display().to_string(), e))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls_err(&key.display().to_string(), e))?;
        Ok(Self { roots, chain, key })
    }

    /// Server side of node-to-node traffic: a client certificate from the CA is required.
    pub fn mutual_server(&self) -> Result<Arc<ServerConfig>, DeployError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| tls_err("client verifier", e))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("server certificate", e))?;
        Ok(Arc::new(config))
    }

    /// Server side of the public gateway: no client certificate (callers sign requests).
    pub fn public_server(&self) -> Result<Arc<ServerConfig>, DeployError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("server certificate", e))?;
        Ok(Arc::new(config))
    }

    /// Client side of node-to-node traffic: presents this node's certificate.
    pub fn mutual_client(&self) -> Result<Arc<ClientConfig>, DeployError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", e))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("client certificate", e))?;
        Ok(Arc::new(config))
    }
}

/// Client configuration for callers of the gateway: trusts `roots`, no client cert.
pub fn public_client(roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, DeployError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
