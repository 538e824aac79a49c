//! The lifecycles of the protocol: task, execution slice, challenge, settlement.
//!
//! Each lifecycle is a table of legal `(state, event) → state` transitions; anything
//! else is refused with [`TransitionError`], so no state can be skipped.
//!
//! Task lifecycle (overview, "Task Lifecycle"):
//!
//! ```text
//! accepted → resolving → dispatched → verifying → awaiting_settlement → completed
//!    │           │            │            │                │
//!    ├─rejected  ├─rejected   ├─rejected   └─challenged     └─challenged
//!    └─timed_out └─timed_out  └─timed_out
//! ```
//!
//! Reading of the diagram (the overview's text lost its column alignment): the
//! `rejected` and `timed_out` branches hang under the first three states, `challenged`
//! under the last two. `challenged` is left only by the verdict of its challenge:
//! closed without penalty → back to `awaiting_settlement`; penalty recorded →
//! `rejected`. `completed`, `rejected` and `timed_out` are terminal.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A refused transition: the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {lifecycle} transition: {event} is not allowed in state {from}")]
pub struct TransitionError {
    /// Which lifecycle.
    pub lifecycle: &'static str,
    /// The current state.
    pub from: String,
    /// The refused event.
    pub event: String,
}

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The protocol's name for the value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// State of a task (and of each sub-task of a composite task).
    TaskState {
        /// Admitted; the `TaskEnvelope` exists.
        Accepted => "accepted",
        /// Semantic resolution under the envelope's `semantic_version`.
        Resolving => "resolving",
        /// Slices are out at the Vaults.
        Dispatched => "dispatched",
        /// Results and evidence are being verified.
        Verifying => "verifying",
        /// Accepted work waiting for finalized settlement.
        AwaitingSettlement => "awaiting_settlement",
        /// Settled and delivered. Terminal.
        Completed => "completed",
        /// Validation failed. Terminal.
        Rejected => "rejected",
        /// Deadline exceeded. Terminal.
        TimedOut => "timed_out",
        /// A dispute is open.
        Challenged => "challenged",
    }
);

named_enum!(
    /// What happens to a task.
    TaskEvent {
        /// Admission handed the envelope to the orchestrator.
        BeginResolution => "begin_resolution",
        /// Semantics resolved; slices sent.
        Dispatch => "dispatch",
        /// Enough slices (the quorum) returned; aggregate formed.
        ExecutionFinished => "execution_finished",
        /// Verification accepted the result.
        VerificationAccepted => "verification_accepted",
        /// Settlement finalized.
        SettlementFinalized => "settlement_finalized",
        /// A validation failure.
        Reject => "reject",
        /// The deadline passed.
        Timeout => "timeout",
        /// A challenge was opened.
        OpenChallenge => "open_challenge",
        /// The challenge closed without penalty.
        ChallengeClosedWithoutPenalty => "challenge_closed_without_penalty",
        /// The challenge was confirmed and its penalty recorded.
        ChallengePenaltyRecorded => "challenge_penalty_recorded",
    }
);

impl TaskState {
    /// The state after `event`, or the error if the protocol forbids it.
    pub fn next(self, event: TaskEvent) -> Result<TaskState, TransitionError> {
        use TaskEvent as E;
        use TaskState as S;
        let to = match (self, event) {
            (S::Accepted, E::BeginResolution) => S::Resolving,
            (S::Resolving, E::Dispatch) => S::Dispatched,
            (S::Dispatched, E::ExecutionFinished) => S::Verifying,
            (S::Verifying, E::VerificationAccepted) => S::AwaitingSettlement,
            (S::AwaitingSettlement, E::SettlementFinalized) => S::Completed,
            (S::Accepted | S::Resolving | S::Dispatched, E::Reject) => S::Rejected,
            (S::Accepted | S::Resolving | S::Dispatched, E::Timeout) => S::TimedOut,
            (S::Verifying | S::AwaitingSettlement, E::OpenChallenge) => S::Challenged,
            (S::Challenged, E::ChallengeClosedWithoutPenalty) => S::AwaitingSettlement,
            (S::Challenged, E::ChallengePenaltyRecorded) => S::Rejected,
            _ => {
                return Err(TransitionError {
                    lifecycle: "task",
                    from: self.to_string(),
                    event: event.to_string(),
                })
            }
        };
        Ok(to)
    }

    /// Whether no event leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Rejected | TaskState::TimedOut
        )
    }

    /// Whether execution may already have disclosed information (so a failure from
    /// here commits privacy budget at the estimate instead of releasing it).
    pub fn execution_started(self) -> bool {
        !matches!(self, TaskState::Accepted | TaskState::Resolving)
    }
}

named_enum!(
    /// State of one execution slice (one Vault's part of one sub-task).
    SliceState {
        /// Assigned to the Vault.
        Assigned => "assigned",
        /// The Vault returned a `SliceResultBundle`.
        Returned => "returned",
        /// Evidence and attestation checked. Terminal.
        Verified => "verified",
        /// Refused by the Vault or failed verification. Terminal.
        Failed => "failed",
        /// The Vault did not answer in time. Terminal.
        TimedOut => "timed_out",
    }
);

named_enum!(
    /// What happens to a slice.
    SliceEvent {
        /// The bundle arrived.
        Return => "return",
        /// Verification passed.
        Verify => "verify",
        /// Refused or failed.
        Fail => "fail",
        /// No answer by the deadline.
        Timeout => "timeout",
    }
);

impl SliceState {
    /// The state after `event`.
    pub fn next(self, event: SliceEvent) -> Result<SliceState, TransitionError> {
        use SliceEvent as E;
        use SliceState as S;
        match (self, event) {
            (S::Assigned, E::Return) => Ok(S::Returned),
            (S::Assigned, E::Fail) => Ok(S::Failed),
            (S::Assigned, E::Timeout) => Ok(S::TimedOut),
            (S::Returned, E::Verify) => Ok(S::Verified),
            (S::Returned, E::Fail) => Ok(S::Failed),
            _ => Err(TransitionError {
                lifecycle: "slice",
                from: self.to_string(),
                event: event.to_string(),
            }),
        }
    }
}

named_enum!(
    /// State of a challenge (overview, "Challenge Lifecycle").
    ChallengeState {
        /// Filed with evidence.
        Opened => "opened",
        /// Under review (evidence being replayed).
        Reviewing => "reviewing",
        /// The replay confirmed the fault.
        Confirmed => "confirmed",
        /// The replay did not confirm the fault.
        NotConfirmed => "not_confirmed",
        /// Governance approved the penalty.
        Approved => "approved",
        /// Closed without penalty. Terminal.
        ClosedWithoutPenalty => "closed_without_penalty",
        /// The penalty is recorded (stake slashed). Terminal.
        PenaltyRecorded => "penalty_recorded",
    }
);

named_enum!(
    /// What happens to a challenge.
    ChallengeEvent {
        /// Review starts.
        StartReview => "start_review",
        /// Verdict: fault confirmed.
        Confirm => "confirm",
        /// Verdict: fault not confirmed.
        Dismiss => "dismiss",
        /// Penalty approved.
        Approve => "approve",
        /// Closed without penalty.
        Close => "close",
        /// Penalty recorded.
        RecordPenalty => "record_penalty",
    }
);

impl ChallengeState {
    /// The state after `event`.
    pub fn next(self, event: ChallengeEvent) -> Result<ChallengeState, TransitionError> {
        use ChallengeEvent as E;
        use ChallengeState as S;
        match (self, event) {
            (S::Opened, E::StartReview) => Ok(S::Reviewing),
            (S::Reviewing, E::Confirm) => Ok(S::Confirmed),
            (S::Reviewing, E::Dismiss) => Ok(S::NotConfirmed),
            (S::Confirmed, E::Approve) => Ok(S::Approved),
            (S::NotConfirmed, E::Close) => Ok(S::ClosedWithoutPenalty),
            (S::Approved, E::RecordPenalty) => Ok(S::PenaltyRecorded),
            _ => Err(TransitionError {
                lifecycle: "challenge",
                from: self.to_string(),
                event: event.to_string(),
            }),
        }
    }
}

named_enum!(
    /// State of a settlement (overview, "Settlement").
    SettlementState {
        /// Gathering verified results and evidence.
        Collecting => "collecting",
        /// Checking the inputs (attestations, commitments, budget records).
        VerifyingInputs => "verifying_inputs",
        /// The payout candidate is computed; the challenge window runs.
        CandidateReady => "candidate_ready",
        /// Commit certificate being gathered.
        Finalizing => "finalizing",
        /// Final (2 of 3 masters); payout may happen. Terminal.
        Finalized => "finalized",
    }
);

impl SettlementState {
    /// The next state on the single forward path, or an error at `finalized`.
    pub fn advance(self) -> Result<SettlementState, TransitionError> {
        use SettlementState as S;
        match self {
            S::Collecting => Ok(S::VerifyingInputs),
            S::VerifyingInputs => Ok(S::CandidateReady),
            S::CandidateReady => Ok(S::Finalizing),
            S::Finalizing => Ok(S::Finalized),
            S::Finalized => Err(TransitionError {
                lifecycle: "settlement",
                from: self.to_string(),
                event: "advance".to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskEvent as E;
    use TaskState as S;

    /// The complete table of legal task transitions.
    const LEGAL: &[(TaskState, TaskEvent, TaskState)] = &[
        (S::Accepted, E::BeginResolution, S::Resolving),
        (S::Resolving, E::Dispatch, S::Dispatched),
        (S::Dispatched, E::ExecutionFinished, S::Verifying),
        (S::Verifying, E::VerificationAccepted, S::AwaitingSettlement),
        (S::AwaitingSettlement, E::SettlementFinalized, S::Completed),
        (S::Accepted, E::Reject, S::Rejected),
        (S::Resolving, E::Reject, S::Rejected),
        (S::Dispatched, E::Reject, S::Rejected),
        (S::Accepted, E::Timeout, S::TimedOut),
        (S::Resolving, E::Timeout, S::TimedOut),
        (S::Dispatched, E::Timeout, S::TimedOut),
        (S::Verifying, E::OpenChallenge, S::Challenged),
        (S::AwaitingSettlement, E::OpenChallenge, S::Challenged),
        (
            S::Challenged,
            E::ChallengeClosedWithoutPenalty,
            S::AwaitingSettlement,
        ),
        (S::Challenged, E::ChallengePenaltyRecorded, S::Rejected),
    ];

    #[test]
    fn every_task_pair_matches_the_table() {
        let mut legal = 0;
        for &from in TaskState::ALL {
            for &event in TaskEvent::ALL {
                let expected = LEGAL
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (from.next(event), expected) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{from} --{event}-->");
                        legal += 1;
                    }
                    (Err(err), None) => {
                        assert_eq!(err.lifecycle, "task");
                        assert_eq!(err.from, from.as_str());
                    }
                    (got, want) => panic!("{from} --{event}--> got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal, LEGAL.len());
    }

    #[test]
    fn terminal_states_have_no_exit() {
        for &s in TaskState::ALL {
            let exits = TaskEvent::ALL
                .iter()
                .filter(|e| s.next(**e).is_ok())
                .count();
            assert_eq!(s.is_terminal(), exits == 0, "{s}");
        }
    }

    #[test]
    fn slice_table() {
        use SliceEvent as SE;
        use SliceState as SS;
        let legal = [
            (SS::Assigned, SE::Return, SS::Returned),
            (SS::Assigned, SE::Fail, SS::Failed),
            (SS::Assigned, SE::Timeout, SS::TimedOut),
            (SS::Returned, SE::Verify, SS::Verified),
            (SS::Returned, SE::Fail, SS::Failed),
        ];
        for &from in SliceState::ALL {
            for &ev in SliceEvent::ALL {
                let want = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == ev)
                    .map(|t| t.2);
                assert_eq!(from.next(ev).ok(), want, "{from} --{ev}-->");
            }
        }
    }

    #[test]
    fn challenge_table() {
        use ChallengeEvent as CE;
        use ChallengeState as CS;
        let legal = [
            (CS::Opened, CE::StartReview, CS::Reviewing),
            (CS::Reviewing, CE::Confirm, CS::Confirmed),
            (CS::Reviewing, CE::Dismiss, CS::NotConfirmed),
            (CS::Confirmed, CE::Approve, CS::Approved),
            (CS::NotConfirmed, CE::Close, CS::ClosedWithoutPenalty),
            (CS::Approved, CE::RecordPenalty, CS::PenaltyRecorded),
        ];
        for &from in ChallengeState::ALL {
            for &ev in ChallengeEvent::ALL {
                let want = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == ev)
                    .map(|t| t.2);
                let got = from.next(ev);
                assert_eq!(got.clone().ok(), want, "{from} --{ev}-->");
                if let Err(e) = got {
                    assert_eq!(e.lifecycle, "challenge");
                }
            }
        }
    }

    #[test]
    fn settlement_walks_forward_only() {
        let mut s = SettlementState::Collecting;
        let mut seen = vec![s];
        while let Ok(n) = s.advance() {
            s = n;
            seen.push(s);
        }
        assert_eq!(seen, SettlementState::ALL.to_vec());
        assert_eq!(s, SettlementState::Finalized);
    }
}
