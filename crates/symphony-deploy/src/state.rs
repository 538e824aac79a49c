//! The replicated state of a deployed master cluster: the master state machine, the
//! settlement ledger, and the gateway's request queue, behind one
//! [`ReplicatedStateMachine`] so that openraft orders all three in one log.
//!
//! Why the ledger is replicated here: in the embedded network one ledger object is
//! shared by construction; across processes a per-master ledger would diverge at the
//! first leader change. Replaying ledger commands through the log keeps one ledger
//! whose every escrow lock, payout and refund is certified like any master command,
//! and the ledger's own idempotence (one payout per escrow) makes a retried payout a
//! no-op. A chain adapter would replace it without touching the callers.
//!
//! The state root is a hash chain over the applied commands: `root' = H(root, command)`.
//! Equal roots mean equal histories; it costs O(1) per command however large the
//! state grows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use symphony_consensus::{ReplicatedStateMachine, RestoreError, StateRoot};
use symphony_core::encoding::content_hash;
use symphony_core::encoding::tagged_hash;
use symphony_core::envelope::TaskClass;
use symphony_ledger::{Genesis, LedgerEvent, MemoryLedger, SettlementLedger};
use symphony_master::{Command, Event, MasterState};
use symphony_node::aggregation::AUDIENCE_HASH_TAG;
use symphony_node::classes::compute::table_hash;
use symphony_node::settlement::{SettlementTables, StoreWrite};
use symphony_node::task::GroupValue;
use symphony_node::task::{TaskOutcome, TaskSpec};
use symphony_node::training::MODEL_ARTIFACT_TAG;

/// Where a submitted request is in its life at the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Acknowledged, waiting for the leader's worker.
    Queued,
    /// An attempt is running on the leader.
    Running,
    /// Finished with the task `completed`.
    Completed,
    /// Finished with the task `rejected` (or refused at admission).
    Rejected,
}

impl RequestStatus {
    /// Completed or rejected: no further attempt.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Rejected)
    }
}

/// A task submission as the caller signed it: the task of any class, a nonce, and
/// one signature per allowed attempt (attempt `i` signs
/// `TaskSpec::request_hash(nonce * 4 + i)`).
/// Extra attempts let a new leader re-run a task that a crashed leader left
/// half-done, without the masters ever signing for the caller.
///
/// The gateway acknowledges a submission on its one header signature (which covers
/// this body) after decoding the attempt signatures; the leader verifies them all in
/// one batch before the first attempt ([`TaskSubmission::verify_attempts`]) and
/// refuses the request, free, naming the first bad one; the core's admission checks
/// the signature of each attempt it runs again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    /// The task, tagged by class (`{"query": …}`, `{"compute": …}`, `{"train": …}`).
    #[serde(with = "crate::wire")]
    pub spec: TaskSpec,
    /// The caller's nonce (< 2^62), equal to the `x-scp-nonce` header.
    #[schema(maximum = 4611686018427387903_i64)]
    pub nonce: u64,
    /// Hex ed25519 signatures, attempt 0 first (1 to [`MAX_ATTEMPTS`]): attempt `i`
    /// signs `TaskSpec::request_hash(nonce * 4 + i)`.
    #[schema(min_items = 1, max_items = 4)]
    pub attempt_signatures: Vec<String>,
}

/// Most attempts one submission may carry.
pub const MAX_ATTEMPTS: usize = 4;

/// Why the attempt signatures of a submission were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// Fewer than one or more than [`MAX_ATTEMPTS`] signatures.
    #[error("attempt_signatures must hold 1 to {MAX_ATTEMPTS} signatures")]
    Count,
    /// Not a hex-encoded 64-byte ed25519 signature.
    #[error("attempt_signatures[{0}] is not a hex-encoded 64-byte ed25519 signature")]
    Malformed(usize),
    /// The request hash of the spec could not be computed.
    #[error("{0}")]
    Hash(String),
    /// The signature does not verify for the caller's key.
    #[error("attempt_signatures[{index}] does not verify for {caller:?}")]
    BadSignature {
        /// The first attempt that does not verify.
        index: usize,
        /// The caller.
        caller: String,
    },
}

impl TaskSubmission {
    /// The attempt signatures decoded, without checking them cryptographically: what
    /// the gateway checks before acknowledging a submission (its one signature check
    /// is the request header's, which covers this body).
    pub fn attempt_signature_bytes(&self) -> Result<Vec<ed25519_dalek::Signature>, AttemptError> {
        if self.attempt_signatures.is_empty() || self.attempt_signatures.len() > MAX_ATTEMPTS {
            return Err(AttemptError::Count);
        }
        self.attempt_signatures
            .iter()
            .enumerate()
            .map(|(i, sig_hex)| {
                hex::decode(sig_hex)
                    .ok()
                    .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                    .ok_or(AttemptError::Malformed(i))
            })
            .collect()
    }

    /// Checks every attempt signature against the caller's key: attempt `i` must sign
    /// `TaskSpec::request_hash(attempt_nonce(nonce, i))`. One batch verification for
    /// all attempts (same key, one message per attempt nonce); on failure the
    /// signatures are checked one by one to name the first bad one. The leader runs
    /// this once, before a request's first attempt; the core's admission checks the
    /// attempt it runs again.
    pub fn verify_attempts(
        &self,
        key: &ed25519_dalek::VerifyingKey,
        caller: &str,
    ) -> Result<(), AttemptError> {
        use ed25519_dalek::Verifier as _;
        let signatures = self.attempt_signature_bytes()?;
        let hashes = (0..signatures.len())
            .map(|i| {
                self.spec
                    .request_hash(attempt_nonce(self.nonce, i))
                    .map_err(|e| AttemptError::Hash(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let messages: Vec<&[u8]> = hashes.iter().map(|h| &h.0[..]).collect();
        let keys = vec![*key; signatures.len()];
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
            let index = messages
                .iter()
                .zip(&signatures)
                .position(|(m, sig)| key.verify(m, sig).is_err())
                .unwrap_or(0);
            return Err(AttemptError::BadSignature {
                index,
                caller: caller.to_owned(),
            });
        }
        Ok(())
    }
}

/// The nonce signed for attempt `attempt` of a submission with nonce `nonce`.
pub fn attempt_nonce(nonce: u64, attempt: usize) -> u64 {
    nonce
        .wrapping_mul(MAX_ATTEMPTS as u64)
        .wrapping_add(attempt as u64)
}

/// One request known to the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in submission order.
    pub seq: u64,
    /// The caller (actor id).
    pub caller: String,
    /// What was submitted.
    pub submission: TaskSubmission,
    /// Caller's timestamp of the HTTP request.
    pub received_at_ms: u64,
    /// Status.
    pub status: RequestStatus,
    /// Task ids of the attempts started, in order.
    pub attempts: Vec<String>,
    /// The outcome (completed or rejected by the protocol).
    #[serde(with = "crate::wire")]
    pub outcome: Option<TaskOutcome>,
    /// Why the request was rejected outside the protocol flow (e.g. admission refused).
    pub error: Option<String>,
}

/// A command of the deployed master cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DeployCommand {
    /// A master state machine command.
    Master(Command),
    /// A settlement ledger command.
    Ledger(symphony_ledger::Command),
    /// Acknowledge a request (the gateway's `202`).
    Submit {
        /// Deterministic id of `(caller, nonce)`.
        request_id: String,
        /// The caller.
        caller: String,
        /// The submission.
        submission: TaskSubmission,
        /// Caller's timestamp.
        received_at_ms: u64,
    },
    /// The leader starts an attempt with this task id.
    Start {
        /// Request.
        request_id: String,
        /// Task id of the attempt.
        task_id: String,
    },
    /// The leader stages a verified result before settlement moves money, so any
    /// master can deliver it if the leader crashes. Refused unless it hashes to
    /// what the master state recorded for the task (the aggregate's result hash;
    /// for a model, the accepted composite result's model hash).
    StageResult {
        /// The task.
        task_id: String,
        /// The result.
        result: StagedResult,
    },
    /// The request reached its final status (exactly once).
    Finish {
        /// Request.
        request_id: String,
        /// Completed or rejected.
        status: RequestStatus,
        /// The outcome, when the protocol flow produced one.
        #[serde(with = "crate::wire")]
        outcome: Option<TaskOutcome>,
        /// Why, when it did not.
        error: Option<String>,
    },
    /// Governance is configured at genesis (`command` must be
    /// `Command::ConfigureGovernance`) and the genesis epoch opens at `opened_at_ms`
    /// (the leader's wall clock): the time trigger counts the genesis epoch from
    /// there, not from 0.
    GovernanceGenesis {
        /// The master state machine's configuration command.
        command: Command,
        /// When the genesis epoch opened, ms since the Unix epoch.
        opened_at_ms: u64,
    },
    /// A Vault applied the opening of `epoch` (its budgets replenished, once per
    /// epoch): recorded so that every master shows it and a new leader knows
    /// which Vaults are behind.
    EpochApplied {
        /// The Vault.
        vault_id: String,
        /// The epoch whose opening it applied.
        epoch: u64,
        /// Budget accounts it replenished.
        accounts: u64,
    },
    /// A write of the settlement plane's store (rows, per-epoch payout groups,
    /// enterprise credits, composite links, meta), replicated so that a master
    /// taking over after a leader crash has everything settlement needs
    /// (`symphony_node::settlement::SettlementTables::apply`: rows only forward,
    /// payout groups append-only).
    Settlement(StoreWrite),
}

/// What a Vault last applied of the epoch events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultEpoch {
    /// The latest epoch whose opening it applied.
    pub epoch: u64,
    /// Budget accounts it replenished for it.
    pub accounts: u64,
}

/// A verified result staged in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StagedResult {
    /// A `query` audience (contact handles).
    Audience(Vec<String>),
    /// A `train` task's model artifacts.
    Model(ModelArtifacts),
    /// A `compute` task's released (noisy) table.
    Table(StagedTable),
}

/// A `compute` task's released table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedTable {
    /// Released groups.
    pub groups: Vec<GroupValue>,
    /// Suppressed groups.
    pub suppressed_groups: Vec<String>,
}

/// A trained model as delivered: the safetensors file and its model card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelArtifacts {
    /// `model.safetensors` bytes.
    pub model: Vec<u8>,
    /// `model_card.json` bytes (a JSON object naming the task).
    pub card: Vec<u8>,
}

/// What a [`DeployCommand`] returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum DeployResponse {
    /// Events of a master command, or why it was refused (state unchanged).
    Master(Result<Vec<Event>, String>),
    /// `(first_seq, events, already_applied)` of a ledger command, or its error.
    Ledger(Result<(u64, Vec<LedgerEvent>, bool), String>),
    /// Queue commands: `Ok(seq)` or why they were refused (state unchanged).
    Queue(Result<u64, String>),
    /// The command bytes did not decode.
    Malformed(String),
}

/// The replicated state.
pub struct DeployState {
    master: MasterState,
    ledger: MemoryLedger,
    genesis: Genesis,
    ledger_log: Vec<symphony_ledger::Command>,
    requests: BTreeMap<String, RequestRecord>,
    by_seq: BTreeMap<u64, String>,
    /// Requests not yet final (kept with `requests`; recomputed on restore).
    pending: usize,
    /// Verified results staged for delivery, by task id (dropped when the request
    /// finishes: its outcome then carries the result).
    staged: BTreeMap<String, Vec<String>>,
    /// Model artifacts of `train` tasks, by task id: staged before the payout and
    /// kept, so any master serves them after completion.
    artifacts: BTreeMap<String, ModelArtifacts>,
    /// Released tables of `compute` tasks, by task id (dropped when the request
    /// finishes, like audiences).
    tables: BTreeMap<String, StagedTable>,
    /// When the genesis epoch opened (set once, with the governance configuration).
    genesis_opened_at_ms: Option<u64>,
    /// The latest epoch each Vault applied, by Vault id.
    vault_epochs: BTreeMap<String, VaultEpoch>,
    /// The settlement plane's tables (rows, epoch payout groups, credits).
    settlement: SettlementTables,
    root: StateRoot,
    applied: u64,
}

#[derive(Serialize, Deserialize)]
struct SnapshotRepr {
    master: Vec<u8>,
    genesis: Genesis,
    ledger_log: Vec<symphony_ledger::Command>,
    requests: BTreeMap<String, RequestRecord>,
    staged: BTreeMap<String, Vec<String>>,
    artifacts: BTreeMap<String, ModelArtifacts>,
    tables: BTreeMap<String, StagedTable>,
    root: StateRoot,
    applied: u64,
    genesis_opened_at_ms: Option<u64>,
    vault_epochs: BTreeMap<String, VaultEpoch>,
    settlement: SettlementTables,
}

/// The deterministic id of a caller's request.
pub fn request_id(caller: &str, nonce: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"scp/gateway-request/v1");
    h.update((caller.len() as u64).to_be_bytes());
    h.update(caller.as_bytes());
    h.update(nonce.to_be_bytes());
    let d = h.finalize();
    format!("req-{}", hex::encode(&d[..12]))
}

impl DeployState {
    /// An empty state over a ledger created from `genesis`.
    pub fn new(genesis: Genesis) -> Result<Self, symphony_ledger::LedgerError> {
        Ok(Self {
            master: MasterState::new(),
            ledger: MemoryLedger::new(&genesis)?,
            genesis,
            ledger_log: Vec::new(),
            requests: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            pending: 0,
            staged: BTreeMap::new(),
            artifacts: BTreeMap::new(),
            tables: BTreeMap::new(),
            genesis_opened_at_ms: None,
            vault_epochs: BTreeMap::new(),
            settlement: SettlementTables::default(),
            root: [0u8; 32],
            applied: 0,
        })
    }

    /// When the current epoch opened, ms: the genesis epoch counts from the time
    /// governance was configured ([`DeployCommand::GovernanceGenesis`]), later
    /// epochs from their close.
    pub fn epoch_opened_at_ms(&self) -> u64 {
        let g = self.master.governance();
        if g.history.is_empty() {
            g.epoch_opened_at_ms
                .max(self.genesis_opened_at_ms.unwrap_or(0))
        } else {
            g.epoch_opened_at_ms
        }
    }

    /// When the genesis epoch opened (governance configured), ms.
    pub fn genesis_opened_at_ms(&self) -> Option<u64> {
        self.genesis_opened_at_ms
    }

    /// When the time trigger closes the current epoch, ms.
    pub fn epoch_due_at_ms(&self) -> u64 {
        self.epoch_opened_at_ms()
            .saturating_add(self.master.governance().epoch_length_ms)
    }

    /// Whether governance is configured (master keys, epoch length).
    pub fn governance_configured(&self) -> bool {
        !self.master.governance().master_keys.is_empty()
    }

    /// The latest epoch each Vault applied, by Vault id (a Vault not listed has
    /// applied none since genesis).
    pub fn vault_epochs(&self) -> &BTreeMap<String, VaultEpoch> {
        &self.vault_epochs
    }

    /// The master state machine.
    pub fn master(&self) -> &MasterState {
        &self.master
    }

    /// The settlement ledger.
    pub fn ledger(&self) -> &MemoryLedger {
        &self.ledger
    }

    /// The ledger's genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The ledger commands applied (each once), in order: genesis + these rebuild
    /// the ledger.
    pub fn ledger_log(&self) -> &[symphony_ledger::Command] {
        &self.ledger_log
    }

    /// The settlement plane's replicated tables.
    pub fn settlement(&self) -> &SettlementTables {
        &self.settlement
    }

    /// A request by id.
    pub fn request(&self, request_id: &str) -> Option<&RequestRecord> {
        self.requests.get(request_id)
    }

    /// All requests in submission order.
    pub fn requests(&self) -> impl Iterator<Item = &RequestRecord> {
        self.by_seq.values().filter_map(|id| self.requests.get(id))
    }

    /// Every request with its id, in submission order.
    pub fn requests_by_id(&self) -> impl Iterator<Item = (&String, &RequestRecord)> {
        self.by_seq
            .values()
            .filter_map(|id| self.requests.get_key_value(id))
    }

    /// The oldest request that is not final, with its id.
    pub fn next_pending(&self) -> Option<(String, RequestRecord)> {
        self.by_seq.values().find_map(|id| {
            let r = self.requests.get(id)?;
            (!r.status.is_final()).then(|| (id.clone(), r.clone()))
        })
    }

    /// Requests acknowledged and not yet final (queued or running).
    pub fn pending_count(&self) -> usize {
        self.pending
    }

    /// The audience staged for `task_id`, if its request has not finished yet.
    pub fn staged(&self, task_id: &str) -> Option<&Vec<String>> {
        self.staged.get(task_id)
    }

    /// The model artifacts staged for the `train` task `task_id`.
    pub fn artifacts(&self, task_id: &str) -> Option<&ModelArtifacts> {
        self.artifacts.get(task_id)
    }

    /// The table staged for the `compute` task `task_id`, if its request has not
    /// finished yet.
    pub fn table(&self, task_id: &str) -> Option<&StagedTable> {
        self.tables.get(task_id)
    }

    /// Items of the verified result staged for `task_id` (audience size, or 1 for a
    /// model); `None` if nothing is staged.
    pub fn staged_items(&self, task_id: &str) -> Option<u64> {
        self.staged
            .get(task_id)
            .map(|a| a.len() as u64)
            .or_else(|| self.artifacts.get(task_id).map(|_| 1))
            .or_else(|| self.tables.get(task_id).map(|t| t.groups.len() as u64))
    }

    /// Commands applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    fn apply_command(&mut self, command: DeployCommand) -> DeployResponse {
        match command {
            DeployCommand::Master(c) => {
                DeployResponse::Master(self.master.apply(&c).map_err(|e| e.to_string()))
            }
            DeployCommand::Ledger(c) => {
                let r = self.ledger.execute(c.clone());
                if r.as_ref().is_ok_and(|o| !o.already_applied) {
                    self.ledger_log.push(c);
                }
                DeployResponse::Ledger(
                    r.map(|o| (o.first_seq, o.events, o.already_applied))
                        .map_err(|e| e.to_string()),
                )
            }
            DeployCommand::Submit {
                request_id,
                caller,
                submission,
                received_at_ms,
            } => DeployResponse::Queue(self.submit(request_id, caller, submission, received_at_ms)),
            DeployCommand::Start {
                request_id,
                task_id,
            } => DeployResponse::Queue(self.start(&request_id, task_id)),
            DeployCommand::StageResult { task_id, result } => DeployResponse::Queue(match result {
                StagedResult::Audience(audience) => self.stage(task_id, audience),
                StagedResult::Model(artifacts) => self.stage_model(task_id, artifacts),
                StagedResult::Table(table) => self.stage_table(task_id, table),
            }),
            DeployCommand::Finish {
                request_id,
                status,
                outcome,
                error,
            } => DeployResponse::Queue(self.finish(&request_id, status, outcome, error)),
            DeployCommand::GovernanceGenesis {
                command,
                opened_at_ms,
            } => DeployResponse::Master(self.governance_genesis(&command, opened_at_ms)),
            DeployCommand::EpochApplied {
                vault_id,
                epoch,
                accounts,
            } => DeployResponse::Queue(self.epoch_applied(vault_id, epoch, accounts)),
            DeployCommand::Settlement(write) => DeployResponse::Queue(
                self.settlement
                    .apply(&write)
                    .map(|()| self.settlement.settlements.len() as u64)
                    .map_err(|e| e.to_string()),
            ),
        }
    }

    fn governance_genesis(
        &mut self,
        command: &Command,
        opened_at_ms: u64,
    ) -> Result<Vec<Event>, String> {
        if !matches!(command, Command::ConfigureGovernance { .. }) {
            return Err("governance genesis carries ConfigureGovernance only".into());
        }
        let events = self.master.apply(command).map_err(|e| e.to_string())?;
        self.genesis_opened_at_ms = Some(opened_at_ms);
        Ok(events)
    }

    fn epoch_applied(
        &mut self,
        vault_id: String,
        epoch: u64,
        accounts: u64,
    ) -> Result<u64, String> {
        let current = self.master.current_epoch().0;
        if epoch > current {
            return Err(format!(
                "{vault_id} cannot have applied epoch-{epoch}: epoch-{current} is current"
            ));
        }
        let entry = self
            .vault_epochs
            .entry(vault_id)
            .or_insert(VaultEpoch { epoch, accounts });
        if epoch >= entry.epoch {
            *entry = VaultEpoch { epoch, accounts };
        }
        Ok(entry.epoch)
    }

    fn stage_table(&mut self, task_id: String, table: StagedTable) -> Result<u64, String> {
        let tid = symphony_core::ids::TaskId::new(task_id.clone()).map_err(|e| e.to_string())?;
        let aggregate = self
            .master
            .task(&tid)
            .and_then(|t| t.aggregate.as_ref())
            .ok_or_else(|| format!("task {task_id} has no recorded aggregate to stage"))?;
        if table_hash(&table.groups, &table.suppressed_groups) != aggregate.result_hash {
            return Err(format!(
                "staged table of {task_id} does not hash to the recorded aggregate"
            ));
        }
        if self.tables.contains_key(&task_id) {
            return Err(format!("a result of {task_id} is already staged"));
        }
        let n = table.groups.len() as u64;
        self.tables.insert(task_id, table);
        Ok(n)
    }

    fn stage(&mut self, task_id: String, audience: Vec<String>) -> Result<u64, String> {
        let tid = symphony_core::ids::TaskId::new(task_id.clone()).map_err(|e| e.to_string())?;
        let aggregate = self
            .master
            .task(&tid)
            .and_then(|t| t.aggregate.as_ref())
            .ok_or_else(|| format!("task {task_id} has no recorded aggregate to stage"))?;
        let hash = content_hash(AUDIENCE_HASH_TAG, &audience).map_err(|e| e.to_string())?;
        if hash != aggregate.result_hash {
            return Err(format!(
                "staged result of {task_id} does not hash to the recorded aggregate"
            ));
        }
        if self.staged.contains_key(&task_id) {
            return Err(format!("a result of {task_id} is already staged"));
        }
        let n = audience.len() as u64;
        self.staged.insert(task_id, audience);
        Ok(n)
    }

    fn stage_model(&mut self, task_id: String, artifacts: ModelArtifacts) -> Result<u64, String> {
        let tid = symphony_core::ids::TaskId::new(task_id.clone()).map_err(|e| e.to_string())?;
        let task = self
            .master
            .task(&tid)
            .ok_or_else(|| format!("unknown task {task_id}"))?;
        if task.envelope.body().task_class != TaskClass::Train {
            return Err(format!("task {task_id} is not a train task"));
        }
        let result = self
            .master
            .composite(&tid)
            .and_then(|c| c.result.as_ref())
            .filter(|r| r.accepted)
            .ok_or_else(|| format!("task {task_id} has no accepted composite result to stage"))?;
        if tagged_hash(MODEL_ARTIFACT_TAG, &artifacts.model) != result.model_hash {
            return Err(format!(
                "staged model of {task_id} does not hash to the recorded composite result"
            ));
        }
        let card: serde_json::Value = serde_json::from_slice(&artifacts.card)
            .map_err(|e| format!("model card of {task_id} is not JSON: {e}"))?;
        if card.get("task_id").and_then(serde_json::Value::as_str) != Some(task_id.as_str()) {
            return Err(format!("model card does not name task {task_id}"));
        }
        // The card may be re-staged with the settlement filled in; the model never
        // changes once staged.
        if let Some(prev) = self.artifacts.get(&task_id) {
            if prev.model != artifacts.model {
                return Err(format!("a different model of {task_id} is already staged"));
            }
        }
        self.artifacts.insert(task_id, artifacts);
        Ok(1)
    }

    fn submit(
        &mut self,
        request_id: String,
        caller: String,
        submission: TaskSubmission,
        received_at_ms: u64,
    ) -> Result<u64, String> {
        // The id is a function of (caller, nonce); a command naming another is refused.
        if request_id != self::request_id(&caller, submission.nonce) {
            return Err(format!(
                "request id {request_id} does not match caller and nonce"
            ));
        }
        if self.requests.contains_key(&request_id) {
            return Err(format!(
                "nonce {} of {caller} was already used: replayed request refused",
                submission.nonce
            ));
        }
        let seq = self.by_seq.len() as u64;
        self.by_seq.insert(seq, request_id.clone());
        self.pending += 1;
        self.requests.insert(
            request_id,
            RequestRecord {
                seq,
                caller,
                submission,
                received_at_ms,
                status: RequestStatus::Queued,
                attempts: Vec::new(),
                outcome: None,
                error: None,
            },
        );
        Ok(seq)
    }

    fn start(&mut self, request_id: &str, task_id: String) -> Result<u64, String> {
        let r = self
            .requests
            .get_mut(request_id)
            .ok_or_else(|| format!("unknown request {request_id}"))?;
        if r.status.is_final() {
            return Err(format!("request {request_id} is already final"));
        }
        if r.attempts.len() >= r.submission.attempt_signatures.len() {
            return Err(format!("request {request_id} has no attempt left"));
        }
        r.status = RequestStatus::Running;
        r.attempts.push(task_id);
        Ok(r.attempts.len() as u64)
    }

    fn finish(
        &mut self,
        request_id: &str,
        status: RequestStatus,
        outcome: Option<TaskOutcome>,
        error: Option<String>,
    ) -> Result<u64, String> {
        let r = self
            .requests
            .get_mut(request_id)
            .ok_or_else(|| format!("unknown request {request_id}"))?;
        if r.status.is_final() {
            return Err(format!("request {request_id} is already final"));
        }
        if !status.is_final() {
            return Err("finish needs a final status".into());
        }
        r.status = status;
        r.outcome = outcome;
        r.error = error;
        for t in &r.attempts {
            self.staged.remove(t);
            self.tables.remove(t);
        }
        self.pending = self.pending.saturating_sub(1);
        Ok(r.seq)
    }
}

impl ReplicatedStateMachine for DeployState {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.root);
        h.update(command);
        self.root = h.finalize().into();
        self.applied += 1;
        let response = match bcs::from_bytes::<DeployCommand>(command) {
            Ok(c) => self.apply_command(c),
            Err(e) => DeployResponse::Malformed(e.to_string()),
        };
        // Every variant encodes (no floats, no maps with non-canonical keys).
        bcs::to_bytes(&response).unwrap_or_default()
    }

    fn state_root(&self) -> StateRoot {
        self.root
    }

    fn snapshot(&self) -> Vec<u8> {
        let repr = SnapshotRepr {
            master: self.master.snapshot().unwrap_or_default(),
            genesis: self.genesis.clone(),
            ledger_log: self.ledger_log.clone(),
            requests: self.requests.clone(),
            staged: self.staged.clone(),
            artifacts: self.artifacts.clone(),
            tables: self.tables.clone(),
            root: self.root,
            applied: self.applied,
            genesis_opened_at_ms: self.genesis_opened_at_ms,
            vault_epochs: self.vault_epochs.clone(),
            settlement: self.settlement.clone(),
        };
        bcs::to_bytes(&repr).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let repr: SnapshotRepr = bcs::from_bytes(snapshot).map_err(RestoreError::new)?;
        let master = MasterState::restore(&repr.master).map_err(RestoreError::new)?;
        let mut ledger = MemoryLedger::new(&repr.genesis).map_err(RestoreError::new)?;
        for c in &repr.ledger_log {
            ledger.execute(c.clone()).map_err(RestoreError::new)?;
        }
        let by_seq = repr
            .requests
            .iter()
            .map(|(id, r)| (r.seq, id.clone()))
            .collect();
        let pending = repr
            .requests
            .values()
            .filter(|r| !r.status.is_final())
            .count();
        *self = Self {
            master,
            ledger,
            genesis: repr.genesis,
            ledger_log: repr.ledger_log,
            requests: repr.requests,
            by_seq,
            pending,
            staged: repr.staged,
            artifacts: repr.artifacts,
            tables: repr.tables,
            genesis_opened_at_ms: repr.genesis_opened_at_ms,
            vault_epochs: repr.vault_epochs,
            settlement: repr.settlement,
            root: repr.root,
            applied: repr.applied,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DeployState {
        DeployState::new(crate::loopback::empty_genesis()).unwrap()
    }

    fn apply(s: &mut DeployState, c: &DeployCommand) -> DeployResponse {
        bcs::from_bytes(&s.apply(&bcs::to_bytes(c).unwrap())).unwrap()
    }

    fn submit(nonce: u64) -> DeployCommand {
        let spec = TaskSpec::from_toml(
            "advertiser = \"a:b\"\nbrand = \"B\"\ncountry = \"SG\"\nwindow_days = 30\naudience_cap = 10\nselection = \"random_sampling\"\nusage_scope = \"marketing\"\n",
        )
        .unwrap();
        DeployCommand::Submit {
            request_id: request_id("a:b", nonce),
            caller: "a:b".into(),
            submission: TaskSubmission {
                spec,
                nonce,
                attempt_signatures: vec!["00".into(); 2],
            },
            received_at_ms: 1,
        }
    }

    #[test]
    fn replay_refused_finish_once_attempts_bounded_snapshot_roundtrip() {
        let mut s = state();
        assert!(matches!(
            apply(&mut s, &submit(7)),
            DeployResponse::Queue(Ok(0))
        ));
        assert!(matches!(
            apply(&mut s, &submit(7)),
            DeployResponse::Queue(Err(_))
        ));
        assert_eq!(s.pending_count(), 1);
        let id = request_id("a:b", 7);
        let start = |t: &str| DeployCommand::Start {
            request_id: id.clone(),
            task_id: t.into(),
        };
        assert!(matches!(
            apply(&mut s, &start("t1")),
            DeployResponse::Queue(Ok(1))
        ));
        assert!(matches!(
            apply(&mut s, &start("t2")),
            DeployResponse::Queue(Ok(2))
        ));
        // Two signatures: no third attempt.
        assert!(matches!(
            apply(&mut s, &start("t3")),
            DeployResponse::Queue(Err(_))
        ));
        let finish = DeployCommand::Finish {
            request_id: id.clone(),
            status: RequestStatus::Rejected,
            outcome: None,
            error: Some("x".into()),
        };
        assert!(matches!(
            apply(&mut s, &finish),
            DeployResponse::Queue(Ok(0))
        ));
        assert!(matches!(
            apply(&mut s, &finish),
            DeployResponse::Queue(Err(_))
        ));
        assert!(s.next_pending().is_none());
        assert_eq!(s.pending_count(), 0);
        let mut restored = state();
        restored.restore(&s.snapshot()).unwrap();
        assert_eq!(restored.state_root(), s.state_root());
        assert_eq!(
            restored.request(&id).unwrap().status,
            RequestStatus::Rejected
        );
        let r: DeployResponse = bcs::from_bytes(&s.apply(b"garbage")).unwrap();
        assert!(matches!(r, DeployResponse::Malformed(_)));
    }

    #[test]
    fn a_result_is_staged_only_against_a_recorded_aggregate() {
        let mut s = state();
        let stage = DeployCommand::StageResult {
            task_id: "task-unknown".into(),
            result: StagedResult::Audience(vec!["+6580000000".into()]),
        };
        match apply(&mut s, &stage) {
            DeployResponse::Queue(Err(e)) => assert!(e.contains("no recorded aggregate"), "{e}"),
            other => panic!("staged without an aggregate: {other:?}"),
        }
        assert!(s.staged("task-unknown").is_none());
        let bad = DeployCommand::StageResult {
            task_id: "not a task id!".into(),
            result: StagedResult::Audience(vec![]),
        };
        assert!(matches!(apply(&mut s, &bad), DeployResponse::Queue(Err(_))));
        // A model for a task the masters never admitted is refused too.
        let model = DeployCommand::StageResult {
            task_id: "train-unknown-1".into(),
            result: StagedResult::Model(ModelArtifacts {
                model: vec![1, 2, 3],
                card: b"{}".to_vec(),
            }),
        };
        match apply(&mut s, &model) {
            DeployResponse::Queue(Err(e)) => assert!(e.contains("unknown task"), "{e}"),
            other => panic!("model staged for an unknown task: {other:?}"),
        }
        assert!(s.artifacts("train-unknown-1").is_none());
        assert!(matches!(apply(&mut s, &bad), DeployResponse::Queue(Err(_))));
        // Snapshots carry staged results (none here) and restore to the same root.
        let mut restored = state();
        restored.restore(&s.snapshot()).unwrap();
        assert_eq!(restored.state_root(), s.state_root());
    }

    /// A train outcome as a leader reports it (floats included).
    fn train_outcome(task: &str) -> TaskOutcome {
        let o: symphony_node::training::TrainOutcome = serde_json::from_value(serde_json::json!({
            "task_id": task, "envelope_hash": "ab", "states": ["accepted", "completed"],
            "reason": null, "rounds_run": 2, "max_rounds": 3, "rounds_budgeted": 3,
            "converged": false, "convergence_not_reached": true,
            "stop_reason": "convergence_not_reached", "epsilon_spent": 0.30000000000000004,
            "epsilon_spent_micro": 300000, "epsilon_allocation": 0.9, "delta": 1e-5,
            "auc_holdout": 0.6123456789, "accuracy_holdout": 0.7, "mia_advantage": 0.01,
            "accepted": true, "n_slices": 8, "n_objects": 11, "round_states": ["closed"],
            "attestations_verified": 11, "fee_locked": 10, "fee_total": 7, "refund": 3,
            "fee_shares": {"treasury": 7}, "round_settlements": {"0": [0, 1]},
            "settlement_state": "finalized", "composite_link": "cd",
            "rounds": [{"round": 0, "epoch_id": 0, "vaults": 4, "examples": 100,
                        "train_loss": 0.123_456_789_012_345_68, "holdout_loss": 0.69, "holdout_examples": 25,
                        "epsilon_round_micro": 150000, "epsilon_cumulative": 0.15}],
            "model_path": "/x/model.safetensors", "model_card_path": null,
            "curve_path": null, "model_sha256": null,
        }))
        .unwrap();
        TaskOutcome::Train(Box::new(o))
    }

    #[test]
    fn a_train_submission_and_outcome_survive_the_log_and_a_snapshot_exactly() {
        let mut s = state();
        let spec = TaskSpec::from_toml(include_str!("../../../examples/train.toml")).unwrap();
        let caller = spec.submitter().to_owned();
        let submit = DeployCommand::Submit {
            request_id: request_id(&caller, 3),
            caller: caller.clone(),
            submission: TaskSubmission {
                spec: spec.clone(),
                nonce: 3,
                attempt_signatures: vec!["00".into()],
            },
            received_at_ms: 1,
        };
        assert!(matches!(
            apply(&mut s, &submit),
            DeployResponse::Queue(Ok(0))
        ));
        let id = request_id(&caller, 3);
        let start = DeployCommand::Start {
            request_id: id.clone(),
            task_id: "train-abc-3".into(),
        };
        assert!(matches!(
            apply(&mut s, &start),
            DeployResponse::Queue(Ok(1))
        ));
        let finish = DeployCommand::Finish {
            request_id: id.clone(),
            status: RequestStatus::Completed,
            outcome: Some(train_outcome("train-abc-3")),
            error: None,
        };
        assert!(matches!(
            apply(&mut s, &finish),
            DeployResponse::Queue(Ok(0))
        ));
        let mut restored = state();
        restored.restore(&s.snapshot()).unwrap();
        assert_eq!(restored.state_root(), s.state_root());
        let r = restored.request(&id).unwrap();
        assert_eq!(r.submission.spec, spec);
        let Some(TaskOutcome::Train(o)) = &r.outcome else {
            panic!("train outcome lost: {:?}", r.outcome)
        };
        assert_eq!(o.epsilon_spent.to_bits(), 0.30000000000000004f64.to_bits());
        assert_eq!(
            o.rounds[0].train_loss.to_bits(),
            0.123_456_789_012_345_68f64.to_bits()
        );
        assert_eq!(
            serde_json::to_value(o.as_ref()).unwrap(),
            serde_json::to_value(match &train_outcome("train-abc-3") {
                TaskOutcome::Train(x) => x.as_ref().clone(),
                _ => unreachable!(),
            })
            .unwrap()
        );
        // The JSON view of the record keeps the class tag of the spec.
        let j = serde_json::to_value(r).unwrap();
        assert!(
            j["submission"]["spec"]["train"]["dp_sgd"].is_object(),
            "{j}"
        );
    }
}
