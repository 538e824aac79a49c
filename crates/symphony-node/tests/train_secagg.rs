//! Secure aggregation of a training run, end to end (seed 003 "Secure aggregation":
//! no Vault's individual update is exposed to the aggregator or the model operator).
//!
//! A [`RoundTap`] records, per round, each Vault's quantized update before masking
//! (the Vault's own copy), the vectors the aggregation runtime received and the sum
//! its enclave unmasked.

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use symphony_core::ids::{SliceId, SubTaskId, TaskId, VaultId};
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Quiet};
use symphony_node::training::vault::derive_seed;
use symphony_node::training::{
    permit_training, run_training_tapped, RoundTap, TrainOutcome, TrainingRequest, TrainingSpec,
};
use symphony_train::secagg::{Participant, ParticipantId, Roster};

const NOW_MS: u64 = 1_795_219_200_000;
const SPEC: &str = include_str!("../../../examples/train.toml");
const RUN_SEED: u64 = 7;

fn spec(rounds: u32) -> TrainingSpec {
    let mut s = TrainingSpec::parse(SPEC).unwrap();
    s.iteration_policy.max_rounds = rounds;
    s.iteration_policy.convergence_threshold = 0.0;
    s.iteration_policy.early_stop_patience = 0;
    s.acceptance.min_auc = 0.0;
    s.acceptance.max_mia_advantage = 0.5;
    s
}

fn network(dir: &Path, operator: &str) -> EmbeddedNetwork {
    let params = NetworkParams {
        subjects: 1_500,
        vaults: 3,
        records: 15_000,
        seed: 7,
        now_ms: NOW_MS,
    };
    let net = EmbeddedNetwork::build(dir, &params, &[operator], &mut Quiet).unwrap();
    permit_training(&net, operator).unwrap();
    net
}

/// Everything the tap saw.
#[derive(Default)]
struct Recorder {
    /// (round, Vault) → the Vault's quantized update before masking.
    updates: BTreeMap<(u32, VaultId), Vec<u32>>,
    /// round → (Vault, masked vector) as handed to the aggregation runtime.
    inputs: BTreeMap<u32, Vec<(VaultId, Vec<u32>)>>,
    /// round → Vaults declared dropped.
    dropped: BTreeMap<u32, Vec<VaultId>>,
    /// round → unmasked sum.
    sums: BTreeMap<u32, Vec<u32>>,
}

impl RoundTap for Recorder {
    fn vault_update(&mut self, round: u32, vault: &VaultId, words: &[u32]) {
        self.updates.insert((round, vault.clone()), words.to_vec());
    }

    fn aggregation_inputs(
        &mut self,
        round: u32,
        masked: &[(VaultId, &[u32])],
        dropped: &[VaultId],
    ) {
        self.inputs.insert(
            round,
            masked
                .iter()
                .map(|(v, m)| (v.clone(), m.to_vec()))
                .collect(),
        );
        self.dropped.insert(round, dropped.to_vec());
    }

    fn aggregate_sum(&mut self, round: u32, sum: &[u32]) {
        self.sums.insert(round, sum.to_vec());
    }
}

fn run_tapped(
    net: &mut EmbeddedNetwork,
    spec: TrainingSpec,
    registry: &Path,
    tap: &mut dyn RoundTap,
) -> TrainOutcome {
    let key = advertiser_key(7, &spec.model_operator);
    let req = TrainingRequest::sign(spec, 1, &key).unwrap();
    run_training_tapped(net, &req, registry, RUN_SEED, &mut Quiet, tap).unwrap()
}

/// Coordinates where `a` and `b` agree.
fn agreeing(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

fn wrapping_sum<'a>(vectors: impl Iterator<Item = &'a Vec<u32>>, len: usize) -> Vec<u32> {
    let mut sum = vec![0u32; len];
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v) {
            *s = s.wrapping_add(*x);
        }
    }
    sum
}

fn wrapping_sub(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

#[test]
fn aggregator_sees_only_masked_vectors_and_only_the_sum_unmasks() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(3);
    let operator = s.model_operator.clone();
    let mut net = network(dir.path(), &operator);
    let vaults: Vec<VaultId> = net
        .enterprises
        .iter()
        .map(|e| e.vault_id().clone())
        .collect();
    let mut tap = Recorder::default();
    let o = run_tapped(&mut net, s, &dir.path().join("registry"), &mut tap);
    assert_eq!(o.rounds_run, 3);
    assert_eq!(tap.inputs.len(), 3);
    assert_eq!(tap.sums.len(), 3);
    let task = TaskId::new(o.task_id.clone()).unwrap();
    let mut previous_masks: BTreeMap<VaultId, Vec<u32>> = BTreeMap::new();
    for (round, inputs) in &tap.inputs {
        assert!(tap.dropped[round].is_empty());
        let got: Vec<&VaultId> = inputs.iter().map(|(v, _)| v).collect();
        assert_eq!(got, vaults.iter().collect::<Vec<_>>(), "round {round}");
        let len = inputs[0].1.len();
        assert_eq!(len, 15 + 4, "parameters + metric slots");
        let mut truths = Vec::new();
        for (vault, masked) in inputs {
            let truth = &tap.updates[&(*round, vault.clone())];
            assert_eq!(truth.len(), len);
            // The true update is a real, non-trivial vector …
            assert!(truth.iter().filter(|w| **w != 0).count() > len / 2);
            // … and what the aggregator received differs from it almost everywhere.
            let same = agreeing(masked, truth);
            assert!(
                same <= 1,
                "round {round} {vault}: {same}/{len} coordinates in clear"
            );
            // Not a constant shift of it either, and not the previous round's mask.
            let mask = wrapping_sub(masked, truth);
            let mut distinct = mask.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(
                distinct.len() >= len - 1,
                "round {round} {vault}: mask not random"
            );
            if let Some(prev) = previous_masks.get(vault) {
                assert!(
                    agreeing(prev, &mask) <= 1,
                    "{vault}: mask reused across rounds"
                );
            }
            previous_masks.insert(vault.clone(), mask);
            truths.push(truth.clone());
        }
        // Any two Vaults' masks differ too (masked_i − masked_j reveals nothing).
        for i in 0..inputs.len() {
            for j in i + 1..inputs.len() {
                let d_masked = wrapping_sub(&inputs[i].1, &inputs[j].1);
                let d_truth = wrapping_sub(&truths[i], &truths[j]);
                assert!(agreeing(&d_masked, &d_truth) <= 1);
            }
        }
        // Only the sum unmasks: Σ true updates = Σ masked = the enclave's sum (mod 2^32).
        let sum = &tap.sums[round];
        assert_eq!(&wrapping_sum(truths.iter(), len), sum, "round {round}");
        assert_eq!(
            &wrapping_sum(inputs.iter().map(|(_, m)| m), len),
            sum,
            "round {round}"
        );
        // Control: the sum is not matched by a partial sum.
        let partial = wrapping_sum(truths.iter().skip(1), len);
        assert!(agreeing(&partial, sum) <= 1);
        // A party knowing the run seed (the masters do) cannot rebuild a Vault's
        // secagg secret: its guess of the masks leaves the update hidden.
        let guessed: Vec<Participant> = vaults
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let slice = SliceId {
                    sub_task: SubTaskId {
                        parent: task.clone(),
                        round: *round,
                    },
                    vault: v.clone(),
                };
                let seed = derive_seed(RUN_SEED, &format!("secagg/{slice}"));
                Participant::from_rng(ParticipantId(k as u32), &mut ChaCha20Rng::from_seed(seed))
            })
            .collect();
        let roster = Roster::new(guessed.iter().map(|p| (p.id(), p.public_key()))).unwrap();
        for (k, (vault, masked)) in inputs.iter().enumerate() {
            let masks = guessed[k]
                .mask(&roster, u64::from(*round), &vec![0; len])
                .unwrap()
                .masked;
            let guess = wrapping_sub(masked, &masks);
            assert!(
                agreeing(&guess, &truths[k]) <= 1,
                "round {round} {vault}: unmasked from the run seed alone"
            );
        }
    }
}
