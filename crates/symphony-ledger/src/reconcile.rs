//! Reconciliation: the event log is the source of truth for the stored state.

use std::collections::BTreeMap;

use crate::engine::replay;
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::state::LedgerState;
use crate::types::{DistributionId, PayoutId};

/// What a successful reconciliation checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Events replayed.
    pub events: u64,
    /// Accounts with a non-zero balance.
    pub accounts: usize,
    /// Payouts executed (each exactly once).
    pub payouts: usize,
    /// Merkle distributions committed.
    pub distributions: usize,
    /// Leaves claimed across them.
    pub claims: usize,
    /// Balances + escrows + stakes.
    pub total_supply: u128,
    /// Genesis supply.
    pub genesis_supply: u64,
    /// Minted by inflation.
    pub minted_total: u64,
    /// Burned.
    pub burned_total: u64,
}

/// Why reconciliation failed: the stored state or log is inconsistent (a bug or
/// corruption, never a user error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The log does not start with genesis.
    #[error("event log does not start with genesis")]
    MissingGenesis,
    /// An event does not apply during replay.
    #[error("event {index} does not replay: {error}")]
    Replay {
        /// Index in the log.
        index: usize,
        /// Why.
        error: LedgerError,
    },
    /// Replayed and stored state differ.
    #[error("stored {table} differ from replay at key {key}")]
    StateMismatch {
        /// Which table.
        table: &'static str,
        /// First differing key.
        key: String,
    },
    /// A payout id appears more than once in the log.
    #[error("payout {0} executed more than once")]
    DuplicatePayout(String),
    /// The reward lines of a payout do not sum to its total.
    #[error("payout {0}: reward lines do not sum to the total")]
    PayoutLinesMismatch(String),
    /// Total supply ≠ genesis + minted − burned.
    #[error("total supply {found} != expected {expected}")]
    SupplyMismatch {
        /// Expected supply.
        expected: u128,
        /// Actual supply.
        found: u128,
    },
    /// A distribution's paid total or claim count disagrees with its claimed set,
    /// or exceeds what was committed.
    #[error("distribution {0}: paid total or claims disagree with the claimed set")]
    DistributionMismatch(String),
    /// Reading the store failed.
    #[error("storage error while reconciling: {0}")]
    Storage(String),
}

fn first_diff<K: Ord + std::fmt::Display, V: PartialEq>(
    table: &'static str,
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
) -> Result<(), ReconcileError> {
    let key = a
        .iter()
        .find(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.to_string())
        .or_else(|| {
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| k.to_string())
        });
    match key {
        Some(key) => Err(ReconcileError::StateMismatch { table, key }),
        None => Ok(()),
    }
}

/// Replays `events` and checks every invariant against `stored`.
pub(crate) fn reconcile(
    events: &[LedgerEvent],
    stored: &LedgerState,
) -> Result<ReconcileReport, ReconcileError> {
    if !matches!(events.first(), Some(LedgerEvent::GenesisApplied(_))) {
        return Err(ReconcileError::MissingGenesis);
    }
    check_payout_lines(events)?;
    let replayed =
        replay(events).map_err(|(index, error)| ReconcileError::Replay { index, error })?;
    first_diff("balances", &replayed.balances, &stored.balances)?;
    first_diff("escrows", &replayed.escrows, &stored.escrows)?;
    first_diff("stakes", &replayed.stakes, &stored.stakes)?;
    first_diff("payouts", &replayed.payouts, &stored.payouts)?;
    first_diff(
        "distributions",
        &replayed.distributions,
        &stored.distributions,
    )?;
    first_diff("claims", &replayed.claims, &stored.claims)?;
    check_distributions(stored)?;
    if replayed.meta != stored.meta {
        return Err(ReconcileError::StateMismatch {
            table: "meta",
            key: "meta".into(),
        });
    }
    let meta = &stored.meta;
    let expected = u128::from(meta.genesis_supply) + u128::from(meta.minted_total)
        - u128::from(meta.burned_total)
            .min(u128::from(meta.genesis_supply) + u128::from(meta.minted_total));
    let found = stored.total_supply();
    if expected != found {
        return Err(ReconcileError::SupplyMismatch { expected, found });
    }
    Ok(ReconcileReport {
        events: events.len() as u64,
        accounts: stored.balances.len(),
        payouts: stored.payouts.len(),
        distributions: stored.distributions.len(),
        claims: stored.claims.len(),
        total_supply: found,
        genesis_supply: meta.genesis_supply,
        minted_total: meta.minted_total,
        burned_total: meta.burned_total,
    })
}

/// Every payout id appears in exactly one `PayoutExecuted`, immediately followed by its
/// `RewardPaid` lines whose gross amounts sum to the total.
fn check_payout_lines(events: &[LedgerEvent]) -> Result<(), ReconcileError> {
    let mut seen: BTreeMap<&PayoutId, ()> = BTreeMap::new();
    let mut open: Option<(&PayoutId, u64, u128)> = None;
    let close = |open: Option<(&PayoutId, u64, u128)>| match open {
        Some((id, total, sum)) if u128::from(total) != sum => {
            Err(ReconcileError::PayoutLinesMismatch(id.to_string()))
        }
        _ => Ok(()),
    };
    for event in events {
        match event {
            LedgerEvent::PayoutExecuted {
                payout_id, total, ..
            } => {
                close(open.take())?;
                if seen.insert(payout_id, ()).is_some() {
                    return Err(ReconcileError::DuplicatePayout(payout_id.to_string()));
                }
                open = Some((payout_id, *total, 0));
            }
            LedgerEvent::RewardPaid {
                payout_id, gross, ..
            } => match &mut open {
                Some((id, _, sum)) if *id == payout_id => *sum += u128::from(*gross),
                _ => return Err(ReconcileError::PayoutLinesMismatch(payout_id.to_string())),
            },
            _ => close(open.take())?,
        }
    }
    close(open)
}

/// Each distribution's paid total and claim count are the sum and number of its
/// claimed leaves, every claimed index is a leaf, and nothing paid exceeds the total.
fn check_distributions(state: &LedgerState) -> Result<(), ReconcileError> {
    let mut sums: BTreeMap<&DistributionId, (u128, u64)> = BTreeMap::new();
    for (key, claim) in &state.claims {
        let mismatch = || ReconcileError::DistributionMismatch(key.distribution_id.to_string());
        let d = state
            .distributions
            .get(&key.distribution_id)
            .ok_or_else(mismatch)?;
        if key.index >= d.leaves {
            return Err(mismatch());
        }
        let entry = sums.entry(&key.distribution_id).or_default();
        entry.0 += u128::from(claim.amount);
        entry.1 += 1;
    }
    for (id, d) in &state.distributions {
        let (paid, claimed) = sums.get(id).copied().unwrap_or_default();
        if d.paid > d.total || paid != u128::from(d.paid) || claimed != d.claimed {
            return Err(ReconcileError::DistributionMismatch(id.to_string()));
        }
    }
    Ok(())
}
