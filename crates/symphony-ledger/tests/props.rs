//! Property tests: random operation sequences keep the ledger's invariants, and the
//! two implementations agree operation by operation.

mod suite;

use proptest::prelude::*;
use symphony_ledger::{
    Command, EscrowId, MemoryLedger, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind,
    PayoutSource, RedbLedger, SettlementLedger, StakeTier,
};

const ACTORS: [&str; 5] = [
    "actor:luckin",
    "producer:alice",
    "producer:bob",
    "node:m1",
    "vault:v1",
];

fn actor() -> impl Strategy<Value = symphony_ledger::AccountId> {
    (0..ACTORS.len()).prop_map(|i| suite::acct(ACTORS[i]))
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..5, 1u64..2_000, 1u64..200_000, Just(u64::MAX)]
}

fn kind() -> impl Strategy<Value = PayoutKind> {
    prop_oneof![
        Just(PayoutKind::DataUsageDividend),
        Just(PayoutKind::DataQualityReward),
        Just(PayoutKind::VaultOperator),
        Just(PayoutKind::Executor),
        Just(PayoutKind::NodeOperation),
    ]
}

fn payout_set() -> impl Strategy<Value = PayoutInstructionSet> {
    (
        0u8..4,
        0u64..3,
        prop::collection::vec((actor(), amount(), kind()), 0..4),
    )
        .prop_map(|(id, epoch, lines)| PayoutInstructionSet {
            payout_id: PayoutId::new(format!("payout:{id}")).unwrap(),
            epoch_id: epoch,
            settlement_ref: "s".into(),
            instructions: lines
                .into_iter()
                .map(|(recipient, amount, kind)| PayoutInstruction {
                    recipient,
                    amount,
                    kind,
                })
                .collect(),
        })
}

fn escrow_id() -> impl Strategy<Value = EscrowId> {
    (0u8..3).prop_map(|i| EscrowId::new(format!("task:{i}")).unwrap())
}

fn tier() -> impl Strategy<Value = StakeTier> {
    prop_oneof![
        Just(StakeTier::Master),
        Just(StakeTier::Enterprise),
        Just(StakeTier::Producer)
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (actor(), actor(), amount()).prop_map(|(from, to, amount)| Command::Transfer {
            from,
            to,
            amount
        }),
        (0u64..12).prop_map(|epoch| Command::AdvanceEpoch { epoch }),
        (escrow_id(), actor(), amount()).prop_map(|(escrow_id, owner, amount)| {
            Command::EscrowLock {
                escrow_id,
                owner,
                amount,
            }
        }),
        (escrow_id(), amount())
            .prop_map(|(escrow_id, amount)| Command::EscrowRefund { escrow_id, amount }),
        (escrow_id(), payout_set())
            .prop_map(|(escrow_id, set)| Command::EscrowPayout { escrow_id, set }),
        (
            prop_oneof![
                Just(PayoutSource::Treasury),
                (0u64..3).prop_map(PayoutSource::RewardPool)
            ],
            payout_set()
        )
            .prop_map(|(source, set)| Command::RewardDistribute { source, set }),
        (actor(), tier(), amount()).prop_map(|(actor, tier, amount)| Command::StakeBond {
            actor,
            tier,
            amount
        }),
        (actor(), amount()).prop_map(|(actor, amount)| Command::StakeBeginUnbond { actor, amount }),
        actor().prop_map(|actor| Command::StakeWithdraw { actor }),
        (actor(), amount()).prop_map(|(actor, amount)| Command::StakeSlash {
            actor,
            amount,
            reason: "r".into()
        }),
        (actor(), amount()).prop_map(|(from, amount)| Command::TreasuryDeposit { from, amount }),
        (0u64..4, amount())
            .prop_map(|(epoch, amount)| Command::TreasuryMintInflation { epoch, amount }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Supply = genesis + minted after every operation; a refused operation changes
    /// nothing; the log always reconciles.
    #[test]
    fn random_operations_keep_invariants(commands in prop::collection::vec(command(), 1..80)) {
        let mut l = MemoryLedger::new(&suite::genesis()).unwrap();
        let mut minted: u128 = 0;
        for c in commands {
            let before = l.state().clone();
            match l.execute(c.clone()) {
                Ok(out) => {
                    for e in &out.events {
                        if let symphony_ledger::LedgerEvent::InflationMinted { amount, .. } = e {
                            minted += u128::from(*amount);
                        }
                    }
                }
                Err(_) => prop_assert_eq!(l.state(), &before, "refused {:?} changed state", c),
            }
            prop_assert_eq!(l.total_supply(), suite::genesis_supply() + minted);
        }
        let report = l.reconcile().unwrap();
        prop_assert_eq!(report.total_supply, suite::genesis_supply() + minted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// `RedbLedger` and `MemoryLedger` give the same outcome (or error code) for every
    /// operation and end in the same state; the redb file reopens to that state.
    #[test]
    fn redb_and_memory_agree(commands in prop::collection::vec(command(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let mut mem = MemoryLedger::new(&suite::genesis()).unwrap();
        let mut db = RedbLedger::create(&path, &suite::genesis()).unwrap();
        for c in commands {
            let a = mem.execute(c.clone()).map_err(|e| e.code());
            let b = db.execute(c).map_err(|e| e.code());
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(mem.state(), db.state());
        db.reconcile().unwrap();
        drop(db);
        let reopened = RedbLedger::open(&path).unwrap();
        prop_assert_eq!(mem.state(), reopened.state());
    }
}
