//! Typed errors of the consensus adapter.

use crate::certificate::CertificateError;
use crate::state_machine::RestoreError;
use crate::types::NodeId;

/// Failure of the durable store (redb file, encoding, snapshot restore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed (open, transaction, table, commit).
    #[error("redb: {0}")]
    Redb(Box<redb::Error>),
    /// A stored record does not decode.
    #[error("corrupt record: {0}")]
    Codec(#[from] bincode::Error),
    /// The persisted snapshot was refused by the state machine.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Filesystem or thread error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Redb(Box::new(e))
    }
}

/// Errors of [`crate::ConsensusNode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// The configuration is inconsistent.
    #[error("invalid consensus configuration: {0}")]
    Config(String),
    /// Local durable storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The RPC listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// openraft reported a fatal or unexpected error.
    #[error("raft: {0}")]
    Raft(String),
    /// `initialize_cluster` on a node that already has a membership.
    #[error("cluster already initialized")]
    AlreadyInitialized,
    /// No leader with a quorum accepted the write before the timeout. The command was
    /// never proposed, or was proposed without being acknowledged; in the second case it
    /// may still commit later (the caller must treat the outcome as unknown and make
    /// commands idempotent or uniquely identified).
    #[error(
        "no quorum: write not final within {timeout_ms} ms (leader: {leader:?}); outcome unknown"
    )]
    Unavailable {
        /// The write timeout.
        timeout_ms: u64,
        /// Leader known when giving up.
        leader: Option<NodeId>,
    },
    /// The write was handed to a leader, but the leader failed before answering;
    /// the command may or may not commit. Not retried, so it is never applied twice.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The leader returned a certificate that does not verify.
    #[error("leader returned an invalid certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The command exceeds `tuning.max_command_bytes`; nothing was proposed.
    #[error("command of {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    CommandTooLarge {
        /// Size of the refused command.
        bytes: usize,
        /// The configured limit.
        max_bytes: usize,
    },
}
