//! The master side of a training run: admission, the Task Orchestrator and
//! Multi-Vault Coordinator loop, the aggregation runtime's secure sum, composite
//! verification, settlement and delivery. See the module docs of [`super`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{content_hash, tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent};
use symphony_economics::pricing::TrainUsage;
use symphony_economics::{
    distribute_fee, estimate_fee, settle_fee, ContributionReport, Recipient, TaskUsage,
};
use symphony_enclave::{SoftwareEnclave, Tee};
use symphony_ledger::{EscrowId, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind};
use symphony_master::{
    link_commitment, Command, CompositeResultRecord, RoundRecord, RoundSliceRecord,
    SettlementRecord,
};
use symphony_semantic::{FeatureIntent, FeaturePlan};
use symphony_train::dpsgd::{LogisticRegression, Mlp};
use symphony_train::metrics;
use symphony_train::secagg::{Aggregator, ParticipantId, Roster};

use super::control::{self, Decision, StopReason};
use super::model::{train_err, GlobalModel};
use super::registry;
use super::spec::{ModelType, TrainingSpec};
use super::vault::{RoundAssignment, TrainSliceBundle, VaultTrainer, METRIC_SLOTS};
use crate::enterprise::EnterpriseNode;
use crate::network::{EmbeddedNetwork, MasterServices, Observer};
use crate::verify::{verify_evidence, SliceEvidence};
use crate::NodeError;

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

/// A model operator's signed submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingRequest {
    /// The spec.
    pub spec: TrainingSpec,
    /// Replay protection.
    pub nonce: u64,
    /// Submitter's public key.
    pub public_key: [u8; 32],
    /// Signature over `spec_hash ‖ nonce`.
    pub signature: Vec<u8>,
}

fn request_message(spec: &TrainingSpec, nonce: u64) -> Result<Digest, NodeError> {
    let mut bytes = super::spec_hash(spec)?.0.to_vec();
    bytes.extend_from_slice(&nonce.to_le_bytes());
    Ok(tagged_hash("scp/train-request/v1", &bytes))
}

impl TrainingRequest {
    /// Signs a spec.
    pub fn sign(spec: TrainingSpec, nonce: u64, key: &SigningKey) -> Result<Self, NodeError> {
        let msg = request_message(&spec, nonce)?;
        Ok(TrainingRequest {
            spec,
            nonce,
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&msg.0).to_bytes().to_vec(),
        })
    }
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

/// Permits `operator` to submit `train` tasks on every Vault of the network.
pub fn permit_training(net: &EmbeddedNetwork, operator: &str) -> Result<(), NodeError> {
    let actor = ActorId::new(operator).map_err(|e| NodeError::Refused(e.to_string()))?;
    for e in &net.enterprises {
        e.vault.permit(&actor, TaskClass::Train)?;
    }
    Ok(())
}

fn refused(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

fn micro(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        (x * 1e6).round() as u64
    } else {
        0
    }
}

struct Admitted {
    task_id: TaskId,
    actor: ActorId,
    envelope: TaskEnvelope,
    plan: FeaturePlan,
    schedule: Vec<Epsilon>,
    per_round_counts: Vec<u64>,
    escrow_id: String,
    estimate: u64,

    prices: symphony_economics::PolicyParams,
}

/// Runs the training task of `req` on the network, delivering to `registry_dir`.
pub fn run_training(
    net: &mut EmbeddedNetwork,
    req: &TrainingRequest,
    registry_dir: &Path,
    run_seed: u64,
    obs: &mut dyn TrainObserver,
) -> Result<TrainOutcome, NodeError> {
    let EmbeddedNetwork {
        master,
        enterprises,
        down,
        ..
    } = net;
    let mut trainers: Vec<VaultTrainer<'_>> = enterprises
        .iter()
        .filter(|e| !down.contains(e.vault_id()))
        .map(VaultTrainer::new)
        .collect();
    let all: Vec<&EnterpriseNode> = enterprises.iter().collect();
    let adm = admit(master, &all, &mut trainers, req, obs)?;
    let result = execute(
        master,
        &mut trainers,
        &adm,
        req,
        registry_dir,
        run_seed,
        obs,
    );
    for t in trainers.iter_mut() {
        let _ = t.release_unused(&adm.task_id);
    }
    result
}

fn admit(
    m: &mut MasterServices,
    all: &[&EnterpriseNode],
    trainers: &mut [VaultTrainer<'_>],
    req: &TrainingRequest,
    obs: &mut dyn TrainObserver,
) -> Result<Admitted, NodeError> {
    let spec = &req.spec;
    spec.validate()?;
    let actor = ActorId::new(spec.model_operator.clone()).map_err(refused)?;
    let known = m
        .advertisers
        .get(&actor)
        .ok_or_else(|| refused(format!("unknown caller {actor}")))?;
    if *known != req.public_key {
        return Err(refused(format!("public key is not registered for {actor}")));
    }
    let msg = request_message(spec, req.nonce)?;
    let vk =
        VerifyingKey::from_bytes(&req.public_key).map_err(|_| refused("malformed public key"))?;
    let sig = Signature::from_slice(&req.signature).map_err(|_| refused("malformed signature"))?;
    vk.verify(&msg.0, &sig)
        .map_err(|_| refused("request signature does not verify"))?;
    obs.step(
        "admission",
        &format!("model operator {actor} authenticated (ed25519); task_class: train"),
    );
    let plan = m
        .semantic
        .resolve_features(&FeatureIntent {
            brand: spec.brand.clone(),
            feature_names: spec.feature_families.clone(),
            window_days: spec.window_days,
        })
        .map_err(|e| refused(format!("semantic resolution blocked the task: {e}")))?;
    let epoch = EpochId(0);
    let resolved = m
        .policy
        .resolve(epoch, plan.body().semantic_version, PolicyVersion(1))
        .map_err(refused)?;
    let params = resolved.params.clone();
    obs.step(
        "semantics",
        &format!(
            "feature plan {} ({} features) under {} / policy v{}",
            &plan.plan_hash().to_hex()[..12],
            plan.dimension(),
            plan.body().semantic_version,
            resolved.policy_version.0
        ),
    );
    let allocation = spec.epsilon_total()?;
    let capacity = params.privacy.epsilon_capacity_per_epoch.training;
    if allocation > capacity {
        return Err(refused(format!(
            "ε {allocation} exceeds the policy's training capacity {capacity} per subject per epoch"
        )));
    }
    let d = &spec.dp_sgd;
    let schedule = control::epsilon_schedule(
        d.sampling_rate,
        d.noise_multiplier,
        d.local_steps,
        spec.privacy.delta,
        spec.iteration_policy.max_rounds,
        allocation,
    )?;
    if schedule.is_empty() {
        return Err(refused(format!(
            "ε {allocation} does not cover one round at δ {}",
            spec.privacy.delta
        )));
    }
    let planned: u64 = schedule.iter().map(|e| e.micro).sum();
    let task_id =
        TaskId::new(format!("train-{}-{}", &msg.to_hex()[..12], req.nonce)).map_err(refused)?;
    // Consent and per-round budget reservation in each Vault.
    let mut consent_refs = Vec::new();
    let mut per_round_counts = vec![0u64; schedule.len()];
    for t in trainers.iter_mut() {
        let (counts, commitment) = match t.admission_reserve(&task_id, &actor, &schedule, m.now_ms)
        {
            Ok(r) => r,
            Err(e) => {
                for t in trainers.iter_mut() {
                    let _ = t.release_unused(&task_id);
                }
                return Err(e);
            }
        };
        for (acc, c) in per_round_counts.iter_mut().zip(&counts) {
            *acc += c;
        }
        consent_refs.push(ConsentRef {
            vault_id: t.node.vault_id().clone(),
            usage_scope: UsageScope::Training,
            snapshot_commitment: commitment,
            eligible_subjects: counts.first().copied().unwrap_or(0),
        });
    }
    obs.step(
        "budget",
        &format!(
            "{} rounds scheduled within ε {allocation} (δ {}); round 0 reserved for {} subjects with training consent",
            schedule.len(),
            spec.privacy.delta,
            per_round_counts.first().copied().unwrap_or(0)
        ),
    );
    let n = all.len() as u32;
    let quorum = spec
        .minimum_vault_quorum
        .unwrap_or((n / 2 + 1).max(2))
        .clamp(2, n.max(2));
    let estimate = estimate_fee(
        &params.prices,
        &TaskUsage::Train(TrainUsage::uniform(
            schedule.len() as u32,
            n,
            Epsilon::from_micro(planned),
        )),
    )
    .map_err(refused)?;
    let escrow_id = format!("escrow-{task_id}");
    let owner = symphony_ledger::AccountId::new(format!("actor:{actor}"))
        .map_err(|e| NodeError::Ledger(e.to_string()))?;
    m.ledger
        .lock(
            &EscrowId::new(escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))?,
            &owner,
            estimate,
        )
        .map_err(|e| NodeError::Ledger(e.to_string()))?;
    obs.step(
        "escrow",
        &format!("{estimate} µSYM locked in {escrow_id} (train formula)"),
    );
    let envelope = TaskEnvelope::seal(EnvelopeBody {
        task_id: task_id.clone(),
        task_class: TaskClass::Train,
        caller: CallerContext {
            actor_id: actor.clone(),
            public_key: req.public_key,
            request_hash: msg,
            nonce: req.nonce,
            admitted_at_ms: m.now_ms,
        },
        authorization: Authorization {
            granted_by: "vault-permits:train".into(),
            vault_permits: consent_refs.iter().map(|c| c.vault_id.clone()).collect(),
        },
        consent_refs: consent_refs.clone(),
        semantic_version: plan.body().semantic_version,
        policy_version: resolved.policy_version,
        epoch_id: epoch,
        budget_reservation: BudgetReservation {
            usage_scope: UsageScope::Training,
            epsilon_per_subject: Epsilon::from_micro(planned),
            subjects_reserved: per_round_counts.first().copied().unwrap_or(0),
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: all
                .iter()
                .map(|e| e.vault_id().clone())
                .collect::<BTreeSet<_>>(),
            minimum_vault_quorum: quorum.min(n),
            aggregation_method: AggregationMethod::FederatedAverage,
        },
        budget_lock_ref: Some(BudgetLockRef {
            ledger: "embedded-redb".into(),
            escrow_id: escrow_id.clone(),
            amount_base_units: estimate,
        }),
        iteration_policy: Some(IterationPolicy {
            max_rounds: spec.iteration_policy.max_rounds,
            convergence_threshold_micro: micro(spec.iteration_policy.convergence_threshold),
            early_stop_patience: spec.iteration_policy.early_stop_patience,
            stop_on_budget_exhaustion: true,
        }),
        resolved_plan_hash: plan.plan_hash(),
        constraints: [
            ("spec_hash".to_string(), super::spec_hash(spec)?.to_hex()),
            ("target".to_string(), spec.target.clone()),
            ("model".to_string(), format!("{:?}", spec.model)),
            ("delta".to_string(), spec.privacy.delta.to_string()),
            ("epsilon_allocation".to_string(), allocation.to_string()),
            (
                "schedule_micro".to_string(),
                format!("{:?}", schedule.iter().map(|e| e.micro).collect::<Vec<_>>()),
            ),
        ]
        .into_iter()
        .collect(),
        deadline_ms: m.now_ms + 86_400_000,
    })?;
    if let Err(e) = m.masters.submit(Command::AdmitTask {
        envelope: Box::new(envelope.clone()),
    }) {
        for t in trainers.iter_mut() {
            let _ = t.release_unused(&task_id);
        }
        let _ = m.ledger.refund(
            &EscrowId::new(escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))?,
            estimate,
        );
        return Err(e.into());
    }
    obs.step(
        "accepted",
        &format!(
            "TaskEnvelope {} (train, iteration_policy, federated_average)",
            &envelope.hash().to_hex()[..16]
        ),
    );
    Ok(Admitted {
        task_id,
        actor,
        envelope,
        plan,
        schedule,
        per_round_counts,
        escrow_id,
        estimate,

        prices: params,
    })
}

fn advance(
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

struct RoundAggregate {
    decoded: Vec<f64>,
    evidence: SliceEvidence,
}

/// The aggregation runtime: inside the master's enclave, sums the masked updates
/// (recovering dropped Vaults' masks from Shamir shares), decodes only the sum, and
/// drops the per-Vault inputs before returning.
#[allow(clippy::too_many_arguments)]
fn aggregate(
    aggregator: &SoftwareEnclave,
    envelope: &TaskEnvelope,
    round: u32,
    roster: Roster,
    threshold: u8,
    bundles: Vec<(ParticipantId, TrainSliceBundle)>,
    recovery: Vec<(
        ParticipantId,
        ParticipantId,
        symphony_train::secagg::SecretShare,
    )>,
    participants: u32,
    len: usize,
    at_ms: u64,
) -> Result<RoundAggregate, NodeError> {
    let mut commitments: Vec<Digest> = bundles.iter().map(|(_, b)| b.commitment).collect();
    commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &commitments);
    let mut failure = None;
    let run = aggregator.run(&inputs.0, envelope.hash().0, at_ms, || {
        let out = (|| -> Result<Vec<f64>, NodeError> {
            let mut agg = Aggregator::new(roster.clone(), u64::from(round), threshold, len)
                .map_err(train_err)?;
            for (from, b) in bundles {
                agg.add_masked(symphony_train::secagg::MaskedUpdate {
                    from,
                    round: u64::from(round),
                    masked: b.body.masked,
                })
                .map_err(train_err)?;
            }
            for (dropped, holder, share) in recovery {
                agg.add_recovery_share(dropped, holder, share)
                    .map_err(train_err)?;
            }
            let sum = agg.finish().map_err(train_err)?;
            Ok(super::vault::quantizer(participants)?.decode(&sum))
        })();
        match out {
            Ok(v) => {
                let h = super::f64_hash("scp/train-aggregate/v1", &[&v]);
                (Some((v, h)), h.0)
            }
            Err(e) => {
                failure = Some(e);
                (None, [0; 32])
            }
        }
    });
    let (out, attestation) = run.map_err(|e| NodeError::Enclave(e.to_string()))?;
    let Some((decoded, result_hash)) = out else {
        return Err(failure.unwrap_or_else(|| NodeError::Enclave("aggregation failed".into())));
    };
    Ok(RoundAggregate {
        decoded,
        evidence: SliceEvidence {
            commitment: result_hash,
            inputs_commitment: inputs,
            attestation,
        },
    })
}

fn model_hash(model: &GlobalModel) -> Result<Digest, NodeError> {
    Ok(super::f64_hash(
        "scp/train-model/v1",
        &[&model.parameters()],
    ))
}

struct RunState {
    model: GlobalModel,
    summaries: Vec<RoundSummary>,
    losses_micro: Vec<u64>,
    budgeted_after: Vec<bool>,
    evidence: Vec<SliceEvidence>,
    vaults_per_round: Vec<u32>,
    contributor: BTreeMap<VaultId, u64>,
    served: BTreeMap<VaultId, u64>,
    accountant: symphony_train::accountant::RdpAccountant,
    stop: StopReason,
}

fn assignment(
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

fn initial_model(spec: &TrainingSpec, d: usize, seed: u64) -> Result<GlobalModel, NodeError> {
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

fn round_budgeted(adm: &Admitted, next: usize) -> bool {
    next < adm.schedule.len()
        && adm.per_round_counts.get(next).copied().unwrap_or(0)
            >= adm.plan.minimum_result_cardinality()
}

#[allow(clippy::too_many_arguments)]
fn execute(
    m: &mut MasterServices,
    trainers: &mut [VaultTrainer<'_>],
    adm: &Admitted,
    req: &TrainingRequest,
    registry_dir: &Path,
    seed: u64,
    obs: &mut dyn TrainObserver,
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
        losses_micro: vec![],
        budgeted_after: vec![],
        evidence: vec![],
        vaults_per_round: vec![],
        contributor: BTreeMap::new(),
        served: BTreeMap::new(),
        accountant: symphony_train::accountant::RdpAccountant::new(),
        stop: StopReason::ConvergenceNotReached,
    };
    let epoch_len = adm.prices.epochs.epoch_length_ms.max(1);
    let mut round = 0u32;
    loop {
        let at_ms = m.now_ms + u64::from(round) * spec.round_duration_ms;
        let epoch = EpochId(u64::from(round) * spec.round_duration_ms / epoch_len);
        if let Err(e) = run_round(
            m, trainers, adm, spec, &mut st, round, at_ms, epoch, seed, obs,
        ) {
            return reject(m, adm, format!("round {round} failed: {e}"), obs);
        }
        round += 1;
        let budgeted = round_budgeted(adm, round as usize);
        st.budgeted_after.push(budgeted);
        if let Some(iter) = adm.envelope.body().iteration_policy.as_ref() {
            if let Decision::Stop(r) = control::decide(iter, &st.losses_micro, budgeted) {
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
    finish(m, trainers, adm, spec, st, registry_dir, seed, obs)
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    m: &mut MasterServices,
    trainers: &mut [VaultTrainer<'_>],
    adm: &Admitted,
    spec: &TrainingSpec,
    st: &mut RunState,
    round: u32,
    at_ms: u64,
    epoch: EpochId,
    seed: u64,
    obs: &mut dyn TrainObserver,
) -> Result<(), NodeError> {
    let task = &adm.task_id;
    m.masters.submit(Command::OpenRound {
        task_id: task.clone(),
        round,
        epoch_id: epoch,
    })?;
    let participating: Vec<VaultId> = adm
        .envelope
        .body()
        .coordination_envelope
        .participating_vault_ids
        .iter()
        .cloned()
        .collect();
    // Prepare: per-Vault feature construction in the enclaves.
    let mut ready: Vec<(usize, u64, [u8; 32])> = Vec::new();
    for (i, t) in trainers.iter_mut().enumerate() {
        let a = assignment(adm, spec, t.node.vault_id(), round, at_ms, seed);
        match t.prepare_round(&a) {
            Ok(p) => ready.push((i, p.examples, p.public_key)),
            Err(e) => obs.step("slice_failed", &format!("{}: {e}", t.node.vault_id())),
        }
    }
    let roster = Roster::new(
        ready
            .iter()
            .enumerate()
            .map(|(k, (_, _, pk))| (ParticipantId(k as u32), x25519_dalek::PublicKey::from(*pk))),
    )
    .map_err(train_err)?;
    let threshold = ((roster.len() / 2 + 1).max(2)).min(roster.len()) as u8;
    let total: u64 = ready.iter().map(|r| r.1).sum();
    for (k, (i, _, _)) in ready.iter().enumerate() {
        let a = assignment(adm, spec, trainers[*i].node.vault_id(), round, at_ms, seed);
        trainers[*i].set_participant_id(ParticipantId(k as u32), &a);
    }
    for (i, _, _) in &ready {
        let a = assignment(adm, spec, trainers[*i].node.vault_id(), round, at_ms, seed);
        for share in trainers[*i].deal_shares(&roster, threshold, &a)? {
            if let Some((j, _, _)) = ready.get(share.holder.0 as usize) {
                trainers[*j].hold_share(share);
            }
        }
    }
    // Train and mask.
    let global_hash = model_hash(&st.model)?;
    let mut bundles = Vec::new();
    let mut dropped = Vec::new();
    let mut recorded: BTreeSet<VaultId> = BTreeSet::new();
    for (k, (i, _, _)) in ready.iter().enumerate() {
        let vault_id = trainers[*i].node.vault_id().clone();
        let a = assignment(adm, spec, &vault_id, round, at_ms, seed);
        let res = trainers[*i]
            .train_round(&a, &st.model, &global_hash, &roster, total)
            .and_then(|b| {
                let body_ok = content_hash("scp/train-slice/v1", &b.body).ok()
                    == Some(b.commitment)
                    && b.inputs_commitment
                        == super::vault::slice_inputs_commitment(&a, &global_hash)
                    && b.body.epsilon_committed_micro == a.epsilon.micro;
                if !body_ok {
                    return Err(refused(
                        "slice bundle does not match its commitment or inputs",
                    ));
                }
                let ev = SliceEvidence {
                    commitment: b.commitment,
                    inputs_commitment: b.inputs_commitment,
                    attestation: b.attestation.clone(),
                };
                verify_evidence(&m.verifier, &adm.envelope, &ev, vault_id.as_str())
                    .map_err(refused)?;
                Ok((b, ev))
            });
        let record = match res {
            Ok((b, ev)) => {
                *st.contributor.entry(vault_id.clone()).or_default() += b
                    .body
                    .subjects_used
                    .saturating_mul(b.body.epsilon_committed_micro / 1000);
                *st.served.entry(vault_id.clone()).or_default() += b.body.subjects_used;
                st.evidence.push(ev);
                let r = RoundSliceRecord {
                    state: SliceState::Verified,
                    commitment: b.commitment,
                    examples: b.body.examples,
                    epsilon_committed_micro: b.body.epsilon_committed_micro,
                };
                bundles.push((ParticipantId(k as u32), b));
                r
            }
            Err(e) => {
                obs.step("slice_failed", &format!("{vault_id}: {e}"));
                dropped.push(ParticipantId(k as u32));
                RoundSliceRecord {
                    state: SliceState::Failed,
                    commitment: Digest::default(),
                    examples: 0,
                    epsilon_committed_micro: 0,
                }
            }
        };
        m.masters.submit(Command::RecordRoundSlice {
            task_id: task.clone(),
            round,
            vault_id: vault_id.clone(),
            record,
        })?;
        recorded.insert(vault_id);
    }
    for v in participating.iter().filter(|v| !recorded.contains(*v)) {
        m.masters.submit(Command::RecordRoundSlice {
            task_id: task.clone(),
            round,
            vault_id: v.clone(),
            record: RoundSliceRecord {
                state: SliceState::TimedOut,
                commitment: Digest::default(),
                examples: 0,
                epsilon_committed_micro: 0,
            },
        })?;
    }
    // Dropout recovery: survivors hand the aggregator their shares of dropped Vaults.
    let mut recovery = Vec::new();
    for d in &dropped {
        for (k, (i, _, _)) in ready.iter().enumerate() {
            if dropped.contains(&ParticipantId(k as u32)) {
                continue;
            }
            if let Some(s) = trainers[*i].recovery_share(*d) {
                recovery.push((*d, ParticipantId(k as u32), s.share));
            }
        }
    }
    let examples: u64 = bundles.iter().map(|(_, b)| b.body.examples).sum();
    let n_params = st.model.n_parameters();
    let vaults = bundles.len() as u32;
    // Bundles are tagged with roster ids in order; dropped ids are skipped.
    let agg = aggregate(
        &m.aggregator,
        &adm.envelope,
        round,
        roster,
        threshold,
        bundles,
        recovery,
        ready.len() as u32,
        n_params + METRIC_SLOTS,
        at_ms,
    )?;
    verify_evidence(&m.verifier, &adm.envelope, &agg.evidence, "aggregation").map_err(refused)?;
    st.evidence.push(agg.evidence.clone());
    // The sum of pre-scaled updates over the round's total examples is the FedAvg
    // update; when a Vault dropped, rescale to the survivors' examples.
    let scale = if examples > 0 {
        total as f64 / examples as f64
    } else {
        0.0
    };
    let v: Vec<f64> = agg.decoded.iter().map(|x| x * scale).collect();
    let (delta, tail) = v.split_at(n_params);
    let train_loss = tail.first().copied().unwrap_or(0.0);
    let holdout_loss = tail.get(1).copied().unwrap_or(0.0);
    let auc_weight = tail.get(3).copied().unwrap_or(0.0);
    let holdout_auc = if auc_weight > 0.0 {
        tail.get(2).copied().unwrap_or(0.0) / auc_weight
    } else {
        0.0
    };
    st.model.add(delta)?;
    let eps = adm
        .schedule
        .get(round as usize)
        .copied()
        .unwrap_or(Epsilon::ZERO);
    st.accountant
        .compose_poisson_gaussian(
            spec.dp_sgd.sampling_rate,
            spec.dp_sgd.noise_multiplier,
            spec.dp_sgd.local_steps,
        )
        .map_err(train_err)?;
    let cumulative = st
        .accountant
        .epsilon(spec.privacy.delta)
        .map_err(train_err)?;
    let loss_micro = micro(train_loss);
    m.masters.submit(Command::CloseRound {
        task_id: task.clone(),
        round,
        record: RoundRecord {
            aggregate_commitment: agg.evidence.commitment,
            model_hash: model_hash(&st.model)?,
            examples,
            epsilon_micro: eps.micro,
            loss_micro,
        },
    })?;
    st.losses_micro.push(loss_micro);
    st.vaults_per_round.push(vaults);
    let summary = RoundSummary {
        round,
        epoch_id: epoch.0,
        vaults,
        examples,
        train_loss,
        holdout_loss,
        holdout_auc,
        epsilon_round_micro: eps.micro,
        epsilon_cumulative: cumulative,
    };
    obs.round(&summary, spec.iteration_policy.max_rounds);
    st.summaries.push(summary);
    Ok(())
}

struct Quality {
    auc: f64,
    accuracy: f64,
    mia_advantage: f64,
}

/// Final evaluation: every Vault scores the final model on its held-out split and its
/// members in its enclave; the aggregation enclave computes the metrics and keeps
/// nothing else.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    m: &MasterServices,
    trainers: &[VaultTrainer<'_>],
    adm: &Admitted,
    spec: &TrainingSpec,
    model: &GlobalModel,
    round: u32,
    seed: u64,
    evidence: &mut Vec<SliceEvidence>,
) -> Result<Quality, NodeError> {
    let hash = model_hash(model)?;
    let at_ms = m.now_ms + u64::from(round) * spec.round_duration_ms;
    let mut bundles = Vec::new();
    for t in trainers {
        let a = assignment(adm, spec, t.node.vault_id(), round, at_ms, seed);
        let Ok(b) = t.evaluate(&a, model, &hash) else {
            continue;
        };
        let ev = SliceEvidence {
            commitment: b.commitment,
            inputs_commitment: b.inputs_commitment,
            attestation: b.attestation.clone(),
        };
        verify_evidence(&m.verifier, &adm.envelope, &ev, t.node.vault_id().as_str())
            .map_err(refused)?;
        evidence.push(ev);
        bundles.push(b);
    }
    let mut commitments: Vec<Digest> = bundles.iter().map(|b| b.commitment).collect();
    commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &commitments);
    let run = m
        .aggregator
        .run(&inputs.0, adm.envelope.hash().0, at_ms, move || {
            let (mut scores, mut labels, mut members) = (vec![], vec![], vec![]);
            for b in bundles {
                scores.extend(b.holdout_scores);
                labels.extend(b.holdout_labels);
                members.extend(b.member_losses);
            }
            let nonmembers: Vec<f64> = scores
                .iter()
                .zip(&labels)
                .map(|(p, y)| metrics::example_log_loss(*p, *y).unwrap_or(f64::MAX))
                .collect();
            let q = (
                metrics::auc(&scores, &labels).unwrap_or(0.0),
                metrics::accuracy(&scores, &labels, 0.5).unwrap_or(0.0),
                metrics::membership_advantage(&members, &nonmembers).unwrap_or(1.0),
            );
            let h = content_hash(
                "scp/train-quality/v1",
                &(micro(q.0), micro(q.1), micro(q.2)),
            )
            .unwrap_or_default();
            ((q, h), h.0)
        });
    let (((auc, accuracy, mia_advantage), h), attestation) =
        run.map_err(|e| NodeError::Enclave(e.to_string()))?;
    let ev = SliceEvidence {
        commitment: h,
        inputs_commitment: inputs,
        attestation,
    };
    verify_evidence(&m.verifier, &adm.envelope, &ev, "evaluation").map_err(refused)?;
    evidence.push(ev);
    Ok(Quality {
        auc,
        accuracy,
        mia_advantage,
    })
}

#[allow(clippy::too_many_arguments)]
fn finish(
    m: &mut MasterServices,
    trainers: &mut [VaultTrainer<'_>],
    adm: &Admitted,
    spec: &TrainingSpec,
    mut st: RunState,
    registry_dir: &Path,
    seed: u64,
    obs: &mut dyn TrainObserver,
) -> Result<TrainOutcome, NodeError> {
    let task = &adm.task_id;
    let rounds_run = st.summaries.len() as u32;
    let mut evidence = std::mem::take(&mut st.evidence);
    let q = evaluate(
        m,
        trainers,
        adm,
        spec,
        &st.model,
        rounds_run,
        seed,
        &mut evidence,
    )?;
    // --- Composite verification (seed 003, section 5)
    let mut failures = Vec::new();
    for (i, ev) in evidence.iter().enumerate() {
        if verify_evidence(&m.verifier, &adm.envelope, ev, &format!("evidence {i}")).is_err() {
            failures.push(format!("attestation {i} does not verify"));
        }
    }
    let spent: u64 = adm
        .schedule
        .iter()
        .take(rounds_run as usize)
        .map(|e| e.micro)
        .sum();
    let recorded: u64 = m
        .masters
        .state()
        .composite(task)
        .map_or(0, |c| c.rounds.values().map(|r| r.epsilon_micro).sum());
    if spent != recorded {
        failures.push(format!("ε records sum to {recorded} µε, not {spent}"));
    }
    let policy = adm
        .envelope
        .body()
        .iteration_policy
        .clone()
        .ok_or_else(|| refused("train without iteration_policy"))?;
    if !control::convergence_consistent(&policy, &st.losses_micro, &st.budgeted_after, st.stop) {
        failures.push("stop reason is not consistent with the iteration policy".into());
    }
    let a = &spec.acceptance;
    if q.auc < a.min_auc {
        failures.push(format!("held-out AUC {:.3} below {}", q.auc, a.min_auc));
    }
    if q.accuracy < a.min_accuracy {
        failures.push(format!(
            "held-out accuracy {:.3} below {}",
            q.accuracy, a.min_accuracy
        ));
    }
    if q.mia_advantage > a.max_mia_advantage {
        failures.push(format!(
            "membership-inference advantage {:.3} above {}",
            q.mia_advantage, a.max_mia_advantage
        ));
    }
    let accepted = failures.is_empty();
    let file =
        registry::model_file_bytes(&st.model, &registry::card_metadata(task, spec, &adm.plan))?;
    let model_digest = tagged_hash("scp/model-artifact/v1", &file);
    m.masters.submit(Command::RecordCompositeResult {
        task_id: task.clone(),
        record: CompositeResultRecord {
            rounds_run,
            stop_reason: st.stop.as_str().into(),
            epsilon_spent_micro: recorded,
            model_hash: model_digest,
            accepted,
        },
    })?;
    obs.step(
        "composite_verification",
        &format!(
            "{} attestations, ε Σ rounds = {} µε, stop {} consistent, AUC {:.3}, accuracy {:.3}, MIA advantage {:.3}: {}",
            evidence.len(),
            recorded,
            st.stop.as_str(),
            q.auc,
            q.accuracy,
            q.mia_advantage,
            if accepted { "accepted".to_string() } else { failures.join("; ") }
        ),
    );
    let mut out = TrainOutcome {
        task_id: task.to_string(),
        envelope_hash: adm.envelope.hash().to_hex(),
        states: vec![],
        reason: None,
        rounds_run,
        max_rounds: spec.iteration_policy.max_rounds,
        rounds_budgeted: adm.schedule.len() as u32,
        converged: st.stop == StopReason::Converged,
        convergence_not_reached: st.stop == StopReason::ConvergenceNotReached,
        stop_reason: st.stop.as_str().into(),
        epsilon_spent: recorded as f64 / 1e6,
        epsilon_spent_micro: recorded,
        epsilon_allocation: spec.epsilon_total()?.as_f64(),
        delta: spec.privacy.delta,
        auc_holdout: q.auc,
        accuracy_holdout: q.accuracy,
        mia_advantage: q.mia_advantage,
        accepted,
        n_slices: 0,
        n_objects: 0,
        round_states: vec![],
        attestations_verified: evidence.len() as u32,
        fee_locked: adm.estimate,
        fee_total: 0,
        refund: 0,
        fee_shares: BTreeMap::new(),
        round_settlements: BTreeMap::new(),
        settlement_state: None,
        rounds: st.summaries.clone(),
        model_path: None,
        model_card_path: None,
        curve_path: None,
        model_sha256: None,
    };
    if !accepted {
        // The lifecycle has no `verifying → rejected` edge (only a challenge leaves
        // `verifying` otherwise): the parent stays in `verifying` with a recorded
        // `accepted: false` composite result, and the escrow is refunded.
        let reason = failures.join("; ");
        obs.step("rejected", &reason);
        refund_all(m, adm)?;
        out.refund = adm.estimate;
        out.reason = Some(reason);
        fill(m, task, &mut out);
        return Ok(out);
    }
    advance(m, task, TaskEvent::VerificationAccepted, None, obs)?;
    settle(m, adm, &st, &mut out, obs)?;
    // --- Delivery to the model registry
    fill(m, task, &mut out); // the card carries the round settlements
    let paths = registry::deliver(
        registry_dir,
        task,
        spec,
        &adm.plan,
        &st.model,
        &file,
        &out,
        &adm.envelope,
    )?;
    m.masters.submit(Command::RecordDelivery {
        task_id: task.clone(),
        recipient: adm.actor.clone(),
        result_hash: model_digest,
        count: 1,
        at_ms: m.now_ms + u64::from(rounds_run) * spec.round_duration_ms,
    })?;
    obs.step(
        "delivered",
        &format!(
            "model to {} for {} (audit event recorded)",
            paths.0.display(),
            adm.actor
        ),
    );
    out.model_sha256 = Some(hex::encode(sha2::Sha256::digest_bytes(&file)));
    out.model_path = Some(paths.0.display().to_string());
    out.model_card_path = Some(paths.1.display().to_string());
    out.curve_path = Some(paths.2.display().to_string());
    fill(m, task, &mut out);
    Ok(out)
}

trait DigestBytes {
    fn digest_bytes(bytes: &[u8]) -> [u8; 32];
}
impl DigestBytes for sha2::Sha256 {
    fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes).into()
    }
}

fn fill(m: &MasterServices, task: &TaskId, out: &mut TrainOutcome) {
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

fn refund_all(m: &mut MasterServices, adm: &Admitted) -> Result<(), NodeError> {
    let escrow =
        EscrowId::new(adm.escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))?;
    m.ledger
        .refund(&escrow, adm.estimate)
        .map(|_| ())
        .map_err(|e| NodeError::Ledger(e.to_string()))
}

fn reject(
    m: &mut MasterServices,
    adm: &Admitted,
    reason: String,
    obs: &mut dyn TrainObserver,
) -> Result<TrainOutcome, NodeError> {
    obs.step("rejected", &reason);
    let _ = advance(
        m,
        &adm.task_id,
        TaskEvent::Reject,
        Some(reason.clone()),
        obs,
    );
    refund_all(m, adm)?;
    Err(NodeError::Refused(reason))
}

fn account(s: String) -> Result<symphony_ledger::AccountId, NodeError> {
    symphony_ledger::AccountId::new(s).map_err(|e| NodeError::Ledger(e.to_string()))
}

fn settle(
    m: &mut MasterServices,
    adm: &Admitted,
    st: &RunState,
    out: &mut TrainOutcome,
    obs: &mut dyn TrainObserver,
) -> Result<(), NodeError> {
    let task = &adm.task_id;
    let prices = &adm.prices.prices;
    let usage = TrainUsage {
        vaults_per_round: st.vaults_per_round.clone(),
        total_epsilon: Epsilon::from_micro(out.epsilon_spent_micro),
    };
    let settled = settle_fee(prices, adm.estimate, &TaskUsage::Train(usage)).map_err(refused)?;
    let op = |v: &VaultId| ActorId::new(format!("operator:{v}")).map_err(refused);
    let mut executors = Vec::new();
    let mut served = Vec::new();
    for (v, n) in &st.served {
        served.push((op(v)?, *n));
        executors.push((op(v)?, u64::from(out.rounds_run)));
    }
    executors.push((
        ActorId::new("master-0").map_err(refused)?,
        u64::from(out.rounds_run),
    ));
    let verifiers = (0..3)
        .map(|i| ActorId::new(format!("master-{i}")).map(|a| (a, 1u64)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(refused)?;
    let dist = distribute_fee(
        settled.charged_micro_sym,
        &adm.prices.fee_shares,
        &ContributionReport {
            data_contributor_weight_by_vault: st
                .contributor
                .iter()
                .map(|(v, w)| (v.clone(), *w))
                .collect(),
            records_served_by_operator: served,
            verified_work_by_executor: executors,
            decisions_by_verifier: verifiers,
        },
    )
    .map_err(refused)?;
    let mut shares: BTreeMap<String, u64> = BTreeMap::new();
    let mut instructions = Vec::new();
    for p in dist.payouts() {
        let (name, kind) = match &p.recipient {
            Recipient::VaultContributors(v) => {
                (format!("contributors:{v}"), PayoutKind::DataUsageDividend)
            }
            Recipient::Actor(a) => (
                format!("actor:{a}"),
                match p.class {
                    symphony_economics::RecipientClass::VaultOperators => PayoutKind::VaultOperator,
                    symphony_economics::RecipientClass::Executors => PayoutKind::Executor,
                    _ => PayoutKind::Verifier,
                },
            ),
            Recipient::Treasury => ("treasury".to_string(), PayoutKind::Treasury),
        };
        *shares.entry(name.clone()).or_default() += p.amount_micro_sym;
        instructions.push(PayoutInstruction {
            recipient: account(name)?,
            amount: p.amount_micro_sym,
            kind,
        });
    }
    let mut state = SettlementState::Collecting;
    loop {
        let record = SettlementRecord {
            state,
            epoch_id: adm.envelope.body().epoch_id,
            fee_total: settled.charged_micro_sym,
            fee_shares: shares.clone(),
            refund: settled.refund_micro_sym,
        };
        let committed = m.masters.submit(Command::RecordSettlement {
            task_id: task.clone(),
            record,
        })?;
        obs.step(&format!("settlement:{state}"), "");
        if state == SettlementState::Finalizing {
            if !committed.certificate.is_final(&m.masters.master_keys()) {
                return Err(refused("commit certificate not final; payout withheld"));
            }
            let escrow = EscrowId::new(adm.escrow_id.clone())
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
            let set = PayoutInstructionSet {
                payout_id: PayoutId::new(format!("payout-{task}"))
                    .map_err(|e| NodeError::Ledger(e.to_string()))?,
                epoch_id: adm.envelope.body().epoch_id.0,
                settlement_ref: task.to_string(),
                instructions: instructions.clone(),
            };
            m.ledger
                .payout(&escrow, &set)
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
            if settled.refund_micro_sym > 0 {
                m.ledger
                    .refund(&escrow, settled.refund_micro_sym)
                    .map_err(|e| NodeError::Ledger(e.to_string()))?;
            }
        }
        match state.advance() {
            Ok(next) => state = next,
            Err(_) => break,
        }
    }
    // Each round settles in its dispatch epoch: its compute + aggregation fee.
    let tp = &prices.train;
    for (round, vaults) in st.vaults_per_round.iter().enumerate() {
        let fee = tp
            .per_round_vault_compute_fee_micro_sym
            .saturating_mul(u64::from(*vaults))
            .saturating_add(tp.per_round_aggregation_fee_micro_sym);
        m.masters.submit(Command::SettleRound {
            task_id: task.clone(),
            round: round as u32,
            fee_micro_sym: fee,
        })?;
    }
    advance(m, task, TaskEvent::SettlementFinalized, None, obs)?;
    out.fee_total = settled.charged_micro_sym;
    out.refund = settled.refund_micro_sym;
    out.fee_shares = shares;
    out.settlement_state = Some(SettlementState::Finalized.to_string());
    Ok(())
}
