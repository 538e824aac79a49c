//! The accountant against golden values from Google's `dp-accounting`
//! (`scripts/gen_accountant_golden.py` writes `tests/data/accountant_golden.csv`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use symphony_train::accountant::{epsilon, RdpAccountant};

const GOLDEN: &str = include_str!("data/accountant_golden.csv");

struct Row {
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    epsilon: f64,
}

fn rows() -> Vec<Row> {
    GOLDEN
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("q,") && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "bad line {l}");
            Row {
                q: f[0].parse().unwrap(),
                sigma: f[1].parse().unwrap(),
                steps: f[2].parse().unwrap(),
                delta: f[3].parse().unwrap(),
                epsilon: f[4].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn matches_dp_accounting_to_1e_3_relative() {
    let rows = rows();
    assert_eq!(rows.len(), 5 * 4 * 4 * 2, "the whole grid must be present");
    let mut failures = Vec::new();
    let mut worst: f64 = 0.0;
    for r in &rows {
        let ours = epsilon(r.q, r.sigma, r.steps, r.delta).unwrap();
        let rel = ((ours - r.epsilon) / r.epsilon).abs();
        worst = worst.max(rel);
        if rel.is_nan() || rel > 1e-3 {
            failures.push(format!(
                "q={} sigma={} steps={} delta={}: ours {ours} golden {} (rel {rel:.2e})",
                r.q, r.sigma, r.steps, r.delta, r.epsilon
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("worst relative error {worst:.3e}");
}

#[test]
fn composing_round_by_round_equals_composing_at_once() {
    let mut acc = RdpAccountant::new();
    for _ in 0..10 {
        acc.compose_poisson_gaussian(0.01, 1.0, 10).unwrap();
    }
    let at_once = epsilon(0.01, 1.0, 100, 1e-5).unwrap();
    let by_round = acc.epsilon(1e-5).unwrap();
    assert!((at_once - by_round).abs() <= 1e-12 * at_once);
}

mod monotonicity {
    use proptest::prelude::*;
    use symphony_train::accountant::{epsilon, max_steps_within};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn more_steps_never_less_epsilon(
            q in 0.001f64..0.5,
            sigma in 0.6f64..4.0,
            steps in 1u64..500,
            extra in 1u64..500,
        ) {
            let a = epsilon(q, sigma, steps, 1e-5).unwrap();
            let b = epsilon(q, sigma, steps + extra, 1e-5).unwrap();
            prop_assert!(b >= a, "eps({}) = {} > eps({}) = {}", steps, a, steps + extra, b);
        }

        #[test]
        fn more_noise_never_more_epsilon(q in 0.001f64..0.5, sigma in 0.6f64..4.0, steps in 1u64..200) {
            let a = epsilon(q, sigma, steps, 1e-5).unwrap();
            let b = epsilon(q, sigma * 1.5, steps, 1e-5).unwrap();
            prop_assert!(b <= a);
        }

        #[test]
        fn max_steps_respects_budget(q in 0.001f64..0.2, sigma in 0.8f64..3.0, budget in 0.5f64..8.0) {
            let steps = max_steps_within(q, sigma, 1e-5, budget).unwrap();
            if steps > 0 {
                prop_assert!(epsilon(q, sigma, steps, 1e-5).unwrap() <= budget);
            }
            prop_assert!(epsilon(q, sigma, steps + 1, 1e-5).unwrap() > budget);
        }
    }
}
