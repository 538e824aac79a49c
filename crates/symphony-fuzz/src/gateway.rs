//! The gateway's request handling, without the network: header parsing and signature
//! verification (`symphony_deploy::auth::verify`), the replay cache and the rate
//! limiter, the JSON body → [`TaskSubmission`] parser
//! (`symphony_deploy::gateway::parse_submission`) and the attempt signatures
//! (`symphony_deploy::gateway::verify_attempts`).
//!
//! An input picks, with `arbitrary`, a method, a path, a caller, a body (a validly
//! signed submission for one of the example specs, the same with a JSON-level edit or
//! a byte-level edit, or raw bytes) and, for each authentication header, the valid
//! value, none, a near miss (the next nonce, a timestamp just outside the window, the
//! signature over another body) or arbitrary text. Besides never panicking, the
//! harness checks what must hold for any request:
//!
//! - **no forgery**: headers that verify are exactly the ones the harness signed, for
//!   exactly this method, path and body;
//! - **no replay**: the nonce cache refuses the same `(caller, nonce)` a second time;
//! - **no forged attempt**: attempt signatures that verify were signed by the harness
//!   for the request hash the parsed spec has now;
//! - **the replicated log keeps what was accepted**: an accepted submission survives the
//!   BCS encoding of the log and the JSON it is served back as, with the same request
//!   hashes (what the attempt signatures cover).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use ed25519_dalek::{SigningKey, VerifyingKey};
use symphony_deploy::auth::{self, NonceCache, RateLimiter};
use symphony_deploy::client::sign_submission;
use symphony_deploy::gateway::{parse_submission, verify_attempts};
use symphony_deploy::master::attempt_nonce;
use symphony_deploy::state::TaskSubmission;
use symphony_node::task::TaskSpec;

use crate::Outcome;

/// The gateway's clock in the harness, ms.
pub const NOW_MS: u64 = 1_795_219_200_000;
/// The request window, ms.
pub const WINDOW_MS: u64 = 30_000;
/// The route a submission is posted to.
pub const SUBMIT_PATH: &str = "/v1/tasks";

/// Registered callers: `(actor id, signing key seed)`; each signs the example spec
/// whose submitter it is.
const CALLERS: [(&str, [u8; 32]); 3] = [
    ("advertiser:luckin", [7; 32]),
    ("analyst:luckin-insights", [8; 32]),
    ("model-operator:luckin-growth", [9; 32]),
];

/// The example specs (query, compute, train), as `symphony task submit` reads them.
const SPECS: [&str; 3] = [
    include_str!("../../../examples/luckin.toml"),
    include_str!("../../../examples/compute.toml"),
    include_str!("../../../examples/train.toml"),
];

/// A signed example submission.
struct Template {
    caller: usize,
    spec: TaskSpec,
    nonce: u64,
    json: Vec<u8>,
}

struct Fixture {
    keys: Vec<SigningKey>,
    callers: BTreeMap<String, VerifyingKey>,
    templates: Vec<Template>,
}

fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&CALLERS[i % CALLERS.len()].1)
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys: Vec<SigningKey> = (0..CALLERS.len()).map(key).collect();
        let callers = CALLERS
            .iter()
            .zip(&keys)
            .map(|((name, _), k)| ((*name).to_owned(), k.verifying_key()))
            .collect();
        let mut templates = Vec::new();
        for (i, text) in SPECS.iter().enumerate() {
            let Ok(spec) = TaskSpec::from_toml(text) else {
                continue;
            };
            let Some(caller) = CALLERS.iter().position(|(c, _)| *c == spec.submitter()) else {
                continue;
            };
            let nonce = 1_000 + i as u64;
            let signed = sign_submission(spec.clone(), nonce, &keys[caller]).ok();
            if let Some(json) = signed.and_then(|s| serde_json::to_vec(&s).ok()) {
                templates.push(Template {
                    caller,
                    spec,
                    nonce,
                    json,
                });
            }
        }
        Fixture {
            keys,
            callers,
            templates,
        }
    })
}

/// The signed example submissions (JSON bodies), for the corpus and the tests.
pub fn example_bodies() -> Vec<Vec<u8>> {
    fixture().templates.iter().map(|t| t.json.clone()).collect()
}

/// How one authentication header is sent.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderChoice {
    Valid,
    Missing,
    NearMiss,
    Text,
}

/// How the body is built.
#[derive(Arbitrary, Debug)]
enum BodyChoice {
    /// A template as signed.
    Template(u8),
    /// A template with one JSON-level edit.
    Edited(u8, JsonEdit),
    /// A template with byte-level edits.
    Bytes(u8, Vec<(u16, u8)>),
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// One edit of a submission's JSON value.
#[derive(Arbitrary, Debug)]
enum JsonEdit {
    /// Remove a field (by index among the object's keys, at a depth).
    Remove(u8, u8),
    /// Replace a field's value.
    Replace(u8, u8, Scalar),
    /// Add a field.
    Add(u8, String, Scalar),
    /// Drop, duplicate or garble attempt signatures.
    Attempts(u8),
    /// Change the nonce.
    Nonce(u64),
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Array(Vec<u8>),
    Object,
}

impl Scalar {
    fn value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::Uint(u) => Value::from(*u),
            Scalar::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Array(a) => Value::Array(a.iter().map(|b| Value::from(*b)).collect()),
            Scalar::Object => Value::Object(serde_json::Map::new()),
        }
    }
}

/// The object `depth` levels down the first object-valued fields of `v`.
fn object_at(
    v: &mut serde_json::Value,
    depth: u8,
) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
    let mut cur = v;
    for _ in 0..depth % 4 {
        let obj = cur.as_object_mut()?;
        let next = obj.values_mut().find(|x| x.is_object())?;
        cur = next;
    }
    cur.as_object_mut()
}

fn edit_json(body: &[u8], edit: &JsonEdit) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    match edit {
        JsonEdit::Remove(depth, i) => {
            if let Some(o) = object_at(&mut v, *depth) {
                if let Some(k) = o.keys().nth(usize::from(*i) % o.len().max(1)).cloned() {
                    o.remove(&k);
                }
            }
        }
        JsonEdit::Replace(depth, i, s) => {
            if let Some(o) = object_at(&mut v, *depth) {
                if let Some(k) = o.keys().nth(usize::from(*i) % o.len().max(1)).cloned() {
                    o.insert(k, s.value());
                }
            }
        }
        JsonEdit::Add(depth, k, s) => {
            if let Some(o) = object_at(&mut v, *depth) {
                o.insert(k.clone(), s.value());
            }
        }
        JsonEdit::Attempts(how) => {
            if let Some(a) = v
                .get_mut("attempt_signatures")
                .and_then(|a| a.as_array_mut())
            {
                match how % 4 {
                    0 => a.clear(),
                    1 => {
                        let more = a.clone();
                        a.extend(more);
                    }
                    2 => a.truncate(1),
                    _ => {
                        if let Some(first) = a.first_mut() {
                            *first = serde_json::Value::String("00".repeat(64));
                        }
                    }
                }
            }
        }
        JsonEdit::Nonce(n) => {
            if let Some(o) = v.as_object_mut() {
                o.insert("nonce".into(), serde_json::Value::from(*n));
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The request the harness built, and what it signed.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    headers: BTreeMap<&'static str, String>,
    /// `(caller, nonce, ts_ms)` the valid headers carry, signed over this method, path
    /// and body when the signature header is valid.
    signed: (String, u64, u64),
    signature: HeaderChoice,
    /// The template the body came from, unedited or edited.
    template: Option<usize>,
}

fn choose_str(u: &mut Unstructured<'_>, fixed: &[&str]) -> arbitrary::Result<String> {
    let i = u.choose_index(fixed.len() + 1)?;
    Ok(match fixed.get(i) {
        Some(s) => (*s).to_owned(),
        None => String::arbitrary(u)?,
    })
}

fn build(u: &mut Unstructured<'_>) -> arbitrary::Result<Request> {
    let f = fixture();
    let method = choose_str(u, &["POST", "GET", "post"])?;
    let path = choose_str(u, &[SUBMIT_PATH, "/v1/tasks/", "/v1/tasks/req-1"])?;
    let n = f.templates.len().max(1);
    let (body, template) = match BodyChoice::arbitrary(u)? {
        BodyChoice::Template(i) => {
            let t = usize::from(i) % n;
            (
                f.templates
                    .get(t)
                    .map(|t| t.json.clone())
                    .unwrap_or_default(),
                Some(t),
            )
        }
        BodyChoice::Edited(i, e) => {
            let t = usize::from(i) % n;
            let json = f
                .templates
                .get(t)
                .map(|t| t.json.clone())
                .unwrap_or_default();
            (edit_json(&json, &e), Some(t))
        }
        BodyChoice::Bytes(i, edits) => {
            let t = usize::from(i) % n;
            let mut json = f
                .templates
                .get(t)
                .map(|t| t.json.clone())
                .unwrap_or_default();
            for (pos, byte) in edits {
                if json.is_empty() {
                    break;
                }
                let at = usize::from(pos) % json.len();
                match byte % 3 {
                    0 => json[at] ^= byte | 1,
                    1 => json.insert(at, byte),
                    _ => json.truncate(at),
                }
            }
            (json, Some(t))
        }
        BodyChoice::Raw(bytes) => (bytes, None),
    };
    // The caller: the template's submitter (usually), another registered caller, or
    // someone unknown.
    let caller = match (u.int_in_range(0u8..=3)?, template) {
        (0, _) | (_, None) => u.choose_index(CALLERS.len())?,
        (_, Some(t)) => f.templates.get(t).map_or(0, |t| t.caller),
    };
    let nonce = match template.and_then(|t| f.templates.get(t)) {
        Some(t) if u.ratio(3, 4)? => t.nonce,
        _ => u64::arbitrary(u)?,
    };
    // Inside the window; a header's near miss steps outside it.
    let ts_ms = NOW_MS.wrapping_add_signed(u.int_in_range(-30_000i64..=30_000)?);
    let name = CALLERS[caller].0.to_owned();
    let target = auth::RequestTarget {
        method: &method,
        host: FUZZ_HOST,
        path: &path,
    };
    let valid = auth::sign_headers(&f.keys[caller], &name, target, &body, nonce, ts_ms);
    let mut headers = BTreeMap::new();
    let mut signature = HeaderChoice::Valid;
    for (header, value) in valid {
        let choice = HeaderChoice::arbitrary(u)?;
        let sent = match choice {
            HeaderChoice::Valid => Some(value),
            HeaderChoice::Missing => None,
            HeaderChoice::Text => Some(String::arbitrary(u)?),
            HeaderChoice::NearMiss => Some(match header {
                auth::HEADER_CALLER => CALLERS[(caller + 1) % CALLERS.len()].0.to_owned(),
                auth::HEADER_NONCE => nonce.wrapping_add(1).to_string(),
                auth::HEADER_TIMESTAMP => (NOW_MS + WINDOW_MS + 1).to_string(),
                _ => {
                    let other =
                        auth::sign_headers(&f.keys[caller], &name, target, b"{}", nonce, ts_ms);
                    other
                        .into_iter()
                        .find(|(h, _)| *h == auth::HEADER_SIGNATURE)
                        .map(|(_, v)| v)
                        .unwrap_or_default()
                }
            }),
        };
        if header == auth::HEADER_SIGNATURE {
            signature = choice;
        }
        if let Some(v) = sent {
            headers.insert(header, v);
        }
    }
    Ok(Request {
        method,
        path,
        body,
        headers,
        signed: (name, nonce, ts_ms),
        signature,
        template,
    })
}

/// The gateway host the harness's requests are addressed to (signed with them).
const FUZZ_HOST: &str = "127.0.0.1:8443";

/// Authentication, replay and rate checks, as the gateway runs them.
fn authenticate(r: &Request) -> Result<auth::Authenticated, String> {
    let f = fixture();
    let header = |name: &'static str| r.headers.get(name).cloned();
    let target = auth::RequestTarget {
        method: &r.method,
        host: FUZZ_HOST,
        path: &r.path,
    };
    let a = auth::verify(&f.callers, header, target, &r.body, NOW_MS, WINDOW_MS)
        .map_err(|e| e.to_string())?;
    // No forgery: what verified is what the harness signed.
    let (caller, nonce, ts_ms) = &r.signed;
    assert!(
        r.signature == HeaderChoice::Valid
            && &a.caller == caller
            && a.nonce == *nonce
            && a.ts_ms == *ts_ms,
        "forged request accepted: {a:?}, signed {:?}",
        r.signed
    );
    let mut nonces = NonceCache::default();
    assert!(nonces.check_and_insert(&a.caller, a.nonce, NOW_MS, WINDOW_MS));
    assert!(
        !nonces.check_and_insert(&a.caller, a.nonce, NOW_MS + 1, WINDOW_MS),
        "a replayed nonce was accepted"
    );
    let mut limiter = RateLimiter::new(5, 2);
    assert!(limiter.allow(&a.caller, a.ts_ms));
    Ok(a)
}

/// The attempt signatures, and what an accepted submission must keep.
fn check_attempts(r: &Request, s: &TaskSubmission) -> Result<(), String> {
    let f = fixture();
    let Some(t) = r.template.and_then(|t| f.templates.get(t)) else {
        return Err("raw body: no signer to check attempts against".into());
    };
    let key = f.keys[t.caller].verifying_key();
    if let Err(response) = verify_attempts(&key, CALLERS[t.caller].0, s) {
        return Err(format!("attempt signatures refused: {}", response.status()));
    }
    // No forged attempt: each verified attempt is one the harness signed.
    for i in 0..s.attempt_signatures.len() {
        let now = s.spec.request_hash(attempt_nonce(s.nonce, i)).ok();
        let signed = (0..4)
            .map(|j| t.spec.request_hash(attempt_nonce(t.nonce, j)).ok())
            .collect::<Vec<_>>();
        assert!(
            now.is_some() && signed.contains(&now),
            "attempt {i} verified for a request hash the caller never signed"
        );
    }
    // The replicated log (BCS) and the JSON view keep the submission and its hashes.
    let bytes = bcs::to_bytes(s).map_err(|e| format!("harness: bcs: {e}"))?;
    let back: TaskSubmission =
        bcs::from_bytes(&bytes).map_err(|e| format!("harness: bcs decode: {e}"))?;
    assert_eq!(
        &back, s,
        "the log's encoding changed an accepted submission"
    );
    let json = serde_json::to_vec(s).map_err(|e| format!("harness: json: {e}"))?;
    let again = parse_submission(&json).map_err(|e| format!("harness: json again: {e}"))?;
    for i in 0..s.attempt_signatures.len() {
        let n = attempt_nonce(s.nonce, i);
        assert_eq!(
            again.spec.request_hash(n).ok(),
            s.spec.request_hash(n).ok(),
            "the JSON view changed the signed request hash"
        );
    }
    Ok(())
}

/// The gateway harness: builds one request from `data` and runs it through the
/// gateway's checks. Accepted only if authentication, parsing and the attempt
/// signatures all pass; otherwise the first refusal. Each stage also runs when an
/// earlier one refused (they are independent pure functions), so that parsing is
/// fuzzed without valid headers.
pub fn gateway_request(data: &[u8]) -> Outcome {
    let mut u = Unstructured::new(data);
    let Ok(r) = build(&mut u) else {
        return Outcome::Refused("harness: input too short".into());
    };
    let auth = authenticate(&r);
    let parsed = parse_submission(&r.body);
    let attempts = match &parsed {
        Ok(s) => check_attempts(&r, s),
        Err(_) => Ok(()),
    };
    match (auth, parsed, attempts) {
        (Err(e), _, _) => Outcome::Refused(e),
        (_, Err(e), _) => Outcome::Refused(e),
        (_, _, Err(e)) => Outcome::Refused(e),
        (Ok(_), Ok(_), Ok(())) => Outcome::Accepted,
    }
}
