//! Shared conformance suite for every `SettlementLedger` implementation.
//!
//! A backend provides a [`Factory`]; [`run_all`] runs each scenario on a fresh ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use symphony_ledger::{
    producer_split, AccountId, EscrowId, Genesis, LedgerConfig, LedgerError, LedgerEvent, PayoutId,
    PayoutInstruction, PayoutInstructionSet, PayoutKind, PayoutSource, SettlementLedger, StakeTier,
};

/// Builds fresh ledgers from a genesis.
pub trait Factory {
    /// The ledger type.
    type L: SettlementLedger;
    /// A fresh ledger.
    fn make(&self, genesis: &Genesis) -> Self::L;
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
