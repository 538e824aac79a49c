//! One round (sub-task) of the Multi-Vault Coordinator: open, prepare, agree masks
//! and deal shares, train and mask in each Vault, verify and record slices, recover
//! dropped Vaults, aggregate, update the global model and close the round.

use std::collections::BTreeSet;

use symphony_core::budget::Epsilon;
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::ids::*;
use symphony_core::lifecycle::SliceState;
use symphony_master::{Command, RoundRecord, RoundSliceRecord};
use symphony_train::secagg::{ParticipantId, SecretShare};

use super::admission::Admitted;
use super::aggregation::aggregate;
use super::coordinator::{assignment, micro, model_hash, refused, RunState};
use super::endpoint::{RosterKeys, TrainingEndpoint};
use super::model::train_err;
use super::outcome::{RoundSummary, TrainObserver};
use super::spec::TrainingSpec;
use super::tap::RoundTap;
use super::vault::RoundAssignment;
use crate::network::{MasterServices, PhaseClock};
use crate::verify::{verify_evidence, SliceEvidence};
use crate::NodeError;

#[allow(clippy::too_many_arguments)]
pub(super) fn run_round(
    m: &mut MasterServices,
    trainers: &[&dyn TrainingEndpoint],
    adm: &Admitted,
    spec: &TrainingSpec,
    st: &mut RunState,
    round: u32,
    at_ms: u64,
    epoch: EpochId,
    seed: u64,
    obs: &mut dyn TrainObserver,
    tap: &mut dyn RoundTap,
) -> Result<(), NodeError> {
    let task = &adm.task_id;
    let mut clock = PhaseClock::start();
    let epoch = open_round(m, task, round, epoch)?;
    let participating: Vec<VaultId> = adm
        .envelope
        .body()
        .coordination_envelope
        .participating_vault_ids
        .iter()
        .cloned()
        .collect();
    clock.lap(obs, "round_open");
    // Each Vault's slice assignment for the round, built once.
    let assignments: Vec<RoundAssignment> = trainers
        .iter()
        .map(|t| assignment(adm, spec, t.vault_id(), round, at_ms, seed))
        .collect();
    // Prepare: per-Vault feature construction in the enclaves.
    // The Vaults work in parallel; their answers are taken in roster order.
    let prepared = in_parallel(trainers, |i, t| t.train_prepare_round(&assignments[i]));
    let mut ready: Vec<(usize, [u8; 32])> = Vec::new();
    for (i, (t, p)) in trainers.iter().zip(prepared).enumerate() {
        match p {
            Ok(p) => ready.push((i, p.public_key)),
            Err(e) => obs.step("slice_failed", &format!("{}: {e}", t.vault_id())),
        }
    }
    clock.lap(obs, "prepare");
    let keys = RosterKeys(
        ready
            .iter()
            .enumerate()
            .map(|(k, (_, pk))| (k as u32, *pk))
            .collect(),
    );
    let roster = keys.roster()?;
    let threshold = ((roster.len() / 2 + 1).max(2)).min(roster.len()) as u8;
    agree_masks(trainers, &assignments, &ready, &keys, threshold, task)?;
    clock.lap(obs, "secagg_setup");
    // Train and mask. Every slice of the round is verified under the policy of the
    // task's admission: resolve that verifier once.
    let verifier = m.verifier_for(&adm.envelope)?;
    let global_hash = model_hash(&st.model)?;
    let mut bundles = Vec::new();
    let mut dropped = Vec::new();
    let mut recorded: BTreeSet<VaultId> = BTreeSet::new();
    // A Vault may drop out now that the masks are agreed and the shares dealt: its
    // update never arrives. The others train in parallel (each in its own enclave);
    // their bundles are then verified and recorded one by one in roster order, so
    // the masters' log is the same as when they trained one after another.
    let drops: Vec<bool> = ready
        .iter()
        .map(|(i, _)| tap.drops_out(round, trainers[*i].vault_id()))
        .collect();
    let working: Vec<usize> = ready
        .iter()
        .zip(&drops)
        .filter(|(_, d)| !**d)
        .map(|((i, _), _)| *i)
        .collect();
    let working_endpoints: Vec<&dyn TrainingEndpoint> =
        working.iter().map(|i| trainers[*i]).collect();
    let mut trained = in_parallel(&working_endpoints, |w, t| {
        let mut audited = Vec::new();
        t.train_round(
            &assignments[working[w]],
            &st.model,
            &global_hash,
            &keys,
            &mut |words| audited = words.to_vec(),
        )
        .map(|b| (b, audited))
    })
    .into_iter();
    for (k, (i, _)) in ready.iter().enumerate() {
        let vault_id = trainers[*i].vault_id().clone();
        let a = &assignments[*i];
        if drops[k] {
            obs.step(
                "slice_dropped",
                &format!("{vault_id}: no update after the masks were agreed"),
            );
            dropped.push(ParticipantId(k as u32));
            // Failure before execution releases the round's reservation (seed 002).
            trainers[*i].train_release_round(task, round)?;
            m.masters.submit(timed_out(task, round, &vault_id))?;
            recorded.insert(vault_id);
            continue;
        }
        let res = trained
            .next()
            .unwrap_or_else(|| Err(refused("no update from the Vault")))
            .and_then(|(b, audited)| {
                tap.vault_update(round, &vault_id, &audited);
                let ev = check_slice(&verifier, adm, a, &global_hash, &b)?;
                Ok((b, ev))
            });
        clock.lap(obs, "train_and_verify");
        let record = slice_record(st, &vault_id, k, res, &mut bundles, &mut dropped, obs);
        m.masters.submit(Command::RecordRoundSlice {
            task_id: task.clone(),
            round,
            vault_id: vault_id.clone(),
            record,
        })?;
        recorded.insert(vault_id);
        clock.lap(obs, "record_slices");
    }
    for v in participating.iter().filter(|v| !recorded.contains(*v)) {
        m.masters.submit(timed_out(task, round, v))?;
    }
    let recovery = recovery_shares(trainers, &ready, &dropped, task);
    let n_params = st.model.n_parameters();
    let vaults = bundles.len() as u32;
    // The round's payout, scheduled in its dispatch epoch's payout set as it closes:
    // its compute + aggregation fee, split by the policy's fee shares over the
    // round's own contributions.
    let fee_shares = round_fee_shares(adm, &bundles)?;
    // What reaches the aggregation runtime: masked vectors only.
    let inputs: Vec<(VaultId, &[u32])> = bundles
        .iter()
        .map(|(_, b)| (b.body.slice_id.vault.clone(), b.body.masked.as_slice()))
        .collect();
    let dropped_vaults: Vec<VaultId> = dropped
        .iter()
        .filter_map(|d| ready.get(d.0 as usize))
        .map(|(i, _)| trainers[*i].vault_id().clone())
        .collect();
    tap.aggregation_inputs(round, &inputs, &dropped_vaults);
    clock.lap(obs, "record_slices");
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
        n_params,
        at_ms,
    )?;
    verify_evidence(&verifier, &adm.envelope, &agg.evidence, "aggregation").map_err(refused)?;
    tap.aggregate_sum(round, &agg.sum);
    clock.lap(obs, "aggregate");
    let summary = close_round(m, adm, spec, st, round, epoch, agg, vaults, fee_shares)?;
    clock.lap(obs, "round_close");
    obs.round(&summary, spec.iteration_policy.max_rounds);
    st.summaries.push(summary);
    Ok(())
}

/// The end of a round: the aggregate applied to the global model, the round's ε
/// composed in the accountant, the round closed in the masters' state with its
/// payout, and its summary.
#[allow(clippy::too_many_arguments)]
fn close_round(
    m: &mut MasterServices,
    adm: &Admitted,
    spec: &TrainingSpec,
    st: &mut RunState,
    round: u32,
    epoch: EpochId,
    agg: super::aggregation::RoundAggregate,
    vaults: u32,
    fee_shares: std::collections::BTreeMap<String, u64>,
) -> Result<RoundSummary, NodeError> {
    let task = &adm.task_id;
    st.evidence.push(agg.evidence.clone());
    let metrics = agg.metrics;
    let (train_loss, holdout_loss, examples) =
        (metrics.train_loss, metrics.holdout_loss, metrics.examples);
    st.snapshots.push(st.model.clone());
    st.model.add(&agg.update)?;
    let eps = adm
        .schedule
        .get(round as usize)
        .copied()
        .unwrap_or(Epsilon::ZERO);
    super::control::compose_round(
        &mut st.accountant,
        spec.dp_sgd.sampling_rate,
        spec.dp_sgd.noise_multiplier,
        spec.dp_sgd.local_steps,
    )?;
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
            enclave_kind: agg.evidence.attestation.kind(),
        },
        fee_shares,
    })?;
    st.holdout.push(super::control::HeldOut::released(
        holdout_loss,
        metrics.holdout_examples,
    ));
    st.vaults_per_round.push(vaults);
    let summary = RoundSummary {
        round,
        epoch_id: epoch.0,
        vaults,
        examples,
        train_loss,
        holdout_loss,
        holdout_examples: metrics.holdout_examples,
        epsilon_round_micro: eps.micro,
        epsilon_cumulative: cumulative,
    };
    Ok(summary)
}

/// The coordinator's record of a Vault slice that never returned in `round`.
fn timed_out(task: &TaskId, round: u32, vault_id: &VaultId) -> Command {
    Command::RecordRoundSlice {
        task_id: task.clone(),
        round,
        vault_id: vault_id.clone(),
        record: RoundSliceRecord {
            state: SliceState::TimedOut,
            commitment: Digest::default(),
            epsilon_committed_micro: 0,
            enclave_kind: None,
        },
    }
}

/// What the masters record of one Vault's slice: verified (its work and data
/// counted, its bundle kept for aggregation) or failed (dropped from the sum).
fn slice_record(
    st: &mut RunState,
    vault_id: &VaultId,
    k: usize,
    res: Result<(super::vault::TrainSliceBundle, SliceEvidence), NodeError>,
    bundles: &mut Vec<(ParticipantId, super::vault::TrainSliceBundle)>,
    dropped: &mut Vec<ParticipantId>,
    obs: &mut dyn TrainObserver,
) -> RoundSliceRecord {
    match res {
        Ok((b, ev)) => {
            *st.contributor.entry(vault_id.clone()).or_default() += b
                .body
                .subjects_used
                .saturating_mul(b.body.epsilon_committed_micro / 1000);
            *st.served.entry(vault_id.clone()).or_default() += b.body.subjects_used;
            *st.verified_slices.entry(vault_id.clone()).or_default() += 1;
            st.evidence.push(ev);
            let r = RoundSliceRecord {
                state: SliceState::Verified,
                commitment: b.commitment,
                epsilon_committed_micro: b.body.epsilon_committed_micro,
                enclave_kind: Some(b.attestation.kind()),
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
                epsilon_committed_micro: 0,
                enclave_kind: None,
            }
        }
    }
}

/// Dropout recovery: the survivors (`ready` minus `dropped`, in roster order) hand
/// the aggregator their shares of each dropped Vault's round secret.
fn recovery_shares(
    trainers: &[&dyn TrainingEndpoint],
    ready: &[(usize, [u8; 32])],
    dropped: &[ParticipantId],
    task: &TaskId,
) -> Vec<(ParticipantId, ParticipantId, SecretShare)> {
    let mut recovery = Vec::new();
    for d in dropped {
        for (k, (i, _)) in ready.iter().enumerate() {
            if dropped.contains(&ParticipantId(k as u32)) {
                continue;
            }
            if let Ok(Some(s)) = trainers[*i].train_recovery_share(task, *d) {
                recovery.push((*d, ParticipantId(k as u32), s.share));
            }
        }
    }
    recovery
}

/// Opens `round` in `epoch`, or in the epoch now open if a close committed between
/// reading the epoch and opening the round (a governance proposal does not wait for
/// the worker): the round is dispatched in the epoch it opens in, which is returned.
fn open_round(
    m: &mut MasterServices,
    task: &TaskId,
    round: u32,
    mut epoch: EpochId,
) -> Result<EpochId, NodeError> {
    loop {
        match m.masters.submit(Command::OpenRound {
            task_id: task.clone(),
            round,
            epoch_id: epoch,
        }) {
            Ok(_) => return Ok(epoch),
            Err(_) if m.masters.state().current_epoch() != epoch => {
                epoch = m.masters.state().current_epoch();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Secure aggregation setup among the prepared Vaults (`ready`: index into
/// `trainers`, in roster order): each learns its roster id, then deals Shamir
/// shares of its round secret to the others for dropout recovery.
fn agree_masks(
    trainers: &[&dyn TrainingEndpoint],
    assignments: &[RoundAssignment],
    ready: &[(usize, [u8; 32])],
    keys: &RosterKeys,
    threshold: u8,
    task: &TaskId,
) -> Result<(), NodeError> {
    for (k, (i, _)) in ready.iter().enumerate() {
        trainers[*i].train_set_participant_id(ParticipantId(k as u32), &assignments[*i])?;
    }
    for (i, _) in ready {
        for share in trainers[*i].train_deal_shares(keys, threshold, &assignments[*i])? {
            if let Some((j, _)) = ready.get(share.holder.0 as usize) {
                trainers[*j].train_hold_share(task, share)?;
            }
        }
    }
    Ok(())
}

/// A Vault's slice bundle checked against its commitment and inputs, then its
/// attestation verified under the admission's policy: the slice's evidence.
fn check_slice(
    verifier: &symphony_enclave::SoftwareAttestationVerifier,
    adm: &Admitted,
    a: &RoundAssignment,
    global_hash: &Digest,
    b: &super::vault::TrainSliceBundle,
) -> Result<SliceEvidence, NodeError> {
    let body_ok = content_hash("scp/train-slice/v1", &b.body).ok() == Some(b.commitment)
        && b.inputs_commitment == super::vault::slice_inputs_commitment(a, global_hash)
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
    verify_evidence(verifier, &adm.envelope, &ev, a.slice_id.vault.as_str()).map_err(refused)?;
    Ok(ev)
}

/// `f(index, endpoint)` over every endpoint, each on its own thread (one Vault's
/// enclave work does not wait for another's), the answers in the endpoints' order.
fn in_parallel<T: Send>(
    endpoints: &[&dyn TrainingEndpoint],
    f: impl Fn(usize, &dyn TrainingEndpoint) -> Result<T, NodeError> + Sync,
) -> Vec<Result<T, NodeError>> {
    if endpoints.len() < 2 {
        return endpoints
            .iter()
            .enumerate()
            .map(|(i, t)| f(i, *t))
            .collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = endpoints
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = &f;
                scope.spawn(move || f(i, *t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(refused("the Vault's worker thread panicked")))
            })
            .collect()
    })
}

/// A round's payout by recipient: its fee (`per_round_vault_compute_fee` per
/// verified slice + `per_round_aggregation_fee`, as the train formula prices a
/// round) distributed by the policy's fee shares over the round's contributions:
/// each verified slice's data (records × ε) and records served, one work unit per
/// verified slice and one for the aggregating master, one decision per master.
fn round_fee_shares(
    adm: &Admitted,
    bundles: &[(ParticipantId, super::vault::TrainSliceBundle)],
) -> Result<std::collections::BTreeMap<String, u64>, NodeError> {
    let tp = &adm.prices.prices.train;
    let fee = tp
        .per_round_vault_compute_fee_micro_sym
        .saturating_mul(bundles.len() as u64)
        .saturating_add(tp.per_round_aggregation_fee_micro_sym);
    let op = |v: &VaultId| ActorId::new(format!("operator:{v}")).map_err(refused);
    let mut report = symphony_economics::ContributionReport {
        data_contributor_weight_by_vault: Vec::new(),
        records_served_by_operator: Vec::new(),
        verified_work_by_executor: Vec::new(),
        decisions_by_verifier: (0..3)
            .map(|i| ActorId::new(format!("master-{i}")).map(|a| (a, 1u64)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?,
    };
    for (_, b) in bundles {
        let v = &b.body.slice_id.vault;
        report.data_contributor_weight_by_vault.push((
            v.clone(),
            b.body
                .subjects_used
                .saturating_mul(b.body.epsilon_committed_micro / 1000),
        ));
        report
            .records_served_by_operator
            .push((op(v)?, b.body.subjects_used));
        report.verified_work_by_executor.push((op(v)?, 1));
    }
    report
        .verified_work_by_executor
        .push((ActorId::new("master-0").map_err(refused)?, 1));
    let dist = symphony_economics::distribute_fee(fee, &adm.prices.fee_shares, &report)
        .map_err(refused)?;
    Ok(super::settle::named_payouts(&dist)?.0)
}
