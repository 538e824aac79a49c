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
//!
//! Every write is one `Durability::Immediate` transaction. Rows advance only forward
//! (a row's settlement state never moves back); an epoch's payout set, once written,
//! is never changed (re-writing identical bytes is a no-op, different bytes an error).

use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use symphony_core::ids::TaskId;
use symphony_ledger::PayoutInstructionSet;

use super::{CompositeSettlement, SettlementRow};
use crate::NodeError;

const SETTLEMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("settlements");
const EPOCH_PAYOUTS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("epoch_payouts");
const COMPOSITES: TableDefinition<&str, &[u8]> = TableDefinition::new("composites");
const CREDITS: TableDefinition<&str, u64> = TableDefinition::new("credits");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn io(e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(format!("settlement store: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, NodeError> {
    bcs::to_bytes(v).map_err(|e| NodeError::Encoding(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NodeError> {
    bcs::from_bytes(bytes).map_err(|e| NodeError::Encoding(e.to_string()))
}

/// The persisted settlement state of one master.
pub struct SettlementStore {
    db: Database,
}

impl std::fmt::Debug for SettlementStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementStore").finish_non_exhaustive()
    }
}

impl SettlementStore {
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
        }
        tx.commit().map_err(io)?;
        Ok(SettlementStore { db })
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let mut tx = self.db.begin_write().map_err(io)?;
        tx.set_durability(Durability::Immediate);
        f(&tx)?;
        tx.commit().map_err(io)
    }

    /// A settlement row.
    pub fn row(&self, task_id: &TaskId) -> Result<Option<SettlementRow>, NodeError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(SETTLEMENTS).map_err(io)?;
        let row = t.get(task_id.as_str()).map_err(io)?;
        row.map(|v| decode(v.value())).transpose()
    }

    /// All settlement rows, by task id.
    pub fn rows(&self) -> Result<Vec<SettlementRow>, NodeError> {
        let tx = self.db.begin_read().map_err(io)?;
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
        if let Some(old) = self.row(&row.task_id)? {
            if old.state > row.state || old.phase > row.phase {
                return Err(NodeError::Refused(format!(
                    "settlement of {} cannot move back from {}/{:?} to {}/{:?}",
                    row.task_id, old.state, old.phase, row.state, row.phase
                )));
            }
        }
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
        let bytes = encode(set)?;
        let key = (set.epoch_id, set.payout_id.as_str());
        let tx_bytes = bytes.clone();
        let existing = {
            let tx = self.db.begin_read().map_err(io)?;
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
        let tx = self.db.begin_read().map_err(io)?;
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
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(EPOCH_PAYOUTS).map_err(io)?;
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
        let bytes = encode(c)?;
        self.write(|tx| {
            let mut t = tx.open_table(COMPOSITES).map_err(io)?;
            t.insert(c.parent.as_str(), bytes.as_slice()).map_err(io)?;
            Ok(())
        })
    }

    /// A composite settlement.
    pub fn composite(&self, parent: &TaskId) -> Result<Option<CompositeSettlement>, NodeError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(COMPOSITES).map_err(io)?;
        let v = t.get(parent.as_str()).map_err(io)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// An enterprise's data contribution credit balance.
    pub fn credit(&self, actor: &str) -> Result<u64, NodeError> {
        self.get_u64(CREDITS, actor)
    }

    /// Sets an enterprise's credit balance.
    pub fn set_credit(&self, actor: &str, balance: u64) -> Result<(), NodeError> {
        self.put_u64(CREDITS, actor, balance)
    }

    /// A named scalar.
    pub fn meta(&self, key: &str) -> Result<Option<u64>, NodeError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(META).map_err(io)?;
        let v = t.get(key).map_err(io)?;
        Ok(v.map(|v| v.value()))
    }

    /// Sets a named scalar.
    pub fn set_meta(&self, key: &str, value: u64) -> Result<(), NodeError> {
        self.put_u64(META, key, value)
    }

    fn get_u64(&self, table: TableDefinition<&str, u64>, key: &str) -> Result<u64, NodeError> {
        let tx = self.db.begin_read().map_err(io)?;
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
