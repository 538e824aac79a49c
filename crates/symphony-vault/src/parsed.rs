//! Receipts parsed into this Vault (`parse` tasks): which record (by content hash)
//! each subject already has, the epoch it was parsed in and its quality score.
//! Duplicate uploads are recognised here, and the Vault computes its producers'
//! data quality rewards of an epoch from these rows (Vault-internal accounting:
//! the coordination layer sees scores only as reward amounts).

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use symphony_core::ids::{EpochId, SubjectId};

use crate::error::VaultError;
use crate::record::Record;
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

/// What [`Vault::store_parsed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreParsed {
    /// The record and its marker were written together.
    Stored,
    /// The subject already has this record: nothing was written; the first row.
    Duplicate(ParsedRecord),
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

    /// Stores a parsed record of `row.subject` and its duplicate marker `row` in ONE
    /// write transaction: both or neither, whatever crashes when. If the subject
    /// already has a record with `row.record_hash`, nothing is written (the store
    /// stays byte-identical) and the first row is returned as the duplicate. An
    /// erased subject's upload is refused and nothing is written.
    pub fn store_parsed(
        &self,
        record: &Record,
        row: &ParsedRecord,
    ) -> Result<StoreParsed, VaultError> {
        let key = (row.subject.as_str(), row.record_hash.as_str());
        // A duplicate is answered from a read transaction: no write begins.
        if let Some(first) = self.parsed_record(&row.subject, &row.record_hash)? {
            return Ok(StoreParsed::Duplicate(first));
        }
        let mut builder = self.batch_builder();
        builder.push_record(row.subject.clone(), record)?;
        let batch = builder.finish();
        let row_bytes = bcs::to_bytes(row)?;
        let tx = self.db.begin_write()?;
        let raced: Option<ParsedRecord> = {
            let table = tx.open_table(PARSED)?;
            let got = table.get(key)?;
            match got {
                Some(v) => Some(bcs::from_bytes(v.value())?),
                None => None,
            }
        };
        if let Some(first) = raced {
            // Stored by a concurrent upload since the read above.
            tx.abort()?;
            return Ok(StoreParsed::Duplicate(first));
        }
        let summary = self.insert_prepared_in(&tx, &batch)?;
        if summary.skipped_erased > 0 {
            tx.abort()?;
            return Err(VaultError::Erased(row.subject.to_string()));
        }
        {
            let mut table = tx.open_table(PARSED)?;
            table.insert(key, row_bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(StoreParsed::Stored)
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
