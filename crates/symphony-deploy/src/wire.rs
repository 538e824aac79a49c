//! Encoding of values with floating-point fields inside BCS messages.
//!
//! BCS (the canonical encoding of the replicated log and of the enterprise RPC) has
//! no floats, but a `train` spec, its outcome, a round's model and a Vault's
//! evaluation scores carry `f64`s. Fields marked `#[serde(with = "crate::wire")]`
//! are written, in non-human-readable formats (BCS), as a length-prefixed byte
//! string holding the value's bincode encoding (fixed-width little-endian
//! integers, IEEE-754 bits for floats: exact and deterministic); in human-readable
//! formats (the gateway's JSON) the value is written as itself.

use bincode::Options;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest encoded value accepted (a bound on what a malformed length may allocate).
pub const MAX_WIRE_BYTES: u64 = 64 << 20;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_WIRE_BYTES)
        .reject_trailing_bytes()
}

/// The bincode bytes of `value`.
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    options().serialize(value).map_err(|e| e.to_string())
}

/// Decodes bytes written by [`to_bytes`].
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    options().deserialize(bytes).map_err(|e| e.to_string())
}

/// `serialize_with` for a float-carrying field.
pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        value.serialize(s)
    } else {
        to_bytes(value).map_err(S::Error::custom)?.serialize(s)
    }
}

/// `deserialize_with` for a float-carrying field.
pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    if d.is_human_readable() {
        T::deserialize(d)
    } else {
        let bytes = Vec::<u8>::deserialize(d)?;
        from_bytes(&bytes).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        n: u64,
        #[serde(with = "crate::wire")]
        x: Vec<f64>,
    }

    #[test]
    fn floats_survive_bcs_exactly_and_json_stays_plain() {
        let h = Holder {
            n: 3,
            x: vec![0.1, -0.0, 1e-300, f64::MAX, 0.30000000000000004],
        };
        let b = bcs::to_bytes(&h).unwrap();
        let back: Holder = bcs::from_bytes(&b).unwrap();
        assert_eq!(
            back.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            h.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let j = serde_json::to_value(&h).unwrap();
        assert!(j["x"].is_array(), "{j}");
        // A truncated value is an error, not a panic.
        assert!(bcs::from_bytes::<Holder>(&b[..b.len() - 3]).is_err());
    }
}
