//! # symphony-node
//!
//! The node services of SCS: the master side (admission, task orchestration,
//! multi-Vault coordination, the aggregation runtime, verification, settlement,
//! delivery) and the enterprise side (Vault services and the computation runtime),
//! plus the embedded network that runs them together in one process.
//!
//! Protocol rules live in the pure crates (`symphony-core`, `symphony-master`,
//! `symphony-economics`, `symphony-semantic`); this crate calls them and does the IO.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod adjudication;
pub mod aggregation;
pub mod bundle;
pub mod challenge;
pub mod classes;
pub mod enterprise;
pub mod governance;
pub mod network;
pub mod planes;
pub mod producer;
pub mod replication;
pub mod settlement;
pub mod task;
pub mod training;
pub mod verify;

/// A node-level failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Refused (bad input, failed check).
    #[error("{0}")]
    Refused(String),
    /// The Vault failed or refused.
    #[error("vault: {0}")]
    Vault(#[from] symphony_vault::VaultError),
    /// Import failed.
    #[error("import: {0}")]
    Import(#[from] symphony_vault::ImportError),
    /// Data generation failed.
    #[error("generate: {0}")]
    Generate(#[from] symphony_vault::GenerateError),
    /// Replication refused or failed.
    #[error("masters: {0}")]
    Replication(#[from] replication::ReplicationError),
    /// The envelope was refused.
    #[error("envelope: {0}")]
    Envelope(#[from] symphony_core::envelope::EnvelopeError),
    /// Aggregation failed.
    #[error("aggregation: {0}")]
    Aggregation(#[from] aggregation::AggregationError),
    /// The enclave failed.
    #[error("enclave: {0}")]
    Enclave(String),
    /// The settlement ledger refused.
    #[error("ledger: {0}")]
    Ledger(String),
    /// Encoding failure.
    #[error("encoding: {0}")]
    Encoding(String),
    /// The node did not answer (down, partitioned, timed out).
    #[error("enterprise node {0} is unreachable")]
    Unavailable(String),
    /// IO failure.
    #[error("io: {0}")]
    Io(String),
}
