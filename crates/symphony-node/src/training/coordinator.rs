//! The Task Orchestrator of a training run: admission, the round loop with the
//! Composite Iteration Controller, then composite verification, settlement and
//! delivery. See the module docs of [`super`].

use std::collections::BTreeMap;
use std::path::Path;

use symphony_core::budget::Epsilon;
use symphony_core::encoding::Digest;
use symphony_core::ids::*;
use symphony_core::lifecycle::TaskEvent;
use symphony_ledger::EscrowId;
use symphony_master::Command;
use symphony_train::dpsgd::{LogisticRegression, Mlp};

use super::admission::{admit, Admitted, TrainingRequest};
use super::control::{self, Decision, StopReason};
use super::endpoint::TrainingEndpoint;
use super::finish::finish;
use super::model::{train_err, GlobalModel};
use super::outcome::{RoundSummary, TrainObserver, TrainOutcome};
use super::round::run_round;
use super::spec::{ModelType, TrainingSpec};
use super::tap::{NoTap, RoundTap};
use super::vault::RoundAssignment;
use crate::network::{EmbeddedNetwork, MasterServices, PhaseClock};
use crate::verify::SliceEvidence;
use crate::NodeError;

pub(super) fn refused(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

pub(super) fn micro(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        (x * 1e6).round() as u64
    } else {
        0
    }
}

/// Runs the training task of `req` on the network, delivering to `registry_dir`.
pub fn run_training(
    net: &mut EmbeddedNetwork,
    req: &TrainingRequest,
    registry_dir: &Path,
    run_seed: u64,
    obs: &mut dyn TrainObserver,
) -> Result<TrainOutcome, NodeError> {
    run_training_tapped(net, req, registry_dir, run_seed, obs, &mut NoTap)
}

/// [`run_training`] with a [`RoundTap`] observing each round's secure aggregation
/// (audits and tests; the run is the same with or without it).
pub fn run_training_tapped(
    net: &mut EmbeddedNetwork,
    req: &TrainingRequest,
    registry_dir: &Path,
    run_seed: u64,
    obs: &mut dyn TrainObserver,
    tap: &mut dyn RoundTap,
) -> Result<TrainOutcome, NodeError> {
    let EmbeddedNetwork {
        master,
        enterprises,
        down,
        ..
    } = net;
    // Every Vault participates in the envelope; a Vault that is down never answers.
    let participants: Vec<VaultId> = enterprises.iter().map(|e| e.vault_id().clone()).collect();
    let trainers: Vec<&dyn TrainingEndpoint> = enterprises
        .iter()
        .filter(|e| !down.contains(e.vault_id()))
        .map(|e| e as &dyn TrainingEndpoint)
        .collect();
    run_over(
        master,
        &participants,
        &trainers,
        req,
        registry_dir,
        run_seed,
        obs,
        tap,
        None,
    )
}

/// Stages a run's verified model artifacts where every master can serve them,
/// before settlement moves any money (a deployed master replicates them).
pub trait ArtifactStage {
    /// Stages the model file (hashing to the composite result's model hash under
    /// [`super::MODEL_ARTIFACT_TAG`]) and its model card (JSON) for `task`.
    fn stage(
        &mut self,
        task: &TaskId,
        model_hash: &Digest,
        model: &[u8],
        card: &[u8],
    ) -> Result<(), NodeError>;
}

/// Runs the training task of `req` over the Vaults behind `endpoints` (in-process
/// nodes or remote ones), delivering to `registry_dir`; `stage`, when given,
/// receives the verified artifacts before the payout.
#[allow(clippy::too_many_arguments)]
pub fn run_training_with(
    master: &mut MasterServices,
    endpoints: &[&dyn TrainingEndpoint],
    req: &TrainingRequest,
    registry_dir: &Path,
    run_seed: u64,
    obs: &mut dyn TrainObserver,
    tap: &mut dyn RoundTap,
    stage: Option<&mut dyn ArtifactStage>,
) -> Result<TrainOutcome, NodeError> {
    let participants: Vec<VaultId> = endpoints.iter().map(|e| e.vault_id().clone()).collect();
    run_over(
        master,
        &participants,
        endpoints,
        req,
        registry_dir,
        run_seed,
        obs,
        tap,
        stage,
    )
}

#[allow(clippy::too_many_arguments)]
fn run_over(
    master: &mut MasterServices,
    participants: &[VaultId],
    trainers: &[&dyn TrainingEndpoint],
    req: &TrainingRequest,
    registry_dir: &Path,
    run_seed: u64,
    obs: &mut dyn TrainObserver,
    tap: &mut dyn RoundTap,
    stage: Option<&mut dyn ArtifactStage>,
) -> Result<TrainOutcome, NodeError> {
    let mut clock = PhaseClock::start();
    let adm = admit(master, participants, trainers, req, obs)?;
    clock.lap(obs, "admission");
    let result = execute(
        master,
        trainers,
        &adm,
        req,
        registry_dir,
        run_seed,
        obs,
        tap,
        stage,
    );
    // Rounds opened (a round that failed still opened: persons charged in a Vault
    // that never heard of it may have trained in it elsewhere).
    let rounds_run = master
        .masters
        .state()
        .composite(&adm.task_id)
        .map_or(0, |c| c.tree.rounds.len() as u32);
    clock.lap(obs, "rounds_and_finish");
    for t in trainers {
        let _ = t.train_release_unused(&adm.task_id, rounds_run);
    }
    clock.lap(obs, "release_unused");
    result
}

pub(super) fn advance(
    m: &mut MasterServices,
    task: &TaskId,
    event: TaskEvent,
    reason: Option<String>,
    obs: &mut dyn TrainObserver,
) -> Result<(), NodeError> {
    let c = m.masters.submit(Command::Advance {
        task_id: task.clone(),
        event,
        reason,
    })?;
    if let Some(symphony_master::Event::TaskStateChanged { to, .. }) = c.events.first() {
        obs.step(
            to.as_str(),
            &format!(
                "certificate {}/3 signatures at log index {}",
                c.certificate.signatures.len(),
                c.certificate.log_index
            ),
        );
    }
    Ok(())
}

pub(super) fn model_hash(model: &GlobalModel) -> Result<Digest, NodeError> {
    Ok(super::f64_hash(
        "scp/train-model/v1",
        &[&model.parameters()],
    ))
}

pub(super) struct RunState {
    pub(super) model: GlobalModel,
    pub(super) summaries: Vec<RoundSummary>,
    /// Each round's released held-out loss and its noise (the controller's input).
    pub(super) holdout: Vec<control::HeldOut>,
    /// The model before each round's update: `snapshots[r]` is the model after `r`
    /// rounds, whose held-out loss round `r` released.
    pub(super) snapshots: Vec<GlobalModel>,
    pub(super) budgeted_after: Vec<bool>,
    pub(super) evidence: Vec<SliceEvidence>,
    pub(super) vaults_per_round: Vec<u32>,
    pub(super) contributor: BTreeMap<VaultId, u64>,
    pub(super) served: BTreeMap<VaultId, u64>,
    /// Verified slices per Vault (executor work: no reward for a round it dropped).
    pub(super) verified_slices: BTreeMap<VaultId, u64>,
    pub(super) accountant: symphony_train::accountant::RdpAccountant,
    pub(super) stop: StopReason,
}

pub(super) fn assignment(
    adm: &Admitted,
    spec: &TrainingSpec,
    vault: &VaultId,
    round: u32,
    at_ms: u64,
    seed: u64,
) -> RoundAssignment {
    RoundAssignment {
        slice_id: SliceId {
            sub_task: SubTaskId {
                parent: adm.task_id.clone(),
                round,
            },
            vault: vault.clone(),
        },
        envelope: adm.envelope.clone(),
        plan: adm.plan.clone(),
        spec: spec.clone(),
        evaluate_at_ms: at_ms,
        cutoff_ms: at_ms
            .saturating_sub(u64::from(spec.horizon_days) * symphony_semantic::facts::DAY_MS),
        epsilon: adm
            .schedule
            .get(round as usize)
            .copied()
            .unwrap_or(Epsilon::ZERO),
        run_seed: seed,
    }
}

pub(super) fn initial_model(
    spec: &TrainingSpec,
    d: usize,
    seed: u64,
) -> Result<GlobalModel, NodeError> {
    Ok(match spec.model {
        ModelType::LogisticRegression => GlobalModel::Logistic(LogisticRegression::zeros(d)),
        ModelType::Mlp => GlobalModel::Mlp(
            Mlp::new(
                d,
                spec.mlp_hidden,
                super::vault::derive_seed(seed, "mlp-init"),
            )
            .map_err(train_err)?,
        ),
    })
}

pub(super) fn round_budgeted(adm: &Admitted, next: usize) -> bool {
    next < adm.schedule.len()
        && adm.per_round_counts.get(next).copied().unwrap_or(0)
            >= adm.plan.minimum_result_cardinality()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    m: &mut MasterServices,
    trainers: &[&dyn TrainingEndpoint],
    adm: &Admitted,
    req: &TrainingRequest,
    registry_dir: &Path,
    seed: u64,
    obs: &mut dyn TrainObserver,
    tap: &mut dyn RoundTap,
    stage: Option<&mut dyn ArtifactStage>,
) -> Result<TrainOutcome, NodeError> {
    let spec = &req.spec;
    let task = &adm.task_id;
    advance(m, task, TaskEvent::BeginResolution, None, obs)?;
    if !round_budgeted(adm, 0) {
        return reject(m, adm, "too few subjects hold training consent and budget for round 0 (below minimum_result_cardinality)".into(), obs);
    }
    advance(m, task, TaskEvent::Dispatch, None, obs)?;
    let mut st = RunState {
        model: initial_model(spec, adm.plan.dimension(), seed)?,
        summaries: vec![],
        holdout: vec![],
        snapshots: vec![],
        budgeted_after: vec![],
        evidence: vec![],
        vaults_per_round: vec![],
        contributor: BTreeMap::new(),
        served: BTreeMap::new(),
        verified_slices: BTreeMap::new(),
        accountant: symphony_train::accountant::RdpAccountant::new(),
        stop: StopReason::ConvergenceNotReached,
    };
    let rounds_started = std::time::Instant::now();
    let mut round = 0u32;
    loop {
        let at_ms = m.now_ms + u64::from(round) * spec.round_duration_ms;
        // Each round is dispatched (and settles) in the epoch open when it starts:
        // governance may close an epoch while the rounds run.
        let epoch = m.masters.state().current_epoch();
        if let Err(e) = run_round(
            m, trainers, adm, spec, &mut st, round, at_ms, epoch, seed, obs, tap,
        ) {
            return reject(m, adm, format!("round {round} failed: {e}"), obs);
        }
        round += 1;
        let budgeted = round_budgeted(adm, round as usize);
        st.budgeted_after.push(budgeted);
        if let Some(iter) = adm.envelope.body().iteration_policy.as_ref() {
            if let Decision::Stop(r) = control::decide(iter, &st.holdout, budgeted) {
                st.stop = r;
                break;
            }
        } else {
            break;
        }
    }
    obs.step(
        "controller",
        &format!("stopped after {round} rounds: {}", st.stop.as_str()),
    );
    advance(m, task, TaskEvent::ExecutionFinished, None, obs)?;
    obs.phase("rounds", rounds_started.elapsed());
    finish(m, trainers, adm, spec, st, registry_dir, seed, obs, stage)
}

/// Releases the escrow of a run that will not settle: pays what its closed rounds
/// scheduled in their epochs' payout sets, refunds the rest. Returns the refund.
pub(super) fn refund_all(m: &mut MasterServices, adm: &Admitted) -> Result<u64, NodeError> {
    let escrow =
        EscrowId::new(adm.escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))?;
    let epoch = m.masters.state().current_epoch();
    let (_, refunded) = crate::settlement::rewards::release_escrow(
        &mut *m.ledger,
        m.settlements.as_ref(),
        m.masters.state(),
        &escrow,
        &adm.task_id,
        epoch,
    )?;
    Ok(refunded)
}

pub(super) fn reject(
    m: &mut MasterServices,
    adm: &Admitted,
    reason: String,
    obs: &mut dyn TrainObserver,
) -> Result<TrainOutcome, NodeError> {
    obs.step("rejected", &reason);
    match advance(
        m,
        &adm.task_id,
        TaskEvent::Reject,
        Some(reason.clone()),
        obs,
    ) {
        // Once the rejection is committed: the base fee of `train` goes to the
        // treasury, the rest of the escrow back to the model operator (ARCHITECTURE.md
        // "Rejection costs the base fee"; a round below quorum is such a rejection).
        Ok(()) => {
            let escrow = EscrowId::new(adm.escrow_id.clone())
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
            let fee = m.charge_rejected(&adm.task_id, &escrow)?;
            obs.step(
                "rejection_fee",
                &format!(
                    "{} charged (the base fee and the closed rounds' payouts), {} refunded",
                    symphony_economics::format_sym(fee.charged_micro_sym),
                    symphony_economics::format_sym(fee.refund_micro_sym)
                ),
            );
        }
        Err(_) => {
            refund_all(m, adm)?;
        }
    }
    Err(NodeError::Refused(reason))
}
