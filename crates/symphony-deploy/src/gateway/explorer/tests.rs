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

/// A gateway whose callers include `producer:alice` (key `[7; 32]`), answering to
/// host `gw.test:8443`.
async fn portal_gateway(
    dir: &std::path::Path,
) -> (
    Gateway,
    Vec<crate::loopback::Node>,
    ed25519_dalek::SigningKey,
) {
    let (g, nodes) = gateway(dir).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut settings = GatewaySettings {
        node_id: 1,
        callers: Default::default(),
        request_window_ms: 60_000,
        body_limit_bytes: 1 << 16,
        rate_limit_per_s: 100,
        rate_limit_burst: 100,
        max_pending_requests: 10,
    };
    settings
        .callers
        .insert("producer:alice".into(), key.verifying_key());
    settings
        .callers
        .insert("analyst".into(), key.verifying_key());
    let g = Gateway::with_settings(settings, g.state.cluster.clone(), g.tls.clone());
    g.add_host("gw.test:8443");
    (g, nodes, key)
}

/// A request with a Host, optional cookie and form body; status, headers, body.
async fn portal_send(
    g: &Gateway,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    form: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "gw.test:8443")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    let r = g
        .router
        .clone()
        .oneshot(b.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn challenge(g: &Gateway) -> String {
    let (status, _, body) = portal_send(g, "GET", "/explorer/portal/sign-in", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let start = body
        .find("id=\"challenge\">")
        .expect("challenge on the page")
        + 15;
    body[start..start + 64].to_owned()
}

fn signed_form(
    key: &ed25519_dalek::SigningKey,
    caller: &str,
    challenge: &str,
    host: &str,
) -> String {
    use ed25519_dalek::Signer as _;
    let msg = super::sign_in_message(&hex::decode(challenge).unwrap(), host);
    format!(
        "challenge={challenge}&caller={}&signature={}",
        caller.replace(':', "%3A"),
        hex::encode(key.sign(&msg).to_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sign_in_accepts_a_fresh_signed_challenge_once_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nodes, key) = portal_gateway(dir.path()).await;

    // No session: the portal sends to the sign-in page.
    let (status, headers, _) = portal_send(&g, "GET", "/explorer/portal", None, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/explorer/portal/sign-in");

    // Good challenge: a session cookie, HttpOnly, Secure, SameSite=Strict.
    let c = challenge(&g).await;
    let form = signed_form(&key, "producer:alice", &c, "gw.test:8443");
    let (status, headers, body) =
        portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    assert!(
        session.starts_with("symphony_portal=") && session.len() > 40,
        "{session}"
    );

    // Reused: 401 page.
    let (status, headers, body) =
        portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("unknown or already used"), "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());

    // Signed for another host, by another key, unknown challenge, not a producer: 401.
    let c = challenge(&g).await;
    let form = signed_form(&key, "producer:alice", &c, "evil.test:443");
    let (status, _, body) = portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body.contains("not producer:alice&#39;s signature")
            || body.contains("not producer:alice's signature"),
        "{body}"
    );
    let c = challenge(&g).await;
    let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let form = signed_form(&other, "producer:alice", &c, "gw.test:8443");
    let (status, _, _) = portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let form = signed_form(&key, "producer:alice", &"ab".repeat(32), "gw.test:8443");
    let (status, _, body) = portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("unknown or already used"), "{body}");
    let c = challenge(&g).await;
    let form = signed_form(&key, "analyst", &c, "gw.test:8443");
    let (status, _, body) = portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("not a data producer"), "{body}");

    // Expired: 401 page saying so.
    let c = challenge(&g).await;
    g.state.portal.advance(super::CHALLENGE_TTL_MS + 1);
    let form = signed_form(&key, "producer:alice", &c, "gw.test:8443");
    let (status, headers, body) =
        portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("expired"), "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());

    // A malformed form: 400.
    let (status, _, body) = portal_send(
        &g,
        "POST",
        "/explorer/portal/sign-in",
        None,
        "challenge=%zz",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("percent escape"), "{body}");

    // The session (still valid: sessions outlive challenges) reaches the portal,
    // which asks the Personal Vault's enterprise node: this gateway has none.
    let (status, _, body) = portal_send(&g, "GET", "/explorer/portal", Some(&session), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("Personal Vault"), "{body}");
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_consent_form_needs_the_session_and_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nodes, key) = portal_gateway(dir.path()).await;
    let c = challenge(&g).await;
    let form = signed_form(&key, "producer:alice", &c, "gw.test:8443");
    let (_, headers, _) = portal_send(&g, "POST", "/explorer/portal/sign-in", None, &form).await;
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();

    // No session: 401.
    let (status, _, body) = portal_send(
        &g,
        "POST",
        "/explorer/portal/consent",
        None,
        "scope=marketing&action=revoke",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Missing CSRF token: 403; a wrong one: 403.
    let (status, _, body) = portal_send(
        &g,
        "POST",
        "/explorer/portal/consent",
        Some(&session),
        "scope=marketing&action=revoke",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("csrf"), "{body}");
    let (status, _, body) = portal_send(
        &g,
        "POST",
        "/explorer/portal/consent",
        Some(&session),
        "scope=marketing&action=revoke&csrf=00",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // An expired session is no session.
    g.state.portal.advance(super::SESSION_TTL_MS + 1);
    let (status, headers, _) = portal_send(&g, "GET", "/explorer/portal", Some(&session), "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/explorer/portal/sign-in");
    drop(nodes);
}
