//! `train`: iterative model training across Vaults (seed 003) — a composite task,
//! 1 parent + N rounds (sub-tasks) + N×M slices, run by `crate::training` over the
//! same planes:
//!
//! | plane | what `train` does there |
//! |---|---|
//! | Admission | the shared steps (`planes::admission::authenticate_parts`, `policy_in_force`, `lock_escrow`) plus the class's own: feature resolution, the RDP ε schedule, per-round reservations in each Vault (`training::admission`) |
//! | Execution | per round: `OpenRound`, one slice per Vault through [`TrainingEndpoint`] (features, DP-SGD, masked update inside the Vault's enclave), slices verified and recorded, secure aggregation in the masters' enclave, `CloseRound`, the iteration controller (`training::coordinator`, `round`, `aggregation`, `control`) |
//! | Settlement | composite verification (attestations, Σ ε, replayed convergence, held-out quality, membership-inference advantage), the artifacts staged with the masters, the train formula paid after 2-of-3 finality, each round settled in its dispatch epoch and linked under the parent (`training::finish`, `settle`) |
//!
//! Its slices are stateful across a round's phases (key agreement, Shamir shares,
//! training), so the Vault side is its own endpoint trait rather than
//! `EnterpriseEndpoint::execute_slice`; the embedded network and a deployed master
//! (`RemoteEnterprise` over mutual TLS) both implement it.

pub use crate::training::{
    run_training, run_training_with, TrainOutcome, TrainingEndpoint, TrainingRequest, TrainingSpec,
};
