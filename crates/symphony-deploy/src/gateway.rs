//! The public API gateway of a master: HTTPS (rustls) + HTTP/1.1 (hyper, axum
//! routing), JSON bodies.
//!
//! Every `/v1/tasks` route is authenticated ([`crate::auth`]): the caller's ed25519
//! signature over `(method, path, SHA-256(body), nonce, timestamp)`, timestamps inside
//! `request_window_ms`, nonces never reused, a token bucket per caller, a body limit.
//! Every refusal is a 4xx with a JSON `{"error": ...}` saying what was wrong, and
//! happens before anything is replicated, so the cluster state is unchanged.
//! A submission arriving while the cluster already holds `max_pending_requests`
//! requests acknowledged and not yet final is refused with `503` (queue full), also
//! before anything is proposed. The count is read from this master's applied state,
//! so concurrent submissions arriving at once may overshoot the bound by at most the
//! number in flight.
//! The governance routes (`/v1/epoch`, `/v1/governance/proposals`,
//! `/v1/governance/votes`) are in `gov_routes`: the same checks, callers or
//! masters as signers.
//! Submissions are replicated through consensus (any master accepts them; a
//! follower forwards to the leader inside `symphony-consensus`); reads are served
//! from this master's applied state.

// Handlers return finished `Response`s as their error path (a refusal is a response).
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use symphony_consensus::ConsensusError;
use symphony_core::ids::TaskId;
use symphony_ledger::EscrowId;
use symphony_node::task::{TaskOutcome, TaskSpec};
use tokio::net::TcpListener;

use crate::auth::{self, AuthError, NonceCache, RateLimiter};
use crate::config::{parse_public_key, MasterConfig};
use crate::master::{attempt_nonce, now_ms};
use crate::replicator::Cluster;
use crate::state::{
    request_id, DeployCommand, DeployResponse, RequestRecord, TaskSubmission, MAX_ATTEMPTS,
};
use crate::tls::TlsMaterial;
use crate::DeployError;

mod gov_routes;

struct AppState {
    cluster: Cluster,
    node_id: u64,
    callers: BTreeMap<String, VerifyingKey>,
    /// The masters as gateway callers (`master-0`..`master-2`, governance index
    /// order), with their commit keys: they file proposals and votes.
    masters: BTreeMap<String, VerifyingKey>,
    /// Callers and masters: who may read the governance state.
    readers: BTreeMap<String, VerifyingKey>,
    window_ms: u64,
    body_limit: usize,
    max_pending: usize,
    nonces: Mutex<NonceCache>,
    limiter: Mutex<RateLimiter>,
    counters: Mutex<BTreeMap<(String, u16), u64>>,
}

/// The gateway of one master.
pub struct Gateway {
    router: Router,
    tls: Arc<rustls::ServerConfig>,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// What a gateway enforces: registered callers and the limits of `master.toml`
/// (see [`crate::config`]).
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// This master's id (shown in `/v1/cluster`).
    pub node_id: u64,
    /// Registered callers and their request-signing keys.
    pub callers: BTreeMap<String, VerifyingKey>,
    /// Accepted clock skew of signed requests.
    pub request_window_ms: u64,
    /// Largest request body.
    pub body_limit_bytes: usize,
    /// Requests per second per caller.
    pub rate_limit_per_s: u32,
    /// Burst per caller.
    pub rate_limit_burst: u32,
    /// Most requests acknowledged and not yet final before submissions get `503`.
    pub max_pending_requests: usize,
}

impl GatewaySettings {
    /// The settings of a master's configuration.
    pub fn from_config(config: &MasterConfig) -> Result<Self, DeployError> {
        let mut callers = BTreeMap::new();
        for (i, c) in config.callers.iter().enumerate() {
            callers.insert(
                c.actor.clone(),
                parse_public_key(&format!("callers[{i}].public_key"), &c.public_key)?,
            );
        }
        Ok(Self {
            node_id: config.node_id,
            callers,
            request_window_ms: config.request_window_ms,
            body_limit_bytes: config.body_limit_bytes,
            rate_limit_per_s: config.rate_limit_per_s,
            rate_limit_burst: config.rate_limit_burst,
            max_pending_requests: config.max_pending_requests,
        })
    }
}

impl Gateway {
    /// Builds the router and TLS configuration from the master's configuration.
    pub fn new(config: &MasterConfig, cluster: Cluster) -> Result<Self, DeployError> {
        let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        Ok(Self::with_settings(
            GatewaySettings::from_config(config)?,
            cluster,
            tls.public_server()?,
        ))
    }

    /// A gateway over `cluster` with explicit settings and server TLS (in-process
    /// clusters: benchmark, tests).
    pub fn with_settings(
        settings: GatewaySettings,
        cluster: Cluster,
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        let body_limit = settings.body_limit_bytes;
        let masters: BTreeMap<String, VerifyingKey> = cluster
            .keys()
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                Some((crate::governance::master_caller(u8::try_from(i).ok()?), *k))
            })
            .collect();
        let mut readers = settings.callers.clone();
        readers.extend(masters.clone());
        let state = Arc::new(AppState {
            cluster,
            node_id: settings.node_id,
            callers: settings.callers,
            masters,
            readers,
            window_ms: settings.request_window_ms,
            body_limit,
            max_pending: settings.max_pending_requests,
            nonces: Mutex::new(NonceCache::default()),
            limiter: Mutex::new(RateLimiter::new(
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
            )),
            counters: Mutex::new(BTreeMap::new()),
        });
        let router = Router::new()
            .route("/v1/tasks", post(submit).get(list_tasks))
            .route("/v1/tasks/{id}", get(status))
            .route("/v1/tasks/{id}/result", get(result))
            .route("/v1/tasks/{id}/evidence", get(evidence))
            .route("/v1/epoch", get(gov_routes::epoch))
            .route(
                "/v1/governance/proposals",
                get(gov_routes::proposals).post(gov_routes::propose),
            )
            .route("/v1/governance/votes", post(gov_routes::vote))
            .route("/v1/cluster", get(cluster_view))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /openapi.json") })
            .layer(DefaultBodyLimit::max(body_limit))
            .with_state(state);
        Self { router, tls }
    }

    /// Serves HTTPS on `listener` until the future is dropped.
    pub async fn serve(self, listener: TcpListener) -> Result<(), DeployError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(self.router.clone());
            tokio::spawn(async move {
                let stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

impl AppState {
    fn count(&self, route: &str, status: StatusCode) {
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *c.entry((route.to_owned(), status.as_u16())).or_default() += 1;
    }

    /// Authentication, replay and rate checks of a registered caller; the error is
    /// the finished response.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<auth::Authenticated, Response> {
        self.authenticate_in(&self.callers, headers, method, path, body)
    }

    /// [`AppState::authenticate`] against the keys of `keys` (callers, masters).
    fn authenticate_in(
        &self,
        keys: &BTreeMap<String, VerifyingKey>,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<auth::Authenticated, Response> {
        let now = now_ms();
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let refused = |e: AuthError| {
            let status = match e {
                AuthError::Replayed { .. } => StatusCode::CONFLICT,
                AuthError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            tracing::info!(path, error = %e, "request refused");
            error(status, e)
        };
        let a = auth::verify(
            keys,
            header,
            method.as_str(),
            path,
            body,
            now,
            self.window_ms,
        )
        .map_err(refused)?;
        let fresh = self
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check_and_insert(&a.caller, a.nonce, now, self.window_ms);
        if !fresh {
            return Err(refused(AuthError::Replayed {
                caller: a.caller,
                nonce: a.nonce,
            }));
        }
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(&a.caller, now);
        if !allowed {
            return Err(refused(AuthError::RateLimited(a.caller)));
        }
        Ok(a)
    }

    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
        body.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body exceeds the limit of {} bytes",
                        self.body_limit
                    ),
                )
            } else {
                error(r.status(), r.body_text())
            }
        })
    }

    /// The caller's own request, or the response refusing it.
    fn own_request(&self, id: &str, caller: &str) -> Result<RequestRecord, Response> {
        let record = self
            .cluster
            .with_state(|s| s.request(id).cloned())
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no task request {id:?}")))?;
        if record.caller != caller {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!("task request {id} belongs to another caller"),
            ));
        }
        Ok(record)
    }
}

/// Parses a submission body; the error names the field that is wrong (for the
/// spec: `spec.<class>: <serde's message naming the field>`). Public for the fuzz
/// harness (`symphony-fuzz`).
pub fn parse_submission(body: &[u8]) -> Result<TaskSubmission, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    let Some(spec) = value.get("spec") else {
        return Err(
            "missing field `spec` (an object with one key: query, compute or train)".into(),
        );
    };
    let class = match spec.as_object() {
        Some(o) if o.len() == 1 => o.keys().next().cloned().unwrap_or_default(),
        _ => {
            return Err(
                "spec: expected an object with exactly one key naming the task class \
                 (query, compute or train)"
                    .into(),
            )
        }
    };
    if !matches!(class.as_str(), "query" | "compute" | "train") {
        return Err(format!(
            "spec: unknown task class {class:?} (expected query, compute or train)"
        ));
    }
    if let Err(e) = serde_json::from_value::<TaskSpec>(spec.clone()) {
        return Err(format!("spec.{class}: {e}"));
    }
    serde_json::from_value(value).map_err(|e| format!("malformed JSON body: {e}"))
}

/// The class tag of an outcome and the outcome's own JSON.
fn outcome_json(o: &TaskOutcome) -> (&'static str, Value) {
    let v = match o {
        TaskOutcome::Query(x) => serde_json::to_value(x),
        TaskOutcome::Compute(x) => serde_json::to_value(x),
        TaskOutcome::Train(x) => serde_json::to_value(x),
    };
    let class = match o {
        TaskOutcome::Query(_) => "query",
        TaskOutcome::Compute(_) => "compute",
        TaskOutcome::Train(_) => "train",
    };
    (class, v.unwrap_or(Value::Null))
}

fn class_of(spec: &TaskSpec) -> &'static str {
    match spec {
        TaskSpec::Query(_) => "query",
        TaskSpec::Compute(_) => "compute",
        TaskSpec::Train(_) => "train",
    }
}

fn check_submission(
    state: &AppState,
    caller: &str,
    header_nonce: u64,
    s: &TaskSubmission,
) -> Result<(), Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let submitter_field = match &s.spec {
        TaskSpec::Query(_) => "spec.query.advertiser",
        TaskSpec::Compute(_) => "spec.compute.submitter",
        TaskSpec::Train(_) => "spec.train.model_operator",
    };
    if s.spec.submitter() != caller {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "{submitter_field} {:?} is not the caller {caller:?}",
                s.spec.submitter()
            ),
        ));
    }
    if let TaskSpec::Train(t) = &s.spec {
        t.validate().map_err(|e| bad(format!("spec.train: {e}")))?;
    }
    if s.nonce != header_nonce {
        return Err(bad(format!(
            "nonce {} differs from the x-scp-nonce header",
            s.nonce
        )));
    }
    if s.nonce >= 1 << 62 {
        return Err(bad("nonce must be below 2^62".into()));
    }
    if s.attempt_signatures.is_empty() || s.attempt_signatures.len() > MAX_ATTEMPTS {
        return Err(bad(format!(
            "attempt_signatures must hold 1 to {MAX_ATTEMPTS} signatures"
        )));
    }
    let key = state.callers.get(caller).ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            format!("unknown caller {caller:?}"),
        )
    })?;
    verify_attempts(key, caller, s)
}

/// Checks every attempt signature of `s` against the caller's key. Public for the
/// fuzz harness (`symphony-fuzz`).
pub fn verify_attempts(
    key: &VerifyingKey,
    caller: &str,
    s: &TaskSubmission,
) -> Result<(), Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    // One batch verification for all attempts (same key, one message per attempt
    // nonce): about half the cost of verifying them one by one. On failure, the
    // signatures are checked one by one to name the first bad one.
    let mut hashes = Vec::with_capacity(s.attempt_signatures.len());
    let mut signatures = Vec::with_capacity(s.attempt_signatures.len());
    for (i, sig_hex) in s.attempt_signatures.iter().enumerate() {
        let hash = s
            .spec
            .request_hash(attempt_nonce(s.nonce, i))
            .map_err(|e| bad(e.to_string()))?;
        let sig = hex::decode(sig_hex)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| {
                bad(format!(
                    "attempt_signatures[{i}] is not a hex-encoded 64-byte ed25519 signature"
                ))
            })?;
        hashes.push(hash);
        signatures.push(sig);
    }
    let messages: Vec<&[u8]> = hashes.iter().map(|h| &h.0[..]).collect();
    let keys = vec![*key; signatures.len()];
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
        let i = messages
            .iter()
            .zip(&signatures)
            .position(|(m, sig)| key.verify(m, sig).is_err())
            .unwrap_or(0);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            format!("attempt_signatures[{i}] does not verify for {caller:?}"),
        ));
    }
    Ok(())
}

async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = submit_inner(&state, &headers, body).await;
    state.count("submit", response.status());
    response
}

async fn submit_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match state.body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let a = match state.authenticate(headers, &Method::POST, "/v1/tasks", &body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let submission = match parse_submission(&body) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(r) = check_submission(state, &a.caller, a.nonce, &submission) {
        return r;
    }
    let pending = state.cluster.with_state(|s| s.pending_count());
    if pending >= state.max_pending {
        tracing::info!(caller = %a.caller, pending, "submission refused: request queue full");
        return queue_full(pending, state.max_pending);
    }
    let id = request_id(&a.caller, submission.nonce);
    let command = DeployCommand::Submit {
        request_id: id.clone(),
        caller: a.caller.clone(),
        submission,
        received_at_ms: a.ts_ms,
    };
    match state.cluster.write(&command).await {
        Ok((DeployResponse::Queue(Ok(seq)), cert)) => {
            tracing::info!(request = %id, caller = %a.caller, seq, log_index = cert.log_index, "task acknowledged");
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "request_id": id,
                    "status": "queued",
                    "seq": seq,
                    "log_index": cert.log_index,
                    "certificate_signatures": cert.signatures.len(),
                })),
            )
                .into_response()
        }
        Ok((DeployResponse::Queue(Err(e)), _)) => error(StatusCode::CONFLICT, e),
        Ok((other, _)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}")),
        Err(DeployError::Consensus(ConsensusError::Unavailable { .. })) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no quorum: fewer than 2 of 3 masters are reachable, so nothing can be admitted; \
             the outcome of this request is unknown; retry with the same nonce later \
             (a duplicate is refused with 409)",
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not admitted: {e}"),
        ),
    }
}

/// The refusal of a submission while the request queue is full.
fn queue_full(pending: usize, max_pending: usize) -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "request queue full: {pending} task requests are acknowledged and not yet final \
             (max_pending_requests = {max_pending}); nothing was admitted; retry later \
             with a new nonce"
        ),
    );
    response
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    response
}

fn status_view(state: &AppState, r: &RequestRecord, id: &str) -> Value {
    let task = r.attempts.last().cloned();
    let (lifecycle, reason, enclave_kinds) = task
        .as_ref()
        .and_then(|t| TaskId::new(t.clone()).ok())
        .and_then(|t| {
            state.cluster.with_state(|s| {
                // What produced each piece of evidence, from the replicated records
                // (a train run's are in its composite record).
                let kinds = match s.master().composite(&t) {
                    Some(c) => c.enclave_kinds(),
                    None => s
                        .master()
                        .task(&t)
                        .map(|rec| rec.enclave_kinds())
                        .unwrap_or_default(),
                };
                s.master().task(&t).map(|rec| {
                    (
                        rec.history
                            .iter()
                            .map(|h| h.to_string())
                            .collect::<Vec<_>>(),
                        rec.reason.clone(),
                        kinds,
                    )
                })
            })
        })
        .unwrap_or_default();
    // What the request cost the caller so far, over every attempt's escrow (an
    // attempt refused at admission locked none).
    let (fee_charged, escrow_locked) = state.cluster.with_state(|s| {
        let ledger = s.ledger().state();
        r.attempts
            .iter()
            .filter_map(|t| EscrowId::new(format!("escrow-{t}")).ok())
            .filter_map(|e| ledger.escrows.get(&e))
            .fold((0u64, 0u64), |(paid, locked), e| {
                (
                    paid.saturating_add(e.paid_out),
                    locked.saturating_add(e.remaining()),
                )
            })
    });
    json!({
        "request_id": id,
        "task_class": class_of(&r.submission.spec),
        "status": r.status,
        "fee_charged_micro_sym": fee_charged,
        "escrow_locked_micro_sym": escrow_locked,
        "seq": r.seq,
        "attempts": r.attempts.len(),
        "attempt_task_ids": r.attempts,
        "task_id": task,
        "lifecycle": lifecycle,
        "enclave_kinds": enclave_kinds,
        // A train run that failed composite verification stays `verifying` in the
        // lifecycle: its reason is in the outcome.
        "reason": reason.or_else(|| r.outcome.as_ref().and_then(|o| match o {
            TaskOutcome::Query(x) => x.reason.clone(),
            TaskOutcome::Compute(x) => x.reason.clone(),
            TaskOutcome::Train(x) => x.reason.clone(),
        })),
        "error": r.error,
    })
}

macro_rules! authed {
    ($state:expr, $headers:expr, $path:expr) => {
        match $state.authenticate(&$headers, &Method::GET, &$path, b"") {
            Ok(a) => a,
            Err(r) => return r,
        }
    };
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let a = authed!(state, headers, format!("/v1/tasks/{id}"));
    let response = match state.own_request(&id, &a.caller) {
        Ok(r) => Json(status_view(&state, &r, &id)).into_response(),
        Err(r) => r,
    };
    state.count("status", response.status());
    response
}

/// Most requests one listing returns (the newest).
const LIST_LIMIT: usize = 1_000;

/// The caller's own task requests, newest first (at most [`LIST_LIMIT`]).
async fn list_tasks(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let a = authed!(state, headers, "/v1/tasks");
    let (total, requests) = state.cluster.with_state(|s| {
        let mine: Vec<Value> = s
            .requests_by_id()
            .filter(|(_, r)| r.caller == a.caller)
            .map(|(id, r)| {
                json!({
                    "request_id": id,
                    "task_class": class_of(&r.submission.spec),
                    "status": r.status,
                    "seq": r.seq,
                    "received_at_ms": r.received_at_ms,
                    "attempts": r.attempts.len(),
                    "task_id": r.attempts.last(),
                })
            })
            .collect();
        let total = mine.len();
        (
            total,
            mine.into_iter().rev().take(LIST_LIMIT).collect::<Vec<_>>(),
        )
    });
    let response = Json(json!({
        "caller": a.caller,
        "total": total,
        "requests": requests,
    }))
    .into_response();
    state.count("list", response.status());
    response
}

async fn result(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let a = authed!(state, headers, format!("/v1/tasks/{id}/result"));
    let response = match state.own_request(&id, &a.caller) {
        Err(r) => r,
        Ok(r) if !r.status.is_final() => error(
            StatusCode::CONFLICT,
            format!(
                "task request {id} is {:?}; the result is available after completion",
                r.status
            ),
        ),
        Ok(r) => {
            let outcome = r.outcome.as_ref().map(outcome_json);
            // A trained model is served from the replicated state (any master).
            let artifacts = r.attempts.last().and_then(|t| {
                state.cluster.with_state(|s| {
                    s.artifacts(t).map(|a| {
                        json!({
                            "model.safetensors": {"encoding": "hex", "sha256": hex::encode(sha256(&a.model)), "data": hex::encode(&a.model)},
                            "model_card.json": serde_json::from_slice::<Value>(&a.card).unwrap_or(Value::Null),
                        })
                    })
                })
            });
            Json(json!({
                "request_id": id,
                "task_class": class_of(&r.submission.spec),
                "status": r.status,
                "error": r.error,
                "outcome": outcome.map(|(_, v)| v),
                "artifacts": artifacts,
            }))
            .into_response()
        }
    };
    state.count("result", response.status());
    response
}

async fn evidence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let a = authed!(state, headers, format!("/v1/tasks/{id}/evidence"));
    let r = match state.own_request(&id, &a.caller) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let record = r
        .attempts
        .last()
        .and_then(|t| TaskId::new(t.clone()).ok())
        .and_then(|t| state.cluster.with_state(|s| s.master().task(&t).cloned()));
    let collector = state.cluster.node.collector();
    let certificate = collector
        .final_index()
        .and_then(|i| collector.certificate(i))
        .map(|c| {
            json!({
                "cluster_id": c.cluster_id,
                "log_index": c.log_index,
                "state_root": hex::encode(c.state_root),
                "signatures": c.signatures.iter()
                    .map(|(k, s)| (k.to_string(), hex::encode(s.to_bytes())))
                    .collect::<BTreeMap<_, _>>(),
            })
        });
    let response = Json(json!({
        "request_id": id,
        "status": r.status,
        "task": record,
        "attestations_verified": r.outcome.as_ref().map(|o| match o {
            TaskOutcome::Query(x) => x.attestations_verified,
            TaskOutcome::Compute(x) => x.attestations_verified,
            TaskOutcome::Train(x) => x.attestations_verified,
        }),
        "final_certificate": certificate,
        "equivocation_evidence": collector.evidence().len(),
    }))
    .into_response();
    state.count("evidence", response.status());
    response
}

/// The cluster view served at `/v1/cluster` (unauthenticated, no task data).
fn cluster_json(state: &AppState) -> Value {
    let m = state.cluster.node.metrics();
    let (applied, root) = state.cluster.node.state_root();
    let (total, final_count, escrows, paid, remaining, deliveries) =
        state.cluster.with_state(|s| {
            let deliveries = s
                .master()
                .audit_log()
                .iter()
                .filter(|e| e.kind == "result_delivered")
                .count();
            let total = s.requests().count();
            let done = s.requests().filter(|r| r.status.is_final()).count();
            let ledger = s.ledger().state();
            let paid = ledger
                .escrows
                .values()
                .filter(|e| e.payout_id.is_some())
                .count();
            let remaining: u64 = ledger.escrows.values().map(|e| e.remaining()).sum();
            (
                total,
                done,
                ledger.escrows.len(),
                paid,
                remaining,
                deliveries,
            )
        });
    json!({
        "node_id": state.node_id,
        "leader": m.leader,
        "is_leader": m.is_leader,
        "term": m.term,
        "last_applied_index": applied,
        "final_index": m.final_index,
        "state_root": hex::encode(root),
        "requests_total": total,
        "requests_final": final_count,
        "escrows": escrows,
        "escrows_paid_out": paid,
        "escrow_remaining_micro_sym": remaining,
        "deliveries_recorded": deliveries,
    })
}

async fn cluster_view(State(state): State<Arc<AppState>>) -> Response {
    Json(cluster_json(&state)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write as _;
    let m = state.cluster.node.metrics();
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE symphony_gateway_requests_total counter");
    for ((route, code), n) in state
        .counters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let _ = writeln!(
            out,
            "symphony_gateway_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# TYPE symphony_raft_term gauge\nsymphony_raft_term {}",
        m.term
    );
    let _ = writeln!(
        out,
        "# TYPE symphony_raft_is_leader gauge\nsymphony_raft_is_leader {}",
        u8::from(m.is_leader)
    );
    let _ = writeln!(
        out,
        "# TYPE symphony_raft_last_applied_index gauge\nsymphony_raft_last_applied_index {}",
        m.last_applied_index.unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "# TYPE symphony_final_index gauge\nsymphony_final_index {}",
        m.final_index.unwrap_or(0)
    );
    let (queued, running, completed, rejected) = state.cluster.with_state(|s| {
        let mut c = (0u64, 0u64, 0u64, 0u64);
        for r in s.requests() {
            match r.status {
                crate::state::RequestStatus::Queued => c.0 += 1,
                crate::state::RequestStatus::Running => c.1 += 1,
                crate::state::RequestStatus::Completed => c.2 += 1,
                crate::state::RequestStatus::Rejected => c.3 += 1,
            }
        }
        c
    });
    let _ = writeln!(out, "# TYPE symphony_task_requests gauge");
    for (s, n) in [
        ("queued", queued),
        ("running", running),
        ("completed", completed),
        ("rejected", rejected),
    ] {
        let _ = writeln!(out, "symphony_task_requests{{status=\"{s}\"}} {n}");
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// The OpenAPI 3.1 description of the gateway.
pub fn openapi_document() -> Value {
    let auth_params = json!([
        {"name": "x-scp-caller", "in": "header", "required": true, "schema": {"type": "string"}},
        {"name": "x-scp-nonce", "in": "header", "required": true, "schema": {"type": "integer"}},
        {"name": "x-scp-timestamp", "in": "header", "required": true, "schema": {"type": "integer"}, "description": "ms since the Unix epoch"},
        {"name": "x-scp-signature", "in": "header", "required": true, "schema": {"type": "string"},
         "description": "hex ed25519 over SHA-256('scp/gateway-request/v1\\n' | len|method | len|path | SHA-256(body) | nonce | timestamp)"}
    ]);
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let errors = json!({
        "400": {"description": "malformed JSON or invalid field"},
        "401": {"description": "unknown caller, bad signature, stale timestamp, missing header"},
        "403": {"description": "not the submitter"},
        "404": {"description": "unknown request"},
        "409": {"description": "replayed nonce, or result not ready"},
        "413": {"description": "body too large"},
        "429": {"description": "rate limit"},
        "503": {"description": "no quorum (fewer than 2 of 3 masters), or (POST /v1/tasks) request queue full: max_pending_requests requests acknowledged and not yet final; nothing admitted, retry later with a new nonce (Retry-After)"}
    });
    let with_params = |extra: Option<Value>| {
        let mut p = auth_params.as_array().cloned().unwrap_or_default();
        if let Some(x) = extra {
            p.push(x);
        }
        Value::Array(p)
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Symphony master API gateway", "version": "1"},
        "paths": {
            "/v1/tasks": {"post": {
                "summary": "Submit a task of any class (query, compute, train)",
                "parameters": with_params(None),
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskSubmission"}}}},
                "responses": merge(json!({"202": {"description": "acknowledged: replicated and final"}}), &errors)
            }},
            "/v1/tasks/{id}": {"get": {"summary": "Task status and lifecycle", "parameters": with_params(Some(id_param.clone())),
                "responses": merge(json!({"200": {"description": "status (queued, running, completed, rejected), attempts, lifecycle, reason or error (a task refused at admission: rejected, with the refusal in `error`), fee_charged_micro_sym and escrow_locked_micro_sym over its attempts"}}), &errors)}},
            "/v1/tasks/{id}/result": {"get": {"summary": "Settled result (submitter only, after completion)", "parameters": with_params(Some(id_param.clone())),
                "responses": merge(json!({"200": {"description": "outcome"}}), &errors)}},
            "/v1/tasks/{id}/evidence": {"get": {"summary": "Task record, attestations, commit certificate", "parameters": with_params(Some(id_param)),
                "responses": merge(json!({"200": {"description": "evidence"}}), &errors)}},
            "/v1/epoch": {"get": {"summary": "The Governance Service's epoch: epoch_id, policy_version, opened_at_ms, epoch_length_ms, tasks_in_epoch, max_tasks_per_epoch, ms_until_time_close, each close trigger (time, capacity, close_epoch proposals voting), a pending policy change, the epoch each Vault applied (budgets replenished) and the history of closed epochs (signed by any caller or master)",
                "parameters": with_params(None),
                "responses": merge(json!({"200": {"description": "epoch view"}}), &errors)}},
            "/v1/governance/proposals": {
                "get": {"summary": "Every proposal with its votes and status (voting, approved, rejected, enacted)", "parameters": with_params(None),
                    "responses": merge(json!({"200": {"description": "proposals"}}), &errors)},
                "post": {"summary": "A master files a proposal (close_epoch, policy_change, enterprise_membership); its signature counts as its approval. The HTTP caller must be the proposing master (x-scp-caller master-N, signed with its commit key)",
                    "parameters": with_params(None),
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProposalSubmission"}}}},
                    "responses": merge(json!({"200": {"description": "filed: proposal_id, status voting, events"}, "403": {"description": "the caller is not the master named by `by`, or not a master"}}), &errors)}
            },
            "/v1/governance/votes": {"post": {"summary": "A master votes on a proposal; the second approval (or rejection) decides, and an approved close_epoch closes the epoch at once (the leader then replenishes every Vault's budgets). The HTTP caller must be the voting master",
                "parameters": with_params(None),
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/VoteSubmission"}}}},
                "responses": merge(json!({"200": {"description": "recorded: status, decided, epoch_closed {closed, opened} when it closed the epoch, events"}, "403": {"description": "the caller is not the master named by `by`, or not a master"}}), &errors)}},
            "/v1/cluster": {"get": {"summary": "This master's Raft view and state root", "responses": {"200": {"description": "view"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}}
        },
        "components": {"schemas": {
            "TaskSubmission": {
                "type": "object",
                "required": ["spec", "nonce", "attempt_signatures"],
                "additionalProperties": false,
                "properties": {
                    "spec": {"$ref": "#/components/schemas/TaskSpec"},
                    "nonce": {"type": "integer", "maximum": 4611686018427387903u64},
                    "attempt_signatures": {"type": "array", "minItems": 1, "maxItems": MAX_ATTEMPTS, "items": {"type": "string"},
                        "description": "hex ed25519 over TaskSpec::request_hash(nonce*4+i) of the class (query: the SignedRequest hash of (spec, nonce); train: the training request message; compute: scp/compute-request/v1)"}
                }
            },
            "TaskSpec": {
                "description": "the task, tagged by class: an object with exactly one key",
                "oneOf": CLASSES.iter().map(|(class, _, _)| {
                    let mut properties = serde_json::Map::new();
                    properties.insert((*class).to_owned(), json!({"$ref": format!("#/components/schemas/{}", schema_name(class))}));
                    json!({"type": "object", "required": [class], "additionalProperties": false, "properties": properties})
                }).collect::<Vec<_>>()
            },
            "ProposalSubmission": {
                "type": "object",
                "required": ["kind", "by", "at_ms", "signature"],
                "additionalProperties": false,
                "properties": {
                    "kind": {"description": "what is proposed, externally tagged",
                        "oneOf": [
                            {"type": "string", "enum": ["close_epoch"]},
                            {"type": "object", "required": ["policy_change"], "additionalProperties": false, "properties": {"policy_change": {"type": "object",
                                "required": ["version", "params", "max_tasks_per_epoch"],
                                "properties": {"version": {"type": "integer", "description": "the active version + 1"},
                                               "params": {"type": "object", "description": "every PolicyParams field (the JSON of `symphony policy show`), validated; active from the epoch after approval"},
                                               "max_tasks_per_epoch": {"description": "integer > 0 or null: tasks admitted per epoch before it closes by capacity"}}}}},
                            {"type": "object", "required": ["enterprise_membership"], "additionalProperties": false, "properties": {"enterprise_membership": {"type": "object",
                                "required": ["vault", "operator", "stake_micro_sym"],
                                "properties": {"vault": {"type": "string"}, "operator": {"type": "string"}, "stake_micro_sym": {"type": "integer"}}}}}
                        ]},
                    "by": {"type": "integer", "minimum": 0, "maximum": 2, "description": "governance index of the proposing master (masters in node-id order)"},
                    "at_ms": {"type": "integer", "description": "when it was signed, ms since the Unix epoch; within request_window_ms of the gateway's clock"},
                    "signature": {"type": "string", "description": "hex ed25519 of master `by`'s commit key over symphony_master::proposal_message(kind, at_ms) = content_hash('scp/gov/propose/v1', (kind, at_ms))"}
                }
            },
            "VoteSubmission": {
                "type": "object",
                "required": ["proposal", "by", "approve", "signature"],
                "additionalProperties": false,
                "properties": {
                    "proposal": {"type": "integer"},
                    "by": {"type": "integer", "minimum": 0, "maximum": 2},
                    "approve": {"type": "boolean"},
                    "signature": {"type": "string", "description": "hex ed25519 of master `by`'s commit key over symphony_master::vote_message(proposal, approve) = content_hash('scp/gov/vote/v1', (proposal, approve))"}
                }
            },
            "QuerySpec": class_schema("query"),
            "ComputeSpec": class_schema("compute"),
            "TrainSpec": class_schema("train"),
        }}
    })
}

/// Each class, its example spec file and what it is.
const CLASSES: [(&str, &str, &str); 3] = [
    (
        "query",
        include_str!("../../../examples/luckin.toml"),
        "governed audience selection across Vaults (examples/luckin.toml)",
    ),
    (
        "compute",
        include_str!("../../../examples/compute.toml"),
        "a bounded computation returning a noisy aggregate (examples/compute.toml)",
    ),
    (
        "train",
        include_str!("../../../examples/train.toml"),
        "federated training, a composite task (examples/train.toml)",
    ),
];

fn schema_name(class: &str) -> &'static str {
    match class {
        "query" => "QuerySpec",
        "compute" => "ComputeSpec",
        _ => "TrainSpec",
    }
}

/// The schema of a class's spec, derived from its example file's fields (every
/// field of the spec type, optional ones included: they serialize as `null`), so
/// the document cannot fall behind the types.
fn class_schema(class: &str) -> Value {
    let Some((_, text, what)) = CLASSES.iter().find(|(c, _, _)| *c == class) else {
        return json!({"description": format!("unknown class {class}")});
    };
    let value = TaskSpec::from_toml(text)
        .ok()
        .and_then(|spec| serde_json::to_value(&spec).ok())
        .and_then(|v| v.get(class).cloned())
        .unwrap_or(Value::Null);
    let mut schema = schema_of(&value);
    if let Some(o) = schema.as_object_mut() {
        o.insert("description".into(), json!(what));
        o.insert("example".into(), value);
    }
    schema
}

fn schema_of(v: &Value) -> Value {
    match v {
        Value::Object(map) => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": map.iter().map(|(k, x)| (k.clone(), schema_of(x))).collect::<serde_json::Map<_, _>>(),
        }),
        Value::Array(items) => json!({
            "type": "array",
            "items": items.first().map_or_else(|| json!({"type": "string"}), schema_of),
        }),
        Value::String(_) => json!({"type": "string"}),
        Value::Number(n) if n.is_u64() || n.is_i64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Null => json!({"description": "optional: absent or null selects the default"}),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn merge(mut a: Value, b: &Value) -> Value {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn submission(key: &SigningKey, attempts: usize) -> TaskSubmission {
        let spec = TaskSpec::from_toml(include_str!("../../../examples/luckin.toml")).unwrap();
        let attempt_signatures = (0..attempts)
            .map(|i| {
                let h = spec.request_hash(attempt_nonce(9, i)).unwrap();
                hex::encode(key.sign(&h.0).to_bytes())
            })
            .collect();
        TaskSubmission {
            spec,
            nonce: 9,
            attempt_signatures,
        }
    }

    async fn message(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        (status, v["error"].as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn attempt_signatures_are_batch_verified_and_the_bad_one_is_named() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let vk = key.verifying_key();
        let good = submission(&key, 4);
        assert!(verify_attempts(&vk, "advertiser:luckin", &good).is_ok());
        // Attempt 2 signed for another nonce.
        let mut swapped = good.clone();
        swapped.attempt_signatures[2] = good.attempt_signatures[1].clone();
        let (status, m) = message(verify_attempts(&vk, "a", &swapped).unwrap_err()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(m.contains("attempt_signatures[2] does not verify"), "{m}");
        // Another caller's key.
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let (status, m) = message(verify_attempts(&other, "a", &good).unwrap_err()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(m.contains("attempt_signatures[0]"), "{m}");
        // Not a signature at all.
        let mut garbage = good.clone();
        garbage.attempt_signatures[3] = "zz".into();
        let (status, m) = message(verify_attempts(&vk, "a", &garbage).unwrap_err()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(m.contains("attempt_signatures[3] is not"), "{m}");
    }

    #[tokio::test]
    async fn a_full_queue_answers_503_with_retry_after_and_a_message_naming_the_key() {
        let r = queue_full(10, 10);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let message = v["error"].as_str().unwrap();
        assert!(message.contains("request queue full"), "{message}");
        assert!(message.contains("max_pending_requests = 10"), "{message}");
        let doc = openapi_document();
        let described = doc["paths"]["/v1/tasks"]["post"]["responses"]["503"]["description"]
            .as_str()
            .unwrap();
        assert!(described.contains("queue full"), "{described}");
    }

    fn keys_of(v: &Value, prefix: &str, out: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            for (k, x) in o {
                let path = format!("{prefix}{k}");
                keys_of(x, &format!("{path}."), out);
                out.push(path);
            }
        }
    }

    #[test]
    fn the_openapi_document_describes_every_field_of_every_class() {
        let doc = openapi_document();
        let schemas = &doc["components"]["schemas"];
        for (class, text, _) in CLASSES {
            let spec = serde_json::to_value(TaskSpec::from_toml(text).unwrap()).unwrap();
            let mut fields = Vec::new();
            keys_of(&spec[class], "", &mut fields);
            assert!(fields.len() >= 7, "{class}: {fields:?}");
            let schema = &schemas[schema_name(class)];
            for f in &fields {
                let mut node = schema;
                for part in f.split('.') {
                    node = &node["properties"][part];
                }
                assert!(
                    node.is_object() && !node.as_object().unwrap().is_empty(),
                    "{class}: field {f} is not described"
                );
                if node["type"] == "object" {
                    assert!(
                        node["properties"]
                            .as_object()
                            .is_some_and(|p| !p.is_empty()),
                        "{class}: {f} is an empty object schema"
                    );
                }
            }
            // The class is one of the spec's alternatives.
            let alternatives = schemas["TaskSpec"]["oneOf"].as_array().unwrap();
            assert!(alternatives
                .iter()
                .any(|a| a["properties"][class]["$ref"].is_string()));
        }
        assert!(
            schemas["TrainSpec"]["properties"]["dp_sgd"]["properties"]["noise_multiplier"]
                .is_object()
        );
        assert!(schemas["ComputeSpec"]["properties"]["group_by"].is_object());
    }

    fn body_with(class: &str, spec: Value) -> Vec<u8> {
        let mut tagged = serde_json::Map::new();
        tagged.insert(class.to_owned(), spec);
        serde_json::to_vec(&json!({"spec": tagged, "nonce": 1, "attempt_signatures": ["00"]}))
            .unwrap()
    }

    #[test]
    fn a_submission_with_wrong_class_fields_is_refused_naming_the_field() {
        let train = serde_json::to_value(
            TaskSpec::from_toml(include_str!("../../../examples/train.toml")).unwrap(),
        )
        .unwrap();
        let query = serde_json::to_value(
            TaskSpec::from_toml(include_str!("../../../examples/luckin.toml")).unwrap(),
        )
        .unwrap();
        // Well-formed bodies of each class parse.
        assert!(parse_submission(&body_with("train", train["train"].clone())).is_ok());
        assert!(parse_submission(&body_with("query", query["query"].clone())).is_ok());
        // A training spec sent as a query: the first unknown field is named.
        let e = parse_submission(&body_with("query", train["train"].clone())).unwrap_err();
        assert!(
            e.starts_with("spec.query: unknown field `acceptance`"),
            "{e}"
        );
        // A missing field of the class.
        let mut no_brand = train["train"].clone();
        no_brand.as_object_mut().unwrap().remove("brand");
        let e = parse_submission(&body_with("train", no_brand)).unwrap_err();
        assert!(
            e.contains("spec.train") && e.contains("missing field `brand`"),
            "{e}"
        );
        // A field of the wrong type.
        let mut bad = query["query"].clone();
        bad["audience_cap"] = json!("many");
        let e = parse_submission(&body_with("query", bad)).unwrap_err();
        assert!(e.starts_with("spec.query: invalid type"), "{e}");
        // An unknown class, and an untagged spec.
        let e = parse_submission(&body_with("parse", json!({}))).unwrap_err();
        assert!(e.contains("unknown task class \"parse\""), "{e}");
        let untagged = serde_json::to_vec(
            &json!({"spec": query["query"], "nonce": 1, "attempt_signatures": ["00"]}),
        )
        .unwrap();
        let e = parse_submission(&untagged).unwrap_err();
        assert!(e.contains("exactly one key naming the task class"), "{e}");
        // An invalid training parameter is a 400 naming it (checked before anything
        // is replicated).
        let mut no_noise = train["train"].clone();
        no_noise["dp_sgd"]["noise_multiplier"] = json!(0.0);
        let s = parse_submission(&body_with("train", no_noise)).unwrap();
        let TaskSpec::Train(t) = &s.spec else {
            panic!("train")
        };
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("noise_multiplier"), "{e}");
    }
}
