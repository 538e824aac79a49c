//! Settlement of an accepted run by the train formula, paid after 2-of-3 finality;
//! each round's payout was scheduled in its dispatch epoch's payout set at its close
//! (the parent's payout is the rest; the escrow pays all of it in its one payout);
//! each round then settles in its dispatch epoch, and the composite settlement links
//! every round's settlement under the parent (seed 003 "Settlement Timing";
//! [`link_composite`], stored with `SettlementStore::put_composite`).

use std::collections::BTreeMap;

use symphony_core::budget::Epsilon;
use symphony_core::encoding::content_hash;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SettlementState, TaskEvent};
use symphony_economics::pricing::TrainUsage;
use symphony_economics::{distribute_fee, settle_fee, ContributionReport, Recipient, TaskUsage};
use symphony_ledger::{EscrowId, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind};
use symphony_master::{Command, MasterState, RoundSliceRecord, SettlementRecord};

use super::admission::Admitted;
use super::coordinator::{advance, refused, RunState};
use super::outcome::{TrainObserver, TrainOutcome};
use crate::network::MasterServices;
use crate::settlement::{
    link_composite, verify_composite, CompositeSettlement, SettlementStore, SubTaskSettlementRef,
};
use crate::NodeError;

/// Tag of a round's settlement hash.
pub const ROUND_SETTLEMENT_TAG: &str = "scp/train-round-settlement/v1";

/// The settlements of a training task's settled rounds, as its composite links them,
/// rebuilt from the replicated master state (so anyone holding the state replays
/// them). A round's settlement hash covers its sub-task, dispatch epoch and fee, its
/// aggregate record (aggregate commitment, model hash, examples, ε), every slice's
/// record (state, commitment, examples, ε committed) and the parent's payout set id.
pub fn round_settlement_refs(
    state: &MasterState,
    task: &TaskId,
) -> Result<Vec<SubTaskSettlementRef>, NodeError> {
    let c = state
        .composite(task)
        .ok_or_else(|| refused(format!("{task} has no rounds")))?;
    let payout = format!("payout-{task}");
    let mut out = Vec::with_capacity(c.round_settlements.len());
    for (round, (epoch, fee)) in &c.round_settlements {
        let record = c
            .rounds
            .get(round)
            .ok_or_else(|| refused(format!("round {round} settled without an aggregate")))?;
        let slices: Vec<(&VaultId, &RoundSliceRecord)> = c
            .slices
            .iter()
            .filter(|((r, _), _)| r == round)
            .map(|((_, v), s)| (v, s))
            .collect();
        let sub_task = SubTaskId {
            parent: task.clone(),
            round: *round,
        };
        let settlement_hash = content_hash(
            ROUND_SETTLEMENT_TAG,
            &(&sub_task, epoch, fee, record, &slices, &payout),
        )
        .map_err(|e| NodeError::Encoding(e.to_string()))?;
        out.push(SubTaskSettlementRef {
            sub_task,
            epoch_id: *epoch,
            fee_total: *fee,
            settlement_hash,
        });
    }
    Ok(out)
}

/// The composite settlement of a training task: [`link_composite`] over its rounds'
/// settlements ([`round_settlement_refs`]).
pub fn composite_settlement(
    state: &MasterState,
    task: &TaskId,
) -> Result<CompositeSettlement, NodeError> {
    link_composite(task, round_settlement_refs(state, task)?)
}

fn settlement_store(m: &mut MasterServices) -> Result<&SettlementStore, NodeError> {
    if m.settlements.is_none() {
        m.settlements = Some(SettlementStore::in_memory()?);
    }
    m.settlements
        .as_ref()
        .ok_or_else(|| NodeError::Io("no settlement store".into()))
}

/// A fee distribution as recipient name → µSYM (`contributors:<vault>`,
/// `actor:<actor>`, `treasury`) and its ledger instructions.
pub(super) fn named_payouts(
    dist: &symphony_economics::FeeDistribution,
) -> Result<(BTreeMap<String, u64>, Vec<PayoutInstruction>), NodeError> {
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
        let slot = shares.entry(name.clone()).or_default();
        *slot = slot
            .checked_add(p.amount_micro_sym)
            .ok_or_else(|| refused("fee shares overflow"))?;
        instructions.push(PayoutInstruction {
            recipient: crate::settlement::rewards::share_account(&name)?,
            amount: p.amount_micro_sym,
            kind,
        });
    }
    Ok((shares, instructions))
}

pub(super) fn settle(
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
    // The rounds' payouts, scheduled in their dispatch epochs' payout sets as the
    // rounds closed: part of the charge; the parent's own payout is the rest.
    let round_payouts: Vec<(u32, symphony_master::RoundPayout)> = m
        .masters
        .state()
        .composite(task)
        .map(|c| {
            c.round_payouts
                .iter()
                .map(|(r, p)| (*r, p.clone()))
                .collect()
        })
        .unwrap_or_default();
    let rounds_total = round_payouts
        .iter()
        .try_fold(0u64, |acc, (_, p)| acc.checked_add(p.fee_micro_sym))
        .ok_or_else(|| refused("round payouts overflow"))?;
    // The rounds are paid whatever the formula's clamp to the estimate (the masters
    // never let them exceed the escrow lock).
    let charged = settled.charged_micro_sym.max(rounds_total);
    let refund = adm
        .estimate
        .checked_sub(charged)
        .ok_or_else(|| refused("round payouts exceed the escrowed estimate"))?;
    let op = |v: &VaultId| ActorId::new(format!("operator:{v}")).map_err(refused);
    let mut executors = Vec::new();
    let mut served = Vec::new();
    for (v, n) in &st.served {
        served.push((op(v)?, *n));
    }
    // A Vault that timed out or failed in a round gets no reward for that round's
    // slice (seed 003 "Reward Accounting").
    for (v, n) in &st.verified_slices {
        executors.push((op(v)?, *n));
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
        charged - rounds_total,
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
    let (mut shares, mut instructions) = named_payouts(&dist)?;
    // The settlement's shares cover the rounds' payouts too; the ledger pays the
    // whole charge out of the escrow once (one payout per escrow), at finalizing.
    for (_, p) in &round_payouts {
        for (name, amount) in &p.fee_shares {
            let slot = shares.entry(name.clone()).or_default();
            *slot = slot
                .checked_add(*amount)
                .ok_or_else(|| refused("fee shares overflow"))?;
            instructions.push(PayoutInstruction {
                recipient: crate::settlement::rewards::share_account(name)?,
                amount: *amount,
                kind: crate::settlement::rewards::payout_kind_of(name),
            });
        }
    }
    let mut state = SettlementState::Collecting;
    loop {
        let record = SettlementRecord {
            state,
            epoch_id: adm.envelope.body().epoch_id,
            fee_total: charged,
            fee_shares: shares.clone(),
            refund,
        };
        let (record_fee, record_refund) = (record.fee_total, record.refund);
        let committed = m.masters.submit(Command::RecordSettlement {
            task_id: task.clone(),
            record,
        })?;
        obs.step(
            &format!("settlement:{state}"),
            &format!(
                "{} charged, {} refunded",
                symphony_economics::format_sym(record_fee),
                symphony_economics::format_sym(record_refund)
            ),
        );
        if state == SettlementState::Finalizing {
            if !committed.certificate.is_final(&m.masters.master_keys()) {
                return Err(refused("commit certificate not final; payout withheld"));
            }
            let escrow = EscrowId::new(adm.escrow_id.clone())
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
            // The payout is in the payout set of the epoch open at `finalizing`.
            let payout_epoch = crate::settlement::payout_epoch(&committed.events, task)
                .unwrap_or(adm.envelope.body().epoch_id);
            let set = PayoutInstructionSet {
                payout_id: PayoutId::new(format!("payout-{task}"))
                    .map_err(|e| NodeError::Ledger(e.to_string()))?,
                epoch_id: payout_epoch.0,
                settlement_ref: task.to_string(),
                instructions: instructions.clone(),
            };
            m.ledger
                .payout(&escrow, &set)
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
            settlement_store(m)?.append_epoch_payout(&set)?;
            if refund > 0 {
                m.ledger
                    .refund(&escrow, refund)
                    .map_err(|e| NodeError::Ledger(e.to_string()))?;
            }
        }
        match state.advance() {
            Ok(next) => state = next,
            Err(_) => break,
        }
    }
    // Each round settles in its dispatch epoch for the compute + aggregation fee
    // its close scheduled there.
    for (round, p) in &round_payouts {
        m.masters.submit(Command::SettleRound {
            task_id: task.clone(),
            round: *round,
            fee_micro_sym: p.fee_micro_sym,
        })?;
        // The composite link grows as the rounds settle.
        let composite = composite_settlement(m.masters.state(), task)?;
        settlement_store(m)?.put_composite(&composite)?;
    }
    let composite = composite_settlement(m.masters.state(), task)?;
    let settled_rounds = st.vaults_per_round.len();
    if composite.sub_tasks.len() != settled_rounds || !verify_composite(&composite) {
        return Err(refused(format!(
            "composite settlement of {task} does not link its {settled_rounds} rounds"
        )));
    }
    let epochs: std::collections::BTreeSet<u64> =
        composite.sub_tasks.iter().map(|s| s.epoch_id.0).collect();
    obs.step(
        "settlement:composite",
        &format!(
            "{} round settlements in epochs {:?} linked ({} µSYM): {}",
            composite.sub_tasks.len(),
            epochs,
            composite.fee_total,
            &composite.link.to_hex()[..16]
        ),
    );
    out.composite_link = Some(composite.link.to_hex());
    advance(m, task, TaskEvent::SettlementFinalized, None, obs)?;
    out.fee_total = charged;
    out.refund = refund;
    out.fee_shares = shares;
    out.settlement_state = Some(SettlementState::Finalized.to_string());
    Ok(())
}
