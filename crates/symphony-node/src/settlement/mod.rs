//! # The Settlement Plane
//!
//! Converts verified execution into irreversible accounting (seed 002 "Settlement"):
//!
//! ```text
//! collecting → verifying_inputs → candidate_ready → finalizing → finalized
//!  amounts      replay stored       payout candidate,   2-of-3       payout done
//!  fixed        evidence            challenge window    certificate  (exactly once)
//! ```
//!
//! - **collecting**: the fee is priced from measured usage (`settle_fee`), split by
//!   the task's `policy_version` (`distribute_fee` over a `contribution_report` of
//!   verified work only) and fixed in the master state; the task's evidence
//!   ([`StoredEvidence`]) is persisted.
//! - **verifying_inputs**: the stored evidence is re-verified from scratch
//!   ([`verify_inputs`]: every slice attestation against the task's envelope and the
//!   allow-list, every commitment, the aggregate's link to its inputs and its
//!   attestation). Outcome: *accepted*, or a failing target, which the plane turns into
//!   a challenge filed by a master (outcome *challenged*; its replay confirms it and the
//!   task ends *rejected*). Only accepted work settles (the master state refuses a
//!   settlement of a task that is not `awaiting_settlement`).
//! - **candidate_ready**: the [`PayoutCandidate`] (one `PayoutInstructionSet` from the
//!   escrow plus the refund) is persisted and the challenge window opens for
//!   `challenge_window_ms` of the policy, starting at the injected `now_ms`.
//! - **finalizing**: after the window closed without an open challenge, the masters
//!   commit `finalizing`; its commit certificate must be final (2 of 3) and is
//!   persisted before any money moves.
//! - **finalized**: [`complete_payout`] pays the escrow set (idempotent by payout id),
//!   refunds exactly what remains in escrow, credits enterprise data contribution
//!   credits, then the masters commit `finalized`. Each step is idempotent, so a
//!   crash anywhere in between completes exactly once on restart ([`resume_pending`]).
//!
//! A settlement belongs to the epoch of its task's dispatch (`envelope.epoch_id`);
//! its payout sets are appended to that epoch's group in the [`SettlementStore`]
//! (append-only). Composite tasks link their sub-task settlements, each in its own
//! epoch, with [`link_composite`].
//!
//! Data usage dividends: the escrow set pays each Vault's Data Contributor share to
//! the Vault's dividend account (`vault-dividends:<vault>`); the Vault, which alone
//! knows whose records were used, pays its producers with [`rewards::vault_dividend_sets`]
//! (staked 100 %, unstaked 50 % with the rest to the epoch reward pool). A Vault
//! with more than [`DIRECT_PAYOUT_LIMIT`] producers for one task pays them instead
//! as one committed Merkle distribution that each producer claims with a proof
//! ([`dividends`]).
#![allow(clippy::module_name_repetitions)]

pub mod composite;
pub mod dividends;
pub mod embedded;
pub mod fixture;
pub mod reconcile;
pub mod rewards;
pub mod store;
pub mod summary;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::{ActorId, EpochId, TaskId, VaultId};
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent};
use symphony_economics::rewards::{usage_weight, VaultUsageTotals};
use symphony_economics::{
    contribution_report, distribute_fee, settle_fee, AggregationWork, PolicyParams, Recipient,
    RecipientClass, SliceWork, TaskUsage,
};
use symphony_enclave::{AttestationReport, SoftwareAttestationVerifier};
use symphony_ledger::{
    AccountId, EscrowId, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind,
    SettlementLedger,
};
use symphony_master::{ChallengeTarget, Command, SettlementRecord};

use crate::replication::{CommitCertificate, Replicator};
use crate::verify::{
    verify_aggregate_claim, verify_evidence, AggregateClaim, EvidenceError, SliceEvidence,
};
use crate::NodeError;

pub use composite::{
    composite_by_epoch, link_composite, verify_composite, CompositeSettlement,
    SubTaskSettlementRef, COMPOSITE_LINK_TAG,
};
/// Above this many producers, a Vault's dividend for one task is committed as one
/// Merkle distribution that producers claim ([`dividends`]) instead of one ledger
/// account write per producer. Below it a producer is paid without having to claim
/// (the default `demo luckin`, about 5,200 producers per Vault, stays there).
pub const DIRECT_PAYOUT_LIMIT: usize = 10_000;

pub use store::{ReplicatedSettlements, SettlementStore, SettlementTables, StoreWrite};

/// The aggregation step's evidence, kept after the audience was delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateEvidence {
    /// Commitments of the inputs, sorted.
    pub input_commitments: Vec<Digest>,
    /// Hash of the result.
    pub result_hash: Digest,
    /// Commitment linking result and inputs.
    pub commitment: Digest,
    /// The aggregation enclave's attestation.
    pub attestation: AttestationReport,
    /// Who ran it (paid as an executor, responsible if challenged).
    pub executor: ActorId,
    /// Metered compute units (input signals).
    pub compute_units: u64,
}

/// What one Vault's slice ended as, with its evidence if it was verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceOutcome {
    /// The Vault.
    pub vault_id: VaultId,
    /// Verified, timed out or failed.
    pub state: SliceState,
    /// Evidence of a verified slice.
    pub evidence: Option<SliceEvidence>,
    /// Subjects evaluated (records served).
    pub subjects_evaluated: u64,
    /// ε committed per evaluated subject, micro-units.
    pub epsilon_committed_micro: u64,
}

/// Everything the settlement plane replays: envelope, slice and aggregate evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvidence {
    /// The admitted envelope.
    pub envelope: TaskEnvelope,
    /// One outcome per participating Vault.
    pub slices: Vec<SliceOutcome>,
    /// The aggregation step.
    pub aggregate: AggregateEvidence,
}

impl StoredEvidence {
    /// Hash of the evidence (what a challenge refers to).
    pub fn hash(&self) -> Result<Digest, NodeError> {
        content_hash("scp/stored-evidence/v1", self).map_err(|e| NodeError::Encoding(e.0))
    }
}

/// What the execution plane hands to settlement for one task.
#[derive(Clone, Debug)]
pub struct SettlementInputs {
    /// The task.
    pub task_id: TaskId,
    /// The escrow of its `budget_lock_ref`.
    pub escrow_id: EscrowId,
    /// Measured usage (priced against the escrowed estimate).
    pub usage: TaskUsage,
    /// Evidence to replay.
    pub evidence: StoredEvidence,
    /// Masters that took verification decisions (one decision per verified item each).
    pub verifiers: Vec<ActorId>,
}

/// The payout candidate of a settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutCandidate {
    /// Fee charged.
    pub fee_total: u64,
    /// Escrow returned to the submitter.
    pub refund: u64,
    /// Share name → amount (the JSON view; sums to `fee_total`).
    pub fee_shares: BTreeMap<String, u64>,
    /// The escrow payout (sums to `fee_total`).
    pub escrow_set: PayoutInstructionSet,
    /// Usage totals each verified Vault reported (totals + commitment only).
    pub vault_usage: Vec<VaultUsageTotals>,
    /// Data contribution credit each enterprise earns when this settlement is paid
    /// (Vault Operator + Data Contributor lines × `enterprise_credit_rate_bp`).
    pub enterprise_credits: Vec<(String, u64)>,
}

/// How far the money of a finalizing settlement has moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PayoutPhase {
    /// Nothing paid.
    NotStarted,
    /// Escrow set paid.
    EscrowPaid,
    /// Escrow remainder refunded.
    Refunded,
    /// Enterprise credits earned; the payout is complete.
    Paid,
}

/// A settlement as persisted by the plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRow {
    /// The task.
    pub task_id: TaskId,
    /// The epoch the task was dispatched in (the settlement's epoch).
    pub epoch_id: EpochId,
    /// Lifecycle state.
    pub state: SettlementState,
    /// Money movement (meaningful from `finalizing`).
    pub phase: PayoutPhase,
    /// The escrow.
    pub escrow_id: EscrowId,
    /// The payout candidate.
    pub candidate: PayoutCandidate,
    /// Replayable evidence.
    pub evidence: StoredEvidence,
    /// When the challenge window closes, ms.
    pub closes_at_ms: Option<u64>,
    /// The final commit certificate of `finalizing`.
    pub certificate: Option<CommitCertificate>,
}

/// Steps of finalization, reported to a hook (the crash test stops between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizeStep {
    /// The final `finalizing` certificate is persisted.
    CertificateStored,
    /// The ledger paid the escrow set; the store does not know yet.
    EscrowPaidUnrecorded,
    /// The escrow set was paid (and recorded).
    EscrowPaid,
    /// The ledger refunded the remainder; the store does not know yet.
    RefundedUnrecorded,
    /// The escrow remainder was refunded.
    Refunded,
    /// Credits earned; the payout is complete.
    Paid,
    /// The masters committed `finalized`.
    Finalized,
}

/// Result of verifying a settlement's inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerificationOutcome {
    /// Every input replays.
    Accepted,
    /// A target fails to replay: challenged (by a master).
    Challenged {
        /// What failed.
        target: ChallengeTarget,
        /// Why.
        reason: String,
    },
}

fn ledger_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Ledger(e.to_string())
}

fn account(s: impl Into<String>) -> Result<AccountId, NodeError> {
    AccountId::new(s).map_err(ledger_err)
}

/// The ledger account of a protocol actor.
pub fn actor_account(actor: &ActorId) -> Result<AccountId, NodeError> {
    account(format!("actor:{actor}"))
}

/// The account a Vault's Data Contributor share is paid to.
pub fn vault_dividend_account(vault: &VaultId) -> Result<AccountId, NodeError> {
    account(format!("vault-dividends:{vault}"))
}

/// The operator actor of a Vault (runs its node and its slices).
pub fn vault_operator(vault: &VaultId) -> Result<ActorId, NodeError> {
    ActorId::new(format!("operator:{vault}")).map_err(|e| NodeError::Refused(e.to_string()))
}

impl<'a> From<&'a AggregateEvidence> for AggregateClaim<'a> {
    fn from(aggregate: &'a AggregateEvidence) -> Self {
        Self {
            input_commitments: &aggregate.input_commitments,
            result_hash: aggregate.result_hash,
            commitment: aggregate.commitment,
            attestation: &aggregate.attestation,
        }
    }
}

/// Replays the aggregate's link to its inputs and its attestation.
pub fn verify_aggregate_evidence(
    verifier: &SoftwareAttestationVerifier,
    envelope: &TaskEnvelope,
    slices: &[SliceEvidence],
    aggregate: &AggregateEvidence,
) -> Result<(), EvidenceError> {
    verify_aggregate_claim(verifier, envelope, slices, aggregate.into())
}

/// `verifying_inputs`: re-verifies the stored evidence from scratch. Deterministic:
/// the same evidence gives the same outcome on every replay.
pub fn verify_inputs(
    verifier: &SoftwareAttestationVerifier,
    evidence: &StoredEvidence,
) -> VerificationOutcome {
    let envelope = &evidence.envelope;
    if let Err(e) = envelope.verify() {
        return VerificationOutcome::Challenged {
            target: ChallengeTarget::Aggregation { round: 0 },
            reason: format!("envelope: {e}"),
        };
    }
    let mut verified = Vec::new();
    for s in &evidence.slices {
        match (&s.evidence, s.state) {
            (Some(ev), SliceState::Verified) => {
                if let Err(e) = verify_evidence(verifier, envelope, ev, s.vault_id.as_str()) {
                    return VerificationOutcome::Challenged {
                        target: ChallengeTarget::Slice {
                            round: 0,
                            vault_id: s.vault_id.clone(),
                        },
                        reason: e.to_string(),
                    };
                }
                verified.push(ev.clone());
            }
            (None, SliceState::Verified) => {
                return VerificationOutcome::Challenged {
                    target: ChallengeTarget::Slice {
                        round: 0,
                        vault_id: s.vault_id.clone(),
                    },
                    reason: "verified slice without evidence".into(),
                }
            }
            _ => {}
        }
    }
    match verify_aggregate_evidence(verifier, envelope, &verified, &evidence.aggregate) {
        Ok(()) => VerificationOutcome::Accepted,
        Err(e) => VerificationOutcome::Challenged {
            target: ChallengeTarget::Aggregation { round: 0 },
            reason: e.to_string(),
        },
    }
}

/// `collecting`: prices the usage, splits the fee over verified work only and builds
/// the escrow payout set. Pure: the same inputs give the same candidate.
pub fn build_candidate(
    params: &PolicyParams,
    inputs: &SettlementInputs,
) -> Result<PayoutCandidate, NodeError> {
    let refused = |e: symphony_economics::EconomicsError| NodeError::Refused(e.to_string());
    let envelope = inputs.evidence.envelope.body();
    let estimate = envelope
        .budget_lock_ref
        .as_ref()
        .map_or(0, |l| l.amount_base_units);
    let settled = settle_fee(&params.prices, estimate, &inputs.usage).map_err(refused)?;
    let mut slices = Vec::new();
    let mut vault_usage = Vec::new();
    for s in &inputs.evidence.slices {
        let verified = s.state == SliceState::Verified && s.evidence.is_some();
        let operator = vault_operator(&s.vault_id)?;
        slices.push(SliceWork {
            vault: s.vault_id.clone(),
            vault_operator: operator.clone(),
            executor: operator,
            verified,
            records_served: s.subjects_evaluated,
            compute_units: s.subjects_evaluated.max(1),
        });
        if let (true, Some(ev)) = (verified, &s.evidence) {
            let eps = symphony_core::budget::Epsilon::from_micro(s.epsilon_committed_micro);
            vault_usage.push(VaultUsageTotals {
                vault: s.vault_id.clone(),
                records_used: s.subjects_evaluated,
                usage_weight: usage_weight(s.subjects_evaluated, eps).map_err(refused)?,
                commitment: ev.commitment,
            });
        }
    }
    let agg = &inputs.evidence.aggregate;
    let aggregations = [AggregationWork {
        executor: agg.executor.clone(),
        verified: true,
        compute_units: agg.compute_units.max(1),
    }];
    let decisions_per_verifier = slices.iter().filter(|s| s.verified).count() + 1;
    let decisions: Vec<ActorId> = inputs
        .verifiers
        .iter()
        .flat_map(|v| std::iter::repeat_n(v.clone(), decisions_per_verifier))
        .collect();
    let report =
        contribution_report(&vault_usage, &slices, &aggregations, &decisions).map_err(refused)?;
    let dist =
        distribute_fee(settled.charged_micro_sym, &params.fee_shares, &report).map_err(refused)?;
    let mut fee_shares: BTreeMap<String, u64> = BTreeMap::new();
    let mut instructions = Vec::new();
    for p in dist.payouts() {
        let (name, recipient, kind) = match &p.recipient {
            Recipient::VaultContributors(v) => (
                format!("contributors:{v}"),
                vault_dividend_account(v)?,
                PayoutKind::VaultDividendPool,
            ),
            Recipient::Actor(a) => (
                format!("actor:{a}"),
                actor_account(a)?,
                match p.class {
                    RecipientClass::VaultOperators => PayoutKind::VaultOperator,
                    RecipientClass::Executors => PayoutKind::Executor,
                    _ => PayoutKind::Verifier,
                },
            ),
            Recipient::Treasury => (
                "treasury".to_owned(),
                AccountId::treasury(),
                PayoutKind::Treasury,
            ),
        };
        let slot = fee_shares.entry(name).or_default();
        *slot = slot
            .checked_add(p.amount_micro_sym)
            .ok_or_else(|| NodeError::Refused("fee share overflow".into()))?;
        if p.amount_micro_sym > 0 {
            instructions.push(PayoutInstruction {
                recipient,
                amount: p.amount_micro_sym,
                kind,
            });
        }
    }
    let enterprise_credits =
        rewards::credits_for(params, &fee_shares, &vault_usage).map_err(refused)?;
    Ok(PayoutCandidate {
        enterprise_credits,
        fee_total: settled.charged_micro_sym,
        refund: settled.refund_micro_sym,
        fee_shares,
        escrow_set: PayoutInstructionSet {
            payout_id: PayoutId::new(format!("payout-{}", inputs.task_id)).map_err(ledger_err)?,
            epoch_id: envelope.epoch_id.0,
            settlement_ref: inputs.task_id.to_string(),
            instructions,
        },
        vault_usage,
    })
}

/// The services settlement needs. The embedded network and a deployed master pass
/// their own.
pub struct SettlementContext<'a> {
    /// The replicated master state machine.
    pub masters: &'a mut dyn Replicator,
    /// The settlement ledger.
    pub ledger: &'a mut dyn SettlementLedger,
    /// Attestation verifier (allow-list of measurements).
    pub verifier: &'a SoftwareAttestationVerifier,
    /// Persisted settlement state.
    pub store: &'a SettlementStore,
    /// The task's resolved policy parameters.
    pub params: &'a PolicyParams,
}

/// The epoch whose payout set the masters put `task_id`'s payout in.
pub fn payout_epoch(events: &[symphony_master::Event], task_id: &TaskId) -> Option<EpochId> {
    events.iter().find_map(|e| match e {
        symphony_master::Event::PayoutScheduled { task_id: t, epoch } if t == task_id => {
            Some(*epoch)
        }
        _ => None,
    })
}

fn record(row: &SettlementRow, state: SettlementState) -> SettlementRecord {
    SettlementRecord {
        state,
        epoch_id: row.epoch_id,
        fee_total: row.candidate.fee_total,
        fee_shares: row.candidate.fee_shares.clone(),
        refund: row.candidate.refund,
    }
}

impl SettlementContext<'_> {
    fn commit_state(
        &mut self,
        row: &SettlementRow,
        state: SettlementState,
    ) -> Result<CommitCertificate, NodeError> {
        let committed = self.masters.submit(Command::RecordSettlement {
            task_id: row.task_id.clone(),
            record: record(row, state),
        })?;
        Ok(committed.certificate)
    }

    /// `collecting → verifying_inputs → candidate_ready`: fixes the amounts, replays
    /// the evidence and opens the challenge window at `now_ms`. Returns the row and
    /// the verification outcome; on `Challenged` the settlement stays at
    /// `verifying_inputs` and the caller files the challenge.
    pub fn open(
        &mut self,
        inputs: &SettlementInputs,
        now_ms: u64,
    ) -> Result<(SettlementRow, VerificationOutcome), NodeError> {
        let candidate = build_candidate(self.params, inputs)?;
        let mut row = SettlementRow {
            task_id: inputs.task_id.clone(),
            epoch_id: inputs.evidence.envelope.body().epoch_id,
            state: SettlementState::Collecting,
            phase: PayoutPhase::NotStarted,
            escrow_id: inputs.escrow_id.clone(),
            candidate,
            evidence: inputs.evidence.clone(),
            closes_at_ms: None,
            certificate: None,
        };
        self.commit_state(&row, SettlementState::Collecting)?;
        self.store.put_row(&row)?;
        self.commit_state(&row, SettlementState::VerifyingInputs)?;
        row.state = SettlementState::VerifyingInputs;
        self.store.put_row(&row)?;
        // Replay from what was persisted, not from what we hold in memory.
        let stored = self
            .store
            .row(&row.task_id)?
            .ok_or_else(|| NodeError::Io("settlement row vanished".into()))?;
        let outcome = verify_inputs(self.verifier, &stored.evidence);
        if outcome != VerificationOutcome::Accepted {
            return Ok((row, outcome));
        }
        self.commit_state(&row, SettlementState::CandidateReady)?;
        let closes_at_ms =
            symphony_master::window_close_ms(now_ms, self.params.epochs.challenge_window_ms)
                .ok_or_else(|| NodeError::Refused("challenge window overflows".into()))?;
        self.masters.submit(Command::OpenChallengeWindow {
            task_id: row.task_id.clone(),
            closes_at_ms,
        })?;
        row.state = SettlementState::CandidateReady;
        row.closes_at_ms = Some(closes_at_ms);
        self.store.put_row(&row)?;
        Ok((row, VerificationOutcome::Accepted))
    }

    /// `candidate_ready → finalizing → finalized` at `now_ms` (≥ the window's close):
    /// closes the window, commits `finalizing`, checks and persists its certificate,
    /// pays out exactly once and commits `finalized`. `hook` sees each step.
    pub fn finalize(
        &mut self,
        task_id: &TaskId,
        now_ms: u64,
        hook: &mut dyn FnMut(FinalizeStep),
    ) -> Result<SettlementRow, NodeError> {
        let mut row = self
            .store
            .row(task_id)?
            .ok_or_else(|| NodeError::Refused(format!("no settlement for {task_id}")))?;
        if row.state == SettlementState::CandidateReady {
            self.masters.submit(Command::CloseChallengeWindow {
                task_id: task_id.clone(),
                at_ms: now_ms,
            })?;
            let committed = self.masters.submit(Command::RecordSettlement {
                task_id: row.task_id.clone(),
                record: record(&row, SettlementState::Finalizing),
            })?;
            let certificate = committed.certificate;
            // Nothing is paid out before finality: 2 of 3 master signatures.
            if !certificate.is_final(&self.masters.master_keys()) {
                return Err(NodeError::Refused(
                    "commit certificate not final; payout withheld".into(),
                ));
            }
            // The payout belongs to the payout set of the epoch the masters put it
            // in (the epoch open at `finalizing`), which the ledger and the epoch
            // groups record.
            if let Some(epoch) = payout_epoch(&committed.events, task_id) {
                row.candidate.escrow_set.epoch_id = epoch.0;
            }
            row.state = SettlementState::Finalizing;
            row.certificate = Some(certificate);
            self.store.put_row(&row)?;
            hook(FinalizeStep::CertificateStored);
        }
        let keys = self.masters.master_keys();
        let row = complete_payout(self.store, self.ledger, task_id, &keys, hook)?;
        self.commit_finalized(row, hook)
    }

    fn commit_finalized(
        &mut self,
        mut row: SettlementRow,
        hook: &mut dyn FnMut(FinalizeStep),
    ) -> Result<SettlementRow, NodeError> {
        if row.state == SettlementState::Finalized {
            return Ok(row);
        }
        let master_state = self
            .masters
            .state()
            .task(&row.task_id)
            .and_then(|t| t.settlement.as_ref().map(|s| s.state));
        if master_state == Some(SettlementState::Finalizing) {
            self.commit_state(&row, SettlementState::Finalized)?;
            self.masters.submit(Command::Advance {
                task_id: row.task_id.clone(),
                event: TaskEvent::SettlementFinalized,
                reason: None,
            })?;
        }
        row.state = SettlementState::Finalized;
        self.store.put_row(&row)?;
        hook(FinalizeStep::Finalized);
        Ok(row)
    }

    /// After a restart: completes every settlement whose `finalizing` certificate was
    /// persisted but whose payout or `finalized` commit was not.
    pub fn resume_pending(&mut self) -> Result<Vec<TaskId>, NodeError> {
        let mut done = Vec::new();
        for row in self.store.rows()? {
            if row.state == SettlementState::Finalizing {
                let keys = self.masters.master_keys();
                let row =
                    complete_payout(self.store, self.ledger, &row.task_id, &keys, &mut |_| {})?;
                let row = self.commit_finalized(row, &mut |_| {})?;
                done.push(row.task_id);
            }
        }
        Ok(done)
    }
}

/// Moves the money of a `finalizing` settlement whose certificate is final: pays the
/// escrow set, refunds what remains in escrow, earns enterprise credits. Every step
/// is idempotent (payout by id; refund of exactly the escrow's remainder; credits
/// written in the same transaction as the phase), so running it again after a crash
/// at any point completes the payout exactly once.
pub fn complete_payout(
    store: &SettlementStore,
    ledger: &mut dyn SettlementLedger,
    task_id: &TaskId,
    master_keys: &[ed25519_dalek::VerifyingKey],
    hook: &mut dyn FnMut(FinalizeStep),
) -> Result<SettlementRow, NodeError> {
    let mut row = store
        .row(task_id)?
        .ok_or_else(|| NodeError::Refused(format!("no settlement for {task_id}")))?;
    if row.state != SettlementState::Finalizing || row.phase == PayoutPhase::Paid {
        return Ok(row);
    }
    if !row
        .certificate
        .as_ref()
        .is_some_and(|c| c.is_final(master_keys))
    {
        return Err(NodeError::Refused(format!(
            "settlement of {task_id} has no final certificate: nothing is paid"
        )));
    }
    if row.phase < PayoutPhase::EscrowPaid {
        ledger
            .payout(&row.escrow_id, &row.candidate.escrow_set)
            .map_err(ledger_err)?;
        hook(FinalizeStep::EscrowPaidUnrecorded);
        store.append_epoch_payout(&row.candidate.escrow_set)?;
        row.phase = PayoutPhase::EscrowPaid;
        store.put_row(&row)?;
        hook(FinalizeStep::EscrowPaid);
    }
    if row.phase < PayoutPhase::Refunded {
        let remaining = ledger
            .escrow(&row.escrow_id)
            .map(|e| e.remaining())
            .ok_or_else(|| NodeError::Ledger(format!("escrow {} vanished", row.escrow_id)))?;
        if remaining > 0 {
            if remaining != row.candidate.refund {
                return Err(NodeError::Ledger(format!(
                    "escrow {} holds {remaining}, expected refund {}",
                    row.escrow_id, row.candidate.refund
                )));
            }
            ledger
                .refund(&row.escrow_id, remaining)
                .map_err(ledger_err)?;
            hook(FinalizeStep::RefundedUnrecorded);
        }
        row.phase = PayoutPhase::Refunded;
        store.put_row(&row)?;
        hook(FinalizeStep::Refunded);
    }
    row.phase = PayoutPhase::Paid;
    rewards::earn_credits_and_store(store, &row)?;
    hook(FinalizeStep::Paid);
    Ok(row)
}
