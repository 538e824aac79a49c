//! The explorer's routes in-process (`tower::ServiceExt::oneshot` on the gateway's
//! own router) over three loopback masters: pages are HTML, bad inputs are `400`
//! HTML pages naming the parameter, unknown ids `404` pages, writes `405`; the
//! JSON API keeps its JSON errors.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt as _;

use super::super::{Gateway, GatewaySettings};
use crate::loopback::{empty_genesis, start_nodes, LoopbackOptions};
use crate::replicator::Cluster;
use crate::tls::{generate_ca, issue_node_cert, TlsMaterial};

async fn gateway(dir: &std::path::Path) -> (Gateway, Vec<crate::loopback::Node>) {
    let (nodes, members) = start_nodes(
        &dir.join("masters"),
        &empty_genesis(),
        &LoopbackOptions::default(),
    )
    .await
    .unwrap();
    let (ca, ca_key) = generate_ca().unwrap();
    let (cert, key) = issue_node_cert(&ca_key, "gateway-1").unwrap();
    for (name, text) in [("ca.pem", &ca), ("gw.pem", &cert), ("gw.key", &key)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let tls = TlsMaterial::load(
        &dir.join("ca.pem"),
        &dir.join("gw.pem"),
        &dir.join("gw.key"),
    )
    .unwrap()
    .public_server()
    .unwrap();
    let cluster = Cluster::new(nodes[0].clone(), tokio::runtime::Handle::current(), members);
    let settings = GatewaySettings {
        node_id: 1,
        callers: Default::default(),
        request_window_ms: 60_000,
        body_limit_bytes: 1 << 16,
        rate_limit_per_s: 100,
        rate_limit_burst: 100,
        max_pending_requests: 10,
    };
    (Gateway::with_settings(settings, cluster, tls), nodes)
}

async fn send(g: &Gateway, method: &str, uri: &str) -> (StatusCode, String, String) {
    let r = g
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_html_and_bad_inputs_get_html_errors_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nodes) = gateway(dir.path()).await;

    let (status, ct, body) = send(&g, "GET", "/explorer").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    for needle in [
        "<h2>Masters</h2>",
        "master-0",
        "master-2",
        "state root (this master)",
        "Governance proposals",
        "src=\"/explorer/assets/htmx.min.js\"",
        "hx-trigger=\"every 3s\"",
    ] {
        assert!(body.contains(needle), "{needle:?} missing: {body}");
    }

    let (status, ct, body) = send(&g, "GET", "/explorer/tasks?class=query&status=completed").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(ct.starts_with("text/html"));
    assert!(body.contains("0 tasks"), "{body}");

    // Bad filters: 400 HTML pages naming the parameter and what is expected.
    for (uri, needle) in [
        (
            "/explorer/tasks?class=bogus",
            "class: &quot;bogus&quot; is not a task class",
        ),
        (
            "/explorer/tasks?status=done",
            "status: &quot;done&quot; is not a task lifecycle state",
        ),
        (
            "/explorer/tasks?submitter=a%20b",
            "submitter: &quot;a b&quot; has",
        ),
        (
            "/explorer/tasks?colour=red",
            "unknown parameter &quot;colour&quot;",
        ),
        ("/explorer/tasks?class=%zz", "malformed percent-escape"),
        (
            "/explorer/epochs/abc",
            "epoch: &quot;abc&quot; is not an epoch number",
        ),
        ("/explorer/epochs?x=1", "takes no query parameters"),
        ("/explorer/tasks/a%3Cb", "task id: &quot;a&lt;b&quot; has"),
    ] {
        let (status, ct, body) = send(&g, "GET", uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(ct.starts_with("text/html"), "{uri}: {ct}");
        assert!(body.contains(needle), "{uri}: {needle:?} missing: {body}");
    }

    // Unknown task, epoch or page: 404 pages.
    for uri in [
        "/explorer/tasks/query-nope-1",
        "/explorer/epochs/7",
        "/explorer/nothing/here",
    ] {
        let (status, ct, body) = send(&g, "GET", uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert!(ct.starts_with("text/html"), "{uri}: {ct}");
    }

    // Read-only.
    let (status, ct, body) = send(&g, "POST", "/explorer/tasks").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(
        ct.starts_with("text/html") && body.contains("read-only"),
        "{body}"
    );

    // The vendored htmx, served as JavaScript.
    let (status, ct, body) = send(&g, "GET", "/explorer/assets/htmx.min.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/javascript"), "{ct}");
    assert_eq!(body, super::HTMX);
    assert!(body.contains("htmx"), "not htmx");

    // The JSON API keeps its JSON errors.
    let (status, ct, _) = send(&g, "GET", "/v1/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(ct.starts_with("application/json"), "{ct}");

    // Explorer requests are counted by the metrics layer like every route.
    let (_, _, metrics) = send(&g, "GET", "/metrics").await;
    assert!(
        metrics.contains("route=\"/explorer/tasks\""),
        "explorer routes not in /metrics: {metrics}"
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
