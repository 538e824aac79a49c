//! Per-subject summaries: what audience plans read of a subject, kept encrypted
//! beside its records and maintained at import.
//!
//! A `query` or `compute` slice needs, per subject, only the contact handle, the
//! home place and each purchase's brand, time and amount. Decrypting every
//! purchase record for that (with its category, currency and store) costs a slice
//! most of its time, so each import also rewrites the subject's summary: one small
//! value per subject, sealed with the subject's data key like its blocks.
//!
//! - **Exact, not approximate.** A summary holds every purchase's (time, amount)
//!   grouped by brand, so a plan evaluated on it gives what it gives on the
//!   records for any evaluation time and window (a test checks both agree).
//! - **Versioned.** A summary is sealed under the number of the block written with
//!   it; the scan opens it only under the subject's latest block number, so an
//!   older summary put back in place fails authentication.
//! - **Erased with the subject.** Erasure deletes the summary; it could not be
//!   opened anyway once the wrapped data key is gone.

use std::borrow::Cow;
use std::ops::ControlFlow;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::auth::Authorized;
use crate::crypto::{self, NONCE_LEN};
use crate::error::VaultError;
use crate::record::{GeographyRef, IdentityRef, RecordRef};
use crate::store::{read_u64, ScanStats, SubjectRow, Vault, BLOCKS, META, SUBJECTS};

/// subject number → nonce ‖ AES-GCM(BCS summary) ‖ tag, under the subject's data key.
pub(crate) const SUMMARIES: TableDefinition<u64, &[u8]> = TableDefinition::new("summaries");
/// The `meta` key saying every subject's summary is in place.
pub(crate) const SUMMARIES_META: &str = "summaries";
const SUMMARIES_FORMAT: &[u8] = b"v1";
/// Bytes of one purchase point: time (ms) and amount (minor units), little-endian.
const POINT: usize = 16;

/// The purchases of one brand (its name exactly as imported).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BrandPoints<'a> {
    brand: &'a str,
    /// (time, amount) pairs of [`POINT`] bytes, in import order.
    #[serde(borrow)]
    points: Cow<'a, [u8]>,
}

/// The plaintext of a summary (BCS).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary<'a> {
    #[serde(borrow)]
    identity: Option<IdentityRef<'a>>,
    #[serde(borrow)]
    geography: Option<GeographyRef<'a>>,
    /// Sorted by brand, one entry per distinct brand.
    #[serde(borrow)]
    brands: Vec<BrandPoints<'a>>,
}

impl<'a> Summary<'a> {
    pub(crate) fn decode(subject: &str, plain: &'a [u8]) -> Result<Self, VaultError> {
        bcs::from_bytes(plain).map_err(|e| VaultError::Corrupt {
            subject: subject.to_owned(),
            block: u64::MAX,
            reason: format!("summary: {e}"),
        })
    }

    /// Folds records imported after what the summary holds into it: a later
    /// identity or geography replaces the earlier one (as in a record scan), every
    /// purchase (a receipt's too) is added to its brand.
    pub(crate) fn absorb(&mut self, record: &RecordRef<'a>) {
        match record {
            RecordRef::Identity(i) => self.identity = Some(*i),
            RecordRef::Geography(g) => self.geography = Some(*g),
            RecordRef::Purchase(p) => self.add(p.brand, p.ts_ms, p.amount_minor),
            RecordRef::Receipt(r) => {
                self.add(r.purchase.brand, r.purchase.ts_ms, r.purchase.amount_minor)
            }
        }
    }

    /// [`Summary::absorb`] of a record given as its BCS bytes (as stored in a
    /// block). A purchase, nearly every record, is read in place by
    /// [`purchase_point`]; any other record is decoded whole.
    pub(crate) fn absorb_encoded(
        &mut self,
        subject: &str,
        block: u64,
        bytes: &'a [u8],
    ) -> Result<(), VaultError> {
        if let Some((brand, ts_ms, amount_minor)) = purchase_point(bytes) {
            self.add(brand, ts_ms, amount_minor);
            return Ok(());
        }
        let record: RecordRef<'a> = bcs::from_bytes(bytes).map_err(|e| VaultError::Corrupt {
            subject: subject.to_owned(),
            block,
            reason: e.to_string(),
        })?;
        self.absorb(&record);
        Ok(())
    }

    fn add(&mut self, brand: &'a str, ts_ms: u64, amount_minor: u64) {
        let at = match self.brands.binary_search_by(|b| b.brand.cmp(brand)) {
            Ok(at) => at,
            Err(at) => {
                self.brands.insert(
                    at,
                    BrandPoints {
                        brand,
                        points: Cow::Owned(Vec::new()),
                    },
                );
                at
            }
        };
        let points = self.brands[at].points.to_mut();
        points.extend_from_slice(&ts_ms.to_le_bytes());
        points.extend_from_slice(&amount_minor.to_le_bytes());
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), VaultError> {
        bcs::serialize_into(out, self)?;
        Ok(())
    }
}

/// Brand, time and amount of a purchase record read straight from its BCS bytes
/// (`RecordRef::Purchase`: variant 2, then brand, category, amount, currency, time,
/// store city, store country), accepted only as `bcs::from_bytes` would accept
/// them: every string UTF-8, nothing after the last field. `None` for anything
/// else (another kind, a string of 128 bytes or more, malformed bytes), which the
/// caller decodes whole: what this reads, the full decoder reads the same.
fn purchase_point(bytes: &[u8]) -> Option<(&str, u64, u64)> {
    fn string<'b>(rest: &mut &'b [u8]) -> Option<&'b str> {
        // A one-byte ULEB128 length (< 128): canonical as BCS requires.
        let (&len, tail) = rest.split_first()?;
        if len >= 0x80 {
            return None;
        }
        let (s, tail) = tail.split_at_checked(usize::from(len))?;
        *rest = tail;
        std::str::from_utf8(s).ok()
    }
    fn number(rest: &mut &[u8]) -> Option<u64> {
        let (n, tail) = rest.split_first_chunk::<8>()?;
        *rest = tail;
        Some(u64::from_le_bytes(*n))
    }
    let (&variant, mut rest) = bytes.split_first()?;
    if variant != 2 {
        return None;
    }
    let brand = string(&mut rest)?;
    string(&mut rest)?; // category
    let amount_minor = number(&mut rest)?;
    string(&mut rest)?; // currency
    let ts_ms = number(&mut rest)?;
    string(&mut rest)?; // store city
    string(&mut rest)?; // store country
    rest.is_empty().then_some((brand, ts_ms, amount_minor))
}

/// One subject's summary, as [`Vault::for_each_summary_in`] hands it over.
#[derive(Debug)]
pub struct SummaryView<'a> {
    /// The subject.
    pub subject: &'a str,
    /// Contact handle, the latest imported.
    pub identity: Option<IdentityRef<'a>>,
    /// Home location, the latest imported.
    pub geography: Option<GeographyRef<'a>>,
    brands: &'a [BrandPoints<'a>],
}

impl SummaryView<'_> {
    /// Calls `f(brand, ts_ms, amount_minor)` for every purchase (a receipt's too),
    /// brand by brand.
    pub fn for_each_purchase(&self, f: &mut dyn FnMut(&str, u64, u64)) {
        for b in self.brands {
            for p in b.points.chunks_exact(POINT) {
                let (ts, amount) = p.split_at(8);
                f(b.brand, read_u64(ts), read_u64(amount));
            }
        }
    }

    /// Number of purchases.
    pub fn purchase_count(&self) -> usize {
        self.brands.iter().map(|b| b.points.len() / POINT).sum()
    }
}

/// The nonce of the summary written with block `version` (distinct from every
/// block nonce: the data key is the subject's, the suffix differs).
pub(crate) fn summary_nonce(version: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..8].copy_from_slice(&version.to_le_bytes());
    nonce[8..].copy_from_slice(b"sum1");
    nonce
}

/// Associated data of a summary: vault, subject and the block it was written with.
pub(crate) fn summary_aad(vault: &str, subject: &str, version: u64) -> Vec<u8> {
    let mut aad = crypto::block_aad(vault, subject, version);
    aad.extend_from_slice(b"\0summary/v1");
    aad
}

/// The subject row's block counter (the summary's version is one less).
fn next_block_of(rest_after_key: &[u8]) -> Result<u64, VaultError> {
    rest_after_key
        .split_first_chunk::<8>()
        .map(|(n, _)| u64::from_le_bytes(*n))
        .ok_or_else(|| VaultError::Storage("malformed subject row".to_owned()))
}

impl Vault {
    /// Visits the summary of every non-erased subject `include` accepts, in subject
    /// order: contact, home place and every purchase's brand, time and amount,
    /// which is all an audience plan reads. The others' data keys are never
    /// unwrapped. A summary that fails authentication (tampered, or an older
    /// version put back) aborts the scan with [`VaultError::Tampered`].
    ///
    /// `stats.blocks` counts summaries opened and `stats.records` their purchases.
    pub fn for_each_summary_in<P, F>(
        &self,
        auth: &Authorized,
        include: P,
        mut visit: F,
    ) -> Result<ScanStats, VaultError>
    where
        P: Fn(&str) -> bool,
        F: FnMut(&SummaryView<'_>) -> ControlFlow<()>,
    {
        auth.check_vault(&self.config.vault_id)?;
        let vault = self.config.vault_id.as_str();
        let tx = self.db.begin_read()?;
        let subjects = tx.open_table(SUBJECTS)?;
        let summaries = tx.open_table(SUMMARIES)?;
        let mut stats = ScanStats::default();
        let mut rows = subjects.iter()?;
        let mut row = rows.next().transpose()?;
        for entry in summaries.iter()? {
            let (k, sealed) = entry?;
            let no = k.value();
            while row.as_ref().is_some_and(|(k, _)| k.value() < no) {
                row = rows.next().transpose()?;
            }
            let Some((_, value)) = row.as_ref().filter(|(k, _)| k.value() == no) else {
                return Err(VaultError::Storage(format!(
                    "subject number {no} has a summary but no subject row"
                )));
            };
            let (name, wrapped, rest) = SubjectRow::decode_head(value.value())?;
            if wrapped.is_empty() {
                stats.erased_subjects += 1;
                continue;
            }
            if !include(name) {
                continue;
            }
            let version = next_block_of(rest)?.wrapping_sub(1);
            let cipher = self.unwrap_dek(name, wrapped)?.cipher();
            let plain = crypto::open(&cipher, &summary_aad(vault, name, version), sealed.value())
                .map_err(|()| VaultError::Tampered {
                subject: name.to_owned(),
                block: version,
            })?;
            let summary = Summary::decode(name, &plain)?;
            let view = SummaryView {
                subject: name,
                identity: summary.identity,
                geography: summary.geography,
                brands: &summary.brands,
            };
            stats.subjects += 1;
            stats.blocks += 1;
            stats.records += view.purchase_count() as u64;
            stats.plaintext_bytes += plain.len() as u64;
            if visit(&view).is_break() {
                break;
            }
        }
        Ok(stats)
    }

    /// Builds every subject's summary from its records when the Vault has none yet
    /// (a Vault written before summaries existed), in one write transaction.
    pub(crate) fn ensure_summaries(&self) -> Result<(), VaultError> {
        if self
            .db
            .begin_read()?
            .open_table(META)?
            .get(SUMMARIES_META)?
            .is_some()
        {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let subjects = tx.open_table(SUBJECTS)?;
            let blocks = tx.open_table(BLOCKS)?;
            let mut summaries = tx.open_table(SUMMARIES)?;
            let vault = self.config.vault_id.as_str();
            for entry in subjects.iter()? {
                let (k, value) = entry?;
                let no = k.value();
                let (name, wrapped, rest) = SubjectRow::decode_head(value.value())?;
                let next_block = next_block_of(rest)?;
                if wrapped.is_empty() || next_block == 0 {
                    continue;
                }
                let cipher = self.unwrap_dek(name, wrapped)?.cipher();
                let mut plains = Vec::new();
                for b in blocks.range((no, 0)..=(no, u64::MAX))? {
                    let (bk, bv) = b?;
                    let block = bk.value().1;
                    plains.push((block, self.open_block(&cipher, name, block, bv.value())?));
                }
                let mut summary = Summary::default();
                for (block, plain) in &plains {
                    for rec in crate::scan::decode_block(name, *block, plain)? {
                        summary.absorb(&rec);
                    }
                }
                let mut plain = Vec::new();
                summary.encode_into(&mut plain)?;
                let version = next_block - 1;
                let sealed = crypto::seal(
                    &cipher,
                    summary_nonce(version),
                    &summary_aad(vault, name, version),
                    &plain,
                )?;
                summaries.insert(no, sealed.as_slice())?;
            }
            meta.insert(SUMMARIES_META, SUMMARIES_FORMAT)?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ContactKind, Purchase, PurchaseRef, Record};
    use crate::store::VaultConfig;
    use crate::VaultKey;
    use symphony_core::budget::Epsilon;
    use symphony_core::ids::{ActorId, EpochId, SubjectId, VaultId};
    use symphony_core::TaskClass;

    fn vault(path: &std::path::Path) -> Vault {
        let config = VaultConfig {
            vault_id: VaultId::new("vault-s").unwrap(),
            default_budget: Epsilon::from_micro(1_000_000),
            initial_epoch: EpochId(0),
        };
        Vault::create(path, config, &VaultKey::from_bytes([5; 32]), [1; 32]).unwrap()
    }

    fn record(brand: &str, ts_ms: u64) -> Record {
        Record::Purchase(Purchase {
            brand: brand.to_owned(),
            category: "coffee".to_owned(),
            amount_minor: 100 + ts_ms,
            currency: "SGD".to_owned(),
            ts_ms,
            store_city: "Singapore".to_owned(),
            store_country: "SG".to_owned(),
        })
    }

    fn summaries_of(v: &Vault) -> Result<Vec<(String, usize)>, VaultError> {
        let actor = ActorId::new("enclave-runtime").unwrap();
        v.permit(&actor, TaskClass::Query)?;
        let auth = v.authorize(&actor, TaskClass::Query)?;
        let mut out = Vec::new();
        v.for_each_summary_in(
            &auth,
            |_| true,
            |view| {
                out.push((view.subject.to_owned(), view.purchase_count()));
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn a_vault_without_summaries_gets_them_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        let v = vault(&path);
        let s = |n: &str| SubjectId::new(n).unwrap();
        v.insert_batch(&[(s("a"), record("X", 1)), (s("b"), record("Y", 2))])
            .unwrap();
        v.insert_batch(&[(s("a"), record("X", 3))]).unwrap();
        let before = summaries_of(&v).unwrap();
        assert_eq!(before, vec![("a".to_owned(), 2), ("b".to_owned(), 1)]);
        // As a Vault written before summaries existed: no table, no marker.
        let tx = v.db.begin_write().unwrap();
        tx.delete_table(SUMMARIES).unwrap();
        tx.open_table(META).unwrap().remove(SUMMARIES_META).unwrap();
        tx.commit().unwrap();
        assert!(summaries_of(&v).is_err(), "no summary table");
        drop(v);
        let v = Vault::open(&path, &VaultKey::from_bytes([5; 32]), [2; 32]).unwrap();
        assert_eq!(summaries_of(&v).unwrap(), before);
    }

    #[test]
    fn an_older_summary_put_back_is_refused_as_tampered() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(&dir.path().join("v.redb"));
        let a = SubjectId::new("a").unwrap();
        v.insert_batch(&[(a.clone(), record("X", 1))]).unwrap();
        let old = {
            let tx = v.db.begin_read().unwrap();
            let t = tx.open_table(SUMMARIES).unwrap();
            let value = t.get(0).unwrap().unwrap().value().to_vec();
            value
        };
        v.insert_batch(&[(a.clone(), record("X", 2))]).unwrap();
        assert_eq!(summaries_of(&v).unwrap(), vec![("a".to_owned(), 2)]);
        let put = |bytes: &[u8]| {
            let tx = v.db.begin_write().unwrap();
            tx.open_table(SUMMARIES).unwrap().insert(0, bytes).unwrap();
            tx.commit().unwrap();
        };
        put(&old);
        assert!(matches!(
            summaries_of(&v),
            Err(VaultError::Tampered { block: 1, .. })
        ));
        // A later import refuses to build on it too, and stores nothing.
        assert!(matches!(
            v.insert_batch(&[(a.clone(), record("X", 3))]),
            Err(VaultError::Tampered { .. })
        ));
        assert_eq!(v.stored_blocks(&a).unwrap(), 2);
        // Erasure removes the summary.
        assert!(v.erase_subject(&a, 9).unwrap());
        assert_eq!(summaries_of(&v).unwrap(), vec![]);
    }

    fn purchase(brand: &str, ts_ms: u64, amount_minor: u64) -> RecordRef<'_> {
        RecordRef::Purchase(PurchaseRef {
            brand,
            category: "coffee",
            amount_minor,
            currency: "SGD",
            ts_ms,
            store_city: "Singapore",
            store_country: "SG",
        })
    }

    /// What `purchase_point` reads, the full decoder reads the same.
    fn agrees(bytes: &[u8]) -> bool {
        match purchase_point(bytes) {
            Some((brand, ts_ms, amount_minor)) => matches!(
                bcs::from_bytes::<RecordRef<'_>>(bytes),
                Ok(RecordRef::Purchase(p))
                    if (p.brand, p.ts_ms, p.amount_minor) == (brand, ts_ms, amount_minor)
            ),
            None => true,
        }
    }

    #[test]
    fn purchases_are_read_in_place_and_the_rest_decoded_whole() {
        let p = bcs::to_bytes(&purchase("Luckin Coffee", 1_767_225_600_000, 590)).unwrap();
        assert_eq!(
            purchase_point(&p),
            Some(("Luckin Coffee", 1_767_225_600_000, 590))
        );
        let long = "b".repeat(130);
        let identity = RecordRef::Identity(IdentityRef {
            contact_kind: ContactKind::Email,
            contact: "a@b.c",
        });
        for other in [
            bcs::to_bytes(&purchase(&long, 1, 2)).unwrap(),
            bcs::to_bytes(&identity).unwrap(),
            p[..p.len() - 1].to_vec(),
            [p.as_slice(), &[0]].concat(),
        ] {
            assert_eq!(purchase_point(&other), None);
        }
        // Either way the summary is the same.
        let mut fast = Summary::default();
        let mut slow = Summary::default();
        let identity = bcs::to_bytes(&identity).unwrap();
        for bytes in [&p, &identity] {
            fast.absorb_encoded("s", 0, bytes).unwrap();
            slow.absorb(&bcs::from_bytes(bytes).unwrap());
        }
        assert_eq!(fast, slow);
        assert!(fast.absorb_encoded("s", 0, &p[..3]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn purchase_point_agrees_with_bcs_on_mutated_bytes(
            edits in proptest::collection::vec((0usize..120, proptest::prelude::any::<u8>(), 0u8..3), 0..4),
        ) {
            let mut bytes = bcs::to_bytes(&purchase("Luckin Coffee", 1_767_225_600_000, 590)).unwrap();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => { bytes.remove(at); }
                    _ => {}
                }
            }
            proptest::prop_assert!(agrees(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn a_summary_round_trips_and_absorbs_later_records_like_a_scan() {
        let mut s = Summary::default();
        s.absorb(&RecordRef::Identity(IdentityRef {
            contact_kind: ContactKind::Phone,
            contact: "+6500000001",
        }));
        s.absorb(&purchase("Luckin Coffee", 10, 450));
        s.absorb(&purchase("Starbucks", 20, 700));
        s.absorb(&purchase("Luckin Coffee", 30, 500));
        let mut bytes = Vec::new();
        s.encode_into(&mut bytes).unwrap();
        let mut back = Summary::decode("s", &bytes).unwrap();
        assert_eq!(back, s);
        // A later identity replaces the earlier; purchases accumulate per brand.
        back.absorb(&RecordRef::Identity(IdentityRef {
            contact_kind: ContactKind::Email,
            contact: "a@b.c",
        }));
        back.absorb(&purchase("Luckin Coffee", 40, 1));
        let view = SummaryView {
            subject: "s",
            identity: back.identity,
            geography: back.geography,
            brands: &back.brands,
        };
        let mut seen = Vec::new();
        view.for_each_purchase(&mut |b, t, a| seen.push((b.to_owned(), t, a)));
        assert_eq!(
            seen,
            vec![
                ("Luckin Coffee".to_owned(), 10, 450),
                ("Luckin Coffee".to_owned(), 30, 500),
                ("Luckin Coffee".to_owned(), 40, 1),
                ("Starbucks".to_owned(), 20, 700),
            ]
        );
        assert_eq!(view.identity.unwrap().contact, "a@b.c");
        assert_eq!(view.purchase_count(), 4);
        // Summaries are not block plaintexts: their nonces never collide.
        assert_ne!(summary_nonce(3), crypto::block_nonce(3));
    }
}
