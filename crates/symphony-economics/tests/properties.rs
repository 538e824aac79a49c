//! Property tests: every split sums exactly, every share stays within its basis
//! points ± 1 base unit, dividends + pool return = contributor share, nothing
//! overflows or goes negative.

use proptest::prelude::*;
use symphony_core::{ActorId, EpochId, Epsilon, VaultId};
use symphony_economics::fees::{
    distribute_fee, split_fee_by_class, ContributionReport, RecipientClass,
};
use symphony_economics::policy::{FeeShares, PolicyParams, SlashingSchedule};
use symphony_economics::pricing::{settle_fee, task_fee, QueryUsage, TaskUsage, TrainUsage};
use symphony_economics::rewards::{vault_dividends, ProducerUsage};
use symphony_economics::split::split_by_weights;
use symphony_economics::staking::{slash, Offence};

/// Valid fee shares: each inside its seed range, Σ = 10 000.
fn valid_shares() -> impl Strategy<Value = FeeShares> {
    (
        1_500u16..=2_500,
        1_500u16..=2_500,
        500u16..=1_000,
        500u16..=1_000,
    )
        .prop_filter_map(
            "contributors must land in 30–50%",
            |(ops, exec, ver, tre)| {
                let rest = 10_000 - ops - exec - ver - tre;
                (3_000..=5_000).contains(&rest).then_some(FeeShares {
                    data_contributors_bp: rest,
                    vault_operators_bp: ops,
                    executors_bp: exec,
                    verifiers_bp: ver,
                    treasury_bp: tre,
                })
            },
        )
}

fn fee_amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1_000,
        0u64..10_000_000_000,
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn actors(prefix: &'static str, max: usize) -> impl Strategy<Value = Vec<(ActorId, u64)>> {
    prop::collection::vec(prop_oneof![0u64..5, 0u64..1_000_000, any::<u64>()], 0..max).prop_map(
        move |ws| {
            ws.into_iter()
                .enumerate()
                .map(|(i, w)| (ActorId::new(format!("{prefix}-{i}")).unwrap(), w))
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn class_split_is_exact_and_within_one_unit(fee in fee_amount(), shares in valid_shares()) {
        let split = split_fee_by_class(fee, &shares).unwrap();
        prop_assert_eq!(split.total(), u128::from(fee));
        for (class, bp) in RecipientClass::ALL.iter().zip(shares.as_array()) {
            let exact_times_10k = u128::from(fee) * u128::from(bp);
            let got_times_10k = u128::from(split.get(*class)) * 10_000;
            // |got − fee × bp / 10 000| < 1 base unit
            prop_assert!(got_times_10k.abs_diff(exact_times_10k) < 10_000, "{:?}", class);
        }
    }

    #[test]
    fn weighted_split_is_exact_and_within_one_unit(amount in fee_amount(), weights in actors("w", 40)) {
        let total_w: u128 = weights.iter().map(|(_, w)| u128::from(*w)).sum();
        match split_by_weights(amount, &weights, "prop") {
            Ok(parts) => {
                let sum: u128 = parts.iter().map(|(_, p)| u128::from(*p)).sum();
                prop_assert_eq!(sum, u128::from(amount));
                prop_assert_eq!(parts.len(), weights.len());
                for (k, part) in &parts {
                    let w = weights.iter().find(|(wk, _)| wk == k).unwrap().1;
                    if total_w == 0 {
                        prop_assert_eq!(*part, 0);
                        continue;
                    }
                    // |part − amount × w / W| < 1, in exact integers (fits: < 2^128 / ...)
                    let exact_floor = u128::from(amount) * u128::from(w) / total_w;
                    prop_assert!(u128::from(*part) == exact_floor || u128::from(*part) == exact_floor + 1);
                }
                // order-independence: reversing the input gives the same parts
                let mut rev = weights.clone();
                rev.reverse();
                prop_assert_eq!(split_by_weights(amount, &rev, "prop").unwrap(), parts);
            }
            Err(e) => {
                prop_assert!(total_w == 0 && amount > 0, "unexpected {e:?}");
            }
        }
    }

    #[test]
    fn distribution_sums_to_fee(
        fee in fee_amount(),
        shares in valid_shares(),
        vaults in prop::collection::vec(0u64..1_000_000_000, 0..8),
        ops in actors("op", 8),
        execs in actors("exec", 8),
        vers in actors("ver", 5),
    ) {
        let report = ContributionReport {
            data_contributor_weight_by_vault: vaults
                .into_iter()
                .enumerate()
                .map(|(i, w)| (VaultId::new(format!("vault-{i}")).unwrap(), w))
                .collect(),
            records_served_by_operator: ops,
            verified_work_by_executor: execs,
            decisions_by_verifier: vers,
        };
        let d = distribute_fee(fee, &shares, &report).unwrap();
        let sum: u128 = d.payouts().iter().map(|p| u128::from(p.amount_micro_sym)).sum();
        prop_assert_eq!(sum, u128::from(fee));
        let classes = split_fee_by_class(fee, &shares).unwrap();
        for class in RecipientClass::ALL {
            prop_assert_eq!(d.class_total(class), classes.get(class));
        }
    }

    #[test]
    fn dividends_plus_pool_equal_contributor_share(
        share in fee_amount(),
        producers in prop::collection::vec((1u64..10_000, 1u64..5_000_000, any::<bool>()), 1..30),
        multiplier_bp in prop_oneof![Just(5_000u16), 0u16..=10_000],
    ) {
        let producers: Vec<ProducerUsage> = producers
            .into_iter()
            .enumerate()
            .map(|(i, (records, micro, staked))| ProducerUsage {
                producer: ActorId::new(format!("producer-{i}")).unwrap(),
                records_used: records,
                epsilon_consumed: Epsilon::from_micro(micro),
                staked,
            })
            .collect();
        let d = vault_dividends(share, &producers, multiplier_bp).unwrap();
        prop_assert_eq!(d.total(), u128::from(share));
        // staked producers forgo nothing: the pool is exactly what the unstaked forgo
        let gross: Vec<(ActorId, u64)> = split_by_weights(
            share,
            &producers
                .iter()
                .map(|p| (p.producer.clone(), p.records_used * p.epsilon_consumed.micro))
                .collect::<Vec<_>>(),
            "gross",
        )
        .unwrap();
        for ((id, net), (gid, g)) in d.payouts.iter().zip(&gross) {
            prop_assert_eq!(id, gid);
            let staked = producers.iter().find(|p| &p.producer == id).unwrap().staked;
            if staked {
                prop_assert_eq!(net, g);
            } else {
                prop_assert_eq!(u128::from(*net), u128::from(*g) * u128::from(multiplier_bp) / 10_000);
            }
        }
    }

    #[test]
    fn settlement_never_charges_above_escrow(
        n_vaults in 0u32..50, cap in 0u64..1_000_000, used in 0u64..1_000_000, micro in 0u64..10_000_000,
        rounds in prop::collection::vec(0u32..20, 0..30),
    ) {
        let prices = PolicyParams::default_v1().prices;
        let q = |n_records| TaskUsage::Query(QueryUsage { n_vaults, n_records, epsilon: Epsilon::from_micro(micro) });
        let estimate = task_fee(&prices, &q(cap)).unwrap();
        let s = settle_fee(&prices, estimate, &q(used)).unwrap();
        prop_assert_eq!(s.charged_micro_sym + s.refund_micro_sym, estimate);
        prop_assert!(s.charged_micro_sym <= estimate);
        prop_assert_eq!(s.clamped, used > cap);
        // train: a round with fewer Vaults never costs more
        let full = TaskUsage::Train(TrainUsage { vaults_per_round: rounds.iter().map(|_| 20).collect(), total_epsilon: Epsilon::from_micro(micro) });
        let actual = TaskUsage::Train(TrainUsage { vaults_per_round: rounds, total_epsilon: Epsilon::from_micro(micro) });
        prop_assert!(task_fee(&prices, &actual).unwrap() <= task_fee(&prices, &full).unwrap());
    }

    #[test]
    fn slashing_never_exceeds_stake(
        stake in any::<u64>(),
        priors in prop::collection::vec(0u64..2_000, 0..40),
        now in 0u64..2_000,
        minor in 1u16..=10_000,
    ) {
        let sched = SlashingSchedule { minor_bp: minor, major_bp: minor.max(1_000), critical_bp: 10_000, repeat_window_epochs: 720 };
        let priors: Vec<EpochId> = priors.into_iter().map(EpochId).collect();
        for offence in [Offence::Unavailability, Offence::InvalidResult, Offence::Equivocation] {
            let out = slash(stake, offence, &priors, EpochId(now), &sched);
            prop_assert!(out.slashed_micro_sym <= stake);
            prop_assert_eq!(out.slashed_micro_sym + out.remaining_micro_sym, stake);
            prop_assert!(out.fraction_bp <= 10_000);
        }
    }
}

fn monthly_params() -> PolicyParams {
    let mut p = PolicyParams::default_v1();
    // 365 days / 73 = 5-day epochs, 73 per year: keeps exhaustive year sums cheap.
    p.epochs.epoch_length_ms = symphony_economics::policy::YEAR_MS / 73;
    p.validate().unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inflation_year_sums_exactly_and_never_overflows(supply in any::<u64>(), year in 0u64..8) {
        let p = monthly_params();
        let epy = p.epochs.epochs_per_year().unwrap();
        let mut total: u128 = 0;
        for k in 0..epy {
            let m = symphony_economics::rewards::inflation_mint_for_epoch(&p, EpochId(year * epy + k), supply).unwrap();
            total += u128::from(m);
        }
        let rate = symphony_economics::rewards::annual_inflation_bp(&p.rewards.inflation_schedule_bp, year);
        prop_assert_eq!(total, u128::from(supply) * u128::from(rate) / 10_000);
    }

    /// Random proposal sequences: the active version at any epoch is the latest one
    /// activated at or before it, a task resolves its admitted version forever after,
    /// and no version resolves before it activates.
    #[test]
    fn registry_activation_is_monotone(
        steps in prop::collection::vec((0u64..5, 1u64..5), 1..12),
        probe in 0u64..80,
    ) {
        use symphony_core::{PolicyVersion, SemanticVersion};
        use symphony_economics::registry::PolicyRegistry;
        let mut reg = PolicyRegistry::genesis(PolicyParams::default_v1()).unwrap();
        let mut activations = vec![0u64];
        let mut now = 0u64;
        for (wait, delay) in steps {
            now += wait;
            let activation = now + delay;
            let result = reg.propose(PolicyParams::default_v1(), EpochId(now), EpochId(activation));
            if activation > *activations.last().unwrap() {
                prop_assert!(result.is_ok());
                activations.push(activation);
            } else {
                prop_assert!(result.is_err());
            }
        }
        let expected = activations.iter().rposition(|&a| a <= probe).unwrap() as u32 + 1;
        prop_assert_eq!(reg.active_version_at(EpochId(probe)), Some(PolicyVersion(expected)));
        for (i, &a) in activations.iter().enumerate() {
            let v = PolicyVersion(i as u32 + 1);
            let r = reg.resolve(EpochId(probe), SemanticVersion(1), v);
            prop_assert_eq!(r.is_ok(), a <= probe);
            if let Ok(r) = r {
                prop_assert_eq!(r.superseded, v != PolicyVersion(expected));
            }
        }
    }
}
