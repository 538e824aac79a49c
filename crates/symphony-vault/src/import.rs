//! Import of the plaintext files (see the crate docs for their formats).
//!
//! Record files are read once, in two passes over the prepared data: pass 1 parses,
//! validates and prepares every line (BCS + keyed digest, two threads on large
//! files) into batches staged in memory, or beyond `staging_memory_bytes` in a spill
//! file next to the Vault sealed under a one-off key; nothing is written to the
//! Vault, so a malformed row leaves it exactly as before. Pass 2 seals and commits
//! the staged batches of `batch_records` records, each in one write transaction. A
//! crash in pass 2 leaves a prefix of whole batches; since records are deduplicated
//! by content, importing the file again completes it without duplicates. Consent
//! files are small and go in one transaction.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read as _, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::{Aes256Gcm, KeyInit as _};
use rand::RngCore as _;

use serde::Deserialize;
use symphony_core::ids::SubjectId;

use crate::batch::{BatchBuilder, PreparedBatch};
use crate::error::ImportError;
use crate::record::{ContactKind, GeographyRef, IdentityRef, PurchaseRef, RecordRef};
use crate::store::Vault;

pub use crate::consent_import::{import_consent, PRIOR_SPEND_TASK};

/// Import tuning.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    /// Records per write transaction (the unit that is atomic and acknowledged).
    pub batch_records: usize,
    /// Validate the whole file before writing anything (default). With `false` the
    /// import is one pass (faster), and a malformed row stops it after the batches
    /// before it were committed: the Vault then holds a prefix of whole batches,
    /// not its state before the import.
    pub validate_first: bool,
    /// With `validate_first`: bytes of prepared batches kept in memory between the
    /// validating pass and the writing pass. Batches beyond it go to a spill file
    /// next to the Vault file, sealed under a key that exists only in memory, and
    /// removed when the import ends (whatever the outcome).
    pub staging_memory_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch_records: 50_000,
            validate_first: true,
            staging_memory_bytes: 512 << 20,
        }
    }
}

/// Which pass an import is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportPhase {
    /// Parsing and validating every line; nothing written yet.
    Validating,
    /// Writing committed batches.
    Writing,
}

/// Progress reported to the caller's callback.
#[derive(Clone, Debug)]
pub struct ImportProgress<'a> {
    /// The file.
    pub file: &'a Path,
    /// The pass.
    pub phase: ImportPhase,
    /// Lines processed so far in this pass (for `Writing`: lines whose batch is
    /// committed, i.e. acknowledged and durable).
    pub lines_done: u64,
    /// Lines in the file (known after validation; 0 while validating).
    pub lines_total: u64,
    /// Batches committed so far.
    pub batches_committed: u64,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Non-blank lines read.
    pub rows: u64,
    /// Records newly stored.
    pub inserted: u64,
    /// Records already present (re-import), skipped.
    pub duplicates: u64,
    /// Records of erased subjects, skipped.
    pub skipped_erased: u64,
    /// Batches committed.
    pub batches: u64,
    /// Consent changes recorded (consent files).
    pub consent_changes: u64,
    /// Budget accounts charged with prior spend (consent files).
    pub budget_rows: u64,
    /// Rows of a consent file addressed to other Vaults, skipped.
    pub other_vault_rows: u64,
}

/// One line of a record file, before validation.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRow<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    contact_kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    contact: Option<Cow<'a, str>>,
    #[serde(borrow)]
    home_city: Option<Cow<'a, str>>,
    #[serde(borrow)]
    home_country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    brand: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    amount_minor: Option<u64>,
    #[serde(borrow)]
    currency: Option<Cow<'a, str>>,
    ts_ms: Option<u64>,
    #[serde(borrow)]
    store_city: Option<Cow<'a, str>>,
    #[serde(borrow)]
    store_country: Option<Cow<'a, str>>,
}

/// A field-level problem: (field, reason).
pub(crate) type FieldError = (&'static str, String);

const RECORD_FIELDS: &[(&str, FieldType)] = &[
    ("kind", FieldType::Str),
    ("subject", FieldType::Str),
    ("contact_kind", FieldType::Str),
    ("contact", FieldType::Str),
    ("home_city", FieldType::Str),
    ("home_country", FieldType::Str),
    ("brand", FieldType::Str),
    ("category", FieldType::Str),
    ("amount_minor", FieldType::U64),
    ("currency", FieldType::Str),
    ("ts_ms", FieldType::U64),
    ("store_city", FieldType::Str),
    ("store_country", FieldType::Str),
];

#[derive(Clone, Copy)]
pub(crate) enum FieldType {
    Str,
    U64,
    Bool,
}

pub(crate) fn required<T>(field: &'static str, value: Option<T>) -> Result<T, FieldError> {
    value.ok_or((field, "missing".to_owned()))
}

fn text<'r>(
    field: &'static str,
    value: &'r Option<Cow<'_, str>>,
    max: usize,
) -> Result<&'r str, FieldError> {
    let v = required(field, value.as_deref())?;
    if v.trim().is_empty() {
        return Err((field, "empty".to_owned()));
    }
    if v.len() > max {
        return Err((field, format!("longer than {max} bytes")));
    }
    Ok(v)
}

fn code<'r>(
    field: &'static str,
    value: &'r Option<Cow<'_, str>>,
    len: usize,
) -> Result<&'r str, FieldError> {
    let v = required(field, value.as_deref())?;
    if v.len() != len || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err((
            field,
            format!("{v:?} is not a {len}-letter upper-case code"),
        ));
    }
    Ok(v)
}

pub(crate) fn subject_id(value: Option<&str>) -> Result<SubjectId, FieldError> {
    SubjectId::new(required("subject", value)?).map_err(|e| ("subject", e.to_string()))
}

/// Checks a row without copying its strings; the record borrows from the row.
fn check_record<'r>(row: &'r RecordRow<'_>) -> Result<(SubjectId, RecordRef<'r>), FieldError> {
    let subject = subject_id(row.subject.as_deref())?;
    let kind = required("kind", row.kind.as_deref())?;
    let record = match kind {
        "identity" => {
            let contact_kind = match required("contact_kind", row.contact_kind.as_deref())? {
                "phone" => ContactKind::Phone,
                "email" => ContactKind::Email,
                other => return Err(("contact_kind", format!("{other:?} is not phone or email"))),
            };
            let contact = text("contact", &row.contact, 254)?;
            let ok = match contact_kind {
                ContactKind::Phone => {
                    contact.starts_with('+')
                        && contact.len() > 4
                        && contact[1..].bytes().all(|b| b.is_ascii_digit())
                }
                ContactKind::Email => {
                    contact.contains('@') && !contact.contains(char::is_whitespace)
                }
            };
            if !ok {
                return Err((
                    "contact",
                    format!("{contact:?} is not a valid {}", kind_name(contact_kind)),
                ));
            }
            RecordRef::Identity(IdentityRef {
                contact_kind,
                contact,
            })
        }
        "geography" => RecordRef::Geography(GeographyRef {
            home_city: text("home_city", &row.home_city, 100)?,
            home_country: code("home_country", &row.home_country, 2)?,
        }),
        "purchase" => RecordRef::Purchase(PurchaseRef {
            brand: text("brand", &row.brand, 100)?,
            category: text("category", &row.category, 100)?,
            amount_minor: required("amount_minor", row.amount_minor)?,
            currency: code("currency", &row.currency, 3)?,
            ts_ms: required("ts_ms", row.ts_ms)?,
            store_city: text("store_city", &row.store_city, 100)?,
            store_country: code("store_country", &row.store_country, 2)?,
        }),
        other => {
            return Err((
                "kind",
                format!("{other:?} is not identity, geography or purchase"),
            ))
        }
    };
    Ok((subject, record))
}

fn kind_name(kind: ContactKind) -> &'static str {
    match kind {
        ContactKind::Phone => "E.164 phone number (+ then digits)",
        ContactKind::Email => "e-mail address",
    }
}

/// Names the field a serde error is about, by re-reading the line as a JSON value.
pub(crate) fn diagnose(
    line: &[u8],
    fields: &[(&str, FieldType)],
    err: &serde_json::Error,
) -> (String, String) {
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return ("<row>".to_owned(), format!("not valid JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return ("<row>".to_owned(), "not a JSON object".to_owned());
    };
    for (name, v) in obj {
        let Some((_, ty)) = fields.iter().find(|(f, _)| f == name) else {
            return (name.clone(), "unknown field".to_owned());
        };
        let ok = v.is_null()
            || match ty {
                FieldType::Str => v.is_string(),
                FieldType::U64 => v.is_u64(),
                FieldType::Bool => v.is_boolean(),
            };
        if !ok {
            let expected = match ty {
                FieldType::Str => "a string",
                FieldType::U64 => "a non-negative integer",
                FieldType::Bool => "true or false",
            };
            return (name.clone(), format!("expected {expected}, found {v}"));
        }
    }
    ("<row>".to_owned(), err.to_string())
}

/// Reads non-blank lines, calling `f(line_number, bytes)`.
pub(crate) fn for_each_line(
    file: &Path,
    f: impl FnMut(u64, &[u8]) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    for_each_line_in(file, 0, u64::MAX, f).map(|_| ())
}

/// Like [`for_each_line`] for the lines that *start* at a byte offset in
/// `[start, end)`, numbered from 1 within the range. Returns the number of lines
/// (blank ones included) in the range.
fn for_each_line_in(
    file: &Path,
    start: u64,
    end: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), ImportError>,
) -> Result<u64, ImportError> {
    let io = |source| ImportError::Io {
        file: file.to_owned(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(file).map_err(io)?);
    let mut buf = Vec::with_capacity(512);
    let mut offset = 0u64;
    if start > 0 {
        // Skip the rest of the line that starts before `start`.
        reader.seek(SeekFrom::Start(start - 1)).map_err(io)?;
        offset = start - 1 + reader.read_until(b'\n', &mut buf).map_err(io)? as u64;
    }
    let mut line_no = 0u64;
    while offset < end {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        line_no += 1;
        let line = buf.trim_ascii();
        if !line.is_empty() {
            f(line_no, line)?;
        }
    }
    Ok(line_no)
}

pub(crate) fn row_error(
    file: &Path,
    line: u64,
    field: impl Into<String>,
    reason: String,
) -> ImportError {
    ImportError::Row {
        file: file.to_owned(),
        line,
        field: field.into(),
        reason,
    }
}

/// Parses and checks one line, handing the borrowed record to `use_record`.
fn parse_line<T>(
    file: &Path,
    line_no: u64,
    line: &[u8],
    use_record: impl FnOnce(SubjectId, RecordRef<'_>) -> T,
) -> Result<T, ImportError> {
    let row: RecordRow<'_> = match fast_row(line) {
        Some(row) => row,
        None => serde_json::from_slice(line).map_err(|e| {
            let (field, reason) = diagnose(line, RECORD_FIELDS, &e);
            row_error(file, line_no, field, reason)
        })?,
    };
    let (subject, record) =
        check_record(&row).map_err(|(field, reason)| row_error(file, line_no, field, reason))?;
    Ok(use_record(subject, record))
}

/// Typed fast path for the common shape of a record line: one flat JSON object
/// whose values are strings without escapes or control characters, or unsigned
/// integers, each known field at most once, nothing else. Anything outside that
/// shape (escapes, nulls, spaces, unknown or repeated fields, odd numbers) returns
/// `None` and goes through serde_json, which accepts or names the error exactly as
/// before; what this accepts, serde_json parses to the same row.
fn fast_row(line: &[u8]) -> Option<RecordRow<'_>> {
    let mut row = RecordRow::default();
    let mut seen = 0u16;
    let mut at = 0usize;
    let expect =
        |at: &mut usize, b: u8| -> Option<()> { (line.get(*at) == Some(&b)).then(|| *at += 1) };
    // Every byte outside the strings is ASCII (or the line is left to serde_json),
    // so the line is UTF-8 exactly when its strings are: checked once for the
    // whole line rather than string by string.
    let text = std::str::from_utf8(line).ok()?;
    // A string without escapes: the range of the bytes between the quotes.
    let string = |at: &mut usize| -> Option<std::ops::Range<usize>> {
        if line.get(*at) != Some(&b'"') {
            return None;
        }
        let start = *at + 1;
        let len = line
            .get(start..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if line[start + len] != b'"' {
            return None;
        }
        *at = start + len + 1;
        Some(start..start + len)
    };
    expect(&mut at, b'{')?;
    if line.get(at) == Some(&b'}') {
        at += 1;
        return (at == line.len()).then_some(row);
    }
    loop {
        let key = line.get(string(&mut at)?)?;
        expect(&mut at, b':')?;
        // The position in `RECORD_FIELDS`.
        let index: usize = match key {
            b"kind" => 0,
            b"subject" => 1,
            b"contact_kind" => 2,
            b"contact" => 3,
            b"home_city" => 4,
            b"home_country" => 5,
            b"brand" => 6,
            b"category" => 7,
            b"amount_minor" => 8,
            b"currency" => 9,
            b"ts_ms" => 10,
            b"store_city" => 11,
            b"store_country" => 12,
            _ => return None,
        };
        let ty = RECORD_FIELDS.get(index)?.1;
        if seen & (1 << index) != 0 {
            return None;
        }
        seen |= 1 << index;
        match ty {
            FieldType::Str => {
                let value = Cow::Borrowed(text.get(string(&mut at)?)?);
                let slot = match index {
                    0 => &mut row.kind,
                    1 => &mut row.subject,
                    2 => &mut row.contact_kind,
                    3 => &mut row.contact,
                    4 => &mut row.home_city,
                    5 => &mut row.home_country,
                    6 => &mut row.brand,
                    7 => &mut row.category,
                    9 => &mut row.currency,
                    11 => &mut row.store_city,
                    12 => &mut row.store_country,
                    _ => return None,
                };
                *slot = Some(value);
            }
            FieldType::U64 => {
                let digits = line
                    .get(at..)?
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                // JSON has no leading zeros; longer numbers may overflow: serde decides.
                if digits == 0 || digits > 19 || (digits > 1 && line[at] == b'0') {
                    return None;
                }
                let mut n = 0u64;
                for &b in &line[at..at + digits] {
                    n = n * 10 + u64::from(b - b'0');
                }
                at += digits;
                match index {
                    8 => row.amount_minor = Some(n),
                    10 => row.ts_ms = Some(n),
                    _ => return None,
                }
            }
            FieldType::Bool => return None,
        }
        match line.get(at)? {
            b',' => at += 1,
            b'}' => {
                at += 1;
                return (at == line.len()).then_some(row);
            }
            _ => return None,
        }
    }
}

/// Files above this size are validated by two threads, one per half.
const PARALLEL_VALIDATION_BYTES: u64 = 4 << 20;

/// Pass 1 alone: parses and validates every line of a record file without
/// writing anything (two threads for large files). Returns the number of the last
/// non-blank line. The error reported is the first malformed row in file order.
pub fn validate_records(
    file: &Path,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<u64, ImportError> {
    let len = std::fs::metadata(file)
        .map_err(|source| ImportError::Io {
            file: file.to_owned(),
            source,
        })?
        .len();
    if len < PARALLEL_VALIDATION_BYTES {
        return validate_range(file, 0, u64::MAX, progress).map(|(_, last)| last);
    }
    let mid = len / 2;
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(move || validate_range(file, mid, u64::MAX, &mut |_| {}));
        let first = validate_range(file, 0, mid, progress);
        (first, second.join())
    });
    let (first_lines, first_last) = first?;
    let shift = |line: u64| line + first_lines;
    match second {
        Ok(Ok((_, 0))) => Ok(first_last),
        Ok(Ok((_, last))) => Ok(shift(last)),
        Ok(Err(ImportError::Row {
            file,
            line,
            field,
            reason,
        })) => Err(ImportError::Row {
            file,
            line: shift(line),
            field,
            reason,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ImportError::Io {
            file: file.to_owned(),
            source: std::io::Error::other("validation thread panicked"),
        }),
    }
}

/// Validates the lines starting in `[start, end)`: (lines in range, last non-blank
/// line number within the range, 0 if none).
fn validate_range(
    file: &Path,
    start: u64,
    end: u64,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<(u64, u64), ImportError> {
    let mut last = 0u64;
    let lines = for_each_line_in(file, start, end, |line_no, line| {
        parse_line(file, line_no, line, |_, _| ())?;
        last = line_no;
        if line_no % 1_000_000 == 0 {
            progress(&ImportProgress {
                file,
                phase: ImportPhase::Validating,
                lines_done: line_no,
                lines_total: 0,
                batches_committed: 0,
            });
        }
        Ok(())
    })?;
    Ok((lines, last))
}

type Batch = (PreparedBatch, u64);

/// Imports a record file (JSONL, see the crate docs) into the Vault.
///
/// With `validate_first` (the default) the file is read once: pass 1 parses,
/// validates and prepares every line (BCS + digest, on two threads for large
/// files) into batches staged in memory or in a sealed spill file, writing nothing
/// to the Vault; only when every line is valid does pass 2 seal and commit the
/// staged batches, one write transaction each. Without it, one pipelined pass: a
/// thread parses the next batch while the caller's thread commits the previous one.
pub fn import_records(
    vault: &Vault,
    file: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<ImportSummary, ImportError> {
    if options.validate_first {
        import_staged(vault, file, options, progress)
    } else {
        import_streaming(vault, file, options, progress)
    }
}

/// One pass: batches are committed as they are parsed.
fn import_streaming(
    vault: &Vault,
    file: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<ImportSummary, ImportError> {
    let batch_records = options.batch_records.max(1);
    let lines_total = 0;
    let mut summary = ImportSummary::default();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, ImportError>>(2);
        let parser = scope.spawn(move || {
            let mut batch = vault.batch_builder();
            let mut rows = 0u64;
            let mut last_line = 0u64;
            let result = for_each_line(file, |line_no, line| {
                parse_line(file, line_no, line, |s, r| batch.push_borrowed(&s, &r))?
                    .map_err(ImportError::Vault)?;
                rows += 1;
                last_line = line_no;
                if batch.len() >= batch_records && tx.send(Ok((batch.finish(), line_no))).is_err() {
                    // The writer stopped; it reports why.
                    return Err(ImportError::Io {
                        file: file.to_owned(),
                        source: std::io::Error::other("import writer stopped"),
                    });
                }
                Ok(())
            });
            let last = match result {
                Ok(()) if !batch.is_empty() => Ok((batch.finish(), last_line)),
                Ok(()) => return rows,
                Err(e) => Err(e),
            };
            let _ = tx.send(last);
            rows
        });
        let written = (|| {
            for item in rx.iter() {
                let (batch, lines_done) = item?;
                commit(
                    vault,
                    file,
                    &batch,
                    lines_done,
                    lines_total,
                    &mut summary,
                    progress,
                )?;
            }
            Ok::<(), ImportError>(())
        })();
        drop(rx);
        // A panic in the parser thread is a bug, not bad input.
        summary.rows = parser.join().unwrap_or(0);
        written
    })?;
    Ok(summary)
}

/// Commits one batch and reports it.
fn commit(
    vault: &Vault,
    file: &Path,
    batch: &PreparedBatch,
    lines_done: u64,
    lines_total: u64,
    summary: &mut ImportSummary,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<(), ImportError> {
    let s = vault.insert_prepared(batch)?;
    summary.inserted += s.inserted;
    summary.duplicates += s.duplicates;
    summary.skipped_erased += s.skipped_erased;
    summary.batches += 1;
    progress(&ImportProgress {
        file,
        phase: ImportPhase::Writing,
        lines_done,
        lines_total,
        batches_committed: summary.batches,
    });
    Ok(())
}

/// Validate-and-prepare, then write: see [`import_records`].
fn import_staged(
    vault: &Vault,
    file: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<ImportSummary, ImportError> {
    let batch_records = options.batch_records.max(1);
    let len = std::fs::metadata(file)
        .map_err(|source| ImportError::Io {
            file: file.to_owned(),
            source,
        })?
        .len();
    let spill_base = spill_base(vault);
    // Pass 1: parse, validate, prepare. Nothing is written to the Vault.
    let stages: Vec<(Stage, u64)> = if len < PARALLEL_VALIDATION_BYTES {
        let mut stage = Stage::new(&spill_base, 0, options.staging_memory_bytes);
        let builder = vault.batch_builder();
        stage_range(
            file,
            0,
            u64::MAX,
            builder,
            batch_records,
            &mut stage,
            progress,
        )?;
        vec![(stage, 0)]
    } else {
        let mid = len / 2;
        let limit = options.staging_memory_bytes / 2;
        let mut first = Stage::new(&spill_base, 0, limit);
        let mut second = Stage::new(&spill_base, 1, limit);
        let (a, b) = std::thread::scope(|scope| {
            let second_ref = &mut second;
            let builder = vault.batch_builder();
            let other = scope.spawn(move || {
                stage_range(
                    file,
                    mid,
                    u64::MAX,
                    builder,
                    batch_records,
                    second_ref,
                    &mut |_| {},
                )
            });
            let builder = vault.batch_builder();
            let a = stage_range(file, 0, mid, builder, batch_records, &mut first, progress);
            (a, other.join())
        });
        // The first malformed row in file order is the one reported.
        a?;
        let shift = first.lines;
        match b {
            Ok(Ok(())) => {}
            Ok(Err(ImportError::Row {
                file,
                line,
                field,
                reason,
            })) => {
                return Err(ImportError::Row {
                    file,
                    line: line + shift,
                    field,
                    reason,
                })
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ImportError::Io {
                    file: file.to_owned(),
                    source: std::io::Error::other("validation thread panicked"),
                })
            }
        }
        vec![(first, 0), (second, shift)]
    };
    let rows: u64 = stages.iter().map(|(s, _)| s.rows).sum();
    let lines_total = stages
        .iter()
        .rev()
        .find(|(s, _)| s.last > 0)
        .map_or(0, |(s, shift)| s.last + shift);
    // Pass 2: seal and commit the staged batches in file order.
    progress(&ImportProgress {
        file,
        phase: ImportPhase::Writing,
        lines_done: 0,
        lines_total,
        batches_committed: 0,
    });
    let mut summary = ImportSummary {
        rows,
        ..ImportSummary::default()
    };
    // A helper thread drains the stages (reading back spilled batches) and re-cuts
    // them, a batch or two ahead of this thread, which commits them in order.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, ImportError>>(2);
        let helper = scope.spawn(move || {
            let mut send = |batch: PreparedBatch, done: u64| {
                tx.send(Ok((batch, done))).map_err(|_| ImportError::Io {
                    // The writer stopped; it reports why.
                    file: file.to_owned(),
                    source: std::io::Error::other("import writer stopped"),
                })
            };
            let mut cut = Recut::new(batch_records);
            let mut drained = Ok(());
            for (mut stage, shift) in stages {
                drained = stage.drain(|batch, last| cut.push(batch, last + shift, &mut send));
                if drained.is_err() {
                    break;
                }
            }
            if let Err(e) = drained.and_then(|()| cut.finish(&mut send)) {
                let _ = tx.send(Err(e));
            }
        });
        let written = (|| {
            for item in rx.iter() {
                let (batch, done) = item?;
                commit(
                    vault,
                    file,
                    &batch,
                    done,
                    lines_total,
                    &mut summary,
                    progress,
                )?;
            }
            Ok::<(), ImportError>(())
        })();
        drop(rx);
        match helper.join() {
            Ok(()) => written,
            // A panic there is a bug, not bad input; the batches after it are missing.
            Err(_) => written.and(Err(ImportError::Io {
                file: file.to_owned(),
                source: std::io::Error::other("import staging thread panicked"),
            })),
        }
    })?;
    Ok(summary)
}

/// Re-cuts staged batches at the boundaries a one-thread import uses — every
/// `size` records in file order — before they are committed. Which records share
/// a write transaction decides the order new subjects are numbered in, and scans
/// visit subjects in that order: with the same cuts, a file prepared by two
/// threads gives the same Vault as one prepared by one (and a training run over it
/// the same model).
struct Recut {
    size: usize,
    pending: PreparedBatch,
    /// The last line of the staged batches already taken in whole.
    done: u64,
}

type Emit<'a> = dyn FnMut(PreparedBatch, u64) -> Result<(), ImportError> + 'a;

impl Recut {
    fn new(size: usize) -> Self {
        Recut {
            size: size.max(1),
            pending: PreparedBatch::default(),
            done: 0,
        }
    }

    /// Takes the next staged batch (whose last line is `last`), committing every
    /// full cut through `emit` with the last line it is known to cover.
    fn push(
        &mut self,
        batch: PreparedBatch,
        last: u64,
        emit: &mut Emit<'_>,
    ) -> Result<(), ImportError> {
        if self.pending.is_empty() && batch.len() == self.size {
            emit(batch, last)?;
        } else {
            let order = batch.file_order();
            let n = order.len();
            // A cut holds about as many bytes as a staged batch: reserving that
            // up front spares growing (copying) its buffers record by record.
            let room = (batch.arena.len() / n.max(1)).saturating_mul(self.size);
            if self.pending.is_empty() {
                self.pending.reserve(room + room / 8, self.size);
            }
            for (k, i) in order.into_iter().enumerate() {
                self.pending.push_from(&batch, i);
                if self.pending.len() == self.size {
                    let mut full = std::mem::take(&mut self.pending);
                    self.pending.reserve(room + room / 8, self.size);
                    full.sort_by_subject();
                    // A cut that ends with this batch covers its last line too.
                    emit(full, if k + 1 == n { last } else { self.done })?;
                }
            }
        }
        self.done = last;
        Ok(())
    }

    /// Commits what is left (the file's last, partial cut).
    fn finish(mut self, emit: &mut Emit<'_>) -> Result<(), ImportError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.sort_by_subject();
        emit(self.pending, self.done)
    }
}

/// Parses, validates and prepares the lines starting in `[start, end)` into
/// `stage` (line numbers within the range).
fn stage_range(
    file: &Path,
    start: u64,
    end: u64,
    mut batch: BatchBuilder,
    batch_records: usize,
    stage: &mut Stage,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<(), ImportError> {
    let mut rows = 0u64;
    let mut last = 0u64;
    let result = for_each_line_in(file, start, end, |line_no, line| {
        parse_line(file, line_no, line, |s, r| batch.push_borrowed(&s, &r))?
            .map_err(ImportError::Vault)?;
        rows += 1;
        last = line_no;
        if batch.len() >= batch_records {
            stage.push(batch.finish(), line_no)?;
        }
        if line_no % 1_000_000 == 0 {
            progress(&ImportProgress {
                file,
                phase: ImportPhase::Validating,
                lines_done: line_no,
                lines_total: 0,
                batches_committed: 0,
            });
        }
        Ok(())
    });
    let lines = result?;
    if !batch.is_empty() {
        stage.push(batch.finish(), last)?;
    }
    stage.lines = lines;
    stage.rows = rows;
    stage.last = last;
    Ok(())
}

/// Where spill files of imports into `vault` go: next to the Vault file.
fn spill_base(vault: &Vault) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = vault
        .path()
        .file_name()
        .map(|s| s.to_os_string())
        .unwrap_or_default();
    name.push(format!(".import-{}-{n}", std::process::id()));
    vault.path().with_file_name(name)
}

/// Prepared batches of one range of the file, between the two passes: in memory
/// up to a bound, then in a spill file.
struct Stage {
    memory: std::collections::VecDeque<Batch>,
    memory_bytes: usize,
    limit: usize,
    spill_path: PathBuf,
    spill: Option<Spill>,
    /// Lines in the range (blank ones included).
    lines: u64,
    /// Non-blank lines.
    rows: u64,
    /// Number of the last non-blank line (0: none).
    last: u64,
}

/// A spill file: batches sealed with a key that exists only in this process, so
/// the plaintext records never reach the disk a second time; removed on drop.
struct Spill {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    cipher: Aes256Gcm,
    /// Last line of each spilled batch, in order.
    batches: Vec<u64>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.writer = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Stage {
    fn new(base: &Path, part: u32, limit: usize) -> Stage {
        let mut name = base
            .file_name()
            .map(|s| s.to_os_string())
            .unwrap_or_default();
        name.push(format!("-{part}.spill"));
        Stage {
            memory: std::collections::VecDeque::new(),
            memory_bytes: 0,
            limit,
            spill_path: base.with_file_name(name),
            spill: None,
            lines: 0,
            rows: 0,
            last: 0,
        }
    }

    fn push(&mut self, mut batch: PreparedBatch, last: u64) -> Result<(), ImportError> {
        batch.sort_by_subject();
        let bytes = batch.heap_bytes();
        if self.spill.is_none() && self.memory_bytes + bytes <= self.limit {
            self.memory_bytes += bytes;
            self.memory.push_back((batch, last));
            return Ok(());
        }
        let io = |source| ImportError::Io {
            file: self.spill_path.clone(),
            source,
        };
        if self.spill.is_none() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let f = options.open(&self.spill_path).map_err(io)?;
            // A fresh key from the OS per spill file: it never leaves this process
            // and no output depends on it (the import stays deterministic).
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            self.spill = Some(Spill {
                path: self.spill_path.clone(),
                writer: Some(BufWriter::with_capacity(1 << 20, f)),
                cipher: Aes256Gcm::new((&key).into()),
                batches: Vec::new(),
            });
        }
        let spill = self
            .spill
            .as_mut()
            .ok_or_else(|| io(std::io::Error::other("no spill file")))?;
        let mut plain = Vec::with_capacity(batch.arena.len() + batch.items.len() * 40 + 16);
        batch.write_to(&mut plain).map_err(io)?;
        let nonce = spill_nonce(spill.batches.len() as u64);
        let sealed = crate::crypto::seal(&spill.cipher, nonce, b"symphony-vault/spill/v1", &plain)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let writer = spill
            .writer
            .as_mut()
            .ok_or_else(|| io(std::io::Error::other("spill file closed")))?;
        writer
            .write_all(&(sealed.len() as u64).to_le_bytes())
            .and_then(|()| writer.write_all(&sealed))
            .map_err(io)?;
        spill.batches.push(last);
        Ok(())
    }

    /// Hands every staged batch to `f` in order (memory first, then the spill file).
    fn drain(
        &mut self,
        mut f: impl FnMut(PreparedBatch, u64) -> Result<(), ImportError>,
    ) -> Result<(), ImportError> {
        while let Some((batch, last)) = self.memory.pop_front() {
            f(batch, last)?;
        }
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let io = |source| ImportError::Io {
            file: spill.path.clone(),
            source,
        };
        if let Some(w) = spill.writer.take() {
            w.into_inner().map_err(|e| io(e.into_error()))?;
        }
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&spill.path).map_err(io)?);
        for (i, &last) in spill.batches.iter().enumerate() {
            let mut len = [0u8; 8];
            reader.read_exact(&mut len).map_err(io)?;
            let len = usize::try_from(u64::from_le_bytes(len))
                .map_err(|_| io(std::io::Error::other("spill batch too large")))?;
            let mut sealed = vec![0u8; len];
            reader.read_exact(&mut sealed).map_err(io)?;
            // Each batch is bound to its place: a nonce out of order fails too.
            let in_place =
                sealed.get(..crate::crypto::NONCE_LEN) == Some(&spill_nonce(i as u64)[..]);
            let plain = crate::crypto::open(&spill.cipher, b"symphony-vault/spill/v1", &sealed)
                .ok()
                .filter(|_| in_place)
                .ok_or_else(|| io(std::io::Error::other("spill batch failed authentication")))?;
            let batch = PreparedBatch::read_from(&mut plain.as_slice()).map_err(io)?;
            f(batch, last)?;
        }
        Ok(())
    }
}

fn spill_nonce(n: u64) -> [u8; crate::crypto::NONCE_LEN] {
    let mut nonce = [0u8; crate::crypto::NONCE_LEN];
    nonce[..8].copy_from_slice(&n.to_le_bytes());
    nonce
}

/// Imports a file of either kind, recognised by its first row's `kind`
/// (`consent`/`budget` → consent file, anything else → record file).
pub fn import_file(
    vault: &Vault,
    file: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<ImportSummary, ImportError> {
    if is_consent_file(file)? {
        import_consent(vault, file, progress)
    } else {
        import_records(vault, file, options, progress)
    }
}

fn is_consent_file(file: &Path) -> Result<bool, ImportError> {
    #[derive(Deserialize)]
    struct KindOnly {
        kind: Option<String>,
    }
    let io = |source| ImportError::Io {
        file: file.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(file).map_err(io)?);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(false);
        }
        let line = buf.trim_ascii();
        if !line.is_empty() {
            let kind = serde_json::from_slice::<KindOnly>(line)
                .ok()
                .and_then(|k| k.kind);
            return Ok(matches!(kind.as_deref(), Some("consent" | "budget")));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const PURCHASE: &str = r#"{"kind":"purchase","subject":"s-1","brand":"Luckin Coffee","category":"coffee","amount_minor":590,"currency":"SGD","ts_ms":1767225600000,"store_city":"Singapore","store_country":"SG"}"#;
    const IDENTITY: &str = r#"{"kind":"identity","subject":"p-0000001","contact_kind":"email","contact":"a.b@example.com"}"#;

    /// What the fast path accepts, serde_json parses to the same row.
    fn agrees(line: &[u8]) -> bool {
        match fast_row(line) {
            Some(fast) => serde_json::from_slice::<RecordRow<'_>>(line).ok() == Some(fast),
            None => true,
        }
    }

    #[test]
    fn fast_path_takes_the_common_shape_and_leaves_the_rest_to_serde() {
        for line in [
            PURCHASE,
            IDENTITY,
            "{}",
            r#"{"kind":"geography","subject":"s","home_city":"Ho Chi Minh City","home_country":"VN"}"#,
        ] {
            assert!(fast_row(line.as_bytes()).is_some(), "{line}");
            assert!(agrees(line.as_bytes()), "{line}");
        }
        for line in [
            r#"{"kind":"purchase","kind":"purchase"}"#,
            r#"{"kind":"purch\u0061se"}"#,
            r#"{"kind": "purchase"}"#,
            r#"{"kind":null}"#,
            r#"{"other":"x"}"#,
            r#"{"amount_minor":012}"#,
            r#"{"amount_minor":-1}"#,
            r#"{"amount_minor":1.5}"#,
            r#"{"amount_minor":99999999999999999999}"#,
            r#"{"amount_minor":"1"}"#,
            r#"{"kind":"purchase"} "#,
            r#"{"kind":"purchase"}x"#,
            r#"{"kind":"purchase",}"#,
            r#"["kind"]"#,
        ] {
            assert!(fast_row(line.as_bytes()).is_none(), "{line}");
        }
    }

    #[test]
    fn fast_path_knows_every_field_by_name() {
        for (name, ty) in RECORD_FIELDS {
            let value = match ty {
                FieldType::U64 => "7",
                _ => "\"x\"",
            };
            let line = format!("{{\"{name}\":{value}}}");
            let row = fast_row(line.as_bytes()).unwrap();
            assert_ne!(row, RecordRow::default(), "{line}");
            assert!(agrees(line.as_bytes()), "{line}");
        }
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_serde_on_mutated_lines(
            edits in proptest::collection::vec((0usize..200, any::<u8>(), 0u8..3), 1..4),
            identity in any::<bool>(),
        ) {
            let mut line = if identity { IDENTITY } else { PURCHASE }.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 if at < line.len() => line[at] = byte,
                    1 => line.insert(at, byte),
                    _ if at < line.len() => { line.remove(at); }
                    _ => {}
                }
            }
            prop_assert!(agrees(&line), "{}", String::from_utf8_lossy(&line));
        }
    }
}
