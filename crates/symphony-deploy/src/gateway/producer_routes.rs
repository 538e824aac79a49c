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
//!   (`symphony_master::Command::RegisterProducerStake`): its rewards become 100%;
//! - `GET /v1/producer/consent`: its consent per scope, with the history, as its
//!   Personal Vault (`pv-<subject>`) holds it;
//! - `POST /v1/producer/consent` (`{"scope": "marketing", "action": "revoke"}`):
//!   grants or revokes one scope at protocol time; a revocation blocks new tasks,
//!   not settled work;
//! - `GET /v1/producer/budget`: the remaining ε per scope and the epoch whose
//!   opening replenishes it;
//! - `GET /v1/producer/upload-key`: the upload key of the enclave hosting its
//!   Personal Vault (the producer seals receipts to it);
//! - `POST /v1/producer/upload` (`{"parse_request_hex": …}`, at most
//!   [`MAX_UPLOAD_BYTES`] of sealed receipt): its signed `parse` request, run as a
//!   free `parse` task through this master's services (states replicated through
//!   consensus) on the enterprise node hosting its Personal Vault; the reply lists
//!   the task's states.
//!
//! Earnings and stake are served from this master's applied state; refusals (not a
//! producer, already registered, balance too low) come before anything is
//! replicated. Consent and budget are forwarded to the enterprise node hosting the
//! producer's Personal Vault, over the enterprise RPC clients (and mutual TLS) the
//! master's worker dispatches slices with.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use symphony_core::consent::UsageScope;
use symphony_core::ids::ActorId;
use symphony_core::ids::SubjectId;
use symphony_economics::PolicyParams;
use symphony_ledger::SettlementLedger;
use symphony_node::producer::personal::{
    earnings, personal_vault_id, Earnings, ScopeBudget, ScopeConsent,
};
use symphony_node::settlement::actor_account;
use utoipa::{OpenApi, ToSchema};

use super::{error, AppState};
use crate::config::MasterConfig;
use crate::replicator::{Cluster, ConsensusReplicator, ReplicatedLedger};
use crate::rpc::{EnterpriseReply, EnterpriseRequest, RemoteEnterprise};
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
#[utoipa::path(get, path = "/v1/producer/consent",
    summary = "The signing producer's consent per scope with its history, from its Personal Vault",
    responses((status = 200, description = "consent", body = ProducerConsent),
              (status = 404, description = "no enterprise of this network hosts the producer's Personal Vault")))]
#[allow(dead_code)]
fn consent_doc() {}

#[utoipa::path(post, path = "/v1/producer/consent",
    summary = "Grant or revoke one usage scope in the signing producer's Personal Vault (revocation blocks new tasks, not settled work)",
    request_body = ConsentChangeRequest,
    responses((status = 200, description = "the consent after the change", body = ProducerConsent),
              (status = 400, description = "unknown scope or action, or `personal` revoked")))]
#[allow(dead_code)]
fn consent_change_doc() {}

#[utoipa::path(get, path = "/v1/producer/upload-key",
    summary = "The upload key of the enclave hosting the signing producer's Personal Vault",
    responses((status = 200, description = "upload key", body = UploadKeyView)))]
#[allow(dead_code)]
fn upload_key_doc() {}

#[utoipa::path(post, path = "/v1/producer/upload",
    summary = "Upload one sealed receipt: the producer's signed parse request (BCS, hex), run as a free parse task on its Personal Vault",
    request_body = UploadRequest,
    responses((status = 200, description = "the parse task (completed or rejected, with its states)", body = UploadView),
              (status = 400, description = "malformed, too large, or not the signing producer's request")))]
#[allow(dead_code)]
fn upload_doc() {}

#[utoipa::path(get, path = "/v1/producer/budget",
    summary = "The signing producer's remaining privacy budget (ε) per scope and the epoch that replenishes it",
    responses((status = 200, description = "budget", body = ProducerBudget)))]
#[allow(dead_code)]
fn budget_doc() {}

/// The producer routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        earnings_doc,
        stake_doc,
        bond_doc,
        consent_doc,
        consent_change_doc,
        budget_doc,
        upload_key_doc,
        upload_doc
    ),
    components(schemas(
        ProducerEarnings,
        PaymentView,
        EpochEarnings,
        ProducerStake,
        ProducerConsent,
        ScopeConsentView,
        ConsentEntryView,
        ConsentChangeRequest,
        ProducerBudget,
        ScopeBudgetView,
        UploadKeyView,
        UploadRequest,
        UploadView
    ))
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
    let run = || {
        let actor = producer(&state, &headers, &Method::GET, &uri, b"")?;
        earnings_for(&state, &actor)
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// The earnings of `actor` (the signed route's and the portal's view).
pub(super) fn earnings_for(
    state: &AppState,
    actor: &ActorId,
) -> Result<ProducerEarnings, Response> {
    let e = state.cluster.with_state(|s| earnings_of(s, actor))?;
    let by_epoch = e
        .by_epoch
        .iter()
        .map(|(epoch, kinds)| EpochEarnings {
            epoch: *epoch,
            data_quality_reward_micro_sym: kinds.get("data_quality_reward").copied().unwrap_or(0),
            data_usage_dividend_micro_sym: kinds.get("data_usage_dividend").copied().unwrap_or(0),
        })
        .collect();
    Ok(ProducerEarnings {
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
}

/// The stake of `actor` (the signed route's and the portal's view).
pub(super) fn stake_for(state: &AppState, actor: &ActorId) -> Result<ProducerStake, Response> {
    let e = state.cluster.with_state(|s| earnings_of(s, actor))?;
    Ok(stake_view(actor, &e))
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
    match stake_for(&state, &actor) {
        Ok(v) => Json(v).into_response(),
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

/// The enterprise nodes a master dispatches slices to, as the gateway reaches
/// them (the same RPC and mutual TLS as the worker), and the protocol clock.
#[derive(Default)]
pub(super) struct EnterpriseClients {
    clients: Vec<Arc<RemoteEnterprise>>,
    fixed_now_ms: Option<u64>,
    /// The master's configuration (its services run a producer's `parse` task).
    config: Option<Arc<MasterConfig>>,
}

impl EnterpriseClients {
    /// One client per configured enterprise node.
    pub(super) fn from_config(
        config: &MasterConfig,
        cluster: &Cluster,
    ) -> Result<Self, crate::DeployError> {
        let security = crate::master::transport(config)?;
        let mut clients = Vec::new();
        for (i, e) in config.enterprises.iter().enumerate() {
            let vault_id = symphony_core::ids::VaultId::new(e.vault_id.clone()).map_err(|err| {
                crate::DeployError::Config(format!("enterprises[{i}].vault_id: {err}"))
            })?;
            clients.push(Arc::new(RemoteEnterprise::new(
                vault_id,
                e.addr.clone(),
                security.clone(),
                cluster.runtime().clone(),
                std::time::Duration::from_secs(60),
            )));
        }
        Ok(Self {
            clients,
            fixed_now_ms: config.fixed_now_ms,
            config: Some(Arc::new(config.clone())),
        })
    }

    /// Protocol time: the master's injected clock (as task admission reads it) or
    /// the wall clock.
    fn now_ms(&self) -> u64 {
        self.fixed_now_ms.unwrap_or_else(crate::master::now_ms)
    }
}

/// One consent change.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentEntryView {
    /// `grant` or `revoke`.
    pub change: String,
    /// When, ms (protocol time).
    pub at_ms: u64,
}

/// Consent for one scope.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeConsentView {
    /// `personal`, `marketing`, `analytics` or `training`.
    pub scope: String,
    /// In force at `at_ms`.
    pub granted: bool,
    /// Every change, oldest first.
    pub history: Vec<ConsentEntryView>,
}

/// `GET` / `POST /v1/producer/consent`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProducerConsent {
    /// The producer.
    pub producer: String,
    /// Its Personal Vault (`pv-<subject>`).
    pub vault: String,
    /// Protocol time of the view (and of a change).
    pub at_ms: u64,
    /// Per scope.
    pub scopes: Vec<ScopeConsentView>,
}

/// `POST /v1/producer/consent` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChangeRequest {
    /// `personal`, `marketing`, `analytics` or `training` (`personal` cannot be revoked).
    pub scope: String,
    /// `grant` or `revoke`.
    pub action: String,
}

/// Budget for one scope (ε as decimal strings, fixed-point).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBudgetView {
    /// The scope.
    pub scope: String,
    /// Capacity, ε.
    pub capacity: String,
    /// Reserved by running tasks, ε.
    pub reserved: String,
    /// Committed (spent), ε.
    pub committed: String,
    /// Remaining, ε.
    pub remaining: String,
    /// Added at each epoch opening (capped at capacity), ε.
    pub replenishes_per_epoch: String,
    /// The epoch whose opening last replenished it.
    pub last_replenished_epoch: u64,
}

/// `GET /v1/producer/budget`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProducerBudget {
    /// The producer.
    pub producer: String,
    /// Its Personal Vault.
    pub vault: String,
    /// The epoch in force.
    pub epoch: u64,
    /// The epoch whose opening replenishes the budget next (`epoch + 1`).
    pub replenishes_at_epoch: u64,
    /// When the epoch in force closes by time, ms.
    pub epoch_closes_at_ms: u64,
    /// Per scope.
    pub scopes: Vec<ScopeBudgetView>,
}

/// The producer's subject (`producer:<subject>`) and the client of the enterprise
/// node hosting its Personal Vault.
fn personal_vault<'a>(
    state: &'a AppState,
    actor: &ActorId,
) -> Result<(SubjectId, &'a RemoteEnterprise), Response> {
    let name = actor.as_str().trim_start_matches("producer:");
    let subject = SubjectId::new(name).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("x-scp-caller {actor}: subject {name:?}: {e}"),
        )
    })?;
    let vault = personal_vault_id(name).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("x-scp-caller {actor}: {e}"),
        )
    })?;
    let client = state
        .enterprises
        .clients
        .iter()
        .find(|c| c.vault() == &vault)
        .map(|c| &**c)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "{actor}: no enterprise node of this network hosts its Personal Vault {vault} \
                     (a devnet hosts one with `symphony devnet up --producer-vault`)"
                ),
            )
        })?;
    Ok((subject, client))
}

/// A refusal of the enterprise node: the producer's request (400); unreachable: 503.
fn enterprise_error(e: &symphony_node::NodeError) -> Response {
    let status = match e {
        symphony_node::NodeError::Refused(_) => StatusCode::BAD_REQUEST,
        symphony_node::NodeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, format!("the Personal Vault's enterprise node: {e}"))
}

fn consent_reply(
    actor: &ActorId,
    vault: &RemoteEnterprise,
    at_ms: u64,
    reply: EnterpriseReply,
) -> Result<ProducerConsent, Response> {
    match reply {
        EnterpriseReply::ProducerConsent(scopes) => Ok(ProducerConsent {
            producer: actor.to_string(),
            vault: vault.vault().to_string(),
            at_ms,
            scopes: scopes
                .into_iter()
                .map(|c: ScopeConsent| ScopeConsentView {
                    scope: c.scope,
                    granted: c.granted,
                    history: c
                        .history
                        .into_iter()
                        .map(|h| ConsentEntryView {
                            change: h.change,
                            at_ms: h.at_ms,
                        })
                        .collect(),
                })
                .collect(),
        }),
        other => Err(error(
            StatusCode::BAD_GATEWAY,
            format!("the Personal Vault's enterprise node answered {other:?}"),
        )),
    }
}

/// `GET /v1/producer/consent`.
pub(super) async fn get_consent(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match consent(&state, &headers, &Method::GET, &uri, Ok(Bytes::new())).await {
        Ok(r) | Err(r) => r,
    }
}

/// `POST /v1/producer/consent`.
pub(super) async fn post_consent(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match consent(&state, &headers, &Method::POST, &uri, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn consent(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = if method == Method::POST {
        state.body(body)?
    } else {
        Bytes::new()
    };
    let actor = producer(state, headers, method, uri, &body)?;
    let change = if method == Method::POST {
        let req: ConsentChangeRequest = serde_json::from_slice(&body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body: expected {{\"scope\": \"marketing\", \"action\": \"grant\"|\"revoke\"}}: {e}"
                ),
            )
        })?;
        Some(consent_change(&req.scope, &req.action, "body.")?)
    } else {
        None
    };
    Ok(Json(consent_for(state, &actor, change).await?).into_response())
}

/// One consent change of a request: the scope and whether it is granted
/// (`where_` names the fields in the refusal: `body.` for the JSON route).
pub(super) fn consent_change(
    scope: &str,
    action: &str,
    where_: &str,
) -> Result<(UsageScope, bool), Response> {
    let scope_v = UsageScope::ALL
        .into_iter()
        .find(|s| s.as_str() == scope)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{where_}scope {scope:?}: expected personal, marketing, analytics or training"
                ),
            )
        })?;
    let granted = match action {
        "grant" => true,
        "revoke" => false,
        other => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("{where_}action {other:?}: expected grant or revoke"),
            ))
        }
    };
    Ok((scope_v, granted))
}

/// The consent of `actor` after `change` (none: read only), from its Personal
/// Vault: the code path of `GET` / `POST /v1/producer/consent` and of the portal.
pub(super) async fn consent_for(
    state: &AppState,
    actor: &ActorId,
    change: Option<(UsageScope, bool)>,
) -> Result<ProducerConsent, Response> {
    let (subject, client) = personal_vault(state, actor)?;
    let at_ms = state.enterprises.now_ms();
    let reply = client
        .request(&EnterpriseRequest::ProducerConsent {
            subject,
            change,
            at_ms,
        })
        .await
        .map_err(|e| enterprise_error(&e))?;
    if let Some((scope, granted)) = change {
        tracing::info!(%actor, %scope, granted, at_ms, "producer consent changed");
    }
    consent_reply(actor, client, at_ms, reply)
}

/// `GET /v1/producer/budget`.
pub(super) async fn get_budget(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match budget(&state, &headers, &uri).await {
        Ok(r) | Err(r) => r,
    }
}

async fn budget(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Response, Response> {
    let actor = producer(state, headers, &Method::GET, uri, b"")?;
    Ok(Json(budget_for(state, &actor).await?).into_response())
}

/// The remaining budget of `actor` (the signed route's and the portal's view).
pub(super) async fn budget_for(
    state: &AppState,
    actor: &ActorId,
) -> Result<ProducerBudget, Response> {
    let (subject, client) = personal_vault(state, actor)?;
    let scopes = match client
        .request(&EnterpriseRequest::ProducerBudget { subject })
        .await
        .map_err(|e| enterprise_error(&e))?
    {
        EnterpriseReply::ProducerBudget(b) => b,
        other => {
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!("the Personal Vault's enterprise node answered {other:?}"),
            ))
        }
    };
    let (epoch, closes) = state
        .cluster
        .with_state(|s| (s.master().governance().epoch.0, s.epoch_due_at_ms()));
    Ok(ProducerBudget {
        producer: actor.to_string(),
        vault: client.vault().to_string(),
        epoch,
        replenishes_at_epoch: epoch + 1,
        epoch_closes_at_ms: closes,
        scopes: scopes
            .into_iter()
            .map(|b: ScopeBudget| ScopeBudgetView {
                scope: b.scope,
                capacity: b.capacity,
                reserved: b.reserved,
                committed: b.committed,
                remaining: b.remaining,
                replenishes_per_epoch: b.replenishes_per_epoch,
                last_replenished_epoch: b.last_replenished_epoch,
            })
            .collect(),
    })
}

/// Largest sealed receipt `POST /v1/producer/upload` accepts, bytes (the hex of
/// the whole request must also fit the gateway's body limit).
pub const MAX_UPLOAD_BYTES: usize = 24 * 1024;

/// `GET /v1/producer/upload-key`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadKeyView {
    /// The producer.
    pub producer: String,
    /// Its Personal Vault.
    pub vault: String,
    /// X25519 public key of the hosting enclave, hex.
    pub upload_key: String,
}

/// `POST /v1/producer/upload` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// The producer's signed `ParseRequest` (BCS, hex): the receipt sealed to the
    /// enclave's upload key, its Vault and subject, a nonce, its signature.
    pub parse_request_hex: String,
}

/// `POST /v1/producer/upload` reply: the parse task.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadView {
    /// The producer.
    pub producer: String,
    /// Its Personal Vault.
    pub vault: String,
    /// The parse task.
    pub task_id: String,
    /// Its lifecycle states, in order.
    pub states: Vec<String>,
    /// Why it was rejected (nothing stored), if it was.
    pub reason: Option<String>,
    /// Fields read from the receipt.
    pub fields: Vec<String>,
    /// Data quality score of the stored record, basis points.
    pub quality_score_bp: Option<u32>,
    /// Fee (parse is free).
    pub fee_total: u64,
    /// The epoch.
    pub epoch: u64,
}

/// `GET /v1/producer/upload-key`.
pub(super) async fn get_upload_key(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let actor = producer(&state, &headers, &Method::GET, &uri, b"")?;
        let (_, client) = personal_vault(&state, &actor)?;
        match client
            .request(&EnterpriseRequest::UploadKey)
            .await
            .map_err(|e| enterprise_error(&e))?
        {
            EnterpriseReply::UploadKey(k) => Ok(Json(UploadKeyView {
                producer: actor.to_string(),
                vault: client.vault().to_string(),
                upload_key: hex::encode(k),
            })
            .into_response()),
            other => Err(error(
                StatusCode::BAD_GATEWAY,
                format!("the Personal Vault's enterprise node answered {other:?}"),
            )),
        }
    };
    match run.await {
        Ok(r) | Err(r) => r,
    }
}

/// `POST /v1/producer/upload`.
pub(super) async fn post_upload(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match upload(&state, &headers, &uri, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn upload(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    use symphony_node::classes::parse::ParseRequest;
    let body = state.body(body)?;
    let actor = producer(state, headers, &Method::POST, uri, &body)?;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let req: UploadRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "body: expected {{\"parse_request_hex\": \"…\"}}: {e}"
        ))
    })?;
    let bytes = hex::decode(req.parse_request_hex.trim())
        .map_err(|e| bad(format!("body.parse_request_hex: not hex: {e}")))?;
    let parse: ParseRequest = bcs::from_bytes(&bytes).map_err(|e| {
        bad(format!(
            "body.parse_request_hex: not a BCS ParseRequest ({} bytes): {e}",
            bytes.len()
        ))
    })?;
    let sealed = bcs::to_bytes(&parse.upload).map_or(usize::MAX, |b| b.len());
    if sealed > MAX_UPLOAD_BYTES {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body.parse_request_hex: the sealed receipt is {sealed} bytes; at most {MAX_UPLOAD_BYTES}"
            ),
        ));
    }
    if parse.producer != actor.as_str() {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "body: the parse request is {}'s; {actor} signed this HTTP request",
                parse.producer
            ),
        ));
    }
    let (subject, home) = personal_vault(state, &actor)?;
    if parse.subject != subject {
        return Err(bad(format!(
            "body: subject {} is not {actor}'s ({subject})",
            parse.subject
        )));
    }
    if &parse.vault != home.vault() {
        return Err(bad(format!(
            "body: Vault {} is not {actor}'s Personal Vault ({})",
            parse.vault,
            home.vault()
        )));
    }
    let Some(endpoint) = state
        .enterprises
        .clients
        .iter()
        .find(|c| c.vault() == &parse.vault)
        .cloned()
    else {
        return Err(bad(format!(
            "body: Vault {} is not on this network",
            parse.vault
        )));
    };
    let Some(config) = state.enterprises.config.clone() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway runs without a master configuration: no parse tasks",
        ));
    };
    let cluster = state.cluster.clone();
    let vault = parse.vault.to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::master::run_producer_parse(&cluster, &config, &endpoint, &parse)
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        let status = match &e {
            crate::DeployError::Node(symphony_node::NodeError::Refused(_)) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        error(status, format!("{actor}: upload not parsed: {e}"))
    })?;
    tracing::info!(%actor, task = %out.task_id, states = ?out.states, "producer upload parsed");
    Ok(Json(UploadView {
        producer: actor.to_string(),
        vault,
        task_id: out.task_id,
        states: out.states,
        reason: out.reason,
        fields: out.fields,
        quality_score_bp: out.quality.map(|q| u32::from(q.score_bp)),
        fee_total: out.fee_total,
        epoch: out.epoch_id,
    })
    .into_response())
}
