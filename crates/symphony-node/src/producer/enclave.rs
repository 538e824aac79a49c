//! The Vault enclave's side of a receipt upload: the opened bytes become a
//! purchase record (OCR for images and scanned PDFs, the text layer of other PDFs,
//! the structured `field: value` form or OCR-style text as is), a content hash that
//! recognises a duplicate upload, and the record's quality score. Runs inside the
//! enclave closure of `EnterpriseNode::execute_parse_slice`; nothing here leaves
//! the Vault but the score.

use symphony_core::encoding::content_hash;
use symphony_economics::quality::{quality_score, QualityParams, QualityScore, RecordFacts};
use symphony_vault::record::Purchase;

use super::ocr::{upload_text, Ocr, UploadKind};
use super::receipt::{parse_receipt_text_counted, ReceiptRecord};
use crate::classes::parse::parse_receipt;
use crate::NodeError;

/// Fields a complete image receipt has: merchant (known), category, city, country,
/// time, currency, items, total.
pub const RECEIPT_RECORD_FIELDS: [&str; 8] = [
    "merchant",
    "category",
    "store_city",
    "store_country",
    "time",
    "currency",
    "items",
    "total",
];

/// A receipt read inside the enclave.
#[derive(Clone, Debug)]
pub struct ReadReceipt {
    /// The purchase the Vault stores.
    pub purchase: Purchase,
    /// Line items (empty for the structured form, which has none).
    pub record: Option<ReceiptRecord>,
    /// Content hash of what was read (hex): equal for two uploads of one receipt,
    /// whatever their bytes (another photo, another format).
    pub record_hash: String,
    /// Facts for the quality score.
    pub facts: RecordFacts,
    /// The fields read.
    pub fields: Vec<String>,
}

fn looks_structured(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("merchant:"))
}

/// Reads an opened upload into a purchase record. `uploaded_at_ms` is the task's
/// time (freshness). Errors name what could not be read.
pub fn read_upload(
    ocr: &dyn Ocr,
    bytes: &[u8],
    uploaded_at_ms: u64,
) -> Result<ReadReceipt, NodeError> {
    let kind = super::ocr::upload_kind(bytes);
    let text = upload_text(ocr, bytes).map_err(|e| NodeError::Refused(e.to_string()))?;
    if kind == UploadKind::Text && looks_structured(&text) {
        let purchase = parse_receipt(&text).map_err(|e| NodeError::Refused(e.to_string()))?;
        let record_hash = content_hash("scp/parsed-purchase/v1", &purchase)
            .map_err(|e| NodeError::Encoding(e.to_string()))?
            .to_hex();
        let n = crate::classes::parse::RECEIPT_FIELDS.len() as u32;
        let facts = RecordFacts {
            lines_total: n,
            lines_recognized: n,
            fields_present: n,
            fields_expected: n,
            purchased_at_ms: purchase.ts_ms,
            uploaded_at_ms,
            duplicate: false,
            category: purchase.category.clone(),
        };
        return Ok(ReadReceipt {
            purchase,
            record: None,
            record_hash,
            facts,
            fields: crate::classes::parse::RECEIPT_FIELDS
                .iter()
                .map(|f| f.to_string())
                .collect(),
        });
    }
    let (record, lines_total, lines_recognized) = parse_receipt_text_counted(&text)
        .map_err(|e| NodeError::Refused(format!("receipt ({kind:?}): {e}")))?;
    // Stable across uploads of the same receipt: the record, not the bytes.
    let record_hash = content_hash("scp/parsed-receipt/v1", &record)
        .map_err(|e| NodeError::Encoding(e.to_string()))?
        .to_hex();
    let known = record.category != "other";
    let mut fields: Vec<String> = RECEIPT_RECORD_FIELDS
        .iter()
        .map(|f| f.to_string())
        .collect();
    if !known {
        fields.retain(|f| f != "category");
    }
    let facts = RecordFacts {
        lines_total,
        lines_recognized,
        fields_present: fields.len() as u32,
        fields_expected: RECEIPT_RECORD_FIELDS.len() as u32,
        purchased_at_ms: record.time_ms,
        uploaded_at_ms,
        duplicate: false,
        category: record.category.clone(),
    };
    Ok(ReadReceipt {
        purchase: record.to_purchase(),
        record: Some(record),
        record_hash,
        facts,
        fields,
    })
}

/// The quality score of a read receipt under policy version 1's quality parameters.
pub fn score(read: &ReadReceipt) -> Result<QualityScore, NodeError> {
    quality_score(&QualityParams::default_v1(), &read.facts)
        .map_err(|e| NodeError::Refused(e.to_string()))
}

impl crate::enterprise::EnterpriseNode {
    /// Stores a read receipt for the assignment's subject, unless the same record
    /// is already there (a duplicate upload: refused, nothing stored). The record
    /// (with its line items) and its duplicate marker are one write transaction.
    /// Returns the record commitment, the fields read and the quality score.
    pub(crate) fn store_parsed(
        &self,
        a: &crate::classes::parse::ParseAssignment,
        envelope: &symphony_core::envelope::TaskEnvelope,
        read: ReadReceipt,
    ) -> Result<(symphony_core::encoding::Digest, Vec<String>, QualityScore), NodeError> {
        use symphony_vault::parsed::StoreParsed;
        use symphony_vault::record::Record;
        let quality = score(&read)?;
        let commitment = crate::classes::parse::record_commitment(envelope, &read.purchase)?;
        let record = match &read.record {
            Some(r) => Record::Receipt(r.to_receipt()),
            None => Record::Purchase(read.purchase.clone()),
        };
        let row = symphony_vault::parsed::ParsedRecord {
            subject: a.subject.clone(),
            record_hash: read.record_hash.clone(),
            epoch: envelope.body().epoch_id,
            task_id: envelope.body().task_id.to_string(),
            score_bp: quality.score_bp,
        };
        match self.vault.store_parsed(&record, &row)? {
            StoreParsed::Stored => Ok((commitment, read.fields, quality)),
            StoreParsed::Duplicate(first) => Err(NodeError::Refused(format!(
                "duplicate upload: this receipt is already in vault {} (parsed by task {} in epoch {}); nothing was stored",
                self.vault_id(),
                first.task_id,
                first.epoch.0
            ))),
        }
    }
}
