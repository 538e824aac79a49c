//! Settlement of an accepted run by the train formula, paid after 2-of-3 finality;
//! each round then settles in its dispatch epoch.

use std::collections::BTreeMap;

use symphony_core::budget::Epsilon;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SettlementState, TaskEvent};
use symphony_economics::pricing::TrainUsage;
use symphony_economics::{distribute_fee, settle_fee, ContributionReport, Recipient, TaskUsage};
use symphony_ledger::{EscrowId, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind};
use symphony_master::{Command, SettlementRecord};

use super::admission::Admitted;
use super::coordinator::{advance, refused, RunState};
use super::outcome::{TrainObserver, TrainOutcome};
use crate::network::MasterServices;
use crate::NodeError;

pub(super) fn account(s: String) -> Result<symphony_ledger::AccountId, NodeError> {
    symphony_ledger::AccountId::new(s).map_err(|e| NodeError::Ledger(e.to_string()))
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
