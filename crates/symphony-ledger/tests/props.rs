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
        (
            prop_oneof![
                Just(PayoutSource::Treasury),
                (0u64..3).prop_map(PayoutSource::RewardPool),
                actor().prop_map(PayoutSource::Account),
            ],
            any::<bool>(),
            amount(),
        )
            .prop_map(|(source, exact, total)| {
                let d = fixed_distribution();
                let c = d.commitment();
                Command::CommitDistribution {
                    source,
                    distribution_id: suite::dist_id(&c.distribution_id),
                    epoch: c.epoch_id,
                    root: c.root,
                    total: if exact { c.total } else { total },
                    leaves: c.count,
                }
            }),
        (0u64..6, any::<bool>()).prop_map(|(index, honest)| {
            let d = fixed_distribution();
            let ls = suite::epoch_leaves();
            let leaf = &ls[(index as usize).min(ls.len() - 1)];
            let mut proof = d.proof(leaf.index).unwrap().siblings;
            if !honest {
                proof[0][0] ^= 1;
            }
            Command::ClaimDistribution {
                distribution_id: suite::dist_id(&d.commitment().distribution_id),
                index,
                recipient: leaf.recipient.clone(),
                amount: leaf.amount,
                kind: leaf.kind,
                proof,
            }
        }),
    ]
}

/// One distribution over the suite's epoch leaves, committed and claimed at random.
fn fixed_distribution() -> symphony_ledger::distributor::Distribution {
    symphony_ledger::distributor::Distribution::build(
        "epoch-1/producers",
        1,
        &suite::epoch_leaves(),
    )
    .unwrap()
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random claims, honest or tampered (amount, proof, index, another epoch's
    /// proof), against a committed distribution: both ledgers agree claim by claim, a
    /// refused claim changes nothing, each leaf pays once and exactly, the supply holds
    /// with the pool counted, and the log reconciles.
    #[test]
    fn distribution_claims_pay_each_leaf_once_on_both_ledgers(
        amounts in prop::collection::vec(0u64..100_000, 1..40),
        attempts in prop::collection::vec((any::<prop::sample::Index>(), 0u8..5), 1..60),
    ) {
        use symphony_ledger::distributor::{Distribution, DistributionLeaf};
        let ls: Vec<DistributionLeaf> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| DistributionLeaf {
                index: i as u64,
                recipient: suite::acct(ACTORS[i % ACTORS.len()]),
                amount: *a,
                kind: PayoutKind::DataUsageDividend,
            })
            .collect();
        let d = Distribution::build("epoch-4/producers", 4, &ls).unwrap();
        let other = Distribution::build("epoch-5/producers", 5, &ls).unwrap();
        let id = suite::dist_id("epoch-4/producers");
        let dir = tempfile::tempdir().unwrap();
        let mut mem = MemoryLedger::new(&suite::genesis()).unwrap();
        let mut db = RedbLedger::create(dir.path().join("l.redb"), &suite::genesis()).unwrap();
        let source = PayoutSource::Account(suite::acct("actor:luckin"));
        let total = d.commitment().total;
        let committed = (
            mem.commit_distribution(source.clone(), d.commitment()).map_err(|e| e.code()),
            db.commit_distribution(source, d.commitment()).map_err(|e| e.code()),
        );
        prop_assert_eq!(committed.0.is_ok(), committed.1.is_ok());
        prop_assume!(committed.0.is_ok() || total == 0);
        let mut paid = vec![false; ls.len()];
        for (pick, tamper) in attempts {
            let i = pick.index(ls.len());
            let mut leaf = ls[i].clone();
            let mut proof = d.proof(i as u64).unwrap();
            let honest = match tamper {
                1 => { leaf.amount += 1; false }
                2 if !proof.siblings.is_empty() => { proof.siblings[0][31] ^= 0x80; false }
                3 if ls.len() > 1 => { leaf.index = ((i + 1) % ls.len()) as u64; false }
                4 => {
                    // Another epoch's proof (identical only for a one-leaf tree,
                    // whose proof is empty).
                    proof = other.proof(i as u64).unwrap();
                    proof.siblings.is_empty()
                }
                _ => true,
            };
            let before = mem.state().clone();
            let a = mem.claim_distribution(&id, &leaf, &proof).map_err(|e| e.code());
            let b = db.claim_distribution(&id, &leaf, &proof).map_err(|e| e.code());
            prop_assert_eq!(&a, &b);
            let should_pay = committed.0.is_ok() && honest && !paid[i];
            prop_assert_eq!(a.is_ok(), should_pay, "leaf {} tamper {}: {:?}", i, tamper, a);
            if should_pay {
                paid[i] = true;
            } else {
                prop_assert_eq!(mem.state(), &before);
            }
            prop_assert_eq!(mem.total_supply(), suite::genesis_supply());
        }
        if committed.0.is_ok() {
            let rec = &mem.state().distributions[&id];
            let expected: u64 = ls.iter().filter(|l| paid[l.index as usize]).map(|l| l.amount).sum();
            prop_assert_eq!(rec.paid, expected);
            prop_assert_eq!(rec.claimed, paid.iter().filter(|p| **p).count() as u64);
        }
        prop_assert_eq!(mem.state(), db.state());
        mem.reconcile().unwrap();
        db.reconcile().unwrap();
    }
}
