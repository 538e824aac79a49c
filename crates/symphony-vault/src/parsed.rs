//! Receipts parsed into this Vault (`parse` tasks): which record (by content hash)
//! each subject already has, the epoch it was parsed in and its quality score.
//! Duplicate uploads are recognised here, and the Vault computes its producers'
//! data quality rewards of an epoch from these rows (Vault-internal accounting:
//! the coordination layer sees scores only as reward amounts).

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use symphony_core::ids::{EpochId, SubjectId};

use crate::error::VaultError;
use crate::store::Vault;

/// (subject, record hash hex) → BCS [`ParsedRecord`].
pub(crate) const PARSED: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("parsed_records");

/// One parsed receipt of a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedRecord {
    /// The subject.
    pub subject: SubjectId,
    /// Content hash of the parsed record (hex).
    pub record_hash: String,
    /// Epoch of the parse task.
    pub epoch: EpochId,
    /// The parse task.
    pub task_id: String,
    /// Quality score, bp.
    pub score_bp: u16,
}

impl Vault {
    /// The parsed record `record_hash` of `subject`, if already stored.
    pub fn parsed_record(
        &self,
        subject: &SubjectId,
        record_hash: &str,
    ) -> Result<Option<ParsedRecord>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(PARSED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(match table.get((subject.as_str(), record_hash))? {
            Some(v) => Some(bcs::from_bytes(v.value())?),
            None => None,
        })
    }

    /// Records a parsed receipt (after its purchase was stored). Recording the same
    /// hash twice keeps the first row.
    pub fn record_parsed(&self, row: &ParsedRecord) -> Result<(), VaultError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(PARSED)?;
            let key = (row.subject.as_str(), row.record_hash.as_str());
            if table.get(key)?.is_none() {
                table.insert(key, bcs::to_bytes(row)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every parsed receipt, in (subject, hash) order.
    pub fn parsed_records(&self) -> Result<Vec<ParsedRecord>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(PARSED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(bcs::from_bytes(v.value())?);
        }
        Ok(out)
    }
}
