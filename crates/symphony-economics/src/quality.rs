//! Data quality rewards (seed 002 "How SYM is Earned": "Per-record score based on
//! parsability, completeness, freshness, non-duplication, domain demand"; "Data
//! Producers who stake S_producer receive 100% of rewards. Unstaked producers
//! receive 50%").
//!
//! Pure and integer-only: every factor is basis points (0..=10 000), the score is
//! their weighted mean rounded down, the reward of a record is
//! `⌊reward_per_record × score / 10 000⌋`, and an epoch's rewards are scaled down
//! pro rata (largest remainders, [`split_by_weights`]) when they would exceed the
//! epoch's budget. The staking multiplier is applied once, by the reward contract
//! (`PayoutKind::DataQualityReward`); [`producer_net`] states what it pays.

use serde::{Deserialize, Serialize};
use symphony_core::ActorId;

use crate::error::EconomicsError;
use crate::policy::BP_WHOLE;
use crate::split::split_by_weights;

/// The facts about one parsed record the score is computed from (found by the
/// Vault's enclave; never leave it except as the score).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFacts {
    /// Non-blank lines the parser read.
    pub lines_total: u32,
    /// Of those, lines it recognised (header, item or total lines).
    pub lines_recognized: u32,
    /// Fields of the record present (merchant, category known, city, country,
    /// time, currency, items, total).
    pub fields_present: u32,
    /// Fields a complete record has.
    pub fields_expected: u32,
    /// Purchase time, ms.
    pub purchased_at_ms: u64,
    /// Upload time, ms (the task's injected time).
    pub uploaded_at_ms: u64,
    /// Whether the same record was already in the Vault.
    pub duplicate: bool,
    /// Merchant category (`coffee`, `grocery`, ...).
    pub category: String,
}

/// Parameters of the quality score and its rewards (policy version 1's values in
/// [`QualityParams::default_v1`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityParams {
    /// Weights of parsability, completeness, freshness, non-duplication and domain
    /// demand; they sum to 10 000 bp.
    pub weights_bp: [u16; 5],
    /// A record this old or older scores 0 on freshness (linear from 10 000 at 0).
    pub freshness_horizon_ms: u64,
    /// Domain demand per category, bp; a category not listed gets `other_demand_bp`.
    pub demand_bp: Vec<(String, u16)>,
    /// Demand of an unlisted category.
    pub other_demand_bp: u16,
    /// Reward of a record scoring 10 000 bp, µSYM (before the staking multiplier).
    pub reward_per_record_micro_sym: u64,
    /// Most quality rewards paid in one epoch, µSYM (gross).
    pub epoch_budget_micro_sym: u64,
}

impl QualityParams {
    /// Policy version 1: equal weights (20% each), 90-day freshness horizon, demand
    /// from the campaigns the catalog serves (coffee highest), 0.5 SYM per perfect
    /// record, at most 10 000 SYM per epoch.
    pub fn default_v1() -> Self {
        QualityParams {
            weights_bp: [2_000; 5],
            freshness_horizon_ms: 90 * 86_400_000,
            demand_bp: vec![
                ("coffee".into(), 10_000),
                ("grocery".into(), 7_000),
                ("convenience".into(), 5_000),
            ],
            other_demand_bp: 2_000,
            reward_per_record_micro_sym: 500_000,
            epoch_budget_micro_sym: 10_000_000_000,
        }
    }

    /// Checks the weights sum to 10 000 bp and every bp value is at most 10 000.
    pub fn validate(&self) -> Result<(), EconomicsError> {
        let sum: u32 = self.weights_bp.iter().map(|w| u32::from(*w)).sum();
        if sum != u32::from(BP_WHOLE) {
            return Err(EconomicsError::InvalidParam {
                field: "quality.weights_bp",
                reason: "the five weights must sum to 10000 bp",
            });
        }
        if self.demand_bp.iter().any(|(_, d)| *d > BP_WHOLE) || self.other_demand_bp > BP_WHOLE {
            return Err(EconomicsError::InvalidParam {
                field: "quality.demand_bp",
                reason: "a demand may not exceed 10000 bp",
            });
        }
        Ok(())
    }
}

/// The five factors and the score of one record, bp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityScore {
    /// Lines recognised / lines read.
    pub parsability_bp: u16,
    /// Fields present / fields expected.
    pub completeness_bp: u16,
    /// Linear decay of age over the horizon.
    pub freshness_bp: u16,
    /// 10 000 unless a duplicate (0).
    pub non_duplication_bp: u16,
    /// The category's demand.
    pub domain_demand_bp: u16,
    /// Weighted mean of the five, rounded down; 0 for a duplicate.
    pub score_bp: u16,
}

fn ratio_bp(num: u64, den: u64) -> u16 {
    if den == 0 {
        return 0;
    }
    let r = u128::from(num.min(den)) * u128::from(BP_WHOLE) / u128::from(den);
    u16::try_from(r).unwrap_or(BP_WHOLE)
}

/// The quality score of one record.
pub fn quality_score(
    params: &QualityParams,
    facts: &RecordFacts,
) -> Result<QualityScore, EconomicsError> {
    params.validate()?;
    let parsability_bp = ratio_bp(facts.lines_recognized.into(), facts.lines_total.into());
    let completeness_bp = ratio_bp(facts.fields_present.into(), facts.fields_expected.into());
    let age = facts.uploaded_at_ms.saturating_sub(facts.purchased_at_ms);
    let freshness_bp = BP_WHOLE - ratio_bp(age, params.freshness_horizon_ms.max(1));
    let non_duplication_bp = if facts.duplicate { 0 } else { BP_WHOLE };
    let domain_demand_bp = params
        .demand_bp
        .iter()
        .find(|(c, _)| *c == facts.category)
        .map_or(params.other_demand_bp, |(_, d)| *d);
    let factors = [
        parsability_bp,
        completeness_bp,
        freshness_bp,
        non_duplication_bp,
        domain_demand_bp,
    ];
    let weighted: u64 = factors
        .iter()
        .zip(params.weights_bp)
        .map(|(f, w)| u64::from(*f) * u64::from(w))
        .sum();
    let score_bp = if facts.duplicate {
        0
    } else {
        u16::try_from(weighted / u64::from(BP_WHOLE)).unwrap_or(BP_WHOLE)
    };
    Ok(QualityScore {
        parsability_bp,
        completeness_bp,
        freshness_bp,
        non_duplication_bp,
        domain_demand_bp,
        score_bp,
    })
}

/// One producer's gross quality reward of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityReward {
    /// The producer.
    pub producer: ActorId,
    /// Records scored.
    pub records: u64,
    /// Gross reward, µSYM (the reward contract applies the staking multiplier).
    pub gross_micro_sym: u64,
}

/// An epoch's quality rewards from each producer's record scores: per record
/// `⌊reward_per_record × score / 10 000⌋`, summed per producer (sorted by
/// producer), scaled down pro rata to the epoch budget if the sum exceeds it.
pub fn epoch_quality_rewards(
    params: &QualityParams,
    scores: &[(ActorId, u16)],
) -> Result<Vec<QualityReward>, EconomicsError> {
    params.validate()?;
    let mut per: std::collections::BTreeMap<ActorId, (u64, u64)> = Default::default();
    for (producer, score) in scores {
        let reward = u128::from(params.reward_per_record_micro_sym)
            * u128::from((*score).min(BP_WHOLE))
            / u128::from(BP_WHOLE);
        let reward = u64::try_from(reward).map_err(|_| EconomicsError::Overflow {
            what: "quality reward",
        })?;
        let e = per.entry(producer.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.checked_add(reward).ok_or(EconomicsError::Overflow {
            what: "quality reward sum",
        })?;
    }
    let total: u64 = per
        .values()
        .try_fold(0u64, |a, (_, r)| a.checked_add(*r))
        .ok_or(EconomicsError::Overflow {
            what: "epoch quality rewards",
        })?;
    let amounts: Vec<u64> = if total > params.epoch_budget_micro_sym {
        let weights: Vec<(ActorId, u64)> = per.iter().map(|(p, (_, r))| (p.clone(), *r)).collect();
        split_by_weights(
            params.epoch_budget_micro_sym,
            &weights,
            "epoch quality rewards",
        )?
        .into_iter()
        .map(|(_, a)| a)
        .collect()
    } else {
        per.values().map(|(_, r)| *r).collect()
    };
    Ok(per
        .into_iter()
        .zip(amounts)
        .map(
            |((producer, (records, _)), gross_micro_sym)| QualityReward {
                producer,
                records,
                gross_micro_sym,
            },
        )
        .collect())
}

/// What a producer receives of a gross reward: all when staked, half (rounded down)
/// when not — the rule the reward contract applies (seed 002).
pub fn producer_net(gross_micro_sym: u64, staked: bool, unstaked_multiplier_bp: u16) -> u64 {
    if staked {
        gross_micro_sym
    } else {
        let net = u128::from(gross_micro_sym) * u128::from(unstaked_multiplier_bp.min(BP_WHOLE))
            / u128::from(BP_WHOLE);
        u64::try_from(net).unwrap_or(gross_micro_sym)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn facts() -> RecordFacts {
        RecordFacts {
            lines_total: 6,
            lines_recognized: 6,
            fields_present: 8,
            fields_expected: 8,
            purchased_at_ms: 100 * DAY,
            uploaded_at_ms: 100 * DAY,
            duplicate: false,
            category: "coffee".into(),
        }
    }

    #[test]
    fn a_perfect_fresh_coffee_receipt_scores_the_whole() {
        let s = quality_score(&QualityParams::default_v1(), &facts()).unwrap();
        assert_eq!(s.score_bp, 10_000);
    }

    #[test]
    fn each_factor_lowers_the_score_by_its_weight() {
        let p = QualityParams::default_v1();
        let mut f = facts();
        f.uploaded_at_ms += 45 * DAY; // half the horizon: freshness 5 000
        assert_eq!(quality_score(&p, &f).unwrap().freshness_bp, 5_000);
        assert_eq!(quality_score(&p, &f).unwrap().score_bp, 9_000);
        let mut f = facts();
        f.category = "grocery".into();
        assert_eq!(quality_score(&p, &f).unwrap().score_bp, 9_400);
        let mut f = facts();
        f.lines_recognized = 3;
        f.fields_present = 4;
        assert_eq!(quality_score(&p, &f).unwrap().score_bp, 8_000);
        let mut f = facts();
        f.uploaded_at_ms += 400 * DAY;
        assert_eq!(quality_score(&p, &f).unwrap().freshness_bp, 0);
        let mut f = facts();
        f.duplicate = true;
        assert_eq!(quality_score(&p, &f).unwrap().score_bp, 0);
    }

    #[test]
    fn epoch_rewards_sum_per_producer_and_respect_the_budget() {
        let mut p = QualityParams::default_v1();
        let a = ActorId::new("producer:a").unwrap();
        let b = ActorId::new("producer:b").unwrap();
        let scores = [(b.clone(), 10_000), (a.clone(), 5_000), (b.clone(), 9_000)];
        let r = epoch_quality_rewards(&p, &scores).unwrap();
        assert_eq!(r[0].producer, a);
        assert_eq!(r[0].gross_micro_sym, 250_000);
        assert_eq!((r[1].records, r[1].gross_micro_sym), (2, 950_000));
        p.epoch_budget_micro_sym = 600_000;
        let r = epoch_quality_rewards(&p, &scores).unwrap();
        let sum: u64 = r.iter().map(|x| x.gross_micro_sym).sum();
        assert_eq!(sum, 600_000);
        assert!(r[1].gross_micro_sym > r[0].gross_micro_sym);
    }

    #[test]
    fn unstaked_producers_get_half_rounded_down() {
        assert_eq!(producer_net(999, true, 5_000), 999);
        assert_eq!(producer_net(999, false, 5_000), 499);
    }

    #[test]
    fn weights_must_sum_to_the_whole() {
        let mut p = QualityParams::default_v1();
        p.weights_bp[0] = 1_000;
        assert!(quality_score(&p, &facts()).is_err());
    }
}
