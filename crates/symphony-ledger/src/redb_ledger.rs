//! `RedbLedger`: the embedded, persisted ledger.
//!
//! ## Storage layout (redb 2)
//!
//! | table      | key             | value                         |
//! |------------|-----------------|-------------------------------|
//! | `events`   | `u64` sequence  | BCS `LedgerEvent` (append-only)|
//! | `balances` | account `&str`  | `u64` (zero rows are deleted) |
//! | `escrows`  | escrow id       | BCS `EscrowRecord`            |
//! | `stakes`   | actor           | BCS `StakeRecord` (empty rows deleted) |
//! | `payouts`  | payout id       | BCS `PayoutRecord`            |
//! | `meta`     | `"meta"`        | BCS `Meta`                    |
//! | `distributions` | distribution id | BCS `DistributionRecord` (root, totals, counts) |
//! | `claims`   | (distribution id, `u64` index) | BCS `ClaimRecord` (the claimed set) |
//!
//! ## Commit protocol
//!
//! An operation is executed in memory against the committed state (see `engine`),
//! then its events *and* every row it changes are written in **one** redb write
//! transaction with `Durability::Immediate`. Only after `commit()` returns is the
//! in-memory cache updated. A crash before the commit leaves the file exactly as it
//! was (redb's copy-on-write commit is atomic); a crash after leaves the whole
//! operation durable. A failed commit leaves cache and file unchanged.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::engine::{self, execute, genesis, Command, Executed, Outcome};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ledger::{cached_state_reads, SettlementLedger};
use crate::reconcile::{reconcile, ReconcileError, ReconcileReport};
use crate::state::{ClaimKey, LedgerState, Meta, StakeRecord, Writes};
use crate::types::{AccountId, DistributionId, EscrowId, Genesis, LedgerConfig, PayoutId};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const BALANCES: TableDefinition<&str, u64> = TableDefinition::new("balances");
const ESCROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("escrows");
const STAKES: TableDefinition<&str, &[u8]> = TableDefinition::new("stakes");
const PAYOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("payouts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";
const DISTRIBUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("distributions");
const CLAIMS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("claims");

fn storage(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, LedgerError> {
    bcs::to_bytes(v).map_err(|e| LedgerError::Encoding(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LedgerError> {
    bcs::from_bytes(bytes).map_err(|e| LedgerError::Encoding(e.to_string()))
}

/// The persisted ledger. One process owns the file (redb locks it).
pub struct RedbLedger {
    db: Database,
    config: LedgerConfig,
    state: LedgerState,
    next_seq: u64,
}

impl std::fmt::Debug for RedbLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbLedger")
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl RedbLedger {
    /// Creates a new ledger file at `path` and applies `genesis`. Fails with
    /// [`LedgerError::Genesis`] if the file already holds a ledger.
    pub fn create(path: impl AsRef<Path>, genesis_spec: &Genesis) -> Result<Self, LedgerError> {
        Self::create_in(Database::create(path).map_err(storage)?, genesis_spec)
    }

    /// Opens an existing ledger file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        Self::open_in(Database::open(path).map_err(storage)?)
    }

    /// Like [`RedbLedger::create`] on an already opened database (e.g. one built with
    /// a custom `redb::StorageBackend` for fault injection).
    pub fn create_in(db: Database, genesis_spec: &Genesis) -> Result<Self, LedgerError> {
        let (state, next_seq) = load(&db)?;
        if next_seq != 0 {
            return Err(LedgerError::Genesis);
        }
        let executed = genesis(&state, genesis_spec)?;
        let mut ledger = Self {
            db,
            config: genesis_spec.config.clone(),
            state,
            next_seq,
        };
        ledger.commit(executed)?;
        Ok(ledger)
    }

    /// Like [`RedbLedger::open`] on an already opened database.
    pub fn open_in(db: Database) -> Result<Self, LedgerError> {
        let (state, next_seq) = load(&db)?;
        let config = state.meta.config.clone().ok_or(LedgerError::Genesis)?;
        Ok(Self {
            db,
            config,
            state,
            next_seq,
        })
    }

    /// The materialized (cached) state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// Writes the events and every row they change in one durable redb transaction,
    /// then updates the cache (see the module's commit protocol).
    fn commit(&mut self, executed: Executed) -> Result<Outcome, LedgerError> {
        let (db, next_seq) = (&self.db, &mut self.next_seq);
        engine::commit(&mut self.state, *next_seq, executed, |executed| {
            *next_seq = write_executed(db, *next_seq, executed)?;
            Ok(())
        })
    }

    fn all_events(&self) -> Result<Vec<LedgerEvent>, LedgerError> {
        self.events(0, usize::MAX)
            .map(|v| v.into_iter().map(|(_, e)| e).collect())
    }
}

/// Writes `executed` from sequence `first_seq` in one transaction; returns the next
/// sequence number.
fn write_executed(db: &Database, first_seq: u64, executed: &Executed) -> Result<u64, LedgerError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate);
    let mut seq = first_seq;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        for event in &executed.events {
            events
                .insert(seq, encode(event)?.as_slice())
                .map_err(storage)?;
            seq += 1;
        }
        write_rows(&txn, &executed.writes)?;
    }
    txn.commit().map_err(storage)?;
    Ok(seq)
}

fn write_rows(txn: &redb::WriteTransaction, w: &Writes) -> Result<(), LedgerError> {
    let mut balances = txn.open_table(BALANCES).map_err(storage)?;
    for (account, value) in &w.balances {
        if *value == 0 {
            balances.remove(account.as_str()).map_err(storage)?;
        } else {
            balances.insert(account.as_str(), *value).map_err(storage)?;
        }
    }
    let mut escrows = txn.open_table(ESCROWS).map_err(storage)?;
    for (id, record) in &w.escrows {
        escrows
            .insert(id.as_str(), encode(record)?.as_slice())
            .map_err(storage)?;
    }
    let mut stakes = txn.open_table(STAKES).map_err(storage)?;
    for (actor, record) in &w.stakes {
        if Writes::stake_is_empty(record) {
            stakes.remove(actor.as_str()).map_err(storage)?;
        } else {
            stakes
                .insert(actor.as_str(), encode(record)?.as_slice())
                .map_err(storage)?;
        }
    }
    let mut payouts = txn.open_table(PAYOUTS).map_err(storage)?;
    for (id, record) in &w.payouts {
        payouts
            .insert(id.as_str(), encode(record)?.as_slice())
            .map_err(storage)?;
    }
    if !w.distributions.is_empty() {
        let mut distributions = txn.open_table(DISTRIBUTIONS).map_err(storage)?;
        for (id, record) in &w.distributions {
            distributions
                .insert(id.as_str(), encode(record)?.as_slice())
                .map_err(storage)?;
        }
    }
    if !w.claims.is_empty() {
        let mut claims = txn.open_table(CLAIMS).map_err(storage)?;
        for (key, record) in &w.claims {
            claims
                .insert(
                    (key.distribution_id.as_str(), key.index),
                    encode(record)?.as_slice(),
                )
                .map_err(storage)?;
        }
    }
    let mut meta = txn.open_table(META).map_err(storage)?;
    if let Some(m) = &w.meta {
        meta.insert(META_KEY, encode(m)?.as_slice())
            .map_err(storage)?;
    }
    Ok(())
}

fn read_map<K: Ord, V: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: impl Fn(&str) -> Result<K, LedgerError>,
) -> Result<std::collections::BTreeMap<K, V>, LedgerError> {
    let mut out = std::collections::BTreeMap::new();
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(storage(e)),
    };
    for row in t.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        out.insert(key(k.value())?, decode(v.value())?);
    }
    Ok(out)
}

/// Loads the stored rows (not a replay) and the next event sequence number.
fn load(db: &Database) -> Result<(LedgerState, u64), LedgerError> {
    let txn = db.begin_read().map_err(storage)?;
    let mut state = LedgerState::default();
    match txn.open_table(BALANCES) {
        Ok(t) => {
            for row in t.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                state.balances.insert(AccountId::new(k.value())?, v.value());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    state.escrows = read_map(&txn, ESCROWS, |k| EscrowId::new(k))?;
    state.stakes = read_map::<AccountId, StakeRecord>(&txn, STAKES, |k| AccountId::new(k))?;
    state.payouts = read_map(&txn, PAYOUTS, |k| PayoutId::new(k))?;
    let metas: std::collections::BTreeMap<String, Meta> =
        read_map(&txn, META, |k| Ok(k.to_owned()))?;
    state.meta = metas.get(META_KEY).cloned().unwrap_or_default();
    state.distributions = read_map(&txn, DISTRIBUTIONS, |k| DistributionId::new(k))?;
    match txn.open_table(CLAIMS) {
        Ok(t) => {
            for row in t.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (id, index) = k.value();
                let key = ClaimKey {
                    distribution_id: DistributionId::new(id)?,
                    index,
                };
                state.claims.insert(key, decode(v.value())?);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    let next_seq = match txn.open_table(EVENTS) {
        Ok(t) => match t.last().map_err(storage)? {
            Some((k, _)) => k.value() + 1,
            None => 0,
        },
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(storage(e)),
    };
    Ok((state, next_seq))
}

impl SettlementLedger for RedbLedger {
    fn execute(&mut self, command: Command) -> Result<Outcome, LedgerError> {
        let executed = execute(&self.state, &command)?;
        self.commit(executed)
    }
    cached_state_reads!();
    fn events(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, LedgerEvent)>, LedgerError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(EVENTS).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.range(from_seq..).map_err(storage)?.take(limit) {
            let (k, v) = row.map_err(storage)?;
            out.push((k.value(), decode(v.value())?));
        }
        Ok(out)
    }
    fn reconcile(&self) -> Result<ReconcileReport, ReconcileError> {
        let err = |e: LedgerError| ReconcileError::Storage(e.to_string());
        let events = self.all_events().map_err(err)?;
        if events.len() as u64 != self.next_seq {
            return Err(ReconcileError::StateMismatch {
                table: "events",
                key: "sequence".into(),
            });
        }
        let (stored, _) = load(&self.db).map_err(err)?;
        if stored != self.state {
            return Err(ReconcileError::StateMismatch {
                table: "cache",
                key: "state".into(),
            });
        }
        reconcile(&events, &stored)
    }
}
