//! The response bodies of the gateway, as types: the handlers serialize these, and
//! the OpenAPI document (`openapi.rs`) derives its response schemas from them, so
//! the two cannot drift apart (`symphony-deploy/tests/gateway_api.rs` validates real responses
//! against the served document).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::state::RequestStatus;

/// Every refusal (status ≥ 400).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, for people.
    pub error: String,
    /// The reason, for programs (`bad_signature`, `replayed_nonce`,
    /// `rate_limited`, `not_found`, `method_not_allowed`, `headers_too_large`...).
    pub code: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
}

/// `202` of `POST /v1/tasks`: the request is replicated and final (2 of 3).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Acknowledged {
    /// Deterministic id of `(caller, nonce)`.
    pub request_id: String,
    /// Always `queued`.
    pub status: RequestStatus,
    /// Position in submission order.
    pub seq: u64,
    /// Log index of the `Submit`.
    pub log_index: u64,
    /// Master signatures on the commit certificate (≥ 2).
    #[schema(minimum = 2)]
    pub certificate_signatures: u64,
}

/// `GET /v1/tasks/{id}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatusView {
    /// The request id.
    pub request_id: String,
    /// `query`, `compute` or `train`.
    pub task_class: String,
    /// Where the request is.
    pub status: RequestStatus,
    /// What the request cost so far over every attempt's escrow, µSYM.
    pub fee_charged_micro_sym: u64,
    /// Escrow still locked over every attempt, µSYM.
    pub escrow_locked_micro_sym: u64,
    /// Position in submission order.
    pub seq: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Task ids of the attempts, in order.
    pub attempt_task_ids: Vec<String>,
    /// The last attempt's task id.
    pub task_id: Option<String>,
    /// Lifecycle states of the last attempt, in order (empty if never admitted).
    pub lifecycle: Vec<String>,
    /// What produced each piece of the last attempt's evidence: every slice that
    /// returned a bundle (by Vault id) and `aggregation` → `software`, `sgx` or `tdx`.
    pub enclave_kinds: std::collections::BTreeMap<String, String>,
    /// Why the task was rejected, if it was.
    pub reason: Option<String>,
    /// Why the request was refused outside the protocol flow (e.g. at admission).
    pub error: Option<String>,
}

/// `GET /v1/tasks/{id}/result`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ResultView {
    /// The request id.
    pub request_id: String,
    /// `query`, `compute` or `train`.
    pub task_class: String,
    /// `completed` or `rejected`.
    pub status: RequestStatus,
    /// Why the request was refused outside the protocol flow.
    pub error: Option<String>,
    /// The class's outcome (audience, table or model report), if any.
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<Value>,
    /// Files of a trained model (`model.safetensors` hex, `model_card.json`).
    #[schema(value_type = Option<Object>)]
    pub artifacts: Option<Value>,
}

/// A commit certificate: 2 of 3 master signatures over a state root.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CertificateView {
    /// The cluster.
    pub cluster_id: String,
    /// Log index certified.
    pub log_index: u64,
    /// Hex state root.
    pub state_root: String,
    /// Master key → hex signature.
    pub signatures: BTreeMap<String, String>,
}

/// `GET /v1/tasks/{id}/evidence`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EvidenceView {
    /// The request id.
    pub request_id: String,
    /// Where the request is.
    pub status: RequestStatus,
    /// The masters' record of the last attempt (envelope, lifecycle, slices,
    /// aggregate, settlement).
    #[schema(value_type = Option<Object>)]
    pub task: Option<Value>,
    /// Attestation reports verified, once finished.
    pub attestations_verified: Option<u32>,
    /// The latest final certificate.
    pub final_certificate: Option<CertificateView>,
    /// Equivocation evidence held (conflicting signed roots).
    pub equivocation_evidence: u64,
}

/// `GET /v1/cluster` (unauthenticated, no task data).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// This master's node id.
    pub node_id: u64,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Whether it is the leader.
    pub is_leader: bool,
    /// Raft term.
    pub term: u64,
    /// Last applied log index.
    pub last_applied_index: Option<u64>,
    /// Last index with a final certificate.
    pub final_index: Option<u64>,
    /// Hex state root at the applied index.
    pub state_root: String,
    /// Requests known.
    pub requests_total: u64,
    /// Requests completed or rejected.
    pub requests_final: u64,
    /// Escrows in the replicated ledger.
    pub escrows: u64,
    /// Escrows paid out.
    pub escrows_paid_out: u64,
    /// Escrow still locked, µSYM.
    pub escrow_remaining_micro_sym: u64,
    /// `result_delivered` audit events.
    pub deliveries_recorded: u64,
}

/// One of the caller's task requests in `GET /v1/tasks`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TaskListItem {
    /// Deterministic id of `(caller, nonce)`.
    pub request_id: String,
    /// `query`, `compute` or `train`.
    pub task_class: String,
    /// Where the request stands.
    pub status: RequestStatus,
    /// Position in submission order.
    pub seq: u64,
    /// When the gateway received it, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// Attempts started (a leader change starts a new one).
    pub attempts: u64,
    /// The latest attempt's task id, once one started.
    pub task_id: Option<String>,
}

/// `GET /v1/tasks`: the caller's own task requests, newest first.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// The authenticated caller.
    pub caller: String,
    /// How many requests the caller has (the list holds at most 1,000, the newest).
    pub total: u64,
    /// The requests, newest first.
    pub requests: Vec<TaskListItem>,
}
