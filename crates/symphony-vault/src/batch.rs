//! Record batches prepared ahead of the write transaction: BCS-encoded into one
//! byte arena and digested (the deduplication key), so the preparation can run on
//! the parser thread and the writer only encrypts and commits.

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use symphony_core::ids::SubjectId;

use crate::error::VaultError;
use crate::record::{Record, RecordRef};

/// Records encoded and digested ahead of the write transaction: one byte arena per
/// batch, so preparing allocates almost nothing per record.
#[derive(Debug, Default)]
pub struct PreparedBatch {
    pub(crate) arena: Vec<u8>,
    pub(crate) items: Vec<PreparedRecord>,
}

impl PreparedBatch {
    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[derive(Debug)]
pub(crate) struct PreparedRecord {
    pub(crate) subject: SubjectId,
    pub(crate) digest: [u8; 16],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Builds a [`PreparedBatch`]: BCS-encodes each record and computes its keyed
/// digest (the deduplication key).
#[derive(Debug)]
pub struct BatchBuilder {
    pub(crate) digest_key: [u8; 32],
    pub(crate) batch: PreparedBatch,
}

impl BatchBuilder {
    /// Adds an owned record.
    pub fn push_record(&mut self, subject: SubjectId, record: &Record) -> Result<(), VaultError> {
        self.push(subject, record)
    }

    /// Adds a borrowed record (same encoding as the owned one).
    pub fn push_ref(
        &mut self,
        subject: SubjectId,
        record: &RecordRef<'_>,
    ) -> Result<(), VaultError> {
        self.push(subject, record)
    }

    fn push<T: Serialize + ?Sized>(
        &mut self,
        subject: SubjectId,
        record: &T,
    ) -> Result<(), VaultError> {
        let start = self.batch.arena.len();
        bcs::serialize_into(&mut self.batch.arena, record)?;
        let end = self.batch.arena.len();
        let digest = record_digest(
            &self.digest_key,
            subject.as_str(),
            &self.batch.arena[start..end],
        );
        self.batch.items.push(PreparedRecord {
            subject,
            digest,
            start,
            end,
        });
        Ok(())
    }

    /// Records added so far.
    pub fn len(&self) -> usize {
        self.batch.items.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.batch.items.is_empty()
    }

    /// The batch, leaving the builder empty for the next one.
    pub fn finish(&mut self) -> PreparedBatch {
        std::mem::take(&mut self.batch)
    }
}

/// Keyed digest of a record (truncated SHA-256 over key ‖ subject ‖ BCS bytes).
fn record_digest(digest_key: &[u8; 32], subject: &str, record_bytes: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(digest_key);
    h.update((subject.len() as u32).to_le_bytes());
    h.update(subject.as_bytes());
    h.update(record_bytes);
    let full = h.finalize();
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

pub(crate) fn push_uleb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
