//! # symphony-fuzz: harnesses for the parsers that face the outside
//!
//! Each harness takes raw bytes (what libFuzzer hands a target) and feeds them to one
//! parser; it must return, never panic, and a refusal must carry a message that says
//! what is wrong. The same functions run:
//!
//! - under `cargo test` on stable (`tests/harness.rs`: proptest over random and
//!   mutated inputs, and a replay of the saved corpus in `fuzz/corpus/<target>/`);
//! - under cargo-fuzz with libFuzzer (`fuzz/fuzz_targets/*.rs`), which needs a nightly
//!   toolchain (see `fuzz/README.md`).
//!
//! Harnesses: [`gateway_request`] (the gateway's header parsing, signature
//! verification, replay cache and JSON body → task spec, see [`gateway`]),
//! [`campaign_spec`] (the `symphony demo luckin --spec` TOML, `CampaignSpec`),
//! [`training_spec`] (`TrainingSpec::parse`, TOML or JSON), [`task_spec`]
//! (`TaskSpec::from_toml`, the class-tagged spec of `symphony task submit`),
//! [`jsonl_import`] (`symphony_vault::validate_records` over a file of these bytes),
//! [`envelope`] (BCS decoding of a `TaskEnvelope` and its hash check), and the
//! structured [`structured_spec`] (an `arbitrary`-built TOML document over the spec
//! vocabulary, fed to all three spec parsers).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::io::Write;

use arbitrary::{Arbitrary, Unstructured};
use symphony_core::encoding::{canonical_bytes, from_canonical_bytes};
use symphony_core::envelope::TaskEnvelope;
use symphony_node::network::CampaignSpec;
use symphony_node::task::TaskSpec;
use symphony_node::training::spec::TrainingSpec;

pub mod gateway;
pub use gateway::gateway_request;

/// What a harness saw: the input was accepted, or refused with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed (and validated, where the parser validates).
    Accepted,
    /// Refused; the message says why.
    Refused(String),
}

impl Outcome {
    fn from<T, E: std::fmt::Display>(r: Result<T, E>) -> Self {
        match r {
            Ok(_) => Outcome::Accepted,
            Err(e) => Outcome::Refused(e.to_string()),
        }
    }

    /// A refusal with an empty message is not a clear error.
    pub fn is_clear(&self) -> bool {
        match self {
            Outcome::Accepted => true,
            Outcome::Refused(m) => !m.trim().is_empty(),
        }
    }
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `CampaignSpec` from TOML (what `symphony demo luckin --spec` reads).
pub fn campaign_spec(data: &[u8]) -> Outcome {
    Outcome::from(toml::from_str::<CampaignSpec>(&text(data)))
}

/// `TrainingSpec::parse` (TOML, or JSON when the text starts with `{`).
pub fn training_spec(data: &[u8]) -> Outcome {
    Outcome::from(TrainingSpec::parse(&text(data)))
}

/// `TaskSpec::from_toml` (the class-tagged spec).
pub fn task_spec(data: &[u8]) -> Outcome {
    Outcome::from(TaskSpec::from_toml(&text(data)))
}

/// `symphony_vault::validate_records` over a file holding exactly these bytes (the
/// JSONL record import's first pass: every line parsed and checked).
pub fn jsonl_import(data: &[u8]) -> Outcome {
    let file = match tempfile::Builder::new().suffix(".jsonl").tempfile() {
        Ok(f) => f,
        Err(e) => return Outcome::Refused(format!("harness: temp file: {e}")),
    };
    let mut handle = file.as_file();
    if let Err(e) = handle.write_all(data).and_then(|()| handle.flush()) {
        return Outcome::Refused(format!("harness: write: {e}"));
    }
    Outcome::from(symphony_vault::validate_records(file.path(), &mut |_| {}))
}

/// BCS decoding of a `TaskEnvelope`, then its hash and class-constraint check. An
/// envelope that verifies re-encodes to exactly the input bytes (canonical encoding).
pub fn envelope(data: &[u8]) -> Outcome {
    let env: TaskEnvelope = match from_canonical_bytes(data) {
        Ok(e) => e,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    if let Err(e) = env.verify() {
        return Outcome::Refused(e.to_string());
    }
    match canonical_bytes(&env) {
        Ok(bytes) if bytes == data => Outcome::Accepted,
        Ok(_) => Outcome::Refused("harness: a verified envelope is not canonical".into()),
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// Keys of the spec vocabulary (campaign, compute, train), so that structured inputs
/// reach the validation behind the TOML syntax.
const KEYS: &[&str] = &[
    "task_class",
    "advertiser",
    "model_operator",
    "brand",
    "country",
    "countries",
    "city",
    "window_days",
    "audience_cap",
    "selection",
    "usage_scope",
    "selection_seed",
    "minimum_vault_quorum",
    "epsilon",
    "delta",
    "rounds",
    "max_rounds",
    "learning_rate",
    "batch_size",
    "clip_norm",
    "features",
    "label",
    "group_by",
    "contribution_bound_minor",
    "model",
    "metric",
];

/// A TOML value `arbitrary` picks.
#[derive(Arbitrary, Debug)]
enum Value {
    Str(String),
    Word(u8),
    Int(i64),
    Small(u8),
    Float(f64),
    Bool(bool),
    List(Vec<u8>),
    Table(u8, u8),
}

const WORDS: &[&str] = &[
    "query",
    "compute",
    "train",
    "parse",
    "marketing",
    "research",
    "personal",
    "training",
    "random_sampling",
    "recency_weighted",
    "SG",
    "Singapore",
    "Luckin Coffee",
    "advertiser:luckin",
    "operator:acme",
    "logistic_regression",
    "",
    "0",
    "-1",
    "1e309",
    "NaN",
    "é\u{0}\u{202e}",
];

fn word(i: u8) -> &'static str {
    WORDS[usize::from(i) % WORDS.len()]
}

fn render(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Word(i) => format!("{:?}", word(*i)),
        Value::Int(i) => i.to_string(),
        Value::Small(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => format!("{f:?}"),
        Value::Float(_) => "nan".into(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => {
            let parts: Vec<String> = items.iter().map(|i| format!("{:?}", word(*i))).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Table(k, w) => format!(
            "{{ {} = {:?} }}",
            KEYS[usize::from(*k) % KEYS.len()],
            word(*w)
        ),
    }
}

/// Builds a TOML document over the spec vocabulary from `arbitrary` choices (key, value
/// kind, duplicates, a stray line), returning its text.
pub fn arbitrary_spec_text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let mut out = String::new();
    let n = u.int_in_range(0..=14)?;
    for _ in 0..n {
        let key = KEYS[u.choose_index(KEYS.len())?];
        let value = Value::arbitrary(u)?;
        out.push_str(&format!("{key} = {}\n", render(&value)));
    }
    if u.ratio(1, 8)? {
        let stray = String::arbitrary(u)?;
        out.push_str(&stray);
        out.push('\n');
    }
    Ok(out)
}

/// The structured harness: an `arbitrary`-built spec fed to all three spec parsers.
/// Returns their outcomes (campaign, training, task).
pub fn structured_spec(data: &[u8]) -> Option<[Outcome; 3]> {
    let mut u = Unstructured::new(data);
    let doc = arbitrary_spec_text(&mut u).ok()?;
    let bytes = doc.as_bytes();
    Some([campaign_spec(bytes), training_spec(bytes), task_spec(bytes)])
}

/// A harness over raw bytes.
pub type Harness = fn(&[u8]) -> Outcome;

/// Every harness by name (the cargo-fuzz target names and the corpus folders).
pub const TARGETS: &[(&str, Harness)] = &[
    ("campaign_spec", campaign_spec),
    ("training_spec", training_spec),
    ("task_spec", task_spec),
    ("jsonl_import", jsonl_import),
    ("envelope", envelope),
    ("gateway_request", gateway_request),
];
