//! What a run reports: per-round progress, the observer, the outcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::ids::*;

use crate::network::{MasterServices, Observer};

/// Progress of a run, per round (the CLI draws it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundSummary {
    /// Round number (0-based).
    pub round: u32,
    /// Epoch the round was dispatched (and settles) in.
    pub epoch_id: u64,
    /// Vaults whose slice verified.
    pub vaults: u32,
    /// Training examples across Vaults.
    pub examples: u64,
    /// Example-weighted mean training loss before the round's update.
    pub train_loss: f64,
    /// Example-weighted mean held-out loss before the update.
    pub holdout_loss: f64,
    /// Example-weighted mean per-Vault held-out AUC before the update.
    pub holdout_auc: f64,
    /// ε of this round (micro).
    pub epsilon_round_micro: u64,
    /// Cumulative ε after the round.
    pub epsilon_cumulative: f64,
}

/// A training observer: protocol steps plus one call per finished round.
pub trait TrainObserver: Observer {
    /// A round finished.
    fn round(&mut self, summary: &RoundSummary, max_rounds: u32);
}

impl TrainObserver for crate::network::Quiet {
    fn round(&mut self, _: &RoundSummary, _: u32) {}
}

/// What a run produced (the `--json` of `symphony demo train`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Parent task id.
    pub task_id: String,
    /// Envelope hash.
    pub envelope_hash: String,
    /// Parent lifecycle states in order.
    pub states: Vec<String>,
    /// Why rejected, if rejected.
    pub reason: Option<String>,
    /// Rounds run.
    pub rounds_run: u32,
    /// `iteration_policy.max_rounds`.
    pub max_rounds: u32,
    /// Rounds the ε schedule allowed.
    pub rounds_budgeted: u32,
    /// Converged.
    pub converged: bool,
    /// Max rounds ended the run without convergence.
    pub convergence_not_reached: bool,
    /// Why the run stopped.
    pub stop_reason: String,
    /// ε spent (cumulative RDP → (ε, δ), rounded up to micro-ε).
    pub epsilon_spent: f64,
    /// ε spent, micro (Σ per-round records).
    pub epsilon_spent_micro: u64,
    /// The run's allocation.
    pub epsilon_allocation: f64,
    /// δ.
    pub delta: f64,
    /// Held-out AUC of the final model.
    pub auc_holdout: f64,
    /// Held-out accuracy at 0.5.
    pub accuracy_holdout: f64,
    /// Loss-threshold MIA advantage (members vs held-out).
    pub mia_advantage: f64,
    /// Composite verification verdict.
    pub accepted: bool,
    /// Execution slices (N×M).
    pub n_slices: usize,
    /// Protocol objects 1 + N + N×M.
    pub n_objects: usize,
    /// Rounds' final states.
    pub round_states: Vec<String>,
    /// Attestation reports verified (slices, aggregations, evaluations).
    pub attestations_verified: u32,
    /// Escrow locked.
    pub fee_locked: u64,
    /// Fee charged.
    pub fee_total: u64,
    /// Refund.
    pub refund: u64,
    /// Recipient → amount.
    pub fee_shares: BTreeMap<String, u64>,
    /// Round → (epoch, fee).
    pub round_settlements: BTreeMap<u32, (u64, u64)>,
    /// Settlement state.
    pub settlement_state: Option<String>,
    /// Link of the composite settlement over every round's settlement (hex).
    #[serde(default)]
    pub composite_link: Option<String>,
    /// Per-round progress.
    pub rounds: Vec<RoundSummary>,
    /// The delivered model file.
    pub model_path: Option<String>,
    /// The model card.
    pub model_card_path: Option<String>,
    /// The training curve.
    pub curve_path: Option<String>,
    /// SHA-256 of the model file.
    pub model_sha256: Option<String>,
}

pub(super) fn fill(m: &MasterServices, task: &TaskId, out: &mut TrainOutcome) {
    let state = m.masters.state();
    if let Some(rec) = state.task(task) {
        out.states = rec.history.iter().map(|s| s.to_string()).collect();
        if out.reason.is_none() {
            out.reason.clone_from(&rec.reason);
        }
    }
    if let Some(c) = state.composite(task) {
        out.n_objects = c.tree.object_count();
        out.n_slices = c.tree.rounds.iter().map(|r| r.slices.len()).sum();
        out.round_states = c.tree.rounds.iter().map(|r| r.state.to_string()).collect();
        out.round_settlements = c
            .round_settlements
            .iter()
            .map(|(r, (e, f))| (*r, (e.0, *f)))
            .collect();
    }
}

/// The outcome of a completed training task, rebuilt from the replicated master
/// state and the staged model card: what a master that takes over after the leader
/// crashed between payout and delivery reports. `None` unless the task completed
/// with a finalized settlement and an accepted composite result.
pub fn recovered_train_outcome(
    state: &symphony_master::MasterState,
    task: &TaskId,
    card: &serde_json::Value,
) -> Option<TrainOutcome> {
    use symphony_core::lifecycle::{SettlementState, TaskState};
    let rec = state.task(task)?;
    let settlement = rec.settlement.as_ref()?;
    let c = state.composite(task)?;
    let result = c.result.as_ref()?;
    if rec.state != TaskState::Completed
        || settlement.state != SettlementState::Finalized
        || !result.accepted
    {
        return None;
    }
    let body = rec.envelope.body();
    let f = |path: &[&str]| {
        path.iter()
            .try_fold(card, |v, k| v.get(*k))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let rounds: Vec<RoundSummary> = card
        .get("rounds")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    Some(TrainOutcome {
        task_id: task.to_string(),
        envelope_hash: rec.envelope.hash().to_hex(),
        states: rec.history.iter().map(|s| s.to_string()).collect(),
        reason: rec.reason.clone(),
        rounds_run: result.rounds_run,
        max_rounds: body.iteration_policy.as_ref().map_or(0, |p| p.max_rounds),
        rounds_budgeted: body.constraints.get("schedule_micro").map_or(0, |s| {
            s.trim_matches(['[', ']'])
                .split(',')
                .filter(|x| !x.trim().is_empty())
                .count() as u32
        }),
        converged: result.stop_reason == "converged",
        convergence_not_reached: result.stop_reason == "convergence_not_reached",
        stop_reason: result.stop_reason.clone(),
        epsilon_spent: result.epsilon_spent_micro as f64 / 1e6,
        epsilon_spent_micro: result.epsilon_spent_micro,
        epsilon_allocation: f(&["privacy", "epsilon_allocation"]),
        delta: f(&["privacy", "delta"]),
        auc_holdout: f(&["metrics", "auc_holdout"]),
        accuracy_holdout: f(&["metrics", "accuracy_holdout"]),
        mia_advantage: f(&["metrics", "mia_advantage"]),
        accepted: result.accepted,
        n_slices: c.tree.rounds.iter().map(|r| r.slices.len()).sum(),
        n_objects: c.tree.object_count(),
        round_states: c.tree.rounds.iter().map(|r| r.state.to_string()).collect(),
        attestations_verified: 0,
        fee_locked: body
            .budget_lock_ref
            .as_ref()
            .map_or(0, |b| b.amount_base_units),
        fee_total: settlement.fee_total,
        refund: settlement.refund,
        fee_shares: settlement.fee_shares.clone(),
        round_settlements: c
            .round_settlements
            .iter()
            .map(|(r, (e, f))| (*r, (e.0, *f)))
            .collect(),
        settlement_state: Some(settlement.state.to_string()),
        composite_link: super::composite_settlement(state, task)
            .ok()
            .map(|l| l.link.to_hex()),
        rounds,
        model_path: None,
        model_card_path: None,
        curve_path: None,
        model_sha256: None,
    })
}
