//! A refused command changes nothing, for every kind of command. `MasterState::apply`
//! saves only what a task-scoped command may change and puts it back on refusal
//! (`savepoint.rs`); this property test drives random sequences over a vocabulary of
//! query, train, challenge, settlement, delivery and epoch commands (most legal at
//! some point, many refused at most points) and compares the whole state before and
//! after every refusal.

use proptest::prelude::*;
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::Digest;
use symphony_core::envelope::{AggregationMethod, IterationPolicy, TaskClass, TaskEnvelope};
use symphony_core::ids::*;
use symphony_core::lifecycle::{ChallengeEvent, SettlementState, SliceState, TaskEvent, TaskState};
use symphony_master::*;

mod common;
use common::{accepted_task, advance, envelope, settlement, slice, vault};

fn train_envelope(task: &str, nonce: u64) -> TaskEnvelope {
    let mut body = envelope(task, nonce).body().clone();
    body.task_class = TaskClass::Train;
    body.budget_reservation.usage_scope = UsageScope::Training;
    body.budget_reservation.epsilon_per_subject = Epsilon::from_milli(300);
    body.coordination_envelope.aggregation_method = AggregationMethod::FederatedAverage;
    body.iteration_policy = Some(IterationPolicy {
        max_rounds: 2,
        convergence_threshold_micro: 1,
        early_stop_patience: 1,
        stop_on_budget_exhaustion: true,
    });
    TaskEnvelope::seal(body).unwrap()
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

fn challenge_step(id: &str, event: ChallengeEvent, verdict: bool, penalty: bool) -> Command {
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

const SETTLEMENT_STATES: [SettlementState; 5] = [
    SettlementState::Collecting,
    SettlementState::VerifyingInputs,
    SettlementState::CandidateReady,
    SettlementState::Finalizing,
    SettlementState::Finalized,
];

const TASK_EVENTS: [TaskEvent; 7] = [
    TaskEvent::BeginResolution,
    TaskEvent::Dispatch,
    TaskEvent::ExecutionFinished,
    TaskEvent::VerificationAccepted,
    TaskEvent::SettlementFinalized,
    TaskEvent::Reject,
    TaskEvent::Timeout,
];

/// Query commands, in an order that (skipping rejections) walks the task through
/// settlement, a challenge window and a challenge.
fn query_commands(q: &TaskId, out: &mut Vec<Command>) {
    out.extend(accepted_task(q));
    out.push(Command::AdmitTask {
        envelope: Box::new(envelope("tq-replay", 1)),
    });
    for (v, state) in [
        ("v1", SliceState::Failed),
        ("v3", SliceState::Verified),
        ("v2", SliceState::TimedOut),
    ] {
        out.push(Command::RecordSlice {
            task_id: q.clone(),
            vault_id: vault(v),
            record: slice(state),
        });
    }
    // Shares that do not sum to the fee; amounts changed after collecting began.
    out.push(Command::RecordSettlement {
        task_id: q.clone(),
        record: settlement(SettlementState::Collecting, 700, &[("treasury", 100)]),
    });
    let ok = |state| Command::RecordSettlement {
        task_id: q.clone(),
        record: settlement(state, 700, &[("treasury", 100), ("vaults", 600)]),
    };
    out.extend(SETTLEMENT_STATES[..3].iter().map(|s| ok(*s)));
    out.push(Command::RecordSettlement {
        task_id: q.clone(),
        record: settlement(SettlementState::Finalizing, 600, &[("treasury", 600)]),
    });
    out.push(Command::OpenChallengeWindow {
        task_id: q.clone(),
        closes_at_ms: 5_600,
    });
    out.push(filing(q, "c1", "advertiser:luckin", 5_100));
    out.push(filing(q, "c2", "stranger:x", 5_100));
    out.push(filing(q, "c3", "master-0", 5_100));
    for id in ["c1", "c3", "c9"] {
        for event in [
            ChallengeEvent::StartReview,
            ChallengeEvent::Confirm,
            ChallengeEvent::Dismiss,
            ChallengeEvent::Approve,
            ChallengeEvent::Close,
            ChallengeEvent::RecordPenalty,
        ] {
            let verdict = matches!(event, ChallengeEvent::Confirm | ChallengeEvent::Dismiss);
            let penalty = event == ChallengeEvent::RecordPenalty;
            // The event with the wrong attachments, then with the right ones.
            out.push(challenge_step(id, event, !verdict, penalty));
            out.push(challenge_step(id, event, verdict, penalty));
        }
    }
    for at_ms in [5_000, 5_700] {
        out.push(Command::CloseChallengeWindow {
            task_id: q.clone(),
            at_ms,
        });
    }
    out.extend(SETTLEMENT_STATES[3..].iter().map(|s| ok(*s)));
    for event in TASK_EVENTS {
        out.push(advance(q, event));
    }
    for who in ["someone:else", "advertiser:luckin", "advertiser:luckin"] {
        out.push(Command::RecordDelivery {
            task_id: q.clone(),
            recipient: ActorId::new(who).unwrap(),
            result_hash: Digest([5; 32]),
            count: 5,
            at_ms: 9_000,
        });
    }
}

/// Train commands, in an order that (skipping rejections) walks the task through two
/// rounds, its composite result, settlement and the rounds' settlements.
fn train_commands(t: &TaskId, out: &mut Vec<Command>) {
    out.push(Command::AdmitTask {
        envelope: Box::new(train_envelope(t.as_str(), 2)),
    });
    out.push(advance(t, TaskEvent::BeginResolution));
    out.push(advance(t, TaskEvent::Dispatch));
    for round in [0, 1, 2] {
        out.push(Command::OpenRound {
            task_id: t.clone(),
            round,
            epoch_id: EpochId(0),
        });
        for (v, state) in [
            ("v1", SliceState::Verified),
            ("v1", SliceState::Assigned),
            ("v2", SliceState::Verified),
            ("v2", SliceState::Failed),
        ] {
            out.push(Command::RecordRoundSlice {
                task_id: t.clone(),
                round,
                vault_id: vault(v),
                record: RoundSliceRecord {
                    state,
                    commitment: Digest([9; 32]),
                    epsilon_committed_micro: 100_000,
                    enclave_kind: Some(symphony_core::EnclaveKind::Software),
                },
            });
        }
        for epsilon_micro in [150_000, 100_000] {
            out.push(Command::CloseRound {
                task_id: t.clone(),
                round,
                record: RoundRecord {
                    aggregate_commitment: Digest([4; 32]),
                    model_hash: Digest([6; 32]),
                    examples: 20,
                    epsilon_micro,
                    loss_micro: 600_000,
                    enclave_kind: symphony_core::EnclaveKind::Software,
                },
                fee_shares: [("treasury".to_string(), 300)].into(),
            });
        }
    }
    out.push(advance(t, TaskEvent::ExecutionFinished));
    for (rounds_run, epsilon_spent_micro) in [(1, 100_000), (2, 5), (2, 200_000)] {
        out.push(Command::RecordCompositeResult {
            task_id: t.clone(),
            record: CompositeResultRecord {
                rounds_run,
                stop_reason: "convergence_not_reached".into(),
                epsilon_spent_micro,
                model_hash: Digest([7; 32]),
                accepted: true,
            },
        });
    }
    out.push(advance(t, TaskEvent::VerificationAccepted));
    for state in SETTLEMENT_STATES {
        out.push(Command::RecordSettlement {
            task_id: t.clone(),
            record: settlement(state, 600, &[("treasury", 600)]),
        });
    }
    for round in [0, 1, 2] {
        for fee_micro_sym in [2_000, 300] {
            out.push(Command::SettleRound {
                task_id: t.clone(),
                round,
                fee_micro_sym,
            });
        }
    }
    for event in TASK_EVENTS {
        out.push(advance(t, event));
    }
}

fn vocabulary() -> Vec<Command> {
    let mut out = Vec::new();
    query_commands(&TaskId::new("tq").unwrap(), &mut out);
    train_commands(&TaskId::new("tt").unwrap(), &mut out);
    out.push(Command::CloseEpoch {
        trigger: CloseTrigger::Time,
        at_ms: u64::MAX / 2,
    });
    out.push(Command::CloseEpoch {
        trigger: CloseTrigger::Capacity,
        at_ms: 1,
    });
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn a_refused_command_changes_nothing(picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..120)) {
        let vocabulary = vocabulary();
        let mut s = MasterState::new();
        let (mut accepted, mut refused) = (0u32, 0u32);
        for pick in picks {
            let cmd = pick.get(&vocabulary);
            let before = s.clone();
            let root = s.state_root().unwrap();
            match s.apply(cmd) {
                Ok(_) => {
                    accepted += 1;
                    prop_assert_eq!(s.applied_commands(), before.applied_commands() + 1);
                }
                Err(e) => {
                    refused += 1;
                    prop_assert!(s == before, "refused {:?} ({}) changed the state", cmd, e);
                    prop_assert_eq!(s.state_root().unwrap(), root);
                }
            }
        }
        prop_assert!(accepted + refused > 0);
    }
}

/// The scripted lifecycles the vocabulary is built from run to their ends, so the
/// random sequences above reach every stage (rounds, results, settlement, windows).
#[test]
fn the_vocabulary_reaches_settled_query_and_train_tasks() {
    let vocabulary = vocabulary();
    let mut s = MasterState::new();
    // Apply the vocabulary in order, repeatedly: each pass takes every task further.
    for _ in 0..6 {
        for cmd in &vocabulary {
            let ends = matches!(
                cmd,
                Command::Advance {
                    event: TaskEvent::Reject | TaskEvent::Timeout,
                    ..
                }
            );
            if ends {
                continue;
            }
            let before = s.clone();
            if s.apply(cmd).is_err() {
                assert!(s == before, "refused {cmd:?} changed the state");
            }
        }
    }
    let q = s.task(&TaskId::new("tq").unwrap()).unwrap();
    assert!(
        q.settlement.is_some(),
        "query reached settlement: {:?}",
        q.state
    );
    assert!(s.challenges().count() > 0, "a challenge was filed");
    let t = s.task(&TaskId::new("tt").unwrap()).unwrap();
    assert_eq!(t.state, TaskState::Completed);
    let c = s.composite(&TaskId::new("tt").unwrap()).unwrap();
    assert!(c.result.is_some() && c.round_settlements.len() == 2);
}
