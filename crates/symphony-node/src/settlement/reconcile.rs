//! Reconciliation of the settlement plane against the ledger (`symphony ledger
//! reconcile`): every finalized settlement was paid exactly once, nothing was paid
//! for a settlement that is not final, every per-epoch payout set is on the ledger
//! with the same hash, every kept dividend distribution rebuilds the root and total
//! the ledger committed (and its claims are its leaves, paying at most its total),
//! and the ledger's balances equal the sum of its events.

use std::collections::BTreeMap;

use serde::Serialize;
use symphony_core::lifecycle::SettlementState;
use symphony_ledger::{LedgerEvent, PayoutSource, ReconcileReport, SettlementLedger};

use super::dividends::{check_distributions, DistributionCheck};
use super::{PayoutPhase, SettlementStore};
use crate::NodeError;

/// What reconciliation proved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementReconcileReport {
    /// Ledger events replayed.
    pub ledger_events: u64,
    /// Accounts with a balance.
    pub accounts: usize,
    /// Payouts on the ledger (each executed exactly once).
    pub ledger_payouts: usize,
    /// Total supply.
    pub total_supply: String,
    /// Genesis + minted − burned.
    pub genesis_supply: u64,
    /// Minted by inflation.
    pub minted_total: u64,
    /// Settlement rows seen.
    pub settlements: usize,
    /// Finalized settlements, each paid exactly once.
    pub settlements_finalized: usize,
    /// Per-epoch payout sets matched against the ledger.
    pub epoch_payout_sets: usize,
    /// Epochs with payouts.
    pub epochs: Vec<u64>,
    /// Vault dividends committed as Merkle distributions: each rebuilt from its
    /// kept leaves, its claims checked against them.
    pub distributions: DistributionCheck,
}

const PAGE: usize = 4096;

/// Payout id → every `(source, set hash, total)` the ledger executed under it.
type LedgerPayouts = BTreeMap<String, Vec<(PayoutSource, [u8; 32], u64)>>;

/// The ledger's payouts, and the distributions it committed (id, source).
fn ledger_payouts(
    ledger: &dyn SettlementLedger,
) -> Result<(LedgerPayouts, Vec<(String, PayoutSource)>), NodeError> {
    let mut out = LedgerPayouts::new();
    let mut distributions = Vec::new();
    let mut from = 0u64;
    loop {
        let page = ledger
            .events(from, PAGE)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        let Some((last, _)) = page.last() else { break };
        let next = last.saturating_add(1);
        for (_, e) in &page {
            if let LedgerEvent::PayoutExecuted {
                payout_id,
                source,
                set_hash,
                total,
                ..
            } = e
            {
                out.entry(payout_id.to_string()).or_default().push((
                    source.clone(),
                    *set_hash,
                    *total,
                ));
            }
            if let LedgerEvent::DistributionCommitted {
                distribution_id,
                source,
                ..
            } = e
            {
                distributions.push((distribution_id.to_string(), source.clone()));
            }
        }
        if page.len() < PAGE {
            break;
        }
        from = next;
    }
    Ok((out, distributions))
}

fn fail(m: String) -> NodeError {
    NodeError::Refused(format!("reconcile: {m}"))
}

/// Checks the settlement store against the ledger; an error names the first
/// discrepancy.
pub fn reconcile_settlements(
    store: &SettlementStore,
    ledger: &dyn SettlementLedger,
) -> Result<SettlementReconcileReport, NodeError> {
    let report: ReconcileReport = ledger
        .reconcile()
        .map_err(|e| fail(format!("ledger: {e}")))?;
    let (payouts, committed) = ledger_payouts(ledger)?;
    if let Some((id, _)) = payouts.iter().find(|(_, v)| v.len() != 1) {
        return Err(fail(format!("payout {id} executed more than once")));
    }
    let rows = store.rows()?;
    let mut finalized = 0;
    for row in &rows {
        let set = &row.candidate.escrow_set;
        let id = set.payout_id.to_string();
        let paid = row.state == SettlementState::Finalized
            || (row.state == SettlementState::Finalizing && row.phase >= PayoutPhase::EscrowPaid);
        match (paid, payouts.get(&id).and_then(|v| v.first())) {
            (true, Some((source, hash, total))) => {
                let expected_hash = set.hash().map_err(|e| fail(e.to_string()))?;
                if source != &PayoutSource::Escrow(row.escrow_id.clone())
                    || hash != &expected_hash
                    || *total != row.candidate.fee_total
                {
                    return Err(fail(format!(
                        "settlement {} was paid with a different set",
                        row.task_id
                    )));
                }
                if row.state == SettlementState::Finalized {
                    let escrow = ledger
                        .escrow(&row.escrow_id)
                        .ok_or_else(|| fail(format!("escrow {} missing", row.escrow_id)))?;
                    if escrow.remaining() != 0
                        || escrow.paid_out != row.candidate.fee_total
                        || escrow.refunded != row.candidate.refund
                    {
                        return Err(fail(format!(
                            "escrow {} of finalized {} is not paid {} + refunded {}",
                            row.escrow_id,
                            row.task_id,
                            row.candidate.fee_total,
                            row.candidate.refund
                        )));
                    }
                    finalized += 1;
                }
            }
            (true, None) => {
                return Err(fail(format!(
                    "finalized settlement {} was never paid",
                    row.task_id
                )))
            }
            (false, Some(_)) => {
                return Err(fail(format!(
                    "settlement {} ({}) was paid before finality",
                    row.task_id, row.state
                )))
            }
            (false, None) => {}
        }
    }
    let sets = store.all_epoch_payouts()?;
    let mut epochs: Vec<u64> = sets.iter().map(|s| s.epoch_id).collect();
    epochs.dedup();
    for set in &sets {
        let hash = set.hash().map_err(|e| fail(e.to_string()))?;
        match payouts.get(set.payout_id.as_str()).and_then(|v| v.first()) {
            Some((_, h, _)) if *h == hash => {}
            _ => {
                return Err(fail(format!(
                    "epoch {} payout {} is not on the ledger as recorded",
                    set.epoch_id, set.payout_id
                )))
            }
        }
    }
    for (id, v) in &payouts {
        let is_escrow = matches!(v.first(), Some((PayoutSource::Escrow(_), _, _)));
        if is_escrow && !sets.iter().any(|s| s.payout_id.as_str() == id) {
            return Err(fail(format!(
                "escrow payout {id} has no settlement or rejection record"
            )));
        }
    }
    let distributions = check_distributions(store, ledger).map_err(fail)?;
    check_dividend_payments(store, &rows, &sets, &committed)?;
    Ok(SettlementReconcileReport {
        ledger_events: report.events,
        accounts: report.accounts,
        ledger_payouts: report.payouts,
        total_supply: report.total_supply.to_string(),
        genesis_supply: report.genesis_supply,
        minted_total: report.minted_total,
        settlements: rows.len(),
        settlements_finalized: finalized,
        epoch_payout_sets: sets.len(),
        epochs,
        distributions,
    })
}

/// A kept distribution counts as its Vault's dividend payment for its task: the
/// task was finalized, the distribution pays that Vault's share, the Vault did not
/// also pay the task with payout sets, and its reward pool set is in the epoch's
/// group. Every distribution the ledger committed from a Vault's dividend account
/// is kept (else no proof could ever be built for it).
fn check_dividend_payments(
    store: &SettlementStore,
    rows: &[super::SettlementRow],
    sets: &[symphony_ledger::PayoutInstructionSet],
    committed: &[(String, PayoutSource)],
) -> Result<(), NodeError> {
    let kept = store.distributions()?;
    for d in &kept {
        let id = &d.distribution_id;
        let row = rows
            .iter()
            .find(|r| r.task_id == d.task_id)
            .filter(|r| r.state == SettlementState::Finalized)
            .ok_or_else(|| {
                fail(format!(
                    "distribution {id} pays {}, not finalized",
                    d.task_id
                ))
            })?;
        let share = row
            .candidate
            .fee_shares
            .get(&format!("contributors:{}", d.vault))
            .copied()
            .unwrap_or(0);
        if share != d.share_micro_sym || d.epoch_id != row.epoch_id.0 {
            return Err(fail(format!(
                "distribution {id} pays {} µSYM in epoch {}; the settlement of {} owes vault {} \
                 {share} µSYM in epoch {}",
                d.share_micro_sym, d.epoch_id, d.task_id, d.vault, row.epoch_id.0
            )));
        }
        let direct = format!("dividends-{}-{}-", d.task_id, d.vault);
        let paid_as_sets = sets.iter().any(|s| {
            s.payout_id
                .as_str()
                .strip_prefix(direct.as_str())
                .is_some_and(|i| i.parse::<u64>().is_ok())
        });
        if paid_as_sets {
            return Err(fail(format!(
                "vault {} paid the dividend of {} twice: as distribution {id} and as payout sets",
                d.vault, d.task_id
            )));
        }
        if let Some(pool) = &d.pool_set {
            if !sets.iter().any(|s| s == pool) {
                return Err(fail(format!(
                    "distribution {id}: its reward pool payout {} is not in epoch {}'s group",
                    pool.payout_id, pool.epoch_id
                )));
            }
        }
    }
    for (id, source) in committed {
        let from_vault = matches!(
            source,
            PayoutSource::Account(a) if a.as_str().starts_with("vault-dividends:")
        );
        if from_vault && !kept.iter().any(|d| &d.distribution_id == id) {
            return Err(fail(format!(
                "distribution {id} was committed from a Vault's dividend account but its \
                 leaves are not kept"
            )));
        }
    }
    Ok(())
}

/// Opens `DIR/ledger.redb` and `DIR/settlement.redb` (an empty in-memory store
/// when the directory has none).
pub fn open_dir(
    dir: &std::path::Path,
) -> Result<(symphony_ledger::RedbLedger, SettlementStore), NodeError> {
    let ledger_path = dir.join("ledger.redb");
    if !ledger_path.exists() {
        return Err(NodeError::Io(format!(
            "{} does not exist (run `symphony demo luckin --dir {}` first)",
            ledger_path.display(),
            dir.display()
        )));
    }
    let ledger = symphony_ledger::RedbLedger::open(&ledger_path)
        .map_err(|e| NodeError::Ledger(e.to_string()))?;
    let store_path = dir.join("settlement.redb");
    let store = if store_path.exists() {
        SettlementStore::open(store_path)?
    } else {
        SettlementStore::in_memory()?
    };
    Ok((ledger, store))
}

/// Reconciles `DIR/ledger.redb` against `DIR/settlement.redb`.
pub fn reconcile_dir(dir: &std::path::Path) -> Result<SettlementReconcileReport, NodeError> {
    let (ledger, store) = open_dir(dir)?;
    reconcile_settlements(&store, &ledger)
}
