//! What produced a piece of evidence: the kind of enclave behind an attestation.
//!
//! Pure protocol vocabulary, shared by the evidence records the masters replicate,
//! the attestation policy in the protocol's parameters and the verifiers.

use serde::{Deserialize, Serialize};

/// What produced a piece of evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnclaveKind {
    /// The software development backend (no hardware isolation).
    Software,
    /// An Intel SGX enclave.
    Sgx,
    /// An Intel TDX trust domain.
    Tdx,
}

impl EnclaveKind {
    /// Every kind, in order.
    pub const ALL: [EnclaveKind; 3] = [EnclaveKind::Software, EnclaveKind::Sgx, EnclaveKind::Tdx];

    /// Whether the kind is real hardware isolation.
    pub fn is_hardware(self) -> bool {
        self != EnclaveKind::Software
    }
}

impl std::fmt::Display for EnclaveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EnclaveKind::Software => "software",
            EnclaveKind::Sgx => "sgx",
            EnclaveKind::Tdx => "tdx",
        })
    }
}
