//! The Vault: opening, the encrypted record store, erasure and scans.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::Aes256Gcm;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use symphony_core::budget::Epsilon;
use symphony_core::ids::{EpochId, SubjectId, VaultId};

use crate::batch::{push_uleb128, BatchBuilder, PreparedBatch};
use crate::crypto::{self, DataKey, VaultKey, NONCE_LEN, TAG_LEN};
use crate::error::VaultError;
use crate::record::{Record, RecordRef};
use crate::scan::decode_block;
use crate::summary::{Summary, SUMMARIES};

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// subject id → subject number (dense, assigned at first import).
pub(crate) const SUBJECT_NOS: TableDefinition<&str, u64> = TableDefinition::new("subject_nos");
/// subject number → [`SubjectRow`]: subject id, wrapped data key (empty once
/// erased: crypto-shredding), next block number, erasure time, record digests.
pub(crate) const SUBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("subjects");
/// (subject number, block number) → nonce ‖ AES-GCM(BCS Vec<Record>) ‖ tag.
pub(crate) const BLOCKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("blocks");

const FORMAT: &[u8] = b"symphony-vault/v1";
/// The database file inside a Vault directory.
pub const DB_FILE: &str = "vault.redb";
/// The key file inside a Vault directory.
pub const KEY_FILE: &str = "vault.key";
const KEY_CHECK_PLAINTEXT: &[u8] = b"symphony-vault key check";

/// Parameters fixed when a Vault is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultConfig {
    /// The Vault's protocol id (bound into every ciphertext's associated data).
    pub vault_id: VaultId,
    /// Capacity of a subject's budget account when it is first used, per scope.
    pub default_budget: Epsilon,
    /// The epoch new budget accounts open in, until the first replenishment.
    pub initial_epoch: EpochId,
}

/// Per-subject bookkeeping, stored in clear (the record digests are keyed with a
/// secret derived from the Vault key, so they reveal no record content).
///
/// Layout: `name_len u16 ‖ name ‖ key_len u8 ‖ wrapped key ‖ next_block u64 ‖
/// erased_at_ms+1 u64 (0: not erased) ‖ sorted 16-byte digests…` (little-endian).
/// The scan reads only the name and key at the front.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubjectRow {
    pub(crate) name: String,
    pub(crate) wrapped_key: Vec<u8>,
    pub(crate) next_block: u64,
    pub(crate) erased_at_ms: Option<u64>,
    pub(crate) digests: Vec<[u8; 16]>,
}

impl SubjectRow {
    fn new(name: &str) -> Self {
        SubjectRow {
            name: name.to_owned(),
            ..SubjectRow::default()
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + self.name.len() + 1 + self.wrapped_key.len() + 16 + 16 * self.digests.len(),
        );
        // Subject ids are at most 128 bytes, wrapped keys 60 (both checked by type).
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.wrapped_key.len() as u8);
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&self.next_block.to_le_bytes());
        let erased = self.erased_at_ms.map_or(0, |t| t.saturating_add(1));
        out.extend_from_slice(&erased.to_le_bytes());
        for d in &self.digests {
            out.extend_from_slice(d);
        }
        out
    }

    /// The subject id and wrapped key (empty: erased), without the rest.
    pub(crate) fn decode_head(bytes: &[u8]) -> Result<(&str, &[u8], &[u8]), VaultError> {
        let bad = || VaultError::Storage("malformed subject row".to_owned());
        let (len, rest) = bytes.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = usize::from(u16::from_le_bytes(*len));
        let (name, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        let (key_len, rest) = rest.split_first().ok_or_else(bad)?;
        let (key, rest) = rest
            .split_at_checked(usize::from(*key_len))
            .ok_or_else(bad)?;
        Ok((name, key, rest))
    }

    fn decode(bytes: &[u8]) -> Result<Self, VaultError> {
        let bad = || VaultError::Storage("malformed subject row".to_owned());
        let (name, key, rest) = Self::decode_head(bytes)?;
        let (next_block, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let (erased, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let erased = u64::from_le_bytes(*erased);
        let (digests, tail) = rest.as_chunks::<16>();
        if !tail.is_empty() {
            return Err(bad());
        }
        Ok(SubjectRow {
            name: name.to_owned(),
            wrapped_key: key.to_vec(),
            next_block: u64::from_le_bytes(*next_block),
            erased_at_ms: erased.checked_sub(1),
            digests: digests.to_vec(),
        })
    }
}

/// What one [`Vault::insert_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertSummary {
    /// Records newly stored.
    pub inserted: u64,
    /// Records already present (same subject and content), skipped.
    pub duplicates: u64,
    /// Records of erased subjects, skipped (erasure is not undone by re-import).
    pub skipped_erased: u64,
    /// Blocks written.
    pub blocks: u64,
}

/// What a scan visited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Subjects passed to the callback.
    pub subjects: u64,
    /// Erased subjects skipped (their blocks can not be decrypted).
    pub erased_subjects: u64,
    /// Blocks decrypted.
    pub blocks: u64,
    /// Records decrypted.
    pub records: u64,
    /// Plaintext bytes decrypted.
    pub plaintext_bytes: u64,
}

/// An enterprise Vault: encrypted records, consent, privacy budgets, permits.
///
/// Thread-safe (`Sync`): readers run concurrently; writers are serialized by redb,
/// which is what makes concurrent budget reservations safe.
pub struct Vault {
    pub(crate) db: Database,
    pub(crate) config: VaultConfig,
    path: PathBuf,
    key_cipher: Aes256Gcm,
    digest_key: [u8; 32],
    dek_rng: Mutex<ChaCha20Rng>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Creates a new Vault file at `path` (refused if the file exists).
    ///
    /// `entropy` seeds the generator of per-subject data keys: pass fresh OS
    /// randomness in production, a fixed value in tests.
    pub fn create(
        path: &Path,
        config: VaultConfig,
        key: &VaultKey,
        entropy: [u8; 32],
    ) -> Result<Vault, VaultError> {
        if path.exists() {
            return Err(VaultError::NotAVault {
                path: path.to_owned(),
                reason: "refusing to create a Vault over an existing file",
            });
        }
        let db = Database::create(path)?;
        let cipher = key.cipher();
        let mut nonce = [0u8; crypto::NONCE_LEN];
        nonce.copy_from_slice(&Sha256::digest(entropy)[..crypto::NONCE_LEN]);
        let check = crypto::seal(
            &cipher,
            nonce,
            &key_check_aad(&config.vault_id),
            KEY_CHECK_PLAINTEXT,
        )?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            meta.insert("format", FORMAT)?;
            meta.insert("config", bcs::to_bytes(&config)?.as_slice())?;
            meta.insert("key_check", check.as_slice())?;
            meta.insert("opens", 0u64.to_le_bytes().as_slice())?;
            tx.open_table(SUBJECT_NOS)?;
            tx.open_table(SUBJECTS)?;
            tx.open_table(BLOCKS)?;
            tx.open_table(SUMMARIES)?;
            meta.insert(crate::summary::SUMMARIES_META, b"v1".as_slice())?;
            tx.open_table(crate::ledger::CONSENT)?;
            tx.open_table(crate::ledger::BUDGET)?;
            tx.open_table(crate::ledger::RELEASED_TASKS)?;
            tx.open_table(crate::auth::PERMITS)?;
        }
        tx.commit()?;
        drop(db);
        Vault::open(path, key, entropy)
    }

    /// Opens an existing Vault; a key that does not match is refused with
    /// [`VaultError::WrongKey`].
    pub fn open(path: &Path, key: &VaultKey, entropy: [u8; 32]) -> Result<Vault, VaultError> {
        if !path.exists() {
            return Err(VaultError::NotAVault {
                path: path.to_owned(),
                reason: "no Vault file here",
            });
        }
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        let (config, opens) = {
            let mut meta = tx.open_table(META)?;
            let not_vault = |reason| VaultError::NotAVault {
                path: path.to_owned(),
                reason,
            };
            let format = meta.get("format")?.map(|v| v.value().to_vec());
            if format.as_deref() != Some(FORMAT) {
                return Err(not_vault("not a symphony-vault/v1 file"));
            }
            let config: VaultConfig = match meta.get("config")? {
                Some(v) => bcs::from_bytes(v.value())?,
                None => return Err(not_vault("missing config")),
            };
            let check = match meta.get("key_check")? {
                Some(v) => v.value().to_vec(),
                None => return Err(not_vault("missing key check")),
            };
            crypto::open(&key.cipher(), &key_check_aad(&config.vault_id), &check).map_err(
                |()| VaultError::WrongKey {
                    vault: config.vault_id.to_string(),
                },
            )?;
            let opens = match meta.get("opens")? {
                Some(v) => read_u64(v.value()),
                None => 0,
            }
            .wrapping_add(1);
            meta.insert("opens", opens.to_le_bytes().as_slice())?;
            (config, opens)
        };
        tx.commit()?;
        // Data keys must never repeat even if the caller reuses `entropy`: mix in the
        // persisted open counter.
        let mut seed = Sha256::new();
        seed.update(b"symphony-vault/dek-rng/v1\0");
        seed.update(entropy);
        seed.update(opens.to_le_bytes());
        let vault = Vault {
            db,
            config,
            path: path.to_owned(),
            key_cipher: key.cipher(),
            digest_key: key.digest_key(),
            dek_rng: Mutex::new(ChaCha20Rng::from_seed(seed.finalize().into())),
        };
        // A Vault written before per-subject summaries existed gets them once.
        vault.ensure_summaries()?;
        Ok(vault)
    }

    /// Creates a Vault directory for the CLI: `DIR/vault.redb` and the key file
    /// `DIR/vault.key` (64 hex characters, fresh from `rng`; the caller protects it).
    pub fn create_dir<R: rand::RngCore + rand::CryptoRng>(
        dir: &Path,
        config: VaultConfig,
        rng: &mut R,
    ) -> Result<Vault, VaultError> {
        std::fs::create_dir_all(dir).map_err(|source| VaultError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(VaultError::NotAVault {
                path: key_path,
                reason: "refusing to overwrite an existing Vault key",
            });
        }
        let key = VaultKey::generate(rng);
        let mut entropy = [0u8; 32];
        rng.fill_bytes(&mut entropy);
        let vault = Vault::create(&dir.join(DB_FILE), config, &key, entropy)?;
        key.save(&key_path)?;
        Ok(vault)
    }

    /// Opens a Vault directory made by [`Vault::create_dir`].
    pub fn open_dir(dir: &Path, entropy: [u8; 32]) -> Result<Vault, VaultError> {
        let key = VaultKey::load(&dir.join(KEY_FILE))?;
        Vault::open(&dir.join(DB_FILE), &key, entropy)
    }

    /// The Vault file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The Vault's configuration.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The Vault's id.
    pub fn vault_id(&self) -> &VaultId {
        &self.config.vault_id
    }

    /// A builder of [`PreparedBatch`]es for this Vault (it can run on another
    /// thread than the one that commits).
    pub fn batch_builder(&self) -> BatchBuilder {
        BatchBuilder {
            digest_key: self.digest_key,
            batch: PreparedBatch::default(),
            next_room: (0, 0),
        }
    }

    /// Stores a batch of records in one write transaction: all or nothing.
    ///
    /// Records already present for the subject (same content) are skipped, so
    /// re-importing a file never duplicates. Records of erased subjects are skipped.
    pub fn insert_batch(
        &self,
        records: &[(SubjectId, Record)],
    ) -> Result<InsertSummary, VaultError> {
        let mut builder = self.batch_builder();
        for (subject, record) in records {
            builder.push_record(subject.clone(), record)?;
        }
        self.insert_prepared(&builder.finish())
    }

    /// Stores a prepared batch in one write transaction: all or nothing. Same rules
    /// as [`Vault::insert_batch`].
    ///
    /// Subjects are visited in id order (new subjects get increasing numbers in that
    /// order); when the batch is large, the blocks and summaries are made and sealed
    /// on a second thread while this one reads and numbers the subjects.
    pub fn insert_prepared(&self, batch: &PreparedBatch) -> Result<InsertSummary, VaultError> {
        let tx = self.db.begin_write()?;
        let summary = self.insert_prepared_in(&tx, batch)?;
        tx.commit()?;
        Ok(summary)
    }

    /// [`Vault::insert_prepared`] inside the caller's write transaction (which
    /// commits or aborts it): a batch and other rows written as one.
    pub(crate) fn insert_prepared_in(
        &self,
        tx: &redb::WriteTransaction,
        batch: &PreparedBatch,
    ) -> Result<InsertSummary, VaultError> {
        // Records grouped by subject (id order), import order within a subject. A
        // batch sorted by `PreparedBatch::sort_by_subject` needs no reordering.
        let order: Option<Vec<u32>> = if batch.is_sorted_by_subject() {
            None
        } else {
            let mut order: Vec<u32> = (0..batch.items.len() as u32).collect();
            order.sort_by(|&a, &b| {
                batch
                    .subject(&batch.items[a as usize])
                    .cmp(batch.subject(&batch.items[b as usize]))
            });
            Some(order)
        };
        // The index in `batch.items` of the record visited `i`-th.
        let index = |i: usize| -> usize {
            match &order {
                Some(order) => order[i] as usize,
                None => i,
            }
        };
        let n = batch.items.len();
        let mut summary = InsertSummary::default();
        // This thread reads the subjects' rows, deduplicates and numbers new
        // subjects (what needs the transaction); each block's data key, plaintext,
        // summary and sealing are made by `Preparer` (on another thread when the
        // batch is large, while this one goes on with the next subjects). The rows,
        // blocks and summaries are written at the end, in key order.
        std::thread::scope(|scope| -> Result<(), VaultError> {
            let mut preparer =
                Preparer::new(scope, self, batch, batch.arena.len() >= PARALLEL_SEAL_BYTES);
            let mut meta = tx.open_table(META)?;
            let mut nos = tx.open_table(SUBJECT_NOS)?;
            let mut subjects = tx.open_table(SUBJECTS)?;
            let mut blocks = tx.open_table(BLOCKS)?;
            let mut summaries = tx.open_table(SUMMARIES)?;
            let mut next_no = match meta.get("next_subject_no")? {
                Some(v) => read_u64(v.value()),
                None => 0,
            };
            let mut visit = || -> Result<(), VaultError> {
                let mut at = 0;
                while at < n {
                    let subject_bytes = batch.subject(&batch.items[index(at)]);
                    let mut group_end = at + 1;
                    while group_end < n
                        && batch.subject(&batch.items[index(group_end)]) == subject_bytes
                    {
                        group_end += 1;
                    }
                    let group = at..group_end;
                    at = group_end;
                    let subject = std::str::from_utf8(subject_bytes)
                        .map_err(|_| VaultError::Storage("subject id is not UTF-8".to_owned()))?;
                    let existing = nos.get(subject)?.map(|v| v.value());
                    let (no, mut row) = match existing {
                        Some(no) => match subjects.get(no)? {
                            Some(v) => (no, SubjectRow::decode(v.value())?),
                            None => (no, SubjectRow::new(subject)),
                        },
                        None => {
                            // New subjects get increasing numbers: their rows append at
                            // the right edge of the B-trees instead of rewriting random
                            // leaves (subject ids are random-looking).
                            let no = next_no;
                            next_no += 1;
                            nos.insert(subject, no)?;
                            (no, SubjectRow::new(subject))
                        }
                    };
                    if row.erased_at_ms.is_some() {
                        summary.skipped_erased += group.len() as u64;
                        continue;
                    }
                    let mut fresh: Vec<usize> = Vec::with_capacity(group.len());
                    row.digests.reserve(group.len());
                    for i in group {
                        let rec = &batch.items[index(i)];
                        match row.digests.binary_search(&rec.digest) {
                            Ok(_) => summary.duplicates += 1,
                            Err(at) => {
                                row.digests.insert(at, rec.digest);
                                fresh.push(index(i));
                            }
                        }
                    }
                    if fresh.is_empty() {
                        continue;
                    }
                    // The summary written with the previous block (if any), which the
                    // new one extends.
                    let previous = match row.next_block.checked_sub(1) {
                        None => None,
                        Some(version) => match summaries.get(no)? {
                            Some(sealed) => Some((version, sealed.value().to_vec())),
                            None => {
                                return Err(VaultError::Storage(format!(
                                    "subject number {no} has blocks but no summary"
                                )))
                            }
                        },
                    };
                    summary.inserted += fresh.len() as u64;
                    summary.blocks += 1;
                    preparer.push(BlockJob {
                        subject,
                        no,
                        row,
                        fresh,
                        previous,
                    });
                }
                Ok(())
            };
            let visited = visit();
            // A failure of the preparer is about a subject visited before the one
            // this thread may have failed at: it is the one reported.
            let mut prepared = preparer.finish()?;
            visited?;
            write_prepared(&mut subjects, &mut blocks, &mut summaries, &mut prepared)?;
            meta.insert("next_subject_no", next_no.to_le_bytes().as_slice())?;
            Ok(())
        })?;
        Ok(summary)
    }

    /// Makes one block of a [`BlockJob`]: the subject's data key (a fresh one, or
    /// its wrapped key opened), the block's plaintext, the summary to write with it,
    /// both sealed, and the subject's updated row.
    fn prepare_block(
        &self,
        batch: &PreparedBatch,
        job: BlockJob<'_>,
    ) -> Result<PreparedBlock, VaultError> {
        let BlockJob {
            subject,
            no,
            mut row,
            fresh,
            previous,
        } = job;
        let record = |i: usize| batch.record(&batch.items[i]);
        // BCS of Vec<Record>: ULEB128 length, then the elements, after room for the
        // nonce (sealed in place).
        let bytes: usize = fresh.iter().map(|&i| record(i).len()).sum();
        let mut plain = Vec::with_capacity(NONCE_LEN + 10 + bytes + TAG_LEN);
        plain.resize(NONCE_LEN, 0);
        push_uleb128(&mut plain, fresh.len() as u64);
        for &i in &fresh {
            plain.extend_from_slice(record(i));
        }
        let dek = if row.wrapped_key.is_empty() {
            let (dek, wrapped) = self.new_dek(subject)?;
            row.wrapped_key = wrapped;
            dek
        } else {
            self.unwrap_dek(subject, &row.wrapped_key)?
        };
        // The summary written with this block: the one written with the previous
        // block (if any) plus the fresh records.
        let mut summary_plain = Vec::with_capacity(NONCE_LEN + 64 + 24 * fresh.len() + TAG_LEN);
        summary_plain.resize(NONCE_LEN, 0);
        self.next_summary(
            subject,
            &dek,
            previous.as_ref().map(|(v, sealed)| (*v, sealed.as_slice())),
            row.next_block,
            fresh.iter().map(|&i| record(i)),
            &mut summary_plain,
        )?;
        let block = row.next_block;
        let (sealed_block, sealed_summary) = SealJob {
            block,
            subject,
            dek,
            plain,
            summary: summary_plain,
        }
        .seal(self.config.vault_id.as_str())?;
        row.next_block += 1;
        Ok(PreparedBlock {
            key: (no, block),
            row: row.encode(),
            block: sealed_block,
            summary: sealed_summary,
        })
    }

    /// Erases a subject by deleting its wrapped data key (crypto-shredding): its
    /// blocks stay on disk but can no longer be decrypted, and later imports of its
    /// records are skipped. Returns `false` if the subject was unknown or already
    /// erased.
    pub fn erase_subject(&self, subject: &SubjectId, at_ms: u64) -> Result<bool, VaultError> {
        let s = subject.as_str();
        let tx = self.db.begin_write()?;
        let erased = {
            let mut meta = tx.open_table(META)?;
            let mut nos = tx.open_table(SUBJECT_NOS)?;
            let mut subjects = tx.open_table(SUBJECTS)?;
            let existing = nos.get(s)?.map(|v| v.value());
            let no = match existing {
                Some(no) => no,
                None => {
                    // Remember the erasure so later imports of this subject are skipped.
                    let no = match meta.get("next_subject_no")? {
                        Some(v) => read_u64(v.value()),
                        None => 0,
                    };
                    meta.insert("next_subject_no", (no + 1).to_le_bytes().as_slice())?;
                    nos.insert(s, no)?;
                    no
                }
            };
            let mut row = match subjects.get(no)? {
                Some(v) => SubjectRow::decode(v.value())?,
                None => SubjectRow::new(s),
            };
            if row.erased_at_ms.is_some() {
                false
            } else {
                let had_key = !row.wrapped_key.is_empty();
                // The row keeps the name and block count; the wrapped key is gone.
                row.wrapped_key = Vec::new();
                row.erased_at_ms = Some(at_ms);
                row.digests = Vec::new();
                subjects.insert(no, row.encode().as_slice())?;
                tx.open_table(SUMMARIES)?.remove(no)?;
                had_key
            }
        };
        tx.commit()?;
        Ok(erased)
    }

    /// Those of `subjects` whose records can no longer be read here (erased, or
    /// unknown to this Vault): a reader that kept their plaintext from an earlier
    /// scan must drop it.
    pub fn unreadable_among<'s>(
        &self,
        subjects: impl IntoIterator<Item = &'s SubjectId>,
    ) -> Result<std::collections::BTreeSet<SubjectId>, VaultError> {
        let tx = self.db.begin_read()?;
        let nos = tx.open_table(SUBJECT_NOS)?;
        let rows = tx.open_table(SUBJECTS)?;
        let mut out = std::collections::BTreeSet::new();
        for subject in subjects {
            let readable = match nos.get(subject.as_str())? {
                Some(no) => match rows.get(no.value())? {
                    Some(row) => !SubjectRow::decode_head(row.value())?.1.is_empty(),
                    None => false,
                },
                None => false,
            };
            if !readable {
                out.insert(subject.clone());
            }
        }
        Ok(out)
    }

    /// Number of sealed blocks stored for a subject (they stay after erasure).
    pub fn stored_blocks(&self, subject: &SubjectId) -> Result<u64, VaultError> {
        let tx = self.db.begin_read()?;
        let Some(no) = tx
            .open_table(SUBJECT_NOS)?
            .get(subject.as_str())?
            .map(|v| v.value())
        else {
            return Ok(0);
        };
        let blocks = tx.open_table(BLOCKS)?;
        let mut n = 0;
        for entry in blocks.range((no, 0)..=(no, u64::MAX))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// The sealed bytes of one block as stored (nonce ‖ ciphertext ‖ tag). The
    /// ciphertext is not secret; this is for audits and tests.
    pub fn sealed_block(
        &self,
        subject: &SubjectId,
        block: u64,
    ) -> Result<Option<Vec<u8>>, VaultError> {
        let tx = self.db.begin_read()?;
        let Some(no) = tx
            .open_table(SUBJECT_NOS)?
            .get(subject.as_str())?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let blocks = tx.open_table(BLOCKS)?;
        Ok(blocks.get((no, block))?.map(|v| v.value().to_vec()))
    }

    /// All records of one subject, decrypted, in import order.
    pub fn subject_records(&self, subject: &SubjectId) -> Result<Vec<Record>, VaultError> {
        let tx = self.db.begin_read()?;
        let s = subject.as_str();
        let Some(no) = tx.open_table(SUBJECT_NOS)?.get(s)?.map(|v| v.value()) else {
            return Ok(Vec::new());
        };
        let subjects = tx.open_table(SUBJECTS)?;
        let blocks = tx.open_table(BLOCKS)?;
        let dek = match subjects.get(no)? {
            Some(entry) => {
                let (_, wrapped, _) = SubjectRow::decode_head(entry.value())?;
                if wrapped.is_empty() {
                    return Err(VaultError::Erased(s.to_owned()));
                }
                self.unwrap_dek(s, wrapped)?
            }
            None => return Ok(Vec::new()),
        };
        let cipher = dek.cipher();
        let mut out = Vec::new();
        for entry in blocks.range((no, 0)..=(no, u64::MAX))? {
            let (k, v) = entry?;
            let block = k.value().1;
            let plain = self.open_block(&cipher, s, block, v.value())?;
            let recs: Vec<RecordRef<'_>> = decode_block(s, block, &plain)?;
            out.extend(recs.iter().map(RecordRef::to_owned_record));
        }
        Ok(out)
    }

    /// Appends to `plain` the summary to write with block `block` of `subject`: the
    /// summary sealed with the previous block (`(version, sealed bytes)`; opened
    /// under `dek`), if any, with the fresh `records` (BCS) absorbed.
    fn next_summary<'r>(
        &self,
        subject: &str,
        dek: &DataKey,
        previous: Option<(u64, &[u8])>,
        block: u64,
        records: impl Iterator<Item = &'r [u8]>,
        plain: &mut Vec<u8>,
    ) -> Result<(), VaultError> {
        let vault_id = self.config.vault_id.as_str();
        let previous = match previous {
            None => None,
            Some((version, sealed)) => {
                let aad = crate::summary::summary_aad(vault_id, subject, version);
                Some(crypto::open(&dek.cipher(), &aad, sealed).map_err(|()| {
                    VaultError::Tampered {
                        subject: subject.to_owned(),
                        block: version,
                    }
                })?)
            }
        };
        let mut kept = match &previous {
            Some(p) => Summary::decode(subject, p)?,
            None => Summary::default(),
        };
        for bytes in records {
            kept.absorb_encoded(subject, block, bytes)?;
        }
        kept.encode_into(plain)
    }

    fn new_dek(&self, subject: &str) -> Result<(DataKey, Vec<u8>), VaultError> {
        let mut key = [0u8; 32];
        let mut nonce = [0u8; crypto::NONCE_LEN];
        {
            let mut rng = self
                .dek_rng
                .lock()
                .map_err(|_| VaultError::Crypto("data key generator poisoned"))?;
            rng.fill_bytes(&mut key);
            rng.fill_bytes(&mut nonce);
        }
        let aad = crypto::key_aad(self.config.vault_id.as_str(), subject);
        let wrapped = crypto::seal(&self.key_cipher, nonce, &aad, &key)?;
        Ok((DataKey(key), wrapped))
    }

    pub(crate) fn unwrap_dek(&self, subject: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        let aad = crypto::key_aad(self.config.vault_id.as_str(), subject);
        let tampered = || VaultError::Tampered {
            subject: subject.to_owned(),
            block: u64::MAX,
        };
        let plain = crypto::open(&self.key_cipher, &aad, wrapped).map_err(|()| tampered())?;
        let key: [u8; 32] = plain.try_into().map_err(|_| tampered())?;
        Ok(DataKey(key))
    }

    pub(crate) fn open_block(
        &self,
        cipher: &Aes256Gcm,
        subject: &str,
        block: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let aad = crypto::block_aad(self.config.vault_id.as_str(), subject, block);
        crypto::open(cipher, &aad, sealed).map_err(|()| VaultError::Tampered {
            subject: subject.to_owned(),
            block,
        })
    }
}

fn key_check_aad(vault: &VaultId) -> Vec<u8> {
    crypto::key_aad(vault.as_str(), "\0key-check")
}

pub(crate) fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// Writes each subject's row, sealed block (under its `(subject number, block)`
/// key) and sealed summary, in B-tree key order (the pages are written front to
/// back).
fn write_prepared(
    subjects: &mut redb::Table<'_, u64, &'static [u8]>,
    blocks: &mut redb::Table<'_, (u64, u64), &'static [u8]>,
    summaries: &mut redb::Table<'_, u64, &'static [u8]>,
    prepared: &mut [PreparedBlock],
) -> Result<(), VaultError> {
    // One block per subject and batch: the keys are distinct.
    prepared.sort_unstable_by_key(|p| p.key);
    for p in prepared.iter() {
        subjects.insert(p.key.0, p.row.as_slice())?;
    }
    for p in prepared.iter() {
        blocks.insert(p.key, p.block.as_slice())?;
    }
    for p in prepared.iter() {
        summaries.insert(p.key.0, p.summary.as_slice())?;
    }
    Ok(())
}

/// One block to make: a subject's records of a batch that it does not hold yet
/// (indices in the batch, import order), its row as read (digests already
/// updated) and the sealed summary written with its previous block, if any
/// (`(version, sealed bytes)`).
struct BlockJob<'a> {
    subject: &'a str,
    no: u64,
    row: SubjectRow,
    fresh: Vec<usize>,
    previous: Option<(u64, Vec<u8>)>,
}

/// A block ready to write: the subject's updated row, the sealed block and the
/// sealed summary written with it (`nonce ‖ ciphertext ‖ tag` each).
struct PreparedBlock {
    /// (subject number, block number).
    key: (u64, u64),
    row: Vec<u8>,
    block: Vec<u8>,
    summary: Vec<u8>,
}

/// One block to seal: a subject's fresh records of a batch, and its summary, each
/// after `NONCE_LEN` bytes of room for the nonce (they are sealed in place).
struct SealJob<'a> {
    block: u64,
    subject: &'a str,
    dek: DataKey,
    plain: Vec<u8>,
    summary: Vec<u8>,
}

impl SealJob<'_> {
    /// The sealed block and summary (`nonce ‖ ciphertext ‖ tag` each).
    fn seal(self, vault: &str) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let cipher = self.dek.cipher();
        let block = crypto::seal_in_place(
            &cipher,
            crypto::block_nonce(self.block),
            &crypto::block_aad(vault, self.subject, self.block),
            self.plain,
        )?;
        let summary = crypto::seal_in_place(
            &cipher,
            crate::summary::summary_nonce(self.block),
            &crate::summary::summary_aad(vault, self.subject, self.block),
            self.summary,
        )?;
        Ok((block, summary))
    }
}

/// Plaintext bytes of a batch above which its blocks are made on a thread of
/// their own, while the writer goes on with the next subjects.
const PARALLEL_SEAL_BYTES: usize = 1 << 20;

type PreparedAll = Result<Vec<PreparedBlock>, VaultError>;

/// Jobs handed to the preparing thread at a time (one wake-up each).
const SEAL_CHUNK: usize = 256;

/// Makes a batch's blocks ([`Vault::prepare_block`]), in the order the jobs are
/// given (so fresh data keys are drawn in that order): as they come (in chunks)
/// on a thread of its own, or all at the end on the caller's.
struct Preparer<'scope, 'a> {
    vault: &'a Vault,
    batch: &'a PreparedBatch,
    thread: Option<(
        std::sync::mpsc::Sender<Vec<BlockJob<'a>>>,
        std::thread::ScopedJoinHandle<'scope, PreparedAll>,
    )>,
    held: Vec<BlockJob<'a>>,
}

impl<'scope, 'a: 'scope> Preparer<'scope, 'a> {
    fn new(
        scope: &'scope std::thread::Scope<'scope, '_>,
        vault: &'a Vault,
        batch: &'a PreparedBatch,
        on_a_thread: bool,
    ) -> Self {
        let thread = on_a_thread.then(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<BlockJob<'a>>>();
            // Stops at the first failure; `finish` reports it.
            let handle = scope.spawn(move || {
                rx.into_iter()
                    .flatten()
                    .map(|job| vault.prepare_block(batch, job))
                    .collect()
            });
            (tx, handle)
        });
        Preparer {
            vault,
            batch,
            thread,
            held: Vec::new(),
        }
    }

    fn push(&mut self, job: BlockJob<'a>) {
        self.held.push(job);
        if let Some((tx, _)) = &self.thread {
            if self.held.len() >= SEAL_CHUNK {
                let chunk = std::mem::replace(&mut self.held, Vec::with_capacity(SEAL_CHUNK));
                // A send fails only once the thread stopped at a failure: `finish`
                // says which.
                drop(tx.send(chunk));
            }
        }
    }

    /// Every job's block, in job order.
    fn finish(self) -> PreparedAll {
        match self.thread {
            Some((tx, handle)) => {
                drop(tx.send(self.held));
                drop(tx);
                handle
                    .join()
                    .map_err(|_| VaultError::Crypto("sealing thread panicked"))?
            }
            None => self
                .held
                .into_iter()
                .map(|job| self.vault.prepare_block(self.batch, job))
                .collect(),
        }
    }
}
