//! # symphony-master
//!
//! The master replicated state machine: the state the three master nodes agree on,
//! changed only by [`MasterState::apply`]. Every master applies the same committed
//! commands in the same order and reaches the same [`MasterState::state_root`]; the
//! masters sign that root (commit certificate, final with 2 of 3).
//!
//! The state machine is pure: the leader injects time into commands (`at_ms`), there
//! is no clock, no randomness and no IO here. A refused command changes nothing.
//!
//! Rules enforced here, so no service above can bypass them:
//! - a caller's nonce is accepted once (replay protection of admissions);
//! - an admitted `TaskEnvelope` must verify (hash matches body, class constraints)
//!   and is stored immutably — no command edits it;
//! - task state changes only through the core lifecycle table;
//! - a settlement's shares sum exactly to its fee total;
//! - delivery is recorded only for a `completed` task with a `finalized` settlement.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use symphony_core::encoding::{canonical_bytes, content_hash, tagged_hash, Digest, EncodingError};
use symphony_core::envelope::{EnvelopeError, TaskEnvelope};
use symphony_core::ids::{ActorId, ChallengeId, EpochId, TaskId, VaultId};
use symphony_core::lifecycle::{
    ChallengeEvent, ChallengeState, SettlementState, SliceState, TaskEvent, TaskState,
    TransitionError,
};
use symphony_core::EnclaveKind;

mod challenge;
pub use challenge::{
    has_standing, window_accepts, window_close_ms, ChallengeFiling, ChallengeRecord,
    ChallengeTarget, ChallengeWindow, PenaltyRecord,
};

mod governance;
pub use governance::{
    proposal_message, vote_message, CloseTrigger, EpochRecord, EpochRewards, GovernanceState,
    Member, Proposal, ProposalId, ProposalKind, ProposalStatus, ScheduledPayout, SealedPayouts,
    DEFAULT_EPOCH_LENGTH_MS,
};

mod actors;
pub use actors::{
    adjudication_hash, offence_name, parse_offence, ActorRegistry, LedgerDuty, OffenceRecord,
    RegisteredStake, Verdict, MAX_REASON_BYTES,
};

mod composite;
mod savepoint;
pub mod takeover;
pub use composite::{
    round_payout_id, CompositeRecord, CompositeResultRecord, RoundPayout, RoundRecord,
    RoundSliceRecord,
};

/// Hash tag of the state root.
pub const STATE_ROOT_TAG: &str = "scp/master-state/v1";

/// What one Vault's slice ended as, as the coordinator recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRecord {
    /// The slice's final state.
    pub state: SliceState,
    /// Commitment of the `SliceResultBundle` (zero if none returned).
    pub commitment: Digest,
    /// Subjects whose records were evaluated.
    pub subjects_evaluated: u64,
    /// ε committed per evaluated subject, micro-units.
    pub epsilon_committed_micro: u64,
    /// What produced the slice's evidence (none when no bundle was returned).
    pub enclave_kind: Option<EnclaveKind>,
}

/// The aggregate of a task (never the per-Vault inputs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRecord {
    /// Commitment linking the aggregate to its inputs.
    pub commitment: Digest,
    /// Eligible subjects before the cap.
    pub eligible_count: u64,
    /// Result size after cap and selection.
    pub delivered_count: u64,
    /// Hash of the result.
    pub result_hash: Digest,
    /// What produced the aggregation's evidence.
    pub enclave_kind: EnclaveKind,
}

/// A settlement of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRecord {
    /// Lifecycle state.
    pub state: SettlementState,
    /// The epoch it settles in.
    pub epoch_id: EpochId,
    /// The fee charged, base units.
    pub fee_total: u64,
    /// Recipient → amount, base units; sums to `fee_total`.
    pub fee_shares: BTreeMap<String, u64>,
    /// Escrow refunded to the submitter, base units.
    pub refund: u64,
}

/// Everything the masters know about one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The immutable envelope.
    pub envelope: TaskEnvelope,
    /// Current lifecycle state.
    pub state: TaskState,
    /// States visited, in order (starting with `accepted`).
    pub history: Vec<TaskState>,
    /// Why the task was rejected or timed out, if it was.
    pub reason: Option<String>,
    /// Slice outcomes by Vault.
    pub slices: BTreeMap<VaultId, SliceRecord>,
    /// The aggregate, once formed.
    pub aggregate: Option<AggregateRecord>,
    /// The settlement, once started.
    pub settlement: Option<SettlementRecord>,
}

impl TaskRecord {
    /// What produced each piece of the task's evidence: every slice that returned a
    /// bundle (by Vault id) and the aggregation (`"aggregation"`).
    pub fn enclave_kinds(&self) -> BTreeMap<String, EnclaveKind> {
        let mut kinds: BTreeMap<String, EnclaveKind> = self
            .slices
            .iter()
            .filter_map(|(v, s)| s.enclave_kind.map(|k| (v.to_string(), k)))
            .collect();
        if let Some(a) = &self.aggregate {
            kinds.insert("aggregation".into(), a.enclave_kind);
        }
        kinds
    }
}

/// An auditable event (delivery and other protocol facts the masters attest to).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Sequence number in the audit log.
    pub seq: u64,
    /// When, ms (leader's time).
    pub at_ms: u64,
    /// The task concerned.
    pub task_id: TaskId,
    /// What happened.
    pub kind: String,
    /// Detail (e.g. recipient and result hash).
    pub detail: String,
}

/// A command replicated through consensus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Admission: store the envelope; the task enters `accepted`.
    AdmitTask {
        /// The sealed envelope.
        envelope: Box<TaskEnvelope>,
    },
    /// A lifecycle event of a task.
    Advance {
        /// The task.
        task_id: TaskId,
        /// The event.
        event: TaskEvent,
        /// Reason, for `reject` and `timeout`.
        reason: Option<String>,
    },
    /// The coordinator's record of one slice.
    RecordSlice {
        /// The task.
        task_id: TaskId,
        /// The Vault.
        vault_id: VaultId,
        /// What the slice ended as.
        record: SliceRecord,
    },
    /// The aggregation runtime's output.
    RecordAggregate {
        /// The task.
        task_id: TaskId,
        /// The aggregate.
        record: AggregateRecord,
    },
    /// A settlement state change (with its amounts).
    RecordSettlement {
        /// The task.
        task_id: TaskId,
        /// The settlement.
        record: SettlementRecord,
    },
    /// The result was delivered to the submitter.
    RecordDelivery {
        /// The task.
        task_id: TaskId,
        /// Recipient.
        recipient: ActorId,
        /// Hash of what was delivered.
        result_hash: Digest,
        /// Items delivered.
        count: u64,
        /// When, ms.
        at_ms: u64,
    },
    /// Composite (`train`): the coordinator opens the next round (sub-task) in the
    /// epoch it is dispatched in; one `assigned` slice per participating Vault.
    OpenRound {
        /// The parent task.
        task_id: TaskId,
        /// The round number (must be the next one).
        round: u32,
        /// The dispatch epoch: the round settles in it.
        epoch_id: EpochId,
    },
    /// Composite: what one Vault's slice of one round ended as.
    RecordRoundSlice {
        /// The parent task.
        task_id: TaskId,
        /// The round.
        round: u32,
        /// The Vault.
        vault_id: VaultId,
        /// The outcome.
        record: RoundSliceRecord,
    },
    /// Composite: the round's secure aggregate formed and verified; the round moves
    /// to `awaiting_settlement` and its compute + aggregation fee joins the payout
    /// set of the round's dispatch epoch (paid out of the escrow with the parent's
    /// settlement).
    CloseRound {
        /// The parent task.
        task_id: TaskId,
        /// The round.
        round: u32,
        /// The round's aggregate.
        record: RoundRecord,
        /// The round's payout: recipient → µSYM (its compute and aggregation fee).
        fee_shares: BTreeMap<String, u64>,
    },
    /// Composite: the result of the whole run, recorded while the parent verifies.
    RecordCompositeResult {
        /// The parent task.
        task_id: TaskId,
        /// The result.
        record: CompositeResultRecord,
    },
    /// Composite: a round's share of the finalized composite settlement, in the
    /// round's dispatch epoch; the round completes.
    SettleRound {
        /// The parent task.
        task_id: TaskId,
        /// The round.
        round: u32,
        /// The round's fee, base units.
        fee_micro_sym: u64,
    },
    /// The settlement reached `candidate_ready`: the challenge window opens.
    OpenChallengeWindow {
        /// The task.
        task_id: TaskId,
        /// Filing accepted while `at_ms < closes_at_ms`.
        closes_at_ms: u64,
    },
    /// The window's time is over and no challenge is under review.
    CloseChallengeWindow {
        /// The task.
        task_id: TaskId,
        /// Leader's time, ms (≥ `closes_at_ms`).
        at_ms: u64,
    },
    /// A challenge is filed (task → `challenged`).
    FileChallenge {
        /// The filing.
        filing: ChallengeFiling,
    },
    /// A challenge lifecycle event (review, verdict, approval, close, penalty).
    ChallengeStep {
        /// The challenge.
        challenge_id: ChallengeId,
        /// The event.
        event: ChallengeEvent,
        /// Hash of the replayed verdict (with `confirm` / `dismiss` only).
        verdict_hash: Option<Digest>,
        /// The penalty (with `record_penalty` only).
        penalty: Option<PenaltyRecord>,
    },
    /// Governance Service: the master keys that sign proposals and votes, the
    /// epoch length and the epoch capacity of the genesis policy (accepted once,
    /// before the first proposal).
    ConfigureGovernance {
        /// The three masters' ed25519 public keys, by master index.
        master_keys: Vec<[u8; 32]>,
        /// Epoch length, ms.
        epoch_length_ms: u64,
        /// Tasks admitted per epoch before the capacity trigger.
        max_tasks_per_epoch: Option<u64>,
    },
    /// A master proposes (signed over [`proposal_message`]).
    Propose {
        /// What.
        kind: ProposalKind,
        /// The proposing master's index.
        by: u8,
        /// When, ms.
        at_ms: u64,
        /// Its ed25519 signature.
        signature: Vec<u8>,
    },
    /// A master votes (signed over [`vote_message`]); an approved `close_epoch`
    /// closes the epoch at `at_ms`.
    Vote {
        /// The proposal.
        proposal: ProposalId,
        /// The voting master's index.
        by: u8,
        /// Approve or reject.
        approve: bool,
        /// When, ms.
        at_ms: u64,
        /// Its ed25519 signature.
        signature: Vec<u8>,
    },
    /// The epoch closes by time or capacity (refused unless the trigger holds) and
    /// the next opens.
    CloseEpoch {
        /// Why.
        trigger: CloseTrigger,
        /// When, ms (the leader's injected time).
        at_ms: u64,
    },
    /// Genesis: the stakes the ledger bonded at genesis enter the actor registry
    /// (accepted before the first proposal only).
    RegisterStakes {
        /// Actor, tier, bonded µSYM.
        stakes: Vec<(ActorId, symphony_economics::StakeTier, u64)>,
    },
    /// The leader carried out an enacted proposal's ledger duties (recorded once).
    RecordLedgerDuty {
        /// The proposal.
        proposal: ProposalId,
    },
    /// The node operation rewards of a closed epoch were minted by the inflation
    /// schedule and paid on the ledger (idempotent there by epoch); recorded once.
    RecordEpochRewards {
        /// The closed epoch.
        epoch: EpochId,
        /// What was minted and to whom.
        rewards: EpochRewards,
    },
    /// A data producer bonded `S_producer` on the staking contract: its stake
    /// enters the actor registry (tier `producer`), at any time. The data quality
    /// reward rule (100% staked, 50% not) reads this entry.
    RegisterProducerStake {
        /// The producer (`producer:<subject>`).
        actor: ActorId,
        /// Bonded, µSYM.
        bonded_micro_sym: u64,
    },
}

/// What an applied command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A task was admitted.
    TaskAdmitted {
        /// The task.
        task_id: TaskId,
        /// Its envelope hash.
        envelope_hash: Digest,
    },
    /// A task changed state.
    TaskStateChanged {
        /// The task.
        task_id: TaskId,
        /// From.
        from: TaskState,
        /// To.
        to: TaskState,
    },
    /// A slice was recorded.
    SliceRecorded {
        /// The task.
        task_id: TaskId,
        /// The Vault.
        vault_id: VaultId,
        /// Its state.
        state: SliceState,
    },
    /// The aggregate was recorded.
    AggregateRecorded {
        /// The task.
        task_id: TaskId,
        /// Its commitment.
        commitment: Digest,
    },
    /// The settlement moved.
    SettlementChanged {
        /// The task.
        task_id: TaskId,
        /// New state.
        state: SettlementState,
    },
    /// An audit event was appended.
    Audited(AuditEvent),
    /// A challenge window opened.
    ChallengeWindowOpened {
        /// The task.
        task_id: TaskId,
        /// When it closes, ms.
        closes_at_ms: u64,
    },
    /// A challenge window closed.
    ChallengeWindowClosed {
        /// The task.
        task_id: TaskId,
    },
    /// A challenge moved.
    ChallengeChanged {
        /// The challenge.
        challenge_id: ChallengeId,
        /// New state.
        state: ChallengeState,
    },
    /// Governance was configured at genesis.
    GovernanceConfigured {
        /// Epoch length, ms.
        epoch_length_ms: u64,
        /// Epoch capacity in tasks.
        max_tasks_per_epoch: Option<u64>,
    },
    /// A proposal was submitted.
    ProposalSubmitted {
        /// Id.
        id: ProposalId,
        /// Its kind.
        kind: String,
        /// Proposing master.
        by: u8,
    },
    /// A master voted.
    ProposalVoted {
        /// Id.
        id: ProposalId,
        /// Voting master.
        by: u8,
        /// Approve.
        approve: bool,
    },
    /// 2 of 3 decided.
    ProposalDecided {
        /// Id.
        id: ProposalId,
        /// Approved or rejected.
        approved: bool,
    },
    /// A proposal took effect.
    ProposalEnacted {
        /// Id.
        id: ProposalId,
        /// In this epoch.
        epoch: EpochId,
    },
    /// A settlement's payout became final and joined the open epoch's payout set.
    PayoutScheduled {
        /// The task.
        task_id: TaskId,
        /// The epoch whose payout set it is in.
        epoch: EpochId,
    },
    /// A closing epoch's payout set was sealed (once).
    EpochPayoutsSealed {
        /// The epoch.
        epoch: EpochId,
        /// Settlements in the set.
        payouts: u64,
        /// Commitment to the set.
        commitment: Digest,
    },
    /// A closed epoch's node operation rewards were recorded.
    EpochRewardsRecorded {
        /// The epoch.
        epoch: EpochId,
        /// Minted, µSYM.
        minted_micro_sym: u64,
    },
    /// An actor's stake entered the registry at genesis.
    StakeRegistered {
        /// The actor.
        actor: ActorId,
        /// Bonded, µSYM.
        bonded_micro_sym: u64,
    },
    /// A registered stake was slashed by an enacted proposal.
    StakeSlashed {
        /// The actor.
        actor: ActorId,
        /// Slashed, µSYM (0 when the actor has no registered stake).
        amount_micro_sym: u64,
        /// The proposal.
        proposal: ProposalId,
    },
    /// An enacted proposal's ledger duties were carried out.
    LedgerDutyDone {
        /// The proposal.
        proposal: ProposalId,
    },
    /// An epoch closed and the next opened (each Vault replenishes once per epoch).
    EpochClosed {
        /// The closed epoch.
        epoch: EpochId,
        /// The epoch now open.
        next: EpochId,
        /// When, ms.
        at_ms: u64,
        /// Why.
        trigger: CloseTrigger,
    },
    /// An enacted `attribute_promotion` created this semantic registry version
    /// (later admissions resolve against it).
    SemanticVersionEnacted {
        /// The proposal.
        proposal: ProposalId,
        /// The registry version now in force.
        semantic_version: symphony_core::SemanticVersion,
    },
}

/// A refused command. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterError {
    /// The caller's nonce was used before.
    #[error("nonce {nonce} of {actor} was already used: replayed request refused")]
    ReplayedNonce {
        /// The caller.
        actor: ActorId,
        /// The nonce.
        nonce: u64,
    },
    /// The task id exists.
    #[error("task {0} was already admitted")]
    DuplicateTask(TaskId),
    /// No such task.
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// The envelope does not verify.
    #[error("envelope refused: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The lifecycle refused the event.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A record that does not fit the task's state or envelope.
    #[error("task {task_id}: {reason}")]
    Refused {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: String,
    },
    /// Encoding failure.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// No such challenge.
    #[error("unknown challenge {0}")]
    UnknownChallenge(ChallengeId),
    /// A governance command refused.
    #[error("governance: {0}")]
    Governance(String),
}

/// The replicated master state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterState {
    tasks: BTreeMap<TaskId, TaskRecord>,
    used_nonces: BTreeSet<(ActorId, u64)>,
    audit_log: Vec<AuditEvent>,
    applied_commands: u64,
    /// Composite (`train`) hierarchies by parent task.
    composites: BTreeMap<TaskId, CompositeRecord>,
    challenges: BTreeMap<ChallengeId, ChallengeRecord>,
    challenge_windows: BTreeMap<TaskId, ChallengeWindow>,
    /// The Governance Service's state: current epoch, active policy version.
    governance: GovernanceState,
}

impl MasterState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A task's record.
    pub fn task(&self, task_id: &TaskId) -> Option<&TaskRecord> {
        self.tasks.get(task_id)
    }

    /// All tasks.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    /// The audit log.
    pub fn audit_log(&self) -> &[AuditEvent] {
        &self.audit_log
    }

    /// The composite hierarchy of a `train` task, once its first round opened.
    pub fn composite(&self, task_id: &TaskId) -> Option<&CompositeRecord> {
        self.composites.get(task_id)
    }

    /// The Governance Service's state (current epoch, active policy version).
    pub fn governance(&self) -> &GovernanceState {
        &self.governance
    }

    /// The epoch admission runs in now.
    pub fn current_epoch(&self) -> EpochId {
        self.governance.epoch
    }

    /// The policy version new tasks are admitted under.
    pub fn active_policy_version(&self) -> symphony_core::ids::PolicyVersion {
        self.governance.policy_version
    }

    /// Commands applied so far.
    pub fn applied_commands(&self) -> u64 {
        self.applied_commands
    }

    /// SHA-256 over the canonical encoding of the whole state.
    pub fn state_root(&self) -> Result<Digest, EncodingError> {
        content_hash(STATE_ROOT_TAG, self)
    }

    /// Canonical snapshot bytes.
    pub fn snapshot(&self) -> Result<Vec<u8>, EncodingError> {
        canonical_bytes(self)
    }

    /// Restores a snapshot.
    pub fn restore(bytes: &[u8]) -> Result<Self, EncodingError> {
        symphony_core::encoding::from_canonical_bytes(bytes)
    }

    /// Applies one command; on error nothing changes. A command about one task
    /// saves only what it may change and puts that back if it is refused
    /// (`savepoint.rs`); any other command runs on a copy of the whole state.
    pub fn apply(&mut self, command: &Command) -> Result<Vec<Event>, MasterError> {
        let Some(savepoint) = savepoint::Savepoint::take(self, command) else {
            let mut next = self.clone();
            let events = next.apply_inner(command)?;
            next.applied_commands += 1;
            *self = next;
            return Ok(events);
        };
        match self.apply_inner(command) {
            Ok(events) => {
                self.applied_commands += 1;
                Ok(events)
            }
            Err(e) => {
                savepoint.restore(self);
                Err(e)
            }
        }
    }

    fn record_mut(&mut self, task_id: &TaskId) -> Result<&mut TaskRecord, MasterError> {
        self.tasks
            .get_mut(task_id)
            .ok_or_else(|| MasterError::UnknownTask(task_id.clone()))
    }

    /// A lifecycle step through the core transition table.
    fn advance(
        &mut self,
        task_id: &TaskId,
        event: TaskEvent,
        reason: &Option<String>,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self.record_mut(task_id)?;
        if event == TaskEvent::SettlementFinalized
            && rec
                .settlement
                .as_ref()
                .is_none_or(|s| s.state != SettlementState::Finalized)
        {
            // Completion is the settlement's outcome: never before it is final.
            return Err(refused(
                task_id,
                "completion before the settlement is finalized is refused",
            ));
        }
        let from = rec.state;
        let to = from.next(event)?;
        rec.state = to;
        rec.history.push(to);
        if reason.is_some() {
            rec.reason.clone_from(reason);
        }
        Ok(vec![Event::TaskStateChanged {
            task_id: task_id.clone(),
            from,
            to,
        }])
    }

    fn apply_inner(&mut self, command: &Command) -> Result<Vec<Event>, MasterError> {
        match command {
            Command::AdmitTask { envelope } => self.admit(envelope),
            Command::ConfigureGovernance {
                master_keys,
                epoch_length_ms,
                max_tasks_per_epoch,
            } => self
                .governance
                .configure(master_keys, *epoch_length_ms, *max_tasks_per_epoch),
            Command::Propose {
                kind,
                by,
                at_ms,
                signature,
            } => self.propose(kind, *by, *at_ms, signature),
            Command::Vote {
                proposal,
                by,
                approve,
                at_ms,
                signature,
            } => self.vote(*proposal, *by, *approve, *at_ms, signature),
            Command::RegisterStakes { stakes } => self.register_stakes(stakes),
            Command::RecordLedgerDuty { proposal } => self.ledger_duty_done(*proposal),
            Command::CloseEpoch { trigger, at_ms } => {
                if matches!(trigger, CloseTrigger::Proposal(_)) {
                    return Err(MasterError::Governance(
                        "a close_epoch proposal closes the epoch when it is approved".into(),
                    ));
                }
                self.governance.close(*trigger, *at_ms)
            }
            Command::RecordEpochRewards { epoch, rewards } => {
                self.governance.record_rewards(*epoch, rewards)
            }
            Command::RegisterProducerStake {
                actor,
                bonded_micro_sym,
            } => self.register_producer_stake(actor, *bonded_micro_sym),
            Command::Advance {
                task_id,
                event,
                reason,
            } => self.advance(task_id, *event, reason),
            Command::RecordSlice {
                task_id,
                vault_id,
                record,
            } => {
                let rec = self.record_mut(task_id)?;
                let coord = &rec.envelope.body().coordination_envelope;
                if !coord.participating_vault_ids.contains(vault_id) {
                    return Err(refused(
                        task_id,
                        format!("vault {vault_id} is not a participating Vault"),
                    ));
                }
                if rec.state != TaskState::Dispatched {
                    return Err(refused(
                        task_id,
                        format!(
                            "slices are recorded only while dispatched, not {}",
                            rec.state
                        ),
                    ));
                }
                rec.slices.insert(vault_id.clone(), record.clone());
                Ok(vec![Event::SliceRecorded {
                    task_id: task_id.clone(),
                    vault_id: vault_id.clone(),
                    state: record.state,
                }])
            }
            Command::RecordAggregate { task_id, record } => {
                let rec = self.record_mut(task_id)?;
                if rec.state != TaskState::Dispatched || rec.aggregate.is_some() {
                    return Err(refused(
                        task_id,
                        "the aggregate is recorded once, while dispatched",
                    ));
                }
                let quorum = rec
                    .envelope
                    .body()
                    .coordination_envelope
                    .minimum_vault_quorum;
                let verified = rec
                    .slices
                    .values()
                    .filter(|s| matches!(s.state, SliceState::Returned | SliceState::Verified))
                    .count();
                if (verified as u64) < u64::from(quorum) {
                    return Err(refused(
                        task_id,
                        format!("{verified} slices returned, below minimum_vault_quorum {quorum}"),
                    ));
                }
                rec.aggregate = Some(record.clone());
                Ok(vec![Event::AggregateRecorded {
                    task_id: task_id.clone(),
                    commitment: record.commitment,
                }])
            }
            Command::RecordSettlement { task_id, record } => self.settle(task_id, record),
            Command::RecordDelivery {
                task_id,
                recipient,
                result_hash,
                count,
                at_ms,
            } => {
                let rec = self.record_mut(task_id)?;
                let finalized = rec
                    .settlement
                    .as_ref()
                    .is_some_and(|s| s.state == SettlementState::Finalized);
                if rec.state != TaskState::Completed || !finalized {
                    return Err(refused(
                        task_id,
                        "delivery before finalized settlement and completion is refused",
                    ));
                }
                if &rec.envelope.body().caller.actor_id != recipient {
                    return Err(refused(
                        task_id,
                        format!("{recipient} is not the task submitter"),
                    ));
                }
                let delivered = self
                    .audit_log
                    .iter()
                    .any(|e| &e.task_id == task_id && e.kind == "result_delivered");
                if delivered {
                    return Err(refused(task_id, "the result was already delivered"));
                }
                let event = AuditEvent {
                    seq: self.audit_log.len() as u64,
                    at_ms: *at_ms,
                    task_id: task_id.clone(),
                    kind: "result_delivered".into(),
                    detail: format!(
                        "recipient={recipient} items={count} result_hash={result_hash}"
                    ),
                };
                self.audit_log.push(event.clone());
                Ok(vec![Event::Audited(event)])
            }
            Command::OpenRound {
                task_id,
                round,
                epoch_id,
            } => self.open_round(task_id, *round, *epoch_id),
            Command::RecordRoundSlice {
                task_id,
                round,
                vault_id,
                record,
            } => self.record_round_slice(task_id, *round, vault_id, record),
            Command::CloseRound {
                task_id,
                round,
                record,
                fee_shares,
            } => self.close_round(task_id, *round, record, fee_shares),
            Command::RecordCompositeResult { task_id, record } => {
                self.record_composite_result(task_id, record)
            }
            Command::SettleRound {
                task_id,
                round,
                fee_micro_sym,
            } => self.settle_round(task_id, *round, *fee_micro_sym),
            Command::OpenChallengeWindow {
                task_id,
                closes_at_ms,
            } => self.open_challenge_window(task_id, *closes_at_ms),
            Command::CloseChallengeWindow { task_id, at_ms } => {
                self.close_challenge_window(task_id, *at_ms)
            }
            Command::FileChallenge { filing } => self.file_challenge(filing),
            Command::ChallengeStep {
                challenge_id,
                event,
                verdict_hash,
                penalty,
            } => self.challenge_step(challenge_id, *event, *verdict_hash, penalty.as_ref()),
        }
    }

    fn admit(&mut self, envelope: &TaskEnvelope) -> Result<Vec<Event>, MasterError> {
        envelope.verify()?;
        let body = envelope.body();
        let key = (body.caller.actor_id.clone(), body.caller.nonce);
        if self.used_nonces.contains(&key) {
            return Err(MasterError::ReplayedNonce {
                actor: key.0,
                nonce: key.1,
            });
        }
        if self.tasks.contains_key(&body.task_id) {
            return Err(MasterError::DuplicateTask(body.task_id.clone()));
        }
        self.governance
            .check_admission(&body.task_id, body.epoch_id, body.policy_version)?;
        self.used_nonces.insert(key);
        self.governance.count_admission();
        self.tasks.insert(
            body.task_id.clone(),
            TaskRecord {
                envelope: envelope.clone(),
                state: TaskState::Accepted,
                history: vec![TaskState::Accepted],
                reason: None,
                slices: BTreeMap::new(),
                aggregate: None,
                settlement: None,
            },
        );
        Ok(vec![Event::TaskAdmitted {
            task_id: body.task_id.clone(),
            envelope_hash: envelope.hash(),
        }])
    }

    fn settle(
        &mut self,
        task_id: &TaskId,
        record: &SettlementRecord,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self.record_mut(task_id)?;
        let sum = record
            .fee_shares
            .values()
            .try_fold(0u64, |acc, v| acc.checked_add(*v));
        if sum != Some(record.fee_total) {
            return Err(refused(
                task_id,
                format!(
                    "fee shares sum to {sum:?}, not the fee total {}",
                    record.fee_total
                ),
            ));
        }
        let locked = rec
            .envelope
            .body()
            .budget_lock_ref
            .as_ref()
            .map_or(0, |l| l.amount_base_units);
        if record.fee_total.checked_add(record.refund) != Some(locked) {
            return Err(refused(
                task_id,
                format!(
                    "fee {} + refund {} must equal the escrow lock {locked}",
                    record.fee_total, record.refund
                ),
            ));
        }
        let expected = match &rec.settlement {
            None => SettlementState::Collecting,
            Some(prev) => prev.state.advance()?,
        };
        if record.state != expected {
            return Err(refused(
                task_id,
                format!("settlement must move to {expected}, not {}", record.state),
            ));
        }
        if let Some(prev) = &rec.settlement {
            if prev.fee_total != record.fee_total || prev.fee_shares != record.fee_shares {
                return Err(refused(
                    task_id,
                    "settlement amounts are fixed once collecting began",
                ));
            }
        }
        let accepted = matches!(rec.state, TaskState::AwaitingSettlement);
        if record.state == SettlementState::Finalizing && accepted {
            self.challenge_allows_finalizing(task_id)?;
        }
        let rec = self.record_mut(task_id)?;
        if !accepted {
            return Err(refused(
                task_id,
                format!("only accepted work settles; task is {}", rec.state),
            ));
        }
        rec.settlement = Some(record.clone());
        let mut events = vec![Event::SettlementChanged {
            task_id: task_id.clone(),
            state: record.state,
        }];
        if record.state == SettlementState::Finalizing {
            // Money moves from here: the payout belongs to the open epoch's set. A
            // composite task's rounds are in their own epochs' sets already: the
            // parent's payout is what remains.
            let (fee, shares) = self.parent_payout(task_id, record)?;
            let epoch = self.governance.schedule_payout(
                task_id,
                ScheduledPayout {
                    dispatch_epoch: record.epoch_id,
                    fee_total_micro_sym: fee,
                    fee_shares: shares,
                },
            )?;
            events.push(Event::PayoutScheduled {
                task_id: task_id.clone(),
                epoch,
            });
        }
        Ok(events)
    }
}

impl MasterState {
    /// The parent's own payout of `record`: its fee and shares minus every round
    /// payout scheduled at the rounds' closes (none for a single-round task).
    fn parent_payout(
        &self,
        task_id: &TaskId,
        record: &SettlementRecord,
    ) -> Result<(u64, BTreeMap<String, u64>), MasterError> {
        let mut fee = record.fee_total;
        let mut shares = record.fee_shares.clone();
        let Some(c) = self.composites.get(task_id) else {
            return Ok((fee, shares));
        };
        for (round, p) in &c.round_payouts {
            fee = fee.checked_sub(p.fee_micro_sym).ok_or_else(|| {
                refused(
                    task_id,
                    format!(
                        "fee total {} is below the rounds' payouts",
                        record.fee_total
                    ),
                )
            })?;
            for (who, amount) in &p.fee_shares {
                let left = shares
                    .get(who)
                    .and_then(|s| s.checked_sub(*amount))
                    .ok_or_else(|| {
                        refused(
                            task_id,
                            format!(
                                "fee shares give {who} less than round {round} paid it \
                                 ({amount} µSYM)"
                            ),
                        )
                    })?;
                if left == 0 {
                    shares.remove(who);
                } else {
                    shares.insert(who.clone(), left);
                }
            }
        }
        Ok((fee, shares))
    }
}

fn refused(task_id: &TaskId, reason: impl Into<String>) -> MasterError {
    MasterError::Refused {
        task_id: task_id.clone(),
        reason: reason.into(),
    }
}

/// Hash of a list of commitments, in order: the link from an aggregate to its inputs.
pub fn link_commitment(tag: &str, parts: &[Digest]) -> Digest {
    let mut bytes = Vec::with_capacity(parts.len() * 32);
    for p in parts {
        bytes.extend_from_slice(&p.0);
    }
    tagged_hash(tag, &bytes)
}
