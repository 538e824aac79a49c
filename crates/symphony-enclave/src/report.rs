//! The attestation report and its canonical byte layout.
//!
//! ## Wire layout, version 1 (all integers little-endian, 234 bytes)
//!
//! | offset | len | field                 |
//! |-------:|----:|-----------------------|
//! |      0 |   2 | layout version (`1`)  |
//! |      2 |  32 | measurement           |
//! |     34 |  32 | enclave public key    |
//! |     66 |  32 | report_data           |
//! |     98 |  32 | nonce                 |
//! |    130 |   8 | issued_at_ms (u64)    |
//! |    138 |  32 | platform public key   |
//! |    170 |  64 | ed25519 signature     |
//!
//! The signature covers [`REPORT_SIGNING_DOMAIN`] followed by bytes `0..170` (the
//! *body*). The domain tag keeps a report signature from being valid for any other
//! message the platform key might sign.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::Measurement;

/// A 32-byte commitment (the report's `report_data`).
pub type Commitment = [u8; 32];
/// A 32-byte freshness nonce chosen by the verifier (or by the protocol, e.g. a task id hash).
pub type Nonce = [u8; 32];

/// Current layout version of [`AttestationReport::to_bytes`].
pub const REPORT_LAYOUT_VERSION: u16 = 1;
/// Domain separation tag prepended to the body before signing.
pub const REPORT_SIGNING_DOMAIN: &[u8] = b"symphony/attestation-report/v1";
/// Length of the signed body.
const BODY_LEN: usize = 2 + 32 + 32 + 32 + 32 + 8 + 32;
/// Length of the full wire encoding (body + signature).
pub const REPORT_WIRE_LEN: usize = BODY_LEN + 64;

const RUN_COMMITMENT_DOMAIN: &[u8] = b"symphony/enclave-run/v1";

/// The commitment [`crate::Tee::run`] puts into `report_data`:
/// `SHA-256("symphony/enclave-run/v1" || inputs_commitment || outputs_commitment)`.
/// A verifier recomputes it from the inputs and outputs it was given.
pub fn run_commitment(
    inputs_commitment: &Commitment,
    outputs_commitment: &Commitment,
) -> Commitment {
    let mut h = Sha256::new();
    h.update(RUN_COMMITMENT_DOMAIN);
    h.update(inputs_commitment);
    h.update(outputs_commitment);
    h.finalize().into()
}

/// A signed statement: "code with `measurement`, holding `enclave_public_key`, bound
/// itself to `report_data` under `nonce` at `issued_at_ms`", signed by the platform key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationReport {
    // (The software backend's layout; real SGX/TDX quotes are verified by
    // `symphony-attest`.)
    /// Layout version; see [`REPORT_LAYOUT_VERSION`].
    pub version: u16,
    /// Code identity hash of the enclave.
    pub measurement: Measurement,
    /// The enclave's own ed25519 public key.
    #[serde(with = "crate::hex_serde")]
    pub enclave_public_key: [u8; 32],
    /// Caller-chosen commitment (e.g. [`run_commitment`]).
    #[serde(with = "crate::hex_serde")]
    pub report_data: Commitment,
    /// Freshness nonce.
    #[serde(with = "crate::hex_serde")]
    pub nonce: Nonce,
    /// Issue time in milliseconds, supplied by the caller (the crate has no clock).
    pub issued_at_ms: u64,
    /// The platform key that signed the report; it is also the platform key id.
    #[serde(with = "crate::hex_serde")]
    pub platform_public_key: [u8; 32],
    /// ed25519 signature by the platform key over the signing message.
    #[serde(with = "crate::hex_serde")]
    pub signature: [u8; 64],
}

/// Errors decoding the wire layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is not exactly [`REPORT_WIRE_LEN`] bytes.
    #[error("attestation report must be {expected} bytes, found {found}")]
    Length {
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// The layout version is not one this crate understands.
    #[error("unsupported attestation report layout version {found}")]
    UnsupportedVersion {
        /// Version found.
        found: u16,
    },
}

impl AttestationReport {
    /// The signed body (bytes `0..170` of the wire layout).
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BODY_LEN);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.measurement.0);
        out.extend_from_slice(&self.enclave_public_key);
        out.extend_from_slice(&self.report_data);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.issued_at_ms.to_le_bytes());
        out.extend_from_slice(&self.platform_public_key);
        debug_assert_eq!(out.len(), BODY_LEN);
        out
    }

    /// The exact message the platform key signs: domain tag || body.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(REPORT_SIGNING_DOMAIN.len() + BODY_LEN);
        msg.extend_from_slice(REPORT_SIGNING_DOMAIN);
        msg.extend_from_slice(&self.body_bytes());
        msg
    }

    /// Full wire encoding: body || signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire encoding. Does *not* verify anything beyond the layout.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != REPORT_WIRE_LEN {
            return Err(DecodeError::Length {
                expected: REPORT_WIRE_LEN,
                found: bytes.len(),
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        let version = u16::from_le_bytes(r.take());
        if version != REPORT_LAYOUT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        Ok(Self {
            version,
            measurement: Measurement(r.take()),
            enclave_public_key: r.take(),
            report_data: r.take(),
            nonce: r.take(),
            issued_at_ms: u64::from_le_bytes(r.take()),
            platform_public_key: r.take(),
            signature: r.take(),
        })
    }

    /// SHA-256 of the wire encoding: a stable id for evidence records.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }
}

/// Fixed-layout reader; callers check the total length first, so `take` never runs
/// past the end (a short read yields zeros rather than panicking).
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.bytes.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }
}

pub use symphony_core::EnclaveKind;

impl AttestationReport {
    /// What produced this report: the software backend's report layout.
    pub fn kind(&self) -> EnclaveKind {
        EnclaveKind::Software
    }
}
