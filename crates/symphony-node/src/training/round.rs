//! One round (sub-task) of the Multi-Vault Coordinator: open, prepare, agree masks
//! and deal shares, train and mask in each Vault, verify and record slices, recover
//! dropped Vaults, aggregate, update the global model and close the round.

use std::collections::BTreeSet;

use symphony_core::budget::Epsilon;
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::ids::*;
use symphony_core::lifecycle::SliceState;
use symphony_master::{Command, RoundRecord, RoundSliceRecord};
use symphony_train::secagg::ParticipantId;

use super::admission::Admitted;
use super::aggregation::aggregate;
use super::coordinator::{assignment, micro, model_hash, refused, RunState};
use super::endpoint::{RosterKeys, TrainingEndpoint};
use super::model::train_err;
use super::outcome::{RoundSummary, TrainObserver};
use super::spec::TrainingSpec;
use super::tap::RoundTap;
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
    let mut epoch = epoch;
    loop {
        match m.masters.submit(Command::OpenRound {
            task_id: task.clone(),
            round,
            epoch_id: epoch,
        }) {
            Ok(_) => break,
            // A close committed between reading the epoch and opening the round
            // (a governance proposal does not wait for the worker): the round is
            // dispatched in the epoch now open.
            Err(_) if m.masters.state().current_epoch() != epoch => {
                epoch = m.masters.state().current_epoch();
            }
            Err(e) => return Err(e.into()),
        }
    }
    let participating: Vec<VaultId> = adm
        .envelope
        .body()
        .coordination_envelope
        .participating_vault_ids
        .iter()
        .cloned()
        .collect();
    clock.lap(obs, "round_open");
    // Prepare: per-Vault feature construction in the enclaves.
    // The Vaults work in parallel; their answers are taken in roster order.
    let prepared = in_parallel(trainers, |t| {
        t.train_prepare_round(&assignment(adm, spec, t.vault_id(), round, at_ms, seed))
    });
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
    for (k, (i, _)) in ready.iter().enumerate() {
        let a = assignment(adm, spec, trainers[*i].vault_id(), round, at_ms, seed);
        trainers[*i].train_set_participant_id(ParticipantId(k as u32), &a)?;
    }
    for (i, _) in &ready {
        let a = assignment(adm, spec, trainers[*i].vault_id(), round, at_ms, seed);
        for share in trainers[*i].train_deal_shares(&keys, threshold, &a)? {
            if let Some((j, _)) = ready.get(share.holder.0 as usize) {
                trainers[*j].train_hold_share(task, share)?;
            }
        }
    }
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
    let working: Vec<&dyn TrainingEndpoint> = ready
        .iter()
        .zip(&drops)
        .filter(|(_, d)| !**d)
        .map(|((i, _), _)| trainers[*i])
        .collect();
    let mut trained = in_parallel(&working, |t| {
        let a = assignment(adm, spec, t.vault_id(), round, at_ms, seed);
        let mut audited = Vec::new();
        t.train_round(&a, &st.model, &global_hash, &keys, &mut |w| {
            audited = w.to_vec()
        })
        .map(|b| (b, audited))
    })
    .into_iter();
    for (k, (i, _)) in ready.iter().enumerate() {
        let vault_id = trainers[*i].vault_id().clone();
        let a = assignment(adm, spec, &vault_id, round, at_ms, seed);
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
                verify_evidence(&verifier, &adm.envelope, &ev, vault_id.as_str())
                    .map_err(refused)?;
                Ok((b, ev))
            });
        clock.lap(obs, "train_and_verify");
        let record = match res {
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
        };
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
    // Dropout recovery: survivors hand the aggregator their shares of dropped Vaults.
    let mut recovery = Vec::new();
    for d in &dropped {
        for (k, (i, _)) in ready.iter().enumerate() {
            if dropped.contains(&ParticipantId(k as u32)) {
                continue;
            }
            if let Ok(Some(s)) = trainers[*i].train_recovery_share(task, *d) {
                recovery.push((*d, ParticipantId(k as u32), s.share));
            }
        }
    }
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
    clock.lap(obs, "round_close");
    obs.round(&summary, spec.iteration_policy.max_rounds);
    st.summaries.push(summary);
    Ok(())
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

/// `f` over every endpoint, each on its own thread (one Vault's enclave work does
/// not wait for another's), the answers in the endpoints' order.
fn in_parallel<T: Send>(
    endpoints: &[&dyn TrainingEndpoint],
    f: impl Fn(&dyn TrainingEndpoint) -> Result<T, NodeError> + Sync,
) -> Vec<Result<T, NodeError>> {
    if endpoints.len() < 2 {
        return endpoints.iter().map(|t| f(*t)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = endpoints
            .iter()
            .map(|t| {
                let f = &f;
                scope.spawn(move || f(*t))
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
