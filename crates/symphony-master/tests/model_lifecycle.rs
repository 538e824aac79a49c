//! Exhaustive model check (stateright, BFS) of the task lifecycle as the planes drive
//! it over the real, pure `MasterState::apply`, coupled to the Vaults' budget accounts
//! (`symphony_core::budget::BudgetAccount`) and a simple escrow ledger, with the
//! takeover rule of a new leader (`symphony_master::takeover::decide`) at any point.
//!
//! Two tasks (the two-Vault `query` fixture of `common`) compete for one subject's
//! budget in each Vault (capacity 180 mε, 100 mε reserved per task: only one holds a
//! reservation at a time; after a commit of 60 mε the other fits, after a commit at
//! the estimate it is refused at admission). Every interleaving of the two tasks' steps — admission (reserve, escrow,
//! `AdmitTask`), resolution, dispatch, slices (the Vault commits on success, commits
//! at the estimate on failure), aggregate, verification, the settlement steps with the
//! challenge window, payout after `finalizing`, completion, delivery, reject, timeout,
//! a leader change (`takeover::decide`: abort or complete) and duplicates of any
//! command already applied — is explored. Checked in every state:
//!
//! - no budget above capacity (`committed + reserved ≤ capacity`);
//! - every reservation released or committed when its task ends;
//! - a refused command changes nothing (the state before and after are equal);
//! - fee + refund = escrow for every ended task, never more while it runs, paid once;
//! - at most one delivery per task, only for a completed task whose fee was paid.
//!
//! A planted bug (a takeover abort that keeps the Vault reservations) shows the checker
//! finds the counterexample. Two findings about the state machine itself are kept as
//! tests (`finding_*`): they pass while the gap exists and say what to change.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use stateright::{Checker, Model, Property};
use symphony_core::budget::{BudgetAccount, BudgetOp, Epsilon};
use symphony_core::encoding::Digest;
use symphony_core::ids::{ActorId, EpochId, TaskId};
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent, TaskState};
use symphony_master::takeover::{decide, Takeover};
use symphony_master::{AggregateRecord, Command, MasterState, SettlementRecord};

#[allow(dead_code)]
mod common;
use common::{advance, envelope, settlement, slice, vault};

const TASKS: usize = 2;
const VAULTS: [&str; 2] = ["v1", "v2"];
const ESCROW: u64 = 1000;
const FEE: u64 = 700;
const BASE_FEE: u64 = 100;
const CAPACITY_MILLI: u64 = 180;
const ESTIMATE_MILLI: u64 = 100;
const ACTUAL_MILLI: u64 = 60;

fn tid(t: usize) -> TaskId {
    TaskId::new(format!("t{t}")).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    NotAdmitted,
    /// Admission could not reserve (free: nothing locked).
    Refused,
    /// The attempt runs.
    Live,
    /// The attempt ended and its effects (release, refund, payout) were applied.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
struct Escrow {
    locked: u64,
    fee: u64,
    refunded: u64,
    payouts: u8,
}

impl Escrow {
    fn remainder(&self) -> u64 {
        self.locked - self.fee - self.refunded
    }
}

#[derive(Clone, Debug, PartialEq)]
struct LState {
    master: MasterState,
    /// One subject's account per Vault.
    accounts: Vec<BudgetAccount>,
    /// Per Vault: tasks recorded as released (`Vault::release_task`).
    released: Vec<u8>,
    escrows: Vec<Escrow>,
    phases: Vec<Phase>,
    /// Commands applied for each task (to duplicate them).
    applied: Vec<Vec<Command>>,
    violation: Option<String>,
}

impl Hash for LState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.master.state_root().unwrap().0.hash(h);
        for a in &self.accounts {
            symphony_core::encoding::canonical_bytes(a).unwrap().hash(h);
        }
        self.released.hash(h);
        self.escrows.hash(h);
        self.phases.hash(h);
        // `applied` only feeds duplicates of commands already in the state: the set of
        // them is determined by the master state (up to order), so it is not hashed.
        self.violation.hash(h);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Admit(usize),
    Begin(usize),
    Dispatch(usize),
    Slice(usize, usize, bool),
    Aggregate(usize),
    ExecutionFinished(usize),
    VerificationAccepted(usize),
    SettleNext(usize),
    OpenWindow(usize),
    CloseWindow(usize),
    Pay(usize),
    Complete(usize),
    Deliver(usize),
    Reject(usize),
    Timeout(usize),
    /// A new leader takes the attempt over.
    Takeover(usize),
    /// The `i`th command applied for the task is proposed again.
    Duplicate(usize, usize),
    /// An arbitrary lifecycle event proposed for the task (probe).
    Probe(usize, TaskEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    None,
    /// PLANTED BUG: the takeover abort forgets to release the Vault reservations.
    AbortKeepsReservations,
}

struct LifecycleModel {
    bug: Bug,
    /// Whether the driver checks the audit log before recording a delivery (as
    /// `takeover::decide` does); without it a duplicate `RecordDelivery` is proposed.
    guard_delivery: bool,
    /// Whether duplicates of `RecordDelivery` are explored.
    duplicate_deliveries: bool,
    /// Arbitrary lifecycle events proposed at every state (probes).
    probes: bool,
    /// Whether a probe that completes the task must find a paid, finalized settlement.
    probe_completion: bool,
    /// Duplicates are proposed of the last `dup_window` commands of each task.
    dup_window: usize,
    /// Number of tasks (1 or 2).
    tasks: usize,
}

fn all_events() -> [TaskEvent; 10] {
    [
        TaskEvent::BeginResolution,
        TaskEvent::Dispatch,
        TaskEvent::ExecutionFinished,
        TaskEvent::VerificationAccepted,
        TaskEvent::SettlementFinalized,
        TaskEvent::Reject,
        TaskEvent::Timeout,
        TaskEvent::OpenChallenge,
        TaskEvent::ChallengeClosedWithoutPenalty,
        TaskEvent::ChallengePenaltyRecorded,
    ]
}

fn fee_record(state: SettlementState) -> SettlementRecord {
    settlement(state, FEE, &[("treasury", 100), ("vaults", 600)])
}

fn delivery(t: usize) -> Command {
    Command::RecordDelivery {
        task_id: tid(t),
        recipient: ActorId::new("advertiser:luckin").unwrap(),
        result_hash: Digest([5; 32]),
        count: 5,
        at_ms: 2000,
    }
}

fn deliveries(m: &MasterState, t: usize) -> usize {
    m.audit_log()
        .iter()
        .filter(|e| e.task_id == tid(t) && e.kind == "result_delivered")
        .count()
}

impl LifecycleModel {
    /// Applies a command; a refused one must leave the state as it was.
    fn apply(&self, s: &mut LState, t: usize, cmd: Command) -> Result<bool, String> {
        let before = s.master.clone();
        match s.master.apply(&cmd) {
            Ok(_) => {
                s.applied[t].push(cmd);
                Ok(true)
            }
            Err(e) => {
                if s.master != before {
                    return Err(format!("refused {cmd:?} ({e}) changed the state"));
                }
                Ok(false)
            }
        }
    }

    /// `Vault::release_task` in every Vault: release what the task still holds and
    /// record it as released.
    fn release_task(&self, s: &mut LState, t: usize) -> Result<(), String> {
        for (v, acct) in s.accounts.iter_mut().enumerate() {
            if acct.reservation_of(&tid(t)).is_some() {
                acct.apply(&BudgetOp::Release { task: tid(t) })
                    .map_err(|e| format!("release t{t} in {}: {e}", VAULTS[v]))?;
            }
            s.released[v] |= 1 << t;
        }
        Ok(())
    }

    fn refund_remainder(s: &mut LState, t: usize) {
        let e = &mut s.escrows[t];
        e.refunded += e.remainder();
    }

    /// Reject / timeout / abort: release, charge the base fee when the task was
    /// rejected by its lifecycle, refund the rest.
    fn end_rejected(&self, s: &mut LState, t: usize, base_fee: bool) -> Result<(), String> {
        self.release_task(s, t)?;
        let e = &mut s.escrows[t];
        if base_fee && e.payouts == 0 && e.remainder() >= BASE_FEE {
            e.fee += BASE_FEE;
            e.payouts += 1;
        }
        Self::refund_remainder(s, t);
        s.phases[t] = Phase::Closed;
        Ok(())
    }

    fn state_of(s: &LState, t: usize) -> Option<TaskState> {
        s.master.task(&tid(t)).map(|r| r.state)
    }

    fn settlement_of(s: &LState, t: usize) -> Option<SettlementState> {
        s.master
            .task(&tid(t))
            .and_then(|r| r.settlement.as_ref())
            .map(|x| x.state)
    }

    fn step(&self, s: &mut LState, act: Act) -> Result<(), String> {
        match act {
            Act::Admit(t) => {
                let mut got = Vec::new();
                for (v, acct) in s.accounts.iter_mut().enumerate() {
                    if s.released[v] & (1 << t) != 0 {
                        break;
                    }
                    let op = BudgetOp::Reserve {
                        task: tid(t),
                        amount: Epsilon::from_milli(ESTIMATE_MILLI),
                    };
                    if acct.apply(&op).is_err() {
                        break;
                    }
                    got.push(v);
                }
                if got.len() < VAULTS.len() {
                    // Refused at admission, for free: undo what was reserved.
                    self.release_task(s, t)?;
                    s.phases[t] = Phase::Refused;
                    return Ok(());
                }
                s.escrows[t].locked = ESCROW;
                let cmd = Command::AdmitTask {
                    envelope: Box::new(envelope(tid(t).as_str(), t as u64 + 1)),
                };
                if !self.apply(s, t, cmd)? {
                    return Err(format!("admission of t{t} refused"));
                }
                s.phases[t] = Phase::Live;
            }
            Act::Begin(t) => {
                self.apply(s, t, advance(&tid(t), TaskEvent::BeginResolution))?;
            }
            Act::Dispatch(t) => {
                self.apply(s, t, advance(&tid(t), TaskEvent::Dispatch))?;
            }
            Act::Slice(t, v, ok) => {
                // The Vault executes (refusing a released task) and the coordinator
                // records what the slice ended as.
                if s.released[v] & (1 << t) != 0 {
                    return Ok(());
                }
                let record = slice(if ok {
                    SliceState::Verified
                } else {
                    SliceState::Failed
                });
                let cmd = Command::RecordSlice {
                    task_id: tid(t),
                    vault_id: vault(VAULTS[v]),
                    record,
                };
                if self.apply(s, t, cmd)? {
                    let op = if ok {
                        BudgetOp::Commit {
                            task: tid(t),
                            actual: Epsilon::from_milli(ACTUAL_MILLI),
                        }
                    } else {
                        BudgetOp::CommitAtEstimate { task: tid(t) }
                    };
                    s.accounts[v]
                        .apply(&op)
                        .map_err(|e| format!("{op:?} in {}: {e}", VAULTS[v]))?;
                }
            }
            Act::Aggregate(t) => {
                let cmd = Command::RecordAggregate {
                    task_id: tid(t),
                    record: AggregateRecord {
                        commitment: Digest([4; 32]),
                        eligible_count: 6,
                        delivered_count: 5,
                        result_hash: Digest([5; 32]),
                        enclave_kind: symphony_core::EnclaveKind::Software,
                    },
                };
                self.apply(s, t, cmd)?;
            }
            Act::ExecutionFinished(t) => {
                self.apply(s, t, advance(&tid(t), TaskEvent::ExecutionFinished))?;
            }
            Act::VerificationAccepted(t) => {
                self.apply(s, t, advance(&tid(t), TaskEvent::VerificationAccepted))?;
            }
            Act::SettleNext(t) => {
                let next = match Self::settlement_of(s, t) {
                    None => SettlementState::Collecting,
                    Some(st) => match st.advance() {
                        Ok(n) => n,
                        Err(_) => return Ok(()),
                    },
                };
                // The Finalized record follows the payout (nothing paid before
                // finality, and the record says the money moved).
                if next == SettlementState::Finalized && s.escrows[t].payouts == 0 {
                    return Ok(());
                }
                let cmd = Command::RecordSettlement {
                    task_id: tid(t),
                    record: fee_record(next),
                };
                self.apply(s, t, cmd)?;
            }
            Act::OpenWindow(t) => {
                let cmd = Command::OpenChallengeWindow {
                    task_id: tid(t),
                    closes_at_ms: 5000,
                };
                self.apply(s, t, cmd)?;
            }
            Act::CloseWindow(t) => {
                let cmd = Command::CloseChallengeWindow {
                    task_id: tid(t),
                    at_ms: 5000,
                };
                self.apply(s, t, cmd)?;
            }
            Act::Pay(t) => {
                // The ledger executes the payout after the `finalizing` certificate,
                // at most once.
                let e = &mut s.escrows[t];
                if e.payouts == 0 && e.remainder() >= FEE {
                    e.fee += FEE;
                    e.payouts += 1;
                }
            }
            Act::Complete(t) => {
                if self.apply(s, t, advance(&tid(t), TaskEvent::SettlementFinalized))? {
                    self.release_task(s, t)?;
                    Self::refund_remainder(s, t);
                }
            }
            Act::Deliver(t) => {
                if self.guard_delivery && deliveries(&s.master, t) > 0 {
                    return Ok(());
                }
                if self.apply(s, t, delivery(t))? {
                    s.phases[t] = Phase::Closed;
                }
            }
            Act::Reject(t) | Act::Timeout(t) => {
                let event = if matches!(act, Act::Reject(_)) {
                    TaskEvent::Reject
                } else {
                    TaskEvent::Timeout
                };
                if self.apply(s, t, advance(&tid(t), event))? {
                    self.end_rejected(s, t, true)?;
                }
            }
            Act::Takeover(t) => {
                let e = s.escrows[t];
                let staged = (s
                    .master
                    .task(&tid(t))
                    .is_some_and(|r| r.aggregate.is_some())
                    && matches!(
                        Self::state_of(s, t),
                        Some(TaskState::AwaitingSettlement | TaskState::Completed)
                    ))
                .then_some(5);
                match decide(&s.master, &tid(t), e.payouts > 0, staged)
                    .map_err(|e| e.to_string())?
                {
                    Takeover::Abort { reject } => {
                        let rejected =
                            reject && self.apply(s, t, advance(&tid(t), TaskEvent::Reject))?;
                        if self.bug == Bug::AbortKeepsReservations {
                            Self::refund_remainder(s, t);
                            s.phases[t] = Phase::Closed;
                        } else {
                            self.end_rejected(s, t, rejected)?;
                        }
                    }
                    Takeover::CompletedWithoutResult => {
                        self.release_task(s, t)?;
                        Self::refund_remainder(s, t);
                        s.phases[t] = Phase::Closed;
                    }
                    Takeover::Complete(c) => {
                        if let Some(record) = c.finalize_settlement {
                            let cmd = Command::RecordSettlement {
                                task_id: tid(t),
                                record,
                            };
                            if !self.apply(s, t, cmd)? {
                                return Err("takeover could not finalize the settlement".into());
                            }
                        }
                        if c.advance_to_completed
                            && !self.apply(
                                s,
                                t,
                                advance(&tid(t), TaskEvent::SettlementFinalized),
                            )?
                        {
                            return Err("takeover could not complete the task".into());
                        }
                        self.release_task(s, t)?;
                        Self::refund_remainder(s, t);
                        if let Some(d) = c.delivery {
                            let cmd = Command::RecordDelivery {
                                task_id: tid(t),
                                recipient: d.recipient,
                                result_hash: d.result_hash,
                                count: d.count,
                                at_ms: 3000,
                            };
                            if !self.apply(s, t, cmd)? {
                                return Err("takeover could not record the delivery".into());
                            }
                        }
                        s.phases[t] = Phase::Closed;
                    }
                }
            }
            Act::Duplicate(t, i) => {
                let cmd = s.applied[t][i].clone();
                let before = s.master.clone();
                match s.master.apply(&cmd) {
                    Err(e) if s.master != before => {
                        return Err(format!("refused duplicate {cmd:?} ({e}) changed the state"))
                    }
                    // A duplicate accepted changes at most the command counter and
                    // what the invariants look at; the properties judge it.
                    _ => {}
                }
            }
            Act::Probe(t, event) => {
                let mut probe = s.master.clone();
                let before = s.master.clone();
                match probe.apply(&advance(&tid(t), event)) {
                    Err(e) => {
                        if probe != before {
                            return Err(format!("refused probe {event} ({e}) changed the state"));
                        }
                    }
                    Ok(_) => {
                        // An accepted event must be one the lifecycle allows from the
                        // task's state; and a completion needs a paid, finalized
                        // settlement.
                        let to = probe.task(&tid(t)).map(|r| r.state);
                        if self.probe_completion
                            && to == Some(TaskState::Completed)
                            && (Self::settlement_of(s, t) != Some(SettlementState::Finalized)
                                || s.escrows[t].payouts == 0)
                        {
                            return Err(format!(
                                "t{t} completed by a bare {event} with settlement {:?} and {} payouts",
                                Self::settlement_of(s, t),
                                s.escrows[t].payouts
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Model for LifecycleModel {
    type State = LState;
    type Action = Act;

    fn init_states(&self) -> Vec<LState> {
        vec![LState {
            master: MasterState::new(),
            accounts: vec![
                BudgetAccount::new(Epsilon::from_milli(CAPACITY_MILLI), EpochId(0));
                VAULTS.len()
            ],
            released: vec![0; VAULTS.len()],
            escrows: vec![Escrow::default(); self.tasks],
            phases: vec![Phase::NotAdmitted; self.tasks],
            applied: vec![Vec::new(); self.tasks],
            violation: None,
        }]
    }

    fn actions(&self, s: &LState, actions: &mut Vec<Act>) {
        // Stop below a violation (an accepted duplicate delivery would otherwise grow
        // the audit log without bound).
        if s.violation.is_some() || (0..self.tasks).any(|t| deliveries(&s.master, t) > 1) {
            return;
        }
        for t in 0..self.tasks {
            match s.phases[t] {
                Phase::NotAdmitted => actions.push(Act::Admit(t)),
                Phase::Refused => {}
                Phase::Live => {
                    let rec = s.master.task(&tid(t));
                    let st = rec.map(|r| r.state);
                    use TaskState as S;
                    match st {
                        Some(S::Accepted) => actions.push(Act::Begin(t)),
                        Some(S::Resolving) => actions.push(Act::Dispatch(t)),
                        Some(S::Dispatched) => {
                            for (v, name) in VAULTS.iter().enumerate() {
                                let recorded =
                                    rec.is_some_and(|r| r.slices.contains_key(&vault(name)));
                                if !recorded {
                                    actions.push(Act::Slice(t, v, true));
                                    actions.push(Act::Slice(t, v, false));
                                }
                            }
                            if rec.is_some_and(|r| r.aggregate.is_none()) {
                                actions.push(Act::Aggregate(t));
                            } else {
                                actions.push(Act::ExecutionFinished(t));
                            }
                        }
                        Some(S::Verifying) => actions.push(Act::VerificationAccepted(t)),
                        Some(S::AwaitingSettlement) => {
                            actions.push(Act::SettleNext(t));
                            match Self::settlement_of(s, t) {
                                Some(SettlementState::CandidateReady) => {
                                    actions.push(Act::OpenWindow(t));
                                    actions.push(Act::CloseWindow(t));
                                }
                                Some(SettlementState::Finalizing) => actions.push(Act::Pay(t)),
                                Some(SettlementState::Finalized) => actions.push(Act::Complete(t)),
                                _ => {}
                            }
                        }
                        Some(S::Completed) => actions.push(Act::Deliver(t)),
                        _ => {}
                    }
                    if matches!(st, Some(S::Accepted | S::Resolving | S::Dispatched)) {
                        actions.push(Act::Reject(t));
                        actions.push(Act::Timeout(t));
                    }
                    actions.push(Act::Takeover(t));
                }
                Phase::Closed => {
                    if !self.guard_delivery && Self::state_of(s, t) == Some(TaskState::Completed) {
                        actions.push(Act::Deliver(t));
                    }
                }
            }
            let first = s.applied[t].len().saturating_sub(self.dup_window);
            for (i, cmd) in s.applied[t].iter().enumerate().skip(first) {
                if self.duplicate_deliveries || !matches!(cmd, Command::RecordDelivery { .. }) {
                    actions.push(Act::Duplicate(t, i));
                }
            }
            if self.probes {
                for event in all_events() {
                    actions.push(Act::Probe(t, event));
                }
            }
        }
    }

    fn next_state(&self, last: &LState, act: Act) -> Option<LState> {
        let mut s = last.clone();
        if let Err(e) = self.step(&mut s, act) {
            s.violation = Some(e);
        }
        if let (Act::Duplicate(t, _) | Act::Probe(t, _), None) = (act, &s.violation) {
            // A probe never keeps its effect. An accepted duplicate that changed nothing
            // but the command counter is idempotent: no new state. One that changed the
            // task or the audit log is kept, for the properties to judge.
            let same_task = s.master.task(&tid(t)) == last.master.task(&tid(t));
            let same_log = s.master.audit_log() == last.master.audit_log();
            if same_task && same_log {
                return None;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no budget above capacity", |_, s: &LState| {
                s.accounts.iter().all(|a| {
                    a.committed()
                        .checked_add(a.reserved())
                        .is_some_and(|u| u <= a.capacity())
                })
            }),
            Property::always(
                "every reservation released or committed when its task ends",
                |_, s: &LState| {
                    s.phases.iter().enumerate().all(|(t, p)| {
                        !matches!(p, Phase::Closed | Phase::Refused)
                            || s.accounts
                                .iter()
                                .all(|a| a.reservation_of(&tid(t)).is_none())
                    })
                },
            ),
            // (also: an accepted probe completed a task only with a paid, finalized
            // settlement, when `probe_completion` is on)
            Property::always("a refused command changes nothing", |_, s: &LState| {
                s.violation.is_none()
            }),
            Property::always("fee + refund = escrow, paid once", |_, s: &LState| {
                s.phases.iter().zip(&s.escrows).all(|(p, e)| {
                    e.payouts <= 1
                        && e.fee + e.refunded <= e.locked
                        && (*p != Phase::Closed || e.fee + e.refunded == e.locked)
                })
            }),
            Property::always(
                "at most one delivery per task",
                |m: &LifecycleModel, s: &LState| {
                    (0..m.tasks).all(|t| deliveries(&s.master, t) <= 1)
                },
            ),
            Property::always(
                "delivered only when completed and paid",
                |m: &LifecycleModel, s: &LState| {
                    (0..m.tasks).all(|t| {
                        deliveries(&s.master, t) == 0
                            || (LifecycleModel::state_of(s, t) == Some(TaskState::Completed)
                                && s.escrows[t].fee == FEE)
                    })
                },
            ),
            Property::sometimes("a task is delivered", |m: &LifecycleModel, s: &LState| {
                (0..m.tasks).any(|t| deliveries(&s.master, t) == 1)
            }),
            Property::sometimes(
                "a takeover completes a paid task",
                |m: &LifecycleModel, s: &LState| {
                    (0..m.tasks).any(|t| {
                        s.applied[t]
                            .iter()
                            .any(|c| matches!(c, Command::RecordDelivery { at_ms: 3000, .. }))
                    })
                },
            ),
            Property::sometimes(
                "both tasks ran, one after the other",
                |m: &LifecycleModel, s: &LState| {
                    m.tasks == 1 || (s.phases[0] == Phase::Closed && s.phases[1] == Phase::Closed)
                },
            ),
        ]
    }
}

fn model() -> LifecycleModel {
    LifecycleModel {
        bug: Bug::None,
        guard_delivery: true,
        duplicate_deliveries: false,
        probes: false,
        probe_completion: false,
        dup_window: 3,
        tasks: TASKS,
    }
}

fn report<C: Checker<LifecycleModel>>(name: &str, checker: &C, started: Instant) {
    println!(
        "{name}: {} states ({} unique), max depth {}, {:.2?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
}

#[test]
fn lifecycle_with_budgets_escrow_and_takeover_holds() {
    let started = Instant::now();
    let checker = model().checker().spawn_bfs().join();
    report("lifecycle (2 tasks)", &checker, started);
    checker.assert_properties();
}

#[test]
fn lifecycle_refuses_every_illegal_event_without_change() {
    // One task, with every lifecycle event proposed in every state.
    let started = Instant::now();
    let checker = LifecycleModel {
        probes: true,
        dup_window: usize::MAX,
        tasks: 1,
        ..model()
    }
    .checker()
    .spawn_bfs()
    .join();
    report("lifecycle probes (1 task)", &checker, started);
    checker.assert_properties();
}

#[test]
fn planted_abort_keeping_reservations_is_found() {
    let checker = LifecycleModel {
        bug: Bug::AbortKeepsReservations,
        tasks: 1,
        ..model()
    }
    .checker()
    .spawn_bfs()
    .join();
    let path = checker
        .discovery("every reservation released or committed when its task ends")
        .expect("the checker finds the abort that keeps its reservations");
    println!("counterexample:\n{path}");
    assert!(path
        .into_actions()
        .iter()
        .any(|a| matches!(a, Act::Takeover(_))));
}

/// Found by this model (fixed in `MasterState::apply`): `RecordDelivery` was accepted
/// a second time for the same task (two `result_delivered` events); a duplicated
/// proposal is now refused by the state machine itself, not only by the leader's
/// read barrier and `takeover::decide`.
#[test]
fn a_second_delivery_is_refused_by_the_state_machine() {
    let checker = LifecycleModel {
        duplicate_deliveries: true,
        tasks: 1,
        ..model()
    }
    .checker()
    .spawn_bfs()
    .join();
    let path = checker.discovery("at most one delivery per task");
    assert!(path.is_none(), "{:?}", path.map(|p| p.into_actions()));
}

/// Found by this model (fixed in `MasterState::apply`): `Advance { SettlementFinalized }`
/// completed a task whose settlement was not `finalized` (e.g. `finalizing`, unpaid,
/// after a new leader aborted the attempt). It is now refused, state unchanged.
#[test]
fn completion_without_a_finalized_settlement_is_refused() {
    let checker = LifecycleModel {
        probes: true,
        probe_completion: true,
        tasks: 1,
        ..model()
    }
    .checker()
    .spawn_bfs()
    .join();
    let path = checker.discovery("a refused command changes nothing");
    assert!(
        !path.as_ref().is_some_and(|p| p
            .clone()
            .into_actions()
            .last()
            .is_some_and(|a| matches!(a, Act::Probe(_, TaskEvent::SettlementFinalized)))),
        "{:?}",
        path.map(|p| p.into_actions())
    );
}
