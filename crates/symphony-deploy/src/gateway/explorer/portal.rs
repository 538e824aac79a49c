//! The producer portal: a producer signs in with its key and sees (and changes)
//! its own account, nothing of anyone else's.
//!
//! - `GET /explorer/portal/sign-in`: a fresh random challenge (32 bytes, single
//!   use, valid [`CHALLENGE_TTL_MS`], kept in this gateway's memory) and a form
//!   posting `caller`, `challenge` and `signature`: the producer's ed25519
//!   signature over [`sign_in_message`] (domain-separated: the challenge and this
//!   gateway's host), e.g. from `symphony producer sign-in --challenge HEX`;
//! - `POST /explorer/portal/sign-in`: verified against the key `master.toml`
//!   registers for the caller (a `producer:<subject>`); a wrong, unknown, expired
//!   or reused challenge or a bad signature is a `401` page; success sets an
//!   `HttpOnly; Secure; SameSite=Strict` session cookie (random token, valid
//!   [`SESSION_TTL_MS`]);
//! - `GET /explorer/portal`: the signed-in producer's consent per scope with its
//!   history and a grant/revoke form per scope, remaining ε per scope and the
//!   epoch that replenishes it, earnings and stake (without a session: `303` to
//!   the sign-in page);
//! - `POST /explorer/portal/consent` (`scope`, `action`, `csrf`): the change, through
//!   the code path of `POST /v1/producer/consent`; the `csrf` token is the
//!   session's (missing or wrong: `403`);
//! - `POST /explorer/portal/sign-out`: ends the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signature, Verifier};
use maud::{html, Markup};
use rand::RngCore;
use symphony_core::ids::ActorId;

use super::super::producer_routes::{
    budget_for, consent_change, consent_for, earnings_for, stake_for,
};
use super::super::AppState;
use super::{error_page, html_response, layout};

/// How long a sign-in challenge is valid, ms.
pub const CHALLENGE_TTL_MS: u64 = 5 * 60 * 1000;
/// How long a session is valid, ms.
pub const SESSION_TTL_MS: u64 = 30 * 60 * 1000;
/// Most outstanding challenges kept (the oldest go first).
const MAX_CHALLENGES: usize = 4096;
/// The session cookie.
pub const COOKIE: &str = "symphony_portal";
const DOMAIN: &[u8] = b"symphony/portal-sign-in/v1";

/// The bytes a producer signs to sign in: a domain tag, the gateway's host
/// (`host:port`, lower case) and the challenge.
pub fn sign_in_message(challenge: &[u8], host: &str) -> Vec<u8> {
    let host = host.to_ascii_lowercase();
    let mut m = Vec::with_capacity(DOMAIN.len() + host.len() + challenge.len() + 2);
    m.extend_from_slice(DOMAIN);
    m.push(0);
    m.extend_from_slice(host.as_bytes());
    m.push(0);
    m.extend_from_slice(challenge);
    m
}

/// The producer's signature to sign in (`symphony producer sign-in`): over
/// [`sign_in_message`].
pub fn sign_in_signature(
    key: &ed25519_dalek::SigningKey,
    challenge: &[u8],
    host: &str,
) -> [u8; 64] {
    use ed25519_dalek::Signer as _;
    key.sign(&sign_in_message(challenge, host)).to_bytes()
}

struct Session {
    actor: ActorId,
    csrf: String,
    expires_ms: u64,
}

/// The portal's memory: outstanding challenges and sessions.
#[derive(Default)]
pub(in super::super) struct PortalState {
    /// Challenge (hex) → expiry, ms.
    challenges: Mutex<HashMap<String, u64>>,
    /// Session token (hex) → session.
    sessions: Mutex<HashMap<String, Session>>,
    /// Added to the wall clock (tests move time forward).
    skew_ms: AtomicU64,
}

impl PortalState {
    fn now(&self) -> u64 {
        crate::master::now_ms() + self.skew_ms.load(Ordering::Relaxed)
    }

    /// Moves the portal's clock forward (tests: expiry).
    #[cfg(test)]
    pub(super) fn advance(&self, ms: u64) {
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn redirect(to: &'static str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `application/x-www-form-urlencoded` fields (a field given twice: the last).
fn form(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8".to_owned())?;
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("form field {s:?}: bad percent escape at byte {i}"))?;
                out.push(h);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("form field {s:?}: not UTF-8"))
}

/// The session of the request's cookie, if valid.
fn session(state: &AppState, headers: &HeaderMap) -> Option<(String, ActorId, String)> {
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())?;
    let now = state.portal.now();
    let mut sessions = state
        .portal
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    sessions.retain(|_, s| s.expires_ms > now);
    sessions
        .get(&token)
        .map(|s| (token.clone(), s.actor.clone(), s.csrf.clone()))
}

/// `GET /explorer/portal/sign-in`.
pub(super) async fn sign_in_page(State(state): State<Arc<AppState>>) -> Response {
    let challenge = random_hex();
    let now = state.portal.now();
    {
        let mut c = state
            .portal
            .challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.retain(|_, exp| *exp > now);
        if c.len() >= MAX_CHALLENGES {
            if let Some(oldest) = c.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
                c.remove(&oldest);
            }
        }
        c.insert(challenge.clone(), now + CHALLENGE_TTL_MS);
    }
    let body = html! {
        h1 { "Producer portal: sign in" }
        p { "Sign the challenge with your producer key (valid "
            (CHALLENGE_TTL_MS / 60_000) " minutes, once):" }
        p { code id="challenge" { (challenge) } }
        p { code { "symphony producer sign-in --challenge " (challenge) " --dir <devnet>" } }
        form method="post" action="/explorer/portal/sign-in" {
            input type="hidden" name="challenge" value=(challenge);
            p { label { "Caller " input name="caller" value="producer:" size="40"; } }
            p { label { "Signature (hex) " input name="signature" size="80"; } }
            button type="submit" { "Sign in" }
        }
    };
    html_response(StatusCode::OK, layout("Producer portal", None, body))
}

/// `POST /explorer/portal/sign-in`.
pub(super) async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let unauthorized = |m: String| error_page(StatusCode::UNAUTHORIZED, &m);
    let f = match form(&body) {
        Ok(f) => f,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    let field = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (challenge, caller, signature) = (field("challenge"), field("caller"), field("signature"));
    if challenge.is_empty() || caller.is_empty() || signature.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the sign-in form needs challenge, caller and signature",
        );
    }
    let now = state.portal.now();
    // Single use: taken out whatever the outcome.
    let expiry = state
        .portal
        .challenges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&challenge.to_ascii_lowercase());
    match expiry {
        None => {
            return unauthorized(format!(
                "challenge {challenge:?} is unknown or already used: get a fresh one at /explorer/portal/sign-in"
            ))
        }
        Some(exp) if exp <= now => {
            return unauthorized(format!(
                "challenge {challenge:?} expired ({} minutes): get a fresh one at /explorer/portal/sign-in",
                CHALLENGE_TTL_MS / 60_000
            ))
        }
        Some(_) => {}
    }
    if !caller.starts_with("producer:") {
        return unauthorized(format!(
            "caller {caller:?} is not a data producer (producer:<subject>)"
        ));
    }
    let Some(key) = state.callers.get(&caller) else {
        return unauthorized(format!(
            "caller {caller:?} is not registered with this gateway"
        ));
    };
    let host = match state.check_host(&headers) {
        Ok(h) => h,
        Err(e) => return unauthorized(format!("host: {e}")),
    };
    let sig = match hex::decode(&signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    {
        Some(b) => Signature::from_bytes(&b),
        None => {
            return unauthorized(format!(
                "signature: expected 64 bytes of hex, got {} characters",
                signature.len()
            ))
        }
    };
    let msg = sign_in_message(&hex::decode(&challenge).unwrap_or_default(), &host);
    if key.verify(&msg, &sig).is_err() {
        return unauthorized(format!(
            "signature: not {caller}'s signature of this challenge for host {host}"
        ));
    }
    let actor = match ActorId::new(caller.clone()) {
        Ok(a) => a,
        Err(e) => return unauthorized(format!("caller {caller:?}: {e}")),
    };
    let token = random_hex();
    state
        .portal
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            token.clone(),
            Session {
                actor,
                csrf: random_hex(),
                expires_ms: now + SESSION_TTL_MS,
            },
        );
    tracing::info!(%caller, "producer portal sign-in");
    let mut r = redirect("/explorer/portal");
    let cookie = format!(
        "{COOKIE}={token}; Path=/explorer/portal; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        SESSION_TTL_MS / 1000
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /explorer/portal/sign-out`.
pub(super) async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some((token, _, _)) = session(&state, &headers) {
        state
            .portal
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&token);
    }
    let mut r = redirect("/explorer/portal/sign-in");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "symphony_portal=; Path=/explorer/portal; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
    );
    r
}

/// A JSON refusal of the producer routes' internals as an HTML page.
async fn as_page(r: Response) -> Response {
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    error_page(status, &message)
}

/// `GET /explorer/portal`.
pub(super) async fn portal(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some((_, actor, csrf)) = session(&state, &headers) else {
        return redirect("/explorer/portal/sign-in");
    };
    match page(&state, &actor, &csrf).await {
        Ok(body) => html_response(StatusCode::OK, layout("Producer portal", None, body)),
        Err(r) => as_page(r).await,
    }
}

async fn page(state: &AppState, actor: &ActorId, csrf: &str) -> Result<Markup, Response> {
    let consent = consent_for(state, actor, None).await?;
    let budget = budget_for(state, actor).await?;
    let earnings = earnings_for(state, actor)?;
    let stake = stake_for(state, actor)?;
    Ok(html! {
        h1 { "Producer portal: " span #producer { (actor) } }
        form method="post" action="/explorer/portal/sign-out" {
            button type="submit" { "Sign out" }
        }
        h2 { "Consent" }
        p.mute { "Personal Vault " code { (consent.vault) } "; a revocation blocks new tasks, not settled work." }
        table #consent {
            tr { th { "Scope" } th { "In force" } th { "History" } th { "Change" } }
            @for s in &consent.scopes {
                tr data-scope=(s.scope) {
                    td { (s.scope) }
                    td.consent-state { @if s.granted { span.state.approved { "granted" } } @else { span.state.rejected { "revoked" } } }
                    td {
                        @for h in &s.history { (h.change) " at " (h.at_ms) " ms" br; }
                    }
                    td {
                        @if s.scope != "personal" {
                            form method="post" action="/explorer/portal/consent" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="scope" value=(s.scope);
                                @if s.granted {
                                    input type="hidden" name="action" value="revoke";
                                    button type="submit" { "Revoke" }
                                } @else {
                                    input type="hidden" name="action" value="grant";
                                    button type="submit" { "Grant" }
                                }
                            }
                        } @else {
                            span.mute { "always granted" }
                        }
                    }
                }
            }
        }
        h2 { "Privacy budget" }
        p { "Epoch " (budget.epoch) "; replenished at the opening of epoch "
            span #replenishes { (budget.replenishes_at_epoch) } "." }
        table #budget {
            tr { th { "Scope" } th.num { "Remaining ε" } th.num { "Capacity" } th.num { "Reserved" }
                 th.num { "Committed" } th.num { "Added per epoch" } th.num { "Last replenished" } }
            @for b in &budget.scopes {
                tr { td { (b.scope) } td.num { (b.remaining) } td.num { (b.capacity) } td.num { (b.reserved) }
                     td.num { (b.committed) } td.num { (b.replenishes_per_epoch) } td.num { (b.last_replenished_epoch) } }
            }
        }
        h2 { "Earnings" }
        p { "Received " b { (earnings.total_net_micro_sym) " µSYM" } "; balance "
            (earnings.balance_micro_sym) " µSYM." }
        table #earnings {
            tr { th { "Epoch" } th.num { "Data quality rewards, µSYM" } th.num { "Data usage dividends, µSYM" } }
            @for e in &earnings.by_epoch {
                tr { td { (e.epoch) } td.num { (e.data_quality_reward_micro_sym) } td.num { (e.data_usage_dividend_micro_sym) } }
            }
        }
        h2 { "Stake" }
        p #stake { (stake.stake_micro_sym) " µSYM registered ("
            @if stake.staked { "S_producer held: 100% of rewards" } @else { "S_producer is " (stake.s_producer_micro_sym) " µSYM: 50% of rewards until bonded" }
            ")." }
    })
}

/// `POST /explorer/portal/consent`.
pub(super) async fn change_consent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((_, actor, csrf)) = session(&state, &headers) else {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "no portal session: sign in at /explorer/portal/sign-in",
        );
    };
    let f = match form(&body) {
        Ok(f) => f,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    match f.get("csrf") {
        Some(t) if *t == csrf => {}
        Some(_) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "csrf: the form's token is not this session's",
            )
        }
        None => {
            return error_page(
                StatusCode::FORBIDDEN,
                "csrf: the form has no token (reload the portal page)",
            )
        }
    }
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    let change = match consent_change(get("scope"), get("action"), "form.") {
        Ok(c) => c,
        Err(r) => return as_page(r).await,
    };
    match consent_for(&state, &actor, Some(change)).await {
        Ok(_) => redirect("/explorer/portal"),
        Err(r) => as_page(r).await,
    }
}
