//! # symphony-core
//!
//! The pure protocol core of SCP (Symphony Core Protocol): identifiers, canonical
//! encoding, the task/slice/challenge/settlement lifecycles, the immutable
//! `TaskEnvelope`, the composite hierarchy, consent and privacy-budget rules.
//!
//! Architecture Invariant: this crate does no IO — no filesystem, network, clock or
//! OS randomness. Time and seeds are inputs; the same inputs give the same bytes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod budget;
pub mod composite;
pub mod consent;
pub mod dp;
pub mod enclave;
pub mod encoding;
pub mod envelope;
pub mod ids;
pub mod lifecycle;
pub mod time;

pub use budget::{BudgetAccount, BudgetError, BudgetOp, BudgetOutcome, Epsilon};
pub use consent::{ConsentHistory, UsageScope};
pub use enclave::EnclaveKind;
pub use encoding::{canonical_bytes, content_hash, tagged_hash, Digest};
pub use envelope::{TaskClass, TaskEnvelope};
pub use ids::{
    ActorId, ChallengeId, EpochId, PolicyVersion, SemanticVersion, SliceId, SubTaskId, SubjectId,
    TaskId, VaultId,
};
pub use lifecycle::{ChallengeState, SettlementState, SliceState, TaskEvent, TaskState};
