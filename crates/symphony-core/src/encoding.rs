//! Canonical encoding and content hashing.
//!
//! Every protocol object that is hashed or signed is encoded with BCS (Binary
//! Canonical Serialization, the encoding Aptos uses on chain): one byte layout per
//! value, maps in key order, integers little-endian with fixed width, sequences
//! length-prefixed with ULEB128. The content hash is SHA-256 over a domain tag and
//! the BCS bytes, so two object kinds never share a hash even if their bytes agree.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// A 32-byte SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The value could not be encoded canonically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("canonical encoding failed: {0}")]
pub struct EncodingError(pub String);

/// Encodes a value canonically (BCS).
pub fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodingError> {
    bcs::to_bytes(value).map_err(|e| EncodingError(e.to_string()))
}

/// Decodes canonical bytes (BCS); trailing bytes are an error.
pub fn from_canonical_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, EncodingError> {
    bcs::from_bytes(bytes).map_err(|e| EncodingError(e.to_string()))
}

/// SHA-256 over `domain_tag || 0x00 || bytes`.
pub fn tagged_hash(domain_tag: &str, bytes: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(domain_tag.as_bytes());
    h.update([0u8]);
    h.update(bytes);
    Digest(h.finalize().into())
}

/// Content hash of a value: [`tagged_hash`] over its canonical bytes.
pub fn content_hash<T: Serialize + ?Sized>(
    domain_tag: &str,
    value: &T,
) -> Result<Digest, EncodingError> {
    Ok(tagged_hash(domain_tag, &canonical_bytes(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn bcs_layout_is_fixed() {
        // Golden: a (u32, string, map) encodes to exactly these bytes.
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), 2u8);
        m.insert("a".to_string(), 1u8);
        let bytes = canonical_bytes(&(7u32, "hi", m)).unwrap();
        assert_eq!(hex::encode(&bytes), "0700000002686902016101016202");
    }

    #[test]
    fn tags_separate_domains() {
        assert_ne!(tagged_hash("a", b"x"), tagged_hash("b", b"x"));
        assert_eq!(
            tagged_hash("scp/test", b"").to_hex(),
            tagged_hash("scp/test", &[]).to_hex()
        );
    }
}
