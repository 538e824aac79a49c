//! Secure aggregation of a training run, end to end (seed 003 "Secure aggregation":
//! no Vault's individual update is exposed to the aggregator or the model operator).
//!
//! A [`RoundTap`] records, per round, each Vault's quantized update before masking
//! (the Vault's own copy), the vectors the aggregation runtime received and the sum
//! its enclave unmasked; its fault point makes Vaults drop out of a round after the
//! masks were agreed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use symphony_core::consent::UsageScope;
use symphony_core::ids::{EpochId, PolicyVersion, SliceId, SubTaskId, TaskId, VaultId};
use symphony_core::lifecycle::SliceState;
use symphony_ledger::AccountId;
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Quiet};
use symphony_node::training::vault::derive_seed;
use symphony_node::training::{
    permit_training, run_training_tapped, RoundTap, TrainOutcome, TrainingRequest, TrainingSpec,
};
use symphony_node::NodeError;
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
    /// round → Vaults to drop out of it after the masks are agreed.
    drop_plan: BTreeMap<u32, BTreeSet<VaultId>>,
}

impl RoundTap for Recorder {
    fn drops_out(&mut self, round: u32, vault: &VaultId) -> bool {
        self.drop_plan
            .get(&round)
            .is_some_and(|set| set.contains(vault))
    }

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

/// Per Vault: the distinct ε (micro) committed by its training-consented subjects,
/// after checking that none of them keeps a reservation.
fn committed_by_vault(net: &EmbeddedNetwork) -> Vec<BTreeSet<u64>> {
    net.enterprises
        .iter()
        .map(|e| {
            let vault = e.vault();
            let mut amounts = BTreeSet::new();
            for s in &vault
                .consented_subjects(UsageScope::Training, NOW_MS)
                .unwrap()
            {
                let acc = vault.budget_account(s, UsageScope::Training).unwrap();
                assert_eq!(
                    acc.reserved().micro,
                    0,
                    "{} keeps a reservation",
                    e.vault_id()
                );
                amounts.insert(acc.committed().micro);
            }
            amounts
        })
        .collect()
}

#[test]
fn a_vault_dropping_after_mask_agreement_is_recovered_from_survivor_shares() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(3);
    let operator = s.model_operator.clone();
    let mut net = network(dir.path(), &operator);
    let vaults: Vec<VaultId> = net
        .enterprises
        .iter()
        .map(|e| e.vault_id().clone())
        .collect();
    let gone = vaults[2].clone();
    let mut tap = Recorder::default();
    tap.drop_plan.insert(1, [gone.clone()].into());
    let o = run_tapped(&mut net, s, &dir.path().join("registry"), &mut tap);
    assert_eq!(o.rounds_run, 3);
    assert!(o.accepted);
    assert_eq!(o.states.last().map(String::as_str), Some("completed"));
    assert!(o.model_path.is_some());
    // Round 1: the dropped Vault never trained; the aggregator got two vectors.
    assert_eq!(tap.dropped[&1], std::slice::from_ref(&gone));
    assert!(tap.dropped[&0].is_empty() && tap.dropped[&2].is_empty());
    assert!(!tap.updates.contains_key(&(1, gone.clone())));
    // Its subjects missed round 1, so their participation is no longer a prefix of
    // the run: they are out for good (charging them round 2 alone would undercount
    // their composed loss), and the Vault has no one left to train on.
    assert!(
        !tap.updates.contains_key(&(2, gone.clone())),
        "not back in round 2"
    );
    let inputs = &tap.inputs[&1];
    let got: Vec<&VaultId> = inputs.iter().map(|(v, _)| v).collect();
    assert_eq!(got, [&vaults[0], &vaults[1]]);
    let len = inputs[0].1.len();
    let truths: Vec<Vec<u32>> = inputs
        .iter()
        .map(|(v, _)| tap.updates[&(1, v.clone())].clone())
        .collect();
    for ((vault, masked), truth) in inputs.iter().zip(&truths) {
        assert!(agreeing(masked, truth) <= 1, "{vault}: update in clear");
    }
    // The enclave's sum is exactly the survivors' true updates …
    let sum = &tap.sums[&1];
    assert_eq!(&wrapping_sum(truths.iter(), len), sum);
    // … which needed the Shamir recovery: the survivors' masked vectors still carry
    // their pairwise masks with the dropped Vault.
    let masked_sum = wrapping_sum(inputs.iter().map(|(_, m)| m), len);
    assert!(
        agreeing(&masked_sum, sum) <= 1,
        "masks cancelled without recovery"
    );
    // The replicated state: the dropped slice timed out, the round closed on the
    // survivors' examples with quorum 2, and it settled for two Vaults' compute.
    let state = net.master.masters.state();
    let task = TaskId::new(o.task_id.clone()).unwrap();
    let c = state.composite(&task).unwrap();
    for round in 0..3u32 {
        let r = &c.tree.rounds[round as usize];
        assert_eq!(r.state.to_string(), "completed");
        for (v, slice) in &r.slices {
            let expected = if round >= 1 && *v == gone {
                SliceState::TimedOut
            } else {
                SliceState::Verified
            };
            assert_eq!(slice.state, expected, "round {round} {v}");
        }
    }
    assert_eq!(o.rounds[1].vaults, 2);
    assert!(o.round_settlements[&1].1 < o.round_settlements[&0].1);
    // Budget: the dropped Vault's own trainees committed round 0 only (round 1 was
    // released: failure before execution) and the others' every round. Persons
    // charged in a Vault while training through another commit every round;
    // nobody commits anything else, and nothing stays reserved.
    let eps: Vec<u64> = (0..3u32).map(|r| c.rounds[&r].epsilon_micro).collect();
    let all = eps[0] + eps[1] + eps[2];
    let committed = committed_by_vault(&net);
    assert!(committed[2].contains(&eps[0]), "{:?}", committed[2]);
    for (k, amounts) in committed.iter().enumerate() {
        assert!(amounts.contains(&all) || k == 2, "{k}: {amounts:?}");
        assert!(
            amounts.is_subset(&[0, eps[0], all].into()),
            "{k}: {amounts:?}"
        );
    }
    assert!(eps[1] > 0);
}

#[test]
fn below_the_shamir_threshold_the_round_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(3);
    let operator = s.model_operator.clone();
    let mut net = network(dir.path(), &operator);
    let vaults: Vec<VaultId> = net
        .enterprises
        .iter()
        .map(|e| e.vault_id().clone())
        .collect();
    let owner = AccountId::new(format!("actor:{operator}")).unwrap();
    let (owner_before, treasury_before) = (
        net.master.ledger.balance(&owner),
        net.master.ledger.balance(&AccountId::treasury()),
    );
    // Two of three Vaults drop out of round 1: one survivor, threshold 2.
    let mut tap = Recorder::default();
    tap.drop_plan
        .insert(1, [vaults[1].clone(), vaults[2].clone()].into());
    let registry = dir.path().join("registry");
    let key = advertiser_key(7, &s.model_operator);
    let req = TrainingRequest::sign(s, 1, &key).unwrap();
    let err =
        run_training_tapped(&mut net, &req, &registry, RUN_SEED, &mut Quiet, &mut tap).unwrap_err();
    assert!(
        matches!(&err, NodeError::Refused(m) if m.contains("round 1 failed")),
        "{err}"
    );
    // No partial model: round 0 aggregated, round 1 never unmasked, nothing delivered.
    assert!(tap.sums.contains_key(&0) && !tap.sums.contains_key(&1));
    assert_eq!(tap.inputs[&1].len(), 1);
    assert!(!registry.exists() || std::fs::read_dir(&registry).unwrap().next().is_none());
    let state = net.master.masters.state();
    let rec = state.tasks().next().unwrap();
    let task = rec.envelope.task_id().clone();
    assert_eq!(rec.state.to_string(), "rejected");
    let c = state.composite(&task).unwrap();
    assert!(c.rounds.contains_key(&0) && !c.rounds.contains_key(&1));
    assert!(c.result.is_none() && c.round_settlements.is_empty());
    assert!(!state
        .audit_log()
        .iter()
        .any(|e| e.kind == "result_delivered" && e.task_id == task));
    // Round 0 closed: its payout (its compute + aggregation fee split by the fee
    // shares) is in epoch 0's payout set, and the rejection pays it with the train
    // base fee to the treasury; the rest of the escrow is refunded; no one else paid.
    let body = rec.envelope.body();
    let params = net
        .master
        .policy
        .resolve(EpochId(0), body.semantic_version, PolicyVersion(1))
        .unwrap()
        .params
        .clone();
    let base = params.prices.train.base_fee_micro_sym;
    assert!(base > 0);
    let r0 = &c.round_payouts[&0];
    assert_eq!(c.round_payouts.len(), 1);
    assert_eq!(r0.payout_epoch, EpochId(0));
    let scheduled =
        &state.governance().open_payouts[&symphony_master::round_payout_id(&task, 0).unwrap()];
    assert_eq!(scheduled.fee_total_micro_sym, r0.fee_micro_sym);
    assert_eq!(scheduled.fee_shares, r0.fee_shares);
    assert!(r0.fee_micro_sym > 0);
    let share = |name: &str| r0.fee_shares.get(name).copied().unwrap_or(0);
    assert_eq!(
        net.master.ledger.balance(&owner),
        owner_before - base - r0.fee_micro_sym
    );
    assert_eq!(
        net.master.ledger.balance(&AccountId::treasury()),
        treasury_before + base + share("treasury")
    );
    for v in &vaults {
        let name = format!("actor:operator:{v}");
        let operator_account = AccountId::new(name.clone()).unwrap();
        assert_eq!(net.master.ledger.balance(&operator_account), share(&name));
    }
    // Budget: round 0 committed everywhere; round 1 committed by the survivor, which
    // executed (failure after execution commits at the estimate), released by the
    // two that dropped before executing (persons only charged there commit every
    // round that opened); round 2 released; nothing reserved.
    let schedule: Vec<u64> = body.constraints["schedule_micro"]
        .trim_matches(|ch| ch == '[' || ch == ']')
        .split(", ")
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(c.rounds[&0].epsilon_micro, schedule[0]);
    let committed = committed_by_vault(&net);
    let both = schedule[0] + schedule[1];
    assert!(committed[0].contains(&both), "{:?}", committed[0]);
    assert!(committed[0].is_subset(&[0, both].into()));
    for amounts in &committed[1..] {
        assert!(amounts.contains(&schedule[0]), "{amounts:?}");
        assert!(amounts.is_subset(&[0, schedule[0], both].into()));
    }
}
