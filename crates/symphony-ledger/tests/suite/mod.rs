//! Shared conformance suite for every `SettlementLedger` implementation.
//!
//! A backend provides a [`Factory`]; [`run_all`] runs each scenario on a fresh ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use symphony_ledger::distributor::{Distribution, DistributionLeaf, MerkleProof};
use symphony_ledger::{
    producer_split, AccountId, DistributionId, EscrowId, Genesis, LedgerConfig, LedgerError,
    LedgerEvent, LedgerState, MemoryLedger, PayoutId, PayoutInstruction, PayoutInstructionSet,
    PayoutKind, PayoutSource, RedbLedger, SettlementLedger, StakeTier,
};

/// Builds fresh ledgers from a genesis.
pub trait Factory {
    /// The ledger type.
    type L: SettlementLedger + Inspect;
    /// A fresh ledger.
    fn make(&self, genesis: &Genesis) -> Self::L;
}

/// Read access to a ledger's whole materialized state.
pub trait Inspect {
    /// The committed state.
    fn ledger_state(&self) -> &LedgerState;
}

impl Inspect for MemoryLedger {
    fn ledger_state(&self) -> &LedgerState {
        self.state()
    }
}

impl Inspect for RedbLedger {
    fn ledger_state(&self) -> &LedgerState {
        self.state()
    }
}

pub fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}
pub fn escrow(s: &str) -> EscrowId {
    EscrowId::new(s).unwrap()
}

pub const LUCKIN_GENESIS: u64 = 1_000_000;

pub fn genesis() -> Genesis {
    Genesis {
        config: LedgerConfig {
            unbonding_period_epochs: 2,
            min_stake_master: 50_000,
            min_stake_enterprise: 10_000,
            min_stake_producer: 100,
        },
        allocations: vec![
            (acct("actor:luckin"), LUCKIN_GENESIS),
            (acct("producer:alice"), 10_000),
            (acct("producer:bob"), 10_000),
            (acct("node:m1"), 100_000),
        ],
    }
}

pub fn genesis_supply() -> u128 {
    genesis()
        .allocations
        .iter()
        .map(|(_, a)| u128::from(*a))
        .sum()
}

pub fn set(id: &str, epoch: u64, lines: &[(&str, u64, PayoutKind)]) -> PayoutInstructionSet {
    PayoutInstructionSet {
        payout_id: PayoutId::new(id).unwrap(),
        epoch_id: epoch,
        settlement_ref: format!("settlement:{id}"),
        instructions: lines
            .iter()
            .map(|(r, amount, kind)| PayoutInstruction {
                recipient: acct(r),
                amount: *amount,
                kind: *kind,
            })
            .collect(),
    }
}

fn event_count<L: SettlementLedger>(l: &L) -> usize {
    l.events(0, usize::MAX).unwrap().len()
}

/// Asserts that `result` is the error with `code`, and that nothing changed.
fn refused<L: SettlementLedger>(
    l: &mut L,
    code: u64,
    op: impl FnOnce(&mut L) -> Result<symphony_ledger::Outcome, LedgerError>,
) -> LedgerError {
    let before_events = event_count(l);
    let before_supply = l.total_supply();
    let err = op(l).expect_err("operation should be refused");
    assert_eq!(err.code(), code, "wrong error: {err:?}");
    assert_eq!(
        event_count(l),
        before_events,
        "a refused operation appended events"
    );
    assert_eq!(l.total_supply(), before_supply);
    err
}

pub fn run_all<F: Factory>(f: &F) {
    lock_payout_refund_flow(&mut f.make(&genesis()));
    double_payout_refused(&mut f.make(&genesis()));
    insufficient_funds_refused(&mut f.make(&genesis()));
    staking_lifecycle_and_slashing(&mut f.make(&genesis()));
    staking_multiplier_split_is_exact(&mut f.make(&genesis()));
    treasury_and_inflation(&mut f.make(&genesis()));
    distribution_claims_pay_every_leaf_exactly(&mut f.make(&genesis()));
    distribution_refusals_change_nothing(&mut f.make(&genesis()));
    distribution_commit_refusals(&mut f.make(&genesis()));
    distribution_replay_gives_the_same_root(&mut f.make(&genesis()));
}

pub fn lock_payout_refund_flow<L: SettlementLedger>(l: &mut L) {
    let luckin = acct("actor:luckin");
    let e = escrow("task:luckin-1");
    l.bond(&acct("producer:bob"), StakeTier::Producer, 100)
        .unwrap();
    let out = l.lock(&e, &luckin, 10_000).unwrap();
    assert_eq!(
        out.events,
        vec![LedgerEvent::EscrowLocked {
            escrow_id: e.clone(),
            owner: luckin.clone(),
            amount: 10_000
        }]
    );
    assert_eq!(l.balance(&luckin), LUCKIN_GENESIS - 10_000);
    assert_eq!(l.escrow(&e).unwrap().remaining(), 10_000);
    // Retrying the identical lock is a no-op.
    assert!(l.lock(&e, &luckin, 10_000).unwrap().already_applied);
    assert_eq!(l.balance(&luckin), LUCKIN_GENESIS - 10_000);

    let payout = set(
        "payout:luckin-1",
        0,
        &[
            ("vault:v1", 3_000, PayoutKind::VaultOperator),
            ("exec:e1", 2_000, PayoutKind::Executor),
            ("producer:alice", 2_001, PayoutKind::DataUsageDividend),
            ("producer:bob", 1_000, PayoutKind::DataUsageDividend),
            ("protocol:treasury", 500, PayoutKind::Treasury),
        ],
    );
    let out = l.payout(&e, &payout).unwrap();
    assert!(!out.already_applied);
    assert_eq!(out.events.len(), 1 + 5);
    assert_eq!(l.balance(&acct("vault:v1")), 3_000);
    assert_eq!(l.balance(&acct("exec:e1")), 2_000);
    assert_eq!(l.balance(&acct("producer:alice")), 10_000 + 1_000); // unstaked: floor(2001/2)
    assert_eq!(l.balance(&acct("producer:bob")), 10_000 - 100 + 1_000); // staked: 100%
    assert_eq!(l.balance(&AccountId::reward_pool(0)), 1_001);
    assert_eq!(l.treasury_balance(), 500);
    let rec = l.escrow(&e).unwrap();
    assert_eq!((rec.paid_out, rec.remaining()), (8_501, 1_499));
    // Unused escrow back to the submitter.
    l.refund(&e, 1_499).unwrap();
    assert_eq!(l.escrow(&e).unwrap().remaining(), 0);
    assert_eq!(l.balance(&luckin), LUCKIN_GENESIS - 8_501);
    assert_eq!(l.total_supply(), genesis_supply());
    let report = l.reconcile().unwrap();
    assert_eq!(report.payouts, 1);
    assert_eq!(report.total_supply, genesis_supply());
    assert!(matches!(
        l.events(0, 1).unwrap()[0],
        (0, LedgerEvent::GenesisApplied(_))
    ));
}

pub fn double_payout_refused<L: SettlementLedger>(l: &mut L) {
    let luckin = acct("actor:luckin");
    let (e1, e2) = (escrow("task:1"), escrow("task:2"));
    l.lock(&e1, &luckin, 1_000).unwrap();
    l.lock(&e2, &luckin, 1_000).unwrap();
    let p = set(
        "payout:1",
        0,
        &[("vault:v1", 600, PayoutKind::VaultOperator)],
    );
    l.payout(&e1, &p).unwrap();
    let n = event_count(l);
    // Same id, same set: idempotent no-op.
    let retry = l.payout(&e1, &p).unwrap();
    assert!(retry.already_applied && retry.events.is_empty());
    assert_eq!(event_count(l), n);
    assert_eq!(l.balance(&acct("vault:v1")), 600);
    // Same id, different set: conflict.
    let p_changed = set(
        "payout:1",
        0,
        &[("vault:v1", 601, PayoutKind::VaultOperator)],
    );
    let err = refused(l, 0x3_0007, |l| l.payout(&e1, &p_changed));
    assert!(matches!(err, LedgerError::PayoutConflict(_)));
    // Different id on an escrow already paid out.
    let p2 = set(
        "payout:2",
        0,
        &[("vault:v1", 10, PayoutKind::VaultOperator)],
    );
    refused(l, 0x3_0006, |l| l.payout(&e1, &p2));
    // Same id and set from another escrow: conflict (a payout id is global).
    refused(l, 0x3_0007, |l| l.payout(&e2, &p));
    // Unknown escrow.
    refused(l, 0x6_0003, |l| l.payout(&escrow("task:none"), &p2));
    // Empty set, zero line.
    refused(l, 0x1_0008, |l| l.payout(&e2, &set("payout:3", 0, &[])));
    refused(l, 0x1_0008, |l| {
        l.payout(
            &e2,
            &set("payout:3", 0, &[("vault:v1", 0, PayoutKind::VaultOperator)]),
        )
    });
    l.reconcile().unwrap();
}

pub fn insufficient_funds_refused<L: SettlementLedger>(l: &mut L) {
    let luckin = acct("actor:luckin");
    let e = escrow("task:big");
    let err = refused(l, 0x1_0001, |l| l.lock(&e, &luckin, LUCKIN_GENESIS + 1));
    assert_eq!(
        err,
        LedgerError::InsufficientBalance {
            account: "actor:luckin".into(),
            needed: LUCKIN_GENESIS + 1,
            available: LUCKIN_GENESIS
        }
    );
    assert!(l.escrow(&e).is_none());
    refused(l, 0x1_0001, |l| l.transfer(&acct("nobody:x"), &luckin, 1));
    refused(l, 0x1_000c, |l| l.lock(&e, &luckin, 0));
    l.lock(&e, &luckin, 500).unwrap();
    refused(l, 0x8_0004, |l| l.lock(&e, &luckin, 501));
    refused(l, 0x1_0005, |l| l.refund(&e, 501));
    let too_much = set(
        "payout:big",
        0,
        &[("vault:v1", 501, PayoutKind::VaultOperator)],
    );
    refused(l, 0x1_0005, |l| l.payout(&e, &too_much));
    // Protocol accounts cannot be debited by user commands.
    refused(l, 0x1_0010, |l| {
        l.transfer(&AccountId::treasury(), &luckin, 1)
    });
    // Overflow is an error, not a wrap.
    let overflow = set(
        "payout:overflow",
        0,
        &[
            ("vault:v1", u64::MAX, PayoutKind::VaultOperator),
            ("vault:v2", 2, PayoutKind::VaultOperator),
        ],
    );
    refused(l, 0x2_0002, |l| l.payout(&e, &overflow));
    assert_eq!(l.balance(&luckin), LUCKIN_GENESIS - 500);
    l.reconcile().unwrap();
}

pub fn staking_lifecycle_and_slashing<L: SettlementLedger>(l: &mut L) {
    let m1 = acct("node:m1");
    assert!(!l.is_staked(&m1, StakeTier::Master));
    l.bond(&m1, StakeTier::Master, 60_000).unwrap();
    assert!(l.is_staked(&m1, StakeTier::Master));
    assert!(!l.is_staked(&m1, StakeTier::Enterprise));
    assert_eq!(l.stake_of(&m1), 60_000);
    refused(l, 0x3_0009, |l| l.bond(&m1, StakeTier::Producer, 1));
    refused(l, 0x1_000a, |l| l.begin_unbond(&m1, 60_001));
    l.begin_unbond(&m1, 20_000).unwrap(); // epoch 0 → release at epoch 2
    assert_eq!(l.stake_of(&m1), 40_000);
    assert!(!l.is_staked(&m1, StakeTier::Master)); // below S_master
    refused(l, 0x3_000b, |l| l.withdraw_unbonded(&m1));
    l.advance_epoch(1).unwrap();
    refused(l, 0x3_000b, |l| l.withdraw_unbonded(&m1));
    refused(l, 0x1_000e, |l| l.advance_epoch(1));
    // Slash 45_000: 40_000 bonded, then 5_000 of the unbonding entry.
    let out = l.slash(&m1, 45_000, "challenge:7 confirmed").unwrap();
    assert!(matches!(
        &out.events[0],
        LedgerEvent::StakeSlashed { amount: 45_000, .. }
    ));
    assert_eq!(l.treasury_balance(), 45_000);
    assert_eq!(l.stake_of(&m1), 0);
    assert_eq!(l.stake_record(&m1).unwrap().unbonding[0].amount, 15_000);
    refused(l, 0x1_000a, |l| l.slash(&m1, 15_001, "too much"));
    l.advance_epoch(2).unwrap();
    let out = l.withdraw_unbonded(&m1).unwrap();
    assert_eq!(
        out.events,
        vec![LedgerEvent::StakeWithdrawn {
            actor: m1.clone(),
            amount: 15_000
        }]
    );
    assert_eq!(l.balance(&m1), 100_000 - 60_000 + 15_000);
    assert!(l.stake_record(&m1).is_none());
    // Slashing moves stake, it does not destroy it.
    assert_eq!(l.total_supply(), genesis_supply());
    l.reconcile().unwrap();
}

pub fn staking_multiplier_split_is_exact<L: SettlementLedger>(l: &mut L) {
    let alice = acct("producer:alice");
    l.bond(&acct("producer:bob"), StakeTier::Producer, 100)
        .unwrap();
    l.bond(&alice, StakeTier::Producer, 99).unwrap(); // below S_producer: counts as unstaked
    assert!(!l.is_staked(&alice, StakeTier::Producer));
    let luckin = acct("actor:luckin");
    let amounts = [1u64, 2, 3, 999, 1_001, 77_777];
    for (i, amount) in amounts.iter().enumerate() {
        for (j, (recipient, staked)) in [("producer:bob", true), ("producer:alice", false)]
            .iter()
            .enumerate()
        {
            let e = escrow(&format!("task:{i}:{j}"));
            l.lock(&e, &luckin, *amount).unwrap();
            let epoch = 10 + (i * 2 + j) as u64;
            let rec_before = l.balance(&acct(recipient));
            let p = set(
                &format!("payout:{i}:{j}"),
                epoch,
                &[(recipient, *amount, PayoutKind::DataUsageDividend)],
            );
            l.payout(&e, &p).unwrap();
            let net = l.balance(&acct(recipient)) - rec_before;
            let pool = l.balance(&AccountId::reward_pool(epoch));
            assert_eq!(net + pool, *amount, "pieces must sum exactly");
            assert_eq!((net, pool), producer_split(*amount, *staked));
            if !staked {
                assert_eq!(net, amount / 2);
                assert_eq!(pool, amount - amount / 2);
            }
        }
    }
    // Non-producer kinds never apply the multiplier.
    l.lock(&escrow("task:exec"), &luckin, 7).unwrap();
    l.payout(
        &escrow("task:exec"),
        &set(
            "payout:exec",
            99,
            &[("producer:alice", 7, PayoutKind::Executor)],
        ),
    )
    .unwrap();
    assert_eq!(l.balance(&AccountId::reward_pool(99)), 0);
    assert_eq!(l.total_supply(), genesis_supply());
    l.reconcile().unwrap();
}

pub fn treasury_and_inflation<L: SettlementLedger>(l: &mut L) {
    let luckin = acct("actor:luckin");
    l.deposit_treasury(&luckin, 1_000).unwrap();
    assert_eq!(l.treasury_balance(), 1_000);
    refused(l, 0x1_000e, |l| l.mint_inflation(1, 5_000)); // future epoch
    let out = l.mint_inflation(0, 5_000).unwrap();
    assert_eq!(
        out.events,
        vec![LedgerEvent::InflationMinted {
            epoch: 0,
            amount: 5_000
        }]
    );
    refused(l, 0x8_000d, |l| l.mint_inflation(0, 1));
    assert_eq!(l.treasury_balance(), 6_000);
    assert_eq!(l.total_supply(), genesis_supply() + 5_000);
    // Node operation rewards out of the treasury.
    let p = set(
        "payout:nodeops:0",
        0,
        &[("node:m1", 4_000, PayoutKind::NodeOperation)],
    );
    l.distribute(PayoutSource::Treasury, &p).unwrap();
    assert!(
        l.distribute(PayoutSource::Treasury, &p)
            .unwrap()
            .already_applied
    );
    assert_eq!(l.treasury_balance(), 2_000);
    refused(l, 0x1_0001, |l| {
        l.distribute(
            PayoutSource::Treasury,
            &set(
                "payout:nodeops:x",
                0,
                &[("node:m1", 2_001, PayoutKind::NodeOperation)],
            ),
        )
    });
    refused(l, 0x1_0008, |l| {
        l.distribute(
            PayoutSource::Escrow(escrow("task:1")),
            &set("payout:y", 0, &[("node:m1", 1, PayoutKind::NodeOperation)]),
        )
    });
    // Reward pool redistribution (pool filled by an unstaked producer's other half).
    l.lock(&escrow("task:p"), &luckin, 11).unwrap();
    l.payout(
        &escrow("task:p"),
        &set(
            "payout:p",
            3,
            &[("producer:alice", 11, PayoutKind::DataQualityReward)],
        ),
    )
    .unwrap();
    assert_eq!(l.balance(&AccountId::reward_pool(3)), 6);
    l.distribute(
        PayoutSource::RewardPool(3),
        &set(
            "payout:pool3",
            3,
            &[("node:m1", 6, PayoutKind::NodeOperation)],
        ),
    )
    .unwrap();
    assert_eq!(l.balance(&AccountId::reward_pool(3)), 0);
    let report = l.reconcile().unwrap();
    assert_eq!(report.minted_total, 5_000);
    assert_eq!(report.total_supply, genesis_supply() + 5_000);
}

pub fn leaves(lines: &[(&str, u64, PayoutKind)]) -> Vec<DistributionLeaf> {
    lines
        .iter()
        .enumerate()
        .map(|(i, (r, amount, kind))| DistributionLeaf {
            index: i as u64,
            recipient: acct(r),
            amount: *amount,
            kind: *kind,
        })
        .collect()
}

pub fn epoch_leaves() -> Vec<DistributionLeaf> {
    leaves(&[
        ("producer:alice", 100, PayoutKind::DataUsageDividend),
        ("producer:bob", 250, PayoutKind::DataUsageDividend),
        ("producer:carol", 1, PayoutKind::DataQualityReward),
        ("vault:v1", 999, PayoutKind::VaultOperator),
        ("producer:alice", 7, PayoutKind::DataQualityReward),
    ])
}

pub fn dist_id(s: &str) -> DistributionId {
    DistributionId::new(s).unwrap()
}

/// Asserts that `op` is refused with `code` and that the whole state and the log are
/// unchanged.
fn refused_exactly<L: SettlementLedger + Inspect>(
    l: &mut L,
    code: u64,
    op: impl FnOnce(&mut L) -> Result<symphony_ledger::Outcome, LedgerError>,
) -> LedgerError {
    let before = l.ledger_state().clone();
    let err = refused(l, code, op);
    assert_eq!(
        l.ledger_state(),
        &before,
        "a refused operation changed the state"
    );
    err
}

pub fn distribution_claims_pay_every_leaf_exactly<L: SettlementLedger + Inspect>(l: &mut L) {
    let luckin = acct("actor:luckin");
    let ls = epoch_leaves();
    let total: u64 = ls.iter().map(|l| l.amount).sum();
    let d = Distribution::build("epoch-1/producers", 1, &ls).unwrap();
    let id = dist_id("epoch-1/producers");
    let out = l
        .commit_distribution(PayoutSource::Account(luckin.clone()), d.commitment())
        .unwrap();
    assert_eq!(
        out.events,
        vec![LedgerEvent::DistributionCommitted {
            distribution_id: id.clone(),
            source: PayoutSource::Account(luckin.clone()),
            epoch_id: 1,
            root: d.commitment().root,
            total,
            leaves: 5,
        }]
    );
    assert_eq!(l.balance(&luckin), LUCKIN_GENESIS - total);
    assert_eq!(
        l.total_supply(),
        genesis_supply(),
        "the pool counts in the supply"
    );
    assert_eq!(l.ledger_state().distributions[&id].remaining(), total);
    // An identical retry is a no-op.
    let retry = l
        .commit_distribution(PayoutSource::Account(luckin.clone()), d.commitment())
        .unwrap();
    assert!(retry.already_applied && retry.events.is_empty());
    assert_eq!(l.balance(&luckin), LUCKIN_GENESIS - total);

    let before: Vec<u64> = ls.iter().map(|leaf| l.balance(&leaf.recipient)).collect();
    for leaf in ls.iter().rev() {
        let proof = d.proof(leaf.index).unwrap();
        let out = l.claim_distribution(&id, leaf, &proof).unwrap();
        assert_eq!(
            out.events,
            vec![LedgerEvent::DistributionClaimed {
                distribution_id: id.clone(),
                index: leaf.index,
                recipient: leaf.recipient.clone(),
                amount: leaf.amount,
                kind: leaf.kind,
                proof: proof.siblings.clone(),
            }]
        );
        assert_eq!(l.total_supply(), genesis_supply());
    }
    // Each recipient got exactly the sum of its leaves (alice has two).
    for (i, leaf) in ls.iter().enumerate() {
        let owed: u64 = ls
            .iter()
            .filter(|o| o.recipient == leaf.recipient)
            .map(|o| o.amount)
            .sum();
        assert_eq!(
            l.balance(&leaf.recipient),
            before[i] + owed,
            "{}",
            leaf.recipient
        );
    }
    let rec = &l.ledger_state().distributions[&id];
    assert_eq!((rec.paid, rec.claimed, rec.remaining()), (total, 5, 0));
    assert_eq!(l.ledger_state().claims.len(), 5);
    let report = l.reconcile().unwrap();
    assert_eq!((report.distributions, report.claims), (1, 5));
    assert_eq!(report.total_supply, genesis_supply());
}

pub fn distribution_refusals_change_nothing<L: SettlementLedger + Inspect>(l: &mut L) {
    let luckin = acct("actor:luckin");
    let ls = epoch_leaves();
    let a = Distribution::build("epoch-1/producers", 1, &ls).unwrap();
    let b = Distribution::build("epoch-2/producers", 2, &ls).unwrap();
    let (ida, idb) = (dist_id("epoch-1/producers"), dist_id("epoch-2/producers"));
    l.commit_distribution(PayoutSource::Account(luckin.clone()), a.commitment())
        .unwrap();
    l.commit_distribution(PayoutSource::Account(luckin.clone()), b.commitment())
        .unwrap();
    let leaf = &ls[1];
    let proof = a.proof(1).unwrap();

    // A forged sibling.
    let mut forged = proof.clone();
    forged.siblings[0][0] ^= 1;
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, leaf, &forged));
    // A wrong amount, recipient or kind with the real proof.
    let mut more = leaf.clone();
    more.amount += 1;
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, &more, &proof));
    let mut mallory = leaf.clone();
    mallory.recipient = acct("producer:mallory");
    refused_exactly(l, 0x1_0018, |l| {
        l.claim_distribution(&ida, &mallory, &proof)
    });
    let mut kind = leaf.clone();
    kind.kind = PayoutKind::Executor;
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, &kind, &proof));
    // Another epoch's proof of the same leaf.
    let proof_b = b.proof(1).unwrap();
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, leaf, &proof_b));
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&idb, leaf, &proof));
    // A proof one hash short, one too long, or absurdly long.
    let mut short = proof.clone();
    short.siblings.pop();
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, leaf, &short));
    let mut long = proof.clone();
    long.siblings.push([0; 32]);
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, leaf, &long));
    let huge = MerkleProof {
        siblings: vec![[7; 32]; 65],
    };
    refused_exactly(l, 0x1_0018, |l| l.claim_distribution(&ida, leaf, &huge));
    // An index beyond the leaves; an unknown distribution.
    let mut beyond = leaf.clone();
    beyond.index = 5;
    refused_exactly(l, 0x2_0017, |l| l.claim_distribution(&ida, &beyond, &proof));
    refused_exactly(l, 0x6_0015, |l| {
        l.claim_distribution(&dist_id("epoch-9/none"), leaf, &proof)
    });

    // The real claim passes once; the second is refused.
    let bob = l.balance(&leaf.recipient);
    l.claim_distribution(&ida, leaf, &proof).unwrap();
    assert_eq!(l.balance(&leaf.recipient), bob + leaf.amount);
    refused_exactly(l, 0x8_0019, |l| l.claim_distribution(&ida, leaf, &proof));
    // Claiming it in distribution B is a different leaf hash: that one is B's.
    l.claim_distribution(&idb, leaf, &proof_b).unwrap();
    refused_exactly(l, 0x8_0019, |l| l.claim_distribution(&idb, leaf, &proof_b));

    // A root committed with a total below its leaves' sum pays until the pool is dry.
    let short_total = Distribution::build("epoch-3/producers", 3, &ls).unwrap();
    let mut c = short_total.commitment().clone();
    c.total -= 1;
    let idc = dist_id("epoch-3/producers");
    l.commit_distribution(PayoutSource::Account(luckin.clone()), &c)
        .unwrap();
    for leaf in &ls[..4] {
        l.claim_distribution(&idc, leaf, &short_total.proof(leaf.index).unwrap())
            .unwrap();
    }
    let err = refused_exactly(l, 0x3_001a, |l| {
        l.claim_distribution(&idc, &ls[4], &short_total.proof(4).unwrap())
    });
    assert_eq!(
        err,
        LedgerError::ClaimExceedsTotal {
            distribution_id: "epoch-3/producers".into(),
            remaining: 6,
            amount: 7
        }
    );
    assert_eq!(l.total_supply(), genesis_supply());
    l.reconcile().unwrap();
}

pub fn distribution_commit_refusals<L: SettlementLedger + Inspect>(l: &mut L) {
    let luckin = acct("actor:luckin");
    let ls = epoch_leaves();
    let d = Distribution::build("epoch-1/producers", 1, &ls).unwrap();
    let c = d.commitment().clone();
    let src = PayoutSource::Account(luckin.clone());
    // Zero leaves, zero total.
    let mut none = c.clone();
    none.count = 0;
    refused_exactly(l, 0x1_0016, |l| l.commit_distribution(src.clone(), &none));
    let mut zero = c.clone();
    zero.total = 0;
    refused_exactly(l, 0x1_000c, |l| l.commit_distribution(src.clone(), &zero));
    // Insufficient funds: an empty treasury, a poor account, u64::MAX.
    refused_exactly(l, 0x1_0001, |l| {
        l.commit_distribution(PayoutSource::Treasury, &c)
    });
    refused_exactly(l, 0x1_0001, |l| {
        l.commit_distribution(PayoutSource::Account(acct("nobody:x")), &c)
    });
    let mut max = c.clone();
    max.total = u64::MAX;
    refused_exactly(l, 0x1_0001, |l| l.commit_distribution(src.clone(), &max));
    // Escrow and protocol-account sources.
    refused_exactly(l, 0x1_0016, |l| {
        l.commit_distribution(PayoutSource::Escrow(escrow("task:1")), &c)
    });
    refused_exactly(l, 0x1_0010, |l| {
        l.commit_distribution(PayoutSource::Account(AccountId::treasury()), &c)
    });
    // A malformed id.
    let mut bad = c.clone();
    bad.distribution_id = "has space".into();
    refused_exactly(l, 0x1_000f, |l| l.commit_distribution(src.clone(), &bad));
    // Committed once; the id with another root, total or source is refused.
    l.commit_distribution(src.clone(), &c).unwrap();
    let mut other = c.clone();
    other.root[0] ^= 1;
    refused_exactly(l, 0x8_0014, |l| l.commit_distribution(src.clone(), &other));
    let mut more = c.clone();
    more.total += 1;
    refused_exactly(l, 0x8_0014, |l| l.commit_distribution(src.clone(), &more));
    l.mint_inflation(0, 5_000).unwrap();
    refused_exactly(l, 0x8_0014, |l| {
        l.commit_distribution(PayoutSource::Treasury, &c)
    });
    // The treasury funds a distribution once it holds the total.
    let t = Distribution::build("epoch-0/nodes", 0, &ls).unwrap();
    l.commit_distribution(PayoutSource::Treasury, t.commitment())
        .unwrap();
    assert_eq!(l.treasury_balance(), 5_000 - t.commitment().total);
    assert_eq!(l.total_supply(), genesis_supply() + 5_000);
    l.reconcile().unwrap();
}

pub fn distribution_replay_gives_the_same_root<L: SettlementLedger + Inspect>(l: &mut L) {
    let ls = epoch_leaves();
    let d = Distribution::build("epoch-1/producers", 1, &ls).unwrap();
    let id = dist_id("epoch-1/producers");
    l.commit_distribution(PayoutSource::Account(acct("actor:luckin")), d.commitment())
        .unwrap();
    let committed = l.ledger_state().root();
    l.claim_distribution(&id, &ls[3], &d.proof(3).unwrap())
        .unwrap();
    let claimed = l.ledger_state().root();
    assert_ne!(committed, claimed, "the root covers the claimed set");
    let events: Vec<LedgerEvent> = l
        .events(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let replayed = LedgerState::replay(&events).unwrap();
    assert_eq!(&replayed, l.ledger_state());
    assert_eq!(replayed.root(), claimed);
    // The same commands on a fresh ledger give the same root.
    let mut again = MemoryLedger::new(&genesis()).unwrap();
    again
        .commit_distribution(PayoutSource::Account(acct("actor:luckin")), d.commitment())
        .unwrap();
    again
        .claim_distribution(&id, &ls[3], &d.proof(3).unwrap())
        .unwrap();
    assert_eq!(again.state().root(), claimed);
}
