//! The Luckin campaign end to end on the embedded network, checked against an
//! independent computation from the generated plaintext files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::ids::{SubjectId, TaskId, VaultId};
use symphony_node::aggregation::{SelectionPolicy, AUDIENCE_HASH_TAG};
use symphony_node::network::{
    advertiser_key, recovered_outcome, CampaignOutcome, CampaignSpec, EmbeddedNetwork,
    NetworkParams, Quiet, ResultStage, SignedRequest, Tamper,
};
use symphony_node::NodeError;

const NOW_MS: u64 = 1_795_219_200_000;
const DAY_MS: u64 = 86_400_000;
const ADVERTISER: &str = "advertiser:luckin";
/// ε the default policy charges per query, micro-units.
const EPSILON_PER_QUERY_MICRO: u64 = 100_000;

fn spec(cap: u64) -> CampaignSpec {
    CampaignSpec {
        advertiser: ADVERTISER.into(),
        brand: "Luckin Coffee".into(),
        country: "SG".into(),
        city: None,
        window_days: 30,
        audience_cap: cap,
        selection: SelectionPolicy::RandomSampling,
        usage_scope: UsageScope::Marketing,
        selection_seed: 7,
        minimum_vault_quorum: None,
    }
}

fn params(seed: u64, subjects: u64) -> NetworkParams {
    NetworkParams {
        subjects,
        vaults: 4,
        records: subjects * 10,
        seed,
        now_ms: NOW_MS,
    }
}

fn build(dir: &Path, seed: u64, subjects: u64) -> EmbeddedNetwork {
    EmbeddedNetwork::build(dir, &params(seed, subjects), &[ADVERTISER], &mut Quiet).unwrap()
}

fn run(net: &mut EmbeddedNetwork, seed: u64, spec: CampaignSpec, nonce: u64) -> CampaignOutcome {
    let req = SignedRequest::sign(spec, nonce, &advertiser_key(seed, ADVERTISER)).unwrap();
    net.run_campaign(&req, &mut Quiet).unwrap()
}

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Handles eligible by the campaign's rule, computed from the plaintext files alone:
/// a Luckin purchase in the last 30 days, home country SG, marketing consent in force
/// at `now`, and at least ε-per-query budget left — per (Vault, subject) membership.
/// Also returns the handles none of whose memberships has consent and budget.
fn independent(dir: &Path, vaults: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut consent: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut spent: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in rows(&dir.join("data/consent.jsonl")) {
        let k = (
            r["vault"].as_str().unwrap().to_owned(),
            r["subject"].as_str().unwrap().to_owned(),
        );
        if r["kind"] == "consent"
            && r["scope"] == "marketing"
            && r["at_ms"].as_u64().unwrap() <= NOW_MS
        {
            consent.insert(k, r["granted"].as_bool().unwrap());
        } else if r["kind"] == "budget" && r["scope"] == "marketing" {
            spent.insert(k, r["spent_micro"].as_u64().unwrap());
        }
    }
    let mut eligible = BTreeSet::new();
    let mut usable_handles = BTreeSet::new();
    let mut all_handles = BTreeSet::new();
    for v in vaults {
        let mut handle = BTreeMap::new();
        let mut country = BTreeMap::new();
        let mut luckin = BTreeSet::new();
        for r in rows(&dir.join(format!("data/{v}.jsonl"))) {
            let s = r["subject"].as_str().unwrap().to_owned();
            match r["kind"].as_str().unwrap() {
                "identity" => drop(handle.insert(s, r["contact"].as_str().unwrap().to_owned())),
                "geography" => {
                    drop(country.insert(s, r["home_country"].as_str().unwrap().to_owned()))
                }
                _ => {
                    let ts = r["ts_ms"].as_u64().unwrap();
                    if r["brand"] == "Luckin Coffee"
                        && (NOW_MS - 30 * DAY_MS..=NOW_MS).contains(&ts)
                    {
                        luckin.insert(s);
                    }
                }
            }
        }
        for (s, h) in &handle {
            let k = (v.clone(), s.clone());
            let usable = consent.get(&k) == Some(&true)
                && 1_000_000 - spent.get(&k).copied().unwrap_or(0) >= EPSILON_PER_QUERY_MICRO;
            all_handles.insert(h.clone());
            if usable {
                usable_handles.insert(h.clone());
                if luckin.contains(s) && country.get(s).map(String::as_str) == Some("SG") {
                    eligible.insert(h.clone());
                }
            }
        }
    }
    let never_usable = all_handles.difference(&usable_handles).cloned().collect();
    (eligible, never_usable)
}

#[test]
fn audience_equals_the_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = build(dir.path(), 11, 3000);
    let vaults = net.generated.vault_ids.clone();
    let (expected, _) = independent(dir.path(), &vaults);
    assert!(
        expected.len() > 40,
        "too few eligible to be a meaningful test: {}",
        expected.len()
    );

    let out = run(&mut net, 11, spec(1_000_000), 1);
    assert_eq!(
        out.states.last().map(String::as_str),
        Some("completed"),
        "{:?}",
        out.reason
    );
    assert_eq!(
        out.states,
        [
            "accepted",
            "resolving",
            "dispatched",
            "verifying",
            "awaiting_settlement",
            "completed"
        ]
    );
    assert_eq!(out.eligible_count, expected.len() as u64);
    let delivered: BTreeSet<String> = out.audience.iter().cloned().collect();
    assert_eq!(delivered, expected);
    assert_eq!(out.settlement_state.as_deref(), Some("finalized"));
    assert_eq!(out.fee_shares.values().sum::<u64>(), out.fee_total);
    assert_eq!(out.fee_total + out.refund, out.fee_locked);
    assert_eq!(out.attestations_verified, 5);
    assert!(out.certificate_signatures >= 2);
    // Budget: every evaluated subject was charged exactly ε-per-query.
    let e = &net.enterprises[0];
    let consented = e
        .vault()
        .consented_subjects(UsageScope::Marketing, NOW_MS)
        .unwrap();
    let some = consented.iter().next().unwrap();
    let account = e
        .vault()
        .budget_account(some, UsageScope::Marketing)
        .unwrap();
    assert!(account
        .finished_of(&symphony_core::ids::TaskId::new(out.task_id.clone()).unwrap())
        .is_some());
}

#[test]
fn cap_selects_a_subset_and_replay_is_identical() {
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut net = build(dir.path(), 5, 2000);
        let (expected, _) = independent(dir.path(), &net.generated.vault_ids.clone());
        let cap = (expected.len() / 2) as u64;
        let out = run(&mut net, 5, spec(cap), 1);
        assert_eq!(out.delivered_count, cap.min(expected.len() as u64));
        assert!(
            out.audience.iter().all(|h| expected.contains(h)),
            "delivered ⊄ eligible"
        );
        hashes.push((
            out.envelope_hash.clone(),
            out.audience.clone(),
            out.fee_shares.clone(),
        ));
    }
    assert_eq!(
        hashes[0], hashes[1],
        "same seed must give byte-identical results"
    );
}

/// `(task id, result hash, audience)` of each staged result.
type StagedLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<String>)>>>;

/// Records what the leader staged, in a shared cell the test can read back.
struct Staged(StagedLog);

impl ResultStage for Staged {
    fn stage(
        &mut self,
        task_id: &TaskId,
        result_hash: &Digest,
        audience: &[String],
    ) -> Result<(), NodeError> {
        self.0
            .lock()
            .unwrap()
            .push((task_id.to_string(), result_hash.to_hex(), audience.to_vec()));
        Ok(())
    }
}

#[test]
fn staged_result_rebuilds_the_delivered_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = build(dir.path(), 3, 2000);
    let cell = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    net.master.result_stage = Some(Box::new(Staged(cell.clone())));
    let out = run(&mut net, 3, spec(150), 1);
    assert_eq!(out.states.last().unwrap(), "completed");
    let staged = cell.lock().unwrap().clone();
    assert_eq!(staged.len(), 1, "staged exactly once");
    let (task, hash, audience) = &staged[0];
    assert_eq!(task, &out.task_id);
    assert_eq!(audience, &out.audience, "staged ≠ delivered");
    assert_eq!(
        &content_hash(AUDIENCE_HASH_TAG, audience).unwrap().to_hex(),
        hash
    );
    // A master taking over rebuilds the same outcome from replicated state alone.
    let tid = TaskId::new(out.task_id.clone()).unwrap();
    let rebuilt = recovered_outcome(
        net.master.masters.state(),
        &tid,
        audience.clone(),
        out.certificate_signatures,
    )
    .unwrap();
    // The replicated records name the enclave kind of every slice and of the
    // aggregation, so the rebuilt outcome says what produced its evidence too.
    assert_eq!(rebuilt.enclave_kinds.len(), out.enclave_kinds.len());
    assert_eq!(
        serde_json::to_value(&rebuilt).unwrap(),
        serde_json::to_value(&out).unwrap()
    );
    // Only a completed task is rebuilt: a rejected one (Vaults below quorum) is not.
    let ids = net.generated.vault_ids.clone();
    for v in &ids[..2] {
        net.down.insert(VaultId::new(v.clone()).unwrap());
    }
    let rejected = run(&mut net, 3, spec(150), 2);
    assert_eq!(rejected.states.last().unwrap(), "rejected");
    let rid = TaskId::new(rejected.task_id.clone()).unwrap();
    assert!(recovered_outcome(net.master.masters.state(), &rid, vec![], 0).is_none());
    assert_eq!(
        cell.lock().unwrap().len(),
        1,
        "a rejected task stages nothing"
    );
    let unknown = TaskId::new("task-unknown").unwrap();
    assert!(recovered_outcome(net.master.masters.state(), &unknown, vec![], 0).is_none());
}

/// A rejected task pays exactly the query base fee of policy v1 to the treasury.
fn assert_rejection_fee(out: &CampaignOutcome) {
    let base = symphony_economics::PolicyParams::default_v1()
        .prices
        .query
        .base_fee_micro_sym;
    assert_eq!(out.fee_total, base);
    assert_eq!(out.refund, out.fee_locked - base);
    assert_eq!(
        out.fee_shares.iter().collect::<Vec<_>>(),
        vec![(&"treasury".to_string(), &base)]
    );
}

#[test]
fn below_quorum_is_rejected_and_reservations_released() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = build(dir.path(), 3, 1000);
    let vaults: Vec<VaultId> = net
        .enterprises
        .iter()
        .map(|e| e.vault_id().clone())
        .collect();
    net.down.insert(vaults[2].clone());
    net.down.insert(vaults[3].clone());
    let e = &net.enterprises[0];
    let subjects: Vec<SubjectId> = e
        .vault()
        .consented_subjects(UsageScope::Marketing, NOW_MS)
        .unwrap()
        .into_iter()
        .collect();
    let before: Vec<_> = subjects
        .iter()
        .map(|s| e.remaining_budget(s, UsageScope::Marketing).unwrap())
        .collect();
    let mut s = spec(5000);
    s.minimum_vault_quorum = Some(3);
    let out = run(&mut net, 3, s, 1);
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    assert!(out
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("minimum_vault_quorum"));
    // A rejection costs the policy's base fee (to the treasury); the rest is refunded.
    assert_rejection_fee(&out);
    let e = &net.enterprises[0];
    let after: Vec<_> = subjects
        .iter()
        .map(|s| e.remaining_budget(s, UsageScope::Marketing).unwrap())
        .collect();
    assert_eq!(before, after, "the reservation must be released");
    assert!(out.audience.is_empty());
}

#[test]
fn small_result_is_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = build(dir.path(), 4, 1500);
    let mut s = spec(5000);
    s.window_days = 1; // very few purchases in one day: below minimum_result_cardinality
    let out = run(&mut net, 4, s, 1);
    assert!(out.eligible_count < 20, "{}", out.eligible_count);
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    assert!(out.reason.unwrap().contains("minimum_result_cardinality"));
    assert_eq!(out.delivered_count, 0);
    assert!(out.audience.is_empty());
}

#[test]
fn tampered_slices_fail_verification_and_do_not_settle() {
    for tamper in [
        Tamper::FlipByte,
        Tamper::WrongMeasurement,
        Tamper::ForgedSignature,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut net = build(dir.path(), 8, 1000);
        net.tamper = Some(tamper);
        let mut s = spec(5000);
        s.minimum_vault_quorum = Some(4);
        let out = run(&mut net, 8, s, 1);
        assert_eq!(out.vaults_responded, 3, "{tamper:?}");
        assert_eq!(
            out.states.last().map(String::as_str),
            Some("rejected"),
            "{tamper:?}"
        );
        assert_eq!(out.settlement_state, None, "{tamper:?}");
        assert_rejection_fee(&out);
    }
}

#[test]
fn unknown_caller_and_forged_request_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = build(dir.path(), 2, 300);
    let mut forged = SignedRequest::sign(spec(10), 1, &advertiser_key(2, ADVERTISER)).unwrap();
    forged.spec.audience_cap = 10_000;
    assert!(net.run_campaign(&forged, &mut Quiet).is_err());
    let mut stranger = spec(10);
    stranger.advertiser = "advertiser:other".into();
    let req = SignedRequest::sign(stranger, 1, &advertiser_key(2, "advertiser:other")).unwrap();
    let err = net.run_campaign(&req, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("unknown caller"), "{err}");
    assert_eq!(
        net.master.masters.state().applied_commands(),
        0,
        "nothing was admitted"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, .. ProptestConfig::default() })]
    /// Whoever withdrew marketing consent or exhausted the budget in every Vault they
    /// are in never appears in the output, whatever the seed.
    #[test]
    fn withdrawn_or_exhausted_never_delivered(seed in 100u64..10_000) {
        let dir = tempfile::tempdir().unwrap();
        let mut net = build(dir.path(), seed, 800);
        let (expected, never_usable) = independent(dir.path(), &net.generated.vault_ids.clone());
        prop_assume!(expected.len() >= 20);
        let out = run(&mut net, seed, spec(1_000_000), 1);
        prop_assert!(!never_usable.is_empty());
        for h in &out.audience {
            prop_assert!(!never_usable.contains(h), "{} has no consented, budgeted membership", h);
            prop_assert!(expected.contains(h));
        }
    }
}
