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
