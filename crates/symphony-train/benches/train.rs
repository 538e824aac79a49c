//! Throughput figures (plain `Instant` timing, `harness = false`):
//! * one DP-SGD epoch over 1M examples × 16 features (Poisson q = 0.001, 1000 steps);
//! * secure aggregation (mask + sum, and with one dropout recovered) for 8 participants;
//! * federated rounds over 8 Vaults holding 1M examples in total, with held-out
//!   accuracy/AUC against non-private centralized logistic regression.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use ndarray::{Axis, Slice};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use symphony_train::accountant::epsilon;
use symphony_train::dpsgd::{
    train_local, Dataset, DpSgdConfig, LogisticRegression, Model, Sampling,
};
use symphony_train::metrics::{accuracy, auc};
use symphony_train::secagg::{
    fedavg_prescale, Aggregator, Participant, ParticipantId, Quantizer, Roster,
};
use symphony_train::synthetic::linear_dataset;

const N: usize = 1_000_000;
const D: usize = 16;
const VAULTS: usize = 8;

fn main() {
    let t = Instant::now();
    let all = linear_dataset(N + 100_000, D, 0.05, 42).unwrap();
    let (train, test) = all.split_at(N).unwrap();
    println!(
        "synthetic data: {} x {D} in {:.2} s",
        N + 100_000,
        t.elapsed().as_secs_f64()
    );

    bench_dpsgd_epoch(&train);
    bench_secagg(D + 1);
    bench_secagg(100_000);
    bench_federated_rounds(&train, &test);
}

fn bench_dpsgd_epoch(train: &Dataset) {
    let q = 0.001;
    let cfg = DpSgdConfig {
        learning_rate: 0.5,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        sampling: Sampling::Poisson { rate: q },
        steps: (1.0 / q) as u64,
    };
    let t = Instant::now();
    let out = train_local(&LogisticRegression::zeros(D), train, &cfg, [1; 32]).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "dpsgd epoch: {} steps, {} examples in {:.3} s -> {:.0} examples/s",
        out.steps,
        out.examples_processed,
        secs,
        out.examples_processed as f64 / secs
    );
}

fn bench_secagg(len: usize) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let participants: Vec<Participant> = (0..VAULTS as u32)
        .map(|i| Participant::from_rng(ParticipantId(i), &mut rng))
        .collect();
    let roster = Roster::new(participants.iter().map(|p| (p.id(), p.public_key()))).unwrap();
    let updates: Vec<Vec<u32>> = (0..VAULTS)
        .map(|_| (0..len).map(|_| rng.gen()).collect())
        .collect();
    let threshold = 5u8;
    for drop in [false, true] {
        let reps = if len > 1000 { 5 } else { 200 };
        let t = Instant::now();
        for _ in 0..reps {
            let shares: Vec<_> = participants
                .iter()
                .map(|p| p.deal_shares(&roster, threshold, &mut rng).unwrap())
                .collect();
            let mut agg = Aggregator::new(roster.clone(), 1, threshold, len).unwrap();
            for (p, u) in participants.iter().zip(&updates) {
                let masked = p.mask(&roster, 1, u).unwrap();
                if !(drop && p.id() == ParticipantId(3)) {
                    agg.add_masked(masked).unwrap();
                }
            }
            if drop {
                for f in shares[3].iter().take(usize::from(threshold)) {
                    agg.add_recovery_share(f.owner, f.holder, f.share.clone())
                        .unwrap();
                }
            }
            std::hint::black_box(agg.finish().unwrap());
        }
        let per = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "secagg {VAULTS} participants, {len} words, {}: {:.3} ms per round (deal + mask + sum{})",
            if drop { "1 dropout" } else { "no dropout" },
            per * 1e3,
            if drop { " + recovery" } else { "" }
        );
    }
}

fn bench_federated_rounds(train: &Dataset, test: &Dataset) {
    // Centralized non-private baseline.
    let baseline_cfg = DpSgdConfig {
        learning_rate: 0.5,
        clip_norm: 1e6,
        noise_multiplier: 0.0,
        sampling: Sampling::Poisson { rate: 0.001 },
        steps: 1000,
    };
    let base = train_local(&LogisticRegression::zeros(D), train, &baseline_cfg, [9; 32]).unwrap();
    let p = base.model.predict_proba(test).unwrap();
    println!(
        "baseline (centralized, non-private, 1 epoch): acc {:.4} auc {:.4}",
        accuracy(&p, test.labels(), 0.5).unwrap(),
        auc(&p, test.labels()).unwrap()
    );

    let per_vault = train.len() / VAULTS;
    let shards: Vec<Dataset> = (0..VAULTS)
        .map(|k| shard(train, k * per_vault, per_vault))
        .collect();
    let (q, sigma, local_steps, rounds) = (0.01, 1.0, 10u64, 20u64);
    let cfg = DpSgdConfig {
        learning_rate: 0.5,
        clip_norm: 1.0,
        noise_multiplier: sigma,
        sampling: Sampling::Poisson { rate: q },
        steps: local_steps,
    };
    let quant = Quantizer::new((1u32 << 20) as f64, 64.0, VAULTS as u32).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut global = LogisticRegression::zeros(D);
    let total = train.len() as u64;
    let mut examples = 0u64;
    let t = Instant::now();
    for round in 0..rounds {
        let participants: Vec<Participant> = (0..VAULTS as u32)
            .map(|i| Participant::from_rng(ParticipantId(i), &mut rng))
            .collect();
        let roster = Roster::new(participants.iter().map(|p| (p.id(), p.public_key()))).unwrap();
        let mut agg = Aggregator::new(roster.clone(), round, 5, D + 1).unwrap();
        for (k, (p, shard)) in participants.iter().zip(&shards).enumerate() {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&round.to_le_bytes());
            seed[8] = k as u8;
            let local = train_local(&global, shard, &cfg, seed).unwrap();
            examples += local.examples_processed;
            let update = fedavg_prescale(
                &local.update_from(&global).unwrap(),
                shard.len() as u64,
                total,
            )
            .unwrap();
            agg.add_masked(
                p.mask(&roster, round, &quant.encode(&update).unwrap())
                    .unwrap(),
            )
            .unwrap();
        }
        global
            .add_to_parameters(&quant.decode(&agg.finish().unwrap()))
            .unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let p = global.predict_proba(test).unwrap();
    // Each Vault holds disjoint subjects; per-subject privacy is that of one Vault's run.
    let eps = epsilon(q, sigma, local_steps * rounds, 1e-6).unwrap();
    println!(
        "federated: {VAULTS} Vaults x {per_vault} examples, {rounds} rounds x {local_steps} local steps: \
         {:.2} rounds/s, {:.0} examples/s; acc {:.4} auc {:.4} at eps {:.3} (delta 1e-6)",
        rounds as f64 / secs,
        examples as f64 / secs,
        accuracy(&p, test.labels(), 0.5).unwrap(),
        auc(&p, test.labels()).unwrap(),
        eps
    );
}

fn shard(data: &Dataset, start: usize, len: usize) -> Dataset {
    let rows = Slice::from(start..start + len);
    let features = data.features().slice_axis(Axis(0), rows).to_owned();
    Dataset::new(features, data.labels()[start..start + len].to_vec()).unwrap()
}
