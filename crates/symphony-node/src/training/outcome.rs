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
    /// Training examples across Vaults (noisy release of the aggregation enclave).
    pub examples: u64,
    /// Mean per-example training loss (clipped) before the round's update (noisy).
    pub train_loss: f64,
    /// Mean per-example held-out loss (clipped) before the update (noisy).
    pub holdout_loss: f64,
    /// Held-out examples across Vaults (noisy; sets the noise of `holdout_loss`).
    #[serde(default)]
    pub holdout_examples: u64,
    /// ε of this round (micro).
    pub epsilon_round_micro: u64,
    /// Cumulative ε after the round.
    pub epsilon_cumulative: f64,
}

/// One kind of number a training run releases, and what protects it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleasedMetric {
    /// What is released.
    pub name: String,
    /// To whom and how often.
    pub released: String,
    /// How it is protected.
    pub mechanism: String,
    /// ε charged for it over the run (composed with everything else in the run's
    /// per-person ε); `None` when not charged (see `mechanism`).
    pub epsilon: Option<f64>,
}

/// The releases of a run of `rounds` rounds: the composed ε of the whole run is
/// `epsilon_spent`; the per-release figures are each release alone (RDP composes,
/// so they do not add up to the total).
pub(super) fn released_metrics(
    spec: &super::spec::TrainingSpec,
    rounds: u32,
) -> Result<Vec<ReleasedMetric>, crate::NodeError> {
    use super::control::{LOSS_CLIP, METRICS_NOISE_MULTIPLIER};
    use symphony_train::accountant::RdpAccountant;
    let d = &spec.dp_sgd;
    let delta = spec.privacy.delta;
    let acc = |e| crate::NodeError::Refused(format!("accountant: {e}"));
    let alone = |q: f64, sigma: f64, steps: u64| -> Result<f64, crate::NodeError> {
        let mut a = RdpAccountant::new();
        a.compose_poisson_gaussian(q, sigma, steps).map_err(acc)?;
        a.epsilon(delta).map_err(acc)
    };
    let rounds64 = u64::from(rounds);
    Ok(vec![
        ReleasedMetric {
            name: "model".into(),
            released: format!("to the model operator, updated in each of {rounds} rounds"),
            mechanism: format!(
                "DP-SGD: {} steps per round, Poisson rate {}, clip {}, noise multiplier {}",
                d.local_steps, d.sampling_rate, d.clip_norm, d.noise_multiplier
            ),
            epsilon: Some(alone(d.sampling_rate, d.noise_multiplier, d.local_steps * rounds64)?),
        },
        ReleasedMetric {
            name: "round metrics: training examples, training loss, held-out loss".into(),
            released: "to the masters and the model operator, once per round".into(),
            mechanism: format!(
                "per-Vault counts and loss sums (loss clipped at {LOSS_CLIP}) travel only inside the masked update; the aggregation enclave adds Gaussian noise, multiplier {METRICS_NOISE_MULTIPLIER} on sensitivity √2"
            ),
            epsilon: Some(alone(1.0, METRICS_NOISE_MULTIPLIER, rounds64)?),
        },
        ReleasedMetric {
            name: "stop decision (rounds run, stop reason)".into(),
            released: "to the masters and the model operator".into(),
            mechanism: "decided on the noisy training loss: post-processing, free".into(),
            epsilon: Some(0.0),
        },
        ReleasedMetric {
            name: "acceptance report: final held-out AUC, accuracy, MIA advantage, held-out size and class balance".into(),
            released: "to the model operator, once".into(),
            mechanism: "computed in the aggregation enclave over every Vault's held-out subjects; released exact, not ε-charged (a known gap: one release of five aggregate statistics)".into(),
            epsilon: None,
        },
        ReleasedMetric {
            name: "subjects used per Vault".into(),
            released: "to the settlement ledger, per round".into(),
            mechanism: "needed to pay each Vault's contributors (the train formula); not in the model card's rounds".into(),
            epsilon: None,
        },
    ])
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
    /// The delivered model is the one after this many rounds: `rounds_run`, or the
    /// round with the lowest released held-out loss when the run stopped for lack
    /// of improvement.
    #[serde(default)]
    pub delivered_round: u32,
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
    /// The largest ε any one person lost in this run: the composition of the rounds
    /// it took part in (participation is a prefix of the run, so at most every round
    /// run); ≤ the spec's ε. The unit of privacy is a person, across Vaults.
    #[serde(default)]
    pub per_person_epsilon_max: f64,
    /// Everything the run released about the data, and at what ε.
    #[serde(default)]
    pub released_metrics: Vec<ReleasedMetric>,
    /// Held-out AUC of the final model.
    pub auc_holdout: f64,
    /// Held-out accuracy at 0.5.
    pub accuracy_holdout: f64,
    /// Loss-threshold MIA advantage (members vs held-out).
    pub mia_advantage: f64,
    /// Held-out examples the final metrics were computed on (all Vaults).
    #[serde(default)]
    pub holdout_size: u64,
    /// Share of positive labels among them.
    #[serde(default)]
    pub holdout_positive_rate: f64,
    /// Accuracy of always predicting the majority class on the held-out split: what
    /// `accuracy_holdout` has to beat.
    #[serde(default)]
    pub baseline_accuracy: f64,
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
        delivered_round: card
            .get("delivered_round")
            .and_then(serde_json::Value::as_u64)
            .map_or(result.rounds_run, |r| r as u32),
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
        per_person_epsilon_max: f(&["privacy", "per_person_epsilon_max"]),
        released_metrics: card
            .get("privacy")
            .and_then(|p| p.get("released"))
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default(),
        auc_holdout: f(&["metrics", "auc_holdout"]),
        accuracy_holdout: f(&["metrics", "accuracy_holdout"]),
        mia_advantage: f(&["metrics", "mia_advantage"]),
        holdout_size: f(&["holdout_size"]) as u64,
        holdout_positive_rate: f(&["class_balance", "positive_rate"]),
        baseline_accuracy: f(&["baseline_accuracy"]),
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
