//! Identifiers of the protocol objects.
//!
//! String identifiers are validated once at construction (non-empty, at most
//! [`MAX_ID_LEN`] bytes, characters from `[A-Za-z0-9._:/-]`) so that every id that
//! exists is printable, canonical and safe to embed in keys and file names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The identifier was empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The identifier was longer than [`MAX_ID_LEN`].
    #[error("{kind} id is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The identifier had a character outside `[A-Za-z0-9._:/-]`.
    #[error("{kind} id {value:?} has the character {ch:?} at byte {at}; allowed are A-Z a-z 0-9 . _ : / -")]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

/// The bytes an id may hold: ASCII letters, digits and `.`, `_`, `:`, `/`, `-`.
const ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'/' | b'-');
        b += 1;
    }
    table
};

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    // The common case, every id read back from a store: one table look-up per byte.
    if value.bytes().all(|b| ID_BYTE[usize::from(b)]) {
        return Ok(());
    }
    for (at, ch) in value.char_indices() {
        if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | ':' | '/' | '-')) {
            return Err(IdError::BadChar {
                kind,
                value: value.to_owned(),
                ch,
                at,
            });
        }
    }
    Ok(())
}

/// Declares a validated string newtype `$name`: `new` runs `$validate($kind, &value)`
/// (a `fn(&'static str, &str) -> Result<(), $err>`), and the type has `as_str`,
/// `Display`, `FromStr`, `TryFrom<String>`, `Into<String>` and serde as a plain string
/// that is validated again on deserialization. The invoking crate must depend on
/// `serde`. Used for the protocol ids here and for the semantic model's names.
#[macro_export]
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $err:ty, $validate:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(::std::string::String);

        impl $name {
            /// Validates and wraps the text; the error says which rule it breaks.
            pub fn new(
                value: impl ::std::convert::Into<::std::string::String>,
            ) -> ::std::result::Result<Self, $err> {
                let value = value.into();
                $validate($kind, &value)?;
                ::std::result::Result::Ok(Self(value))
            }
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::convert::TryFrom<::std::string::String> for $name {
            type Error = $err;
            fn try_from(value: ::std::string::String) -> ::std::result::Result<Self, $err> {
                Self::new(value)
            }
        }

        impl ::std::convert::From<$name> for ::std::string::String {
            fn from(value: $name) -> ::std::string::String {
                value.0
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $err;
            fn from_str(s: &str) -> ::std::result::Result<Self, $err> {
                Self::new(s)
            }
        }
    };
}

string_newtype!(
    /// A task admitted by the Admission Plane (a parent task for `train`).
    TaskId,
    "task",
    IdError,
    validate
);
string_newtype!(
    /// A Vault hosted by an enterprise node.
    VaultId,
    "vault",
    IdError,
    validate
);
string_newtype!(
    /// A protocol actor: task submitter, master, enterprise node, data producer, verifier.
    ActorId,
    "actor",
    IdError,
    validate
);
string_newtype!(
    /// A pseudonymous data subject whose records live in a Vault.
    SubjectId,
    "subject",
    IdError,
    validate
);
string_newtype!(
    /// A challenge filed against a verified result.
    ChallengeId,
    "challenge",
    IdError,
    validate
);

/// A sub-task of a composite task: one round of the parent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubTaskId {
    /// The parent task.
    pub parent: TaskId,
    /// The round, starting at 0.
    pub round: u32,
}

impl fmt::Display for SubTaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/r{}", self.parent, self.round)
    }
}

/// An execution slice: one Vault's part of one sub-task (or of a single-round task).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SliceId {
    /// The sub-task the slice belongs to.
    pub sub_task: SubTaskId,
    /// The Vault that executes it.
    pub vault: VaultId,
}

impl fmt::Display for SliceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sub_task, self.vault)
    }
}

/// A settlement epoch: a stable window for settlement, reward and replay grouping.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct EpochId(pub u64);

impl EpochId {
    /// The first epoch of a network (genesis).
    pub const GENESIS: EpochId = EpochId(0);
}

impl fmt::Display for EpochId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch-{}", self.0)
    }
}

/// The version of the semantic registry a task is resolved under.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct SemanticVersion(pub u32);

impl fmt::Display for SemanticVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sem-v{}", self.0)
    }
}

/// The version of the protocol parameters a task is evaluated under.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct PolicyVersion(pub u32);

impl PolicyVersion {
    /// The policy version active at genesis.
    pub const GENESIS: PolicyVersion = PolicyVersion(1);
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy-v{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate() {
        assert!(TaskId::new("task-01").is_ok());
        assert_eq!(TaskId::new(""), Err(IdError::Empty { kind: "task" }));
        assert!(matches!(
            VaultId::new("vault 1"),
            Err(IdError::BadChar { ch: ' ', at: 5, .. })
        ));
        assert!(matches!(
            ActorId::new("a".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn ids_refuse_bad_json() {
        let bad: Result<TaskId, _> = serde_json::from_str("\"no spaces\"");
        assert!(bad.is_err());
        let good: TaskId = serde_json::from_str("\"t-1\"").unwrap();
        assert_eq!(good.as_str(), "t-1");
    }

    #[test]
    fn hierarchy_ids_display() {
        let parent = TaskId::new("t1").unwrap();
        let sub = SubTaskId { parent, round: 3 };
        let slice = SliceId {
            sub_task: sub.clone(),
            vault: VaultId::new("v2").unwrap(),
        };
        assert_eq!(sub.to_string(), "t1/r3");
        assert_eq!(slice.to_string(), "t1/r3/v2");
    }
}
