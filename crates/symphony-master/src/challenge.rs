//! Challenges in the replicated state (seed 002 "Settlement and Challenge").
//!
//! Rules enforced here:
//! - a challenge window opens when a settlement reaches `candidate_ready`
//!   ([`crate::Command::OpenChallengeWindow`]) and closes at `closes_at_ms` (leader's time,
//!   an input); a challenge is filed only while the window is open
//!   ([`window_accepts`]); the one exception is the settlement plane itself (a
//!   master) challenging inputs that fail to replay at `verifying_inputs`;
//! - only an actor with **standing** may file ([`has_standing`]): the task's
//!   submitter, the operator of a participating Vault (`operator:<vault>`), or a
//!   master (`master-0..2`);
//! - at most one unresolved challenge per task: filing moves the task to
//!   `challenged`, which refuses a second filing;
//! - the challenge moves only through the core lifecycle table
//!   ([`ChallengeState::next`]); a verdict (`confirm` / `dismiss`) carries the hash of
//!   the replayed evidence; `record_penalty` carries the penalty and moves the task
//!   to `rejected`; `close` moves it back to `awaiting_settlement`;
//! - a settlement whose window was opened finalizes only after the window closed,
//!   and never while a challenge is unresolved.

use serde::{Deserialize, Serialize};
use symphony_core::encoding::Digest;
use symphony_core::ids::{ActorId, ChallengeId, TaskId, VaultId};
use symphony_core::lifecycle::{
    ChallengeEvent, ChallengeState, SettlementState, TaskEvent, TaskState,
};

use crate::{refused, Event, MasterError, MasterState, TaskRecord};

/// What a challenge disputes (seed 002: "a specific slice, sub-task, aggregation step,
/// or the composite result as a whole").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChallengeTarget {
    /// One Vault's execution slice of a round.
    Slice {
        /// Round (0 for single-round tasks).
        round: u32,
        /// The Vault.
        vault_id: VaultId,
    },
    /// A sub-task (round) of a composite task.
    SubTask {
        /// Round.
        round: u32,
    },
    /// The secure aggregation step of a round.
    Aggregation {
        /// Round (0 for single-round tasks).
        round: u32,
    },
    /// The composite result as a whole.
    Composite,
}

/// The penalty recorded for a confirmed challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PenaltyRecord {
    /// The responsible actor.
    pub actor: ActorId,
    /// Stake slashed, base units.
    pub slashed: u64,
    /// The offence, as the economics crate names it (e.g. `invalid_result`).
    pub offence: String,
}

/// A challenge as the masters know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// The challenged task (the parent for composite tasks).
    pub task_id: TaskId,
    /// What is disputed.
    pub target: ChallengeTarget,
    /// Who filed it.
    pub challenger: ActorId,
    /// Hash of the evidence filed with it.
    pub evidence_hash: Digest,
    /// When it was filed, ms.
    pub filed_at_ms: u64,
    /// Current state.
    pub state: ChallengeState,
    /// States visited.
    pub history: Vec<ChallengeState>,
    /// Hash of the replayed verdict, once reviewed.
    pub verdict_hash: Option<Digest>,
    /// The penalty, once recorded.
    pub penalty: Option<PenaltyRecord>,
}

/// A challenge as filed ([`crate::Command::FileChallenge`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeFiling {
    /// Unique id.
    pub challenge_id: ChallengeId,
    /// The challenged task.
    pub task_id: TaskId,
    /// What is disputed.
    pub target: ChallengeTarget,
    /// Who files it (needs standing).
    pub challenger: ActorId,
    /// Hash of the evidence filed with it.
    pub evidence_hash: Digest,
    /// Leader's time of filing, ms.
    pub at_ms: u64,
}

/// A task's challenge window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeWindow {
    /// Filing is accepted while `at_ms < closes_at_ms`.
    pub closes_at_ms: u64,
    /// Closed by [`crate::Command::CloseChallengeWindow`].
    pub closed: bool,
}

/// Whether the window accepts a filing at `at_ms`.
pub fn window_accepts(window: &ChallengeWindow, at_ms: u64) -> bool {
    !window.closed && at_ms < window.closes_at_ms
}

/// `candidate_ready_at_ms + challenge_window_ms`, checked.
pub fn window_close_ms(candidate_ready_at_ms: u64, challenge_window_ms: u64) -> Option<u64> {
    candidate_ready_at_ms.checked_add(challenge_window_ms)
}

/// Whether `actor` may challenge results of `task`: its submitter, the operator of
/// one of its participating Vaults (`operator:<vault>`), or a master (`master-0..2`).
pub fn has_standing(task: &TaskRecord, actor: &ActorId) -> bool {
    let body = task.envelope.body();
    let name = actor.as_str();
    let is_operator = name.strip_prefix("operator:").is_some_and(|v| {
        body.coordination_envelope
            .participating_vault_ids
            .iter()
            .any(|p| p.as_str() == v)
    });
    &body.caller.actor_id == actor || is_operator || is_master(actor)
}

fn is_master(actor: &ActorId) -> bool {
    matches!(actor.as_str(), "master-0" | "master-1" | "master-2")
}

impl MasterState {
    /// A challenge.
    pub fn challenge(&self, id: &ChallengeId) -> Option<&ChallengeRecord> {
        self.challenges.get(id)
    }

    /// All challenges.
    pub fn challenges(&self) -> impl Iterator<Item = (&ChallengeId, &ChallengeRecord)> {
        self.challenges.iter()
    }

    /// A task's challenge window.
    pub fn challenge_window(&self, task_id: &TaskId) -> Option<ChallengeWindow> {
        self.challenge_windows.get(task_id).copied()
    }

    /// Whether `task_id` may move its settlement to `finalizing`: its window (if one
    /// was opened) is closed and no challenge of it is unresolved.
    pub(crate) fn challenge_allows_finalizing(&self, task_id: &TaskId) -> Result<(), MasterError> {
        if self
            .challenge_windows
            .get(task_id)
            .is_some_and(|w| !w.closed)
        {
            return Err(refused(task_id, "the challenge window is still open"));
        }
        let unresolved = self.challenges.values().any(|c| {
            &c.task_id == task_id
                && !matches!(
                    c.state,
                    ChallengeState::ClosedWithoutPenalty | ChallengeState::PenaltyRecorded
                )
        });
        if unresolved {
            return Err(refused(task_id, "a challenge is unresolved"));
        }
        Ok(())
    }

    pub(crate) fn open_challenge_window(
        &mut self,
        task_id: &TaskId,
        closes_at_ms: u64,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self.record_mut(task_id)?;
        let ready = rec
            .settlement
            .as_ref()
            .is_some_and(|s| s.state == SettlementState::CandidateReady);
        if !ready {
            return Err(refused(
                task_id,
                "a challenge window opens only at candidate_ready",
            ));
        }
        if self.challenge_windows.contains_key(task_id) {
            return Err(refused(task_id, "the challenge window was already opened"));
        }
        self.challenge_windows.insert(
            task_id.clone(),
            ChallengeWindow {
                closes_at_ms,
                closed: false,
            },
        );
        Ok(vec![Event::ChallengeWindowOpened {
            task_id: task_id.clone(),
            closes_at_ms,
        }])
    }

    pub(crate) fn close_challenge_window(
        &mut self,
        task_id: &TaskId,
        at_ms: u64,
    ) -> Result<Vec<Event>, MasterError> {
        let window = self
            .challenge_windows
            .get(task_id)
            .copied()
            .ok_or_else(|| refused(task_id, "no challenge window was opened"))?;
        if window.closed || at_ms < window.closes_at_ms {
            return Err(refused(
                task_id,
                format!(
                    "the window closes at {} ms, not at {at_ms} ms",
                    window.closes_at_ms
                ),
            ));
        }
        // An unresolved challenge keeps the task `challenged`.
        if self
            .tasks
            .get(task_id)
            .is_some_and(|t| t.state == TaskState::Challenged)
        {
            return Err(refused(
                task_id,
                "a challenge is under review: the window stays open",
            ));
        }
        self.challenge_windows.insert(
            task_id.clone(),
            ChallengeWindow {
                closed: true,
                ..window
            },
        );
        Ok(vec![Event::ChallengeWindowClosed {
            task_id: task_id.clone(),
        }])
    }

    pub(crate) fn file_challenge(
        &mut self,
        filing: &ChallengeFiling,
    ) -> Result<Vec<Event>, MasterError> {
        let task_id = &filing.task_id;
        if self.challenges.contains_key(&filing.challenge_id) {
            return Err(refused(
                task_id,
                format!("challenge {} exists", filing.challenge_id),
            ));
        }
        let window = self.challenge_windows.get(task_id).copied();
        // The settlement plane itself (a master) challenges inputs that fail to
        // replay at `verifying_inputs`, before any window exists.
        let plane_challenge = is_master(&filing.challenger)
            && self
                .tasks
                .get(task_id)
                .and_then(|t| t.settlement.as_ref())
                .is_some_and(|s| s.state == SettlementState::VerifyingInputs);
        if !plane_challenge && !window.is_some_and(|w| window_accepts(&w, filing.at_ms)) {
            return Err(refused(
                task_id,
                format!("no open challenge window at {} ms", filing.at_ms),
            ));
        }
        let rec = self.record_mut(task_id)?;
        if !has_standing(rec, &filing.challenger) {
            return Err(refused(
                task_id,
                format!(
                    "{} has no standing to challenge this task",
                    filing.challenger
                ),
            ));
        }
        let mut events = self.advance_task(task_id, TaskEvent::OpenChallenge)?;
        self.challenges.insert(
            filing.challenge_id.clone(),
            ChallengeRecord {
                task_id: task_id.clone(),
                target: filing.target.clone(),
                challenger: filing.challenger.clone(),
                evidence_hash: filing.evidence_hash,
                filed_at_ms: filing.at_ms,
                state: ChallengeState::Opened,
                history: vec![ChallengeState::Opened],
                verdict_hash: None,
                penalty: None,
            },
        );
        events.push(Event::ChallengeChanged {
            challenge_id: filing.challenge_id.clone(),
            state: ChallengeState::Opened,
        });
        Ok(events)
    }

    pub(crate) fn challenge_step(
        &mut self,
        challenge_id: &ChallengeId,
        event: ChallengeEvent,
        verdict_hash: Option<Digest>,
        penalty: Option<&PenaltyRecord>,
    ) -> Result<Vec<Event>, MasterError> {
        let c = self
            .challenges
            .get(challenge_id)
            .cloned()
            .ok_or_else(|| MasterError::UnknownChallenge(challenge_id.clone()))?;
        let to = c.state.next(event)?;
        let needs_verdict = matches!(event, ChallengeEvent::Confirm | ChallengeEvent::Dismiss);
        if needs_verdict != verdict_hash.is_some() {
            return Err(refused(
                &c.task_id,
                "a verdict hash comes with confirm/dismiss and only with them",
            ));
        }
        let needs_penalty = event == ChallengeEvent::RecordPenalty;
        if needs_penalty != penalty.is_some() {
            return Err(refused(
                &c.task_id,
                "a penalty comes with record_penalty and only with it",
            ));
        }
        let mut events = match to {
            ChallengeState::PenaltyRecorded => {
                self.advance_task(&c.task_id, TaskEvent::ChallengePenaltyRecorded)?
            }
            ChallengeState::ClosedWithoutPenalty => {
                self.advance_task(&c.task_id, TaskEvent::ChallengeClosedWithoutPenalty)?
            }
            _ => Vec::new(),
        };
        let rec = self
            .challenges
            .get_mut(challenge_id)
            .ok_or_else(|| MasterError::UnknownChallenge(challenge_id.clone()))?;
        rec.state = to;
        rec.history.push(to);
        if verdict_hash.is_some() {
            rec.verdict_hash = verdict_hash;
        }
        if let Some(p) = penalty {
            rec.penalty = Some(p.clone());
        }
        events.push(Event::ChallengeChanged {
            challenge_id: challenge_id.clone(),
            state: to,
        });
        Ok(events)
    }

    fn advance_task(
        &mut self,
        task_id: &TaskId,
        event: TaskEvent,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self.record_mut(task_id)?;
        let from = rec.state;
        let to = from.next(event)?;
        rec.state = to;
        rec.history.push(to);
        Ok(vec![Event::TaskStateChanged {
            task_id: task_id.clone(),
            from,
            to,
        }])
    }
}
