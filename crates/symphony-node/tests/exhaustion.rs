//! Privacy budgets exhausted: a task that cannot reach its composition's
//! `minimum_result_cardinality` with the subjects the Vaults can still reserve is
//! refused at admission — nothing charged, nothing reserved, a message naming the
//! scope, the counts and when budgets replenish (issue #12, exhaustion).

mod common;

use common::{luckin, ADVERTISER, NOW_MS};

use symphony_core::consent::UsageScope;
use symphony_core::ids::SubjectId;
use symphony_ledger::AccountId;
use symphony_node::network::{
    advertiser_key, EmbeddedNetwork, NetworkParams, Quiet, SignedRequest,
};

#[test]
fn exhausted_budgets_are_refused_at_admission_for_free_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 21;
    let mut net = common::network(dir.path(), seed, 400, 2);
    let key = advertiser_key(seed, ADVERTISER);
    let payer = AccountId::new(format!("actor:{ADVERTISER}")).unwrap();
    // Every campaign commits ε 0.1 for every consenting subject with budget: after
    // ten, every marketing budget (capacity 1.0) is spent.
    let mut nonce = 0;
    let refusal = loop {
        nonce += 1;
        assert!(nonce <= 12, "budgets never ran out");
        let req = SignedRequest::sign(luckin(), nonce, &key).unwrap();
        let tasks_before = net.master.masters.state().tasks().count();
        let balance_before = net.master.ledger.balance(&payer);
        match net.run_campaign(&req, &mut Quiet) {
            Ok(out) => assert!(out.subjects_evaluated > 0),
            Err(e) => {
                // Refused at admission: no task, no escrow, no fee.
                assert_eq!(net.master.masters.state().tasks().count(), tasks_before);
                assert_eq!(net.master.ledger.balance(&payer), balance_before);
                break e.to_string();
            }
        }
    };
    eprintln!("campaign {nonce}: {refusal}");
    assert!(nonce >= 10, "refused after {nonce} campaigns: {refusal}");
    for expected in [
        "admission refused, nothing charged",
        "marketing consent",
        "below the composition's minimum_result_cardinality 20",
        "budget is exhausted",
        "replenish at the next epoch boundary (epoch-0 is current; epochs last 1 h under policy-v1",
        "each subject then regains up to ε",
    ] {
        assert!(refusal.contains(expected), "{refusal:?} lacks {expected:?}");
    }
    // Nothing stays reserved by the refused attempt: every subject of the data set
    // holds no marketing reservation in any Vault.
    let (files, _) = net.data_files();
    for (e, file) in net.enterprises.iter().zip(files) {
        let text = std::fs::read_to_string(file).unwrap();
        let subjects: std::collections::BTreeSet<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|r| r["subject"].as_str().unwrap().to_owned())
            .collect();
        for s in subjects {
            let s = SubjectId::new(s).unwrap();
            let account = e.vault().budget_account(&s, UsageScope::Marketing).unwrap();
            assert_eq!(account.reserved().micro, 0, "{s} still reserved");
        }
    }
    // The epoch closes through governance (2 of 3 masters sign): budgets
    // replenish once, and the next campaign runs in epoch 1 with subjects again.
    let closed = net.close_epoch().unwrap();
    assert_eq!((closed.closed.0, closed.opened.0), (0, 1));
    assert!(closed.replenished.iter().all(|(_, n)| *n > 0), "{closed:?}");
    assert_eq!(net.master.masters.state().current_epoch().0, 1);
    let req = SignedRequest::sign(luckin(), nonce + 1, &key).unwrap();
    let out = net.run_campaign(&req, &mut Quiet).unwrap();
    assert!(
        out.subjects_evaluated > 0 && out.eligible_count >= 20,
        "{out:?}"
    );
    assert_eq!(out.states.last().map(String::as_str), Some("completed"));
    // Replenishment is once per epoch: applying the event again changes nothing.
    use symphony_node::enterprise::EnterpriseEndpoint;
    let amount = symphony_core::budget::Epsilon::from_milli(1_000);
    let again = net.enterprises[0]
        .open_epoch(closed.opened, &[(UsageScope::Marketing, amount)])
        .unwrap();
    assert_eq!(again, 0);
}

/// A training run whose first round cannot reach the feature composition's
/// `minimum_result_cardinality` is refused at admission too: no escrow, no task,
/// every round's reservation released.
#[test]
fn a_training_run_with_too_few_consenting_subjects_is_refused_at_admission() {
    use symphony_node::training::{permit_training, run_training, TrainingRequest, TrainingSpec};
    let dir = tempfile::tempdir().unwrap();
    let seed = 5;
    let params = NetworkParams {
        subjects: 120, // about 35 % give training consent: well below 100
        vaults: 2,
        records: 1_200,
        seed,
        now_ms: NOW_MS,
    };
    let spec: TrainingSpec = toml::from_str(include_str!("../../../examples/train.toml")).unwrap();
    let operator = spec.model_operator.clone();
    let mut net =
        EmbeddedNetwork::build(dir.path(), &params, &[operator.as_str()], &mut Quiet).unwrap();
    permit_training(&net, &operator).unwrap();
    let payer = AccountId::new(format!("actor:{operator}")).unwrap();
    let before = net.master.ledger.balance(&payer);
    let req = TrainingRequest::sign(spec, 1, &advertiser_key(seed, &operator)).unwrap();
    let registry = dir.path().join("registry");
    let e = run_training(&mut net, &req, &registry, seed, &mut Quiet).unwrap_err();
    let msg = e.to_string();
    for expected in [
        "admission refused, nothing charged",
        "training consent and budget for the whole run",
        "minimum_result_cardinality 100",
        "replenish at the next epoch boundary",
    ] {
        assert!(msg.contains(expected), "{msg:?} lacks {expected:?}");
    }
    assert_eq!(net.master.masters.state().tasks().count(), 0);
    assert_eq!(net.master.ledger.balance(&payer), before);
    let (files, _) = net.data_files();
    for (e, file) in net.enterprises.iter().zip(files) {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines().filter(|l| l.contains("\"identity\"")) {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = SubjectId::new(r["subject"].as_str().unwrap()).unwrap();
            let account = e.vault().budget_account(&s, UsageScope::Training).unwrap();
            assert_eq!(account.reserved().micro, 0, "{s} still reserved");
        }
    }
}
