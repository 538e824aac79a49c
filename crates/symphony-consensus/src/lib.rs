//! Consensus adapter of the Symphony master cluster.
//!
//! The three masters replicate one deterministic [`ReplicatedStateMachine`] (the master
//! state machine; commands and responses are opaque bytes here) with **openraft** 0.9.
//! On top of Raft's majority commit, every applied log entry gets a
//! [`CommitCertificate`]: each master signs `(cluster_id, log_index, state_root)` with
//! ed25519, and an index is *final* with 2 of 3 valid signatures. Only final state is
//! delivered: [`ConsensusNode::client_write`] returns after finality, and
//! [`ConsensusNode::final_index`] is the delivery frontier.
//!
//! # What 2-of-3 tolerates, and what it does not
//!
//! - **Tolerated:** one crashed, stopped or partitioned master. The other two still form
//!   a Raft majority and a signature quorum, so writes commit and become final. With two
//!   masters down, writes stop with [`ConsensusError::Unavailable`] after the write
//!   timeout; nothing acknowledged is lost, and writing resumes once a second master is
//!   back.
//! - **Detected, not prevented:** a master that signs two different roots for one index
//!   leaves [`EquivocationEvidence`] (both signed statements), which is slashable.
//! - **Not tolerated:** a Byzantine master. Raft trusts its peers, and with n = 3 a
//!   lying master plus one honest master form a quorum. Byzantine fault tolerance needs
//!   n = 4 masters with 3-of-4 certificates (n >= 3f + 1). This crate does not provide it.
//!
//! # Durability contract
//!
//! Each node keeps one redb file (`<data_dir>/raft.redb`). Log appends, truncations,
//! purges, votes and snapshots are committed with `Durability::Immediate` (fsync) before
//! openraft is told they are done (module `store`). The committed index is written without
//! waiting, since openraft re-learns it from the leader. A restarted
//! node restores its vote, log and last snapshot, re-applies the committed log on top of
//! the snapshot, and catches up from the leader (by log or by snapshot).
//!
//! # Layout
//!
//! - [`state_machine`]: the trait the master state machine implements.
//! - [`certificate`]: signed statements, certificates, the collector, equivocation.
//! - [`transport`]: TCP framing; the one place where TLS will plug in.
//! - `network`: Raft RPC, write forwarding and signature exchange over the transport.
//! - `store`, `sm_store`: openraft storage on redb.
//! - `config`: [`ConsensusConfig`], [`MemberConfig`], [`Tuning`].
//! - `tasks`: signing applied roots, pushing signatures, batching client commands.
//! - [`ConsensusNode`]: start, initialize, write, metrics, shutdown.
//!
//! # Writes
//!
//! Any node accepts [`ConsensusNode::client_write`]; a follower forwards the command to
//! the leader over the same RPC layer. The leader groups queued commands into one log
//! entry ([`CommandBatch`]). A write is retried internally only while it was certainly
//! not proposed (no leader, leader moved before proposing); once proposed and unanswered
//! the caller gets [`ConsensusError::OutcomeUnknown`] or [`ConsensusError::Unavailable`],
//! so a command is never applied twice by this crate. Commands should still carry a
//! unique id so that a caller retrying after an unknown outcome is deduplicated by the
//! state machine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certificate;
mod config;
mod error;
pub mod latency;
mod network;
mod node;
mod sm_store;
pub mod state_machine;
mod store;
mod tasks;
pub mod transport;
mod types;

pub use certificate::{
    AddOutcome, AwaitFinalError, CertificateCollector, CertificateError, CommitCertificate,
    EquivocationEvidence, MasterKeys, SignedStatement,
};
pub use config::{ConsensusConfig, MemberConfig, Tuning};
pub use error::{ConsensusError, StoreError};
pub use latency::WriteLatency;
pub use node::{bind_retrying, ConsensusNode, NodeMetrics};
pub use state_machine::{ReplicatedStateMachine, RestoreError, StateRoot};
pub use types::{BatchOutcome, CommandBatch, NodeId, TypeConfig};
