//! The scan the enclave runtime calls: every subject with its decrypted records.

use std::ops::{ControlFlow, Range};
use std::sync::atomic::{AtomicBool, Ordering};

use aes_gcm::Aes256Gcm;
use redb::{ReadOnlyTable, ReadableTable};

use crate::auth::Authorized;
use crate::error::VaultError;
use crate::record::{GeographyRef, IdentityRef, PurchaseRef, RecordRef, SubjectView};
use crate::store::{ScanStats, SubjectRow, Vault, BLOCKS, SUBJECTS};

impl Vault {
    /// Visits every non-erased subject with its decrypted records, in the order
    /// subjects were first imported. The callback may stop the scan early with
    /// `ControlFlow::Break`.
    ///
    /// Any block that fails authentication aborts the scan with
    /// [`VaultError::Tampered`]: corrupted data is never handed to the callback.
    pub fn for_each_subject<F>(&self, auth: &Authorized, visit: F) -> Result<ScanStats, VaultError>
    where
        F: FnMut(&SubjectView<'_>) -> ControlFlow<()>,
    {
        self.for_each_subject_in(auth, |_| true, visit)
    }

    /// [`Vault::for_each_subject`] over the subjects `include` accepts (by subject
    /// id, read from the subject row): the others' data keys are never unwrapped
    /// and their blocks never decrypted, so a task that may use only some subjects
    /// (consent, budget) costs in proportion to those.
    pub fn for_each_subject_in<P, F>(
        &self,
        auth: &Authorized,
        include: P,
        mut visit: F,
    ) -> Result<ScanStats, VaultError>
    where
        P: Fn(&str) -> bool,
        F: FnMut(&SubjectView<'_>) -> ControlFlow<()>,
    {
        auth.check_vault(&self.config.vault_id)?;
        let tx = self.db.begin_read()?;
        let subjects = tx.open_table(SUBJECTS)?;
        let blocks = tx.open_table(BLOCKS)?;
        let mut stats = ScanStats::default();
        self.scan_range(
            &subjects,
            &blocks,
            0..u64::MAX,
            &include,
            &mut stats,
            &mut visit,
        )?;
        Ok(stats)
    }

    /// [`Vault::for_each_subject`] on `threads` threads, each over a contiguous
    /// range of subjects, all reading one snapshot. Each thread folds into its own
    /// state (`init()`); the states come back in subject order, for the caller to
    /// merge. A `Break` from any thread stops all of them.
    pub fn par_for_each_subject<S, I, F>(
        &self,
        auth: &Authorized,
        threads: usize,
        init: I,
        visit: F,
    ) -> Result<(Vec<S>, ScanStats), VaultError>
    where
        S: Send,
        I: Fn() -> S + Sync,
        F: Fn(&mut S, &SubjectView<'_>) -> ControlFlow<()> + Sync,
    {
        auth.check_vault(&self.config.vault_id)?;
        let tx = self.db.begin_read()?;
        let subjects = tx.open_table(SUBJECTS)?;
        let blocks = tx.open_table(BLOCKS)?;
        let end = match subjects.last()? {
            Some((k, _)) => k.value().saturating_add(1),
            None => 0,
        };
        let threads = threads.clamp(1, 64) as u64;
        let stop = AtomicBool::new(false);
        let results: Vec<Result<(S, ScanStats), VaultError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let range = end * t / threads..end * (t + 1) / threads;
                    let (subjects, blocks, stop, init, visit) =
                        (&subjects, &blocks, &stop, &init, &visit);
                    scope.spawn(move || {
                        let mut state = init();
                        let mut stats = ScanStats::default();
                        let all = |_: &str| true;
                        self.scan_range(subjects, blocks, range, &all, &mut stats, &mut |view| {
                            if stop.load(Ordering::Relaxed) || visit(&mut state, view).is_break() {
                                stop.store(true, Ordering::Relaxed);
                                return ControlFlow::Break(());
                            }
                            ControlFlow::Continue(())
                        })?;
                        Ok((state, stats))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(VaultError::Storage("scan thread panicked".to_owned()))
                    })
                })
                .collect()
        });
        let mut states = Vec::with_capacity(results.len());
        let mut total = ScanStats::default();
        for r in results {
            let (state, stats) = r?;
            states.push(state);
            total.subjects += stats.subjects;
            total.erased_subjects += stats.erased_subjects;
            total.blocks += stats.blocks;
            total.records += stats.records;
            total.plaintext_bytes += stats.plaintext_bytes;
        }
        Ok((states, total))
    }

    /// Merge-join of `blocks` and `subjects` (both ordered by subject number) over
    /// the subject numbers in `range`; subjects `include` refuses are passed over
    /// undecrypted.
    fn scan_range(
        &self,
        subjects: &ReadOnlyTable<u64, &'static [u8]>,
        blocks: &ReadOnlyTable<(u64, u64), &'static [u8]>,
        range: Range<u64>,
        include: &dyn Fn(&str) -> bool,
        stats: &mut ScanStats,
        visit: &mut dyn FnMut(&SubjectView<'_>) -> ControlFlow<()>,
    ) -> Result<(), VaultError> {
        if range.is_empty() {
            return Ok(());
        }
        let mut subject_iter = subjects.range(range.clone())?;
        let mut next_subject = subject_iter.next().transpose()?;
        let mut current: Option<(u64, String, Option<Aes256Gcm>)> = None;
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        for entry in blocks.range((range.start, 0)..(range.end, 0))? {
            let (k, v) = entry?;
            let (no, block) = k.value();
            if current.as_ref().map(|c| c.0) != Some(no) {
                if let Some((_, name, Some(_))) = &current {
                    if emit(name, &buffers, stats, visit)?.is_break() {
                        return Ok(());
                    }
                }
                buffers.clear();
                while next_subject.as_ref().is_some_and(|(k, _)| k.value() < no) {
                    next_subject = subject_iter.next().transpose()?;
                }
                let (name, cipher) = match &next_subject {
                    Some((k, entry)) if k.value() == no => {
                        let (name, wrapped, _) = SubjectRow::decode_head(entry.value())?;
                        let cipher = if wrapped.is_empty() {
                            stats.erased_subjects += 1;
                            None
                        } else if !include(name) {
                            None
                        } else {
                            Some(self.unwrap_dek(name, wrapped)?.cipher())
                        };
                        (name.to_owned(), cipher)
                    }
                    _ => {
                        return Err(VaultError::Storage(format!(
                            "subject number {no} has blocks but no subject row"
                        )))
                    }
                };
                current = Some((no, name, cipher));
            }
            if let Some((_, name, Some(cipher))) = &current {
                let plain = self.open_block(cipher, name, block, v.value())?;
                stats.blocks += 1;
                stats.plaintext_bytes += plain.len() as u64;
                buffers.push(plain);
            }
        }
        if let Some((_, name, Some(_))) = &current {
            let _ = emit(name, &buffers, stats, visit)?;
        }
        Ok(())
    }
}

pub(crate) fn decode_block<'a>(
    subject: &str,
    block: u64,
    plain: &'a [u8],
) -> Result<Vec<RecordRef<'a>>, VaultError> {
    bcs::from_bytes(plain).map_err(|e| VaultError::Corrupt {
        subject: subject.to_owned(),
        block,
        reason: e.to_string(),
    })
}

/// Decodes a subject's blocks and hands the view to the callback.
fn emit(
    subject: &str,
    buffers: &[Vec<u8>],
    stats: &mut ScanStats,
    visit: &mut dyn FnMut(&SubjectView<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, VaultError> {
    let mut identity: Option<IdentityRef<'_>> = None;
    let mut geography: Option<GeographyRef<'_>> = None;
    let mut purchases: Vec<PurchaseRef<'_>> = Vec::new();
    for (block, plain) in buffers.iter().enumerate() {
        for rec in decode_block(subject, block as u64, plain)? {
            stats.records += 1;
            match rec {
                RecordRef::Identity(i) => identity = Some(i),
                RecordRef::Geography(g) => geography = Some(g),
                RecordRef::Purchase(p) => purchases.push(p),
                RecordRef::Receipt(r) => purchases.push(r.purchase),
            }
        }
    }
    stats.subjects += 1;
    Ok(visit(&SubjectView {
        subject,
        identity,
        geography,
        purchases: &purchases,
    }))
}
