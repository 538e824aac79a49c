//! Federated training end to end on a small embedded network (seed 003).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use symphony_core::consent::UsageScope;
use symphony_core::encoding::Digest;
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, EpochId, SubjectId, TaskId};
use symphony_core::lifecycle::SliceState;
use symphony_master::{
    proposal_message, vote_message, Command, MasterState, ProposalId, ProposalKind,
};
use symphony_node::enterprise::EnterpriseEndpoint;
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Quiet};
use symphony_node::replication::{Committed, LocalReplicator, ReplicationError, Replicator};
use symphony_node::settlement::{composite_by_epoch, verify_composite};
use symphony_node::training::{
    composite_settlement, permit_training, run_training, TrainOutcome, TrainingRequest,
    TrainingSpec,
};

const NOW_MS: u64 = 1_795_219_200_000;
const DAY_MS: u64 = 86_400_000;
const SPEC: &str = include_str!("../../../examples/train.toml");

fn spec(edit: impl FnOnce(&mut TrainingSpec)) -> TrainingSpec {
    let mut s = TrainingSpec::parse(SPEC).unwrap();
    s.iteration_policy.max_rounds = 4;
    s.acceptance.min_auc = 0.0;
    s.acceptance.max_mia_advantage = 0.5;
    edit(&mut s);
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

fn run(net: &mut EmbeddedNetwork, spec: TrainingSpec, registry: &Path) -> TrainOutcome {
    let key = advertiser_key(7, &spec.model_operator);
    let req = TrainingRequest::sign(spec, 1, &key).unwrap();
    run_training(net, &req, registry, 7, &mut Quiet).unwrap()
}

fn model_bytes(o: &TrainOutcome) -> Vec<u8> {
    std::fs::read(o.model_path.as_ref().unwrap()).unwrap()
}

fn parameters(bytes: &[u8]) -> Vec<f64> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + n..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn composite_hierarchy_lifecycles_and_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(|s| {
        s.iteration_policy.convergence_threshold = 0.0;
        s.iteration_policy.early_stop_patience = 0;
    });
    let operator = s.model_operator.clone();
    let mut net = network(dir.path(), &operator);
    let o = run(&mut net, s, &dir.path().join("registry"));
    assert_eq!(
        o.states,
        [
            "accepted",
            "resolving",
            "dispatched",
            "verifying",
            "awaiting_settlement",
            "completed"
        ]
    );
    assert_eq!(
        (o.rounds_run, o.stop_reason.as_str()),
        (4, "convergence_not_reached")
    );
    assert!(o.convergence_not_reached && !o.converged);
    let state = net.master.masters.state();
    let task = state.tasks().next().unwrap().envelope.task_id().clone();
    let c = state.composite(&task).unwrap();
    let (n, m) = (4usize, 3usize);
    assert_eq!(c.tree.object_count(), 1 + n + n * m);
    assert_eq!((o.n_objects, o.n_slices), (1 + n + n * m, n * m));
    for round in &c.tree.rounds {
        assert_eq!(round.state.to_string(), "completed");
        assert!(round
            .slices
            .values()
            .all(|s| s.state == SliceState::Verified));
    }
    assert_eq!(c.round_settlements.len(), n);
    // Rounds of 15 simulated minutes: round 3 is dispatched (and settles) in epoch 0,
    // every epoch recorded is the round's dispatch epoch.
    for (r, (epoch, fee)) in &c.round_settlements {
        assert_eq!(*epoch, c.tree.rounds[*r as usize].epoch_id);
        assert!(*fee > 0);
    }
    let spent: u64 = c.rounds.values().map(|r| r.epsilon_micro).sum();
    assert_eq!(spent, o.epsilon_spent_micro);
    assert!(state
        .audit_log()
        .iter()
        .any(|e| e.kind == "result_delivered" && e.task_id == task));
    // safetensors header + card + curve delivered.
    let bytes = model_bytes(&o);
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(header["weights"]["dtype"], "F64");
    assert_eq!(parameters(&bytes).len(), 15);
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(o.model_card_path.as_ref().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(card["rounds_run"], 4);
    assert_eq!(card["semantic_version"], "sem-v1");
    // What a data scientist needs to read the metrics: held-out size and class
    // balance, the majority-class baseline, each feature's definition.
    let n = card["holdout_size"].as_u64().unwrap();
    assert!(n > 0 && n == o.holdout_size, "{card}");
    let pos = card["class_balance"]["positive_rate"].as_f64().unwrap();
    assert!(pos > 0.0 && pos < 1.0, "{card}");
    let base = card["baseline_accuracy"].as_f64().unwrap();
    assert!((base - pos.max(1.0 - pos)).abs() < 1e-12, "{card}");
    let features = card["features"].as_array().unwrap();
    assert_eq!(features.len(), 14, "{card}");
    assert!(features
        .iter()
        .all(|f| f["name"].is_string() && f["definition"].as_str().unwrap().len() > 20));
    // The curve: the PNG and the CSV of exactly the plotted values, from round 1.
    let curve = o.curve_path.as_ref().unwrap();
    assert!(std::fs::metadata(curve).unwrap().len() > 10_000);
    let csv = std::fs::read_to_string(std::path::Path::new(curve).with_extension("csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "round,train_loss,holdout_loss,epsilon_cumulative");
    assert_eq!(rows.len(), 1 + 4, "{csv}");
    assert!(rows[1].starts_with("1,"), "{csv}");
    // Round 1's losses are those released at the start of round 2 (the model after
    // one round); the model after the last round has none.
    let first: Vec<&str> = rows[1].split(',').collect();
    assert_eq!(first[1], format!("{:.6}", o.rounds[1].train_loss));
    assert_eq!(first[3], format!("{:.6}", o.rounds[0].epsilon_cumulative));
    assert!(rows[4].starts_with("4,,,"), "{csv}");
}

#[test]
fn budget_exhaustion_stops_early_and_still_settles() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(|s| {
        s.iteration_policy.max_rounds = 12;
        s.iteration_policy.convergence_threshold = 0.0;
        s.iteration_policy.early_stop_patience = 0;
        s.privacy.epsilon = "0.4".into();
    });
    let operator = s.model_operator.clone();
    let mut net = network(dir.path(), &operator);
    let o = run(&mut net, s, &dir.path().join("registry"));
    assert_eq!(o.stop_reason, "budget_exhausted");
    assert!(o.rounds_run >= 1 && o.rounds_run < 12, "{}", o.rounds_run);
    assert!(!o.convergence_not_reached);
    assert!(o.epsilon_spent_micro <= 400_000);
    assert_eq!(o.states.last().map(String::as_str), Some("completed"));
    assert!(o.fee_total > 0);
    // Per subject: what a used subject has committed is exactly the run's ε, and no
    // reservation of the run is left behind.
    let vault = net.enterprises[0].vault();
    let consented = vault
        .consented_subjects(UsageScope::Training, NOW_MS)
        .unwrap();
    let mut max_committed = 0;
    for s in &consented {
        let acc = vault.budget_account(s, UsageScope::Training).unwrap();
        assert_eq!(acc.reserved().micro, 0);
        max_committed = max_committed.max(acc.committed().micro);
    }
    assert_eq!(max_committed, o.epsilon_spent_micro);
}

/// Writes many Luckin purchases before the label cutoff (and none after) for
/// `subjects`, optionally granting them training consent: data that would drag the
/// purchase-frequency weight if it were used.
fn poison(net: &EmbeddedNetwork, dir: &Path, subjects: &[String], grant: bool) {
    let vault = net.enterprises[0].vault();
    let path = dir.join("poison.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for s in subjects {
        for k in 0..40u64 {
            let ts = NOW_MS - 20 * DAY_MS - k * 3_600_000;
            writeln!(f, r#"{{"kind":"purchase","subject":"{s}","brand":"Luckin Coffee","category":"coffee","amount_minor":99999,"currency":"SGD","ts_ms":{ts},"store_city":"Singapore","store_country":"SG"}}"#).unwrap();
        }
    }
    drop(f);
    symphony_vault::import_file(vault, &path, &Default::default(), &mut |_| {}).unwrap();
    if grant {
        let path = dir.join("consent.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        for s in subjects {
            writeln!(f, r#"{{"kind":"consent","vault":"{}","subject":"{s}","scope":"training","granted":true,"at_ms":{}}}"#, vault.vault_id(), NOW_MS - 200 * DAY_MS).unwrap();
        }
        drop(f);
        symphony_vault::import_file(vault, &path, &Default::default(), &mut |_| {}).unwrap();
    }
}

fn non_consenting_in_market(net: &EmbeddedNetwork, operator: &str) -> Vec<String> {
    let vault = net.enterprises[0].vault();
    let consented: BTreeSet<SubjectId> = vault
        .consented_subjects(UsageScope::Training, NOW_MS)
        .unwrap();
    let auth = vault
        .authorize(&ActorId::new(operator).unwrap(), TaskClass::Train)
        .unwrap();
    let mut out = Vec::new();
    vault
        .for_each_subject(&auth, |v| {
            let sid = SubjectId::new(v.subject).unwrap();
            if !consented.contains(&sid) && v.geography.is_some_and(|g| g.home_country == "SG") {
                out.push(v.subject.to_owned());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

#[test]
fn same_seed_same_bytes_and_non_consenting_subjects_contribute_nothing() {
    let s = spec(|_| {});
    let operator = s.model_operator.clone();
    let run_with = |poisoned: Option<bool>| {
        let dir = tempfile::tempdir().unwrap();
        let mut net = network(dir.path(), &operator);
        if let Some(grant) = poisoned {
            let victims = non_consenting_in_market(&net, &operator);
            assert!(victims.len() > 50, "{}", victims.len());
            poison(&net, dir.path(), &victims, grant);
        }
        let o = run(&mut net, s.clone(), &dir.path().join("registry"));
        model_bytes(&o)
    };
    let clean = run_with(None);
    let clean_again = run_with(None);
    assert_eq!(clean, clean_again, "same seed → identical model bytes");
    let poisoned_without_consent = run_with(Some(false));
    assert_eq!(
        clean, poisoned_without_consent,
        "subjects without training consent must not reach any gradient"
    );
    // Control: the same poison with consent moves the model visibly.
    let poisoned_with_consent = run_with(Some(true));
    let (a, b) = (parameters(&clean), parameters(&poisoned_with_consent));
    let distance: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    assert!(
        distance > 0.05,
        "poison with consent moved the model by only {distance}"
    );
}

/// The masters, with governance closing the epoch (a `close_epoch` proposal filed
/// by master-0 and approved by master-1, as the gateway would commit it) right
/// after round `after` of a training run closes.
struct CloseEpochAfterRound {
    inner: Box<dyn Replicator + Send>,
    after: u32,
    closed: bool,
    /// Every command committed through it, in order (for replay).
    committed: std::sync::Arc<std::sync::Mutex<Vec<Command>>>,
}

impl Replicator for CloseEpochAfterRound {
    fn submit(&mut self, command: Command) -> Result<Committed, ReplicationError> {
        let closes = matches!(&command, Command::CloseRound { round, .. } if *round == self.after);
        let committed = self.inner.submit(command.clone())?;
        self.committed.lock().unwrap().push(command.clone());
        if closes && !self.closed {
            self.closed = true;
            self.close_epoch()?;
        }
        Ok(committed)
    }
    fn state(&self) -> &MasterState {
        self.inner.state()
    }
    fn master_keys(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        self.inner.master_keys()
    }
    fn sign_as(&self, index: u8, msg: &[u8]) -> Option<ed25519_dalek::Signature> {
        self.inner.sign_as(index, msg)
    }
}

impl CloseEpochAfterRound {
    fn close_epoch(&mut self) -> Result<(), ReplicationError> {
        let at_ms = NOW_MS;
        let kind = ProposalKind::CloseEpoch;
        let msg = proposal_message(&kind, at_ms).unwrap();
        let signature = self.inner.sign_as(0, &msg.0).unwrap().to_bytes().to_vec();
        let id = ProposalId(self.inner.state().governance().proposals.len() as u64);
        for command in [
            Command::Propose {
                kind,
                by: 0,
                at_ms,
                signature,
            },
            Command::Vote {
                proposal: id,
                by: 1,
                approve: true,
                at_ms,
                signature: self
                    .inner
                    .sign_as(1, &vote_message(id, true).unwrap().0)
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            },
        ] {
            self.inner.submit(command.clone())?;
            self.committed.lock().unwrap().push(command);
        }
        Ok(())
    }
}

/// Issue #13: an epoch closes between rounds 1 and 2 of a four-round run. Rounds
/// 0-1 are dispatched and settle in epoch 0, rounds 2-3 in epoch 1 (the real
/// replicated epochs); the task keeps the epoch and policy of its admission; its
/// payout is in epoch 1's sealed payout set (its `finalizing` committed there),
/// never in epoch 0's.
#[test]
fn composite_settlement_links_every_round_across_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(|s| {
        s.iteration_policy.convergence_threshold = 0.0;
        s.iteration_policy.early_stop_patience = 0;
    });
    let operator = s.model_operator.clone();
    let mut net = network(dir.path(), &operator);
    symphony_node::governance::ensure_configured(&mut net.master).unwrap();
    // A policy change approved in epoch 0 (per-round fees doubled) activates at the
    // boundary the run crosses; the task keeps policy v1 for every round.
    let v1 = symphony_economics::PolicyParams::default_v1();
    let mut v2 = v1.clone();
    v2.prices.train.per_round_vault_compute_fee_micro_sym *= 2;
    v2.prices.train.per_round_aggregation_fee_micro_sym *= 2;
    let id = symphony_node::governance::propose_policy(&mut net.master, v2, None, 2).unwrap();
    symphony_node::governance::vote(&mut net.master, id, 0, true).unwrap();
    let inner = std::mem::replace(&mut net.master.masters, Box::new(LocalReplicator::new(0)));
    let before_run = inner.state().clone();
    let committed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    net.master.masters = Box::new(CloseEpochAfterRound {
        inner,
        after: 1,
        closed: false,
        committed: committed.clone(),
    });
    let o = run(&mut net, s, &dir.path().join("registry"));
    assert_eq!(o.rounds_run, 4);
    assert_eq!(o.states.last().map(String::as_str), Some("completed"));
    let task = TaskId::new(o.task_id.clone()).unwrap();
    {
        let state = net.master.masters.state();
        assert_eq!(state.current_epoch(), EpochId(1));
        let body = state.task(&task).unwrap().envelope.body().clone();
        assert_eq!((body.epoch_id, body.policy_version.0), (EpochId(0), 1));
        let round_epochs: Vec<u64> = state
            .composite(&task)
            .unwrap()
            .tree
            .rounds
            .iter()
            .map(|r| r.epoch_id.0)
            .collect();
        assert_eq!(round_epochs, [0, 0, 1, 1]);
        let sealed0 = &state.governance().history[0].payouts;
        assert!(!sealed0.tasks.contains(&task), "{sealed0:?}");
        // Rounds 0-1 closed in epoch 0: their compute + aggregation fees are epoch
        // 0's sealed payout set, and nothing else is.
        let c = state.composite(&task).unwrap();
        let round_ids: Vec<TaskId> = (0..4)
            .map(|r| symphony_master::round_payout_id(&task, r).unwrap())
            .collect();
        assert_eq!(sealed0.tasks, round_ids[..2], "{sealed0:?}");
        let payout_epochs: Vec<u64> = c.round_payouts.values().map(|p| p.payout_epoch.0).collect();
        assert_eq!(payout_epochs, [0, 0, 1, 1]);
        assert_eq!(
            sealed0.total_micro_sym,
            c.round_payouts[&0].fee_micro_sym + c.round_payouts[&1].fee_micro_sym
        );
        let mut recipients0 = BTreeMap::<String, u64>::new();
        for r in [0, 1] {
            for (who, a) in &c.round_payouts[&r].fee_shares {
                *recipients0.entry(who.clone()).or_default() += a;
            }
            // The round's fee in the train formula (policy v1: compute per verified
            // slice + aggregation), split by the fee shares (the treasury's too).
            let verified = c
                .slices
                .iter()
                .filter(|((rr, _), s)| *rr == r && s.state == SliceState::Verified)
                .count() as u64;
            let p = &c.round_payouts[&r];
            assert_eq!(
                p.fee_micro_sym,
                v1.prices.train.per_round_vault_compute_fee_micro_sym * verified
                    + v1.prices.train.per_round_aggregation_fee_micro_sym
            );
            assert_eq!(p.fee_shares.values().sum::<u64>(), p.fee_micro_sym);
            assert!(p.fee_shares["treasury"] > 0, "{p:?}");
            assert_eq!(c.round_settlements[&r].1, p.fee_micro_sym);
        }
        assert_eq!(sealed0.recipients, recipients0);
        assert!(sealed0.total_micro_sym > 0);
        // Policy v2 is active in epoch 1, yet every round is priced by v1, the
        // policy of the task's admission (rounds 2-3 settled in epoch 1 too).
        assert_eq!(state.active_policy_version().0, 2);
        let c = state.composite(&task).unwrap();
        let tp = &v1.prices.train;
        for (r, (_, fee)) in &c.round_settlements {
            let vaults = c.tree.rounds[*r as usize].slices.len() as u64;
            let v1_fee = tp.per_round_vault_compute_fee_micro_sym * vaults
                + tp.per_round_aggregation_fee_micro_sym;
            assert_eq!(*fee, v1_fee, "round {r}");
        }
    }
    // Epoch 1 closes: its sealed payout set holds the task, once.
    let vaults: Vec<&dyn EnterpriseEndpoint> = net
        .enterprises
        .iter()
        .map(|e| e as &dyn EnterpriseEndpoint)
        .collect();
    symphony_node::governance::close_epoch_by_proposal(&mut net.master, &vaults).unwrap();
    {
        let state = net.master.masters.state();
        let sealed1 = &state.governance().history[1].payouts;
        assert_eq!(
            sealed1.tasks.iter().filter(|t| **t == task).count(),
            1,
            "{sealed1:?}"
        );
        assert!(sealed1.total_micro_sym > 0);
        // Rounds 2-3 are in epoch 1's set with the parent; each payout exactly once
        // across the sealed sets.
        let sub = |r| symphony_master::round_payout_id(&task, r).unwrap();
        let mut expected1 = vec![task.clone(), sub(2), sub(3)];
        expected1.sort();
        assert_eq!(sealed1.tasks, expected1, "{sealed1:?}");
        let all: Vec<&TaskId> = state
            .governance()
            .history
            .iter()
            .flat_map(|h| &h.payouts.tasks)
            .collect();
        let unique: BTreeSet<&TaskId> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len());
        assert_eq!(all.len(), 5);
        // The escrow adds up to the µSYM: locked = Σ round payouts + parent + refund.
        let c = state.composite(&task).unwrap();
        let rounds: u64 = c.round_payouts.values().map(|p| p.fee_micro_sym).sum();
        let rounds_1 = c.round_payouts[&2].fee_micro_sym + c.round_payouts[&3].fee_micro_sym;
        let parent = sealed1.total_micro_sym - rounds_1;
        let sealed_total: u64 = state
            .governance()
            .history
            .iter()
            .map(|h| h.payouts.total_micro_sym)
            .sum();
        assert_eq!(sealed_total, rounds + parent);
        let rec = state.task(&task).unwrap();
        let locked = rec
            .envelope
            .body()
            .budget_lock_ref
            .as_ref()
            .unwrap()
            .amount_base_units;
        let settlement = rec.settlement.as_ref().unwrap();
        assert_eq!(settlement.fee_total, rounds + parent);
        assert_eq!(settlement.fee_total, o.fee_total);
        assert_eq!(settlement.refund, o.refund);
        assert_eq!(rounds + parent + o.refund, locked);
        assert!(parent > 0 && rounds > 0);
        // Replay: the committed commands, applied to the state before the run,
        // give the same state root.
        let mut replayed = before_run.clone();
        for command in committed.lock().unwrap().iter() {
            replayed.apply(command).unwrap();
        }
        assert_eq!(replayed.state_root().unwrap(), state.state_root().unwrap());
    }
    let stored = net
        .master
        .settlements
        .as_ref()
        .unwrap()
        .composite(&task)
        .unwrap()
        .expect("composite settlement stored");
    let state = net.master.masters.state();
    let c = state.composite(&task).unwrap();
    // One sub-task settlement per round, each in its dispatch epoch, across epochs.
    assert_eq!(stored.parent, task);
    let rounds: Vec<u32> = stored.sub_tasks.iter().map(|s| s.sub_task.round).collect();
    assert_eq!(rounds, [0, 1, 2, 3]);
    let epochs: Vec<u64> = stored.sub_tasks.iter().map(|s| s.epoch_id.0).collect();
    assert_eq!(epochs, [0, 0, 1, 1]);
    for s in &stored.sub_tasks {
        let r = s.sub_task.round;
        let (epoch, fee) = c.round_settlements[&r];
        assert_eq!((s.epoch_id, s.fee_total), (epoch, fee));
        assert_eq!(epoch, c.tree.rounds[r as usize].epoch_id);
    }
    let fees: u64 = c.round_settlements.values().map(|(_, f)| f).sum();
    assert_eq!(stored.fee_total, fees);
    assert_eq!(composite_by_epoch(&stored).len(), 2);
    let hashes: BTreeSet<Digest> = stored.sub_tasks.iter().map(|s| s.settlement_hash).collect();
    assert_eq!(hashes.len(), 4);
    assert_eq!(o.composite_link, Some(stored.link.to_hex()));
    // Replayable: from the replicated master state, and the link from its parts.
    assert_eq!(composite_settlement(state, &task).unwrap(), stored);
    assert!(verify_composite(&stored));
    // Tampering with any round's settlement breaks the link.
    let mut forged = stored.clone();
    forged.sub_tasks[2].fee_total += 1;
    assert!(!verify_composite(&forged));
    let mut forged = stored.clone();
    forged.sub_tasks[1].settlement_hash = Digest::default();
    assert!(!verify_composite(&forged));
    let mut forged = stored.clone();
    forged.sub_tasks.pop();
    assert!(!verify_composite(&forged));
}
