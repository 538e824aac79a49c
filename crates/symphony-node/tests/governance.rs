//! Governance on an embedded network: a policy change approved by 2 of 3 masters in
//! epoch `e` applies to tasks admitted from `e + 1`; tasks admitted before keep the
//! version of their admission (no retroactivity).

mod common;

use common::{luckin, ADVERTISER};

use symphony_core::budget::Epsilon;
use symphony_core::ids::TaskId;
use symphony_core::ids::{EpochId, PolicyVersion};
use symphony_economics::PolicyParams;
use symphony_node::governance::{propose_policy, vote};
use symphony_node::network::{advertiser_key, EmbeddedNetwork, Quiet, SignedRequest};

/// (policy version, ε per subject, epoch) of an admitted task.
fn admitted(net: &EmbeddedNetwork, task: &str) -> (PolicyVersion, Epsilon, EpochId) {
    let state = net.master.masters.state();
    let body = state
        .task(&TaskId::new(task).unwrap())
        .unwrap()
        .envelope
        .body()
        .clone();
    (
        body.policy_version,
        body.budget_reservation.epsilon_per_subject,
        body.epoch_id,
    )
}

#[test]
fn a_policy_change_applies_from_the_next_epoch_and_never_retroactively() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 23;
    let mut net = common::network(dir.path(), seed, 400, 2);
    let key = advertiser_key(seed, ADVERTISER);
    let run = |net: &mut EmbeddedNetwork, nonce: u64| {
        let req = SignedRequest::sign(luckin(), nonce, &key).unwrap();
        let out = net.run_campaign(&req, &mut Quiet).unwrap();
        assert_eq!(out.states.last().map(String::as_str), Some("completed"));
        out.task_id
    };
    let first = run(&mut net, 1);
    assert_eq!(
        admitted(&net, &first),
        (
            PolicyVersion::GENESIS,
            Epsilon::from_milli(100),
            EpochId::GENESIS
        )
    );
    // Per-query ε 0.1 → 0.2, proposed by master 2, approved by master 0.
    let mut v2 = PolicyParams::default_v1();
    v2.privacy.epsilon_per_query = Epsilon::from_milli(200);
    let id = propose_policy(&mut net.master, v2.clone(), None, 2).unwrap();
    vote(&mut net.master, id, 0, true).unwrap();
    // Approved, but the epoch has not closed: still v1.
    let second = run(&mut net, 2);
    assert_eq!(admitted(&net, &second).0, PolicyVersion::GENESIS);
    assert_eq!(admitted(&net, &second).1, Epsilon::from_milli(100));
    let closed = net.close_epoch().unwrap();
    assert_eq!(closed.opened, EpochId(1));
    let third = run(&mut net, 3);
    assert_eq!(
        admitted(&net, &third),
        (PolicyVersion(2), Epsilon::from_milli(200), EpochId(1))
    );
    // The first task resolves under its own version even now (superseded, kept).
    let sv = net.master.semantic.semantic_version();
    let resolved = net
        .master
        .policy
        .resolve(EpochId(1), sv, PolicyVersion::GENESIS)
        .unwrap();
    assert!(resolved.superseded);
    assert_eq!(
        resolved.params.privacy.epsilon_per_query,
        Epsilon::from_milli(100)
    );
    // A malformed policy is refused when proposed, naming the field.
    let mut bad = PolicyParams::default_v1();
    bad.epochs.epoch_length_ms = 0;
    let e = propose_policy(&mut net.master, bad, None, 1).unwrap_err();
    assert!(e.to_string().contains("epoch_length_ms"), "{e}");
}
