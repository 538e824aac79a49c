//! The gateway's governance routes (see [`crate::governance`]):
//!
//! - `GET /v1/epoch`, `GET /v1/governance/proposals`: signed by any registered
//!   caller or master, served from this master's applied state;
//! - `POST /v1/governance/proposals`, `POST /v1/governance/votes`: signed (HTTP)
//!   by a master as `master-N`, carrying that master's signature over the
//!   proposal or vote, which the state machine verifies. Refused requests
//!   (authentication, replay, a body that does not parse, a signature for another
//!   master, a command the state machine refuses) get a 4xx before anything is
//!   proposed: the state root does not move.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use symphony_consensus::ConsensusError;
use symphony_master::{Command, Event, ProposalId};

use super::{error, AppState};
use crate::governance::{
    epoch_view, master_caller, proposals_view, ProposalSubmission, VoteSubmission,
};
use crate::master::now_ms;
use crate::state::{DeployCommand, DeployResponse};
use crate::DeployError;

pub(super) async fn epoch(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match state.authenticate_in(&state.readers, &headers, &Method::GET, &uri, b"") {
        Err(r) => r,
        Ok(_) => Json(state.cluster.with_state(|s| epoch_view(s, now_ms()))).into_response(),
    }
}

pub(super) async fn proposals(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match state.authenticate_in(&state.readers, &headers, &Method::GET, &uri, b"") {
        Err(r) => r,
        Ok(_) => Json(state.cluster.with_state(proposals_view)).into_response(),
    }
}

pub(super) async fn propose(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match propose_inner(&state, &headers, &uri, body).await {
        Ok(r) | Err(r) => r,
    }
}

pub(super) async fn vote(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match vote_inner(&state, &headers, &uri, body).await {
        Ok(r) | Err(r) => r,
    }
}

/// Authenticates a master's POST and parses its body.
fn master_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
    by: impl Fn(&T) -> u8,
) -> Result<T, Response> {
    let body = state.body(body)?;
    let caller = headers
        .get(crate::auth::HEADER_CALLER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if state.callers.contains_key(caller) && !state.masters.contains_key(caller) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("{caller:?} is not a master: only masters (master-0, master-1, master-2) file proposals and votes"),
        ));
    }
    let a = state.authenticate_in(&state.masters, headers, &Method::POST, uri, &body)?;
    let parsed: T = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))?;
    let by = by(&parsed);
    if by >= 3 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("by: {by} is not a master (governance index 0, 1 or 2)"),
        ));
    }
    if a.caller != master_caller(by) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "{} cannot file for {}: a master signs its own proposals and votes",
                a.caller,
                master_caller(by)
            ),
        ));
    }
    if !state.cluster.with_state(|s| s.governance_configured()) {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "governance is not configured yet (the leader configures it at genesis); retry shortly",
        ));
    }
    Ok(parsed)
}

fn signature(hex_sig: &str) -> Result<Vec<u8>, Response> {
    hex::decode(hex_sig)
        .ok()
        .filter(|b| b.len() == 64)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "signature: expected a hex-encoded 64-byte ed25519 signature",
            )
        })
}

/// Refuses a command the state machine would refuse (nothing is proposed).
fn probe(state: &AppState, command: &Command) -> Result<(), Response> {
    let mut probe = state.cluster.with_state(|s| s.master().clone());
    probe.apply(command).map(|_| ()).map_err(|e| {
        let msg = e.to_string();
        let status = if msg.contains("does not verify") || msg.contains("is malformed") {
            StatusCode::UNAUTHORIZED
        } else if msg.contains("does not exist") {
            StatusCode::NOT_FOUND
        } else if msg.contains("already") || msg.contains("another policy change") {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_REQUEST
        };
        error(status, msg)
    })
}

/// Proposes `command` through consensus; its events.
async fn replicate(state: &AppState, command: Command) -> Result<Vec<Event>, Response> {
    match state.cluster.write(&DeployCommand::Master(command)).await {
        Ok((DeployResponse::Master(Ok(events)), _)) => Ok(events),
        Ok((DeployResponse::Master(Err(e)), _)) => Err(error(StatusCode::CONFLICT, e)),
        Ok((other, _)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{other:?}"),
        )),
        Err(DeployError::Consensus(ConsensusError::Unavailable { .. })) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no quorum: fewer than 2 of 3 masters are reachable; the outcome is unknown, \
             see GET /v1/governance/proposals",
        )),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not replicated: {e}"),
        )),
    }
}

fn events_json(events: &[Event]) -> Value {
    serde_json::to_value(events).unwrap_or(Value::Null)
}

async fn propose_inner(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let p: ProposalSubmission =
        master_body(state, headers, uri, body, |p: &ProposalSubmission| p.by)?;
    let now = now_ms();
    if p.at_ms.abs_diff(now) > state.window_ms {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "at_ms {} is outside the accepted window of ±{} ms around {now}: sign proposals when filing them",
                p.at_ms, state.window_ms
            ),
        ));
    }
    let sig = signature(&p.signature)?;
    // The same signed proposal filed twice would be a second proposal: refused.
    let filed = state.cluster.with_state(|s| {
        s.master()
            .governance()
            .proposals
            .values()
            .find(|x| x.proposed_by == p.by && x.at_ms == p.at_ms && x.kind == p.kind)
            .map(|x| x.id)
    });
    if let Some(id) = filed {
        return Err(error(
            StatusCode::CONFLICT,
            format!("this signed proposal was already filed as {id}: replayed request refused"),
        ));
    }
    let command = Command::Propose {
        kind: p.kind,
        by: p.by,
        at_ms: p.at_ms,
        signature: sig,
    };
    probe(state, &command)?;
    let events = replicate(state, command).await?;
    let id = events.iter().find_map(|e| match e {
        Event::ProposalSubmitted { id, .. } => Some(id.0),
        _ => None,
    });
    tracing::info!(by = p.by, proposal = ?id, "governance proposal filed");
    Ok(Json(json!({
        "proposal_id": id,
        "status": "voting",
        "events": events_json(&events),
    }))
    .into_response())
}

async fn vote_inner(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let v: VoteSubmission = master_body(state, headers, uri, body, |v: &VoteSubmission| v.by)?;
    let sig = signature(&v.signature)?;
    // The vote takes effect (an approved close_epoch closes the epoch) at this
    // master's clock, never before the current epoch opened.
    let at_ms = state
        .cluster
        .with_state(|s| now_ms().max(s.master().governance().epoch_opened_at_ms));
    let command = Command::Vote {
        proposal: ProposalId(v.proposal),
        by: v.by,
        approve: v.approve,
        at_ms,
        signature: sig,
    };
    probe(state, &command)?;
    let events = replicate(state, command).await?;
    let decided = events.iter().find_map(|e| match e {
        Event::ProposalDecided { approved, .. } => Some(*approved),
        _ => None,
    });
    let closed = events.iter().find_map(|e| match e {
        Event::EpochClosed { epoch, next, .. } => {
            Some(json!({"closed": epoch.0, "opened": next.0}))
        }
        _ => None,
    });
    let status = state.cluster.with_state(|s| {
        s.master()
            .governance()
            .proposals
            .get(&ProposalId(v.proposal))
            .map(|p| p.status)
    });
    tracing::info!(
        by = v.by,
        proposal = v.proposal,
        approve = v.approve,
        ?decided,
        "governance vote"
    );
    Ok(Json(json!({
        "proposal_id": v.proposal,
        "status": status,
        "decided": decided,
        "epoch_closed": closed,
        "events": events_json(&events),
    }))
    .into_response())
}
