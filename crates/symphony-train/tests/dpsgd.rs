//! DP-SGD: bit-identical replay, the clipping bound, and learning on synthetic data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use symphony_train::dpsgd::{train_local, DpSgdConfig, LogisticRegression, Mlp, Model, Sampling};
use symphony_train::metrics::{accuracy, auc};
use symphony_train::synthetic::{linear_dataset, xor_dataset};

fn config(noise_multiplier: f64, clip_norm: f64, sampling: Sampling, steps: u64) -> DpSgdConfig {
    DpSgdConfig {
        learning_rate: 0.5,
        clip_norm,
        noise_multiplier,
        sampling,
        steps,
    }
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let data = linear_dataset(2_000, 8, 0.05, 1).unwrap();
    let init = LogisticRegression::zeros(8);
    for sampling in [
        Sampling::Poisson { rate: 0.05 },
        Sampling::FixedSize { batch_size: 64 },
    ] {
        let cfg = config(1.1, 1.0, sampling, 50);
        let a = train_local(&init, &data, &cfg, [7; 32]).unwrap();
        let b = train_local(&init, &data, &cfg, [7; 32]).unwrap();
        let bits = |m: &LogisticRegression| {
            m.parameters()
                .iter()
                .map(|p| p.to_bits())
                .collect::<Vec<u64>>()
        };
        assert_eq!(bits(&a.model), bits(&b.model));
        assert_eq!(a.examples_processed, b.examples_processed);
        // A different seed gives a different model (the test can fail).
        let c = train_local(&init, &data, &cfg, [8; 32]).unwrap();
        assert_ne!(bits(&a.model), bits(&c.model));
    }
}

#[test]
fn non_private_training_separates_separable_data() {
    let all = linear_dataset(7_000, 10, 0.0, 2).unwrap();
    let (train, test) = all.split_at(5_000).unwrap();
    let cfg = config(0.0, 1e6, Sampling::Poisson { rate: 0.02 }, 400);
    let init = LogisticRegression::zeros(10);
    let trained = train_local(&init, &train, &cfg, [1; 32]).unwrap().model;
    let probs = trained.predict_proba(&test).unwrap();
    let acc = accuracy(&probs, test.labels(), 0.5).unwrap();
    assert!(acc > 0.97, "non-private held-out accuracy {acc}");
    assert!(auc(&probs, test.labels()).unwrap() > 0.99);
}

#[test]
fn dp_training_with_moderate_noise_beats_chance_on_held_out_data() {
    let all = linear_dataset(12_000, 10, 0.0, 3).unwrap();
    let (train, test) = all.split_at(10_000).unwrap();
    let cfg = config(1.0, 1.0, Sampling::Poisson { rate: 0.01 }, 300);
    let trained = train_local(&LogisticRegression::zeros(10), &train, &cfg, [2; 32]).unwrap();
    let eps = symphony_train::accountant::epsilon(0.01, 1.0, 300, 1e-5).unwrap();
    let probs = trained.model.predict_proba(&test).unwrap();
    let acc = accuracy(&probs, test.labels(), 0.5).unwrap();
    let area = auc(&probs, test.labels()).unwrap();
    eprintln!("DP-SGD sigma=1 q=0.01 300 steps: eps={eps:.3} acc={acc:.4} auc={area:.4}");
    assert!(acc > 0.8, "DP accuracy {acc} (eps {eps})");
    assert!(area > 0.9, "DP AUC {area} (eps {eps})");
}

#[test]
fn mlp_learns_xor_where_logistic_regression_cannot() {
    let all = xor_dataset(6_000, 2, 4).unwrap();
    let (train, test) = all.split_at(5_000).unwrap();
    let cfg = DpSgdConfig {
        learning_rate: 0.5,
        clip_norm: 1e6,
        noise_multiplier: 0.0,
        sampling: Sampling::Poisson { rate: 0.02 },
        steps: 3_000,
    };
    let mlp = train_local(&Mlp::new(2, 8, [3; 32]).unwrap(), &train, &cfg, [4; 32]).unwrap();
    let lr = train_local(&LogisticRegression::zeros(2), &train, &cfg, [4; 32]).unwrap();
    let acc_mlp = accuracy(&mlp.model.predict_proba(&test).unwrap(), test.labels(), 0.5).unwrap();
    let acc_lr = accuracy(&lr.model.predict_proba(&test).unwrap(), test.labels(), 0.5).unwrap();
    assert!(acc_mlp > 0.9, "MLP accuracy on XOR {acc_mlp}");
    assert!(
        acc_lr < 0.65,
        "logistic regression accuracy on XOR {acc_lr}"
    );
    // Private MLP training (σ = 1, C = 1) still beats chance clearly.
    let private = DpSgdConfig {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        ..cfg
    };
    let dp = train_local(&Mlp::new(2, 8, [3; 32]).unwrap(), &train, &private, [5; 32]).unwrap();
    let acc_dp = accuracy(&dp.model.predict_proba(&test).unwrap(), test.labels(), 0.5).unwrap();
    assert!(acc_dp > 0.75, "DP MLP accuracy on XOR {acc_dp}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn per_example_clipped_norm_is_at_most_c(
        weights in proptest::collection::vec(-50.0f64..50.0, 6),
        bias in -50.0f64..50.0,
        x in proptest::collection::vec(-1e3f64..1e3, 5),
        label in any::<bool>(),
        clip in 1e-3f64..10.0,
    ) {
        let model = LogisticRegression::from_parameters(
            &weights[..5].iter().copied().chain([bias]).collect::<Vec<_>>(),
        ).unwrap();
        let _ = weights[5];
        let mut g = vec![0.0; 6];
        let raw = model.clipped_example_gradient(&x, label, clip, &mut g).unwrap();
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        prop_assert!(norm <= clip * (1.0 + 1e-12), "clipped norm {} > C {}", norm, clip);
        let mlp = Mlp::new(5, 3, [label as u8; 32]).unwrap();
        let mut g_mlp = vec![0.0; mlp.n_parameters()];
        mlp.clipped_example_gradient(&x, label, clip, &mut g_mlp).unwrap();
        let norm_mlp = g_mlp.iter().map(|v| v * v).sum::<f64>().sqrt();
        prop_assert!(norm_mlp <= clip * (1.0 + 1e-12), "MLP clipped norm {} > C {}", norm_mlp, clip);
        // Unclipped gradients are left alone.
        if raw <= clip {
            prop_assert!((norm - raw).abs() <= 1e-9 * raw.max(1.0));
        }
    }
}
