//! The openraft type configuration and the replicated log payload.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state_machine::StateRoot;

/// Master node identifier (also the key of its signature in a certificate).
pub type NodeId = u64;

/// One log entry's payload: a batch of opaque client commands, applied in order.
///
/// Batching happens at the leader: concurrent `client_write` calls are grouped into one
/// entry, so one fsync, one replication round and one certificate cover many commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch {
    /// Commands in apply order.
    pub commands: Vec<Vec<u8>>,
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// One response per command of the batch, same order.
    pub responses: Vec<Vec<u8>>,
    /// State root after applying the entry.
    pub state_root: StateRoot,
}

openraft::declare_raft_types!(
    /// openraft types of the Symphony master cluster.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft log entry of this cluster.
pub type LogEntry = openraft::Entry<TypeConfig>;
/// A Raft log id of this cluster.
pub type RaftLogId = openraft::LogId<NodeId>;
/// openraft storage error of this cluster.
pub type RaftStorageError = openraft::StorageError<NodeId>;
