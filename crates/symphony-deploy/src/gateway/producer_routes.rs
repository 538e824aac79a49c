//! The gateway's data-producer routes (seed 002, "Data producers"): a producer is
//! a registered caller whose actor id is `producer:<subject>` (in `master.toml`'s
//! `callers`, with the key it signs its requests with, the scheme of
//! [`crate::auth`]); each route serves the signing producer's own account.
//!
//! - `GET /v1/producer/earnings`: data quality rewards and data usage dividends
//!   the settlement ledger paid it, by epoch, its balance and its stake;
//! - `GET /v1/producer/stake`: its stake as the actor registry holds it;
//! - `POST /v1/producer/stake`: bonds `S_producer` of its balance on the staking
//!   contract and registers it in the actor registry through consensus
//!   (`symphony_master::Command::RegisterProducerStake`): its rewards become 100%.
//!
//! Served from this master's applied state; refusals (not a producer, already
//! registered, balance too low) come before anything is replicated.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use symphony_core::ids::ActorId;
use symphony_economics::PolicyParams;
use symphony_ledger::SettlementLedger;
use symphony_node::producer::personal::{earnings, Earnings};
use symphony_node::settlement::actor_account;
use utoipa::{OpenApi, ToSchema};

use super::{error, AppState};
use crate::replicator::{ConsensusReplicator, ReplicatedLedger};
use crate::state::DeployState;

/// One payment to the producer, as the ledger executed it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentView {
    /// Epoch of the payout.
    pub epoch: u64,
    /// `data_quality_reward` or `data_usage_dividend`.
    pub kind: String,
    /// The task (dividends) or `quality:<vault>:<epoch>`.
    pub reference: String,
    /// Instructed, µSYM.
    pub gross_micro_sym: u64,
    /// Received after the staking multiplier, µSYM.
    pub net_micro_sym: u64,
}

/// Σ received in one epoch, by kind.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EpochEarnings {
    /// The epoch.
    pub epoch: u64,
    /// Data quality rewards received, µSYM.
    pub data_quality_reward_micro_sym: u64,
    /// Data usage dividends received, µSYM.
    pub data_usage_dividend_micro_sym: u64,
}

/// `GET /v1/producer/earnings`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProducerEarnings {
    /// The producer (`producer:<subject>`).
    pub producer: String,
    /// Every payment, oldest first.
    pub payments: Vec<PaymentView>,
    /// Per epoch, oldest first.
    pub by_epoch: Vec<EpochEarnings>,
    /// Σ received, µSYM.
    pub total_net_micro_sym: u64,
    /// Balance, µSYM.
    pub balance_micro_sym: u64,
    /// Stake registered in the actor registry, µSYM.
    pub stake_micro_sym: u64,
    /// Whether the registry holds its `S_producer` (100% of rewards, else 50%).
    pub staked: bool,
}

/// `GET` / `POST /v1/producer/stake`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProducerStake {
    /// The producer.
    pub producer: String,
    /// Stake registered in the actor registry, µSYM.
    pub stake_micro_sym: u64,
    /// Bonded on the ledger's staking contract, µSYM.
    pub ledger_bonded_micro_sym: u64,
    /// Whether the registry holds its `S_producer`.
    pub staked: bool,
    /// `S_producer` of the policy in force, µSYM.
    pub s_producer_micro_sym: u64,
    /// Balance, µSYM.
    pub balance_micro_sym: u64,
}

#[utoipa::path(get, path = "/v1/producer/earnings",
    summary = "The signing producer's earnings: quality rewards and per-task dividends by epoch, balance, stake",
    responses((status = 200, description = "earnings", body = ProducerEarnings)))]
#[allow(dead_code)]
fn earnings_doc() {}

#[utoipa::path(get, path = "/v1/producer/stake",
    summary = "The signing producer's stake as the actor registry holds it",
    responses((status = 200, description = "stake", body = ProducerStake)))]
#[allow(dead_code)]
fn stake_doc() {}

#[utoipa::path(post, path = "/v1/producer/stake",
    summary = "Bond S_producer of the signing producer's balance and register it in the actor registry (empty body); rewards become 100%",
    responses((status = 200, description = "bonded and registered", body = ProducerStake)))]
#[allow(dead_code)]
fn bond_doc() {}

/// The producer routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(earnings_doc, stake_doc, bond_doc),
    components(schemas(ProducerEarnings, PaymentView, EpochEarnings, ProducerStake))
)]
pub(super) struct ProducerApi;

/// The policy whose `S_producer` and multiplier apply (the devnet's genesis policy).
fn policy() -> PolicyParams {
    PolicyParams::default_v1()
}

/// Authenticates a producer's request; its actor.
fn producer(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<ActorId, Response> {
    let a = state.authenticate(headers, method, uri, body)?;
    if !a.caller.starts_with("producer:") {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not a data producer: the producer routes serve callers registered as producer:<subject>",
                a.caller
            ),
        ));
    }
    ActorId::new(a.caller.clone()).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("x-scp-caller {:?}: {e}", a.caller),
        )
    })
}

fn earnings_of(s: &DeployState, actor: &ActorId) -> Result<Earnings, Response> {
    earnings(
        s.ledger(),
        &s.master().governance().registry,
        &policy(),
        actor,
    )
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn stake_view(actor: &ActorId, e: &Earnings) -> ProducerStake {
    ProducerStake {
        producer: actor.to_string(),
        stake_micro_sym: e.stake_micro_sym,
        ledger_bonded_micro_sym: e.ledger_bonded_micro_sym,
        staked: e.staked,
        s_producer_micro_sym: policy().staking.s_producer_micro_sym,
        balance_micro_sym: e.balance_micro_sym,
    }
}

/// `GET /v1/producer/earnings`.
pub(super) async fn get_earnings(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let actor = match producer(&state, &headers, &Method::GET, &uri, b"") {
        Ok(a) => a,
        Err(r) => return r,
    };
    let e = match state.cluster.with_state(|s| earnings_of(s, &actor)) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let by_epoch = e
        .by_epoch
        .iter()
        .map(|(epoch, kinds)| EpochEarnings {
            epoch: *epoch,
            data_quality_reward_micro_sym: kinds.get("data_quality_reward").copied().unwrap_or(0),
            data_usage_dividend_micro_sym: kinds.get("data_usage_dividend").copied().unwrap_or(0),
        })
        .collect();
    Json(ProducerEarnings {
        producer: actor.to_string(),
        payments: e
            .payments
            .iter()
            .map(|p| PaymentView {
                epoch: p.epoch,
                kind: p.kind.clone(),
                reference: p.reference.clone(),
                gross_micro_sym: p.gross_micro_sym,
                net_micro_sym: p.net_micro_sym,
            })
            .collect(),
        by_epoch,
        total_net_micro_sym: e.total_net_micro_sym,
        balance_micro_sym: e.balance_micro_sym,
        stake_micro_sym: e.stake_micro_sym,
        staked: e.staked,
    })
    .into_response()
}

/// `GET /v1/producer/stake`.
pub(super) async fn get_stake(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let actor = match producer(&state, &headers, &Method::GET, &uri, b"") {
        Ok(a) => a,
        Err(r) => return r,
    };
    match state.cluster.with_state(|s| earnings_of(s, &actor)) {
        Ok(e) => Json(stake_view(&actor, &e)).into_response(),
        Err(r) => r,
    }
}

/// `POST /v1/producer/stake`.
pub(super) async fn post_stake(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match bond(&state, &headers, &uri, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn bond(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = state.body(body)?;
    let actor = producer(state, headers, &Method::POST, uri, &body)?;
    let trimmed = String::from_utf8_lossy(&body);
    if !matches!(trimmed.trim(), "" | "{}") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "body: POST /v1/producer/stake takes no parameters (empty body or {}): the amount is the policy's S_producer",
        ));
    }
    // Refusals before anything is replicated.
    let amount = policy().staking.s_producer_micro_sym;
    let (registered, balance, bonded) = state.cluster.with_state(|s| {
        let account = actor_account(&actor).ok();
        (
            s.master()
                .governance()
                .registry
                .actors
                .get(&actor)
                .map(|r| r.bonded_micro_sym),
            account.as_ref().map_or(0, |a| s.ledger().balance(a)),
            account.as_ref().map_or(0, |a| s.ledger().stake_of(a)),
        )
    });
    if let Some(stake) = registered {
        return Err(error(
            StatusCode::CONFLICT,
            format!("{actor} is already in the actor registry ({stake} µSYM bonded)"),
        ));
    }
    if bonded == 0 && balance < amount {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "{actor}: S_producer is {amount} µSYM and the balance is {balance} µSYM: nothing bonded"
            ),
        ));
    }
    let cluster = state.cluster.clone();
    let who = actor.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut ledger = ReplicatedLedger::new(cluster.clone());
        let mut masters = ConsensusReplicator::new(cluster);
        symphony_node::producer::personal::stake(&mut ledger, &mut masters, &who, &policy())
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = done {
        // A concurrent bond of the same producer is refused by the registry (409);
        // a ledger refusal is the request's (400); no quorum is 503.
        let status = match &e {
            _ if e.to_string().contains("already in the actor registry") => StatusCode::CONFLICT,
            symphony_node::NodeError::Refused(_) => StatusCode::CONFLICT,
            symphony_node::NodeError::Ledger(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        return Err(error(
            status,
            format!("{actor}: S_producer not registered: {e}"),
        ));
    }
    tracing::info!(%actor, amount, "producer stake bonded and registered");
    let e = state.cluster.with_state(|s| earnings_of(s, &actor))?;
    Ok(Json(stake_view(&actor, &e)).into_response())
}
