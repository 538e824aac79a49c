//! One error shape for every refusal of the gateway:
//! `{"error": "<what was wrong, for people>", "code": "<reason, for programs>",
//! "status": <HTTP status>}`, with `content-type: application/json`.
//!
//! The gateway's own refusals are built by [`refusal`]. Responses that axum or the
//! router produce themselves (405 with an empty body, a path or body rejection in
//! plain text, a panic turned into 500) are rewritten by [`json_errors`], the
//! innermost layer, so every status ≥ 400 leaves the gateway as JSON. The same layer
//! refuses request heads over [`MAX_HEADER_BYTES`] or [`MAX_HEADERS`] with `431`
//! (hyper's own parser, whose limits are set above these, would answer an empty
//! `431` only past them).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Largest request head (names and values of all headers) the gateway reads.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Time a client has to send a request body once its head arrived.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest plain-text body of a built-in rejection that is kept as the message.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The reason of a refusal, attached to the response (the metrics count refusals
/// by route and reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

/// The default reason of a status.
pub fn reason_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "body_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "rate_limited",
        431 => "headers_too_large",
        500 => "internal",
        503 => "unavailable",
        s if s >= 500 => "server_error",
        _ => "client_error",
    }
}

/// A refusal with `status`, a machine-readable `code` and a message for people.
pub fn refusal(
    status: StatusCode,
    code: &'static str,
    message: impl std::fmt::Display,
) -> Response {
    let mut response = (
        status,
        Json(json!({
            "error": message.to_string(),
            "code": code,
            "status": status.as_u16(),
        })),
    )
        .into_response();
    response.extensions_mut().insert(Refusal(code));
    response
}

/// A refusal whose code is the status's default reason.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    refusal(status, reason_of(status), message)
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The message of a built-in rejection without one of its own.
fn default_message(status: StatusCode) -> String {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed on this route; see /openapi.json".to_owned()
        }
        StatusCode::NOT_FOUND => "no such route; see /openapi.json".to_owned(),
        s => s
            .canonical_reason()
            .unwrap_or("request refused")
            .to_ascii_lowercase(),
    }
}

/// Middleware: refuses oversized request heads with `431`, and rewrites every
/// error response that is not JSON into the gateway's error shape (keeping its
/// status and headers, e.g. `allow` of a 405).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let head_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || head_bytes > MAX_HEADER_BYTES {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers too large: {} fields, {head_bytes} bytes \
                 (limits: {MAX_HEADERS} fields, {MAX_HEADER_BYTES} bytes)",
                headers.len()
            ),
        );
    }
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| default_message(status));
    let mut rewritten = error(status, text);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rewritten
}

/// Middleware: reads the whole request body within [`BODY_READ_TIMEOUT`] and at
/// most `limit` bytes before the handler runs: a slow body gets `408`, a large one
/// `413`, both JSON.
pub async fn read_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ),
        Ok(Err(e)) => {
            let too_large = e.into_inner().is::<http_body_util::LengthLimitError>();
            if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds the limit of {limit} bytes"),
                )
            } else {
                error(StatusCode::BAD_REQUEST, "request body could not be read")
            }
        }
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// The fallback of unknown routes.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        default_message(StatusCode::NOT_FOUND),
    )
}
