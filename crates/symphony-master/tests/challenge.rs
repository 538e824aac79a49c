//! Challenge commands of the master state machine: window arithmetic, standing,
//! lifecycle, effects on the task and on finalization.

use symphony_core::encoding::Digest;
use symphony_core::ids::*;
use symphony_core::lifecycle::{ChallengeEvent, ChallengeState, SettlementState, TaskState};
use symphony_master::*;

mod common;
use common::{accepted_task, settlement, vault};

const T0: u64 = 5_000;
const WINDOW: u64 = 600;

/// A task with its settlement at `candidate_ready` and the window open.
fn at_candidate_ready() -> (MasterState, TaskId) {
    let t = TaskId::new("t1").unwrap();
    let mut s = MasterState::new();
    let mut cmds = accepted_task(&t);
    for st in [
        SettlementState::Collecting,
        SettlementState::VerifyingInputs,
        SettlementState::CandidateReady,
    ] {
        cmds.push(Command::RecordSettlement {
            task_id: t.clone(),
            record: settlement(st, 700, &[("treasury", 100), ("vaults", 600)]),
        });
    }
    cmds.push(Command::OpenChallengeWindow {
        task_id: t.clone(),
        closes_at_ms: window_close_ms(T0, WINDOW).unwrap(),
    });
    for c in &cmds {
        s.apply(c).unwrap();
    }
    (s, t)
}

fn filing(t: &TaskId, id: &str, who: &str, at_ms: u64) -> Command {
    Command::FileChallenge {
        filing: ChallengeFiling {
            challenge_id: ChallengeId::new(id).unwrap(),
            task_id: t.clone(),
            target: ChallengeTarget::Slice {
                round: 0,
                vault_id: vault("v1"),
            },
            challenger: ActorId::new(who).unwrap(),
            evidence_hash: Digest([7; 32]),
            at_ms,
        },
    }
}

fn step(id: &str, event: ChallengeEvent, verdict: bool, penalty: bool) -> Command {
    Command::ChallengeStep {
        challenge_id: ChallengeId::new(id).unwrap(),
        event,
        verdict_hash: verdict.then_some(Digest([8; 32])),
        penalty: penalty.then(|| PenaltyRecord {
            actor: ActorId::new("operator:v1").unwrap(),
            slashed: 10,
            offence: "invalid_result".into(),
        }),
    }
}

fn finalizing(t: &TaskId) -> Command {
    Command::RecordSettlement {
        task_id: t.clone(),
        record: settlement(
            SettlementState::Finalizing,
            700,
            &[("treasury", 100), ("vaults", 600)],
        ),
    }
}

#[test]
fn window_arithmetic() {
    let w = ChallengeWindow {
        closes_at_ms: 100,
        closed: false,
    };
    assert!(window_accepts(&w, 99));
    assert!(!window_accepts(&w, 100));
    assert!(!window_accepts(&ChallengeWindow { closed: true, ..w }, 0));
    assert_eq!(window_close_ms(u64::MAX, 1), None);
    assert_eq!(window_close_ms(5, 7), Some(12));
}

#[test]
fn finalizing_waits_for_the_window() {
    let (mut s, t) = at_candidate_ready();
    let before = s.clone();
    assert!(s.apply(&finalizing(&t)).is_err(), "window still open");
    assert!(s
        .apply(&Command::CloseChallengeWindow {
            task_id: t.clone(),
            at_ms: T0 + WINDOW - 1
        })
        .is_err());
    assert_eq!(s, before, "refused commands change nothing");
    s.apply(&Command::CloseChallengeWindow {
        task_id: t.clone(),
        at_ms: T0 + WINDOW,
    })
    .unwrap();
    assert!(s
        .apply(&filing(&t, "c1", "advertiser:luckin", T0 + 1))
        .is_err());
    s.apply(&finalizing(&t)).unwrap();
}

#[test]
fn standing_and_window_are_enforced() {
    let (mut s, t) = at_candidate_ready();
    for who in ["stranger", "operator:v9", "master-3"] {
        assert!(s.apply(&filing(&t, "c1", who, T0 + 1)).is_err(), "{who}");
    }
    assert!(s
        .apply(&filing(&t, "c1", "operator:v2", T0 + WINDOW))
        .is_err());
    for who in ["advertiser:luckin", "operator:v2", "master-1"] {
        let mut s2 = s.clone();
        s2.apply(&filing(&t, "c1", who, T0 + 1)).unwrap();
        assert_eq!(s2.task(&t).unwrap().state, TaskState::Challenged);
    }
}

#[test]
fn confirmed_challenge_records_penalty_and_rejects_the_task() {
    let (mut s, t) = at_candidate_ready();
    s.apply(&filing(&t, "c1", "master-0", T0 + 1)).unwrap();
    assert!(
        s.apply(&filing(&t, "c2", "master-1", T0 + 2)).is_err(),
        "one unresolved challenge per task"
    );
    assert!(s.apply(&finalizing(&t)).is_err());
    // verdict without a hash, penalty without record_penalty: refused
    assert!(s
        .apply(&step("c1", ChallengeEvent::StartReview, true, false))
        .is_err());
    s.apply(&step("c1", ChallengeEvent::StartReview, false, false))
        .unwrap();
    assert!(s
        .apply(&step("c1", ChallengeEvent::Confirm, false, false))
        .is_err());
    assert!(s
        .apply(&step("c1", ChallengeEvent::Close, false, false))
        .is_err());
    s.apply(&step("c1", ChallengeEvent::Confirm, true, false))
        .unwrap();
    s.apply(&step("c1", ChallengeEvent::Approve, false, false))
        .unwrap();
    assert!(s
        .apply(&step("c1", ChallengeEvent::RecordPenalty, false, false))
        .is_err());
    s.apply(&step("c1", ChallengeEvent::RecordPenalty, false, true))
        .unwrap();
    let c = s.challenge(&ChallengeId::new("c1").unwrap()).unwrap();
    assert_eq!(c.state, ChallengeState::PenaltyRecorded);
    assert_eq!(c.penalty.as_ref().unwrap().slashed, 10);
    assert_eq!(s.task(&t).unwrap().state, TaskState::Rejected);
    assert!(
        s.apply(&finalizing(&t)).is_err(),
        "rejected work never settles"
    );
}

#[test]
fn dismissed_challenge_returns_to_awaiting_settlement() {
    let (mut s, t) = at_candidate_ready();
    s.apply(&filing(&t, "c1", "advertiser:luckin", T0 + 1))
        .unwrap();
    s.apply(&step("c1", ChallengeEvent::StartReview, false, false))
        .unwrap();
    s.apply(&step("c1", ChallengeEvent::Dismiss, true, false))
        .unwrap();
    assert!(s
        .apply(&Command::CloseChallengeWindow {
            task_id: t.clone(),
            at_ms: T0 + WINDOW
        })
        .is_err());
    s.apply(&step("c1", ChallengeEvent::Close, false, false))
        .unwrap();
    assert_eq!(s.task(&t).unwrap().state, TaskState::AwaitingSettlement);
    s.apply(&Command::CloseChallengeWindow {
        task_id: t.clone(),
        at_ms: T0 + WINDOW,
    })
    .unwrap();
    s.apply(&finalizing(&t)).unwrap();
    let c = s.challenge(&ChallengeId::new("c1").unwrap()).unwrap();
    assert_eq!(
        c.history,
        vec![
            ChallengeState::Opened,
            ChallengeState::Reviewing,
            ChallengeState::NotConfirmed,
            ChallengeState::ClosedWithoutPenalty
        ]
    );
}
