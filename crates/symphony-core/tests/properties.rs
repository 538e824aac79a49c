//! Property tests of the core rules: budgets never overspend and account for every
//! unit; lifecycles never reach an illegal state; replay is byte-identical.

use proptest::prelude::*;
use std::collections::BTreeMap;
use symphony_core::budget::{BudgetAccount, BudgetOp, Epsilon};
use symphony_core::ids::{EpochId, TaskId};
use symphony_core::lifecycle::{TaskEvent, TaskState};

fn task(i: u8) -> TaskId {
    TaskId::new(format!("t{i}")).unwrap()
}

fn op_strategy() -> impl Strategy<Value = BudgetOp> {
    prop_oneof![
        (0u8..6, 0u64..400).prop_map(|(t, m)| BudgetOp::Reserve {
            task: task(t),
            amount: Epsilon::from_milli(m)
        }),
        (0u8..6, 0u64..400).prop_map(|(t, m)| BudgetOp::Commit {
            task: task(t),
            actual: Epsilon::from_milli(m)
        }),
        (0u8..6).prop_map(|t| BudgetOp::Release { task: task(t) }),
        (0u8..6).prop_map(|t| BudgetOp::CommitAtEstimate { task: task(t) }),
        (0u64..8, 0u64..300).prop_map(|(e, m)| BudgetOp::Replenish {
            epoch: EpochId(e),
            amount: Epsilon::from_milli(m)
        }),
    ]
}

proptest! {
    /// committed + reserved never exceeds capacity; an error changes nothing; the sum
    /// of what finished tasks committed equals the committed total (before any
    /// replenishment, which only lowers `committed`).
    #[test]
    fn budget_never_overspends(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let capacity = Epsilon::from_milli(1000);
        let mut acct = BudgetAccount::new(capacity, EpochId(0));
        let mut replenished = 0u64;
        let mut finished: BTreeMap<TaskId, u64> = BTreeMap::new();
        for op in &ops {
            let before = acct.clone();
            match acct.apply(op) {
                Ok(_) => {
                    if let BudgetOp::Replenish { amount, .. } = op { replenished += amount.micro; }
                }
                Err(_) => prop_assert_eq!(&acct, &before, "a refused op changed the account"),
            }
            prop_assert!(acct.committed().micro + acct.reserved().micro <= capacity.micro);
            for t in 0..6u8 {
                if let Some(c) = acct.finished_of(&task(t)) { finished.insert(task(t), c.micro); }
            }
            let spent: u64 = finished.values().sum();
            // every committed unit is accounted for by a finished task
            prop_assert!(acct.committed().micro <= spent);
            prop_assert!(spent <= acct.committed().micro + replenished);
            prop_assert_eq!(acct.remaining().micro + acct.committed().micro + acct.reserved().micro, capacity.micro);
        }
    }

    /// Random event sequences only ever move through table transitions and stay in
    /// a known state; terminal states absorb.
    #[test]
    fn lifecycle_random_walk(events in prop::collection::vec(0usize..TaskEvent::ALL.len(), 0..40)) {
        let mut state = TaskState::Accepted;
        let mut path = vec![state];
        for i in events {
            let ev = TaskEvent::ALL[i];
            match state.next(ev) {
                Ok(next) => { state = next; path.push(state); }
                Err(e) => prop_assert_eq!(e.from, state.as_str()),
            }
        }
        // Forward progress never skips: completed is only reached via awaiting_settlement.
        for w in path.windows(2) {
            if w[1] == TaskState::Completed { prop_assert_eq!(w[0], TaskState::AwaitingSettlement); }
            if w[1] == TaskState::AwaitingSettlement {
                prop_assert!(matches!(w[0], TaskState::Verifying | TaskState::Challenged));
            }
            prop_assert!(!w[0].is_terminal());
        }
    }
}
