//! Crash and fault injection for `RedbLedger`.
//!
//! A simulated disk keeps a *volatile* image (every successful write) and a *durable*
//! image (the volatile image as of the last `sync_data`). Writes start failing after a
//! countdown; then the process "crashes" and the ledger is reopened from either image.
//! Whatever the failure point, the reopened ledger holds either the whole operation or
//! none of it, and reconciles.

mod suite;

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use symphony_ledger::distributor::Distribution;
use symphony_ledger::{
    LedgerError, LedgerState, Outcome, PayoutKind, PayoutSource, RedbLedger, SettlementLedger,
    StakeTier,
};

#[derive(Debug, Default)]
struct Disk {
    volatile: Mutex<Vec<u8>>,
    durable: Mutex<Vec<u8>>,
    /// Remaining successful writes/syncs; negative = unlimited.
    budget: AtomicI64,
}

#[derive(Debug, Clone)]
struct FaultyBackend(Arc<Disk>);

impl FaultyBackend {
    fn from_image(image: Vec<u8>) -> Self {
        Self(Arc::new(Disk {
            volatile: Mutex::new(image.clone()),
            durable: Mutex::new(image),
            budget: AtomicI64::new(-1),
        }))
    }
    fn spend(&self) -> io::Result<()> {
        let left = self.0.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::other("injected fault"));
        }
        if left > 0 {
            self.0.budget.store(left - 1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.volatile.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let v = self.0.volatile.lock().unwrap();
        let start = usize::try_from(offset).unwrap();
        v.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.spend()?;
        self.0
            .volatile
            .lock()
            .unwrap()
            .resize(usize::try_from(len).unwrap(), 0);
        Ok(())
    }
    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        self.spend()?;
        let v = self.0.volatile.lock().unwrap().clone();
        *self.0.durable.lock().unwrap() = v;
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.spend()?;
        let mut v = self.0.volatile.lock().unwrap();
        let start = usize::try_from(offset).unwrap();
        if v.len() < start + data.len() {
            v.resize(start + data.len(), 0);
        }
        v[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn open(backend: FaultyBackend) -> Option<RedbLedger> {
    let db = redb::Builder::new().create_with_backend(backend).ok()?;
    RedbLedger::open_in(db).ok()
}

/// Builds a ledger with some history, returning its disk and state.
fn setup() -> (FaultyBackend, RedbLedger) {
    let backend = FaultyBackend::from_image(Vec::new());
    let db = redb::Builder::new()
        .create_with_backend(backend.clone())
        .unwrap();
    let mut l = RedbLedger::create_in(db, &suite::genesis()).unwrap();
    l.bond(&suite::acct("producer:bob"), StakeTier::Producer, 100)
        .unwrap();
    l.lock(
        &suite::escrow("task:1"),
        &suite::acct("actor:luckin"),
        10_000,
    )
    .unwrap();
    l.commit_distribution(
        PayoutSource::Account(suite::acct("actor:luckin")),
        distribution(1).commitment(),
    )
    .unwrap();
    (backend, l)
}

/// The suite's epoch leaves as the distribution of `epoch`.
fn distribution(epoch: u64) -> Distribution {
    Distribution::build(
        &format!("epoch-{epoch}/producers"),
        epoch,
        &suite::epoch_leaves(),
    )
    .unwrap()
}

/// A claim of leaf 3 of epoch 1's distribution (rows: distribution, claim, balance).
fn a_claim(l: &mut RedbLedger) -> Result<Outcome, LedgerError> {
    let leaf = &suite::epoch_leaves()[3];
    l.claim_distribution(
        &suite::dist_id("epoch-1/producers"),
        leaf,
        &distribution(1).proof(3).unwrap(),
    )
}

/// Epoch 2's distribution committed from a user account (rows: distribution, balance).
fn a_commit(l: &mut RedbLedger) -> Result<Outcome, LedgerError> {
    l.commit_distribution(
        PayoutSource::Account(suite::acct("actor:luckin")),
        distribution(2).commitment(),
    )
}

fn the_operation(
    l: &mut RedbLedger,
) -> Result<symphony_ledger::Outcome, symphony_ledger::LedgerError> {
    let set = suite::set(
        "payout:1",
        0,
        &[
            ("vault:v1", 3_000, PayoutKind::VaultOperator),
            ("producer:alice", 2_001, PayoutKind::DataUsageDividend),
            ("producer:bob", 1_000, PayoutKind::DataUsageDividend),
        ],
    );
    l.payout(&suite::escrow("task:1"), &set)
}

#[test]
fn a_crash_at_any_write_leaves_all_or_nothing() {
    crash_at_every_write(the_operation);
}

#[test]
fn a_crash_during_a_distribution_commit_or_claim_leaves_all_or_nothing() {
    crash_at_every_write(a_commit);
    crash_at_every_write(a_claim);
}

/// Runs `the_operation` with the disk failing after 0, 1, 2, … writes until it
/// succeeds; after each failure and crash, both disk images reopen to the state
/// before or after it, never between.
fn crash_at_every_write(the_operation: fn(&mut RedbLedger) -> Result<Outcome, LedgerError>) {
    // The expected states before and after the operation.
    let (_, mut reference) = setup();
    let before: LedgerState = reference.state().clone();
    the_operation(&mut reference).unwrap();
    let after: LedgerState = reference.state().clone();
    assert_ne!(before, after);

    let mut failures_seen = 0;
    for budget in 0..200 {
        let (backend, mut l) = setup();
        backend.0.budget.store(budget, Ordering::SeqCst);
        let result = the_operation(&mut l);
        match &result {
            Ok(_) => assert_eq!(l.state(), &after),
            Err(e) => {
                failures_seen += 1;
                assert_eq!(e.code(), 0xFF_0001, "expected a storage error, got {e:?}");
                assert_eq!(l.state(), &before, "failed commit changed the cache");
            }
        }
        drop(l);
        let volatile = backend.0.volatile.lock().unwrap().clone();
        let durable = backend.0.durable.lock().unwrap().clone();
        for (image_name, image) in [("volatile", volatile), ("durable", durable)] {
            let reopened = open(FaultyBackend::from_image(image))
                .unwrap_or_else(|| panic!("budget {budget}: {image_name} image does not reopen"));
            let state = reopened.state();
            assert!(
                state == &before || state == &after,
                "budget {budget}: {image_name} image holds half an operation"
            );
            if result.is_ok() && image_name == "durable" {
                assert_eq!(
                    state, &after,
                    "budget {budget}: acknowledged operation lost"
                );
            }
            reopened.reconcile().unwrap();
        }
        if result.is_ok() {
            assert!(failures_seen > 0, "fault injection never triggered");
            return;
        }
    }
    panic!("operation never succeeded within the write budget");
}
