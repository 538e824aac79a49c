//! Federated training end to end (seed 003): a `task_class: train` composite task.
//!
//! Flow ([`run_training`]):
//! 1. **Admission**: the model operator's signed [`TrainingSpec`] is authenticated,
//!    its features resolved into a [`FeaturePlan`], the ε schedule of the run computed
//!    by the RDP accountant ([`control::epsilon_schedule`]: DP-SGD steps plus each
//!    round's noisy metrics release), each Vault authorizes the operator for `train`
//!    and reports its persons (task-scoped tokens, eligibility, affordability of the
//!    whole run); [`persons::assign_persons`] gives each person one Vault to train
//!    through and charges it in every Vault that holds it; each Vault reserves every
//!    round for its assigned persons, all rounds or none (participation is then a
//!    prefix of the run: [`persons::Participation`]), the train fee estimate is locked
//!    in escrow, and the immutable
//!    `TaskEnvelope` (with `iteration_policy`, `coordination_envelope`
//!    (`federated_average`), `budget_lock_ref`) is committed by the masters.
//! 2. **Rounds**: for each round the masters open a sub-task (`OpenRound`, in its
//!    dispatch epoch) with one slice per Vault; every Vault builds its features in its
//!    enclave, trains locally with DP-SGD and returns a masked update
//!    ([`vault::VaultTrainer`]); slices are verified (commitment + attestation) and
//!    recorded; the aggregation enclave unmasks only the sum ([`aggregate`]), adds
//!    Gaussian noise to the round's example counts and loss sums (the per-Vault figures
//!    never leave the masked update), the global model moves by the example-weighted
//!    FedAvg update, and the round closes (`CloseRound`) with its ε and its payout
//!    (its fee split by the fee shares), which joins its dispatch epoch's payout
//!    set. The controller
//!    ([`control::decide`], on the noisy loss) continues or stops.
//! 3. **Composite verification**: every round's attestations, Σ per-round ε = total,
//!    convergence replayed against the policy, held-out AUC/accuracy and the
//!    loss-threshold membership-inference advantage against the acceptance criteria.
//! 4. **Settlement** by the train formula, split exactly, paid after 2-of-3 finality
//!    (the parent's payout is the charge minus the rounds' payouts; the escrow pays
//!    both at once); each round then settles in its dispatch epoch (`SettleRound`,
//!    for the fee its close scheduled) and the composite
//!    settlement links every round's settlement under the parent
//!    ([`crate::settlement::link_composite`] over [`round_settlement_refs`], stored
//!    with `SettlementStore::put_composite`).
//! 5. **Delivery** to the model registry: safetensors + model card + training curve,
//!    recorded as an audit event.
//!
//! Master side, by step: `admission` (request, schedule, reservations, escrow,
//! envelope), `coordinator` (the orchestrator loop and the controller), `round` (one
//! sub-task across the Vaults), `aggregation` (the secure sum in the aggregation
//! enclave), `evaluation` (final held-out quality and MIA in the enclave), `finish`
//! (composite verification and delivery), `settle` (the train formula and per-round
//! settlement); `outcome` holds the reported types. Vault side: [`vault`].

pub mod control;
pub mod endpoint;
pub mod model;
pub mod registry;
pub mod spec;
pub mod vault;

mod admission;
mod aggregation;
mod coordinator;
mod evaluation;
mod finish;
mod outcome;
pub mod persons;
mod round;
mod settle;
pub mod tap;

pub use admission::{permit_training, request_message, train_task_id, TrainingRequest};
pub use coordinator::{run_training, run_training_tapped, run_training_with, ArtifactStage};
pub use endpoint::{
    AssignmentWire, ModelWire, RosterKeys, ShareWire, TrainerSessions, TrainingEndpoint,
};
pub use model::GlobalModel;
pub use outcome::{recovered_train_outcome, RoundSummary, TrainObserver, TrainOutcome};
pub use registry::MODEL_ARTIFACT_TAG;
pub use settle::{composite_settlement, round_settlement_refs, ROUND_SETTLEMENT_TAG};
pub use spec::TrainingSpec;
pub use tap::{NoTap, RoundTap};

use symphony_core::encoding::{content_hash, Digest};

use crate::NodeError;

/// Tagged SHA-256 over little-endian `f64` values (BCS has no floats).
pub fn f64_hash(tag: &str, parts: &[&[f64]]) -> Digest {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        for v in *part {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    symphony_core::encoding::tagged_hash(tag, &bytes)
}

/// Hash of a spec (bound into the envelope's `spec_hash` constraint).
pub fn spec_hash(spec: &TrainingSpec) -> Result<Digest, NodeError> {
    let json = serde_json::to_string(spec).map_err(|e| NodeError::Encoding(e.to_string()))?;
    content_hash("scp/train-spec/v1", &json).map_err(|e| NodeError::Encoding(e.to_string()))
}
