//! The gateway's HTTP contract over real HTTPS against three in-process masters
//! (loopback consensus; no campaign worker, so acknowledged requests stay queued):
//!
//! - every response, success or refusal, validates against the schema the served
//!   `/openapi.json` gives for its route, method and status (a small JSON Schema
//!   checker below: `$ref`, `oneOf`/`anyOf`/`allOf`, types with `null`,
//!   `required`, closed objects, `items`, `enum`, numeric and length bounds);
//! - every error status (400, 401, 403, 404, 405, 409, 413, 429, 431) has a JSON
//!   body `{"error", "code", "status"}`, including axum's own 405;
//! - an id with `%` verifies (the path is signed as sent) and gets a JSON 404;
//! - `/metrics` parses as OpenMetrics text with `# HELP` and `# TYPE` for every
//!   family, refusals by route and reason, latency histograms, budget and fees;
//! - a signed request is valid at one gateway only (its host is signed), so a
//!   captured GET cannot be replayed at another master's gateway, and the per-caller
//!   rate limit holds across the three gateways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use symphony_deploy::auth::{sign_headers, RequestTarget};
use symphony_deploy::bench::GatewayBed;
use symphony_deploy::client::{
    encode_segment, https_request, sign_submission, GatewayClient, HttpReply,
};
use symphony_deploy::gateway::GatewaySettings;
use symphony_deploy::loopback::LoopbackOptions;
use symphony_deploy::master::now_ms;
use symphony_node::network::CampaignSpec;
use symphony_node::task::TaskSpec;

/// The Luckin campaign of `examples/luckin.toml`.
fn luckin() -> CampaignSpec {
    match TaskSpec::from_toml(include_str!("../../../examples/luckin.toml")) {
        Ok(TaskSpec::Query(spec)) => spec,
        other => panic!("examples/luckin.toml: {other:?}"),
    }
}

// --- a JSON Schema checker for the subset utoipa emits ------------------------

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// Errors of `v` against `schema` (empty: valid). Objects that list `properties`
/// are closed unless `additionalProperties` says otherwise, so a response that
/// grows a field the document does not describe fails too.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}"));
        return check(doc, target, v, at, errors);
    }
    let alternatives = |key: &str| schema.get(key).and_then(Value::as_array);
    if let Some(all) = alternatives("allOf") {
        for s in all {
            check(doc, s, v, at, errors);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = alternatives(key) {
            let passing = options
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    check(doc, s, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if key == "oneOf" {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                errors.push(format!(
                    "{at}: {passing} of the {key} alternatives match {v}"
                ));
            }
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => {
            errors.push(format!("{at}: {v} is not {t}"));
            return;
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)) => {
            errors.push(format!("{at}: {v} is none of {ts:?}"));
            return;
        }
        _ => {}
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(x) = v.as_f64() {
        let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
        let broken = [
            bound("minimum").is_some_and(|m| x < m),
            bound("maximum").is_some_and(|m| x > m),
            bound("exclusiveMinimum").is_some_and(|m| x <= m),
            bound("exclusiveMaximum").is_some_and(|m| x >= m),
        ];
        if broken.iter().any(|b| *b) {
            errors.push(format!("{at}: {x} is out of the bounds of {schema}"));
        }
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|m| len < m)
            || schema["maxItems"].as_u64().is_some_and(|m| len > m)
        {
            errors.push(format!("{at}: {len} items is out of bounds"));
        }
        if let Some(s) = schema.get("items") {
            for (i, x) in items.iter().enumerate() {
                check(doc, s, x, &format!("{at}[{i}]"), errors);
            }
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                errors.push(format!("{at}: required field {r} missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (k, x) in o {
            match properties.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, x, &format!("{at}.{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(true)) => {}
                    Some(s) if s.is_object() => check(doc, s, x, &format!("{at}.{k}"), errors),
                    _ if properties.is_some() => {
                        errors.push(format!("{at}: field {k} is not in the document"))
                    }
                    _ => {}
                },
            }
        }
    }
}

/// The response schema the document gives for `(route, method, status)`.
fn response_schema<'a>(doc: &'a Value, route: &str, method: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][route][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {route} is not in the document");
    let response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {route} answered {status}, which the document does not list"
    );
    &response["content"]["application/json"]["schema"]
}

/// Asserts that `reply` validates against the document.
fn conforms(doc: &Value, route: &str, method: &str, reply: &HttpReply) -> Value {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|_| {
        panic!(
            "{method} {route} {}: body is not JSON: {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    });
    let schema = response_schema(doc, route, method, reply.status);
    let mut errors = Vec::new();
    check(doc, schema, &body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {route} {}: {errors:#?}\n{body}",
        reply.status
    );
    if reply.status >= 400 {
        assert_eq!(body["status"], reply.status, "{body}");
    }
    body
}

// --- the test bed --------------------------------------------------------------

fn settings(callers: &[(String, SigningKey)], per_s: u32, burst: u32) -> GatewaySettings {
    GatewaySettings {
        node_id: 0,
        callers: callers
            .iter()
            .map(|(n, k)| (n.clone(), k.verifying_key()))
            .collect::<BTreeMap<_, _>>(),
        request_window_ms: 60_000,
        body_limit_bytes: 64 * 1024,
        rate_limit_per_s: per_s,
        rate_limit_burst: burst,
        max_pending_requests: 100,
    }
}

async fn bed(settings: GatewaySettings) -> (GatewayBed, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = LoopbackOptions {
        cluster_id: "gateway-api".into(),
        ..LoopbackOptions::default()
    };
    let bed = GatewayBed::start(dir.path(), &options, settings)
        .await
        .unwrap();
    (bed, dir)
}

fn caller(name: &str, seed: u8) -> (String, SigningKey) {
    (name.to_owned(), SigningKey::from_bytes(&[seed; 32]))
}

fn client(bed: &GatewayBed, gateway: SocketAddr, who: &(String, SigningKey)) -> GatewayClient {
    GatewayClient::new(
        vec![gateway],
        bed.client_tls.clone(),
        who.0.clone(),
        who.1.clone(),
    )
}

fn submission(who: &(String, SigningKey), nonce: u64) -> Vec<u8> {
    let mut spec = luckin();
    spec.advertiser = who.0.clone();
    serde_json::to_vec(&sign_submission(TaskSpec::Query(spec), nonce, &who.1).unwrap()).unwrap()
}

/// Headers of a request signed for `host`.
fn signed(
    who: &(String, SigningKey),
    method: &str,
    host: SocketAddr,
    path: &str,
    body: &[u8],
    nonce: u64,
) -> Vec<(&'static str, String)> {
    let host = host.to_string();
    let target = RequestTarget {
        method,
        host: &host,
        path,
    };
    sign_headers(&who.1, &who.0, target, body, nonce, now_ms())
}

/// `(family → (help, type), samples)` of an OpenMetrics text.
type Parsed = (BTreeMap<String, (String, String)>, Vec<(String, f64)>);

fn parse_metrics(text: &str) -> Parsed {
    let mut families = BTreeMap::new();
    let mut samples = Vec::new();
    assert_eq!(text.lines().last(), Some("# EOF"), "no # EOF at the end");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            families
                .entry(name.to_owned())
                .or_insert((String::new(), String::new()))
                .0 = help.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families
                .entry(name.to_owned())
                .or_insert((String::new(), String::new()))
                .1 = kind.to_owned();
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.push((series.to_owned(), value.parse().unwrap()));
        }
    }
    for (series, _) in &samples {
        let name = series.split('{').next().unwrap();
        let family = families
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{series} belongs to no family with # TYPE"));
        let (help, kind) = &families[family];
        assert!(!help.is_empty(), "{family} has no # HELP");
        assert!(!kind.is_empty(), "{family} has no # TYPE");
    }
    (families, samples)
}

fn sample(parsed: &Parsed, series: &str) -> f64 {
    parsed
        .1
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_matches_the_openapi_document_and_every_refusal_is_json() {
    let a = caller("advertiser:api-a", 11);
    let b = caller("advertiser:api-b", 12);
    let (bed, _dir) = bed(settings(&[a.clone(), b.clone()], 1_000, 1_000)).await;
    let gw = bed.gateways[0];
    let ca = client(&bed, gw, &a);
    let tls = bed.client_tls.clone();
    let doc = ca.get_plain(gw, "/openapi.json").await.unwrap().json();
    assert_eq!(doc["openapi"], "3.1.0");
    let send = |method: &'static str,
                path: String,
                headers: Vec<(&'static str, String)>,
                body: Vec<u8>| {
        let tls = tls.clone();
        async move {
            https_request(gw, tls, method, &path, &headers, body)
                .await
                .unwrap()
        }
    };
    let mut statuses = BTreeSet::new();
    let mut expect = |route: &str, method: &str, r: &HttpReply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let body = conforms(&doc, route, method, r);
        if status >= 400 {
            assert_eq!(body["code"], code, "{body}");
            statuses.insert(status);
        }
        body
    };

    // Success bodies.
    let r = ca
        .signed_with_nonce("POST", "/v1/tasks", submission(&a, 1), 1)
        .await
        .unwrap();
    let ack = expect("/v1/tasks", "POST", &r, 202, "");
    let id = ack["request_id"].as_str().unwrap().to_owned();
    // The checker is strict: a body that drifted from the document fails.
    let schema = response_schema(&doc, "/v1/tasks", "POST", 202);
    for drift in [
        json!({"seq": null}),
        json!({"extra_field": 1}),
        json!({"status": "done"}),
        json!({"certificate_signatures": 1}),
    ] {
        let mut body = ack.clone();
        for (k, v) in drift.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let mut errors = Vec::new();
        check(&doc, schema, &body, "$", &mut errors);
        assert!(!errors.is_empty(), "{drift} was not detected");
    }
    let r = ca
        .signed("GET", &format!("/v1/tasks/{id}"), Vec::new())
        .await
        .unwrap();
    let status = expect("/v1/tasks/{id}", "GET", &r, 200, "");
    assert_eq!(status["status"], "queued");
    // The caller's list is typed and documented too, and holds the request.
    let r = ca.signed("GET", "/v1/tasks", Vec::new()).await.unwrap();
    let list = expect("/v1/tasks", "GET", &r, 200, "");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["requests"][0]["request_id"], id.as_str(), "{list}");
    let r = ca
        .signed("GET", &format!("/v1/tasks/{id}/evidence"), Vec::new())
        .await
        .unwrap();
    expect("/v1/tasks/{id}/evidence", "GET", &r, 200, "");
    let r = ca.get_plain(gw, "/v1/cluster").await.unwrap();
    expect("/v1/cluster", "GET", &r, 200, "");

    // A percent-encoded id verifies (signed as sent) and is simply unknown.
    for raw in ["a b", "req%20x", "€/..", "a?b#c"] {
        let path = format!("/v1/tasks/{}", encode_segment(raw));
        assert!(path.contains('%'), "{path}");
        let r = ca.signed("GET", &path, Vec::new()).await.unwrap();
        let body = expect("/v1/tasks/{id}", "GET", &r, 404, "not_found");
        assert!(
            body["error"].as_str().unwrap().contains("no task request"),
            "{body}"
        );
    }
    // The signature covers the path exactly as sent: the same request with the id
    // decoded differently does not verify.
    let h = signed(&a, "GET", gw, "/v1/tasks/a%20b", b"", 500);
    let r = send("GET", "/v1/tasks/a%20c".into(), h, Vec::new()).await;
    expect("/v1/tasks/{id}", "GET", &r, 401, "bad_signature");

    // Refusals: each JSON with its code.
    let r = ca
        .signed("GET", &format!("/v1/tasks/{id}/result"), Vec::new())
        .await
        .unwrap();
    expect("/v1/tasks/{id}/result", "GET", &r, 409, "conflict");
    let cb = client(&bed, gw, &b);
    let r = cb
        .signed("GET", &format!("/v1/tasks/{id}"), Vec::new())
        .await
        .unwrap();
    expect("/v1/tasks/{id}", "GET", &r, 403, "forbidden");
    let forger = (
        "advertiser:api-a".to_owned(),
        SigningKey::from_bytes(&[99; 32]),
    );
    let body = submission(&a, 2);
    let r = send(
        "POST",
        "/v1/tasks".into(),
        signed(&forger, "POST", gw, "/v1/tasks", &body, 2),
        body,
    )
    .await;
    expect("/v1/tasks", "POST", &r, 401, "bad_signature");
    let r = send("POST", "/v1/tasks".into(), Vec::new(), b"{}".to_vec()).await;
    expect("/v1/tasks", "POST", &r, 401, "missing_header");
    let body = b"{\"spec\": nope".to_vec();
    let h = signed(&a, "POST", gw, "/v1/tasks", &body, 3);
    let r = send("POST", "/v1/tasks".into(), h.clone(), body.clone()).await;
    expect("/v1/tasks", "POST", &r, 400, "bad_request");
    let r = send("POST", "/v1/tasks".into(), h, body).await;
    expect("/v1/tasks", "POST", &r, 409, "replayed_nonce");
    let big = vec![b' '; 100 * 1024];
    let h = signed(&a, "POST", gw, "/v1/tasks", &big, 4);
    let r = send("POST", "/v1/tasks".into(), h, big).await;
    expect("/v1/tasks", "POST", &r, 413, "body_too_large");
    // axum's own 405 (the route exists, not the method).
    let r = send("DELETE", "/v1/tasks".into(), Vec::new(), Vec::new()).await;
    let body = expect("/v1/tasks", "POST", &r, 405, "method_not_allowed");
    assert!(body["error"].as_str().unwrap().contains("method"), "{body}");
    // Request headers over the limit.
    let huge = vec![(
        "x-padding",
        "p".repeat(symphony_deploy::gateway::MAX_HEADER_BYTES + 1),
    )];
    let r = send("GET", "/v1/cluster".into(), huge, Vec::new()).await;
    expect("/v1/cluster", "GET", &r, 431, "headers_too_large");
    // An unknown route.
    let r = send("GET", "/v2/nothing".into(), Vec::new(), Vec::new()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "not_found");
    assert_eq!(
        statuses,
        BTreeSet::from([400, 401, 403, 404, 405, 409, 413, 431]),
        "429 is checked in the cross-gateway test"
    );

    // Metrics: HELP and TYPE everywhere, refusals by route and reason (status and
    // result routes included), latency histograms, budget and fee families.
    let text = String::from_utf8(ca.get_plain(gw, "/metrics").await.unwrap().body).unwrap();
    let parsed = parse_metrics(&text);
    for (series, at_least) in [
        (
            "symphony_gateway_refusals_total{route=\"/v1/tasks/{id}\",reason=\"not_found\"}",
            4.0,
        ),
        (
            "symphony_gateway_refusals_total{route=\"/v1/tasks/{id}\",reason=\"forbidden\"}",
            1.0,
        ),
        (
            "symphony_gateway_refusals_total{route=\"/v1/tasks/{id}/result\",reason=\"conflict\"}",
            1.0,
        ),
        (
            "symphony_gateway_refusals_total{route=\"/v1/tasks\",reason=\"replayed_nonce\"}",
            1.0,
        ),
        (
            "symphony_gateway_refusals_total{route=\"/v1/tasks\",reason=\"method_not_allowed\"}",
            1.0,
        ),
        (
            "symphony_gateway_refusals_total{route=\"unmatched\",reason=\"not_found\"}",
            1.0,
        ),
        (
            "symphony_gateway_requests_total{route=\"/v1/tasks\",method=\"POST\",code=\"202\"}",
            1.0,
        ),
        (
            "symphony_gateway_request_duration_seconds_count{route=\"/v1/tasks\"}",
            1.0,
        ),
        ("symphony_raft_term", 1.0),
    ] {
        let v = sample(&parsed, series);
        assert!(v >= at_least, "{series} = {v} < {at_least}");
    }
    let count = sample(
        &parsed,
        "symphony_gateway_request_duration_seconds_count{route=\"/v1/tasks/{id}\"}",
    );
    let inf = parsed
        .1
        .iter()
        .find(|(s, _)| {
            s.starts_with("symphony_gateway_request_duration_seconds_bucket{")
                && s.contains("route=\"/v1/tasks/{id}\"")
                && s.contains("le=\"+Inf\"")
        })
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no +Inf bucket:\n{text}"));
    assert_eq!(count, inf);
    for family in [
        "symphony_gateway_request_duration_seconds",
        "symphony_budget_reserved_subject_micro_epsilon",
        "symphony_budget_committed_subject_micro_epsilon",
        "symphony_fees_settled_micro_sym",
        "symphony_escrow_locked_micro_sym",
        "symphony_task_requests",
    ] {
        assert!(parsed.0.contains_key(family), "{family} missing:\n{text}");
    }
    assert_eq!(
        parsed.0["symphony_gateway_request_duration_seconds"].1,
        "histogram"
    );
    assert_eq!(
        sample(&parsed, "symphony_task_requests{status=\"queued\"}"),
        1.0
    );
    bed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_holds_at_one_gateway_only_and_the_rate_is_shared_by_all() {
    let a = caller("advertiser:api-r", 21);
    // 3 requests per second and a burst of 3 for the whole cluster: one per second
    // and a burst of one at each of the three gateways.
    let (bed, _dir) = bed(settings(std::slice::from_ref(&a), 3, 3)).await;
    let [g0, g1, g2] = [bed.gateways[0], bed.gateways[1], bed.gateways[2]];
    let tls = bed.client_tls.clone();
    let doc = client(&bed, g0, &a)
        .get_plain(g0, "/openapi.json")
        .await
        .unwrap()
        .json();

    // A captured GET signed for g0: accepted once there, refused as a replay there,
    // refused at g1 and g2 whether it names g0 (wrong host) or the gateway it is
    // sent to (the signature names g0).
    let h = signed(&a, "GET", g0, "/v1/epoch", b"", 7);
    let r = https_request(g0, tls.clone(), "GET", "/v1/epoch", &h, Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = https_request(g0, tls.clone(), "GET", "/v1/epoch", &h, Vec::new())
        .await
        .unwrap();
    assert_eq!(
        conforms(&doc, "/v1/epoch", "GET", &r)["code"],
        "replayed_nonce"
    );
    for g in [g1, g2] {
        let mut with_host = h.clone();
        with_host.push(("host", g0.to_string()));
        let r = https_request(g, tls.clone(), "GET", "/v1/epoch", &with_host, Vec::new())
            .await
            .unwrap();
        let body = conforms(&doc, "/v1/epoch", "GET", &r);
        assert_eq!(
            (r.status, body["code"].as_str()),
            (401, Some("wrong_host")),
            "{body}"
        );
        let r = https_request(g, tls.clone(), "GET", "/v1/epoch", &h, Vec::new())
            .await
            .unwrap();
        let body = conforms(&doc, "/v1/epoch", "GET", &r);
        assert_eq!(
            (r.status, body["code"].as_str()),
            (401, Some("bad_signature")),
            "{body}"
        );
    }

    // The rate is the cluster's: a burst of 4 requests at each gateway gets at most
    // the cluster's burst of 3 (one per gateway) plus what refilled meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let started = Instant::now();
    let (mut accepted, mut limited) = (0u64, 0u64);
    let mut nonce = 100;
    for _ in 0..4 {
        for g in [g0, g1, g2] {
            nonce += 1;
            let r = client(&bed, g, &a)
                .signed_with_nonce("GET", "/v1/epoch", Vec::new(), nonce)
                .await
                .unwrap();
            match r.status {
                200 => accepted += 1,
                429 => {
                    assert_eq!(
                        conforms(&doc, "/v1/epoch", "GET", &r)["code"],
                        "rate_limited"
                    );
                    limited += 1;
                }
                s => panic!("{s}: {}", String::from_utf8_lossy(&r.body)),
            }
        }
    }
    let bound = 3 + 3 * started.elapsed().as_secs();
    assert!(
        accepted <= bound,
        "{accepted} of 12 accepted, bound {bound}"
    );
    assert!(limited >= 12 - bound, "{limited} limited");

    // A submission's nonce at another gateway: refused by the replicated request id.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let body = submission(&a, 9);
    let h = signed(&a, "POST", g0, "/v1/tasks", &body, 9);
    let r = https_request(g0, tls.clone(), "POST", "/v1/tasks", &h, body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let h = signed(&a, "POST", g1, "/v1/tasks", &body, 9);
    let r = https_request(g1, tls.clone(), "POST", "/v1/tasks", &h, body)
        .await
        .unwrap();
    let body = conforms(&doc, "/v1/tasks", "POST", &r);
    assert_eq!(r.status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    bed.shutdown().await.unwrap();
}

/// The producer routes: a `producer:<subject>` caller signs with its own key and
/// sees its own earnings and stake; bonding `S_producer` registers it in the actor
/// registry of every master; others, a second bond and a body with parameters are
/// refused; every reply matches the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_reads_its_earnings_and_stakes_through_the_registry() {
    use symphony_core::ids::ActorId;
    let alice = caller("producer:alice", 31);
    let adv = caller("advertiser:api-p", 32);
    let dir = tempfile::tempdir().unwrap();
    let options = LoopbackOptions {
        cluster_id: "producer-api".into(),
        ..LoopbackOptions::default()
    };
    let producer = ActorId::new("producer:alice").unwrap();
    let account = symphony_node::settlement::actor_account(&producer).unwrap();
    let fund = 500 * symphony_economics::MICRO_SYM_PER_SYM;
    let s_producer = symphony_economics::PolicyParams::default_v1()
        .staking
        .s_producer_micro_sym;
    let mut genesis = symphony_deploy::loopback::empty_genesis();
    genesis.allocations.push((account, fund));
    let bed = GatewayBed::start_with_genesis(
        dir.path(),
        &options,
        settings(&[alice.clone(), adv.clone()], 1_000, 1_000),
        &genesis,
    )
    .await
    .unwrap();
    let gw = bed.gateways[0];
    let ca = client(&bed, gw, &alice);
    let doc = ca.get_plain(gw, "/openapi.json").await.unwrap().json();

    let r = ca
        .signed("GET", "/v1/producer/earnings", Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let e = conforms(&doc, "/v1/producer/earnings", "GET", &r);
    assert_eq!(e["producer"], "producer:alice");
    assert_eq!(e["payments"], json!([]));
    assert_eq!(e["balance_micro_sym"], fund);
    assert_eq!(e["staked"], false);
    let r = ca
        .signed("GET", "/v1/producer/stake", Vec::new())
        .await
        .unwrap();
    let s = conforms(&doc, "/v1/producer/stake", "GET", &r);
    assert_eq!(
        (s["staked"].clone(), s["stake_micro_sym"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(s["s_producer_micro_sym"], s_producer);

    // Not a producer: 403 naming the rule.
    let cb = client(&bed, gw, &adv);
    let r = cb
        .signed("GET", "/v1/producer/earnings", Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let body = conforms(&doc, "/v1/producer/earnings", "GET", &r);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a data producer"),
        "{body}"
    );
    // The amount is the policy's: a body with parameters is refused, nothing bonded.
    let r = ca
        .signed("POST", "/v1/producer/stake", br#"{"amount":1}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    conforms(&doc, "/v1/producer/stake", "POST", &r);

    // Consent, budget and upload reach the producer's Personal Vault: this
    // in-process cluster has no enterprise node hosting one (404, named).
    for path in [
        "/v1/producer/consent",
        "/v1/producer/budget",
        "/v1/producer/upload-key",
    ] {
        let r = ca.signed("GET", path, Vec::new()).await.unwrap();
        assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
        conforms(&doc, path, "GET", &r);
        assert!(
            String::from_utf8_lossy(&r.body).contains("Personal Vault"),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Bond: through consensus, on the staking contract and in the registry.
    let r = ca
        .signed("POST", "/v1/producer/stake", Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = conforms(&doc, "/v1/producer/stake", "POST", &r);
    assert_eq!(s["staked"], true, "{s}");
    assert_eq!(s["stake_micro_sym"], s_producer);
    assert_eq!(s["ledger_bonded_micro_sym"], s_producer);
    assert_eq!(s["balance_micro_sym"], fund - s_producer);
    // Every master's replica holds the registration.
    for node in &bed.nodes {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let held = node.with_state(|st| {
                st.master()
                    .governance()
                    .registry
                    .holds_producer_stake(&producer, s_producer)
            });
            if held {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a master never applied the stake"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // Twice: 409, nothing replicated.
    let root = bed.nodes[0].with_state(|st| st.applied());
    let r = ca
        .signed("POST", "/v1/producer/stake", Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    let body = conforms(&doc, "/v1/producer/stake", "POST", &r);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already in the actor registry"),
        "{body}"
    );
    assert_eq!(bed.nodes[0].with_state(|st| st.applied()), root);
    let r = ca
        .signed("GET", "/v1/producer/earnings", Vec::new())
        .await
        .unwrap();
    let e = conforms(&doc, "/v1/producer/earnings", "GET", &r);
    assert_eq!(e["staked"], true);
}

/// `symphony bench gateway`'s two loops on a small run: every task is answered
/// `202` and lands in the replicated queue once (warm-ups included), the open loop
/// reports the load it offered and cannot be faster than it (a task is not sent
/// before it is due), and a rate that is not a positive number is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_bench_runs_a_closed_and_an_open_loop() {
    use symphony_deploy::bench::{gateway, GatewayRun};
    let run = GatewayRun {
        tasks: 300,
        concurrency: 6,
        callers: 4,
        leader_only: false,
        rate: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let closed = gateway(dir.path(), luckin(), run.clone()).await.unwrap();
    assert_eq!(closed.tasks, 300);
    assert_eq!(closed.requests_in_state, 300 + 6);
    assert_eq!(closed.offered_per_s, None);
    assert!(closed.p50_ms > 0.0 && closed.p50_ms <= closed.p99_ms);
    assert!(closed.p99_ms <= closed.max_ms);
    // One (start, latency) sample per timed task, by start; the slowest is max_ms.
    assert_eq!(closed.samples.len(), 300);
    assert!(closed.samples.windows(2).all(|w| w[0].0 <= w[1].0));
    let slowest = closed.samples.iter().map(|s| s.1).fold(0.0, f64::max);
    assert_eq!(slowest, closed.max_ms);

    let dir = tempfile::tempdir().unwrap();
    let rate = 200.0;
    let open = gateway(
        dir.path(),
        luckin(),
        GatewayRun {
            rate: Some(rate),
            concurrency: 12,
            ..run.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(open.tasks, 300);
    assert_eq!(open.requests_in_state, 300 + 12);
    assert_eq!(open.offered_per_s, Some(rate));
    // 300 tasks due over 1.495 s: the run cannot beat the offered rate.
    assert!(
        open.tasks_per_s <= rate * 1.01,
        "open loop at {rate}/s measured {} tasks/s",
        open.tasks_per_s
    );
    assert!(open.p50_ms > 0.0 && open.p50_ms <= open.p99_ms);
    // In the open loop a task's start is when it was due: task i at i / rate.
    assert_eq!(open.samples.len(), 300);
    for (i, (at, latency)) in open.samples.iter().enumerate() {
        let due = i as f64 * 1000.0 / rate;
        assert!(
            (at - due).abs() < 1e-3,
            "task {i} starts at {at} ms, due {due}"
        );
        assert!(*latency > 0.0);
    }

    for bad in [0.0, -5.0, f64::NAN] {
        let dir = tempfile::tempdir().unwrap();
        let err = gateway(
            dir.path(),
            luckin(),
            GatewayRun {
                rate: Some(bad),
                ..run.clone()
            },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("--rate"), "{err}");
    }
}
