//! `PolicyParams`: every configurable parameter of a `policy_version`.
//!
//! Seed 002 "Protocol Configuration — Policy Version": a policy version captures all
//! configurable protocol parameters (fee rates, privacy thresholds, staking amounts).
//! Seed 000/003 "Economic Flow — Fee Distribution": the five recipient classes and
//! their allowed share ranges. Every default is listed in the crate's `DECISIONS`.
//!
//! All token amounts are `u64` micro-SYM (see [`crate::MICRO_SYM_PER_SYM`]); all
//! fractions are basis points (`_bp`, 10 000 bp = 100%).

use serde::{Deserialize, Serialize};
use symphony_core::Epsilon;

use crate::error::EconomicsError;
use crate::MICRO_SYM_PER_SYM;

/// 100% in basis points.
pub const BP_WHOLE: u16 = 10_000;
/// Milliseconds in a 365-day year (the inflation schedule's "year").
pub const YEAR_MS: u64 = 365 * 24 * 60 * 60 * 1_000;

const fn sym(whole: u64) -> u64 {
    whole * MICRO_SYM_PER_SYM
}

/// Prices of a `query` task (seed 000 "Budget Lock").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPrices {
    /// `base_fee_query`.
    pub base_fee_micro_sym: u64,
    /// `per_vault_fee`, per participating Vault.
    pub per_vault_fee_micro_sym: u64,
    /// `per_record_fee`, per record returned.
    pub per_record_fee_micro_sym: u64,
    /// `per_epsilon_fee`, per whole ε consumed.
    pub per_epsilon_fee_micro_sym: u64,
}

/// Prices of a `compute` task (seed 002 "How SYM is Spent").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputePrices {
    /// Base fee.
    pub base_fee_micro_sym: u64,
    /// Per compute unit (one unit = one metered enclave/VM work unit, reported by the executor).
    pub per_compute_unit_fee_micro_sym: u64,
    /// Per data-volume unit (one unit = 1 000 records read).
    pub per_data_volume_unit_fee_micro_sym: u64,
    /// Per whole ε consumed.
    pub per_epsilon_fee_micro_sym: u64,
}

/// Prices of a `train` task (seed 003 "Fee Calculation").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainPrices {
    /// `base_fee_train`: composite setup, orchestration, verification overhead.
    pub base_fee_micro_sym: u64,
    /// Per-round compute fee per participating Vault (`round_compute_fee` = this × Vaults).
    pub per_round_vault_compute_fee_micro_sym: u64,
    /// `round_aggregation_fee`, per round.
    pub per_round_aggregation_fee_micro_sym: u64,
    /// `per_epsilon_fee`, per whole ε of `total_epsilon`.
    pub per_epsilon_fee_micro_sym: u64,
}

/// The price table of all four classes; `parse` is free (seed 002 "How SYM is Spent").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceTable {
    /// `query` prices.
    pub query: QueryPrices,
    /// `compute` prices.
    pub compute: ComputePrices,
    /// `train` prices.
    pub train: TrainPrices,
}

/// Fee shares of the five recipient classes, in basis points (seed 000 "Fee
/// Distribution on Settlement"): must sum to exactly 10 000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeShares {
    /// Data Contributors, 30–50%.
    pub data_contributors_bp: u16,
    /// Vault Operators, 15–25%.
    pub vault_operators_bp: u16,
    /// Executors, 15–25%.
    pub executors_bp: u16,
    /// Verifiers, 5–10%.
    pub verifiers_bp: u16,
    /// Protocol Treasury, 5–10%.
    pub treasury_bp: u16,
}

/// The seeds' allowed range per class: (field, min_bp, max_bp).
pub const SHARE_RANGES_BP: [(&str, u16, u16); 5] = [
    ("data_contributors_bp", 3_000, 5_000),
    ("vault_operators_bp", 1_500, 2_500),
    ("executors_bp", 1_500, 2_500),
    ("verifiers_bp", 500, 1_000),
    ("treasury_bp", 500, 1_000),
];

impl FeeShares {
    /// The shares in canonical class order (see [`crate::fees::RecipientClass::ALL`]).
    pub fn as_array(&self) -> [u16; 5] {
        [
            self.data_contributors_bp,
            self.vault_operators_bp,
            self.executors_bp,
            self.verifiers_bp,
            self.treasury_bp,
        ]
    }

    /// Checks every share against its range, then the sum against 10 000 bp.
    pub fn validate(&self) -> Result<(), EconomicsError> {
        for ((field, min_bp, max_bp), value_bp) in SHARE_RANGES_BP.iter().zip(self.as_array()) {
            if value_bp < *min_bp || value_bp > *max_bp {
                return Err(EconomicsError::ShareOutOfRange {
                    field,
                    value_bp,
                    min_bp: *min_bp,
                    max_bp: *max_bp,
                });
            }
        }
        let sum_bp: u32 = self.as_array().iter().map(|&b| u32::from(b)).sum();
        if sum_bp != u32::from(BP_WHOLE) {
            return Err(EconomicsError::SharesDoNotSumToWhole { sum_bp });
        }
        Ok(())
    }
}

/// Staking amounts of the three tiers and the producer multiplier (seed 002 "Node
/// Architecture", "Governance").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakingParams {
    /// `S_master`.
    pub s_master_micro_sym: u64,
    /// `S_enterprise`.
    pub s_enterprise_micro_sym: u64,
    /// `S_producer`.
    pub s_producer_micro_sym: u64,
    /// Share of a dividend an unstaked producer receives (seed: 50%).
    pub unstaked_producer_multiplier_bp: u16,
    /// Epochs between an unbonding request and the stake becoming withdrawable.
    pub unbonding_epochs: u64,
}

/// Graduated slashing (seed 002 "Governance": "graduated slashing"; grades are ours).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashingSchedule {
    /// Fraction of stake slashed for a minor offence.
    pub minor_bp: u16,
    /// Fraction slashed for a major offence.
    pub major_bp: u16,
    /// Fraction slashed for a critical offence.
    pub critical_bp: u16,
    /// Each prior offence inside the window doubles the fraction (capped at 100%).
    pub repeat_window_epochs: u64,
}

/// Per-scope ε amounts (capacity or replenishment) for one data subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeEpsilon {
    /// `personal`.
    pub personal: Epsilon,
    /// `marketing`.
    pub marketing: Epsilon,
    /// `analytics`.
    pub analytics: Epsilon,
    /// `training`.
    pub training: Epsilon,
}

impl ScopeEpsilon {
    /// The amount for one scope.
    pub fn get(&self, scope: symphony_core::UsageScope) -> Epsilon {
        use symphony_core::UsageScope as S;
        match scope {
            S::Personal => self.personal,
            S::Marketing => self.marketing,
            S::Analytics => self.analytics,
            S::Training => self.training,
        }
    }
}

/// Privacy thresholds (seed 002 "Data Protection", "Attribute Composition").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyParams {
    /// Default `minimum_result_cardinality` of a composition that declares none.
    pub minimum_result_cardinality: u32,
    /// Per-subject ε capacity per usage scope per epoch.
    pub epsilon_capacity_per_epoch: ScopeEpsilon,
    /// ε added to each subject's budget at each epoch boundary (capped at capacity).
    pub epsilon_replenish_per_epoch: ScopeEpsilon,
    /// ε a single `query` charges each subject it touches.
    pub epsilon_per_query: Epsilon,
}

/// Epoch and timing parameters (seed 002 "Epoch"; challenge window from "Challenge").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochParams {
    /// Epoch length; must divide [`YEAR_MS`] so a year is a whole number of epochs.
    pub epoch_length_ms: u64,
    /// Time after verification during which a result can be challenged.
    pub challenge_window_ms: u64,
}

impl EpochParams {
    /// Epochs in one inflation year: `YEAR_MS / epoch_length_ms`.
    pub fn epochs_per_year(&self) -> Result<u64, EconomicsError> {
        YEAR_MS
            .checked_div(self.epoch_length_ms)
            .ok_or(EconomicsError::InvalidParam {
                field: "epoch_length_ms",
                reason: "must be positive",
            })
    }
}

/// Node operation rewards and enterprise credits (seed 002 "Token Supply", "Node
/// Architecture").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardParams {
    /// Annual inflation per year index (year 0 = first year after genesis); every
    /// later year is 0%.
    pub inflation_schedule_bp: Vec<u16>,
    /// Credit an enterprise earns per micro-SYM of fee its Vault earns, in bp.
    pub enterprise_credit_rate_bp: u16,
    /// Largest part of one of its own task fees an enterprise may pay with credits.
    pub enterprise_credit_max_offset_bp: u16,
}

/// Every configurable parameter of one `policy_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyParams {
    /// Prices per task class.
    pub prices: PriceTable,
    /// Fee shares per recipient class.
    pub fee_shares: FeeShares,
    /// Staking tiers and multiplier.
    pub staking: StakingParams,
    /// Slashing grades.
    pub slashing: SlashingSchedule,
    /// Privacy thresholds.
    pub privacy: PrivacyParams,
    /// Epoch timing.
    pub epochs: EpochParams,
    /// Inflation and credits.
    pub rewards: RewardParams,
    /// What evidence the settlement plane accepts (enclave kinds, TCB statuses,
    /// measurements, collateral age).
    pub attestation: crate::AttestationPolicy,
}

fn check_bp(field: &'static str, value: u16) -> Result<(), EconomicsError> {
    if value > BP_WHOLE {
        return Err(EconomicsError::InvalidParam {
            field,
            reason: "a fraction may not exceed 10000 bp",
        });
    }
    Ok(())
}

fn invalid(field: &'static str, reason: &'static str) -> EconomicsError {
    EconomicsError::InvalidParam { field, reason }
}

impl PolicyParams {
    /// The defaults of policy version 1; each value is justified in the crate's `DECISIONS`.
    pub fn default_v1() -> Self {
        let eps = Epsilon::from_milli;
        PolicyParams {
            prices: PriceTable {
                query: QueryPrices {
                    base_fee_micro_sym: sym(1),
                    per_vault_fee_micro_sym: sym(1) / 2,
                    per_record_fee_micro_sym: sym(1) / 100,
                    per_epsilon_fee_micro_sym: sym(10),
                },
                compute: ComputePrices {
                    base_fee_micro_sym: sym(2),
                    per_compute_unit_fee_micro_sym: sym(1) / 1_000,
                    per_data_volume_unit_fee_micro_sym: sym(1) / 10,
                    per_epsilon_fee_micro_sym: sym(10),
                },
                train: TrainPrices {
                    base_fee_micro_sym: sym(50),
                    per_round_vault_compute_fee_micro_sym: sym(2),
                    per_round_aggregation_fee_micro_sym: sym(1),
                    per_epsilon_fee_micro_sym: sym(20),
                },
            },
            fee_shares: FeeShares {
                data_contributors_bp: 4_500,
                vault_operators_bp: 2_000,
                executors_bp: 2_000,
                verifiers_bp: 750,
                treasury_bp: 750,
            },
            staking: StakingParams {
                s_master_micro_sym: sym(1_000_000),
                s_enterprise_micro_sym: sym(100_000),
                s_producer_micro_sym: sym(100),
                unstaked_producer_multiplier_bp: 5_000,
                unbonding_epochs: 168,
            },
            slashing: SlashingSchedule {
                minor_bp: 100,
                major_bp: 1_000,
                critical_bp: 5_000,
                repeat_window_epochs: 720,
            },
            privacy: PrivacyParams {
                minimum_result_cardinality: 50,
                epsilon_capacity_per_epoch: ScopeEpsilon {
                    personal: eps(10_000),
                    marketing: eps(1_000),
                    analytics: eps(2_000),
                    training: eps(4_000),
                },
                epsilon_replenish_per_epoch: ScopeEpsilon {
                    personal: eps(10_000),
                    marketing: eps(250),
                    analytics: eps(500),
                    training: eps(1_000),
                },
                epsilon_per_query: eps(100),
            },
            epochs: EpochParams {
                epoch_length_ms: 3_600_000,
                challenge_window_ms: 600_000,
            },
            rewards: RewardParams {
                inflation_schedule_bp: vec![800, 500, 300, 150, 0],
                enterprise_credit_rate_bp: 1_000,
                enterprise_credit_max_offset_bp: 5_000,
            },
            attestation: crate::AttestationPolicy::development(),
        }
    }

    /// Validates every parameter; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), EconomicsError> {
        self.fee_shares.validate()?;
        let st = &self.staking;
        if st.s_producer_micro_sym == 0
            || st.s_enterprise_micro_sym < st.s_producer_micro_sym
            || st.s_master_micro_sym < st.s_enterprise_micro_sym
        {
            return Err(invalid(
                "staking",
                "need 0 < S_producer <= S_enterprise <= S_master",
            ));
        }
        check_bp(
            "staking.unstaked_producer_multiplier_bp",
            st.unstaked_producer_multiplier_bp,
        )?;
        let sl = &self.slashing;
        check_bp("slashing.minor_bp", sl.minor_bp)?;
        check_bp("slashing.major_bp", sl.major_bp)?;
        check_bp("slashing.critical_bp", sl.critical_bp)?;
        if !(sl.minor_bp <= sl.major_bp && sl.major_bp <= sl.critical_bp) || sl.minor_bp == 0 {
            return Err(invalid(
                "slashing",
                "need 0 < minor_bp <= major_bp <= critical_bp",
            ));
        }
        let pr = &self.privacy;
        if pr.minimum_result_cardinality == 0 {
            return Err(invalid(
                "privacy.minimum_result_cardinality",
                "must be at least 1",
            ));
        }
        if pr.epsilon_per_query == Epsilon::ZERO {
            return Err(invalid("privacy.epsilon_per_query", "must be positive"));
        }
        let ep = &self.epochs;
        if ep.epoch_length_ms == 0 || !YEAR_MS.is_multiple_of(ep.epoch_length_ms) {
            return Err(invalid(
                "epochs.epoch_length_ms",
                "must be positive and divide a 365-day year",
            ));
        }
        let rw = &self.rewards;
        for &rate in &rw.inflation_schedule_bp {
            check_bp("rewards.inflation_schedule_bp", rate)?;
        }
        check_bp(
            "rewards.enterprise_credit_rate_bp",
            rw.enterprise_credit_rate_bp,
        )?;
        check_bp(
            "rewards.enterprise_credit_max_offset_bp",
            rw.enterprise_credit_max_offset_bp,
        )?;
        self.attestation.validate()
    }
}
