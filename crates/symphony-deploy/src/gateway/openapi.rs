//! `/openapi.json`: the OpenAPI 3.1 document of the gateway, derived with `utoipa`
//! from the request types (`TaskSubmission`, the class specs `CampaignSpec`,
//! `ComputeSpec`, `TrainingSpec` and their parts, with their bounds) and the
//! response types (`views.rs`). Each route is declared once here with its
//! success body; [`openapi_document`] adds to every operation the signed-request
//! headers (authenticated routes) and the JSON error body of each refusal status.
//! `symphony-deploy/tests/gateway_api.rs` validates real responses against this document.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use super::views::{
    Acknowledged, CertificateView, ClusterView, ErrorBody, EvidenceView, ResultView, StatusView,
    TaskList, TaskListItem,
};
use crate::state::{RequestStatus, TaskSubmission};

/// Body of `POST /v1/governance/proposals` (`crate::governance::ProposalSubmission`,
/// whose `kind` is a `symphony_master::ProposalKind`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ProposalSubmission {
    /// What is proposed, externally tagged: `"close_epoch"`,
    /// `{"policy_change": {"version", "params", "max_tasks_per_epoch"}}`,
    /// `{"enterprise_membership": {"vault", "operator", "stake_micro_sym"}}`,
    /// `{"challenge_adjudication": {"challenge", "verdict"}}`,
    /// `{"slashing": {"actor", "offence", "reason"}}` or
    /// `{"attribute_promotion": {"promotion": {"local", "target"}}}`.
    #[schema(value_type = Object)]
    kind: Value,
    /// Governance index of the proposing master (masters in node-id order).
    #[schema(maximum = 2)]
    by: u8,
    /// When it was signed, ms since the Unix epoch; within `request_window_ms` of
    /// the gateway's clock.
    at_ms: u64,
    /// Hex ed25519 of master `by`'s commit key over
    /// `symphony_master::proposal_message(kind, at_ms)`.
    signature: String,
}

/// Body of `POST /v1/governance/votes` (`crate::governance::VoteSubmission`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct VoteSubmission {
    /// The proposal id.
    proposal: u64,
    /// Governance index of the voting master.
    #[schema(maximum = 2)]
    by: u8,
    /// Approve (or reject).
    approve: bool,
    /// Hex ed25519 of master `by`'s commit key over
    /// `symphony_master::vote_message(proposal, approve)`.
    signature: String,
}

#[utoipa::path(post, path = "/v1/tasks", request_body = TaskSubmission,
    summary = "Submit a task of any class (query, compute, train)",
    responses((status = 202, description = "acknowledged: replicated and final (2 of 3)", body = Acknowledged)))]
#[allow(dead_code)]
fn submit() {}

#[utoipa::path(get, path = "/v1/tasks",
    summary = "The caller's own task requests, newest first (at most 1,000)",
    responses((status = 200, description = "request id, class, status and latest task id of each", body = TaskList)))]
#[allow(dead_code)]
fn list() {}

#[utoipa::path(get, path = "/v1/tasks/{id}", params(("id" = String, Path, description = "request id, percent-encoded as sent and signed")),
    summary = "Task status and lifecycle",
    responses((status = 200, description = "status, attempts, lifecycle, cost so far", body = StatusView)))]
#[allow(dead_code)]
fn status() {}

#[utoipa::path(get, path = "/v1/tasks/{id}/result", params(("id" = String, Path, description = "request id")),
    summary = "Settled result (submitter only, after completion)",
    responses((status = 200, description = "outcome", body = ResultView)))]
#[allow(dead_code)]
fn result() {}

#[utoipa::path(get, path = "/v1/tasks/{id}/evidence", params(("id" = String, Path, description = "request id")),
    summary = "Task record, attestations, commit certificate",
    responses((status = 200, description = "evidence", body = EvidenceView)))]
#[allow(dead_code)]
fn evidence() {}

#[utoipa::path(get, path = "/v1/epoch",
    summary = "The Governance Service's epoch: epoch_id, policy_version, close triggers, the epoch each Vault applied, history (signed by any caller or master)",
    responses((status = 200, description = "epoch view", body = serde_json::Value)))]
#[allow(dead_code)]
fn epoch() {}

#[utoipa::path(get, path = "/v1/governance/proposals",
    summary = "Every proposal with its votes and status",
    responses((status = 200, description = "proposals", body = serde_json::Value)))]
#[allow(dead_code)]
fn proposals() {}

#[utoipa::path(post, path = "/v1/governance/proposals", request_body = ProposalSubmission,
    summary = "A master files a proposal; the HTTP caller must be the proposing master (master-N, signed with its commit key)",
    responses((status = 200, description = "filed: proposal_id, status, events", body = serde_json::Value)))]
#[allow(dead_code)]
fn propose() {}

#[utoipa::path(post, path = "/v1/governance/votes", request_body = VoteSubmission,
    summary = "A master votes on a proposal; the HTTP caller must be the voting master",
    responses((status = 200, description = "recorded: status, decided, epoch_closed, events", body = serde_json::Value)))]
#[allow(dead_code)]
fn vote() {}

#[utoipa::path(get, path = "/v1/cluster", summary = "This master's Raft view and state root (unauthenticated)",
    responses((status = 200, description = "view", body = ClusterView)))]
#[allow(dead_code)]
fn cluster() {}

#[utoipa::path(get, path = "/metrics", summary = "OpenMetrics text: requests, refusals by route and reason, latency histograms, budget, fees, Raft",
    responses((status = 200, description = "text exposition", content_type = "application/openmetrics-text", body = String)))]
#[allow(dead_code)]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value)))]
#[allow(dead_code)]
fn openapi() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Symphony master API gateway",
        version = "2",
        description = "Signed HTTPS API of a Symphony master. Every /v1 route needs the x-scp-* headers: ed25519 over SHA-256('scp/gateway-request/v2\\n' | len|method | len|host | len|path | SHA-256(body) | nonce | timestamp), where host is the gateway's host:port as addressed and path the request target exactly as sent (percent-encoded). Rate limits are per caller across all gateways."
    ),
    paths(
        submit, list, status, result, evidence, epoch, proposals, propose, vote, cluster, metrics,
        openapi
    ),
    components(schemas(
        ErrorBody,
        Acknowledged,
        StatusView,
        ResultView,
        EvidenceView,
        CertificateView,
        ClusterView,
        TaskList,
        TaskListItem,
        RequestStatus,
        TaskSubmission,
        ProposalSubmission,
        VoteSubmission
    ))
)]
struct ApiDoc;

/// Routes without the signed-request headers.
const UNAUTHENTICATED: [&str; 3] = ["/v1/cluster", "/metrics", "/openapi.json"];

/// Every refusal status a signed route can answer, and when.
const REFUSALS: [(u16, &str); 12] = [
    (400, "malformed JSON, a field out of bounds or an invalid spec (the message names the field); nothing reserved or charged"),
    (401, "unknown caller, bad signature, stale timestamp, missing header, or a signature for another gateway (host)"),
    (403, "not the submitter of this request, not the master named by `by`, or (/v1/producer) not a producer:<subject> caller"),
    (404, "unknown request or route, or (/v1/producer consent, budget, upload) no enterprise node of this network hosts the producer's Personal Vault"),
    (405, "method not allowed on this route"),
    (408, "request body not received within 10 s (a request head not received in 10 s closes the connection)"),
    (409, "replayed nonce (at this gateway, or a submission's request id already replicated), or result not ready"),
    (413, "body too large (body_limit_bytes), or (POST /v1/producer/upload) a sealed receipt over 24 KiB"),
    (429, "rate limit of the caller (across all gateways); Retry-After"),
    (431, "request headers too large"),
    (500, "internal error"),
    (503, "no quorum (fewer than 2 of 3 masters), or (POST /v1/tasks) request queue full: max_pending_requests requests acknowledged and not yet final; nothing admitted, retry later with a new nonce (Retry-After)"),
];

fn header_param(name: &str, description: &str, integer: bool) -> Value {
    json!({"name": name, "in": "header", "required": true, "description": description,
        "schema": if integer { json!({"type": "integer", "minimum": 0}) } else { json!({"type": "string"}) }})
}

/// The OpenAPI 3.1 description of the gateway.
pub fn openapi_document() -> Value {
    let mut api = ApiDoc::openapi();
    api.merge(<super::producer_routes::ProducerApi as OpenApi>::openapi());
    let mut doc = serde_json::to_value(api).unwrap_or(Value::Null);
    doc["openapi"] = json!("3.1.0");
    let auth = [
        header_param(crate::auth::HEADER_CALLER, "registered caller (actor id) or master-N", false),
        header_param(crate::auth::HEADER_NONCE, "decimal u64, never reused by this caller at this gateway (POST /v1/tasks: below 2^62, equal to the body's nonce)", true),
        header_param(crate::auth::HEADER_TIMESTAMP, "ms since the Unix epoch, within request_window_ms of the gateway's clock", true),
        header_param(crate::auth::HEADER_SIGNATURE, "hex ed25519 over the v2 signing message (see info.description)", false),
    ];
    let error_ref =
        json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let signed = !UNAUTHENTICATED.contains(&path.as_str());
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            if signed {
                let params = op
                    .as_object_mut()
                    .map(|o| o.entry("parameters").or_insert_with(|| json!([])));
                if let Some(Value::Array(p)) = params {
                    p.extend(auth.iter().cloned());
                }
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for (status, description) in REFUSALS {
                if !signed && !matches!(status, 404 | 405 | 431 | 500 | 503) {
                    continue;
                }
                responses.insert(
                    status.to_string(),
                    json!({"description": description, "content": error_ref}),
                );
            }
        }
    }
    doc
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    Json(openapi_document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphony_node::task::TaskSpec;

    /// The schema at `pointer` (a `$ref` target) in the document.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .map_or(schema, |s| resolve(doc, s)),
            None => schema,
        }
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
    fn every_field_of_every_class_is_described_with_its_bounds() {
        let doc = openapi_document();
        let schemas = &doc["components"]["schemas"];
        for (class, name, text) in [
            (
                "query",
                "CampaignSpec",
                include_str!("../../../../examples/luckin.toml"),
            ),
            (
                "compute",
                "ComputeSpec",
                include_str!("../../../../examples/compute.toml"),
            ),
            (
                "train",
                "TrainingSpec",
                include_str!("../../../../examples/train.toml"),
            ),
        ] {
            let spec = serde_json::to_value(TaskSpec::from_toml(text).unwrap()).unwrap();
            let mut fields = Vec::new();
            keys_of(&spec[class], "", &mut fields);
            assert!(fields.len() >= 7, "{class}: {fields:?}");
            for f in &fields {
                let mut node = &schemas[name];
                for part in f.split('.') {
                    node = &resolve(&doc, node)["properties"][part];
                }
                let node = resolve(&doc, node);
                assert!(
                    node.as_object().is_some_and(|o| !o.is_empty()),
                    "{class}: field {f} is not described"
                );
            }
        }
        let prop = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
        assert_eq!(prop("CampaignSpec", "audience_cap")["minimum"], 1);
        assert_eq!(
            prop("TaskSubmission", "nonce")["maximum"],
            json!((1u64 << 62) - 1)
        );
        assert_eq!(
            prop("TaskSubmission", "attempt_signatures")["maxItems"],
            json!(crate::state::MAX_ATTEMPTS)
        );
        assert_eq!(prop("TaskSubmission", "attempt_signatures")["minItems"], 1);
        assert_eq!(
            schemas["DpSgdSpec"]["properties"]["noise_multiplier"]["exclusiveMinimum"].as_f64(),
            Some(0.0)
        );
        assert_eq!(
            schemas["IterationSpec"]["properties"]["max_rounds"]["maximum"],
            1000
        );
        assert_eq!(schemas["CampaignSpec"]["additionalProperties"], false);
        // The spec is one of the three classes.
        let alternatives = schemas["TaskSpec"]["oneOf"].as_array().unwrap();
        assert_eq!(alternatives.len(), 3, "{}", schemas["TaskSpec"]);
    }

    #[test]
    fn every_route_has_its_refusals_and_signed_routes_their_headers() {
        let doc = openapi_document();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 16);
        let submit = &doc["paths"]["/v1/tasks"]["post"];
        for status in ["202", "400", "401", "405", "413", "429", "431", "503"] {
            assert!(submit["responses"][status].is_object(), "{status}");
        }
        assert!(submit["responses"]["503"]["description"]
            .as_str()
            .unwrap()
            .contains("queue full"));
        let names: Vec<&str> = submit["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"x-scp-signature"), "{names:?}");
        assert!(doc["paths"]["/metrics"]["get"]["parameters"].is_null());
    }
}
