//! The settlement store: what the settlement plane must not forget across a crash.
//!
//! ## Layout (redb 2, one file `settlement.redb` beside `ledger.redb`)
//!
//! | table           | key                    | value                                   |
//! |-----------------|------------------------|-----------------------------------------|
//! | `settlements`   | task id                | BCS [`SettlementRow`]                    |
//! | `epoch_payouts` | `(epoch, payout id)`   | BCS `PayoutInstructionSet` (append-only) |
//! | `composites`    | parent task id         | BCS [`CompositeSettlement`]              |
//! | `credits`       | enterprise actor       | `u64` credit balance (µSYM of fee offset)|
//! | `meta`          | name                   | `u64` (e.g. supply at the start of a year)|
//! | `distributions` | distribution id        | BCS [`DividendDistribution`] (its leaves; append-only) |
//!
//! Every write is one `Durability::Immediate` transaction. Rows advance only forward
//! (a row's settlement state never moves back); an epoch's payout set, once written,
//! is never changed (re-writing identical bytes is a no-op, different bytes an error).
//!
//! ## Replicated
//!
//! A deployed master cluster keeps the same tables in its replicated state instead
//! ([`SettlementStore::replicated`] over a [`ReplicatedSettlements`]): every write
//! is a [`StoreWrite`] committed through consensus and applied by
//! [`SettlementTables::apply`] on every master, under the same rules, so a master
//! that takes over after the leader crashed finds every row, payout group, credit
//! and composite link the old leader wrote.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use symphony_core::ids::TaskId;
use symphony_ledger::PayoutInstructionSet;

use super::dividends::DividendDistribution;
use super::{CompositeSettlement, SettlementRow};
use crate::NodeError;

const SETTLEMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("settlements");
const EPOCH_PAYOUTS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("epoch_payouts");
const COMPOSITES: TableDefinition<&str, &[u8]> = TableDefinition::new("composites");
const CREDITS: TableDefinition<&str, u64> = TableDefinition::new("credits");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DISTRIBUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("distributions");

fn io(e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(format!("settlement store: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, NodeError> {
    bcs::to_bytes(v).map_err(|e| NodeError::Encoding(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NodeError> {
    bcs::from_bytes(bytes).map_err(|e| NodeError::Encoding(e.to_string()))
}

/// The settlement tables as plain data: the replicated form of the store (same
/// tables and rules as the redb layout above).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementTables {
    /// Task id → row.
    pub settlements: BTreeMap<String, SettlementRow>,
    /// `(epoch, payout id)` → set (append-only).
    pub epoch_payouts: BTreeMap<(u64, String), PayoutInstructionSet>,
    /// Parent task id → composite settlement.
    pub composites: BTreeMap<String, CompositeSettlement>,
    /// Enterprise actor → credit balance, µSYM.
    pub credits: BTreeMap<String, u64>,
    /// Named scalars.
    pub meta: BTreeMap<String, u64>,
    /// Distribution id → a Vault's dividend distribution with its leaves
    /// (append-only).
    pub distributions: BTreeMap<String, DividendDistribution>,
}

/// One write to the settlement tables (the replicated store's command).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreWrite {
    /// [`SettlementStore::put_row`].
    PutRow(Box<SettlementRow>),
    /// [`SettlementStore::put_row_with_credits`].
    PutRowWithCredits(Box<SettlementRow>, Vec<(String, u64)>),
    /// [`SettlementStore::append_epoch_payout`].
    AppendEpochPayout(Box<PayoutInstructionSet>),
    /// [`SettlementStore::put_composite`].
    PutComposite(Box<CompositeSettlement>),
    /// [`SettlementStore::set_credit`].
    SetCredit(String, u64),
    /// [`SettlementStore::set_meta`].
    SetMeta(String, u64),
    /// [`SettlementStore::put_distribution`].
    PutDistribution(Box<DividendDistribution>),
}

fn moves_back(old: Option<&SettlementRow>, row: &SettlementRow) -> Result<(), NodeError> {
    match old {
        Some(old) if old.state > row.state || old.phase > row.phase => {
            Err(NodeError::Refused(format!(
                "settlement of {} cannot move back from {}/{:?} to {}/{:?}",
                row.task_id, old.state, old.phase, row.state, row.phase
            )))
        }
        _ => Ok(()),
    }
}

impl SettlementTables {
    /// Applies `write` under the store's rules (rows only forward, epoch payout
    /// sets append-only, no overflow); a refused write changes nothing.
    pub fn apply(&mut self, write: &StoreWrite) -> Result<(), NodeError> {
        match write {
            StoreWrite::PutRow(row) => {
                moves_back(self.settlements.get(row.task_id.as_str()), row)?;
                self.settlements
                    .insert(row.task_id.to_string(), row.as_ref().clone());
            }
            StoreWrite::PutRowWithCredits(row, credits) => {
                let mut next = self.credits.clone();
                for (actor, amount) in credits {
                    let slot = next.entry(actor.clone()).or_default();
                    *slot = slot
                        .checked_add(*amount)
                        .ok_or_else(|| NodeError::Refused("credit balance overflow".into()))?;
                }
                self.credits = next;
                self.settlements
                    .insert(row.task_id.to_string(), row.as_ref().clone());
            }
            StoreWrite::AppendEpochPayout(set) => {
                let key = (set.epoch_id, set.payout_id.to_string());
                match self.epoch_payouts.get(&key) {
                    Some(old) if old == set.as_ref() => {}
                    Some(_) => {
                        return Err(NodeError::Refused(format!(
                            "epoch {} payout {} is append-only",
                            set.epoch_id, set.payout_id
                        )))
                    }
                    None => {
                        self.epoch_payouts.insert(key, set.as_ref().clone());
                    }
                }
            }
            StoreWrite::PutComposite(c) => {
                self.composites
                    .insert(c.parent.to_string(), c.as_ref().clone());
            }
            StoreWrite::SetCredit(actor, balance) => {
                self.credits.insert(actor.clone(), *balance);
            }
            StoreWrite::SetMeta(key, value) => {
                self.meta.insert(key.clone(), *value);
            }
            StoreWrite::PutDistribution(d) => match self.distributions.get(&d.distribution_id) {
                Some(old) if old == d.as_ref() => {}
                Some(_) => {
                    return Err(NodeError::Refused(format!(
                        "distribution {} is append-only",
                        d.distribution_id
                    )))
                }
                None => {
                    self.distributions
                        .insert(d.distribution_id.clone(), d.as_ref().clone());
                }
            },
        }
        Ok(())
    }
}

/// The replicated state that holds a cluster's [`SettlementTables`]: a write
/// returns once it is committed (2 of 3) and applied locally, or with the reason it
/// was refused; a read sees the local replica.
pub trait ReplicatedSettlements: Send + Sync {
    /// Commits `write` through the replicated log.
    fn write(&self, write: StoreWrite) -> Result<(), NodeError>;
    /// Runs `f` on the local replica's tables.
    fn read(&self, f: &mut dyn FnMut(&SettlementTables));
}

/// Read-only tables (an exported replica being audited): every write is refused.
struct Frozen(SettlementTables);

impl ReplicatedSettlements for Frozen {
    fn write(&self, _write: StoreWrite) -> Result<(), NodeError> {
        Err(NodeError::Refused(
            "this settlement store is a read-only copy".into(),
        ))
    }
    fn read(&self, f: &mut dyn FnMut(&SettlementTables)) {
        f(&self.0);
    }
}

/// The persisted settlement state of one master (redb), or of the cluster (in the
/// replicated state).
pub struct SettlementStore {
    backend: Backend,
}

enum Backend {
    Redb(Database),
    Replicated(Box<dyn ReplicatedSettlements>),
}

impl std::fmt::Debug for SettlementStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementStore").finish_non_exhaustive()
    }
}

impl SettlementStore {
    /// A store whose tables live in the cluster's replicated state.
    pub fn replicated(backend: Box<dyn ReplicatedSettlements>) -> Self {
        SettlementStore {
            backend: Backend::Replicated(backend),
        }
    }

    /// A read-only store over a copy of replicated tables (for audits).
    pub fn frozen(tables: SettlementTables) -> Self {
        Self::replicated(Box::new(Frozen(tables)))
    }

    fn db(&self) -> Option<&Database> {
        match &self.backend {
            Backend::Redb(db) => Some(db),
            Backend::Replicated(_) => None,
        }
    }

    fn view<R>(&self, f: impl FnOnce(&SettlementTables) -> R) -> Option<R> {
        let Backend::Replicated(r) = &self.backend else {
            return None;
        };
        let mut f = Some(f);
        let mut out = None;
        r.read(&mut |t| {
            if let Some(f) = f.take() {
                out = Some(f(t));
            }
        });
        out
    }

    fn replicate(&self, write: StoreWrite) -> Option<Result<(), NodeError>> {
        match &self.backend {
            Backend::Replicated(r) => Some(r.write(write)),
            Backend::Redb(_) => None,
        }
    }

    /// Every table (a copy).
    pub fn tables(&self) -> Result<SettlementTables, NodeError> {
        if let Some(t) = self.view(Clone::clone) {
            return Ok(t);
        }
        let mut t = SettlementTables::default();
        for row in self.rows()? {
            t.settlements.insert(row.task_id.to_string(), row);
        }
        for set in self.all_epoch_payouts()? {
            t.epoch_payouts
                .insert((set.epoch_id, set.payout_id.to_string()), set);
        }
        for d in self.distributions()? {
            t.distributions.insert(d.distribution_id.clone(), d);
        }
        Ok(t)
    }

    /// Opens or creates the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        Self::init(Database::create(path).map_err(io)?)
    }

    /// A store that lives in memory only (a master without a settlement file; loses
    /// everything on restart).
    pub fn in_memory() -> Result<Self, NodeError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(io)?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, NodeError> {
        let tx = db.begin_write().map_err(io)?;
        {
            tx.open_table(SETTLEMENTS).map_err(io)?;
            tx.open_table(EPOCH_PAYOUTS).map_err(io)?;
            tx.open_table(COMPOSITES).map_err(io)?;
            tx.open_table(CREDITS).map_err(io)?;
            tx.open_table(META).map_err(io)?;
            tx.open_table(DISTRIBUTIONS).map_err(io)?;
        }
        tx.commit().map_err(io)?;
        Ok(SettlementStore {
            backend: Backend::Redb(db),
        })
    }

    fn local(&self) -> Result<&Database, NodeError> {
        self.db().ok_or_else(|| io("no local database"))
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let db = self.db().ok_or_else(|| io("no local database"))?;
        let mut tx = db.begin_write().map_err(io)?;
        tx.set_durability(Durability::Immediate);
        f(&tx)?;
        tx.commit().map_err(io)
    }

    /// A settlement row.
    pub fn row(&self, task_id: &TaskId) -> Result<Option<SettlementRow>, NodeError> {
        if let Some(r) = self.view(|t| t.settlements.get(task_id.as_str()).cloned()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(SETTLEMENTS).map_err(io)?;
        let row = t.get(task_id.as_str()).map_err(io)?;
        row.map(|v| decode(v.value())).transpose()
    }

    /// All settlement rows, by task id.
    pub fn rows(&self) -> Result<Vec<SettlementRow>, NodeError> {
        if let Some(r) = self.view(|t| t.settlements.values().cloned().collect()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(SETTLEMENTS).map_err(io)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(io)? {
            let (_, v) = item.map_err(io)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Writes a row. Refuses to move a row's settlement state or payout phase back.
    pub fn put_row(&self, row: &SettlementRow) -> Result<(), NodeError> {
        if let Some(r) = self.replicate(StoreWrite::PutRow(Box::new(row.clone()))) {
            return r;
        }
        moves_back(self.row(&row.task_id)?.as_ref(), row)?;
        let bytes = encode(row)?;
        self.write(|tx| {
            let mut t = tx.open_table(SETTLEMENTS).map_err(io)?;
            t.insert(row.task_id.as_str(), bytes.as_slice())
                .map_err(io)?;
            Ok(())
        })
    }

    /// Writes a row and adds `credits` to enterprise credit balances in **one**
    /// transaction (so a crash cannot earn credits twice or lose them).
    pub fn put_row_with_credits(
        &self,
        row: &SettlementRow,
        credits: &[(String, u64)],
    ) -> Result<(), NodeError> {
        let write = StoreWrite::PutRowWithCredits(Box::new(row.clone()), credits.to_vec());
        if let Some(r) = self.replicate(write) {
            return r;
        }
        let bytes = encode(row)?;
        self.write(|tx| {
            let mut c = tx.open_table(CREDITS).map_err(io)?;
            for (actor, amount) in credits {
                let old = c.get(actor.as_str()).map_err(io)?.map_or(0, |v| v.value());
                let new = old
                    .checked_add(*amount)
                    .ok_or_else(|| NodeError::Refused("credit balance overflow".into()))?;
                c.insert(actor.as_str(), new).map_err(io)?;
            }
            let mut t = tx.open_table(SETTLEMENTS).map_err(io)?;
            t.insert(row.task_id.as_str(), bytes.as_slice())
                .map_err(io)?;
            Ok(())
        })
    }

    /// Appends a payout set to its epoch's group. Identical re-append is a no-op.
    pub fn append_epoch_payout(&self, set: &PayoutInstructionSet) -> Result<(), NodeError> {
        if let Some(r) = self.replicate(StoreWrite::AppendEpochPayout(Box::new(set.clone()))) {
            return r;
        }
        let bytes = encode(set)?;
        let key = (set.epoch_id, set.payout_id.as_str());
        let tx_bytes = bytes.clone();
        let existing = {
            let tx = self.local()?.begin_read().map_err(io)?;
            let t = tx.open_table(EPOCH_PAYOUTS).map_err(io)?;
            let v = t.get(key).map_err(io)?;
            v.map(|v| v.value().to_vec())
        };
        match existing {
            Some(old) if old == bytes => Ok(()),
            Some(_) => Err(NodeError::Refused(format!(
                "epoch {} payout {} is append-only",
                set.epoch_id, set.payout_id
            ))),
            None => self.write(|tx| {
                let mut t = tx.open_table(EPOCH_PAYOUTS).map_err(io)?;
                t.insert(key, tx_bytes.as_slice()).map_err(io)?;
                Ok(())
            }),
        }
    }

    /// The payout sets of `epoch`, by payout id.
    pub fn epoch_payouts(&self, epoch: u64) -> Result<Vec<PayoutInstructionSet>, NodeError> {
        if let Some(r) = self.view(|t| {
            t.epoch_payouts
                .iter()
                .filter(|((e, _), _)| *e == epoch)
                .map(|(_, s)| s.clone())
                .collect()
        }) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(EPOCH_PAYOUTS).map_err(io)?;
        let mut out = Vec::new();
        for item in t.range((epoch, "")..).map_err(io)? {
            let (k, v) = item.map_err(io)?;
            if k.value().0 != epoch {
                break;
            }
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Every epoch payout set, ordered by `(epoch, payout id)`.
    pub fn all_epoch_payouts(&self) -> Result<Vec<PayoutInstructionSet>, NodeError> {
        if let Some(r) = self.view(|t| t.epoch_payouts.values().cloned().collect()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(EPOCH_PAYOUTS).map_err(io)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(io)? {
            let (_, v) = item.map_err(io)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Keeps a Vault's dividend distribution (its leaves, for proofs). Identical
    /// re-put is a no-op; other content under the same id is refused.
    pub fn put_distribution(&self, d: &DividendDistribution) -> Result<(), NodeError> {
        if let Some(r) = self.replicate(StoreWrite::PutDistribution(Box::new(d.clone()))) {
            return r;
        }
        let bytes = encode(d)?;
        let existing = {
            let tx = self.local()?.begin_read().map_err(io)?;
            let t = tx.open_table(DISTRIBUTIONS).map_err(io)?;
            let v = t.get(d.distribution_id.as_str()).map_err(io)?;
            v.map(|v| v.value().to_vec())
        };
        match existing {
            Some(old) if old == bytes => Ok(()),
            Some(_) => Err(NodeError::Refused(format!(
                "distribution {} is append-only",
                d.distribution_id
            ))),
            None => self.write(|tx| {
                let mut t = tx.open_table(DISTRIBUTIONS).map_err(io)?;
                t.insert(d.distribution_id.as_str(), bytes.as_slice())
                    .map_err(io)?;
                Ok(())
            }),
        }
    }

    /// A kept dividend distribution.
    pub fn distribution(&self, id: &str) -> Result<Option<DividendDistribution>, NodeError> {
        if let Some(r) = self.view(|t| t.distributions.get(id).cloned()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(DISTRIBUTIONS).map_err(io)?;
        let v = t.get(id).map_err(io)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// Every kept dividend distribution, by id.
    pub fn distributions(&self) -> Result<Vec<DividendDistribution>, NodeError> {
        if let Some(r) = self.view(|t| t.distributions.values().cloned().collect()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(DISTRIBUTIONS).map_err(io)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(io)? {
            let (_, v) = item.map_err(io)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Stores a composite settlement (replacing an earlier link of the same parent:
    /// the link grows as sub-tasks settle).
    pub fn put_composite(&self, c: &CompositeSettlement) -> Result<(), NodeError> {
        if let Some(r) = self.replicate(StoreWrite::PutComposite(Box::new(c.clone()))) {
            return r;
        }
        let bytes = encode(c)?;
        self.write(|tx| {
            let mut t = tx.open_table(COMPOSITES).map_err(io)?;
            t.insert(c.parent.as_str(), bytes.as_slice()).map_err(io)?;
            Ok(())
        })
    }

    /// A composite settlement.
    pub fn composite(&self, parent: &TaskId) -> Result<Option<CompositeSettlement>, NodeError> {
        if let Some(r) = self.view(|t| t.composites.get(parent.as_str()).cloned()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(COMPOSITES).map_err(io)?;
        let v = t.get(parent.as_str()).map_err(io)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// An enterprise's data contribution credit balance.
    pub fn credit(&self, actor: &str) -> Result<u64, NodeError> {
        if let Some(r) = self.view(|t| t.credits.get(actor).copied().unwrap_or(0)) {
            return Ok(r);
        }
        self.get_u64(CREDITS, actor)
    }

    /// Sets an enterprise's credit balance.
    pub fn set_credit(&self, actor: &str, balance: u64) -> Result<(), NodeError> {
        if let Some(r) = self.replicate(StoreWrite::SetCredit(actor.to_owned(), balance)) {
            return r;
        }
        self.put_u64(CREDITS, actor, balance)
    }

    /// A named scalar.
    pub fn meta(&self, key: &str) -> Result<Option<u64>, NodeError> {
        if let Some(r) = self.view(|t| t.meta.get(key).copied()) {
            return Ok(r);
        }
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(META).map_err(io)?;
        let v = t.get(key).map_err(io)?;
        Ok(v.map(|v| v.value()))
    }

    /// Sets a named scalar.
    pub fn set_meta(&self, key: &str, value: u64) -> Result<(), NodeError> {
        if let Some(r) = self.replicate(StoreWrite::SetMeta(key.to_owned(), value)) {
            return r;
        }
        self.put_u64(META, key, value)
    }

    fn get_u64(&self, table: TableDefinition<&str, u64>, key: &str) -> Result<u64, NodeError> {
        let tx = self.local()?.begin_read().map_err(io)?;
        let t = tx.open_table(table).map_err(io)?;
        let v = t.get(key).map_err(io)?;
        Ok(v.map(|v| v.value()).unwrap_or(0))
    }

    fn put_u64(
        &self,
        table: TableDefinition<&str, u64>,
        key: &str,
        value: u64,
    ) -> Result<(), NodeError> {
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(io)?;
            t.insert(key, value).map_err(io)?;
            Ok(())
        })
    }
}
