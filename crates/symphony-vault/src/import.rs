//! Import of the plaintext files (see the crate docs for their formats).
//!
//! Record files are imported in two passes: pass 1 parses and validates every line
//! (nothing is written, so a malformed row leaves the Vault exactly as before);
//! pass 2 parses again and commits batches of `batch_records` records, each in one
//! write transaction. A crash in pass 2 leaves a prefix of whole batches; since
//! records are deduplicated by content, importing the file again completes it
//! without duplicates. Consent files are small and go in one transaction.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use symphony_core::ids::SubjectId;

use crate::batch::PreparedBatch;
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
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch_records: 50_000,
            validate_first: true,
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
#[derive(Deserialize)]
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
    let row: RecordRow<'_> = serde_json::from_slice(line).map_err(|e| {
        let (field, reason) = diagnose(line, RECORD_FIELDS, &e);
        row_error(file, line_no, field, reason)
    })?;
    let (subject, record) =
        check_record(&row).map_err(|(field, reason)| row_error(file, line_no, field, reason))?;
    Ok(use_record(subject, record))
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
/// Pass 2 runs as a pipeline: one thread parses the next batch while the caller's
/// thread encrypts and commits the previous one.
pub fn import_records(
    vault: &Vault,
    file: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<ImportSummary, ImportError> {
    let batch_records = options.batch_records.max(1);
    let lines_total = if options.validate_first {
        validate_records(file, progress)?
    } else {
        0
    };
    let mut summary = ImportSummary::default();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, ImportError>>(2);
        let parser = scope.spawn(move || {
            let mut batch = vault.batch_builder();
            let mut rows = 0u64;
            let mut last_line = 0u64;
            let result = for_each_line(file, |line_no, line| {
                parse_line(file, line_no, line, |s, r| batch.push_ref(s, &r))?
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
                let s = vault.insert_prepared(&batch)?;
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
