//! Admission of a training task (seed 003 section 1): the signed request, feature
//! resolution, the ε schedule, per-Vault authorization and per-round reservations,
//! the escrow lock and the immutable envelope.

use std::collections::BTreeSet;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_economics::pricing::TrainUsage;
use symphony_economics::{estimate_fee, TaskUsage};
use symphony_ledger::EscrowId;
use symphony_master::Command;
use symphony_semantic::{FeatureIntent, FeaturePlan};

use super::control;
use super::coordinator::{micro, refused};
use super::endpoint::TrainingEndpoint;
use super::outcome::TrainObserver;
use super::persons::{assign_persons, unaffordable_persons};
use super::spec::TrainingSpec;
use crate::network::{EmbeddedNetwork, MasterServices};
use crate::planes::admission::{authenticate_parts, lock_escrow, policy_in_force, too_few_message};
use crate::NodeError;

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

/// The hash a model operator signs for a training `(spec, nonce)`.
pub fn request_message(spec: &TrainingSpec, nonce: u64) -> Result<Digest, NodeError> {
    let mut bytes = super::spec_hash(spec)?.0.to_vec();
    bytes.extend_from_slice(&nonce.to_le_bytes());
    Ok(tagged_hash("scp/train-request/v1", &bytes))
}

/// The task id a training request of `(spec, nonce)` is admitted under.
pub fn train_task_id(spec: &TrainingSpec, nonce: u64) -> Result<TaskId, NodeError> {
    let msg = request_message(spec, nonce)?;
    TaskId::new(format!("train-{}-{}", &msg.to_hex()[..12], nonce)).map_err(refused)
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

/// Permits `operator` to submit `train` tasks on every Vault of the network.
pub fn permit_training(net: &EmbeddedNetwork, operator: &str) -> Result<(), NodeError> {
    let actor = ActorId::new(operator).map_err(|e| NodeError::Refused(e.to_string()))?;
    for e in &net.enterprises {
        e.vault.permit(&actor, TaskClass::Train)?;
    }
    Ok(())
}

pub(super) struct Admitted {
    pub(super) task_id: TaskId,
    pub(super) actor: ActorId,
    pub(super) envelope: TaskEnvelope,
    pub(super) plan: FeaturePlan,
    pub(super) schedule: Vec<Epsilon>,
    pub(super) per_round_counts: Vec<u64>,
    pub(super) escrow_id: String,
    pub(super) estimate: u64,

    pub(super) prices: symphony_economics::PolicyParams,
}

pub(super) fn admit(
    m: &mut MasterServices,
    all: &[VaultId],
    trainers: &[&dyn TrainingEndpoint],
    req: &TrainingRequest,
    obs: &mut dyn TrainObserver,
) -> Result<Admitted, NodeError> {
    let spec = &req.spec;
    spec.validate()?;
    // Admission Plane steps shared with every class (`crate::planes::admission`).
    let msg = request_message(spec, req.nonce)?;
    let actor = authenticate_parts(
        m,
        &spec.model_operator,
        &req.public_key,
        &req.signature,
        &msg,
    )?;
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
    let (epoch, policy_version, params) = policy_in_force(m, plan.body().semantic_version)?;
    obs.step(
        "semantics",
        &format!(
            "feature plan {} ({} features) under {} / policy v{}",
            &plan.plan_hash().to_hex()[..12],
            plan.dimension(),
            plan.body().semantic_version,
            policy_version.0
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
    let task_id = train_task_id(spec, req.nonce)?;
    let (consent_refs, per_round_counts) = reserve_rounds(
        m,
        trainers,
        &task_id,
        &actor,
        spec,
        &schedule,
        (allocation, spec.privacy.delta),
        &plan,
        &params,
        obs,
    )?;
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
    let lock = lock_escrow(m, &task_id, &actor, estimate, obs)?;
    let escrow_id = lock
        .as_ref()
        .map(|l| l.escrow_id.clone())
        .unwrap_or_default();
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
        policy_version,
        epoch_id: epoch,
        budget_reservation: BudgetReservation {
            usage_scope: UsageScope::Training,
            epsilon_per_subject: Epsilon::from_micro(planned),
            subjects_reserved: per_round_counts.first().copied().unwrap_or(0),
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: all.iter().cloned().collect::<BTreeSet<_>>(),
            minimum_vault_quorum: quorum.min(n),
            aggregation_method: AggregationMethod::FederatedAverage,
        },
        budget_lock_ref: lock,
        iteration_policy: Some(iteration_policy(spec)),
        resolved_plan_hash: plan.plan_hash(),
        constraints: train_constraints(spec, allocation, &schedule)?,
        deadline_ms: m.now_ms + 86_400_000,
    })?;
    if let Err(e) = m.masters.submit(Command::AdmitTask {
        envelope: Box::new(envelope.clone()),
    }) {
        undo_admission(m, trainers, &task_id, &escrow_id, estimate);
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

/// One account per person ([`super::persons`]): every Vault reports its candidates'
/// person tokens and whether each can afford the whole run; each person is assigned
/// to one Vault (charged in every Vault that holds it), and each Vault reserves every
/// round for its assigned persons, all rounds or none. Refused — everything
/// released, nothing charged — when fewer persons than the feature composition's
/// `minimum_result_cardinality` can take part.
#[allow(clippy::too_many_arguments)]
fn reserve_rounds(
    m: &MasterServices,
    trainers: &[&dyn TrainingEndpoint],
    task_id: &TaskId,
    actor: &ActorId,
    spec: &TrainingSpec,
    schedule: &[Epsilon],
    (allocation, delta): (Epsilon, f64),
    plan: &FeaturePlan,
    params: &symphony_economics::PolicyParams,
    obs: &mut dyn TrainObserver,
) -> Result<(Vec<ConsentRef>, Vec<u64>), NodeError> {
    let release = || {
        for t in trainers {
            let _ = t.train_release_unused(task_id, 0);
        }
    };
    let total = Epsilon::from_micro(schedule.iter().map(|e| e.micro).sum());
    let mut reports = Vec::with_capacity(trainers.len());
    for t in trainers {
        match t.train_admission_persons(
            task_id,
            actor,
            total,
            &spec.market_scope.countries,
            m.now_ms,
        ) {
            Ok(c) => reports.push((t.vault_id().clone(), c)),
            Err(e) => {
                release();
                return Err(e);
            }
        }
    }
    let selections = assign_persons(&reports);
    let without_budget = unaffordable_persons(&reports);
    let mut consent_refs = Vec::new();
    let mut per_round_counts = vec![0u64; schedule.len()];
    for (t, selection) in trainers.iter().zip(&selections) {
        let (counts, commitment) =
            match t.train_admission_reserve(task_id, actor, schedule, selection) {
                Ok(r) => r,
                Err(e) => {
                    release();
                    return Err(e);
                }
            };
        for (acc, c) in per_round_counts.iter_mut().zip(&counts) {
            *acc += c;
        }
        consent_refs.push(ConsentRef {
            vault_id: t.vault_id().clone(),
            usage_scope: UsageScope::Training,
            snapshot_commitment: commitment,
            eligible_subjects: counts.first().copied().unwrap_or(0),
        });
    }
    let persons = per_round_counts.first().copied().unwrap_or(0);
    obs.step(
        "budget",
        &format!(
            "{} rounds scheduled within ε {allocation} (δ {delta}); the whole run reserved for {persons} persons with training consent (each trains through one Vault, charged in every Vault that holds it; {without_budget} lack budget for the whole run)",
            schedule.len(),
        ),
    );
    if persons < plan.minimum_result_cardinality() {
        // Refused before any escrow: nothing charged, every reservation released.
        release();
        return Err(refused(too_few_message(
            m,
            UsageScope::Training,
            "budget for the whole run",
            persons,
            consent_refs.len(),
            Some(without_budget),
            plan.minimum_result_cardinality(),
            params,
        )));
    }
    Ok((consent_refs, per_round_counts))
}

/// The envelope's iteration policy of a training spec.
fn iteration_policy(spec: &TrainingSpec) -> IterationPolicy {
    IterationPolicy {
        max_rounds: spec.iteration_policy.max_rounds,
        convergence_threshold_micro: micro(spec.iteration_policy.convergence_threshold),
        early_stop_patience: spec.iteration_policy.early_stop_patience,
        stop_on_budget_exhaustion: true,
    }
}

/// The envelope's class constraints of a training run.
fn train_constraints(
    spec: &TrainingSpec,
    allocation: Epsilon,
    schedule: &[Epsilon],
) -> Result<std::collections::BTreeMap<String, String>, NodeError> {
    Ok([
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
    .collect())
}

/// The masters refused the envelope: every Vault's reservations are released and
/// the escrow goes back to the operator.
fn undo_admission(
    m: &mut MasterServices,
    trainers: &[&dyn TrainingEndpoint],
    task_id: &TaskId,
    escrow_id: &str,
    estimate: u64,
) {
    for t in trainers {
        let _ = t.train_release_unused(task_id, 0);
    }
    if let Ok(escrow) = EscrowId::new(escrow_id) {
        let _ = m.ledger.refund(&escrow, estimate);
    }
}
