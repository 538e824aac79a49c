//! The scan the enclave runtime calls: every subject with its decrypted records.

use std::ops::ControlFlow;

use aes_gcm::Aes256Gcm;
use redb::ReadableTable;

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
    pub fn for_each_subject<F>(
        &self,
        auth: &Authorized,
        mut visit: F,
    ) -> Result<ScanStats, VaultError>
    where
        F: FnMut(&SubjectView<'_>) -> ControlFlow<()>,
    {
        auth.check_vault(&self.config.vault_id)?;
        let tx = self.db.begin_read()?;
        let subjects = tx.open_table(SUBJECTS)?;
        let blocks = tx.open_table(BLOCKS)?;
        let mut stats = ScanStats::default();
        // Merge-join: blocks and subjects are both ordered by subject number.
        let mut subject_iter = subjects.iter()?;
        let mut next_subject = subject_iter.next().transpose()?;
        let mut current: Option<(u64, String, Option<Aes256Gcm>)> = None;
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        for entry in blocks.iter()? {
            let (k, v) = entry?;
            let (no, block) = k.value();
            if current.as_ref().map(|c| c.0) != Some(no) {
                if let Some((_, name, Some(_))) = &current {
                    if emit(name, &buffers, &mut stats, &mut visit)?.is_break() {
                        return Ok(stats);
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
            let _ = emit(name, &buffers, &mut stats, &mut visit)?;
        }
        Ok(stats)
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
fn emit<F>(
    subject: &str,
    buffers: &[Vec<u8>],
    stats: &mut ScanStats,
    visit: &mut F,
) -> Result<ControlFlow<()>, VaultError>
where
    F: FnMut(&SubjectView<'_>) -> ControlFlow<()>,
{
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
