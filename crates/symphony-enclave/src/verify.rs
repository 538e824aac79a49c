//! Attestation verification.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::identity::Measurement;
use crate::report::{AttestationReport, Commitment, Nonce, REPORT_LAYOUT_VERSION};

/// What the verifier expects the report to be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportExpectation {
    /// The commitment the report must carry in `report_data`.
    pub report_data: Commitment,
    /// The nonce the report must carry, if the verifier issued one.
    pub nonce: Option<Nonce>,
}

/// The facts a successful verification establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedEnclave {
    /// Allow-listed measurement of the code that ran.
    pub measurement: Measurement,
    /// The enclave's public key, now bound to that measurement.
    pub enclave_public_key: [u8; 32],
    /// The platform key that vouched for it.
    pub platform_public_key: [u8; 32],
    /// When the report was issued (caller-supplied at attest time).
    pub issued_at_ms: u64,
}

/// Why a report was rejected. The first failing check (in the order of the variants)
/// is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The report's layout version is unknown.
    #[error("unsupported attestation report version {found}")]
    UnsupportedVersion {
        /// Version found.
        found: u16,
    },
    /// The platform key is not in the trusted set.
    #[error("untrusted platform key {platform_public_key_hex}")]
    UntrustedPlatformKey {
        /// Hex of the key in the report.
        platform_public_key_hex: String,
    },
    /// The platform key bytes are not a valid ed25519 point.
    #[error("malformed platform public key")]
    MalformedPlatformKey,
    /// The signature does not verify over the report's canonical bytes.
    #[error("bad attestation report signature")]
    BadSignature,
    /// The measurement is not in the allow-list.
    #[error("unknown measurement {measurement}")]
    UnknownMeasurement {
        /// The measurement in the report.
        measurement: Measurement,
    },
    /// `report_data` differs from the expected commitment.
    #[error("report data mismatch: expected {expected_hex}, found {found_hex}")]
    ReportDataMismatch {
        /// Expected commitment (hex).
        expected_hex: String,
        /// Commitment in the report (hex).
        found_hex: String,
    },
    /// The nonce differs from the one the verifier issued.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// The attestation policy does not accept evidence of this kind.
    #[error(
        "{kind} evidence is not accepted by the attestation policy (it requires real TEE hardware)"
    )]
    KindRefused {
        /// What produced the evidence.
        kind: crate::EnclaveKind,
    },
}

/// Verifies attestation reports. Implemented by the software verifier today and by
/// hardware (e.g. DCAP) verifiers later; see the crate docs.
pub trait AttestationVerifier {
    /// Accepts `report` only if it is authentic, from allow-listed code, and bound to
    /// `expected`.
    fn verify(
        &self,
        report: &AttestationReport,
        expected: &ReportExpectation,
    ) -> Result<VerifiedEnclave, VerifyError>;
}

/// Verifier for [`crate::SoftwareEnclave`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoftwareAttestationVerifier {
    /// Measurements of code the settlement plane accepts.
    pub allowed_measurements: BTreeSet<[u8; 32]>,
    /// Platform public keys trusted to sign reports.
    pub trusted_platform_keys: BTreeSet<[u8; 32]>,
    /// The attestation policy refuses software evidence (production: only real
    /// hardware attests).
    pub refuse_software: bool,
}

impl SoftwareAttestationVerifier {
    /// A verifier with the given allow-list and trusted platform keys.
    pub fn new(
        allowed_measurements: impl IntoIterator<Item = Measurement>,
        trusted_platform_keys: impl IntoIterator<Item = [u8; 32]>,
    ) -> Self {
        Self {
            allowed_measurements: allowed_measurements.into_iter().map(|m| m.0).collect(),
            trusted_platform_keys: trusted_platform_keys.into_iter().collect(),
            refuse_software: false,
        }
    }
}

impl AttestationVerifier for SoftwareAttestationVerifier {
    fn verify(
        &self,
        report: &AttestationReport,
        expected: &ReportExpectation,
    ) -> Result<VerifiedEnclave, VerifyError> {
        if report.version != REPORT_LAYOUT_VERSION {
            return Err(VerifyError::UnsupportedVersion {
                found: report.version,
            });
        }
        if self.refuse_software && report.kind() == crate::EnclaveKind::Software {
            return Err(VerifyError::KindRefused {
                kind: report.kind(),
            });
        }
        if !self
            .trusted_platform_keys
            .contains(&report.platform_public_key)
        {
            return Err(VerifyError::UntrustedPlatformKey {
                platform_public_key_hex: hex::encode(report.platform_public_key),
            });
        }
        let key = VerifyingKey::from_bytes(&report.platform_public_key)
            .map_err(|_| VerifyError::MalformedPlatformKey)?;
        let signature = Signature::from_bytes(&report.signature);
        key.verify_strict(&report.signing_message(), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        if !self.allowed_measurements.contains(&report.measurement.0) {
            return Err(VerifyError::UnknownMeasurement {
                measurement: report.measurement,
            });
        }
        if report.report_data != expected.report_data {
            return Err(VerifyError::ReportDataMismatch {
                expected_hex: hex::encode(expected.report_data),
                found_hex: hex::encode(report.report_data),
            });
        }
        if let Some(nonce) = expected.nonce {
            if report.nonce != nonce {
                return Err(VerifyError::NonceMismatch);
            }
        }
        Ok(VerifiedEnclave {
            measurement: report.measurement,
            enclave_public_key: report.enclave_public_key,
            platform_public_key: report.platform_public_key,
            issued_at_ms: report.issued_at_ms,
        })
    }
}
