//! Challenges (seed 002 "Challenge Lifecycle"): filed during the settlement's
//! challenge window, decided by **replaying stored evidence** (the same evidence gives
//! the same verdict on every replay), and penalized through the ledger.
//!
//! Lifecycle (core table): `opened → reviewing → confirmed → approved →
//! penalty_recorded` or `opened → reviewing → not_confirmed → closed_without_penalty`.
//! The task goes `challenged`, then `rejected` (penalty) or back to
//! `awaiting_settlement` (no penalty), where its settlement finalizes normally.
//!
//! Evidence a challenger can bring ([`ChallengeEvidence`]):
//! - `StoredEvidenceFails`: the target's stored evidence does not verify on replay;
//! - `ConflictingRun`: a second, validly attested run over the **same inputs** with a
//!   different output. The slice and aggregation runtimes are deterministic, so two
//!   attested outputs for one input commitment prove that the responsible node fed
//!   or reported something other than the attested computation;
//! - `CompositeLink`: a composite settlement whose link over its sub-task
//!   settlements does not replay.
//!
//! On a confirmed challenge the responsible actor (the Vault operator for a slice,
//! the aggregation executor for an aggregation step or sub-task, the coordinating
//! master for a composite) is slashed by `staking::slash` (graduated by severity and
//! repeats) through the ledger — **slashed stake goes to the treasury** — and the
//! bad work is never paid: the task is rejected and its escrow charged only the
//! policy's base fee (to the treasury), the rest refunded to the submitter.

use serde::{Deserialize, Serialize};
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, ChallengeId, EpochId, TaskId};
use symphony_core::lifecycle::{ChallengeEvent, ChallengeState};
use symphony_economics::{slash, Offence};
use symphony_enclave::SoftwareAttestationVerifier;
use symphony_master::{link_commitment, ChallengeFiling, ChallengeTarget, Command, PenaltyRecord};

use crate::settlement::rewards::charge_rejection;
use crate::settlement::{
    actor_account, vault_operator, verify_aggregate_evidence, verify_composite,
    CompositeSettlement, SettlementContext, StoredEvidence,
};
use crate::verify::{verify_evidence, SliceEvidence};
use crate::NodeError;

/// What a challenger brings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeEvidence {
    /// The target's stored evidence does not verify when replayed.
    StoredEvidenceFails,
    /// Another attested run over the same inputs with a different output. For an
    /// aggregation target, `inputs_commitment` is the link of the input commitments
    /// and `commitment` the result hash.
    ConflictingRun {
        /// The other run.
        evidence: Box<SliceEvidence>,
    },
    /// The composite settlement as published.
    CompositeLink {
        /// The composite.
        composite: Box<CompositeSettlement>,
    },
}

/// The result of replaying a challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The fault is confirmed.
    pub confirmed: bool,
    /// Who is responsible (if confirmed).
    pub responsible: Option<ActorId>,
    /// The offence.
    pub offence: Offence,
    /// Why.
    pub reason: String,
}

impl Verdict {
    fn no(reason: impl Into<String>) -> Self {
        Verdict {
            confirmed: false,
            responsible: None,
            offence: Offence::InvalidResult,
            reason: reason.into(),
        }
    }
    fn yes(responsible: ActorId, offence: Offence, reason: impl Into<String>) -> Self {
        Verdict {
            confirmed: true,
            responsible: Some(responsible),
            offence,
            reason: reason.into(),
        }
    }
}

fn slice_verdict(
    verifier: &SoftwareAttestationVerifier,
    stored: &StoredEvidence,
    vault: &symphony_core::ids::VaultId,
    evidence: &ChallengeEvidence,
) -> Result<Verdict, NodeError> {
    let responsible = vault_operator(vault)?;
    let Some(s) = stored.slices.iter().find(|s| &s.vault_id == vault) else {
        return Ok(Verdict::no("no such slice"));
    };
    let Some(ev) = &s.evidence else {
        return Ok(Verdict::no(
            "the slice was not verified, nothing was paid for it",
        ));
    };
    let envelope = &stored.envelope;
    Ok(match evidence {
        ChallengeEvidence::StoredEvidenceFails => {
            match verify_evidence(verifier, envelope, ev, vault.as_str()) {
                Err(e) => Verdict::yes(responsible, Offence::InvalidResult, e.to_string()),
                Ok(()) => Verdict::no("the stored slice evidence replays"),
            }
        }
        ChallengeEvidence::ConflictingRun { evidence: other } => {
            if verify_evidence(verifier, envelope, other, vault.as_str()).is_err() {
                Verdict::no("the conflicting run is not validly attested")
            } else if other.inputs_commitment != ev.inputs_commitment {
                Verdict::no("the conflicting run has other inputs")
            } else if other.commitment == ev.commitment {
                Verdict::no("the other run has the same output")
            } else {
                Verdict::yes(
                    responsible,
                    Offence::InvalidResult,
                    "two attested outputs for the same slice inputs",
                )
            }
        }
        ChallengeEvidence::CompositeLink { .. } => Verdict::no("not evidence about a slice"),
    })
}

fn aggregation_verdict(
    verifier: &SoftwareAttestationVerifier,
    stored: &StoredEvidence,
    evidence: &ChallengeEvidence,
) -> Verdict {
    let agg = &stored.aggregate;
    let responsible = agg.executor.clone();
    let slices: Vec<SliceEvidence> = stored
        .slices
        .iter()
        .filter_map(|s| s.evidence.clone())
        .collect();
    match evidence {
        ChallengeEvidence::StoredEvidenceFails => {
            match verify_aggregate_evidence(verifier, &stored.envelope, &slices, agg) {
                Err(e) => Verdict::yes(responsible, Offence::InvalidResult, e.to_string()),
                Ok(()) => Verdict::no("the stored aggregation evidence replays"),
            }
        }
        ChallengeEvidence::ConflictingRun { evidence: other } => {
            let inputs = link_commitment("scp/aggregation-inputs/v1", &agg.input_commitments);
            if verify_evidence(verifier, &stored.envelope, other, "aggregation").is_err() {
                Verdict::no("the conflicting run is not validly attested")
            } else if other.inputs_commitment != inputs {
                Verdict::no("the conflicting run has other inputs")
            } else if other.commitment == agg.result_hash {
                Verdict::no("the other run has the same output")
            } else {
                Verdict::yes(
                    responsible,
                    Offence::InvalidResult,
                    "two attested aggregates for the same inputs",
                )
            }
        }
        ChallengeEvidence::CompositeLink { .. } => Verdict::no("not evidence about aggregation"),
    }
}

/// Replays `evidence` against the stored evidence of the challenged task. Pure and
/// deterministic: no clock, no randomness, no IO.
pub fn replay_verdict(
    verifier: &SoftwareAttestationVerifier,
    stored: &StoredEvidence,
    target: &ChallengeTarget,
    evidence: &ChallengeEvidence,
) -> Result<Verdict, NodeError> {
    match target {
        ChallengeTarget::Slice { vault_id, .. } => {
            slice_verdict(verifier, stored, vault_id, evidence)
        }
        ChallengeTarget::Aggregation { .. } | ChallengeTarget::SubTask { .. } => {
            Ok(aggregation_verdict(verifier, stored, evidence))
        }
        ChallengeTarget::Composite => Ok(match evidence {
            ChallengeEvidence::CompositeLink { composite } if !verify_composite(composite) => {
                Verdict::yes(
                    ActorId::new("master-0").map_err(|e| NodeError::Refused(e.to_string()))?,
                    Offence::FaultyVerification,
                    "the composite link does not replay",
                )
            }
            _ => Verdict::no("the composite link replays"),
        }),
    }
}

/// Hash of a verdict together with what it judged (recorded by the masters).
pub fn verdict_hash(
    target: &ChallengeTarget,
    evidence: &ChallengeEvidence,
    verdict: &Verdict,
) -> Result<Digest, NodeError> {
    content_hash("scp/challenge-verdict/v1", &(target, evidence, verdict))
        .map_err(|e| NodeError::Encoding(e.0))
}

/// A challenge as filed by an actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeRequest {
    /// Id.
    pub challenge_id: ChallengeId,
    /// The task.
    pub task_id: TaskId,
    /// What is disputed.
    pub target: ChallengeTarget,
    /// Who files (needs standing).
    pub challenger: ActorId,
    /// The evidence.
    pub evidence: ChallengeEvidence,
}

/// What a challenge ended as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeOutcome {
    /// Final challenge state (`penalty_recorded` or `closed_without_penalty`).
    pub state: ChallengeState,
    /// The verdict.
    pub verdict: Verdict,
    /// Its hash.
    pub verdict_hash: Digest,
    /// Stake slashed (0 if not confirmed or nothing staked).
    pub slashed: u64,
}

impl SettlementContext<'_> {
    fn step(
        &mut self,
        id: &ChallengeId,
        event: ChallengeEvent,
        verdict_hash: Option<Digest>,
        penalty: Option<PenaltyRecord>,
    ) -> Result<(), NodeError> {
        self.masters.submit(Command::ChallengeStep {
            challenge_id: id.clone(),
            event,
            verdict_hash,
            penalty,
        })?;
        Ok(())
    }

    /// Files `req` at `now_ms` with the masters (its evidence committed by hash) and
    /// returns the task's settlement row.
    pub(crate) fn file_challenge(
        &mut self,
        req: &ChallengeRequest,
        now_ms: u64,
    ) -> Result<super::settlement::SettlementRow, NodeError> {
        let row = self
            .store
            .row(&req.task_id)?
            .ok_or_else(|| NodeError::Refused(format!("no settlement for {}", req.task_id)))?;
        let evidence_hash = content_hash("scp/challenge-evidence/v1", &req.evidence)
            .map_err(|e| NodeError::Encoding(e.0))?;
        self.masters.submit(Command::FileChallenge {
            filing: ChallengeFiling {
                challenge_id: req.challenge_id.clone(),
                task_id: req.task_id.clone(),
                target: req.target.clone(),
                challenger: req.challenger.clone(),
                evidence_hash,
                at_ms: now_ms,
            },
        })?;
        Ok(row)
    }

    /// Files `req` at `now_ms`, replays it and applies the verdict: a confirmed
    /// challenge slashes the responsible actor, records the penalty, rejects the task
    /// and charges only the base fee; a dismissed one returns the task to
    /// `awaiting_settlement`.
    pub fn run_challenge(
        &mut self,
        req: &ChallengeRequest,
        now_ms: u64,
    ) -> Result<ChallengeOutcome, NodeError> {
        let row = self.file_challenge(req, now_ms)?;
        let id = &req.challenge_id;
        self.step(id, ChallengeEvent::StartReview, None, None)?;
        // Review replays the stored evidence as persisted.
        let verdict = replay_verdict(self.verifier, &row.evidence, &req.target, &req.evidence)?;
        let hash = verdict_hash(&req.target, &req.evidence, &verdict)?;
        let Some(responsible) = verdict.responsible.clone().filter(|_| verdict.confirmed) else {
            self.step(id, ChallengeEvent::Dismiss, Some(hash), None)?;
            self.step(id, ChallengeEvent::Close, None, None)?;
            return Ok(ChallengeOutcome {
                state: ChallengeState::ClosedWithoutPenalty,
                verdict,
                verdict_hash: hash,
                slashed: 0,
            });
        };
        self.step(id, ChallengeEvent::Confirm, Some(hash), None)?;
        self.step(id, ChallengeEvent::Approve, None, None)?;
        let slashed = self.slash_for(&responsible, verdict.offence, row.epoch_id, id)?;
        self.step(
            id,
            ChallengeEvent::RecordPenalty,
            None,
            Some(PenaltyRecord {
                actor: responsible,
                slashed,
                offence: offence_name(verdict.offence).to_owned(),
            }),
        )?;
        charge_rejection(
            self.ledger,
            self.store,
            &row.escrow_id,
            &req.task_id,
            row.evidence.envelope.body().task_class,
            self.params,
            row.epoch_id,
        )?;
        Ok(ChallengeOutcome {
            state: ChallengeState::PenaltyRecorded,
            verdict,
            verdict_hash: hash,
            slashed,
        })
    }

    /// Slashes `actor`'s stake for `offence` (graduated by earlier penalties recorded
    /// against it in the master state) through the ledger.
    fn slash_for(
        &mut self,
        actor: &ActorId,
        offence: Offence,
        epoch: EpochId,
        id: &ChallengeId,
    ) -> Result<u64, NodeError> {
        let state = self.masters.state();
        let prior: Vec<EpochId> = state
            .challenges()
            .filter(|(cid, c)| *cid != id && c.penalty.as_ref().is_some_and(|p| &p.actor == actor))
            .filter_map(|(_, c)| state.task(&c.task_id).map(|t| t.envelope.body().epoch_id))
            .collect();
        let account = actor_account(actor)?;
        let stake = self.ledger.stake_of(&account);
        let outcome = slash(stake, offence, &prior, epoch, &self.params.slashing);
        if outcome.slashed_micro_sym > 0 {
            self.ledger
                .slash(
                    &account,
                    outcome.slashed_micro_sym,
                    &format!("challenge:{id}"),
                )
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
        }
        Ok(outcome.slashed_micro_sym)
    }
}

/// The offence's protocol name.
pub fn offence_name(o: Offence) -> &'static str {
    match o {
        Offence::Unavailability => "unavailability",
        Offence::InvalidResult => "invalid_result",
        Offence::FaultyVerification => "faulty_verification",
        Offence::SovereigntyViolation => "sovereignty_violation",
        Offence::Equivocation => "equivocation",
    }
}

/// Class of a task (for the rejection fee).
pub fn task_class(stored: &StoredEvidence) -> TaskClass {
    stored.envelope.body().task_class
}
