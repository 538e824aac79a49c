//! The public explorer: server-rendered HTML pages of what the protocol releases,
//! served by every master's gateway from its applied replicated state (GET only,
//! no signature, read-only).
//!
//! - `/explorer`: the masters (this gateway's view: leader, term, applied index and
//!   state root; the latest final certificate and which masters signed its root),
//!   enterprises and Vaults (members, epoch applied), the current epoch and policy
//!   version, governance proposals and their votes;
//! - `/explorer/tasks?class=&status=&submitter=`: the admitted tasks, newest first
//!   (every filter validated: a bad value is a `400` page naming the parameter);
//! - `/explorer/tasks/{id}` (a task id or a request id): lifecycle timeline,
//!   envelope, slices with the enclave kind of their attestation, aggregate proof,
//!   settlement, fee split, challenges; a `train` task as parent → rounds → slices
//!   with its training curve (inline SVG) and model card;
//! - `/explorer/epochs`, `/explorer/epochs/{n}`: sealed payout sets, node operation
//!   rewards (the epoch's inflation), the open epoch's scheduled payouts.
//!
//! - `/explorer/portal`: the producer portal (`portal`), signed in with the
//!   producer's key by a signed challenge: its consent (with grant/revoke forms),
//!   budget, earnings and stake; the explorer's only writes.
//!
//! What is not released is not shown: no contact handles or other results (the
//! submitter's), no per-Vault subject counts (slices' subjects evaluated, consent
//! references' eligible counts, reservations), no eligible count (only the
//! delivered count, which the fee already reveals).
//!
//! Templates are `maud` (compiled, escaped by default); live refresh is htmx
//! (vendored `htmx.min.js` 2.0.11 from the npm package `htmx.org`, BSD-0 licence
//! in `htmx-LICENSE`), which re-fetches the page's `#live` part every few seconds
//! while the page can change (a task in a terminal state and a closed epoch are
//! static); the task list's filter form is kept across refreshes.
//! The routes sit outside the JSON error layer: their refusals are HTML pages.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::AppState;

mod filter;
mod pages;
pub(super) mod portal;
mod svg;

pub use filter::{parse_task_filter, TaskFilter};
pub use portal::{sign_in_message, sign_in_signature, CHALLENGE_TTL_MS, COOKIE, SESSION_TTL_MS};
pub use svg::{training_curve_svg, CurveSeries};

/// The vendored htmx (npm `htmx.org` 2.0.11, `dist/htmx.min.js`).
const HTMX: &str = include_str!("htmx.min.js");

/// Seconds between live refreshes of a page's `#live` part.
const REFRESH_S: u32 = 3;

/// The explorer's routes (merged into the gateway's router).
pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/explorer", get(network))
        .route("/explorer/", get(network))
        .route("/explorer/tasks", get(tasks))
        .route("/explorer/tasks/{id}", get(task))
        .route("/explorer/epochs", get(epochs))
        .route("/explorer/epochs/{n}", get(epoch))
        .route("/explorer/assets/htmx.min.js", get(htmx))
        .route("/explorer/portal", get(portal::portal))
        .route(
            "/explorer/portal/sign-in",
            get(portal::sign_in_page).post(portal::sign_in),
        )
        .route("/explorer/portal/consent", post(portal::change_consent))
        .route("/explorer/portal/sign-out", post(portal::sign_out))
        .route("/explorer/{*rest}", get(unknown))
        .method_not_allowed_fallback(method_not_allowed)
}

const CSS: &str = r#"
:root{--fg:#1d2430;--mute:#5b6576;--line:#dfe3ea;--bg:#f7f8fa;--ok:#17713a;--bad:#a32020;--acc:#2456a6}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{background:#1d2430;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.4rem;align-items:baseline}
header b{font-size:1.05rem}header a{color:#cfe0ff;text-decoration:none}header a:hover{text-decoration:underline}
main{max-width:1100px;margin:0 auto;padding:1rem 1.2rem 3rem}
h1{font-size:1.35rem;margin:.4rem 0 .8rem}h2{font-size:1.08rem;margin:1.6rem 0 .5rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;background:#fff;margin:.3rem 0 .8rem}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#eef1f5;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.state{display:inline-block;padding:0 .45rem;border-radius:.7rem;background:#e6ebf3;font-size:.85rem}
.state.completed,.state.finalized,.state.approved,.state.enacted{background:#dcf3e4;color:var(--ok)}
.state.rejected,.state.timed_out,.state.challenged{background:#f8e0e0;color:var(--bad)}
ol.timeline{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3rem}ol.timeline li::after{content:" →";color:var(--mute)}ol.timeline li:last-child::after{content:""}
.mute{color:var(--mute)}.err{background:#fff;border:1px solid var(--bad);padding:1rem;border-radius:.3rem}
form.filters{display:flex;gap:.6rem;flex-wrap:wrap;align-items:end;margin:.4rem 0 .8rem}form.filters label{display:flex;flex-direction:column;font-size:.85rem;color:var(--mute)}
.rounds{margin-left:1.2rem}table.json{margin:0;font-size:.9rem}table.json th{background:#f4f6f9;font-weight:500}svg{background:#fff;border:1px solid var(--line)}
"#;

/// A whole page: header navigation, and `body` inside the live-refreshed `#live`
/// (re-fetched from `refresh` every [`REFRESH_S`] s; `None`: a static page).
fn layout(title: &str, refresh: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Symphony explorer" }
                style { (PreEscaped(CSS)) }
                script src="/explorer/assets/htmx.min.js" defer {}
            }
            body {
                header {
                    b { "Symphony explorer" }
                    a href="/explorer" { "Network" }
                    a href="/explorer/tasks" { "Tasks" }
                    a href="/explorer/epochs" { "Epochs" }
                }
                @if let Some(url) = refresh {
                    main id="live" hx-get=(url) hx-trigger={ "every " (REFRESH_S) "s" }
                        hx-select="#live" hx-swap="outerHTML" {
                        (body)
                    }
                } @else {
                    main id="live" { (body) }
                }
            }
        }
    }
}

fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut r = (status, page.into_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status.is_client_error() || status.is_server_error() {
        r.extensions_mut()
            .insert(super::errors::Refusal(super::errors::reason_of(status)));
    }
    r
}

/// An HTML error page saying what was wrong.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    html_response(
        status,
        layout(
            &title,
            None,
            html! {
                h1 { (title) }
                p.err { (message) }
                p { a href="/explorer" { "Back to the network" } }
            },
        ),
    )
}

/// The path and query of the request, for the live refresh of the same page.
fn self_url(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

async fn network(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let body = pages::network(&state);
    html_response(
        StatusCode::OK,
        layout("Network", Some(&self_url(&uri)), body),
    )
}

async fn tasks(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let filter = match parse_task_filter(uri.query()) {
        Ok(f) => f,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    let body = state.cluster.with_state(|s| pages::tasks(s, &filter));
    html_response(StatusCode::OK, layout("Tasks", Some(&self_url(&uri)), body))
}

async fn task(State(state): State<Arc<AppState>>, Path(id): Path<String>, uri: Uri) -> Response {
    if let Err(m) = filter::check_id("task id", &id) {
        return error_page(StatusCode::BAD_REQUEST, &m);
    }
    match state.cluster.with_state(|s| pages::task(s, &id)) {
        // A task in a terminal state no longer changes: no live refresh.
        Some((body, live)) => html_response(
            StatusCode::OK,
            layout(
                &format!("Task {id}"),
                live.then(|| self_url(&uri)).as_deref(),
                body,
            ),
        ),
        None => error_page(
            StatusCode::NOT_FOUND,
            &format!("no task or task request {id:?} is known to this master"),
        ),
    }
}

async fn epochs(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!("/explorer/epochs takes no query parameters (got {q:?})"),
        );
    }
    let body = state.cluster.with_state(pages::epochs);
    html_response(
        StatusCode::OK,
        layout("Epochs", Some(&self_url(&uri)), body),
    )
}

async fn epoch(State(state): State<Arc<AppState>>, Path(n): Path<String>, uri: Uri) -> Response {
    let n = match filter::parse_epoch(&n) {
        Ok(n) => n,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    match state.cluster.with_state(|s| pages::epoch(s, n)) {
        // A closed epoch no longer changes: no live refresh.
        Some((body, live)) => html_response(
            StatusCode::OK,
            layout(
                &format!("Epoch {n}"),
                live.then(|| self_url(&uri)).as_deref(),
                body,
            ),
        ),
        None => error_page(
            StatusCode::NOT_FOUND,
            &format!("epoch {n} has not opened yet"),
        ),
    }
}

async fn htmx() -> Response {
    let mut r = HTMX.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

async fn unknown(uri: Uri) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        &format!(
            "no explorer page at {:?}; the pages are /explorer, /explorer/tasks, /explorer/tasks/{{id}}, /explorer/epochs, /explorer/epochs/{{n}} and /explorer/portal",
            uri.path()
        ),
    )
}

async fn method_not_allowed() -> Response {
    let mut r = error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "the explorer is read-only: its pages answer GET only",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
    r
}

#[cfg(test)]
mod tests;
