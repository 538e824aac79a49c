//! The public API gateway of a master: HTTPS (rustls) + HTTP/1.1 (hyper, axum
//! routing), JSON bodies.
//!
//! Every `/v1/tasks` route is authenticated ([`crate::auth`]): the caller's ed25519
//! signature over `(method, host, path as sent, SHA-256(body), nonce, timestamp)`,
//! the host one of this gateway's names, timestamps inside `request_window_ms`,
//! nonces never reused, a token bucket per caller (this gateway's share of the
//! cluster-wide rate), a body limit. Every refusal is a JSON
//! `{"error": ..., "code": ..., "status": ...}` saying what was wrong (`errors`), and
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
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::VerifyingKey;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use symphony_consensus::ConsensusError;
use symphony_core::ids::TaskId;
use symphony_ledger::EscrowId;
use symphony_node::task::{TaskOutcome, TaskSpec};
use tokio::net::TcpListener;

use crate::auth::{self, AuthError, NonceCache, RateLimiter, RequestTarget};
use crate::config::{parse_public_key, MasterConfig};
use crate::master::now_ms;
use crate::replicator::Cluster;
use crate::state::{
    request_id, AttemptError, DeployCommand, DeployResponse, RequestRecord, TaskSubmission,
};
use crate::tls::TlsMaterial;
use crate::DeployError;

mod errors;
pub mod explorer;
mod gov_routes;
mod metrics;
mod openapi;
mod producer_routes;
pub mod views;

pub use openapi::openapi_document;
use views::{Acknowledged, CertificateView, ClusterView, EvidenceView, ResultView, StatusView};

use errors::{error, refusal};
pub use errors::{MAX_HEADERS, MAX_HEADER_BYTES};

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
    /// This gateway's names (`host:port`, lower case) that a signature may name:
    /// its configured address and the address it listens on.
    hosts: RwLock<Vec<String>>,
    metrics: metrics::GatewayMetrics,
    /// The enterprise nodes this master dispatches slices to (the worker's RPC
    /// clients and mutual TLS): the producer routes reach Personal Vaults through them.
    enterprises: producer_routes::EnterpriseClients,
    /// The producer portal's challenges and sessions (this gateway's memory).
    portal: explorer::portal::PortalState,
}

/// The gateway of one master.
pub struct Gateway {
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
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
    /// Requests per second per caller, across all gateways of the cluster (each
    /// gateway enforces its share, see [`RateLimiter::cluster_share`]).
    pub rate_limit_per_s: u32,
    /// Burst per caller, across all gateways of the cluster.
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
        let enterprises = producer_routes::EnterpriseClients::from_config(config, &cluster)?;
        let gateway = Self::build(
            GatewaySettings::from_config(config)?,
            cluster,
            tls.public_server()?,
            enterprises,
        );
        gateway.add_host(&config.me()?.gateway);
        Ok(gateway)
    }

    /// Accepts signatures naming `host` (`host:port`) as this gateway.
    pub fn add_host(&self, host: &str) {
        let host = host.to_ascii_lowercase();
        let mut hosts = self
            .state
            .hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }

    /// A gateway over `cluster` with explicit settings and server TLS (in-process
    /// clusters: benchmark, tests).
    pub fn with_settings(
        settings: GatewaySettings,
        cluster: Cluster,
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        Self::build(
            settings,
            cluster,
            tls,
            producer_routes::EnterpriseClients::default(),
        )
    }

    fn build(
        settings: GatewaySettings,
        cluster: Cluster,
        tls: Arc<rustls::ServerConfig>,
        enterprises: producer_routes::EnterpriseClients,
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
        let gateways = cluster.keys().len();
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
            limiter: Mutex::new(RateLimiter::cluster_share(
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
                gateways,
            )),
            hosts: RwLock::new(Vec::new()),
            metrics: metrics::GatewayMetrics::default(),
            enterprises,
            portal: Default::default(),
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
            .route("/v1/producer/earnings", get(producer_routes::get_earnings))
            .route(
                "/v1/producer/stake",
                get(producer_routes::get_stake).post(producer_routes::post_stake),
            )
            .route(
                "/v1/producer/consent",
                get(producer_routes::get_consent).post(producer_routes::post_consent),
            )
            .route("/v1/producer/budget", get(producer_routes::get_budget))
            .route(
                "/v1/producer/upload-key",
                get(producer_routes::get_upload_key),
            )
            .route("/v1/producer/upload", post(producer_routes::post_upload))
            .route("/v1/cluster", get(cluster_view))
            .route("/metrics", get(metrics::metrics))
            .route("/openapi.json", get(openapi::serve))
            .fallback(errors::not_found)
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(axum::middleware::from_fn_with_state(
                body_limit,
                errors::read_body,
            ))
            .layer(axum::middleware::from_fn(errors::json_errors))
            // The explorer's HTML pages: outside the JSON error layer (their
            // refusals are HTML pages), inside the metrics layer.
            .merge(explorer::router())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::observe,
            ))
            .with_state(state.clone());
        Self { router, tls, state }
    }

    /// Serves HTTPS on `listener` until the future is dropped.
    /// Signatures naming the listener's address are accepted (besides the
    /// configured one): see [`Gateway::add_host`].
    pub async fn serve(self, listener: TcpListener) -> Result<(), DeployError> {
        if let Ok(addr) = listener.local_addr() {
            self.add_host(&addr.to_string());
        }
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
                // Hyper's own head limits sit above the gateway's (errors.rs), which
                // answer with a JSON 431; a head that is not read within the time
                // closes the connection.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(HYPER_MAX_BUF_BYTES)
                    .max_headers(4 * MAX_HEADERS)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

/// Time a client has to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Hyper's read buffer: above the gateway's head limit, so that the gateway (with a
/// JSON 431) and not hyper (an empty 431) refuses heads over the limit.
const HYPER_MAX_BUF_BYTES: usize = 4 * MAX_HEADER_BYTES;

/// The reason code of an authentication refusal.
fn auth_code(e: &AuthError) -> &'static str {
    match e {
        AuthError::Header(_) => "missing_header",
        AuthError::UnknownCaller(_) => "unknown_caller",
        AuthError::Stale { .. } => "stale_timestamp",
        AuthError::BadSignature(_) => "bad_signature",
        AuthError::WrongHost { .. } => "wrong_host",
        AuthError::Replayed { .. } => "replayed_nonce",
        AuthError::RateLimited(_) => "rate_limited",
    }
}

impl AppState {
    /// Authentication, replay and rate checks of a registered caller; the error is
    /// the finished response. `uri` is the request target as sent: its path and
    /// query are verified as those bytes, never decoded.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
    ) -> Result<auth::Authenticated, Response> {
        self.authenticate_in(&self.callers, headers, method, uri, body)
    }

    /// The host a request names, if it is one of this gateway's.
    fn check_host(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Header("host"))?
            .to_ascii_lowercase();
        let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
        if hosts.contains(&host) {
            Ok(host)
        } else {
            Err(AuthError::WrongHost {
                host,
                expected: hosts.join(", "),
            })
        }
    }

    /// [`AppState::authenticate`] against the keys of `keys` (callers, masters).
    fn authenticate_in(
        &self,
        keys: &BTreeMap<String, VerifyingKey>,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
    ) -> Result<auth::Authenticated, Response> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
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
            let mut r = refusal(status, auth_code(&e), &e);
            if status == StatusCode::TOO_MANY_REQUESTS {
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            }
            r
        };
        let host = self.check_host(headers).map_err(refused)?;
        let target = RequestTarget {
            method: method.as_str(),
            host: &host,
            path,
        };
        let a = auth::verify(keys, header, target, body, now, self.window_ms).map_err(refused)?;
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
    // A well-formed body is parsed once; only a refused one is parsed again, step by
    // step, to name what is wrong.
    if let Ok(s) = serde_json::from_slice::<TaskSubmission>(body) {
        return Ok(s);
    }
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
    // The attempt signatures are decoded here and verified by the leader before the
    // first attempt (one batch), not on this path: the header signature checked in
    // `authenticate` covers this body, so a request costs one signature check here.
    s.attempt_signature_bytes()
        .map_err(|e| bad(e.to_string()))?;
    if !state.callers.contains_key(caller) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            format!("unknown caller {caller:?}"),
        ));
    }
    Ok(())
}

/// Checks every attempt signature of `s` against the caller's key
/// ([`TaskSubmission::verify_attempts`]) and answers as the gateway would: `400` for
/// a malformed signature, `401` for one that does not verify. Public for the fuzz
/// harness (`symphony-fuzz`).
pub fn verify_attempts(
    key: &VerifyingKey,
    caller: &str,
    s: &TaskSubmission,
) -> Result<(), Response> {
    s.verify_attempts(key, caller).map_err(|e| {
        let status = match e {
            AttemptError::BadSignature { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        error(status, e.to_string())
    })
}

async fn submit(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match state.body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let a = match state.authenticate(&headers, &Method::POST, &uri, &body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let submission = match parse_submission(&body) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if let Err(r) = check_submission(&state, &a.caller, a.nonce, &submission) {
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
                Json(Acknowledged {
                    request_id: id,
                    status: crate::state::RequestStatus::Queued,
                    seq,
                    log_index: cert.log_index,
                    certificate_signatures: cert.signatures.len() as u64,
                }),
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

fn status_view(state: &AppState, r: &RequestRecord, id: &str) -> StatusView {
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
    StatusView {
        request_id: id.to_owned(),
        task_class: class_of(&r.submission.spec).to_owned(),
        status: r.status,
        fee_charged_micro_sym: fee_charged,
        escrow_locked_micro_sym: escrow_locked,
        seq: r.seq,
        attempts: r.attempts.len() as u64,
        attempt_task_ids: r.attempts.clone(),
        task_id: task,
        lifecycle,
        enclave_kinds: enclave_kinds
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        // A train run that failed composite verification stays `verifying` in the
        // lifecycle: its reason is in the outcome.
        reason: reason.or_else(|| {
            r.outcome.as_ref().and_then(|o| match o {
                TaskOutcome::Query(x) => x.reason.clone(),
                TaskOutcome::Compute(x) => x.reason.clone(),
                TaskOutcome::Train(x) => x.reason.clone(),
            })
        }),
        error: r.error.clone(),
    }
}

macro_rules! authed {
    ($state:expr, $headers:expr, $uri:expr) => {
        match $state.authenticate(&$headers, &Method::GET, &$uri, b"") {
            Ok(a) => a,
            Err(r) => return r,
        }
    };
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let a = authed!(state, headers, uri);
    match state.own_request(&id, &a.caller) {
        Ok(r) => Json(status_view(&state, &r, &id)).into_response(),
        Err(r) => r,
    }
}

/// Most requests one listing returns (the newest).
const LIST_LIMIT: usize = 1_000;

/// The caller's own task requests, newest first (at most [`LIST_LIMIT`]).
async fn list_tasks(State(state): State<Arc<AppState>>, uri: Uri, headers: HeaderMap) -> Response {
    let a = authed!(state, headers, uri);
    let (total, requests) = state.cluster.with_state(|s| {
        let mine: Vec<views::TaskListItem> = s
            .requests_by_id()
            .filter(|(_, r)| r.caller == a.caller)
            .map(|(id, r)| views::TaskListItem {
                request_id: id.to_string(),
                task_class: class_of(&r.submission.spec).into(),
                status: r.status,
                seq: r.seq,
                received_at_ms: r.received_at_ms,
                attempts: r.attempts.len() as u64,
                task_id: r.attempts.last().map(ToString::to_string),
            })
            .collect();
        let total = mine.len();
        (
            total,
            mine.into_iter().rev().take(LIST_LIMIT).collect::<Vec<_>>(),
        )
    });
    Json(views::TaskList {
        caller: a.caller,
        total: total as u64,
        requests,
    })
    .into_response()
}

async fn result(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let a = authed!(state, headers, uri);
    match state.own_request(&id, &a.caller) {
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
            Json(ResultView {
                request_id: id,
                task_class: class_of(&r.submission.spec).to_owned(),
                status: r.status,
                error: r.error.clone(),
                outcome: outcome.map(|(_, v)| v),
                artifacts,
            })
            .into_response()
        }
    }
}

async fn evidence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let a = authed!(state, headers, uri);
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
        .map(|c| CertificateView {
            cluster_id: c.cluster_id.clone(),
            log_index: c.log_index,
            state_root: hex::encode(c.state_root),
            signatures: c
                .signatures
                .iter()
                .map(|(k, s)| (k.to_string(), hex::encode(s.to_bytes())))
                .collect(),
        });
    Json(EvidenceView {
        request_id: id,
        status: r.status,
        task: record.and_then(|t| serde_json::to_value(t).ok()),
        attestations_verified: r.outcome.as_ref().map(|o| match o {
            TaskOutcome::Query(x) => x.attestations_verified,
            TaskOutcome::Compute(x) => x.attestations_verified,
            TaskOutcome::Train(x) => x.attestations_verified,
        }),
        final_certificate: certificate,
        equivocation_evidence: collector.evidence().len() as u64,
    })
    .into_response()
}

/// The cluster view served at `/v1/cluster` (unauthenticated, no task data).
fn cluster_view_of(state: &AppState) -> ClusterView {
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
    ClusterView {
        node_id: state.node_id,
        leader: m.leader,
        is_leader: m.is_leader,
        term: m.term,
        last_applied_index: applied,
        final_index: m.final_index,
        state_root: hex::encode(root),
        requests_total: total as u64,
        requests_final: final_count as u64,
        escrows: escrows as u64,
        escrows_paid_out: paid as u64,
        escrow_remaining_micro_sym: remaining,
        deliveries_recorded: deliveries as u64,
    }
}

async fn cluster_view(State(state): State<Arc<AppState>>) -> Response {
    Json(cluster_view_of(&state)).into_response()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::attempt_nonce;
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
