//! Field-level accuracy of the OCR path against the corpus's ground truth, per
//! degradation level, and its throughput (`symphony bench parse`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::corpus::{generate_receipts, png_bytes, render, Level};
use super::ocr::{upload_text, Ocr};
use super::receipt::parse_receipt_text;
use crate::NodeError;

/// One level's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelReport {
    /// The level.
    pub level: Level,
    /// Receipts read.
    pub receipts: usize,
    /// Receipts that parsed (and added up).
    pub parsed: usize,
    /// Fields right / fields in the ground truth (a receipt that did not parse
    /// counts all its fields wrong).
    pub field_accuracy: f64,
    /// Receipts fully right.
    pub exact: usize,
    /// Receipts per second through render-free OCR + parse (wall clock).
    pub receipts_per_s: f64,
    /// The first refusals, for diagnosis.
    pub errors: Vec<String>,
}

/// Reads `per_level` seeded receipts at each level through `ocr` and the receipt
/// parser and compares them with the records they were rendered from.
pub fn bench_parse(
    ocr: &dyn Ocr,
    seed: u64,
    per_level: usize,
    now_ms: u64,
    levels: &[Level],
) -> Result<Vec<LevelReport>, NodeError> {
    let records = generate_receipts(seed, per_level, now_ms);
    let mut out = Vec::new();
    for &level in levels {
        let images = records
            .iter()
            .enumerate()
            .map(|(i, r)| png_bytes(&render(r, level, seed.wrapping_add(i as u64))?))
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let (mut right, mut total, mut parsed, mut exact) = (0usize, 0usize, 0usize, 0usize);
        let mut errors = Vec::new();
        for (truth, png) in records.iter().zip(&images) {
            total += truth.field_count();
            let read = upload_text(ocr, png)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_receipt_text(&t).map_err(|e| e.to_string()));
            match read {
                Ok(rec) => {
                    parsed += 1;
                    let ok = rec.fields_matching(truth);
                    right += ok;
                    exact += usize::from(ok == truth.field_count());
                }
                Err(e) if errors.len() < 5 => errors.push(e),
                Err(_) => {}
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        out.push(LevelReport {
            level,
            receipts: records.len(),
            parsed,
            field_accuracy: right as f64 / total.max(1) as f64,
            exact,
            receipts_per_s: records.len() as f64 / secs,
            errors,
        });
    }
    Ok(out)
}
