//! Record batches prepared ahead of the write transaction: BCS-encoded into one
//! byte arena and digested (the deduplication key), so the preparation can run on
//! the parser thread and the writer only encrypts and commits.

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use symphony_core::ids::SubjectId;

use crate::error::VaultError;
use crate::record::{Record, RecordRef};

/// Records encoded and digested ahead of the write transaction: one byte arena per
/// batch (each record's subject id followed by its BCS bytes), so preparing
/// allocates almost nothing per record.
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

    /// Heap bytes the batch holds (what staging a batch in memory costs).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.items.capacity() * std::mem::size_of::<PreparedRecord>()
    }

    /// Orders the records by subject id (stable: import order within a subject), the
    /// order [`crate::Vault::insert_prepared`] visits them in. Cheap on an already
    /// grouped batch; run on the preparing thread, it saves the writer the sort.
    pub fn sort_by_subject(&mut self) {
        if self.is_sorted_by_subject() {
            return;
        }
        // A subject's records mostly come together (a person's rows): sort the runs
        // of one subject, stably, rather than every record. The records end in the
        // order a stable sort of the records gives.
        let subject = |r: &PreparedRecord| &self.arena[r.subject_start..r.start];
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        let mut at = 0;
        while at < self.items.len() {
            let first = subject(&self.items[at]);
            let mut end = at + 1;
            while end < self.items.len() && subject(&self.items[end]) == first {
                end += 1;
            }
            runs.push(at..end);
            at = end;
        }
        runs.sort_by(|a, b| subject(&self.items[a.start]).cmp(subject(&self.items[b.start])));
        let mut items = Vec::with_capacity(self.items.len());
        for run in runs {
            items.extend_from_slice(&self.items[run]);
        }
        self.items = items;
    }

    /// Whether the records are in subject id order.
    pub(crate) fn is_sorted_by_subject(&self) -> bool {
        self.items
            .windows(2)
            .all(|w| self.subject(&w[0]) <= self.subject(&w[1]))
    }

    /// The subject id bytes of an item (valid UTF-8: copied from a [`SubjectId`]).
    /// The items' indices in the order they were prepared (file order), whatever
    /// order the items are in now: the arena grows in preparation order.
    pub(crate) fn file_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| self.items[i].start);
        order
    }

    /// Reserves room for `arena` more arena bytes and `items` more records.
    pub(crate) fn reserve(&mut self, arena: usize, items: usize) {
        self.arena.reserve(arena);
        self.items.reserve(items);
    }

    /// Appends `other`'s item `i` (its subject, record bytes and digest).
    pub(crate) fn push_from(&mut self, other: &PreparedBatch, i: usize) {
        let item = &other.items[i];
        let subject_start = self.arena.len();
        self.arena
            .extend_from_slice(&other.arena[item.subject_start..item.start]);
        let start = self.arena.len();
        self.arena
            .extend_from_slice(&other.arena[item.start..item.end]);
        self.items.push(PreparedRecord {
            digest: item.digest,
            subject_start,
            start,
            end: self.arena.len(),
        });
    }

    pub(crate) fn subject(&self, item: &PreparedRecord) -> &[u8] {
        &self.arena[item.subject_start..item.start]
    }

    /// The BCS bytes of an item's record.
    pub(crate) fn record(&self, item: &PreparedRecord) -> &[u8] {
        &self.arena[item.start..item.end]
    }

    /// Appends the batch to a spill file: `n u64 ‖ arena_len u64 ‖ n × (digest 16 ‖
    /// subject_start u64 ‖ start u64 ‖ end u64) ‖ arena` (little-endian).
    pub(crate) fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(&(self.items.len() as u64).to_le_bytes())?;
        out.write_all(&(self.arena.len() as u64).to_le_bytes())?;
        let mut buf = Vec::with_capacity(self.items.len() * 40);
        for item in &self.items {
            buf.extend_from_slice(&item.digest);
            buf.extend_from_slice(&(item.subject_start as u64).to_le_bytes());
            buf.extend_from_slice(&(item.start as u64).to_le_bytes());
            buf.extend_from_slice(&(item.end as u64).to_le_bytes());
        }
        out.write_all(&buf)?;
        out.write_all(&self.arena)
    }

    /// Reads back a batch written by [`PreparedBatch::write_to`], checking that
    /// every range lies in the arena.
    pub(crate) fn read_from(input: &mut impl std::io::Read) -> std::io::Result<PreparedBatch> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed spill batch");
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        let n = usize::try_from(u64::from_le_bytes(word)).map_err(|_| bad())?;
        input.read_exact(&mut word)?;
        let arena_len = usize::try_from(u64::from_le_bytes(word)).map_err(|_| bad())?;
        let mut buf = vec![0u8; n.checked_mul(40).ok_or_else(bad)?];
        input.read_exact(&mut buf)?;
        let mut items = Vec::with_capacity(n);
        for chunk in buf.chunks_exact(40) {
            let word = |at: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&chunk[at..at + 8]);
                usize::try_from(u64::from_le_bytes(w)).map_err(|_| bad())
            };
            let mut digest = [0u8; 16];
            digest.copy_from_slice(&chunk[..16]);
            let item = PreparedRecord {
                digest,
                subject_start: word(16)?,
                start: word(24)?,
                end: word(32)?,
            };
            if !(item.subject_start <= item.start
                && item.start <= item.end
                && item.end <= arena_len)
            {
                return Err(bad());
            }
            items.push(item);
        }
        let mut arena = vec![0u8; arena_len];
        input.read_exact(&mut arena)?;
        Ok(PreparedBatch { arena, items })
    }
}

/// One record of a [`PreparedBatch`]: its subject id is `arena[subject_start..start]`,
/// its BCS bytes `arena[start..end]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreparedRecord {
    pub(crate) digest: [u8; 16],
    pub(crate) subject_start: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Builds a [`PreparedBatch`]: BCS-encodes each record and computes its keyed
/// digest (the deduplication key).
#[derive(Debug)]
pub struct BatchBuilder {
    pub(crate) digest_key: [u8; 32],
    pub(crate) batch: PreparedBatch,
    /// Room to reserve when the next batch starts (arena bytes, records): about
    /// the size of the last batch finished.
    pub(crate) next_room: (usize, usize),
}

impl BatchBuilder {
    /// Adds an owned record.
    pub fn push_record(&mut self, subject: SubjectId, record: &Record) -> Result<(), VaultError> {
        self.push(&subject, record)
    }

    /// Adds a borrowed record (same encoding as the owned one).
    pub fn push_ref(
        &mut self,
        subject: SubjectId,
        record: &RecordRef<'_>,
    ) -> Result<(), VaultError> {
        self.push(&subject, record)
    }

    /// Adds a borrowed record of a borrowed subject.
    pub fn push_borrowed(
        &mut self,
        subject: &SubjectId,
        record: &RecordRef<'_>,
    ) -> Result<(), VaultError> {
        self.push(subject, record)
    }

    fn push<T: Serialize + ?Sized>(
        &mut self,
        subject: &SubjectId,
        record: &T,
    ) -> Result<(), VaultError> {
        if self.batch.items.is_empty() && self.batch.arena.capacity() == 0 {
            let (arena, items) = self.next_room;
            self.batch.arena.reserve(arena);
            self.batch.items.reserve(items);
        }
        let subject_start = self.batch.arena.len();
        self.batch
            .arena
            .extend_from_slice(subject.as_str().as_bytes());
        let start = self.batch.arena.len();
        if let Err(e) = bcs::serialize_into(&mut self.batch.arena, record) {
            self.batch.arena.truncate(subject_start);
            return Err(e.into());
        }
        let end = self.batch.arena.len();
        let digest = record_digest(
            &self.digest_key,
            &self.batch.arena[subject_start..start],
            &self.batch.arena[start..end],
        );
        self.batch.items.push(PreparedRecord {
            digest,
            subject_start,
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

    /// The batch, leaving the builder empty for the next one (which reserves, when
    /// it starts, room for one of this size: its buffers then grow without copying).
    pub fn finish(&mut self) -> PreparedBatch {
        let arena = self.batch.arena.len();
        self.next_room = (arena + arena / 8, self.batch.items.len());
        std::mem::take(&mut self.batch)
    }
}

/// Keyed digest of a record (truncated SHA-256 over key ‖ subject ‖ BCS bytes).
fn record_digest(digest_key: &[u8; 32], subject: &[u8], record_bytes: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(digest_key);
    h.update((subject.len() as u32).to_le_bytes());
    h.update(subject);
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Sorting by runs orders the records as a stable sort of them does.
        #[test]
        fn sort_by_subject_is_a_stable_sort(subjects in proptest::collection::vec(0u8..6, 0..60)) {
            let mut builder = BatchBuilder {
                digest_key: [0; 32],
                batch: PreparedBatch::default(),
                next_room: (0, 0),
            };
            for (i, s) in subjects.iter().enumerate() {
                let subject = SubjectId::new(format!("s-{s}")).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                builder.push(&subject, &(i as u64)).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            }
            let mut batch = builder.finish();
            let arena = batch.arena.clone();
            let mut expected: Vec<(usize, usize)> = batch.items.iter().map(|r| (r.subject_start, r.start)).collect();
            expected.sort_by(|a, b| arena[a.0..a.1].cmp(&arena[b.0..b.1]));
            batch.sort_by_subject();
            let got: Vec<(usize, usize)> = batch.items.iter().map(|r| (r.subject_start, r.start)).collect();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert!(batch.is_sorted_by_subject());
        }
    }
}
