//! Pricing per task class (seed 002 "How SYM is Spent"; seed 000 "Budget Lock";
//! seed 003 "Fee Calculation").
//!
//! - `parse`: free (the protocol absorbs the cost);
//! - `query = base + n_vaults × per_vault + n_records × per_record + ε × per_ε`;
//! - `compute = base + compute_units × per_unit + data_volume_units × per_volume + ε × per_ε`;
//! - `train = base + Σ_rounds(per_vault_compute × vaults_in_round + aggregation) + total_ε × per_ε`.
//!
//! ε is fixed point (micro-ε); `ε × per_ε` is rounded **up** to a whole micro-SYM so
//! a positive privacy spend is never priced at zero.
//!
//! The same formula gives the **estimate** (from the TaskEnvelope's caps, locked in
//! escrow at admission) and the **actual** (from measured counts at settlement).
//! [`settle_fee`] charges `min(actual, estimate)` and refunds the rest: the escrow is
//! the submitter's ceiling, so an overrun (a bug or a cap violation upstream) is
//! clamped and flagged rather than charged.

use serde::{Deserialize, Serialize};
use symphony_core::{Epsilon, TaskClass};

use crate::error::EconomicsError;
use crate::policy::{ComputePrices, PriceTable, QueryPrices, TrainPrices};

/// Records per data-volume unit of a `compute` task.
pub const RECORDS_PER_DATA_VOLUME_UNIT: u64 = 1_000;

/// What a `query` uses (caps for the estimate, measured counts for the actual).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryUsage {
    /// Participating Vaults.
    pub n_vaults: u32,
    /// Records returned (estimate: the audience cap).
    pub n_records: u64,
    /// ε consumed.
    pub epsilon: Epsilon,
}

/// What a `compute` task uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeUsage {
    /// Metered compute units.
    pub compute_units: u64,
    /// Data-volume units, see [`data_volume_units`].
    pub data_volume_units: u64,
    /// ε consumed.
    pub epsilon: Epsilon,
}

/// What a `train` task uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainUsage {
    /// Vaults that contributed a verified slice, per round (actual) or the
    /// authorized Vaults per round (estimate). A Vault that timed out in a round is
    /// not counted in that round's actual.
    pub vaults_per_round: Vec<u32>,
    /// Cumulative ε across all rounds.
    pub total_epsilon: Epsilon,
}

impl TrainUsage {
    /// `rounds` rounds with the same `vaults` each.
    pub fn uniform(rounds: u32, vaults: u32, total_epsilon: Epsilon) -> Self {
        TrainUsage {
            vaults_per_round: vec![vaults; rounds as usize],
            total_epsilon,
        }
    }
}

/// Usage of a task of any class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskUsage {
    /// `parse`: free.
    Parse,
    /// `query`.
    Query(QueryUsage),
    /// `compute`.
    Compute(ComputeUsage),
    /// `train`.
    Train(TrainUsage),
}

impl TaskUsage {
    /// The task class.
    pub fn class(&self) -> TaskClass {
        match self {
            TaskUsage::Parse => TaskClass::Parse,
            TaskUsage::Query(_) => TaskClass::Query,
            TaskUsage::Compute(_) => TaskClass::Compute,
            TaskUsage::Train(_) => TaskClass::Train,
        }
    }
}

fn overflow(what: &'static str) -> EconomicsError {
    EconomicsError::Overflow { what }
}

fn mul(a: u64, b: u64, what: &'static str) -> Result<u64, EconomicsError> {
    a.checked_mul(b).ok_or_else(|| overflow(what))
}

fn sum(parts: &[u64], what: &'static str) -> Result<u64, EconomicsError> {
    parts
        .iter()
        .try_fold(0u64, |acc, &p| acc.checked_add(p))
        .ok_or_else(|| overflow(what))
}

/// Data-volume units for `records_read` records: rounded up.
pub fn data_volume_units(records_read: u64) -> u64 {
    records_read.div_ceil(RECORDS_PER_DATA_VOLUME_UNIT)
}

/// `⌈ε × per_epsilon_fee⌉` in micro-SYM (ε in micro-ε, price per whole ε).
pub fn epsilon_fee(
    epsilon: Epsilon,
    per_epsilon_fee_micro_sym: u64,
) -> Result<u64, EconomicsError> {
    let product = u128::from(epsilon.micro) * u128::from(per_epsilon_fee_micro_sym);
    let fee = product.div_ceil(u128::from(Epsilon::SCALE));
    u64::try_from(fee).map_err(|_| overflow("epsilon fee"))
}

/// The `query` fee.
pub fn query_fee(p: &QueryPrices, u: &QueryUsage) -> Result<u64, EconomicsError> {
    sum(
        &[
            p.base_fee_micro_sym,
            mul(
                u64::from(u.n_vaults),
                p.per_vault_fee_micro_sym,
                "query vault fee",
            )?,
            mul(u.n_records, p.per_record_fee_micro_sym, "query record fee")?,
            epsilon_fee(u.epsilon, p.per_epsilon_fee_micro_sym)?,
        ],
        "query fee",
    )
}

/// The `compute` fee.
pub fn compute_fee(p: &ComputePrices, u: &ComputeUsage) -> Result<u64, EconomicsError> {
    sum(
        &[
            p.base_fee_micro_sym,
            mul(
                u.compute_units,
                p.per_compute_unit_fee_micro_sym,
                "compute unit fee",
            )?,
            mul(
                u.data_volume_units,
                p.per_data_volume_unit_fee_micro_sym,
                "compute data volume fee",
            )?,
            epsilon_fee(u.epsilon, p.per_epsilon_fee_micro_sym)?,
        ],
        "compute fee",
    )
}

/// The `train` fee: `base + Σ_rounds(per_vault_compute × vaults + aggregation) + total ε × per ε`.
pub fn train_fee(p: &TrainPrices, u: &TrainUsage) -> Result<u64, EconomicsError> {
    let mut rounds_total: u64 = 0;
    for &vaults in &u.vaults_per_round {
        let round_compute = mul(
            u64::from(vaults),
            p.per_round_vault_compute_fee_micro_sym,
            "train round compute fee",
        )?;
        let round = sum(
            &[round_compute, p.per_round_aggregation_fee_micro_sym],
            "train round fee",
        )?;
        rounds_total = sum(&[rounds_total, round], "train rounds fee")?;
    }
    sum(
        &[
            p.base_fee_micro_sym,
            rounds_total,
            epsilon_fee(u.total_epsilon, p.per_epsilon_fee_micro_sym)?,
        ],
        "train fee",
    )
}

/// The fee of any task class; `parse` is 0.
pub fn task_fee(prices: &PriceTable, usage: &TaskUsage) -> Result<u64, EconomicsError> {
    match usage {
        TaskUsage::Parse => Ok(0),
        TaskUsage::Query(u) => query_fee(&prices.query, u),
        TaskUsage::Compute(u) => compute_fee(&prices.compute, u),
        TaskUsage::Train(u) => train_fee(&prices.train, u),
    }
}

/// The escrow lock at admission: the fee at the envelope's caps.
pub fn estimate_fee(prices: &PriceTable, caps: &TaskUsage) -> Result<u64, EconomicsError> {
    task_fee(prices, caps)
}

/// The outcome of pricing measured usage against the escrowed estimate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledFee {
    /// The escrowed estimate.
    pub estimate_micro_sym: u64,
    /// The formula applied to the measured usage, before clamping.
    pub actual_micro_sym: u64,
    /// What the submitter pays: `min(actual, estimate)`.
    pub charged_micro_sym: u64,
    /// Returned to the submitter: `estimate − charged`.
    pub refund_micro_sym: u64,
    /// True if the actual exceeded the estimate and was clamped (flag for audit).
    pub clamped: bool,
}

/// Prices the measured usage and clamps it to the escrowed estimate.
/// Invariant: `charged + refund == estimate`.
pub fn settle_fee(
    prices: &PriceTable,
    estimate_micro_sym: u64,
    actual: &TaskUsage,
) -> Result<SettledFee, EconomicsError> {
    let actual_micro_sym = task_fee(prices, actual)?;
    let charged_micro_sym = actual_micro_sym.min(estimate_micro_sym);
    Ok(SettledFee {
        estimate_micro_sym,
        actual_micro_sym,
        charged_micro_sym,
        refund_micro_sym: estimate_micro_sym - charged_micro_sym,
        clamped: actual_micro_sym > estimate_micro_sym,
    })
}

/// A task rejected before execution: the submitter pays the class's base fee
/// (covering admission work), capped at the escrow, and is refunded the rest.
/// `parse` costs nothing.
pub fn rejection_fee(prices: &PriceTable, class: TaskClass, estimate_micro_sym: u64) -> SettledFee {
    let base = match class {
        TaskClass::Parse => 0,
        TaskClass::Query => prices.query.base_fee_micro_sym,
        TaskClass::Compute => prices.compute.base_fee_micro_sym,
        TaskClass::Train => prices.train.base_fee_micro_sym,
    };
    let charged_micro_sym = base.min(estimate_micro_sym);
    SettledFee {
        estimate_micro_sym,
        actual_micro_sym: base,
        charged_micro_sym,
        refund_micro_sym: estimate_micro_sym - charged_micro_sym,
        clamped: base > estimate_micro_sym,
    }
}
