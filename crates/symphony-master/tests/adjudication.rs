//! The actor registry and the proposals that act on it: challenge adjudication
//! (upheld slashes by the table, records the penalty and rejects the task; dismissed
//! closes without penalty and lets the settlement pay), slashing by the graduated
//! table, membership stake registered and owed to the ledger, each exactly once.

use ed25519_dalek::{Signer, SigningKey};
use symphony_core::encoding::Digest;
use symphony_core::ids::*;
use symphony_core::lifecycle::{ChallengeEvent, ChallengeState, SettlementState, TaskState};
use symphony_economics::{Offence, PolicyParams, StakeTier};
use symphony_master::*;

#[allow(dead_code)]
mod common;
use common::{accepted_task, settlement, vault};

const T0: u64 = 5_000;
const WINDOW: u64 = 600;
const STAKE: u64 = 1_000_000;

fn keys() -> Vec<SigningKey> {
    (21..=23u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect()
}

fn actor(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn propose(
    s: &mut MasterState,
    k: &[SigningKey],
    by: u8,
    kind: ProposalKind,
) -> Result<ProposalId, MasterError> {
    let id = ProposalId(s.governance().proposals.len() as u64);
    let at_ms = T0 + 1;
    let signature = k[usize::from(by)]
        .sign(&proposal_message(&kind, at_ms).unwrap().0)
        .to_bytes()
        .to_vec();
    s.apply(&Command::Propose {
        kind,
        by,
        at_ms,
        signature,
    })?;
    Ok(id)
}

fn vote(
    s: &mut MasterState,
    k: &[SigningKey],
    id: ProposalId,
    by: u8,
    yes: bool,
) -> Result<Vec<Event>, MasterError> {
    let signature = k[usize::from(by)]
        .sign(&vote_message(id, yes).unwrap().0)
        .to_bytes()
        .to_vec();
    s.apply(&Command::Vote {
        proposal: id,
        by,
        approve: yes,
        at_ms: T0 + 2,
        signature,
    })
}

/// Governance configured, `operator:v1` registered with `STAKE`, task `t1` at
/// `candidate_ready` with its window open and challenge `c1` (by master-1) under
/// review.
fn under_review() -> (MasterState, Vec<SigningKey>, TaskId, ChallengeId) {
    let k = keys();
    let mut s = MasterState::new();
    s.apply(&Command::ConfigureGovernance {
        master_keys: k.iter().map(|k| k.verifying_key().to_bytes()).collect(),
        epoch_length_ms: 100_000,
        max_tasks_per_epoch: None,
    })
    .unwrap();
    s.apply(&Command::RegisterStakes {
        stakes: vec![(actor("operator:v1"), StakeTier::Enterprise, STAKE)],
    })
    .unwrap();
    let t = TaskId::new("t1").unwrap();
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
    let c = ChallengeId::new("c1").unwrap();
    cmds.push(Command::FileChallenge {
        filing: ChallengeFiling {
            challenge_id: c.clone(),
            task_id: t.clone(),
            target: ChallengeTarget::Slice {
                round: 0,
                vault_id: vault("v1"),
            },
            challenger: actor("master-1"),
            evidence_hash: Digest([7; 32]),
            at_ms: T0 + 10,
        },
    });
    cmds.push(Command::ChallengeStep {
        challenge_id: c.clone(),
        event: ChallengeEvent::StartReview,
        verdict_hash: None,
        penalty: None,
    });
    for cmd in &cmds {
        s.apply(cmd).unwrap();
    }
    (s, k, t, c)
}

fn upheld(c: &ChallengeId) -> ProposalKind {
    ProposalKind::AdjudicateChallenge {
        challenge: c.clone(),
        verdict: Verdict::Upheld {
            responsible: actor("operator:v1"),
            offence: Offence::InvalidResult,
        },
    }
}

fn bonded(s: &MasterState, a: &str) -> u64 {
    s.governance().registry.actors[&actor(a)].bonded_micro_sym
}

#[test]
fn an_upheld_adjudication_slashes_by_the_table_rejects_the_task_once() {
    let (mut s, k, t, c) = under_review();
    let id = propose(&mut s, &k, 0, upheld(&c)).unwrap();
    // One master's approval decides nothing.
    assert_eq!(s.challenge(&c).unwrap().state, ChallengeState::Reviewing);
    assert_eq!(bonded(&s, "operator:v1"), STAKE);
    let e = propose(
        &mut s,
        &k,
        2,
        ProposalKind::AdjudicateChallenge {
            challenge: c.clone(),
            verdict: Verdict::Dismissed,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("already has an adjudication"), "{e}");
    let events = vote(&mut s, &k, id, 1, true).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::StakeSlashed { amount_micro_sym, .. } if *amount_micro_sym == STAKE / 10)));
    let rec = s.challenge(&c).unwrap();
    assert_eq!(rec.state, ChallengeState::PenaltyRecorded);
    assert_eq!(
        rec.history,
        [
            ChallengeState::Opened,
            ChallengeState::Reviewing,
            ChallengeState::Confirmed,
            ChallengeState::Approved,
            ChallengeState::PenaltyRecorded
        ]
    );
    assert_eq!(
        rec.verdict_hash,
        Some(
            adjudication_hash(
                id,
                &c,
                &match upheld(&c) {
                    ProposalKind::AdjudicateChallenge { verdict, .. } => verdict,
                    _ => unreachable!(),
                }
            )
            .unwrap()
        )
    );
    let penalty = rec.penalty.clone().unwrap();
    assert_eq!(
        (penalty.slashed, penalty.offence.as_str()),
        (STAKE / 10, "invalid_result")
    );
    assert_eq!(s.task(&t).unwrap().state, TaskState::Rejected);
    // A major offence, the first: 10 % of the registered stake.
    assert_eq!(bonded(&s, "operator:v1"), STAKE - STAKE / 10);
    let g = s.governance();
    assert_eq!(g.proposals[&id].status, ProposalStatus::Enacted);
    assert_eq!(
        g.pending_duties[&id],
        vec![
            LedgerDuty::Slash {
                actor: actor("operator:v1"),
                amount_micro_sym: STAKE / 10
            },
            LedgerDuty::ChargeRejection { task_id: t.clone() }
        ]
    );
    // Exactly once: no second vote, no second adjudication, no second duty record.
    let root = s.state_root().unwrap();
    assert!(vote(&mut s, &k, id, 2, true).is_err());
    let e = propose(&mut s, &k, 2, upheld(&c)).unwrap_err();
    assert!(e.to_string().contains("penalty_recorded"), "{e}");
    assert_eq!(s.state_root().unwrap(), root);
    s.apply(&Command::RecordLedgerDuty { proposal: id })
        .unwrap();
    let e = s
        .apply(&Command::RecordLedgerDuty { proposal: id })
        .unwrap_err();
    assert!(e.to_string().contains("no pending ledger duties"), "{e}");
    // The rejected task never settles.
    let fin = Command::RecordSettlement {
        task_id: t,
        record: settlement(
            SettlementState::Finalizing,
            700,
            &[("treasury", 100), ("vaults", 600)],
        ),
    };
    assert!(s.apply(&fin).is_err());
}

#[test]
fn a_dismissed_adjudication_closes_without_penalty_and_the_settlement_pays() {
    let (mut s, k, t, c) = under_review();
    let id = propose(
        &mut s,
        &k,
        2,
        ProposalKind::AdjudicateChallenge {
            challenge: c.clone(),
            verdict: Verdict::Dismissed,
        },
    )
    .unwrap();
    // Finalizing is refused while the challenge is unresolved.
    let fin = Command::RecordSettlement {
        task_id: t.clone(),
        record: settlement(
            SettlementState::Finalizing,
            700,
            &[("treasury", 100), ("vaults", 600)],
        ),
    };
    assert!(s.apply(&fin).is_err());
    vote(&mut s, &k, id, 0, true).unwrap();
    let rec = s.challenge(&c).unwrap();
    assert_eq!(rec.state, ChallengeState::ClosedWithoutPenalty);
    assert!(rec.penalty.is_none());
    assert_eq!(s.task(&t).unwrap().state, TaskState::AwaitingSettlement);
    assert_eq!(bonded(&s, "operator:v1"), STAKE);
    assert!(s.governance().pending_duties.is_empty());
    s.apply(&Command::CloseChallengeWindow {
        task_id: t.clone(),
        at_ms: T0 + WINDOW,
    })
    .unwrap();
    let events = s.apply(&fin).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::PayoutScheduled { .. })));
}

#[test]
fn a_rejected_adjudication_changes_nothing_and_bad_proposals_name_the_fault() {
    let (mut s, k, _t, c) = under_review();
    let id = propose(&mut s, &k, 0, upheld(&c)).unwrap();
    vote(&mut s, &k, id, 1, false).unwrap();
    vote(&mut s, &k, id, 2, false).unwrap();
    assert_eq!(
        s.governance().proposals[&id].status,
        ProposalStatus::Rejected
    );
    assert_eq!(s.challenge(&c).unwrap().state, ChallengeState::Reviewing);
    assert_eq!(bonded(&s, "operator:v1"), STAKE);
    // Unknown challenge; the challenger named responsible; unregistered actor; bad reason.
    let e = propose(
        &mut s,
        &k,
        0,
        ProposalKind::AdjudicateChallenge {
            challenge: ChallengeId::new("nope").unwrap(),
            verdict: Verdict::Dismissed,
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("challenge nope does not exist"),
        "{e}"
    );
    let e = propose(
        &mut s,
        &k,
        0,
        ProposalKind::AdjudicateChallenge {
            challenge: c.clone(),
            verdict: Verdict::Upheld {
                responsible: actor("master-1"),
                offence: Offence::InvalidResult,
            },
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot be the responsible"), "{e}");
    let e = propose(
        &mut s,
        &k,
        0,
        ProposalKind::Slash {
            actor: actor("operator:v9"),
            offence: Offence::Unavailability,
            reason: "down".into(),
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("operator:v9 has no bonded stake"),
        "{e}"
    );
    let e = propose(
        &mut s,
        &k,
        0,
        ProposalKind::Slash {
            actor: actor("operator:v1"),
            offence: Offence::Unavailability,
            reason: String::new(),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("slashing reason"), "{e}");
    // Genesis stakes register only before the first proposal.
    let e = s
        .apply(&Command::RegisterStakes {
            stakes: vec![(actor("operator:v2"), StakeTier::Enterprise, 5)],
        })
        .unwrap_err();
    assert!(e.to_string().contains("before the first proposal"), "{e}");
    // A second adjudication after the rejection is allowed and decides.
    let id = propose(&mut s, &k, 1, upheld(&c)).unwrap();
    vote(&mut s, &k, id, 2, true).unwrap();
    assert_eq!(
        s.challenge(&c).unwrap().state,
        ChallengeState::PenaltyRecorded
    );
}

#[test]
fn slashing_follows_the_graduated_table_and_conserves_the_stake() {
    let (mut s, k, _t, _c) = under_review();
    let slash = |s: &mut MasterState, by: u8, offence| {
        let id = propose(
            s,
            &k,
            by,
            ProposalKind::Slash {
                actor: actor("operator:v1"),
                offence,
                reason: "missed its slice deadline".into(),
            },
        )
        .unwrap();
        vote(s, &k, id, (by + 1) % 3, true).unwrap();
        id
    };
    let table = PolicyParams::default_v1().slashing;
    // Minor, first offence: minor_bp of the stake.
    let id1 = slash(&mut s, 0, Offence::Unavailability);
    let first = STAKE * u64::from(table.minor_bp) / 10_000;
    assert_eq!(bonded(&s, "operator:v1"), STAKE - first);
    // Major, one earlier offence inside the window: major_bp doubled.
    let id2 = slash(&mut s, 1, Offence::InvalidResult);
    let second = (STAKE - first) * u64::from(table.major_bp) * 2 / 10_000;
    let entry = &s.governance().registry.actors[&actor("operator:v1")];
    assert_eq!(entry.bonded_micro_sym, STAKE - first - second);
    assert_eq!(entry.slashed_micro_sym, first + second);
    assert_eq!(entry.bonded_micro_sym + entry.slashed_micro_sym, STAKE);
    assert_eq!(entry.offences.len(), 2);
    let g = s.governance();
    assert_eq!(
        g.pending_duties[&id1],
        vec![LedgerDuty::Slash {
            actor: actor("operator:v1"),
            amount_micro_sym: first
        }]
    );
    assert_eq!(
        g.pending_duties[&id2],
        vec![LedgerDuty::Slash {
            actor: actor("operator:v1"),
            amount_micro_sym: second
        }]
    );
    assert!(first > 0 && second > first);
}

#[test]
fn membership_registers_and_owes_its_bond_only_when_approved() {
    let (mut s, k, _t, _c) = under_review();
    let kind = |v: &str| ProposalKind::EnterpriseMembership {
        vault: vault(v),
        operator: actor(&format!("operator:{v}")),
        stake_micro_sym: 250_000,
    };
    let yes = propose(&mut s, &k, 0, kind("v7")).unwrap();
    let no = propose(&mut s, &k, 0, kind("v8")).unwrap();
    vote(&mut s, &k, yes, 1, true).unwrap();
    vote(&mut s, &k, no, 1, false).unwrap();
    vote(&mut s, &k, no, 2, false).unwrap();
    let g = s.governance();
    assert_eq!(
        g.registry.actors[&actor("operator:v7")].bonded_micro_sym,
        250_000
    );
    assert_eq!(
        g.registry.actors[&actor("operator:v7")].tier,
        StakeTier::Enterprise
    );
    assert!(!g.registry.actors.contains_key(&actor("operator:v8")));
    assert_eq!(
        g.pending_duties[&yes],
        vec![LedgerDuty::Bond {
            actor: actor("operator:v7"),
            tier: StakeTier::Enterprise,
            amount_micro_sym: 250_000
        }]
    );
    assert!(!g.pending_duties.contains_key(&no));
    // The operator cannot apply twice, nor with a zero stake.
    let e = propose(
        &mut s,
        &k,
        1,
        ProposalKind::EnterpriseMembership {
            vault: vault("v9"),
            operator: actor("operator:v7"),
            stake_micro_sym: 1,
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("already in the actor registry"),
        "{e}"
    );
    let e = propose(
        &mut s,
        &k,
        1,
        ProposalKind::EnterpriseMembership {
            vault: vault("v9"),
            operator: actor("operator:v9"),
            stake_micro_sym: 0,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("must be positive"), "{e}");
}

#[test]
fn an_activated_policy_brings_its_slashing_table() {
    let (mut s, k, _t, _c) = under_review();
    let mut params = PolicyParams::default_v1();
    params.slashing.minor_bp = 700;
    let id = propose(
        &mut s,
        &k,
        0,
        ProposalKind::PolicyChange {
            version: PolicyVersion(2),
            params: Box::new(params),
            max_tasks_per_epoch: None,
        },
    )
    .unwrap();
    vote(&mut s, &k, id, 1, true).unwrap();
    assert_ne!(
        s.governance().registry.slashing.minor_bp,
        700,
        "not before the boundary"
    );
    let close = propose(&mut s, &k, 0, ProposalKind::CloseEpoch).unwrap();
    vote(&mut s, &k, close, 2, true).unwrap();
    assert_eq!(s.governance().registry.slashing.minor_bp, 700);
    let sl = propose(
        &mut s,
        &k,
        0,
        ProposalKind::Slash {
            actor: actor("operator:v1"),
            offence: Offence::Unavailability,
            reason: "down".into(),
        },
    )
    .unwrap();
    vote(&mut s, &k, sl, 1, true).unwrap();
    assert_eq!(bonded(&s, "operator:v1"), STAKE - STAKE * 700 / 10_000);
}

#[test]
fn an_adjudication_overtaken_by_the_planes_verdict_is_refused_by_name() {
    let (mut s, k, _t, c) = under_review();
    let id = propose(&mut s, &k, 0, upheld(&c)).unwrap();
    // The settlement plane's replay decides the challenge first.
    for (event, verdict) in [
        (ChallengeEvent::Dismiss, true),
        (ChallengeEvent::Close, false),
    ] {
        s.apply(&Command::ChallengeStep {
            challenge_id: c.clone(),
            event,
            verdict_hash: verdict.then_some(Digest([8; 32])),
            penalty: None,
        })
        .unwrap();
    }
    let root = s.state_root().unwrap();
    let e = vote(&mut s, &k, id, 1, true).unwrap_err();
    assert!(
        e.to_string()
            .contains("no longer under review (closed_without_penalty)"),
        "{e}"
    );
    assert_eq!(s.state_root().unwrap(), root);
    assert_eq!(bonded(&s, "operator:v1"), STAKE);
    // Rejecting it is still possible, and ends it.
    vote(&mut s, &k, id, 1, false).unwrap();
    vote(&mut s, &k, id, 2, false).unwrap();
    assert_eq!(
        s.governance().proposals[&id].status,
        ProposalStatus::Rejected
    );
}
