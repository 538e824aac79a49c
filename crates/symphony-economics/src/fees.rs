//! Fee distribution on settlement (seed 000 "Fee Distribution on Settlement"; seed 003
//! "Fee Distribution", "Reward Accounting").
//!
//! Two exact steps, both by [`split_by_weights`]:
//! 1. the fee splits into the five recipient classes by the policy's basis points;
//! 2. each class share splits among its recipients by weight:
//!    - Data Contributors: per **Vault**, by the Vault's reported usage weight
//!      (Σ records × micro-ε consumed against its subjects); the Vault then runs
//!      [`crate::rewards::vault_dividends`] locally (seed 000 "Data Usage Dividends" 4);
//!    - Vault Operators: by records served;
//!    - Executors: by verified work units (per-Vault slices + aggregation; a slice
//!      that timed out or failed contributes nothing — seed 003);
//!    - Verifiers: by verification decisions;
//!    - Protocol Treasury: one recipient.
//!
//! A class with no weighted recipient (e.g. no verifier decisions) forwards its share
//! to the Protocol Treasury, so the distribution still sums to the fee.

use std::fmt;

use serde::{Deserialize, Serialize};
use symphony_core::{ActorId, VaultId};

use crate::error::EconomicsError;
use crate::policy::FeeShares;
use crate::split::split_by_weights;

/// The five recipient classes, in canonical order (the tie-break order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientClass {
    /// Data Contributors (30–50%).
    DataContributors,
    /// Vault Operators (15–25%).
    VaultOperators,
    /// Executors (15–25%).
    Executors,
    /// Verifiers (5–10%).
    Verifiers,
    /// Protocol Treasury (5–10%).
    Treasury,
}

impl RecipientClass {
    /// Every class, canonical order.
    pub const ALL: [RecipientClass; 5] = [
        RecipientClass::DataContributors,
        RecipientClass::VaultOperators,
        RecipientClass::Executors,
        RecipientClass::Verifiers,
        RecipientClass::Treasury,
    ];
}

impl fmt::Display for RecipientClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecipientClass::DataContributors => "data_contributors",
            RecipientClass::VaultOperators => "vault_operators",
            RecipientClass::Executors => "executors",
            RecipientClass::Verifiers => "verifiers",
            RecipientClass::Treasury => "treasury",
        })
    }
}

/// A fee split into the five classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSplit {
    /// Data Contributors.
    pub data_contributors_micro_sym: u64,
    /// Vault Operators.
    pub vault_operators_micro_sym: u64,
    /// Executors.
    pub executors_micro_sym: u64,
    /// Verifiers.
    pub verifiers_micro_sym: u64,
    /// Protocol Treasury.
    pub treasury_micro_sym: u64,
}

impl ClassSplit {
    /// The share of one class.
    pub fn get(&self, class: RecipientClass) -> u64 {
        match class {
            RecipientClass::DataContributors => self.data_contributors_micro_sym,
            RecipientClass::VaultOperators => self.vault_operators_micro_sym,
            RecipientClass::Executors => self.executors_micro_sym,
            RecipientClass::Verifiers => self.verifiers_micro_sym,
            RecipientClass::Treasury => self.treasury_micro_sym,
        }
    }

    /// Σ of the five shares (u128: cannot overflow).
    pub fn total(&self) -> u128 {
        RecipientClass::ALL
            .iter()
            .map(|&c| u128::from(self.get(c)))
            .sum()
    }
}

/// Splits `fee` into the five classes by `shares` (largest remainder; ties to the
/// earlier class). Each share is within one base unit of `fee × bp / 10 000`.
pub fn split_fee_by_class(
    fee_micro_sym: u64,
    shares: &FeeShares,
) -> Result<ClassSplit, EconomicsError> {
    shares.validate()?;
    let weights: Vec<(RecipientClass, u64)> = RecipientClass::ALL
        .iter()
        .zip(shares.as_array())
        .map(|(&c, bp)| (c, u64::from(bp)))
        .collect();
    let parts = split_by_weights(fee_micro_sym, &weights, "fee split by class")?;
    let get = |c: RecipientClass| {
        parts
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, amount)| *amount)
    };
    Ok(ClassSplit {
        data_contributors_micro_sym: get(RecipientClass::DataContributors),
        vault_operators_micro_sym: get(RecipientClass::VaultOperators),
        executors_micro_sym: get(RecipientClass::Executors),
        verifiers_micro_sym: get(RecipientClass::Verifiers),
        treasury_micro_sym: get(RecipientClass::Treasury),
    })
}

/// Who receives a payout line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The data-contributor pool of a Vault; the Vault splits it among its producers.
    VaultContributors(VaultId),
    /// A protocol actor (Vault operator, executor, verifier).
    Actor(ActorId),
    /// The Protocol Treasury.
    Treasury,
}

/// One line of a fee distribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    /// The class whose share this line comes from.
    pub class: RecipientClass,
    /// The receiver.
    pub recipient: Recipient,
    /// The amount.
    pub amount_micro_sym: u64,
}

/// What each recipient contributed to a settled task (the weights of step 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionReport {
    /// Per Vault: Σ records used × micro-ε consumed, as the Vault reports it.
    pub data_contributor_weight_by_vault: Vec<(VaultId, u64)>,
    /// Per Vault operator: records served.
    pub records_served_by_operator: Vec<(ActorId, u64)>,
    /// Per executor: verified work units (slices + aggregation).
    pub verified_work_by_executor: Vec<(ActorId, u64)>,
    /// Per verifier: verification decisions.
    pub decisions_by_verifier: Vec<(ActorId, u64)>,
}

/// A fee distributed to its recipients. Invariant: Σ payouts = fee (checked at
/// construction; fields are private so it cannot be broken afterwards).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeDistribution {
    fee_micro_sym: u64,
    payouts: Vec<Payout>,
}

impl FeeDistribution {
    /// Builds a distribution, refusing one whose payouts do not sum to `fee`.
    pub fn new(fee_micro_sym: u64, payouts: Vec<Payout>) -> Result<Self, EconomicsError> {
        let actual: u128 = payouts.iter().map(|p| u128::from(p.amount_micro_sym)).sum();
        if actual != u128::from(fee_micro_sym) {
            return Err(EconomicsError::SumMismatch {
                what: "fee distribution",
                expected: fee_micro_sym,
                actual,
            });
        }
        Ok(FeeDistribution {
            fee_micro_sym,
            payouts,
        })
    }

    /// The fee distributed.
    pub fn fee_micro_sym(&self) -> u64 {
        self.fee_micro_sym
    }

    /// The payout lines: class order, then recipient order.
    pub fn payouts(&self) -> &[Payout] {
        &self.payouts
    }

    /// Σ paid to one class's lines (including a share forwarded to the treasury).
    pub fn class_total(&self, class: RecipientClass) -> u64 {
        self.payouts
            .iter()
            .filter(|p| p.class == class)
            .map(|p| p.amount_micro_sym)
            .sum()
    }
}

fn class_lines<K: Ord + Clone + fmt::Display>(
    class: RecipientClass,
    share: u64,
    weights: &[(K, u64)],
    to_recipient: impl Fn(K) -> Recipient,
    out: &mut Vec<Payout>,
) -> Result<(), EconomicsError> {
    let total_weight: u128 = weights.iter().map(|(_, w)| u128::from(*w)).sum();
    if total_weight == 0 {
        if share > 0 {
            out.push(Payout {
                class,
                recipient: Recipient::Treasury,
                amount_micro_sym: share,
            });
        }
        return Ok(());
    }
    for (k, amount) in split_by_weights(share, weights, "class share by weight")? {
        out.push(Payout {
            class,
            recipient: to_recipient(k),
            amount_micro_sym: amount,
        });
    }
    Ok(())
}

/// Distributes a settled fee: classes by `shares`, then recipients by `report`.
pub fn distribute_fee(
    fee_micro_sym: u64,
    shares: &FeeShares,
    report: &ContributionReport,
) -> Result<FeeDistribution, EconomicsError> {
    let split = split_fee_by_class(fee_micro_sym, shares)?;
    let mut out = Vec::new();
    class_lines(
        RecipientClass::DataContributors,
        split.data_contributors_micro_sym,
        &report.data_contributor_weight_by_vault,
        Recipient::VaultContributors,
        &mut out,
    )?;
    class_lines(
        RecipientClass::VaultOperators,
        split.vault_operators_micro_sym,
        &report.records_served_by_operator,
        Recipient::Actor,
        &mut out,
    )?;
    class_lines(
        RecipientClass::Executors,
        split.executors_micro_sym,
        &report.verified_work_by_executor,
        Recipient::Actor,
        &mut out,
    )?;
    class_lines(
        RecipientClass::Verifiers,
        split.verifiers_micro_sym,
        &report.decisions_by_verifier,
        Recipient::Actor,
        &mut out,
    )?;
    if split.treasury_micro_sym > 0 {
        out.push(Payout {
            class: RecipientClass::Treasury,
            recipient: Recipient::Treasury,
            amount_micro_sym: split.treasury_micro_sym,
        });
    }
    FeeDistribution::new(fee_micro_sym, out)
}
