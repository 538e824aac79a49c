//! Governance on an embedded network: a policy change approved by 2 of 3 masters in
//! epoch `e` applies to tasks admitted from `e + 1`; tasks admitted before keep the
//! version of their admission (no retroactivity).

mod common;

use common::{luckin, ADVERTISER, NOW_MS};

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::ids::TaskId;
use symphony_core::ids::{EpochId, PolicyVersion};
use symphony_economics::PolicyParams;
use symphony_ledger::AccountId;
use symphony_master::{vote_message, Command, MasterState, ProposalId, ProposalKind};
use symphony_node::governance::{mint_epoch_rewards, node_weights, propose, propose_policy, vote};
use symphony_node::network::{advertiser_key, EmbeddedNetwork, Quiet, SignedRequest};
use symphony_node::replication::{Committed, LocalReplicator, ReplicationError, Replicator};

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

/// Forwards every command; right before an `AdmitTask` it lets master 1 approve
/// the close proposal `close` (the race: the envelope was sealed in epoch `e`, the
/// epoch closes before it reaches the state machine).
struct CloseBeforeAdmission {
    inner: Box<dyn Replicator + Send>,
    close: Option<ProposalId>,
}

impl Replicator for CloseBeforeAdmission {
    fn submit(&mut self, command: Command) -> Result<Committed, ReplicationError> {
        if let (Command::AdmitTask { .. }, Some(id)) = (&command, self.close) {
            self.close = None;
            let signature = self
                .inner
                .sign_as(1, &vote_message(id, true).unwrap().0)
                .unwrap()
                .to_bytes()
                .to_vec();
            let at_ms = self.inner.state().governance().epoch_opened_at_ms;
            self.inner.submit(Command::Vote {
                proposal: id,
                by: 1,
                approve: true,
                at_ms,
                signature,
            })?;
        }
        self.inner.submit(command)
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

/// Σ reserved ε (micro) over every subject's marketing account in every Vault.
fn reserved_micro(net: &EmbeddedNetwork) -> u64 {
    let mut total = 0;
    for e in &net.enterprises {
        let v = e.vault();
        for s in v.consented_subjects(UsageScope::Marketing, NOW_MS).unwrap() {
            total += v
                .budget_account(&s, UsageScope::Marketing)
                .unwrap()
                .reserved()
                .micro;
        }
    }
    total
}

#[test]
fn an_admission_racing_a_proposal_close_is_refused_with_nothing_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 31;
    let mut net = common::network(dir.path(), seed, 300, 2);
    let key = advertiser_key(seed, ADVERTISER);
    let account = AccountId::new(format!("actor:{ADVERTISER}")).unwrap();
    let balance = net.master.ledger.balance(&account);
    let (id, _) = propose(&mut net.master, ProposalKind::CloseEpoch, 0).unwrap();
    let inner = std::mem::replace(&mut net.master.masters, Box::new(LocalReplicator::new(0)));
    net.master.masters = Box::new(CloseBeforeAdmission {
        inner,
        close: Some(id),
    });
    let req = SignedRequest::sign(luckin(), 1, &key).unwrap();
    let err = net.run_campaign(&req, &mut Quiet).unwrap_err().to_string();
    assert!(
        err.contains("envelope names epoch-0, but admission is in epoch-1 now"),
        "{err}"
    );
    // The epoch closed once; the task was never admitted, nothing is reserved in any
    // Vault, and the escrow went back in full.
    let state = net.master.masters.state();
    assert_eq!(state.current_epoch(), EpochId(1));
    assert_eq!(state.governance().history.len(), 1);
    assert_eq!(state.tasks().count(), 0);
    assert_eq!(reserved_micro(&net), 0);
    assert_eq!(net.master.ledger.balance(&account), balance);
    // The next submission is admitted in the new epoch and completes.
    let req = SignedRequest::sign(luckin(), 2, &key).unwrap();
    let out = net.run_campaign(&req, &mut Quiet).unwrap();
    assert_eq!(out.states.last().map(String::as_str), Some("completed"));
    assert_eq!(admitted(&net, &out.task_id).2, EpochId(1));
}

#[test]
fn closing_an_epoch_seals_its_payouts_and_mints_its_node_rewards_once() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 37;
    let mut net = common::network(dir.path(), seed, 300, 2);
    let key = advertiser_key(seed, ADVERTISER);
    let mut tasks = Vec::new();
    for nonce in 1..=2 {
        let req = SignedRequest::sign(luckin(), nonce, &key).unwrap();
        let out = net.run_campaign(&req, &mut Quiet).unwrap();
        assert_eq!(out.states.last().map(String::as_str), Some("completed"));
        tasks.push(TaskId::new(out.task_id).unwrap());
    }
    let supply = net.master.ledger.total_supply();
    let closed = net.close_epoch().unwrap();
    assert!(closed.minted_micro_sym > 0, "{closed:?}");
    assert_eq!(
        net.master.ledger.total_supply(),
        supply + u128::from(closed.minted_micro_sym)
    );
    let g = net.master.masters.state().governance().clone();
    let sealed = &g.history[0];
    tasks.sort();
    assert_eq!(sealed.payouts.tasks, tasks);
    let fees: u64 = tasks
        .iter()
        .map(|t| {
            net.master
                .masters
                .state()
                .task(t)
                .unwrap()
                .settlement
                .as_ref()
                .unwrap()
                .fee_total
        })
        .sum();
    assert_eq!(sealed.payouts.total_micro_sym, fees);
    let rewards = sealed.rewards.as_ref().unwrap();
    assert_eq!(rewards.minted_micro_sym, closed.minted_micro_sym);
    // 3 masters + 2 Vault operators.
    assert_eq!(rewards.recipients.len(), 5);
    assert!(g.open_payouts.is_empty());
    // Minting again for the same epoch moves nothing and records nothing new.
    let nodes = node_weights(&[]).unwrap();
    let again = mint_epoch_rewards(&mut net.master, EpochId(0), &nodes).unwrap();
    assert_eq!(again, closed.minted_micro_sym);
    assert_eq!(
        net.master.ledger.total_supply(),
        supply + u128::from(closed.minted_micro_sym)
    );
    // The next epoch's task pays into the next epoch's set.
    let req = SignedRequest::sign(luckin(), 3, &key).unwrap();
    let out = net.run_campaign(&req, &mut Quiet).unwrap();
    let t = TaskId::new(out.task_id).unwrap();
    let g = net.master.masters.state().governance();
    assert!(g.open_payouts.contains_key(&t));
    assert!(!g.history[0].payouts.tasks.contains(&t));
}

/// Issue #13, attribute promotion: a local attribute promoted to a vault-scoped
/// query attribute and then to canonical by 2-of-3 proposals; each enacted step is
/// one semantic registry version that later admissions resolve against, while a
/// task admitted before keeps its version. A canonical promotion derivable in one
/// Vault only is refused at filing, with a message, and changes nothing.
#[test]
fn an_enacted_promotion_changes_the_semantic_version_of_later_admissions_only() {
    use symphony_semantic::{
        AttributeName, AttributePromotion, AttributeState, DerivationRule, DomainId,
        LocalAttribute, PrivacyClass, PromotionTarget, ValueType,
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = 29;
    let mut net = common::network(dir.path(), seed, 400, 2);
    let key = advertiser_key(seed, ADVERTISER);
    let run = |net: &mut EmbeddedNetwork, nonce: u64| {
        let req = SignedRequest::sign(luckin(), nonce, &key).unwrap();
        let out = net.run_campaign(&req, &mut Quiet).unwrap();
        assert_eq!(out.states.last().map(String::as_str), Some("completed"));
        out.task_id
    };
    let semantic_of = |net: &EmbeddedNetwork, task: &str| {
        net.master
            .masters
            .state()
            .task(&TaskId::new(task).unwrap())
            .unwrap()
            .envelope
            .body()
            .semantic_version
    };
    let first = run(&mut net, 1);
    let v0 = semantic_of(&net, &first);
    assert_eq!(v0, net.master.semantic.semantic_version());

    let n = |s: &str| AttributeName::new(s).unwrap();
    let vault0 = net.enterprises[0].vault_id().clone();
    let vault1 = net.enterprises[1].vault_id().clone();
    let local = LocalAttribute {
        name: n("oat_milk_preference"),
        vault: vault0.clone(),
        value_type: ValueType::Boolean,
        privacy_class: PrivacyClass::Personal,
        description: "Prefers oat milk.".into(),
    };
    let scoped = AttributePromotion {
        local: local.clone(),
        target: PromotionTarget::VaultScopedQuery {
            name: n("oat_milk_buyer"),
            domain: DomainId::new("commerce").unwrap(),
            rule: DerivationRule::Boolean {
                sources: vec![n("oat_milk_preference")],
            },
            granularity: Default::default(),
            value_type: ValueType::Boolean,
            description: "Bought oat milk drinks.".into(),
        },
    };
    let (id, _) = propose(
        &mut net.master,
        ProposalKind::AttributePromotion {
            promotion: Box::new(scoped),
        },
        0,
    )
    .unwrap();
    vote(&mut net.master, id, 1, true).unwrap();
    assert_eq!(net.master.semantic.semantic_version().0, v0.0 + 1);
    assert_eq!(
        net.master
            .semantic
            .query(&n("oat_milk_buyer"))
            .map(|q| q.state),
        Some(AttributeState::Active)
    );

    // Canonical, derivable in the origin Vault only: refused at filing.
    let rule = DerivationRule::Boolean {
        sources: vec![n("purchase_category")],
    };
    let canonical = |vaults: Vec<symphony_core::ids::VaultId>| AttributePromotion {
        local: local.clone(),
        target: PromotionTarget::Canonical {
            domain: DomainId::new("commerce").unwrap(),
            directly_queryable: true,
            derivations: vaults.into_iter().map(|v| (v, rule.clone())).collect(),
        },
    };
    let root = net.master.masters.state().state_root().unwrap();
    let err = propose(
        &mut net.master,
        ProposalKind::AttributePromotion {
            promotion: Box::new(canonical(vec![vault0.clone()])),
        },
        2,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("derivable in 1 Vault(s), 0 besides its origin"),
        "{err}"
    );
    assert_eq!(net.master.masters.state().state_root().unwrap(), root);

    let second = run(&mut net, 2);
    assert_eq!(semantic_of(&net, &second).0, v0.0 + 1);

    // Two Vaults, one rule: canonical.
    let (id, _) = propose(
        &mut net.master,
        ProposalKind::AttributePromotion {
            promotion: Box::new(canonical(vec![vault0, vault1])),
        },
        2,
    )
    .unwrap();
    vote(&mut net.master, id, 0, true).unwrap();
    assert_eq!(net.master.semantic.semantic_version().0, v0.0 + 2);
    assert!(net
        .master
        .semantic
        .canonical(&n("oat_milk_preference"))
        .is_some());
    let third = run(&mut net, 3);
    assert_eq!(semantic_of(&net, &third).0, v0.0 + 2);
    // No retroactivity: the earlier tasks keep the versions of their admission.
    assert_eq!(semantic_of(&net, &first), v0);
    assert_eq!(semantic_of(&net, &second).0, v0.0 + 1);
}
