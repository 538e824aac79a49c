//! `/metrics`: the gateway's Prometheus/OpenMetrics exposition through
//! `prometheus-client` (every family with `# HELP` and `# TYPE`).
//!
//! - Per request ([`observe`], the outermost layer, so every route and every refusal
//!   is seen): `symphony_gateway_requests_total{route, method, code}`,
//!   `symphony_gateway_refusals_total{route, reason}` (every status ≥ 400, reason as
//!   in the error body's `code`), `symphony_gateway_request_duration_seconds{route}`
//!   (histogram). `route` is the route template (`/v1/tasks/{id}`), never the raw
//!   path, so ids do not multiply the series.
//! - From this master's applied replicated state, read at each scrape
//!   ([`StateCollector`]): Raft term, leadership, applied and final index; task
//!   requests by status; privacy budget reserved and committed (subject-ε, micro
//!   units, by task class); fees settled (µSYM, by class); escrow locked and paid.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::errors::{reason_of, Refusal};
use super::AppState;
use crate::state::{DeployState, RequestStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    route: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// What the state collector reports, refreshed at each scrape.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    term: u64,
    is_leader: bool,
    last_applied_index: u64,
    final_index: u64,
    requests: [(&'static str, u64); 4],
    /// `(class, reserved, committed, fees)`: subject-ε in micro units, µSYM.
    classes: Vec<(&'static str, u64, u64, u64)>,
    escrow_locked_micro_sym: u64,
    escrow_paid_micro_sym: u64,
}

/// Reads the replicated state's figures at each scrape.
#[derive(Debug, Default)]
struct StateCollector {
    snapshot: Mutex<Snapshot>,
}

type Encoded = Result<(), std::fmt::Error>;

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Encoded {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family over `(labels, value)`.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) -> Encoded {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in values {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn class(c: &'static str) -> ClassLabels {
    ClassLabels {
        class: c.to_owned(),
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let s = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let e = &mut encoder;
        gauge(
            e,
            "symphony_raft_term",
            "Raft term seen by this master",
            s.term,
        )?;
        gauge(
            e,
            "symphony_raft_is_leader",
            "1 when this master is the Raft leader",
            u64::from(s.is_leader),
        )?;
        gauge(
            e,
            "symphony_raft_last_applied_index",
            "Last log index applied to this master's state",
            s.last_applied_index,
        )?;
        gauge(
            e,
            "symphony_final_index",
            "Last log index with a final (2 of 3) commit certificate",
            s.final_index,
        )?;
        let mut family = e.encode_descriptor(
            "symphony_task_requests",
            "Task requests in the replicated queue by status",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (status, n) in s.requests {
            let labels = StatusLabels {
                status: status.to_owned(),
            };
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        counters(
            e,
            "symphony_budget_reserved_subject_micro_epsilon",
            "Privacy budget reserved at admission, summed over subjects (epsilon per subject x subjects reserved, micro units)",
            s.classes.iter().map(|(c, r, _, _)| (class(c), *r)),
        )?;
        counters(
            e,
            "symphony_budget_committed_subject_micro_epsilon",
            "Privacy budget committed by verified slices, summed over evaluated subjects (micro units)",
            s.classes.iter().map(|(c, _, m, _)| (class(c), *m)),
        )?;
        counters(
            e,
            "symphony_fees_settled_micro_sym",
            "Fees of settlements recorded in the replicated state, base units (uSYM)",
            s.classes.iter().map(|(c, _, _, f)| (class(c), *f)),
        )?;
        gauge(
            e,
            "symphony_escrow_locked_micro_sym",
            "Escrow still locked in the replicated ledger, base units",
            s.escrow_locked_micro_sym,
        )?;
        let paid = ConstCounter::new(s.escrow_paid_micro_sym);
        paid.encode(e.encode_descriptor(
            "symphony_escrow_paid_micro_sym",
            "Escrow paid out by the replicated ledger, base units",
            None,
            paid.metric_type(),
        )?)
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    state: Arc<StateCollector>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "symphony_gateway_requests",
            "Requests answered by this gateway, by route template, method and status code",
            requests.clone(),
        );
        registry.register(
            "symphony_gateway_refusals",
            "Requests refused (status >= 400) by route template and reason (the error body's code)",
            refusals.clone(),
        );
        registry.register(
            "symphony_gateway_request_duration_seconds",
            "Time from request to response head, by route template",
            latency.clone(),
        );
        let state = Arc::new(StateCollector::default());
        registry.register_collector(Box::new(state.clone()));
        Self {
            registry,
            requests,
            refusals,
            latency,
            state,
        }
    }
}

impl GatewayMetrics {
    fn record(&self, route: &str, method: &str, response: &Response, seconds: f64) {
        let status = response.status();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                code: status.as_u16().to_string(),
            })
            .inc();
        if status.as_u16() >= 400 {
            let reason = response
                .extensions()
                .get::<Refusal>()
                .map_or_else(|| reason_of(status), |r| r.0);
            self.refusals
                .get_or_create(&RefusalLabels {
                    route: route.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }
}

/// Middleware: counts and times every request by its route template.
pub async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .record(&route, &method, &response, started.elapsed().as_secs_f64());
    response
}

fn snapshot_of(s: &DeployState) -> Snapshot {
    let mut requests = [
        ("queued", 0),
        ("running", 0),
        ("completed", 0),
        ("rejected", 0),
    ];
    for r in s.requests() {
        let i = match r.status {
            RequestStatus::Queued => 0,
            RequestStatus::Running => 1,
            RequestStatus::Completed => 2,
            RequestStatus::Rejected => 3,
        };
        requests[i].1 += 1;
    }
    let mut classes: Vec<(&'static str, u64, u64, u64)> = Vec::new();
    for task in s.master().tasks() {
        let body = task.envelope.body();
        let name = task.envelope.task_class().as_str();
        let reserved = body
            .budget_reservation
            .epsilon_per_subject
            .micro
            .saturating_mul(body.budget_reservation.subjects_reserved);
        let committed = task.slices.values().fold(0u64, |a, sl| {
            a.saturating_add(
                sl.subjects_evaluated
                    .saturating_mul(sl.epsilon_committed_micro),
            )
        });
        let fee = task.settlement.as_ref().map_or(0, |st| st.fee_total);
        let entry = match classes.iter().position(|c| c.0 == name) {
            Some(i) => &mut classes[i],
            None => {
                classes.push((name, 0, 0, 0));
                let last = classes.len() - 1;
                &mut classes[last]
            }
        };
        entry.1 = entry.1.saturating_add(reserved);
        entry.2 = entry.2.saturating_add(committed);
        entry.3 = entry.3.saturating_add(fee);
    }
    let ledger = s.ledger().state();
    let (locked, paid) = ledger.escrows.values().fold((0u64, 0u64), |(l, p), e| {
        (
            l.saturating_add(e.remaining()),
            p.saturating_add(e.paid_out),
        )
    });
    Snapshot {
        requests,
        classes,
        escrow_locked_micro_sym: locked,
        escrow_paid_micro_sym: paid,
        ..Snapshot::default()
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = state.cluster.node.metrics();
    let mut snapshot = state.cluster.with_state(snapshot_of);
    snapshot.term = m.term;
    snapshot.is_leader = m.is_leader;
    snapshot.last_applied_index = m.last_applied_index.unwrap_or(0);
    snapshot.final_index = m.final_index.unwrap_or(0);
    *state
        .metrics
        .state
        .snapshot
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = snapshot;
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry) {
        return super::errors::error(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {e}"),
        );
    }
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
