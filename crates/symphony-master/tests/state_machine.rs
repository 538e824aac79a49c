//! Table and replay tests of the master state machine.

use symphony_core::encoding::Digest;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent, TaskState};
use symphony_master::*;

mod common;
use common::{accepted_task, advance, envelope, settlement, slice, vault};

/// The full happy path, as the orchestrator issues it.
fn happy_path() -> Vec<Command> {
    let t = TaskId::new("t1").unwrap();
    let mut cmds = accepted_task(&t);
    let mut s = SettlementState::Collecting;
    loop {
        cmds.push(Command::RecordSettlement {
            task_id: t.clone(),
            record: settlement(s, 700, &[("treasury", 100), ("vaults", 600)]),
        });
        match s.advance() {
            Ok(n) => s = n,
            Err(_) => break,
        }
    }
    cmds.push(advance(&t, TaskEvent::SettlementFinalized));
    cmds.push(Command::RecordDelivery {
        task_id: t,
        recipient: ActorId::new("advertiser:luckin").unwrap(),
        result_hash: Digest([5; 32]),
        count: 5,
        at_ms: 2000,
    });
    cmds
}

#[test]
fn happy_path_completes_and_replays_identically() {
    let mut a = MasterState::new();
    let mut b = MasterState::new();
    for c in happy_path() {
        let ea = a.apply(&c).unwrap();
        let eb = b.apply(&c).unwrap();
        assert_eq!(ea, eb);
    }
    let t = TaskId::new("t1").unwrap();
    let rec = a.task(&t).unwrap();
    assert_eq!(rec.state, TaskState::Completed);
    assert_eq!(
        rec.history,
        vec![
            TaskState::Accepted,
            TaskState::Resolving,
            TaskState::Dispatched,
            TaskState::Verifying,
            TaskState::AwaitingSettlement,
            TaskState::Completed
        ]
    );
    assert_eq!(a.audit_log().len(), 1);
    assert_eq!(a.state_root().unwrap(), b.state_root().unwrap());
    let restored = MasterState::restore(&a.snapshot().unwrap()).unwrap();
    assert_eq!(restored.state_root().unwrap(), a.state_root().unwrap());
}

#[test]
fn replayed_nonce_is_refused_and_changes_nothing() {
    let mut s = MasterState::new();
    s.apply(&Command::AdmitTask {
        envelope: Box::new(envelope("t1", 7)),
    })
    .unwrap();
    let root = s.state_root().unwrap();
    let err = s
        .apply(&Command::AdmitTask {
            envelope: Box::new(envelope("t2", 7)),
        })
        .unwrap_err();
    assert!(matches!(err, MasterError::ReplayedNonce { nonce: 7, .. }));
    assert_eq!(s.state_root().unwrap(), root);
    assert!(matches!(
        s.apply(&Command::AdmitTask {
            envelope: Box::new(envelope("t1", 8))
        }),
        Err(MasterError::DuplicateTask(_))
    ));
}

#[test]
fn refused_commands_leave_state_unchanged() {
    let cmds = happy_path();
    let t = TaskId::new("t1").unwrap();
    let mut s = MasterState::new();
    for c in &cmds[..3] {
        s.apply(c).unwrap();
    }
    let root = s.state_root().unwrap();
    let bad = [
        // skipping a state
        advance(&t, TaskEvent::SettlementFinalized),
        // aggregate below quorum (no slices yet)
        cmds[5].clone(),
        // settlement while dispatched
        Command::RecordSettlement {
            task_id: t.clone(),
            record: settlement(SettlementState::Collecting, 700, &[("x", 700)]),
        },
        // delivery before completion
        cmds.last().unwrap().clone(),
        // a slice from a Vault outside the coordination envelope
        Command::RecordSlice {
            task_id: t.clone(),
            vault_id: vault("v9"),
            record: slice(SliceState::Returned),
        },
    ];
    for c in &bad {
        assert!(s.apply(c).is_err(), "{c:?} must be refused");
        assert_eq!(s.state_root().unwrap(), root);
    }
}

#[test]
fn settlement_shares_must_sum_to_the_fee() {
    let cmds = happy_path();
    let t = TaskId::new("t1").unwrap();
    let mut s = MasterState::new();
    for c in &cmds[..8] {
        s.apply(c).unwrap();
    }
    let err = s
        .apply(&Command::RecordSettlement {
            task_id: t.clone(),
            record: settlement(SettlementState::Collecting, 700, &[("a", 300), ("b", 399)]),
        })
        .unwrap_err();
    assert!(err.to_string().contains("sum"), "{err}");
    // skipping verifying_inputs is refused too
    s.apply(&Command::RecordSettlement {
        task_id: t.clone(),
        record: settlement(SettlementState::Collecting, 700, &[("a", 700)]),
    })
    .unwrap();
    assert!(s
        .apply(&Command::RecordSettlement {
            task_id: t,
            record: settlement(SettlementState::CandidateReady, 700, &[("a", 700)]),
        })
        .is_err());
}
