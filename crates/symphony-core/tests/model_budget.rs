//! Exhaustive model checks (stateright, BFS) of the privacy-budget rules of
//! `symphony_core::budget::BudgetAccount`.
//!
//! Two models over the real, pure `BudgetAccount::apply`:
//!
//! 1. [`RulesModel`]: every operation (reserve / commit / release / commit-at-estimate /
//!    replenish, with several amounts and tasks) applied in every order to one account.
//!    Checked after every step: `committed + reserved ≤ capacity`; a refused operation
//!    changes nothing; an applied operation does what it says and a retry of it is
//!    idempotent; a finished task never holds a reservation again.
//! 2. [`DriverModel`]: tasks driven through admission (one reservation per subject,
//!    interleaved with the other tasks), abort, execution, commit or failure, epoch
//!    replenishment, retries and late (reordered) reservations, over two subjects whose
//!    capacity cannot hold every task at once. Checked: no budget over capacity; every
//!    reservation is released or committed when its task ends; a task that executed is
//!    committed in every account; a retried operation changes nothing.
//!
//! Planted bugs (a release that does not remove the reservation; an abort during
//! admission that keeps what it already reserved; a Vault without its released-task
//! guard) show that the checker finds the counterexample.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use stateright::{Checker, Model, Property};
use symphony_core::budget::{BudgetAccount, BudgetError, BudgetOp, BudgetOutcome, Epsilon};
use symphony_core::ids::{EpochId, TaskId};

type ApplyFn = fn(&mut BudgetAccount, &BudgetOp) -> Result<BudgetOutcome, BudgetError>;

fn real_apply(a: &mut BudgetAccount, op: &BudgetOp) -> Result<BudgetOutcome, BudgetError> {
    a.apply(op)
}

/// PLANTED BUG: a wrapper whose release reports success but keeps the reservation.
fn leaky_release(a: &mut BudgetAccount, op: &BudgetOp) -> Result<BudgetOutcome, BudgetError> {
    match op {
        BudgetOp::Release { task } if a.reservation_of(task).is_some() => {
            Ok(BudgetOutcome::Applied)
        }
        _ => a.apply(op),
    }
}

fn task(i: usize) -> TaskId {
    TaskId::new(format!("t{i}")).unwrap()
}

fn eps(micro: u64) -> Epsilon {
    Epsilon::from_micro(micro)
}

/// Hash a budget account by its canonical bytes (the type does not derive `Hash`).
fn hash_account<H: Hasher>(a: &BudgetAccount, h: &mut H) {
    symphony_core::encoding::canonical_bytes(a).unwrap().hash(h);
}

fn fits(a: &BudgetAccount) -> bool {
    a.committed()
        .checked_add(a.reserved())
        .is_some_and(|used| used <= a.capacity())
}

// ---------------------------------------------------------------------------------
// 1. The account's own rules, every operation in every order.

#[derive(Clone, Debug, PartialEq)]
struct RulesState {
    account: BudgetAccount,
    violation: Option<String>,
}

impl Hash for RulesState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_account(&self.account, h);
        self.violation.hash(h);
    }
}

struct RulesModel {
    tasks: usize,
    capacity: u64,
    apply: ApplyFn,
}

impl RulesModel {
    fn ops(&self) -> Vec<BudgetOp> {
        let mut ops = Vec::new();
        for i in 0..self.tasks {
            for amount in 1..=3 {
                ops.push(BudgetOp::Reserve {
                    task: task(i),
                    amount: eps(amount),
                });
            }
            for actual in 0..=3 {
                ops.push(BudgetOp::Commit {
                    task: task(i),
                    actual: eps(actual),
                });
            }
            ops.push(BudgetOp::Release { task: task(i) });
            ops.push(BudgetOp::CommitAtEstimate { task: task(i) });
        }
        for epoch in 1..=2 {
            ops.push(BudgetOp::Replenish {
                epoch: EpochId(epoch),
                amount: eps(2),
            });
        }
        ops
    }

    /// What the operation must have done, given the account before and after.
    fn check(
        &self,
        before: &BudgetAccount,
        after: &BudgetAccount,
        op: &BudgetOp,
        result: &Result<BudgetOutcome, BudgetError>,
    ) -> Result<(), String> {
        let outcome = match result {
            Err(e) => {
                return if after == before {
                    Ok(())
                } else {
                    Err(format!("refused {op:?} ({e}) changed the account"))
                }
            }
            Ok(o) => *o,
        };
        if outcome == BudgetOutcome::AlreadyApplied && after != before {
            return Err(format!(
                "{op:?} reported already-applied but changed the account"
            ));
        }
        if !fits(after) {
            return Err(format!("{op:?} overspent: {after:?}"));
        }
        let released_exactly = |t: &TaskId, committed: Epsilon| {
            after.reservation_of(t).is_none() && after.finished_of(t) == Some(committed)
        };
        let ok = match op {
            BudgetOp::Reserve { task, amount } => after.reservation_of(task) == Some(*amount),
            BudgetOp::Commit { task, actual } => released_exactly(task, *actual),
            BudgetOp::Release { task } => {
                after.reservation_of(task).is_none()
                    && (outcome == BudgetOutcome::AlreadyApplied
                        || (after.finished_of(task) == Some(Epsilon::ZERO)
                            && after.remaining()
                                == before
                                    .remaining()
                                    .checked_add(before.reservation_of(task).unwrap_or_default())
                                    .unwrap()))
            }
            BudgetOp::CommitAtEstimate { task } => {
                let estimate = before
                    .reservation_of(task)
                    .or_else(|| before.finished_of(task));
                estimate.is_some_and(|e| released_exactly(task, e))
            }
            BudgetOp::Replenish { epoch, .. } => after.last_replenished() == *epoch,
        };
        if !ok {
            return Err(format!(
                "{op:?} returned {outcome:?} but the account is {after:?}"
            ));
        }
        // A retry of an accepted operation changes nothing.
        if !matches!(op, BudgetOp::Replenish { .. }) {
            let mut again = after.clone();
            let retry = (self.apply)(&mut again, op);
            if retry != Ok(BudgetOutcome::AlreadyApplied) || again != *after {
                return Err(format!("retry of {op:?} was {retry:?}, not idempotent"));
            }
        }
        Ok(())
    }
}

impl Model for RulesModel {
    type State = RulesState;
    type Action = BudgetOp;

    fn init_states(&self) -> Vec<RulesState> {
        vec![RulesState {
            account: BudgetAccount::new(eps(self.capacity), EpochId(0)),
            violation: None,
        }]
    }

    fn actions(&self, state: &RulesState, actions: &mut Vec<BudgetOp>) {
        if state.violation.is_none() {
            actions.extend(self.ops());
        }
    }

    fn next_state(&self, last: &RulesState, op: BudgetOp) -> Option<RulesState> {
        let mut account = last.account.clone();
        let result = (self.apply)(&mut account, &op);
        let violation = self.check(&last.account, &account, &op, &result).err();
        Some(RulesState { account, violation })
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("committed + reserved <= capacity", |_, s: &RulesState| {
                fits(&s.account)
            }),
            Property::always("every operation obeys its rule", |_, s: &RulesState| {
                s.violation.is_none()
            }),
            Property::always(
                "a finished task holds no reservation",
                |m: &RulesModel, s: &RulesState| {
                    (0..m.tasks).all(|i| {
                        s.account.finished_of(&task(i)).is_none()
                            || s.account.reservation_of(&task(i)).is_none()
                    })
                },
            ),
            Property::sometimes("the budget is exhausted", |_, s: &RulesState| {
                s.account.remaining() == Epsilon::ZERO && s.account.committed() > Epsilon::ZERO
            }),
            Property::sometimes(
                "a replenished account is reserved again",
                |_, s: &RulesState| {
                    s.account.last_replenished() == EpochId(2)
                        && s.account.reserved() > Epsilon::ZERO
                },
            ),
        ]
    }
}

// ---------------------------------------------------------------------------------
// 2. Tasks driven through the reserve / commit / release / commit-at-estimate rules.

const SUBJECTS: usize = 2;
const ALL: u8 = (1 << SUBJECTS) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// Admission has reserved on the subjects in the mask.
    Reserving(u8),
    /// Admitted: every subject reserved.
    Reserved,
    /// Execution started: a failure now commits at the estimate.
    Executed,
    /// The task ended; the driver applied its last operations.
    Ended(End),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum End {
    /// Admission could not reserve every subject.
    Refused,
    /// Aborted before execution (rejected, timed out, leader change).
    Aborted,
    /// Completed, committing `actual`.
    Completed,
    /// Failed after execution.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    ReserveOn(usize, usize),
    Abort(usize),
    Execute(usize),
    Complete(usize, u64),
    Fail(usize),
    /// A duplicate of the task's last operations arrives again.
    Retry(usize),
    /// A reservation delayed in the network arrives after the task ended.
    LateReserve(usize, usize),
    Replenish,
}

#[derive(Clone, Debug, PartialEq)]
struct DriverState {
    accounts: Vec<BudgetAccount>,
    /// Per subject: tasks the Vault recorded as released (never reserve again).
    released: Vec<u8>,
    phases: Vec<Phase>,
    epoch: u64,
    violation: Option<String>,
}

impl Hash for DriverState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for a in &self.accounts {
            hash_account(a, h);
        }
        self.released.hash(h);
        self.phases.hash(h);
        self.epoch.hash(h);
        self.violation.hash(h);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DriverBug {
    None,
    /// PLANTED BUG: an abort while admission is still reserving keeps what it reserved.
    AbortKeepsPartialReservation,
    /// PLANTED BUG: the Vault does not record released tasks, so a late reservation
    /// of an ended task is accepted.
    NoReleasedGuard,
}

struct DriverModel {
    /// ε each task reserves per subject.
    amounts: Vec<u64>,
    capacity: u64,
    max_epoch: u64,
    bug: DriverBug,
}

impl DriverModel {
    fn release_all(&self, s: &mut DriverState, t: usize, mask: u8) -> Result<(), String> {
        for (j, acct) in s.accounts.iter_mut().enumerate() {
            if mask & (1 << j) == 0 {
                continue;
            }
            acct.apply(&BudgetOp::Release { task: task(t) })
                .map_err(|e| format!("release of t{t} on subject {j}: {e}"))?;
        }
        // The Vault records the task as released everywhere it runs (`release_task`).
        if self.bug != DriverBug::NoReleasedGuard {
            for r in &mut s.released {
                *r |= 1 << t;
            }
        }
        Ok(())
    }

    fn finish_all(&self, s: &mut DriverState, op: &BudgetOp) -> Result<(), String> {
        for (j, acct) in s.accounts.iter_mut().enumerate() {
            acct.apply(op)
                .map_err(|e| format!("{op:?} on subject {j}: {e}"))?;
        }
        Ok(())
    }

    /// The operations the task's end applied, for retries.
    fn last_ops(&self, t: usize, end: End, s: &DriverState) -> Vec<BudgetOp> {
        match end {
            End::Refused | End::Aborted => vec![BudgetOp::Release { task: task(t) }],
            End::Completed => vec![BudgetOp::Commit {
                task: task(t),
                actual: s.accounts[0].finished_of(&task(t)).unwrap_or_default(),
            }],
            End::Failed => vec![BudgetOp::CommitAtEstimate { task: task(t) }],
        }
    }

    fn step(&self, s: &mut DriverState, step: Step) -> Result<(), String> {
        match step {
            Step::ReserveOn(t, j) => {
                let Phase::Reserving(mask) = s.phases[t] else {
                    return Ok(());
                };
                let op = BudgetOp::Reserve {
                    task: task(t),
                    amount: eps(self.amounts[t]),
                };
                if s.released[j] & (1 << t) != 0 {
                    return Ok(()); // the Vault refuses a released task
                }
                match s.accounts[j].apply(&op) {
                    Ok(_) => {
                        let mask = mask | (1 << j);
                        s.phases[t] = if mask == ALL {
                            Phase::Reserved
                        } else {
                            Phase::Reserving(mask)
                        };
                    }
                    Err(BudgetError::Insufficient { .. }) => {
                        // Admission refused: undo what was reserved.
                        if self.bug != DriverBug::AbortKeepsPartialReservation {
                            self.release_all(s, t, mask)?;
                        }
                        s.phases[t] = Phase::Ended(End::Refused);
                    }
                    Err(e) => return Err(format!("reserve t{t} on subject {j}: {e}")),
                }
            }
            Step::Abort(t) => {
                let mask = match s.phases[t] {
                    Phase::Reserving(m) => {
                        if self.bug == DriverBug::AbortKeepsPartialReservation {
                            0
                        } else {
                            m
                        }
                    }
                    Phase::Reserved => ALL,
                    _ => return Ok(()),
                };
                self.release_all(s, t, mask)?;
                s.phases[t] = Phase::Ended(End::Aborted);
            }
            Step::Execute(t) => {
                if s.phases[t] == Phase::Reserved {
                    s.phases[t] = Phase::Executed;
                }
            }
            Step::Complete(t, actual) => {
                if s.phases[t] == Phase::Executed {
                    self.finish_all(
                        s,
                        &BudgetOp::Commit {
                            task: task(t),
                            actual: eps(actual),
                        },
                    )?;
                    s.phases[t] = Phase::Ended(End::Completed);
                }
            }
            Step::Fail(t) => {
                if s.phases[t] == Phase::Executed {
                    self.finish_all(s, &BudgetOp::CommitAtEstimate { task: task(t) })?;
                    s.phases[t] = Phase::Ended(End::Failed);
                }
            }
            Step::Retry(t) => {
                let Phase::Ended(end) = s.phases[t] else {
                    return Ok(());
                };
                for op in self.last_ops(t, end, s) {
                    for (j, acct) in s.accounts.iter_mut().enumerate() {
                        let before = acct.clone();
                        let r = acct.apply(&op);
                        if *acct != before
                            || !matches!(r, Ok(BudgetOutcome::AlreadyApplied) | Err(_))
                        {
                            return Err(format!(
                                "retried {op:?} on subject {j} changed the account ({r:?})"
                            ));
                        }
                    }
                }
            }
            Step::LateReserve(t, j) => {
                if !matches!(s.phases[t], Phase::Ended(_)) || s.released[j] & (1 << t) != 0 {
                    return Ok(()); // the Vault refuses a released task
                }
                let op = BudgetOp::Reserve {
                    task: task(t),
                    amount: eps(self.amounts[t]),
                };
                let _ = s.accounts[j].apply(&op);
            }
            Step::Replenish => {
                if s.epoch < self.max_epoch {
                    s.epoch += 1;
                    let op = BudgetOp::Replenish {
                        epoch: EpochId(s.epoch),
                        amount: eps(self.capacity),
                    };
                    self.finish_all(s, &op)?;
                }
            }
        }
        Ok(())
    }
}

impl Model for DriverModel {
    type State = DriverState;
    type Action = Step;

    fn init_states(&self) -> Vec<DriverState> {
        vec![DriverState {
            accounts: vec![BudgetAccount::new(eps(self.capacity), EpochId(0)); SUBJECTS],
            released: vec![0; SUBJECTS],
            phases: vec![Phase::Reserving(0); self.amounts.len()],
            epoch: 0,
            violation: None,
        }]
    }

    fn actions(&self, s: &DriverState, actions: &mut Vec<Step>) {
        if s.violation.is_some() {
            return;
        }
        for (t, phase) in s.phases.iter().enumerate() {
            match phase {
                Phase::Reserving(mask) => {
                    for j in 0..SUBJECTS {
                        if mask & (1 << j) == 0 {
                            actions.push(Step::ReserveOn(t, j));
                        }
                    }
                    actions.push(Step::Abort(t));
                }
                Phase::Reserved => {
                    actions.push(Step::Execute(t));
                    actions.push(Step::Abort(t));
                }
                Phase::Executed => {
                    actions.push(Step::Complete(t, 0));
                    actions.push(Step::Complete(t, self.amounts[t] / 2));
                    actions.push(Step::Fail(t));
                }
                Phase::Ended(_) => {
                    actions.push(Step::Retry(t));
                    for j in 0..SUBJECTS {
                        actions.push(Step::LateReserve(t, j));
                    }
                }
            }
        }
        if s.epoch < self.max_epoch {
            actions.push(Step::Replenish);
        }
    }

    fn next_state(&self, last: &DriverState, step: Step) -> Option<DriverState> {
        let mut s = last.clone();
        if let Err(e) = self.step(&mut s, step) {
            s.violation = Some(e);
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no budget above capacity", |_, s: &DriverState| {
                s.accounts.iter().all(fits)
            }),
            Property::always(
                "every reservation released or committed when its task ends",
                |_, s: &DriverState| {
                    s.phases.iter().enumerate().all(|(t, p)| {
                        !matches!(p, Phase::Ended(_))
                            || s.accounts
                                .iter()
                                .all(|a| a.reservation_of(&task(t)).is_none())
                    })
                },
            ),
            Property::always(
                "an executed task is committed in every account",
                |_, s: &DriverState| {
                    s.phases.iter().enumerate().all(|(t, p)| {
                        !matches!(p, Phase::Ended(End::Completed | End::Failed))
                            || s.accounts.iter().all(|a| a.finished_of(&task(t)).is_some())
                    })
                },
            ),
            Property::always(
                "the driver's operations are accepted",
                |_, s: &DriverState| s.violation.is_none(),
            ),
            Property::sometimes(
                "admission refused for lack of budget",
                |_, s: &DriverState| s.phases.contains(&Phase::Ended(End::Refused)),
            ),
            Property::sometimes("every task completed", |_, s: &DriverState| {
                s.phases.iter().all(|p| *p == Phase::Ended(End::Completed))
            }),
        ]
    }
}

fn driver(bug: DriverBug) -> DriverModel {
    // Capacity 3 per subject: tasks of 2, 2 and 1 cannot all hold reservations at once.
    DriverModel {
        amounts: vec![2, 2, 1],
        capacity: 3,
        max_epoch: 1,
        bug,
    }
}

fn report<C: Checker<M>, M: Model>(name: &str, checker: &C, started: Instant) {
    println!(
        "{name}: {} states ({} unique), max depth {}, {:.2?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
}

#[test]
fn budget_rules_hold_in_every_order() {
    let started = Instant::now();
    let checker = RulesModel {
        tasks: 3,
        capacity: 4,
        apply: real_apply,
    }
    .checker()
    .spawn_bfs()
    .join();
    report("budget rules", &checker, started);
    checker.assert_properties();
    assert!(checker.unique_state_count() > 1_000);
}

#[test]
fn planted_leaky_release_is_found() {
    let checker = RulesModel {
        tasks: 2,
        capacity: 4,
        apply: leaky_release,
    }
    .checker()
    .spawn_bfs()
    .join();
    let path = checker
        .discovery("every operation obeys its rule")
        .expect("the checker finds the release that keeps its reservation");
    println!("counterexample:\n{path}");
    assert!(path
        .last_state()
        .violation
        .as_deref()
        .unwrap()
        .contains("Release"));
}

#[test]
fn driven_tasks_never_leak_or_overspend() {
    let started = Instant::now();
    let checker = driver(DriverBug::None).checker().spawn_bfs().join();
    report("budget driver", &checker, started);
    checker.assert_properties();
}

#[test]
fn planted_abort_keeping_its_reservation_is_found() {
    let checker = driver(DriverBug::AbortKeepsPartialReservation)
        .checker()
        .spawn_bfs()
        .join();
    let path = checker
        .discovery("every reservation released or committed when its task ends")
        .expect("the checker finds the abort that keeps a reservation");
    println!("counterexample:\n{path}");
    let last = path.last_state();
    assert!(last.phases.iter().enumerate().any(|(t, p)| {
        matches!(p, Phase::Ended(End::Aborted | End::Refused))
            && last
                .accounts
                .iter()
                .any(|a| a.reservation_of(&task(t)).is_some())
    }));
}

#[test]
fn late_reservation_without_the_vault_guard_is_found() {
    let checker = driver(DriverBug::NoReleasedGuard)
        .checker()
        .spawn_bfs()
        .join();
    let path = checker
        .discovery("every reservation released or committed when its task ends")
        .expect("a late reserve after release leaks without the released-task guard");
    println!("counterexample:\n{path}");
    assert!(path
        .into_actions()
        .iter()
        .any(|a| matches!(a, Step::LateReserve(..))));
}
