//! A small HTTPS client for the gateway (CLI, tests, benchmarks): hyper's HTTP/1.1
//! connection over tokio-rustls. [`GatewayClient`] opens one connection per request
//! and tries each master in turn when one cannot be reached (any master accepts any
//! request); [`Connection`] keeps one connection alive for many requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use ed25519_dalek::Signer;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::Value;
use symphony_node::task::TaskSpec;

use crate::auth::{sign_headers, RequestTarget};
use crate::master::{attempt_nonce, now_ms};
use crate::state::{TaskSubmission, MAX_ATTEMPTS};
use crate::DeployError;

/// Bound on one HTTP exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP reply.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Response headers (name lower case, value), in order.
    pub headers: Vec<(String, String)>,
}

impl HttpReply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn http_err(e: impl std::fmt::Display) -> DeployError {
    DeployError::Http(e.to_string())
}

/// One kept-alive HTTPS connection to a gateway: HTTP/1.1, one request after
/// another on the same TLS session (the benchmark's clients; a caller sending many
/// requests does not pay a TLS handshake for each).
pub struct Connection {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects and completes the TLS handshake (bounded by [`REQUEST_TIMEOUT`]).
    pub async fn open(addr: SocketAddr, tls: Arc<ClientConfig>) -> Result<Self, DeployError> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(http_err)?;
            tokio::spawn(conn);
            Ok::<_, DeployError>(Self { addr, sender })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| {
                DeployError::Http(format!("{addr}: no connection within {REQUEST_TIMEOUT:?}"))
            })?
    }

    /// The gateway's `host:port` as this connection addresses it (the `host` header
    /// and what a signature names).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends one request on this connection and reads the whole reply (bounded by
    /// [`REQUEST_TIMEOUT`]).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<HttpReply, DeployError> {
        let addr = self.addr;
        let exchange = async {
            self.sender.ready().await.map_err(http_err)?;
            let mut builder = Request::builder().method(method).uri(path);
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                builder = builder.header("host", addr.to_string());
            }
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                builder = builder.header("content-type", "application/json");
            }
            for (k, v) in headers {
                builder = builder.header(*k, v);
            }
            let request = builder
                .body(Full::new(Bytes::from(body)))
                .map_err(http_err)?;
            let response = self.sender.send_request(request).await.map_err(http_err)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(http_err)?
                .to_bytes()
                .to_vec();
            Ok::<_, DeployError>(HttpReply {
                status,
                body,
                headers,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                DeployError::Http(format!("{addr}: no answer within {REQUEST_TIMEOUT:?}"))
            })?
    }
}

/// One HTTPS request to `addr` on a new connection.
pub async fn https_request(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<HttpReply, DeployError> {
    Connection::open(addr, tls)
        .await?
        .request(method, path, headers, body)
        .await
}

/// Signs a submission: one signature per attempt (see [`TaskSubmission`]).
pub fn sign_submission(
    spec: TaskSpec,
    nonce: u64,
    key: &SigningKey,
) -> Result<TaskSubmission, DeployError> {
    let mut attempt_signatures = Vec::new();
    for i in 0..MAX_ATTEMPTS {
        let hash = spec.request_hash(attempt_nonce(nonce, i))?;
        attempt_signatures.push(hex::encode(key.sign(&hash.0).to_bytes()));
    }
    Ok(TaskSubmission {
        spec,
        nonce,
        attempt_signatures,
    })
}

/// `segment` percent-encoded for one path segment: every byte but RFC 3986's
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, so any id can be
/// sent, and is signed exactly as sent.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh nonce below 2^62.
pub fn fresh_nonce() -> u64 {
    rand::random::<u64>() >> 2
}

/// A caller's client of the gateways.
#[derive(Clone)]
pub struct GatewayClient {
    /// Gateway addresses, tried in order.
    pub addrs: Vec<SocketAddr>,
    tls: Arc<ClientConfig>,
    /// Caller actor id.
    pub caller: String,
    key: SigningKey,
}

impl GatewayClient {
    /// A client for `caller` signing with `key`.
    pub fn new(
        addrs: Vec<SocketAddr>,
        tls: Arc<ClientConfig>,
        caller: String,
        key: SigningKey,
    ) -> Self {
        Self {
            addrs,
            tls,
            caller,
            key,
        }
    }

    /// A signed request with the given nonce, sent to the first master that answers.
    /// Each gateway gets its own signature: a signature names the gateway (host) it
    /// is sent to, so it cannot be replayed at another. `path` is sent and signed as
    /// given: percent-encode ids in it ([`encode_segment`]).
    pub async fn signed_with_nonce(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        nonce: u64,
    ) -> Result<HttpReply, DeployError> {
        let mut last = DeployError::Http("no gateway address".into());
        for addr in &self.addrs {
            let host = addr.to_string();
            let target = RequestTarget {
                method,
                host: &host,
                path,
            };
            let headers = sign_headers(&self.key, &self.caller, target, &body, nonce, now_ms());
            match https_request(
                *addr,
                self.tls.clone(),
                method,
                path,
                &headers,
                body.clone(),
            )
            .await
            {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A signed request with a fresh nonce.
    pub async fn signed(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<HttpReply, DeployError> {
        self.signed_with_nonce(method, path, body, fresh_nonce())
            .await
    }

    /// Submits a task of any class; returns the reply (202 with `request_id` on
    /// success).
    pub async fn submit(&self, spec: TaskSpec) -> Result<HttpReply, DeployError> {
        let nonce = fresh_nonce();
        let submission = sign_submission(spec, nonce, &self.key)?;
        let body =
            serde_json::to_vec(&submission).map_err(|e| DeployError::Encoding(e.to_string()))?;
        self.signed_with_nonce("POST", "/v1/tasks", body, nonce)
            .await
    }

    /// An unauthenticated GET to one gateway.
    pub async fn get_plain(&self, addr: SocketAddr, path: &str) -> Result<HttpReply, DeployError> {
        https_request(addr, self.tls.clone(), "GET", path, &[], Vec::new()).await
    }
}
