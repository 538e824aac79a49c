//! # symphony-deploy
//!
//! The deployed network: each node is its own process, and the node code is the same
//! as in the embedded network (`symphony_node::network::MasterServices`,
//! `symphony_node::enterprise::EnterpriseNode`), connected by real consensus and real
//! sockets.
//!
//! - **Master process** ([`master::run`]): a `symphony-consensus` node replicating
//!   [`state::DeployState`] (master state machine + settlement ledger + request queue),
//!   the public API gateway ([`gateway`]), and a worker that runs queued campaigns with
//!   `MasterServices` while this master is the Raft leader.
//! - **Enterprise process** ([`enterprise::run`]): a Vault and its enclave behind the
//!   enterprise RPC ([`rpc`]).
//! - **Mutual TLS** everywhere between nodes ([`tls`]); the gateway is HTTPS with
//!   signed requests ([`auth`]).
//! - [`loopback`]: three masters in one process over loopback mutual TLS (the
//!   embedded demo's consensus and the admission and gateway benchmarks).
//! - [`devnet`]: writes a local network (CA, keys, configs, seeded Vaults).
//! - [`governance`]: the leader's epoch duties (genesis, close by time or
//!   capacity, budgets replenished in every Vault) and the governance routes'
//!   wire types, views and client.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
pub mod bench;
pub mod client;
pub mod config;
pub mod devnet;
pub mod enterprise;
pub mod gateway;
pub mod governance;
pub mod ledger_export;
pub mod loopback;
pub mod master;
pub mod replicator;
pub mod rpc;
pub mod state;
pub mod tls;
pub mod wire;

/// A failure of a deployed node or of the tools around it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// A configuration value is invalid (the message names the key).
    #[error("config: {0}")]
    Config(String),
    /// TLS material could not be built or loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// Consensus failed.
    #[error("consensus: {0}")]
    Consensus(#[from] symphony_consensus::ConsensusError),
    /// Node services failed.
    #[error("node: {0}")]
    Node(#[from] symphony_node::NodeError),
    /// Encoding failed.
    #[error("encoding: {0}")]
    Encoding(String),
    /// Filesystem or socket failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// The settlement ledger failed.
    #[error("ledger: {0}")]
    Ledger(String),
}
