//! The shared suite against `RedbLedger`, plus persistence tests.

mod suite;

use std::cell::Cell;

use symphony_ledger::{
    AccountId, Genesis, LedgerError, PayoutKind, RedbLedger, SettlementLedger, StakeTier,
};

struct Redb {
    dir: tempfile::TempDir,
    next: Cell<u32>,
}

impl Redb {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            next: Cell::new(0),
        }
    }
}

impl suite::Factory for Redb {
    type L = RedbLedger;
    fn make(&self, genesis: &Genesis) -> RedbLedger {
        let n = self.next.get();
        self.next.set(n + 1);
        RedbLedger::create(self.dir.path().join(format!("ledger-{n}.redb")), genesis).unwrap()
    }
}

#[test]
fn redb_ledger_passes_the_shared_suite() {
    suite::run_all(&Redb::new());
}

#[test]
fn reopen_gives_identical_state_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let (state, events) = {
        let mut l = RedbLedger::create(&path, &suite::genesis()).unwrap();
        suite::lock_payout_refund_flow(&mut l);
        l.bond(&suite::acct("node:m1"), StakeTier::Master, 50_000)
            .unwrap();
        l.advance_epoch(1).unwrap();
        l.mint_inflation(1, 123).unwrap();
        (l.state().clone(), l.events(0, usize::MAX).unwrap())
    };
    let mut reopened = RedbLedger::open(&path).unwrap();
    assert_eq!(reopened.state(), &state);
    assert_eq!(reopened.events(0, usize::MAX).unwrap(), events);
    reopened.reconcile().unwrap();
    // Payout idempotency survives a restart.
    let retry = suite::set(
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
    assert!(
        reopened
            .payout(&suite::escrow("task:luckin-1"), &retry)
            .unwrap()
            .already_applied
    );
    // New events continue the sequence.
    let out = reopened
        .transfer(&suite::acct("actor:luckin"), &suite::acct("vault:v1"), 1)
        .unwrap();
    assert_eq!(out.first_seq, events.len() as u64);
    assert_eq!(
        reopened.balance(&AccountId::new("vault:v1").unwrap()),
        3_001
    );
}

#[test]
fn create_refuses_an_existing_ledger_and_open_refuses_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    drop(RedbLedger::create(&path, &suite::genesis()).unwrap());
    assert_eq!(
        RedbLedger::create(&path, &suite::genesis()).unwrap_err(),
        LedgerError::Genesis
    );
    let empty = dir.path().join("empty.redb");
    drop(redb::Database::create(&empty).unwrap());
    assert_eq!(RedbLedger::open(&empty).unwrap_err(), LedgerError::Genesis);
}

/// Tampering with the stored rows or the log behind the ledger's back is caught by
/// `reconcile`.
#[test]
fn reconcile_detects_tampered_balances_and_duplicated_payouts() {
    use redb::{ReadableTable, TableDefinition};
    use symphony_ledger::ReconcileError;
    const BALANCES: TableDefinition<&str, u64> = TableDefinition::new("balances");
    const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    drop({
        let mut l = RedbLedger::create(&path, &suite::genesis()).unwrap();
        suite::lock_payout_refund_flow(&mut l);
        l
    });
    // 1. Inflate a stored balance.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(BALANCES)
            .unwrap()
            .insert("vault:v1", 3_001u64)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbLedger::open(&path).unwrap().reconcile().unwrap_err();
    assert_eq!(
        err,
        ReconcileError::StateMismatch {
            table: "balances",
            key: "vault:v1".into()
        }
    );
    // 2. Restore it, then append a copy of the payout's events to the log.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut balances = txn.open_table(BALANCES).unwrap();
            balances.insert("vault:v1", 3_000u64).unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            let rows: Vec<(u64, Vec<u8>)> = events
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            let next = rows.len() as u64;
            let payout: Vec<Vec<u8>> = rows
                .iter()
                .map(|(_, bytes)| bytes.clone())
                .filter(|bytes| {
                    matches!(
                        bcs::from_bytes::<symphony_ledger::LedgerEvent>(bytes).unwrap(),
                        symphony_ledger::LedgerEvent::PayoutExecuted { .. }
                    )
                })
                .collect();
            assert_eq!(payout.len(), 1);
            events.insert(next, payout[0].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = RedbLedger::open(&path).unwrap().reconcile().unwrap_err();
    assert_eq!(
        err,
        ReconcileError::DuplicatePayout("payout:luckin-1".into())
    );
}

/// Distributions and their claimed sets survive a restart, and tampering with the
/// stored claims, the stored totals or the claim events is caught by `reconcile`.
#[test]
fn distributions_survive_reopen_and_reconcile_catches_tampered_claims() {
    use redb::{ReadableTable, TableDefinition};
    use symphony_ledger::distributor::Distribution;
    use symphony_ledger::{DistributionRecord, LedgerEvent, PayoutSource, ReconcileError};
    const CLAIMS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("claims");
    const DISTRIBUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("distributions");
    const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let ls = suite::epoch_leaves();
    let d = Distribution::build("epoch-1/producers", 1, &ls).unwrap();
    let id = suite::dist_id("epoch-1/producers");
    let state = {
        let mut l = RedbLedger::create(&path, &suite::genesis()).unwrap();
        l.commit_distribution(
            PayoutSource::Account(suite::acct("actor:luckin")),
            d.commitment(),
        )
        .unwrap();
        for i in [0, 3] {
            l.claim_distribution(&id, &ls[i], &d.proof(i as u64).unwrap())
                .unwrap();
        }
        l.state().clone()
    };
    {
        let mut l = RedbLedger::open(&path).unwrap();
        assert_eq!(l.state(), &state);
        assert_eq!(l.state().root(), state.root());
        l.reconcile().unwrap();
        let err = l
            .claim_distribution(&id, &ls[3], &d.proof(3).unwrap())
            .unwrap_err();
        assert_eq!(
            err.code(),
            0x8_0019,
            "a claim is refused again after a restart"
        );
    }
    let db = || redb::Database::open(&path).unwrap();
    let reconcile = || RedbLedger::open(&path).unwrap().reconcile().unwrap_err();

    // 1. Delete a claimed row: the leaf would be claimable twice.
    let row = {
        let db = db();
        let txn = db.begin_write().unwrap();
        let row = {
            let mut claims = txn.open_table(CLAIMS).unwrap();
            let row = claims.remove(("epoch-1/producers", 3)).unwrap().unwrap();
            row.value().to_vec()
        };
        txn.commit().unwrap();
        row
    };
    assert_eq!(
        reconcile(),
        ReconcileError::StateMismatch {
            table: "claims",
            key: "epoch-1/producers#3".into()
        }
    );
    // 2. Restore it, then inflate the paid total.
    {
        let db = db();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(CLAIMS)
                .unwrap()
                .insert(("epoch-1/producers", 3), row.as_slice())
                .unwrap();
            let mut t = txn.open_table(DISTRIBUTIONS).unwrap();
            let mut rec: DistributionRecord =
                bcs::from_bytes(t.get("epoch-1/producers").unwrap().unwrap().value()).unwrap();
            rec.paid += 1;
            t.insert("epoch-1/producers", bcs::to_bytes(&rec).unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert_eq!(
        reconcile(),
        ReconcileError::StateMismatch {
            table: "distributions",
            key: "epoch-1/producers".into()
        }
    );
    // 3. Restore the rows, then rewrite the last claim event with a larger amount.
    let (last, original) = {
        let db = db();
        let txn = db.begin_write().unwrap();
        let out = {
            let mut t = txn.open_table(DISTRIBUTIONS).unwrap();
            t.insert(
                "epoch-1/producers",
                bcs::to_bytes(&state.distributions[&id]).unwrap().as_slice(),
            )
            .unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            let (k, v) = events.last().unwrap().unwrap();
            let (last, bytes) = (k.value(), v.value().to_vec());
            drop((k, v));
            let mut e: LedgerEvent = bcs::from_bytes(&bytes).unwrap();
            match &mut e {
                LedgerEvent::DistributionClaimed { amount, .. } => *amount += 1,
                other => panic!("last event is {other:?}"),
            }
            events
                .insert(last, bcs::to_bytes(&e).unwrap().as_slice())
                .unwrap();
            (last, bytes)
        };
        txn.commit().unwrap();
        out
    };
    assert!(matches!(
        reconcile(),
        ReconcileError::Replay {
            error: LedgerError::BadProof { index: 3, .. },
            ..
        }
    ));
    // 4. Restore it, then append a copy of it: the leaf claimed twice.
    {
        let db = db();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            events.insert(last, original.as_slice()).unwrap();
            events.insert(last + 1, original.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(matches!(
        reconcile(),
        ReconcileError::Replay {
            error: LedgerError::AlreadyClaimed { index: 3, .. },
            ..
        }
    ));
}
