//! Code identity and its measurement.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain tag prefixed to the code identity encoding before hashing.
const MEASUREMENT_DOMAIN: &[u8] = b"symphony/code-identity/v1";

/// The 32-byte code identity hash of an enclave (the role MRENCLAVE plays on SGX).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Measurement(#[serde(with = "crate::hex_serde")] pub [u8; 32]);

impl Measurement {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What code an enclave runs: a name, a version and the hash of the code itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeIdentity {
    /// Program name, e.g. `"symphony/luckin-eligibility"`.
    pub name: String,
    /// Program version, e.g. `"1.0.0"`.
    pub version: String,
    /// Hash of the program's code (SHA-256 of the binary or of the canonical source).
    #[serde(with = "crate::hex_serde")]
    pub code_hash: [u8; 32],
}

impl CodeIdentity {
    /// Creates a code identity.
    pub fn new(name: impl Into<String>, version: impl Into<String>, code_hash: [u8; 32]) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            code_hash,
        }
    }

    /// The canonical encoding that is hashed into the measurement:
    /// `"symphony/code-identity/v1" || u64_le(len(name)) || name ||
    ///  u64_le(len(version)) || version || code_hash[32]`.
    /// Length prefixes make the encoding injective (no `("ab","c")` / `("a","bc")` clash).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MEASUREMENT_DOMAIN.len() + 16 + self.name.len() + self.version.len() + 32,
        );
        out.extend_from_slice(MEASUREMENT_DOMAIN);
        out.extend_from_slice(&(self.name.len() as u64).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.version.len() as u64).to_le_bytes());
        out.extend_from_slice(self.version.as_bytes());
        out.extend_from_slice(&self.code_hash);
        out
    }

    /// SHA-256 of [`CodeIdentity::canonical_bytes`].
    pub fn measurement(&self) -> Measurement {
        Measurement(Sha256::digest(self.canonical_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_is_deterministic_and_injective() {
        let a = CodeIdentity::new("ab", "c", [7; 32]);
        let b = CodeIdentity::new("a", "bc", [7; 32]);
        assert_eq!(a.measurement(), a.clone().measurement());
        assert_ne!(a.measurement(), b.measurement());
        let c = CodeIdentity::new("ab", "c", [8; 32]);
        assert_ne!(a.measurement(), c.measurement());
    }
}
