//! # symphony-economics
//!
//! The economics of SCP as pure functions: policy parameters and their versions,
//! pricing per task class, the exact fee split, data usage dividends with the staking
//! multiplier, the bootstrap inflation schedule, enterprise credits, staking tiers
//! and graduated slashing.
//!
//! Architecture Invariant: no IO, no clock, no randomness; every amount is an integer
//! in base units computed with checked (or provably bounded `u128`) arithmetic; every
//! split sums exactly to its total and says so with a check, not a hope.
//!
//! Seed map:
//! - [`policy`], [`registry`]: 002 "Protocol Configuration" (policy version, epoch,
//!   determinism), 002 "Governance".
//! - [`pricing`]: 002 "How SYM is Spent", 000 "Economic Flow — Budget Lock",
//!   003 "Economic Flow — Fee Calculation".
//! - [`fees`], [`split`], [`contribution`]: 000 "Fee Distribution on Settlement", 003 "Fee Distribution",
//!   003 "Reward Accounting".
//! - [`rewards`]: 000 "Data Usage Dividends", 002 "How SYM is Earned", 002 "Token
//!   Supply", 002 "Node Architecture" (enterprise credits).
//! - [`staking`]: 002 "Node Architecture", 002 "Governance" (three tiers, graduated
//!   slashing).
//!
//! ## Units
//!
//! 1 SYM = 10⁶ micro-SYM ([`SYM_DECIMALS`] = 6); every amount is a `u64` of micro-SYM
//! and its name ends in `_micro_sym`. `u64` holds 1.8 × 10¹³ SYM, far above any
//! supply. ε is `symphony_core::Epsilon` (micro-ε). Fractions are basis points.
//!
//! ## DECISIONS (rules the seeds are silent on)
//!
//! Defaults are those of [`PolicyParams::default_v1`]:
//! - **Decimals**: 6 (micro-SYM), matching the `fee_micro_sym` naming of STYLE.md.
//! - **Query**: base 1 SYM; per Vault 0.5 SYM; per record 0.01 SYM; per ε 10 SYM.
//! - **Compute**: base 2 SYM; per compute unit 0.001 SYM; per data-volume unit
//!   (1 000 records read, rounded up) 0.1 SYM; per ε 10 SYM.
//! - **Train**: base 50 SYM; per round per Vault compute 2 SYM; per round aggregation
//!   1 SYM; per ε 20 SYM (training ε is priced higher: it is spent over many rounds
//!   and models can memorize). Prices do not vary by usage scope in v1.
//! - **Parse**: free, always (not a parameter).
//! - **ε rounding**: `ε × per_ε` rounds **up** to a micro-SYM.
//! - **Estimate vs actual**: the escrow lock is the formula at the envelope's caps;
//!   settlement charges `min(actual, estimate)` and refunds the rest; an overrun is
//!   clamped and flagged (`SettledFee::clamped`), never charged.
//! - **Fee shares**: Data Contributors 45%, Vault Operators 20%, Executors 20%,
//!   Verifiers 7.5%, Treasury 7.5% (contributors favoured within 30–50%; the others
//!   mid-range). Validation: each inside its seed range and Σ = 10 000 bp exactly.
//! - **Rounding of splits**: largest remainder; ties to the earlier class
//!   (contributors, operators, executors, verifiers, treasury) or the smaller id.
//! - **Empty class**: a class with no weighted recipient forwards its share to the
//!   Treasury.
//! - **Class weights**: contributors per Vault by Σ records × micro-ε; operators by
//!   records served (storage commitment not yet weighted); executors by verified
//!   compute units of slices + aggregation steps; verifiers one unit per decision.
//!   Unverified (timed-out, failed) slices earn nothing.
//! - **Rejection before execution**: the submitter pays the class's base fee (capped
//!   at the escrow) and gets the rest back ([`pricing::rejection_fee`]).
//! - **Reward pool**: what unstaked producers forgo is returned to the epoch reward
//!   pool, which the settlement plane adds to the epoch's node operation rewards.
//! - **Staking**: S_master 1 000 000 SYM, S_enterprise 100 000 SYM, S_producer 100
//!   SYM; unstaked producer multiplier 50% (seed), rounded **down** with the
//!   remainder to the epoch reward pool; unbonding 168 epochs (7 days).
//! - **Slashing**: minor 1% (unavailability), major 10% (confirmed invalid result,
//!   faulty verification), critical 50% (sovereignty violation; equivocation by a
//!   master); each earlier offence within 720 epochs (30 days) doubles the fraction,
//!   capped at 100%. Destination of slashed stake: left to the settlement ledger.
//! - **Privacy**: default `minimum_result_cardinality` 50; per-subject capacity per
//!   epoch personal 10 ε, marketing 1 ε, analytics 2 ε, training 4 ε; replenishment
//!   per epoch personal 10, marketing 0.25, analytics 0.5, training 1 ε; ε per query
//!   0.1.
//! - **Epochs**: 1 hour (8 760 per inflation year of 365 days; the length must divide
//!   the year); challenge window 10 minutes.
//! - **Inflation**: year index = epoch / epochs_per_year from genesis epoch 0; rates
//!   8%, 5%, 3%, 1.5%, 0% for years 0–4, 0% after. Annual amount = ⌊supply at year
//!   start × rate⌋; epoch k mints ⌊A(k+1)/E⌋ − ⌊Ak/E⌋ (exact yearly total).
//! - **Enterprise credits**: 10% of a Vault's fee earnings become credit; credit pays
//!   at most 50% of one of the enterprise's own task fees; the Treasury funds it.
//! - **Attestation**: version 1 accepts every enclave kind (the software enclave
//!   included: the devnet and demos run it) and every TCB status but `Revoked`, with
//!   collateral up to 30 days old; a production network approves a policy that
//!   accepts only `sgx`/`tdx`, `UpToDate`/`SWHardeningNeeded`, 7 days, pinned
//!   measurements ([`AttestationPolicy::production`]). A task is verified under the
//!   policy of its admission.
//! - **Policy activation**: a version proposed in epoch e activates at ≥ e + 1, and
//!   strictly after every earlier version's activation; resolving a version at an
//!   epoch before its activation is an error.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod attestation;
pub mod contribution;
pub mod error;
pub mod fees;
pub mod policy;
pub mod pricing;
pub mod quality;
pub mod registry;
pub mod rewards;
pub mod split;
pub mod staking;

pub use attestation::{AttestationPolicy, KindRefused};
pub use contribution::{contribution_report, AggregationWork, SliceWork};
pub use error::EconomicsError;
pub use fees::{
    distribute_fee, split_fee_by_class, ClassSplit, ContributionReport, FeeDistribution, Payout,
    Recipient, RecipientClass,
};
pub use policy::{FeeShares, PolicyParams};
pub use pricing::{estimate_fee, settle_fee, task_fee, SettledFee, TaskUsage};
pub use registry::{PolicyRecord, PolicyRegistry, ResolvedParams};
pub use rewards::{inflation_mint_for_epoch, vault_dividends, CreditBalance, VaultDividends};
pub use split::split_by_weights;
pub use staking::{slash, Offence, Severity, SlashOutcome, StakeTier};

/// Decimal places of SYM.
pub const SYM_DECIMALS: u32 = 6;
/// Base units (micro-SYM) per SYM.
pub const MICRO_SYM_PER_SYM: u64 = 1_000_000;

/// An amount of base units as people read it: SYM with thousands separators and no
/// trailing zeros (`54 SYM`, `6.3 SYM`, `0.245053 SYM`, `1,234,567.5 SYM`). Exact:
/// integer arithmetic only (machines get µSYM in `--json`).
pub fn format_sym(micro: u64) -> String {
    let (whole, frac) = (micro / MICRO_SYM_PER_SYM, micro % MICRO_SYM_PER_SYM);
    let digits = whole.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac == 0 {
        format!("{grouped} SYM")
    } else {
        let f = format!("{frac:06}");
        format!("{grouped}.{} SYM", f.trim_end_matches('0'))
    }
}
