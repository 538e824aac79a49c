//! Staking tiers and graduated slashing (seed 002 "Node Architecture", "Governance":
//! "three-tier staking (`S_master`, `S_enterprise`, `S_producer`) with graduated
//! slashing"). The grades and the offence table are our choice (see `DECISIONS`).
//!
//! Rule: `fraction = min(100%, base(severity) × 2^repeats)`, where `repeats` counts
//! the actor's earlier offences inside `repeat_window_epochs`; the slashed amount is
//! `⌊stake × fraction⌋`, so it never exceeds the stake.

use serde::{Deserialize, Serialize};
use symphony_core::EpochId;

use crate::error::EconomicsError;
use crate::policy::{SlashingSchedule, StakingParams, BP_WHOLE};

/// The three staking tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StakeTier {
    /// Master node (`S_master`).
    Master,
    /// Enterprise node (`S_enterprise`).
    Enterprise,
    /// Data producer (`S_producer`, optional: unstaked producers get 50%).
    Producer,
}

/// The stake a tier requires.
pub fn required_stake_micro_sym(tier: StakeTier, staking: &StakingParams) -> u64 {
    match tier {
        StakeTier::Master => staking.s_master_micro_sym,
        StakeTier::Enterprise => staking.s_enterprise_micro_sym,
        StakeTier::Producer => staking.s_producer_micro_sym,
    }
}

/// The epoch at which an unbonding requested in `requested_in` can be withdrawn.
pub fn unbonding_complete_epoch(
    requested_in: EpochId,
    staking: &StakingParams,
) -> Result<EpochId, EconomicsError> {
    requested_in
        .0
        .checked_add(staking.unbonding_epochs)
        .map(EpochId)
        .ok_or(EconomicsError::Overflow {
            what: "unbonding epoch",
        })
}

/// Severity grades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Liveness faults.
    Minor,
    /// Provably wrong work.
    Major,
    /// Safety or sovereignty violations.
    Critical,
}

/// Slashable offences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offence {
    /// An authorized slice or duty not delivered before its deadline. Minor.
    Unavailability,
    /// A challenge against the actor's result was confirmed. Major.
    InvalidResult,
    /// A verifier approved a result later confirmed invalid. Major.
    FaultyVerification,
    /// Records served without consent, beyond budget, or outside an attested enclave. Critical.
    SovereigntyViolation,
    /// A master signed two conflicting commit certificates. Critical.
    Equivocation,
}

impl Offence {
    /// The severity grade of the offence.
    pub fn severity(self) -> Severity {
        match self {
            Offence::Unavailability => Severity::Minor,
            Offence::InvalidResult | Offence::FaultyVerification => Severity::Major,
            Offence::SovereigntyViolation | Offence::Equivocation => Severity::Critical,
        }
    }
}

/// The result of one slashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashOutcome {
    /// The grade applied.
    pub severity: Severity,
    /// Earlier offences counted inside the window.
    pub repeat_count: u32,
    /// Fraction slashed, bp.
    pub fraction_bp: u16,
    /// Amount slashed. Invariant: ≤ stake.
    pub slashed_micro_sym: u64,
    /// Stake left.
    pub remaining_micro_sym: u64,
}

/// The fraction for a grade after `repeat_count` earlier offences.
pub fn slash_fraction_bp(
    schedule: &SlashingSchedule,
    severity: Severity,
    repeat_count: u32,
) -> u16 {
    let base = match severity {
        Severity::Minor => schedule.minor_bp,
        Severity::Major => schedule.major_bp,
        Severity::Critical => schedule.critical_bp,
    };
    // 2^14 × 10 000 > 10 000 already, so capping the shift keeps this in u64.
    let scaled = u64::from(base) << repeat_count.min(14);
    u16::try_from(scaled.min(u64::from(BP_WHOLE))).unwrap_or(BP_WHOLE)
}

/// Slashes `stake` for `offence` committed in `now`, given the epochs of the
/// actor's earlier offences (those in `now − window < e ≤ now` count as repeats).
pub fn slash(
    stake_micro_sym: u64,
    offence: Offence,
    prior_offence_epochs: &[EpochId],
    now: EpochId,
    schedule: &SlashingSchedule,
) -> SlashOutcome {
    let repeats = prior_offence_epochs
        .iter()
        .filter(|e| e.0 <= now.0 && now.0 - e.0 < schedule.repeat_window_epochs)
        .count();
    let repeat_count = u32::try_from(repeats).unwrap_or(u32::MAX);
    let severity = offence.severity();
    let fraction_bp = slash_fraction_bp(schedule, severity, repeat_count);
    let slashed = u128::from(stake_micro_sym) * u128::from(fraction_bp) / u128::from(BP_WHOLE);
    // fraction ≤ 100%, so slashed ≤ stake.
    let slashed_micro_sym = u64::try_from(slashed)
        .unwrap_or(stake_micro_sym)
        .min(stake_micro_sym);
    SlashOutcome {
        severity,
        repeat_count,
        fraction_bp,
        slashed_micro_sym,
        remaining_micro_sym: stake_micro_sym - slashed_micro_sym,
    }
}
