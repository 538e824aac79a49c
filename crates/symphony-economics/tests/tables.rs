//! Table tests: pricing on hand-computed examples, policy validation, inflation
//! schedule, slashing grades, dividends.

use symphony_core::{ActorId, EpochId, Epsilon, VaultId};
use symphony_economics::fees::{
    distribute_fee, split_fee_by_class, ContributionReport, Recipient, RecipientClass,
};
use symphony_economics::policy::{FeeShares, PolicyParams, BP_WHOLE};
use symphony_economics::pricing::{
    data_volume_units, epsilon_fee, settle_fee, task_fee, ComputeUsage, QueryUsage, TaskUsage,
    TrainUsage,
};
use symphony_economics::rewards::{
    annual_inflation_bp, inflation_mint_for_epoch, vault_dividends, CreditBalance, ProducerUsage,
};
use symphony_economics::staking::{
    required_stake_micro_sym, slash, unbonding_complete_epoch, Offence, Severity, StakeTier,
};
use symphony_economics::{EconomicsError, MICRO_SYM_PER_SYM};

const SYM: u64 = MICRO_SYM_PER_SYM;

fn eps(text: &str) -> Epsilon {
    Epsilon::parse_decimal(text).unwrap()
}

#[test]
fn pricing_hand_computed_examples() {
    let prices = PolicyParams::default_v1().prices;
    // (usage, expected fee in micro-SYM, how it was computed by hand)
    let table: Vec<(TaskUsage, u64, &str)> = vec![
        (TaskUsage::Parse, 0, "parse is free"),
        (
            TaskUsage::Query(QueryUsage {
                n_vaults: 3,
                n_records: 1_000,
                epsilon: eps("0.5"),
            }),
            // 1 + 3×0.5 + 1000×0.01 + 0.5×10 = 1 + 1.5 + 10 + 5 = 17.5 SYM
            17_500_000,
            "luckin-like query",
        ),
        (
            TaskUsage::Query(QueryUsage {
                n_vaults: 0,
                n_records: 0,
                epsilon: Epsilon::ZERO,
            }),
            SYM,
            "query base only",
        ),
        (
            TaskUsage::Query(QueryUsage {
                n_vaults: 1,
                n_records: 1,
                epsilon: Epsilon::from_micro(1),
            }),
            // 1 + 0.5 + 0.01 SYM + ⌈1e-6 ε × 10 SYM⌉ = 1_510_000 + ⌈10⌉ micro
            1_510_010,
            "tiny epsilon",
        ),
        (
            TaskUsage::Compute(ComputeUsage {
                compute_units: 5_000,
                data_volume_units: data_volume_units(2_500),
                epsilon: eps("0.2"),
            }),
            // 2 + 5000×0.001 + 3×0.1 + 0.2×10 = 2 + 5 + 0.3 + 2 = 9.3 SYM
            9_300_000,
            "compute",
        ),
        (
            TaskUsage::Train(TrainUsage::uniform(10, 4, eps("2"))),
            // 50 + 10×(4×2 + 1) + 2×20 = 50 + 90 + 40 = 180 SYM
            180 * SYM,
            "train 10 rounds × 4 Vaults",
        ),
        (
            TaskUsage::Train(TrainUsage {
                vaults_per_round: vec![4, 3, 4],
                total_epsilon: eps("0.75"),
            }),
            // 50 + (9 + 7 + 9) + 0.75×20 = 50 + 25 + 15 = 90 SYM (a Vault timed out in round 1)
            90 * SYM,
            "train with a timed-out Vault",
        ),
    ];
    for (usage, expected, name) in table {
        assert_eq!(task_fee(&prices, &usage).unwrap(), expected, "{name}");
    }
}

#[test]
fn epsilon_fee_rounds_up() {
    assert_eq!(epsilon_fee(Epsilon::from_micro(1), 1).unwrap(), 1);
    assert_eq!(epsilon_fee(Epsilon::from_micro(1_000_000), 7).unwrap(), 7);
    assert_eq!(epsilon_fee(Epsilon::from_micro(1_000_001), 7).unwrap(), 8);
    assert_eq!(epsilon_fee(Epsilon::ZERO, 7).unwrap(), 0);
}

#[test]
fn pricing_overflow_is_an_error() {
    let mut prices = PolicyParams::default_v1().prices;
    prices.query.per_record_fee_micro_sym = u64::MAX;
    let usage = TaskUsage::Query(QueryUsage {
        n_vaults: 1,
        n_records: 2,
        epsilon: Epsilon::ZERO,
    });
    assert!(matches!(
        task_fee(&prices, &usage),
        Err(EconomicsError::Overflow { .. })
    ));
}

#[test]
fn settlement_clamps_actual_to_estimate() {
    let prices = PolicyParams::default_v1().prices;
    let caps = TaskUsage::Query(QueryUsage {
        n_vaults: 3,
        n_records: 1_000,
        epsilon: eps("0.5"),
    });
    let estimate = task_fee(&prices, &caps).unwrap();
    let actual = TaskUsage::Query(QueryUsage {
        n_vaults: 3,
        n_records: 600,
        epsilon: eps("0.5"),
    });
    let s = settle_fee(&prices, estimate, &actual).unwrap();
    assert_eq!(
        (s.charged_micro_sym, s.refund_micro_sym, s.clamped),
        (13_500_000, 4_000_000, false)
    );
    let over = TaskUsage::Query(QueryUsage {
        n_vaults: 4,
        n_records: 1_000,
        epsilon: eps("0.5"),
    });
    let s = settle_fee(&prices, estimate, &over).unwrap();
    assert_eq!(
        (s.charged_micro_sym, s.refund_micro_sym, s.clamped),
        (estimate, 0, true)
    );
}

#[test]
fn default_policy_is_valid() {
    PolicyParams::default_v1().validate().unwrap();
}

fn shares(v: [u16; 5]) -> FeeShares {
    FeeShares {
        data_contributors_bp: v[0],
        vault_operators_bp: v[1],
        executors_bp: v[2],
        verifiers_bp: v[3],
        treasury_bp: v[4],
    }
}

#[test]
fn fee_share_validation_names_the_field() {
    let table: Vec<([u16; 5], Option<&str>)> = vec![
        ([4_500, 2_000, 2_000, 750, 750], None),
        ([3_000, 2_500, 2_500, 1_000, 1_000], None),
        ([5_000, 1_500, 2_000, 1_000, 500], None),
        (
            [2_999, 2_500, 2_500, 1_000, 1_001],
            Some("data_contributors_bp"),
        ),
        (
            [5_001, 2_000, 2_000, 500, 499],
            Some("data_contributors_bp"),
        ),
        (
            [4_000, 1_499, 2_500, 1_000, 1_001],
            Some("vault_operators_bp"),
        ),
        ([4_000, 2_000, 2_501, 1_000, 499], Some("executors_bp")),
        ([4_500, 2_000, 2_100, 400, 1_000], Some("verifiers_bp")),
        ([4_500, 2_000, 1_900, 1_000, 1_100], Some("treasury_bp")),
    ];
    for (v, field) in table {
        match (shares(v).validate(), field) {
            (Ok(()), None) => {}
            (Err(EconomicsError::ShareOutOfRange { field: got, .. }), Some(want)) => {
                assert_eq!(got, want, "{v:?}")
            }
            (other, _) => panic!("{v:?}: unexpected {other:?}"),
        }
    }
    // In range, wrong sum.
    for v in [
        [4_000, 2_000, 2_000, 750, 750],
        [5_000, 2_500, 2_500, 1_000, 1_000],
    ] {
        let err = shares(v).validate().unwrap_err();
        let sum: u32 = v.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(err, EconomicsError::SharesDoNotSumToWhole { sum_bp: sum });
        assert!(err.to_string().contains("10000"), "{err}");
    }
    let err = shares([2_999, 2_500, 2_500, 1_000, 1_001])
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("data_contributors_bp"), "{err}");
}

#[test]
fn policy_validation_rejects_bad_params() {
    let mut p = PolicyParams::default_v1();
    p.epochs.epoch_length_ms = 7;
    assert!(matches!(
        p.validate(),
        Err(EconomicsError::InvalidParam {
            field: "epochs.epoch_length_ms",
            ..
        })
    ));
    let mut p = PolicyParams::default_v1();
    p.slashing.critical_bp = 10_001;
    assert!(matches!(
        p.validate(),
        Err(EconomicsError::InvalidParam {
            field: "slashing.critical_bp",
            ..
        })
    ));
    let mut p = PolicyParams::default_v1();
    p.staking.s_producer_micro_sym = 0;
    assert!(matches!(
        p.validate(),
        Err(EconomicsError::InvalidParam {
            field: "staking",
            ..
        })
    ));
    let mut p = PolicyParams::default_v1();
    p.privacy.minimum_result_cardinality = 0;
    assert!(p.validate().is_err());
}

#[test]
fn class_split_hand_computed() {
    let s = PolicyParams::default_v1().fee_shares;
    // 17.5 SYM: 45% 7.875, 20% 3.5, 20% 3.5, 7.5% 1.3125, 7.5% 1.3125
    let c = split_fee_by_class(17_500_000, &s).unwrap();
    assert_eq!(
        [
            c.data_contributors_micro_sym,
            c.vault_operators_micro_sym,
            c.executors_micro_sym,
            c.verifiers_micro_sym,
            c.treasury_micro_sym
        ],
        [7_875_000, 3_500_000, 3_500_000, 1_312_500, 1_312_500]
    );
    // 3 micro-SYM: exact 1.35, 0.6, 0.6, 0.225, 0.225 → floors 1,0,0,0,0; leftover 2
    // goes to remainders 0.6 (operators) and 0.6 (executors; tie → earlier class).
    let c = split_fee_by_class(3, &s).unwrap();
    assert_eq!(
        [
            c.data_contributors_micro_sym,
            c.vault_operators_micro_sym,
            c.executors_micro_sym,
            c.verifiers_micro_sym,
            c.treasury_micro_sym
        ],
        [1, 1, 1, 0, 0]
    );
    // 1 micro-SYM: remainders .45 .2 .2 .075 .075 → contributors.
    assert_eq!(
        split_fee_by_class(1, &s)
            .unwrap()
            .data_contributors_micro_sym,
        1
    );
}

#[test]
fn distribution_forwards_empty_class_to_treasury() {
    let s = PolicyParams::default_v1().fee_shares;
    let v = |x: &str| VaultId::new(x).unwrap();
    let a = |x: &str| ActorId::new(x).unwrap();
    let report = ContributionReport {
        data_contributor_weight_by_vault: vec![(v("vault-b"), 1), (v("vault-a"), 3)],
        records_served_by_operator: vec![(a("op-a"), 300), (a("op-b"), 100)],
        verified_work_by_executor: vec![(a("exec-1"), 1)],
        decisions_by_verifier: vec![],
    };
    let d = distribute_fee(1_000, &s, &report).unwrap();
    let lines: Vec<(RecipientClass, Recipient, u64)> = d
        .payouts()
        .iter()
        .map(|p| (p.class, p.recipient.clone(), p.amount_micro_sym))
        .collect();
    assert_eq!(
        lines,
        vec![
            (
                RecipientClass::DataContributors,
                Recipient::VaultContributors(v("vault-a")),
                338
            ),
            (
                RecipientClass::DataContributors,
                Recipient::VaultContributors(v("vault-b")),
                112
            ),
            (
                RecipientClass::VaultOperators,
                Recipient::Actor(a("op-a")),
                150
            ),
            (
                RecipientClass::VaultOperators,
                Recipient::Actor(a("op-b")),
                50
            ),
            (
                RecipientClass::Executors,
                Recipient::Actor(a("exec-1")),
                200
            ),
            (RecipientClass::Verifiers, Recipient::Treasury, 75),
            (RecipientClass::Treasury, Recipient::Treasury, 75),
        ]
    );
    assert_eq!(d.class_total(RecipientClass::Verifiers), 75);
}

#[test]
fn dividends_hand_computed() {
    let a = |x: &str| ActorId::new(x).unwrap();
    let producers = vec![
        ProducerUsage {
            producer: a("alice"),
            records_used: 2,
            epsilon_consumed: eps("0.1"),
            staked: true,
        },
        ProducerUsage {
            producer: a("bob"),
            records_used: 1,
            epsilon_consumed: eps("0.1"),
            staked: false,
        },
        ProducerUsage {
            producer: a("carol"),
            records_used: 1,
            epsilon_consumed: eps("0.1"),
            staked: false,
        },
    ];
    // weights 2:1:1 of 1001 → gross 501 (500.5, tie: remainders .5/.25/.25 → alice), 250, 250
    // bob, carol unstaked: 125 each, 125 + 125 back to the pool.
    let d = vault_dividends(1_001, &producers, 5_000).unwrap();
    assert_eq!(
        d.payouts,
        vec![(a("alice"), 501), (a("bob"), 125), (a("carol"), 125)]
    );
    assert_eq!(d.returned_to_pool_micro_sym, 250);
    // odd gross for an unstaked producer: rounds down, remainder to the pool
    let d = vault_dividends(3, &producers[1..2], 5_000).unwrap();
    assert_eq!((d.payouts[0].1, d.returned_to_pool_micro_sym), (1, 2));
}

#[test]
fn inflation_schedule_per_year() {
    let p = PolicyParams::default_v1();
    let epy = p.epochs.epochs_per_year().unwrap();
    assert_eq!(epy, 8_760);
    let supply = 1_000_000_000 * SYM; // 10^9 SYM
                                      // (year, rate bp, annual mint)
    let table = [
        (0u64, 800u16, 80_000_000 * SYM),
        (1, 500, 50_000_000 * SYM),
        (2, 300, 30_000_000 * SYM),
        (3, 150, 15_000_000 * SYM),
        (4, 0, 0),
        (5, 0, 0),
        (40, 0, 0),
    ];
    for (year, rate, annual) in table {
        assert_eq!(
            annual_inflation_bp(&p.rewards.inflation_schedule_bp, year),
            rate,
            "year {year}"
        );
        let total: u64 = (0..epy)
            .map(|k| inflation_mint_for_epoch(&p, EpochId(year * epy + k), supply).unwrap())
            .sum();
        assert_eq!(total, annual, "year {year} sums exactly");
    }
    // An amount not divisible by the epoch count: per-epoch mints differ by ≤ 1 and sum exactly.
    let mints: Vec<u64> = (0..epy)
        .map(|k| inflation_mint_for_epoch(&p, EpochId(k), 1_000_003).unwrap())
        .collect();
    assert_eq!(mints.iter().sum::<u64>(), 80_000); // ⌊1_000_003 × 8%⌋
    assert!(mints.iter().max().unwrap() - mints.iter().min().unwrap() <= 1);
}

#[test]
fn slashing_grades() {
    let sched = PolicyParams::default_v1().slashing;
    let stake = 1_000_000 * SYM;
    // (offence, prior offence epochs, expected severity, fraction bp)
    let table: Vec<(Offence, Vec<u64>, Severity, u16)> = vec![
        (Offence::Unavailability, vec![], Severity::Minor, 100),
        (Offence::Unavailability, vec![900], Severity::Minor, 200),
        (
            Offence::Unavailability,
            vec![900, 950, 999],
            Severity::Minor,
            800,
        ),
        (Offence::Unavailability, vec![100], Severity::Minor, 100), // outside the 720-epoch window
        (Offence::InvalidResult, vec![], Severity::Major, 1_000),
        (
            Offence::FaultyVerification,
            vec![999],
            Severity::Major,
            2_000,
        ),
        (
            Offence::InvalidResult,
            vec![990, 995, 999, 1_000],
            Severity::Major,
            BP_WHOLE,
        ),
        (
            Offence::SovereigntyViolation,
            vec![],
            Severity::Critical,
            5_000,
        ),
        (Offence::Equivocation, vec![], Severity::Critical, 5_000),
        (
            Offence::Equivocation,
            vec![1_000],
            Severity::Critical,
            BP_WHOLE,
        ),
    ];
    for (offence, priors, severity, bp) in table {
        let priors: Vec<EpochId> = priors.into_iter().map(EpochId).collect();
        let out = slash(stake, offence, &priors, EpochId(1_000), &sched);
        assert_eq!(
            (out.severity, out.fraction_bp),
            (severity, bp),
            "{offence:?} {priors:?}"
        );
        assert_eq!(out.slashed_micro_sym, stake / 10_000 * u64::from(bp));
        assert_eq!(out.slashed_micro_sym + out.remaining_micro_sym, stake);
    }
    // never more than the stake, even for tiny stakes and u64::MAX
    for stake in [0, 1, 3, u64::MAX] {
        let out = slash(
            stake,
            Offence::Equivocation,
            &[EpochId(5); 20],
            EpochId(5),
            &sched,
        );
        assert_eq!(out.slashed_micro_sym, stake);
    }
}

#[test]
fn staking_tiers_and_unbonding() {
    let st = PolicyParams::default_v1().staking;
    assert_eq!(
        required_stake_micro_sym(StakeTier::Master, &st),
        1_000_000 * SYM
    );
    assert_eq!(
        required_stake_micro_sym(StakeTier::Enterprise, &st),
        100_000 * SYM
    );
    assert_eq!(
        required_stake_micro_sym(StakeTier::Producer, &st),
        100 * SYM
    );
    assert_eq!(
        unbonding_complete_epoch(EpochId(10), &st).unwrap(),
        EpochId(178)
    );
    assert!(unbonding_complete_epoch(EpochId(u64::MAX), &st).is_err());
}

#[test]
fn enterprise_credits_offset_own_usage() {
    let r = PolicyParams::default_v1().rewards;
    let mut c = CreditBalance::default();
    assert_eq!(
        c.earn(30 * SYM, r.enterprise_credit_rate_bp).unwrap(),
        3 * SYM
    );
    let app = c.apply_to_fee(4 * SYM, r.enterprise_credit_max_offset_bp);
    assert_eq!(
        (app.credit_used_micro_sym, app.payable_micro_sym),
        (2 * SYM, 2 * SYM)
    );
    let app = c.apply_to_fee(4 * SYM, r.enterprise_credit_max_offset_bp);
    assert_eq!(
        (app.credit_used_micro_sym, app.payable_micro_sym),
        (SYM, 3 * SYM)
    );
    assert_eq!(c.balance_micro_sym, 0);
}

/// Data-driven: `tests/data/pricing_cases.json` holds usage, expected fee and the
/// hand computation, under `PolicyParams::default_v1()`.
#[test]
fn pricing_cases_from_file() {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        usage: TaskUsage,
        fee_micro_sym: u64,
        why: String,
    }
    let text = include_str!("data/pricing_cases.json");
    let cases: Vec<Case> = serde_json::from_str(text).unwrap();
    assert!(cases.len() >= 8);
    let prices = PolicyParams::default_v1().prices;
    for c in cases {
        assert_eq!(
            task_fee(&prices, &c.usage).unwrap(),
            c.fee_micro_sym,
            "{}: {}",
            c.name,
            c.why
        );
    }
}

#[test]
fn vault_report_reveals_no_producer() {
    let a = |x: &str| ActorId::new(x).unwrap();
    let producers = vec![
        ProducerUsage {
            producer: a("alice-secret"),
            records_used: 2,
            epsilon_consumed: eps("0.1"),
            staked: true,
        },
        ProducerUsage {
            producer: a("bob-secret"),
            records_used: 3,
            epsilon_consumed: eps("0.2"),
            staked: false,
        },
    ];
    let totals = symphony_economics::rewards::vault_usage_totals(
        VaultId::new("vault-1").unwrap(),
        &producers,
        [7; 32],
    )
    .unwrap();
    assert_eq!(
        (totals.records_used, totals.usage_weight),
        (5, 2 * 100_000 + 3 * 200_000)
    );
    let wire = serde_json::to_string(&totals).unwrap();
    assert!(!wire.contains("alice") && !wire.contains("bob"), "{wire}");
    // the salt matters: the commitment cannot be recomputed without it
    let other = symphony_economics::rewards::vault_usage_totals(
        VaultId::new("vault-1").unwrap(),
        &producers,
        [8; 32],
    )
    .unwrap();
    assert_ne!(totals.commitment, other.commitment);
}

#[test]
fn duplicate_producer_is_refused() {
    let p = ProducerUsage {
        producer: ActorId::new("p").unwrap(),
        records_used: 1,
        epsilon_consumed: eps("0.1"),
        staked: true,
    };
    assert!(matches!(
        vault_dividends(10, &[p.clone(), p], 5_000),
        Err(EconomicsError::DuplicateRecipient { .. })
    ));
}

#[test]
fn only_verified_work_is_rewarded() {
    use symphony_economics::contribution::{contribution_report, AggregationWork, SliceWork};
    use symphony_economics::rewards::VaultUsageTotals;
    let a = |x: &str| ActorId::new(x).unwrap();
    let v = |x: &str| VaultId::new(x).unwrap();
    let slice =
        |vault: &str, op: &str, exec: &str, verified: bool, records: u64, units: u64| SliceWork {
            vault: v(vault),
            vault_operator: a(op),
            executor: a(exec),
            verified,
            records_served: records,
            compute_units: units,
        };
    let slices = vec![
        slice("vault-a", "op-a", "exec-a", true, 100, 10),
        slice("vault-a", "op-a", "exec-a", true, 50, 5), // round 2
        slice("vault-b", "op-b", "exec-b", false, 80, 8), // timed out
    ];
    let aggs = vec![
        AggregationWork {
            executor: a("master-1"),
            verified: true,
            compute_units: 3,
        },
        AggregationWork {
            executor: a("master-1"),
            verified: false,
            compute_units: 3,
        },
    ];
    let totals = |vault: &str, w: u64| VaultUsageTotals {
        vault: v(vault),
        records_used: 1,
        usage_weight: w,
        commitment: Default::default(),
    };
    let report = contribution_report(
        &[totals("vault-a", 700), totals("vault-b", 900)],
        &slices,
        &aggs,
        &[a("ver-1"), a("ver-2"), a("ver-1")],
    )
    .unwrap();
    assert_eq!(
        report.data_contributor_weight_by_vault,
        vec![(v("vault-a"), 700)]
    );
    assert_eq!(report.records_served_by_operator, vec![(a("op-a"), 150)]);
    assert_eq!(
        report.verified_work_by_executor,
        vec![(a("exec-a"), 15), (a("master-1"), 3)]
    );
    assert_eq!(
        report.decisions_by_verifier,
        vec![(a("ver-1"), 2), (a("ver-2"), 1)]
    );
}

#[test]
fn rejection_before_execution_costs_the_base_fee() {
    use symphony_core::TaskClass;
    use symphony_economics::pricing::rejection_fee;
    let prices = PolicyParams::default_v1().prices;
    let table = [
        (TaskClass::Parse, 0, 0, 0),
        (TaskClass::Query, 17_500_000, SYM, 16_500_000),
        (TaskClass::Compute, 9_300_000, 2 * SYM, 7_300_000),
        (TaskClass::Train, 180 * SYM, 50 * SYM, 130 * SYM),
        (TaskClass::Train, 10 * SYM, 10 * SYM, 0), // capped at the escrow
    ];
    for (class, estimate, charged, refund) in table {
        let s = rejection_fee(&prices, class, estimate);
        assert_eq!(
            (s.charged_micro_sym, s.refund_micro_sym),
            (charged, refund),
            "{class:?}"
        );
    }
}
