//! Rewards: data usage dividends, the staking multiplier, node operation rewards
//! from inflation, and enterprise data contribution credits.
//!
//! - Seed 000 "Data Usage Dividends": dividends come from the Data Contributor share,
//!   proportional to records used per producer weighted by ε consumed; staked
//!   producers get 100%, unstaked 50% with the rest returned to the epoch reward pool;
//!   attribution is Vault-internal. Here the coordination layer only ever sees a
//!   [`VaultUsageTotals`] (totals + a salted commitment); [`vault_dividends`] is the
//!   function the Vault runs locally over its own producer list.
//! - Seed 002 "Token Supply": inflation 8% → 5% → 3% → 1.5% → 0% over five years,
//!   then 0; see [`inflation_mint_for_epoch`] for the exact integer rule.
//! - Seed 002 "Node Architecture": enterprises accumulate data contribution credits
//!   that offset their own platform usage ([`CreditBalance`]).

use serde::{Deserialize, Serialize};
use symphony_core::{content_hash, ActorId, Digest, EpochId, Epsilon, VaultId};

use crate::error::EconomicsError;
use crate::policy::{PolicyParams, BP_WHOLE};
use crate::split::{split_by_weights, split_indexed};

/// Domain tag of a Vault's usage commitment.
pub const VAULT_USAGE_COMMITMENT_TAG: &str = "scp/vault-usage-commitment/v1";

/// One producer's usage inside a Vault (never leaves the Vault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerUsage {
    /// The data producer (payout account).
    pub producer: ActorId,
    /// Their records used by the task.
    pub records_used: u64,
    /// ε consumed against their data.
    pub epsilon_consumed: Epsilon,
    /// Whether they hold `S_producer` stake.
    pub staked: bool,
}

/// Dividend weight: records used × micro-ε consumed.
pub fn usage_weight(records_used: u64, epsilon_consumed: Epsilon) -> Result<u64, EconomicsError> {
    records_used
        .checked_mul(epsilon_consumed.micro)
        .ok_or(EconomicsError::Overflow {
            what: "usage weight",
        })
}

/// What a Vault reports to the coordination layer: totals and a commitment, never
/// which producer's records were used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultUsageTotals {
    /// The Vault.
    pub vault: VaultId,
    /// Σ records used.
    pub records_used: u64,
    /// Σ usage weight (the Data Contributor weight of this Vault in
    /// [`crate::fees::ContributionReport`]).
    pub usage_weight: u64,
    /// Salted hash of the producer list, for later audit or challenge.
    pub commitment: Digest,
}

/// Computed inside the Vault: the totals it reports. `salt` is the Vault's secret
/// randomness (an input: this crate draws none).
pub fn vault_usage_totals(
    vault: VaultId,
    producers: &[ProducerUsage],
    salt: [u8; 32],
) -> Result<VaultUsageTotals, EconomicsError> {
    let mut records_used: u64 = 0;
    let mut weight: u64 = 0;
    for p in producers {
        let overflow = EconomicsError::Overflow {
            what: "vault usage totals",
        };
        records_used = records_used
            .checked_add(p.records_used)
            .ok_or(overflow.clone())?;
        weight = weight
            .checked_add(usage_weight(p.records_used, p.epsilon_consumed)?)
            .ok_or(overflow)?;
    }
    let commitment =
        content_hash(VAULT_USAGE_COMMITMENT_TAG, &(salt, producers)).map_err(|_| {
            EconomicsError::InvalidParam {
                field: "producers",
                reason: "cannot be encoded canonically",
            }
        })?;
    Ok(VaultUsageTotals {
        vault,
        records_used,
        usage_weight: weight,
        commitment,
    })
}

/// A Vault's contributor share paid out to its producers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultDividends {
    /// Net dividend per producer, sorted by producer.
    pub payouts: Vec<(ActorId, u64)>,
    /// What unstaked producers forgo: returned to the epoch reward pool.
    pub returned_to_pool_micro_sym: u64,
}

impl VaultDividends {
    /// Σ payouts + pool return (u128: cannot overflow).
    pub fn total(&self) -> u128 {
        self.payouts
            .iter()
            .map(|(_, a)| u128::from(*a))
            .sum::<u128>()
            + u128::from(self.returned_to_pool_micro_sym)
    }
}

/// Run by the Vault: splits its contributor share among producers by usage weight,
/// then applies the staking multiplier (staked 100%; unstaked
/// `⌊gross × multiplier_bp / 10 000⌋`, the rest to the pool).
/// Invariant (checked): Σ payouts + pool return = `vault_share`.
pub fn vault_dividends(
    vault_share_micro_sym: u64,
    producers: &[ProducerUsage],
    unstaked_multiplier_bp: u16,
) -> Result<VaultDividends, EconomicsError> {
    let parts = vault_dividend_parts(vault_share_micro_sym, producers, unstaked_multiplier_bp)?;
    let mut payouts = Vec::with_capacity(parts.len());
    let mut pool: u64 = 0;
    for p in parts {
        pool += p.gross - p.net; // Σ ≤ vault_share, cannot overflow
        payouts.push((producers[p.index].producer.clone(), p.net));
    }
    Ok(VaultDividends {
        payouts,
        returned_to_pool_micro_sym: pool,
    })
}

/// One producer's dividend in [`vault_dividend_parts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DividendPart {
    /// The producer's position in the input list.
    pub index: usize,
    /// Its share of the split by usage weight.
    pub gross: u64,
    /// What it is paid after the staking multiplier (≤ gross).
    pub net: u64,
}

/// [`vault_dividends`] without copying a producer: each producer's gross and net
/// dividend, sorted by producer (the order of [`VaultDividends::payouts`]), from one
/// split. The same amounts, errors and invariant (Σ gross = `vault_share`, checked).
pub fn vault_dividend_parts(
    vault_share_micro_sym: u64,
    producers: &[ProducerUsage],
    unstaked_multiplier_bp: u16,
) -> Result<Vec<DividendPart>, EconomicsError> {
    if unstaked_multiplier_bp > BP_WHOLE {
        return Err(EconomicsError::InvalidParam {
            field: "unstaked_multiplier_bp",
            reason: "a fraction may not exceed 10000 bp",
        });
    }
    let weights = producers
        .iter()
        .map(|p| usage_weight(p.records_used, p.epsilon_consumed))
        .collect::<Result<Vec<u64>, _>>()?;
    let gross = split_indexed(
        vault_share_micro_sym,
        producers.len(),
        |i| &producers[i].producer,
        |i| weights[i],
        "vault dividends",
    )?;
    let mut parts = Vec::with_capacity(gross.len());
    let mut total: u128 = 0;
    for (index, gross_amount) in gross {
        // Producers are distinct (the split refuses duplicates): their own flag.
        let net = if producers[index].staked {
            gross_amount
        } else {
            // ≤ gross_amount because multiplier ≤ 10 000; fits u64.
            let scaled = u128::from(gross_amount) * u128::from(unstaked_multiplier_bp)
                / u128::from(BP_WHOLE);
            u64::try_from(scaled).map_err(|_| EconomicsError::Overflow { what: "dividend" })?
        };
        total += u128::from(gross_amount);
        parts.push(DividendPart {
            index,
            gross: gross_amount,
            net,
        });
    }
    if total != u128::from(vault_share_micro_sym) {
        return Err(EconomicsError::SumMismatch {
            what: "vault dividends",
            expected: vault_share_micro_sym,
            actual: total,
        });
    }
    Ok(parts)
}

/// Annual inflation in bp for a year index (0 = first year after genesis); 0 past
/// the end of the schedule.
pub fn annual_inflation_bp(schedule_bp: &[u16], year_index: u64) -> u16 {
    usize::try_from(year_index)
        .ok()
        .and_then(|i| schedule_bp.get(i).copied())
        .unwrap_or(0)
}

/// `(year_index, epoch_in_year)` of an epoch (epoch 0 starts year 0).
pub fn inflation_year(epoch: EpochId, epochs_per_year: u64) -> Result<(u64, u64), EconomicsError> {
    if epochs_per_year == 0 {
        return Err(EconomicsError::InvalidParam {
            field: "epochs_per_year",
            reason: "must be positive",
        });
    }
    Ok((epoch.0 / epochs_per_year, epoch.0 % epochs_per_year))
}

/// SYM minted for node operation rewards in `epoch`.
///
/// The year's amount is `A = ⌊year_start_supply × rate_bp / 10 000⌋` (rounded down:
/// never more than the stated rate); epoch `k` of `E` in the year mints
/// `⌊A(k+1)/E⌋ − ⌊Ak/E⌋`, so the epochs of a year add up to exactly `A` with no
/// drift. `year_start_supply` is the total supply at the first epoch of the year, as
/// the ledger reports it (simple, not per-epoch compounding).
pub fn inflation_mint_for_epoch(
    params: &PolicyParams,
    epoch: EpochId,
    year_start_supply_micro_sym: u64,
) -> Result<u64, EconomicsError> {
    let epochs_per_year = params.epochs.epochs_per_year()?;
    let (year, k) = inflation_year(epoch, epochs_per_year)?;
    let rate = annual_inflation_bp(&params.rewards.inflation_schedule_bp, year);
    let annual = u128::from(year_start_supply_micro_sym) * u128::from(rate) / u128::from(BP_WHOLE);
    let e = u128::from(epochs_per_year);
    let k = u128::from(k);
    let mint = annual * (k + 1) / e - annual * k / e;
    u64::try_from(mint).map_err(|_| EconomicsError::Overflow {
        what: "inflation mint",
    })
}

/// Splits an epoch's minted node operation rewards among nodes by weight (e.g.
/// epochs of verified availability); exact sum.
pub fn node_operation_rewards(
    minted_micro_sym: u64,
    node_weights: &[(ActorId, u64)],
) -> Result<Vec<(ActorId, u64)>, EconomicsError> {
    split_by_weights(minted_micro_sym, node_weights, "node operation rewards")
}

/// An enterprise's data contribution credit balance.
///
/// Rule: its Vault's fee earnings (Vault Operator + Data Contributor lines) earn
/// credit at `enterprise_credit_rate_bp`; on its own tasks it may pay up to
/// `enterprise_credit_max_offset_bp` of the fee from credit. The credited part is
/// funded by the Protocol Treasury (the settlement plane's job), so recipients of
/// that task still receive the full fee split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBalance {
    /// Credit available, in micro-SYM of fee offset.
    pub balance_micro_sym: u64,
}

/// A fee paid partly with credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditApplication {
    /// Paid from credit.
    pub credit_used_micro_sym: u64,
    /// Still to lock in escrow. Invariant: `credit_used + payable = fee`.
    pub payable_micro_sym: u64,
}

impl CreditBalance {
    /// Adds credit for `vault_earnings`; returns the amount credited.
    pub fn earn(
        &mut self,
        vault_earnings_micro_sym: u64,
        rate_bp: u16,
    ) -> Result<u64, EconomicsError> {
        let credit = u128::from(vault_earnings_micro_sym) * u128::from(rate_bp.min(BP_WHOLE))
            / u128::from(BP_WHOLE);
        let credit =
            u64::try_from(credit).map_err(|_| EconomicsError::Overflow { what: "credit" })?;
        self.balance_micro_sym =
            self.balance_micro_sym
                .checked_add(credit)
                .ok_or(EconomicsError::Overflow {
                    what: "credit balance",
                })?;
        Ok(credit)
    }

    /// Pays up to `max_offset_bp` of `fee` from the balance.
    pub fn apply_to_fee(&mut self, fee_micro_sym: u64, max_offset_bp: u16) -> CreditApplication {
        let cap = u128::from(fee_micro_sym) * u128::from(max_offset_bp.min(BP_WHOLE))
            / u128::from(BP_WHOLE);
        // cap ≤ fee, so it fits u64.
        let cap = u64::try_from(cap).unwrap_or(fee_micro_sym);
        let used = cap.min(self.balance_micro_sym);
        self.balance_micro_sym -= used;
        CreditApplication {
            credit_used_micro_sym: used,
            payable_micro_sym: fee_micro_sym - used,
        }
    }
}
