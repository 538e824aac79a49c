//! Composite verification (seed 003 section 5) and delivery to the model registry.

use std::collections::BTreeMap;
use std::path::Path;

use symphony_core::encoding::tagged_hash;
use symphony_core::lifecycle::TaskEvent;
use symphony_master::{Command, CompositeResultRecord};

use super::admission::Admitted;
use super::control::{self, StopReason};
use super::coordinator::ArtifactStage;
use super::coordinator::{advance, refund_all, refused, RunState};
use super::endpoint::TrainingEndpoint;
use super::evaluation::evaluate;
use super::outcome::{fill, TrainObserver, TrainOutcome};
use super::registry;
use super::settle::settle;
use super::spec::TrainingSpec;
use crate::network::MasterServices;
use crate::verify::verify_evidence;
use crate::NodeError;

#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    m: &mut MasterServices,
    trainers: &[&dyn TrainingEndpoint],
    adm: &Admitted,
    spec: &TrainingSpec,
    mut st: RunState,
    registry_dir: &Path,
    seed: u64,
    obs: &mut dyn TrainObserver,
    stage: Option<&mut dyn ArtifactStage>,
) -> Result<TrainOutcome, NodeError> {
    let task = &adm.task_id;
    let rounds_run = st.summaries.len() as u32;
    // A run that stopped for lack of improvement delivers its best released model.
    let delivered_round = match control::delivered_round(st.stop, &st.holdout) {
        Some(r) => {
            st.model = st
                .snapshots
                .get(r as usize)
                .cloned()
                .ok_or_else(|| refused(format!("no model snapshot of round {r}")))?;
            r
        }
        None => rounds_run,
    };
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
    let verifier = m.verifier_for(&adm.envelope)?;
    for (i, ev) in evidence.iter().enumerate() {
        if verify_evidence(&verifier, &adm.envelope, ev, &format!("evidence {i}")).is_err() {
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
    if !control::convergence_consistent(&policy, &st.holdout, &st.budgeted_after, st.stop) {
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
    let model_digest = tagged_hash(registry::MODEL_ARTIFACT_TAG, &file);
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
        delivered_round,
        max_rounds: spec.iteration_policy.max_rounds,
        rounds_budgeted: adm.schedule.len() as u32,
        converged: st.stop == StopReason::Converged,
        convergence_not_reached: st.stop == StopReason::ConvergenceNotReached,
        stop_reason: st.stop.as_str().into(),
        epsilon_spent: recorded as f64 / 1e6,
        epsilon_spent_micro: recorded,
        epsilon_allocation: spec.epsilon_total()?.as_f64(),
        delta: spec.privacy.delta,
        per_person_epsilon_max: super::control::composed_epsilon(
            spec.dp_sgd.sampling_rate,
            spec.dp_sgd.noise_multiplier,
            spec.dp_sgd.local_steps,
            rounds_run,
            spec.privacy.delta,
        )?,
        released_metrics: super::outcome::released_metrics(spec, rounds_run)?,
        auc_holdout: q.auc,
        accuracy_holdout: q.accuracy,
        mia_advantage: q.mia_advantage,
        holdout_size: q.holdout_size,
        holdout_positive_rate: if q.holdout_size == 0 {
            0.0
        } else {
            q.holdout_positives as f64 / q.holdout_size as f64
        },
        baseline_accuracy: if q.holdout_size == 0 {
            0.0
        } else {
            q.holdout_positives
                .max(q.holdout_size - q.holdout_positives) as f64
                / q.holdout_size as f64
        },
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
        composite_link: None,
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
        // The rounds' payouts their closes scheduled are paid; the rest refunded.
        out.refund = refund_all(m, adm)?;
        out.fee_total = adm.estimate.saturating_sub(out.refund);
        out.reason = Some(reason);
        fill(m, task, &mut out);
        return Ok(out);
    }
    advance(m, task, TaskEvent::VerificationAccepted, None, obs)?;
    if let Some(stage) = stage {
        // The verified model (and its card as known before settlement) where every
        // master can deliver it, before any money moves.
        fill(m, task, &mut out);
        let card = registry::model_card(task, spec, &adm.plan, &st.model, &out, &adm.envelope);
        let card =
            serde_json::to_vec_pretty(&card).map_err(|e| NodeError::Encoding(e.to_string()))?;
        stage.stage(task, &model_digest, &file, &card)?;
        obs.step("staged", "model artifact and card staged before settlement");
    }
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
