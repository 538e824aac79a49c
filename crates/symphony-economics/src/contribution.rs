//! Building a [`ContributionReport`] from verified work (seed 003 "Reward
//! Accounting"; seed 000 "Fee Distribution on Settlement").
//!
//! - only **verified** slices earn: a Vault that was authorized but timed out or
//!   failed in a round gets nothing for that round's slices (its operator, its
//!   executor, and its contributors for that slice);
//! - Vault Operators by records served (v1 ignores "storage commitment": no metric
//!   for it exists yet);
//! - Executors by verified compute units of slices plus aggregation steps (the
//!   aggregation executor is paid separately per step, seed 003);
//! - Verifiers one unit per verification decision;
//! - Data Contributors per Vault by the usage weight the Vault reported, for Vaults
//!   with at least one verified slice.
//!
//! Repeated keys are summed with checked arithmetic; the output is sorted by key.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use symphony_core::{ActorId, VaultId};

use crate::error::EconomicsError;
use crate::fees::ContributionReport;
use crate::rewards::VaultUsageTotals;

/// One execution slice as the settlement plane saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceWork {
    /// The Vault that served it.
    pub vault: VaultId,
    /// That Vault's operator.
    pub vault_operator: ActorId,
    /// The executor that ran it.
    pub executor: ActorId,
    /// Whether the slice result was verified (accepted). Timed out / failed = false.
    pub verified: bool,
    /// Records served into the slice.
    pub records_served: u64,
    /// Metered compute units.
    pub compute_units: u64,
}

/// One secure aggregation step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregationWork {
    /// The aggregation executor (e.g. a master node TEE).
    pub executor: ActorId,
    /// Whether the step was verified.
    pub verified: bool,
    /// Metered compute units.
    pub compute_units: u64,
}

fn add(map: &mut BTreeMap<ActorId, u64>, key: &ActorId, w: u64) -> Result<(), EconomicsError> {
    let slot = map.entry(key.clone()).or_insert(0);
    *slot = slot.checked_add(w).ok_or(EconomicsError::Overflow {
        what: "contribution weight",
    })?;
    Ok(())
}

/// Aggregates verified work into the weights of [`crate::fees::distribute_fee`].
pub fn contribution_report(
    vault_totals: &[VaultUsageTotals],
    slices: &[SliceWork],
    aggregations: &[AggregationWork],
    verifier_decisions: &[ActorId],
) -> Result<ContributionReport, EconomicsError> {
    let mut operators = BTreeMap::new();
    let mut executors = BTreeMap::new();
    let mut verifiers = BTreeMap::new();
    let mut verified_vaults = BTreeSet::new();
    for s in slices.iter().filter(|s| s.verified) {
        verified_vaults.insert(s.vault.clone());
        add(&mut operators, &s.vault_operator, s.records_served)?;
        add(&mut executors, &s.executor, s.compute_units)?;
    }
    for a in aggregations.iter().filter(|a| a.verified) {
        add(&mut executors, &a.executor, a.compute_units)?;
    }
    for v in verifier_decisions {
        add(&mut verifiers, v, 1)?;
    }
    let mut contributors: BTreeMap<VaultId, u64> = BTreeMap::new();
    for t in vault_totals
        .iter()
        .filter(|t| verified_vaults.contains(&t.vault))
    {
        let slot = contributors.entry(t.vault.clone()).or_insert(0);
        *slot = slot
            .checked_add(t.usage_weight)
            .ok_or(EconomicsError::Overflow {
                what: "contributor weight",
            })?;
    }
    Ok(ContributionReport {
        data_contributor_weight_by_vault: contributors.into_iter().collect(),
        records_served_by_operator: operators.into_iter().collect(),
        verified_work_by_executor: executors.into_iter().collect(),
        decisions_by_verifier: verifiers.into_iter().collect(),
    })
}
