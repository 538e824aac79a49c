//! The `Tee` trait and the software enclave.

use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::identity::{CodeIdentity, Measurement};
use crate::report::{run_commitment, AttestationReport, Commitment, Nonce, REPORT_LAYOUT_VERSION};

/// Errors an enclave backend can report while attesting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TeeError {
    /// The platform refused or failed to produce evidence (hardware backends).
    #[error("platform could not produce attestation evidence: {0}")]
    Platform(String),
}

/// A trusted execution environment: a measured enclave that can attest to data.
pub trait Tee {
    /// The code identity hash of the code this enclave runs.
    fn measurement(&self) -> Measurement;

    /// The enclave's own ed25519 public key (bound into every report).
    fn enclave_public_key(&self) -> [u8; 32];

    /// Produces a report binding `report_data` and `nonce` to this enclave's
    /// measurement and key. `issued_at_ms` is supplied by the caller.
    fn attest(
        &self,
        report_data: Commitment,
        nonce: Nonce,
        issued_at_ms: u64,
    ) -> Result<AttestationReport, TeeError>;

    /// Runs `f` as measured code and attests to the run.
    ///
    /// `f` returns its output together with a commitment to that output; the report's
    /// `report_data` is [`run_commitment`]`(inputs_commitment, outputs_commitment)`, so
    /// a verifier holding the inputs and outputs can recompute it.
    fn run<T, F>(
        &self,
        inputs_commitment: &Commitment,
        nonce: Nonce,
        issued_at_ms: u64,
        f: F,
    ) -> Result<(T, AttestationReport), TeeError>
    where
        Self: Sized,
        F: FnOnce() -> (T, Commitment),
    {
        let (output, outputs_commitment) = f();
        let report_data = run_commitment(inputs_commitment, &outputs_commitment);
        let report = self.attest(report_data, nonce, issued_at_ms)?;
        Ok((output, report))
    }
}

const ENCLAVE_KEY_DOMAIN: &[u8] = b"symphony/software-enclave-key/v1";

/// The default, software-only enclave.
///
/// The platform signing key stands in for a hardware quoting key; the enclave key is
/// `SHA-256("symphony/software-enclave-key/v1" || platform_secret || measurement)`,
/// so the same platform key and code always yield the same enclave key (replayable).
#[derive(Clone)]
pub struct SoftwareEnclave {
    platform_key: SigningKey,
    enclave_key: SigningKey,
    measurement: Measurement,
}

impl std::fmt::Debug for SoftwareEnclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareEnclave")
            .field("measurement", &self.measurement)
            .field(
                "platform_public_key",
                &hex::encode(self.platform_key.verifying_key().to_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl SoftwareEnclave {
    /// An enclave for `code_identity` on the platform holding `platform_signing_key`,
    /// with a derived enclave key.
    pub fn new(platform_signing_key: SigningKey, code_identity: &CodeIdentity) -> Self {
        let measurement = code_identity.measurement();
        let mut h = Sha256::new();
        h.update(ENCLAVE_KEY_DOMAIN);
        h.update(platform_signing_key.to_bytes());
        h.update(measurement.0);
        let enclave_key = SigningKey::from_bytes(&h.finalize().into());
        Self::with_enclave_key(platform_signing_key, enclave_key, code_identity)
    }

    /// An enclave with an explicitly supplied enclave key.
    pub fn with_enclave_key(
        platform_signing_key: SigningKey,
        enclave_key: SigningKey,
        code_identity: &CodeIdentity,
    ) -> Self {
        Self {
            platform_key: platform_signing_key,
            enclave_key,
            measurement: code_identity.measurement(),
        }
    }

    /// The platform public key (what verifiers list as trusted).
    pub fn platform_public_key(&self) -> [u8; 32] {
        self.platform_key.verifying_key().to_bytes()
    }

    /// Signs `message` with the enclave key (e.g. a result bundle produced inside).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.enclave_key.sign(message)
    }
}

impl Tee for SoftwareEnclave {
    fn measurement(&self) -> Measurement {
        self.measurement
    }

    fn enclave_public_key(&self) -> [u8; 32] {
        self.enclave_key.verifying_key().to_bytes()
    }

    fn attest(
        &self,
        report_data: Commitment,
        nonce: Nonce,
        issued_at_ms: u64,
    ) -> Result<AttestationReport, TeeError> {
        let mut report = AttestationReport {
            version: REPORT_LAYOUT_VERSION,
            measurement: self.measurement,
            enclave_public_key: self.enclave_public_key(),
            report_data,
            nonce,
            issued_at_ms,
            platform_public_key: self.platform_public_key(),
            signature: [0; 64],
        };
        report.signature = self.platform_key.sign(&report.signing_message()).to_bytes();
        Ok(report)
    }
}
