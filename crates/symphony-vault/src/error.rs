//! Typed errors of the Vault.

use std::path::PathBuf;

use symphony_core::budget::BudgetError;
use symphony_core::consent::{ConsentError, UsageScope};
use symphony_core::envelope::TaskClass;
use symphony_core::ids::IdError;

/// A refused or failed Vault operation. A refused operation changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The storage engine failed.
    #[error("vault storage: {0}")]
    Storage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not 64 hex characters.
    #[error("{path}: not a Vault key file (expected 64 hex characters)")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// A per-subject budget operation named a task whose reservation here is a
    /// bulk reservation ([`crate::Vault::reserve_bulk`]).
    #[error("task {task} holds a bulk reservation for {scope} in this Vault: it finishes with commit_bulk or release_task, not per subject")]
    BulkTask {
        /// The task.
        task: String,
        /// The scope.
        scope: UsageScope,
    },
    /// The Vault key does not open this Vault.
    #[error("the key does not open vault {vault}: wrong Vault key or corrupted key check")]
    WrongKey {
        /// The Vault.
        vault: String,
    },
    /// Creating a Vault over an existing one, or opening something that is not one.
    #[error("{path}: {reason}")]
    NotAVault {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A sealed value failed authentication: wrong key, moved or flipped bytes.
    #[error("block {block} of subject {subject} failed authentication (wrong key, tampered or moved ciphertext)")]
    Tampered {
        /// The subject.
        subject: String,
        /// The block number (`u64::MAX` for the wrapped data key).
        block: u64,
    },
    /// A decrypted block is not a valid record list.
    #[error("block {block} of subject {subject} decrypted but does not decode: {reason}")]
    Corrupt {
        /// The subject.
        subject: String,
        /// The block number.
        block: u64,
        /// The decoder's message.
        reason: String,
    },
    /// The subject's data key was deleted (crypto-shredded).
    #[error("subject {0} was erased; its records can not be decrypted")]
    Erased(String),
    /// A cryptographic primitive failed (never on valid input).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// An encoding step failed.
    #[error("encoding: {0}")]
    Encoding(String),
    /// An identifier failed validation.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The operator has not permitted this actor for this task class.
    #[error("actor {actor} is not authorized for {class} tasks on vault {vault}")]
    NotAuthorized {
        /// The Vault.
        vault: String,
        /// The refused actor.
        actor: String,
        /// The refused class.
        class: TaskClass,
    },
    /// A consent change was refused by the core rules.
    #[error("consent of subject {subject} for {scope}: {source}")]
    Consent {
        /// The subject.
        subject: String,
        /// The scope.
        scope: UsageScope,
        /// The core's reason.
        source: ConsentError,
    },
    /// A reservation for a task this Vault already released (its attempt was aborted
    /// or refused); nothing was reserved.
    #[error("task {0} was released in this Vault (its attempt was aborted or refused); it can not reserve budget again")]
    TaskReleased(String),
    /// A budget operation was refused by the core rules; the whole batch was rolled back.
    #[error("privacy budget of subject {subject} for {scope}: {source}")]
    Budget {
        /// The first subject whose operation was refused.
        subject: String,
        /// The scope.
        scope: UsageScope,
        /// The core's reason.
        source: BudgetError,
    },
}

impl VaultError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        VaultError::Storage(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for VaultError {
            fn from(e: $t) -> Self {
                VaultError::storage(e)
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<bcs::Error> for VaultError {
    fn from(e: bcs::Error) -> Self {
        VaultError::Encoding(e.to_string())
    }
}

/// A failed import. On any error the Vault is exactly as before the import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A malformed row; nothing of the file was written.
    #[error("{file}:{line}: field `{field}`: {reason}")]
    Row {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The offending field (`<row>` if the line is not a JSON object).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Vault refused or failed (nothing of the failing batch was written).
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// A failed generation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// Parameters out of range.
    #[error("bad generate parameters: {0}")]
    Params(String),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
