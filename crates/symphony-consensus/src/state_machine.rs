//! The narrow boundary between replication and the master state machine.

/// SHA-256-sized digest of a whole state machine state.
pub type StateRoot = [u8; 32];

/// A deterministic state machine replicated by the masters.
///
/// Commands and responses are opaque bytes to this crate. The contract that makes
/// replication and commit certificates meaningful:
///
/// - `apply` is a pure function of (current state, command): no clock, no OS randomness,
///   no IO. Every master applies the same committed commands in the same order and must
///   reach the same [`state_root`](Self::state_root); a divergence shows up as two
///   different roots for one log index and no certificate ever becomes final.
/// - `apply` never fails: a command that the protocol rejects is applied as a no-op and
///   the rejection is encoded in the returned bytes.
/// - `restore(snapshot())` yields a state with the same `state_root`.
pub trait ReplicatedStateMachine: Send + Sync + 'static {
    /// Applies one committed command; returns the encoded events/response for the caller.
    fn apply(&mut self, command: &[u8]) -> Vec<u8>;

    /// Hash of the whole state (implementations usually keep it incrementally).
    fn state_root(&self) -> StateRoot;

    /// Encodes the whole state; used for Raft snapshots (log compaction, catch-up).
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a decoded snapshot. On error the state is unchanged.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
}

/// A snapshot the state machine cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot restore state machine snapshot: {reason}")]
pub struct RestoreError {
    /// Why the snapshot was refused.
    pub reason: String,
}

impl RestoreError {
    /// Builds an error from any displayable reason.
    pub fn new(reason: impl std::fmt::Display) -> Self {
        Self {
            reason: reason.to_string(),
        }
    }
}
