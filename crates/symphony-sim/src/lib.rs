//! # symphony-sim: deterministic fault simulation
//!
//! A seeded simulator, in the spirit of FoundationDB's simulation testing and
//! TigerBeetle's VOPR, of the pieces that must agree for a task to be settled exactly
//! once: the master replicated state machine (`symphony_master::MasterState`, three
//! replicas over one committed log, with a replicated request table beside it, the
//! way `DeployState` carries one), the Vaults' privacy budgets
//! (`symphony_core::budget::BudgetAccount`, behind a release guard like
//! `Vault::release_task`) and the escrow ledger (`symphony_ledger::MemoryLedger`).
//!
//! Everything is driven by one seeded generator; there is no clock, thread or IO, so a
//! seed replays exactly. Faults injected:
//!
//! - **leader crash and restart**: the leader's volatile state is lost; a replica
//!   restarts from its last snapshot and replays the log; a new leader takes every
//!   in-flight attempt over with the real takeover rule (`takeover::decide`): abort
//!   (release every Vault reservation, reject, refund) or complete (finalize, deliver);
//! - **message loss, duplication and reordering** between the leader and the Vaults
//!   (requests and replies; lost messages are resent after a timeout, duplicates and
//!   late copies still arrive — a reservation may land after the task was released);
//! - **lost commit acknowledgements**: a proposal commits but the leader is not told;
//!   it re-reads its replica (read barrier) before proposing again;
//! - **duplicate client requests** (the gateway's resubmission of the same request);
//! - **clock skew** between the masters: the leader injects its own time into
//!   deadlines, challenge windows and epoch closes;
//! - optionally (`Faults::dup_log_per_mille`), a proposal **appended twice to the log**
//!   without the leader's read barrier, to show what the state machine itself refuses.
//!
//! Invariants checked after every step (see [`Invariant`]): no budget above capacity;
//! every reservation released or committed when its attempt ends; a refused command
//! changes nothing; fee + refund = escrow and an escrow is paid at most once; at most
//! one delivery per task; no acknowledged request lost (each reaches one final status);
//! replicas converge on the same state root (checked every [`CHECKPOINT_STEPS`] steps,
//! after restarts and at the end); the ledger reconciles with its event log.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use symphony_core::budget::{BudgetAccount, BudgetError, BudgetOp, Epsilon};
use symphony_core::consent::UsageScope;
use symphony_core::encoding::Digest;
use symphony_core::envelope::{
    AggregationMethod, Authorization, BudgetLockRef, BudgetReservation, CallerContext,
    CoordinationEnvelope, EnvelopeBody, TaskClass, TaskEnvelope,
};
use symphony_core::ids::{ActorId, EpochId, SemanticVersion, TaskId, VaultId};
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent, TaskState};
use symphony_ledger::{
    AccountId, EscrowId, Genesis, LedgerConfig, MemoryLedger, PayoutId, PayoutInstruction,
    PayoutInstructionSet, PayoutKind, SettlementLedger,
};
use symphony_master::takeover::{decide, Takeover};
use symphony_master::{
    AggregateRecord, CloseTrigger, Command, MasterState, SettlementRecord, SliceRecord,
};

/// Steps between two convergence checkpoints.
pub const CHECKPOINT_STEPS: u64 = 256;
const MASTERS: usize = 3;
const VAULTS: usize = 3;
const SUBJECTS: usize = 4;
const QUORUM: u32 = 2;
const MIN_SUBJECTS: u64 = 2;
const ESCROW: u64 = 1_000;
const FEE: u64 = 700;
const BASE_FEE: u64 = 100;
const MAX_ATTEMPTS: u32 = 3;
const TICK_MS: u64 = 10_000;
const DEADLINE_MS: u64 = 30 * 60_000;
const WINDOW_MS: u64 = 10 * 60_000;
const RESEND_TICKS: u64 = 4;
const CAPACITY_MICRO: u64 = 12_000_000;
const ESTIMATE_MICRO: u64 = 300_000;
const ACTUAL_MICRO: u64 = 200_000;

/// The faults a run injects, in per-mille per opportunity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Leader crash per step.
    pub crash_per_mille: u32,
    /// Loss of a Vault request or reply, or of a proposal.
    pub loss_per_mille: u32,
    /// Duplication of a Vault message or a client request.
    pub dup_per_mille: u32,
    /// Extra delay (reordering) of a Vault message.
    pub reorder_per_mille: u32,
    /// A commit whose acknowledgement the leader never gets.
    pub lost_ack_per_mille: u32,
    /// A proposal appended twice to the log, bypassing the leader's read barrier
    /// (off by default: it exercises the state machine's own duplicate refusal).
    pub dup_log_per_mille: u32,
    /// A Vault's slice fails (commit at the estimate).
    pub slice_fail_per_mille: u32,
    /// Largest clock skew of a master, ms (each master gets a fixed offset in ±this).
    pub max_skew_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            crash_per_mille: 4,
            loss_per_mille: 50,
            dup_per_mille: 50,
            reorder_per_mille: 100,
            lost_ack_per_mille: 20,
            dup_log_per_mille: 0,
            slice_fail_per_mille: 60,
            max_skew_ms: 90_000,
        }
    }
}

/// A bug planted on purpose, to show the simulator finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A new leader's abort of an attempt forgets to release the Vault reservations.
    AbortKeepsReservation,
    /// The Vaults do not remember released tasks: a late reservation is accepted.
    VaultForgetsReleased,
}

/// One run's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The seed: everything else follows from it.
    pub seed: u64,
    /// Client requests submitted over the run.
    pub tasks: u32,
    /// Faults injected.
    pub faults: Faults,
    /// A planted bug, if any.
    pub bug: Option<PlantedBug>,
    /// Keep every step in the trace (else only the last [`TRACE_TAIL`]).
    pub full_trace: bool,
}

impl SimConfig {
    /// Default faults, `tasks` requests.
    pub fn new(seed: u64, tasks: u32) -> Self {
        SimConfig {
            seed,
            tasks,
            faults: Faults::default(),
            bug: None,
            full_trace: false,
        }
    }
}

/// Steps of the trace kept with a violation when the full trace is off.
pub const TRACE_TAIL: usize = 80;

/// An invariant the simulator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// `committed + reserved ≤ capacity` in every account.
    BudgetWithinCapacity,
    /// No Vault holds a reservation of an attempt that ended.
    ReservationsEnded,
    /// A command the state machine refused left the state unchanged.
    RefusedChangesNothing,
    /// Fee + refund = escrow for an ended attempt; an escrow is paid at most once.
    EscrowBalanced,
    /// At most one delivery per task.
    SingleDelivery,
    /// Every acknowledged request reaches exactly one final status.
    NoAcknowledgedRequestLost,
    /// Replicas that applied the same log hold the same state root.
    ReplicasConverge,
    /// The ledger's state equals the replay of its events.
    LedgerReconciles,
    /// The simulated system stopped making progress.
    Liveness,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Invariant::BudgetWithinCapacity => "no budget above capacity",
            Invariant::ReservationsEnded => {
                "every reservation released or committed when its task ends"
            }
            Invariant::RefusedChangesNothing => "a refused command changes nothing",
            Invariant::EscrowBalanced => "fee + refund = escrow, paid at most once",
            Invariant::SingleDelivery => "no double delivery",
            Invariant::NoAcknowledgedRequestLost => "no acknowledged request lost",
            Invariant::ReplicasConverge => "replicas converge",
            Invariant::LedgerReconciles => "the ledger reconciles",
            Invariant::Liveness => "every request finishes",
        };
        f.write_str(s)
    }
}

/// A violated invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The step it was detected at.
    pub step: u64,
    /// Which invariant.
    pub invariant: Invariant,
    /// What was seen.
    pub detail: String,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Requests submitted.
    pub tasks: u32,
    /// Steps simulated.
    pub steps: u64,
    /// Log entries committed.
    pub log_entries: u64,
    /// Requests completed and delivered.
    pub completed: u32,
    /// Requests rejected (after all attempts) or timed out.
    pub rejected: u32,
    /// Requests refused at admission for lack of budget (free).
    pub refused: u32,
    /// Attempts aborted (takeover or failure) and retried.
    pub aborted_attempts: u32,
    /// Leader crashes.
    pub crashes: u32,
    /// Messages lost, duplicated, delayed.
    pub lost: u32,
    /// Messages duplicated.
    pub duplicated: u32,
    /// Messages delayed (reordered).
    pub reordered: u32,
    /// Epochs closed.
    pub epochs: u64,
    /// Commands the state machine refused (and left the state unchanged).
    pub refused_commands: u64,
    /// Convergence checkpoints passed.
    pub checkpoints: u32,
    /// Invariant evaluations: the per-step budget check, every refused command's
    /// before/after comparison, every delivery, every ended attempt's reservations and
    /// escrow, every replica's root compared, the final checks.
    pub invariant_checks: u64,
    /// The first violated invariant, if any.
    pub violation: Option<Violation>,
    /// The steps (all of them with `full_trace`, else the last [`TRACE_TAIL`]).
    pub trace: Vec<String>,
    /// FNV-1a over every step's text: equal for equal runs.
    pub trace_hash: u64,
}

impl SimReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

/// Runs one seed.
pub fn run(config: &SimConfig) -> SimReport {
    let mut sim = Sim::new(config);
    sim.run();
    sim.report
}

// ---------------------------------------------------------------------------------
// Randomness: SplitMix64 (the simulator's only source of choice).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn per_mille(&mut self, p: u32) -> bool {
        self.below(1000) < u64::from(p)
    }
}

// ---------------------------------------------------------------------------------
// The replicated log and the replicas.

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Master(Box<Command>),
    /// The gateway's request: acknowledged once this entry is committed.
    Submit(u32),
    /// The request's final status.
    Finish(u32, Final),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Final {
    Completed,
    Rejected,
    TimedOut,
    Refused,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Requests {
    /// Request → final status (None while running).
    status: BTreeMap<u32, Option<Final>>,
}

impl Requests {
    fn apply(&mut self, e: &Entry) -> bool {
        match e {
            Entry::Submit(r) => {
                if self.status.contains_key(r) {
                    return false;
                }
                self.status.insert(*r, None);
                true
            }
            Entry::Finish(r, f) => match self.status.get_mut(r) {
                Some(s @ None) => {
                    *s = Some(*f);
                    true
                }
                _ => false,
            },
            Entry::Master(_) => false,
        }
    }
}

#[derive(Clone)]
struct Replica {
    up: bool,
    master: MasterState,
    requests: Requests,
    applied: usize,
    snapshot: Option<(usize, Vec<u8>, Requests)>,
}

impl Replica {
    fn new() -> Self {
        Replica {
            up: true,
            master: MasterState::new(),
            requests: Requests::default(),
            applied: 0,
            snapshot: None,
        }
    }
}

// ---------------------------------------------------------------------------------
// The Vaults.

#[derive(Clone, Debug, PartialEq, Eq)]
enum VaultOp {
    Reserve(TaskId),
    Execute(TaskId),
    Release(TaskId),
    Replenish(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum VaultReply {
    Reserved(TaskId, u64),
    Executed(TaskId, SliceState),
    Released(TaskId),
    Replenished(u64),
    Refused(TaskId),
}

struct Vault {
    accounts: Vec<BudgetAccount>,
    released: BTreeSet<TaskId>,
}

impl Vault {
    fn handle(&mut self, op: &VaultOp, fail: bool, forget_released: bool) -> VaultReply {
        match op {
            VaultOp::Reserve(t) => {
                if self.released.contains(t) {
                    return VaultReply::Refused(t.clone());
                }
                let mut n = 0;
                for a in &mut self.accounts {
                    let op = BudgetOp::Reserve {
                        task: t.clone(),
                        amount: Epsilon::from_micro(ESTIMATE_MICRO),
                    };
                    if a.apply(&op).is_ok() && a.reservation_of(t).is_some() {
                        n += 1;
                    }
                }
                VaultReply::Reserved(t.clone(), n)
            }
            VaultOp::Execute(t) => {
                if self.released.contains(t) {
                    return VaultReply::Refused(t.clone());
                }
                let op = if fail {
                    BudgetOp::CommitAtEstimate { task: t.clone() }
                } else {
                    BudgetOp::Commit {
                        task: t.clone(),
                        actual: Epsilon::from_micro(ACTUAL_MICRO),
                    }
                };
                let mut failed = fail;
                for a in &mut self.accounts {
                    if a.reservation_of(t).is_some() {
                        let _ = a.apply(&op);
                    } else if let Some(done) = a.finished_of(t) {
                        // A duplicate execution: report what the first one did.
                        failed = done == Epsilon::from_micro(ESTIMATE_MICRO);
                    }
                }
                VaultReply::Executed(
                    t.clone(),
                    if failed {
                        SliceState::Failed
                    } else {
                        SliceState::Verified
                    },
                )
            }
            VaultOp::Release(t) => {
                for a in &mut self.accounts {
                    if a.reservation_of(t).is_some() {
                        let _ = a.apply(&BudgetOp::Release { task: t.clone() });
                    }
                }
                if !forget_released {
                    self.released.insert(t.clone());
                }
                VaultReply::Released(t.clone())
            }
            VaultOp::Replenish(epoch) => {
                for a in &mut self.accounts {
                    let op = BudgetOp::Replenish {
                        epoch: EpochId(*epoch),
                        amount: Epsilon::from_micro(CAPACITY_MICRO),
                    };
                    match a.apply(&op) {
                        Ok(_) | Err(BudgetError::NotEpochBoundary { .. }) => {}
                        Err(_) => {}
                    }
                }
                VaultReply::Replenished(*epoch)
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Message {
    deliver_at: u64,
    /// Leader term that sent it (replies to an older term are dropped).
    term: u64,
    vault: usize,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    Request(VaultOp),
    Reply(VaultReply),
}

// ---------------------------------------------------------------------------------
// The leader's per-request driver.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The client's request is not acknowledged yet.
    Submit,
    /// Reservations asked; replies by Vault.
    Reserve(BTreeMap<usize, u64>),
    Admit,
    Advance(TaskEvent),
    Execute(BTreeMap<usize, SliceState>),
    RecordSlices,
    Aggregate,
    Settle(SettlementState),
    OpenWindow,
    CloseWindow,
    Pay,
    Deliver,
    /// Release every Vault's reservations, then end the attempt.
    Release {
        acks: BTreeSet<usize>,
        then: Box<Stage>,
    },
    /// End the attempt: `reject` through the lifecycle (if it allows), charge the base
    /// fee when rejected, refund the rest; then retry or finish.
    EndAttempt {
        event: Option<TaskEvent>,
        outcome: Final,
    },
    Finish(Final),
    Done,
}

#[derive(Clone, Debug)]
struct Driver {
    request: u32,
    attempt: u32,
    stage: Stage,
    /// Ticks of the last send (for resends).
    sent_at: u64,
    /// Vault requests outstanding.
    outstanding: BTreeSet<usize>,
    /// Whether the escrow was locked for this attempt.
    locked: bool,
}

// The identifiers below are built from fixed ASCII patterns that every id validator
// accepts, so `expect` cannot fire.
#[allow(clippy::expect_used)]
fn task_id(request: u32, attempt: u32) -> TaskId {
    TaskId::new(format!("r{request}-a{attempt}")).expect("valid task id")
}

#[allow(clippy::expect_used)]
fn vault_id(v: usize) -> VaultId {
    VaultId::new(format!("vault-{v}")).expect("valid vault id")
}

#[allow(clippy::expect_used)]
fn caller(request: u32) -> ActorId {
    ActorId::new(format!("advertiser:{}", request % 4)).expect("valid actor id")
}

#[allow(clippy::expect_used)]
fn account(name: &str) -> AccountId {
    AccountId::new(name).expect("valid account id")
}

#[allow(clippy::expect_used)]
fn escrow_id(t: &TaskId) -> EscrowId {
    EscrowId::new(format!("escrow:{t}")).expect("valid escrow id")
}

#[allow(clippy::expect_used)]
fn payout_id(kind: &str, t: &TaskId) -> PayoutId {
    PayoutId::new(format!("{kind}:{t}")).expect("valid payout id")
}

#[allow(clippy::expect_used)]
fn genesis_ledger() -> MemoryLedger {
    let genesis = Genesis {
        config: LedgerConfig {
            unbonding_period_epochs: 1,
            min_stake_master: 1,
            min_stake_enterprise: 1,
            min_stake_producer: 1,
        },
        allocations: (0..4)
            .map(|i| (account(&format!("advertiser:{i}")), u64::MAX / 8))
            .collect(),
    };
    MemoryLedger::new(&genesis).expect("valid genesis")
}

// ---------------------------------------------------------------------------------
// The simulation.

struct Sim {
    config: SimConfig,
    rng: Rng,
    step: u64,
    now: u64,
    skew: Vec<i64>,
    log: Vec<Entry>,
    replicas: Vec<Replica>,
    leader: usize,
    term: u64,
    vaults: Vec<Vault>,
    net: Vec<Message>,
    ledger: MemoryLedger,
    drivers: BTreeMap<u32, Driver>,
    /// Requests the client has not sent yet.
    next_request: u32,
    /// Attempts whose end was fully applied (release acked, escrow settled).
    ended: BTreeSet<TaskId>,
    /// Epoch replenishments acknowledged by each Vault.
    replenished: Vec<u64>,
    /// What each attempt's slices ended as, once every Vault answered.
    executed: BTreeMap<TaskId, BTreeMap<usize, SliceState>>,
    report: SimReport,
    trace: VecDeque<String>,
}

enum Proposal {
    Committed(bool),
    Lost,
}

impl Sim {
    fn new(config: &SimConfig) -> Self {
        let mut rng = Rng(config.seed ^ 0x5EED_5EED_5EED_5EED);
        let skew = (0..MASTERS)
            .map(|_| {
                let span = config
                    .faults
                    .max_skew_ms
                    .saturating_mul(2)
                    .saturating_add(1);
                rng.below(span) as i64 - config.faults.max_skew_ms as i64
            })
            .collect();
        let ledger = genesis_ledger();
        Sim {
            config: config.clone(),
            rng,
            step: 0,
            now: 1_000_000,
            skew,
            log: Vec::new(),
            replicas: (0..MASTERS).map(|_| Replica::new()).collect(),
            leader: 0,
            term: 1,
            vaults: (0..VAULTS)
                .map(|_| Vault {
                    accounts: vec![
                        BudgetAccount::new(
                            Epsilon::from_micro(CAPACITY_MICRO),
                            EpochId(0)
                        );
                        SUBJECTS
                    ],
                    released: BTreeSet::new(),
                })
                .collect(),
            net: Vec::new(),
            ledger,
            drivers: BTreeMap::new(),
            next_request: 0,
            ended: BTreeSet::new(),
            replenished: vec![0; VAULTS],
            executed: BTreeMap::new(),
            report: SimReport {
                seed: config.seed,
                tasks: config.tasks,
                trace_hash: 0xcbf2_9ce4_8422_2325,
                ..SimReport::default()
            },
            trace: VecDeque::new(),
        }
    }

    fn log_step(&mut self, text: String) {
        let line = format!("#{} t={}s {}", self.step, self.now / 1000, text);
        for b in line.as_bytes() {
            self.report.trace_hash ^= u64::from(*b);
            self.report.trace_hash = self.report.trace_hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.trace.push_back(line);
        if !self.config.full_trace && self.trace.len() > TRACE_TAIL {
            self.trace.pop_front();
        }
    }

    fn violate(&mut self, invariant: Invariant, detail: String) {
        if self.report.violation.is_none() {
            self.log_step(format!("VIOLATION {invariant}: {detail}"));
            self.report.violation = Some(Violation {
                step: self.step,
                invariant,
                detail,
            });
        }
    }

    fn leader_now(&self) -> u64 {
        self.now.saturating_add_signed(self.skew[self.leader])
    }

    fn run(&mut self) {
        let max_steps = u64::from(self.config.tasks) * 400 + 2_000;
        while self.report.violation.is_none() {
            self.step += 1;
            self.now += TICK_MS;
            if self.step > max_steps {
                let open: Vec<u32> = self.drivers.keys().copied().take(5).collect();
                self.violate(
                    Invariant::Liveness,
                    format!("not done after {max_steps} steps; open requests {open:?}"),
                );
                break;
            }
            self.tick();
            self.check_step();
            if self.step.is_multiple_of(CHECKPOINT_STEPS) {
                self.checkpoint();
            }
            if self.next_request >= self.config.tasks && self.drivers.is_empty() {
                break;
            }
        }
        if self.report.violation.is_none() {
            self.finish_checks();
        }
        self.report.steps = self.step;
        self.report.log_entries = self.log.len() as u64;
        self.report.trace = self.trace.iter().cloned().collect();
    }

    fn tick(&mut self) {
        // Faults: a leader crash.
        if self.rng.per_mille(self.config.faults.crash_per_mille) {
            self.crash_leader();
        }
        // Restart a crashed replica now and then.
        let down: Vec<usize> = (0..MASTERS).filter(|m| !self.replicas[*m].up).collect();
        if let Some(m) = down.first() {
            if self.rng.per_mille(100) {
                self.restart(*m);
            }
        }
        // Followers apply some of the log; each replica snapshots now and then.
        for m in 0..MASTERS {
            if m != self.leader && self.replicas[m].up {
                let n = self.rng.below(8) as usize;
                self.catch_up(m, Some(n));
            }
            if self.replicas[m].up && self.rng.per_mille(20) {
                self.take_snapshot(m);
            }
        }
        // The client submits new requests (and sometimes resubmits one).
        if self.next_request < self.config.tasks && self.rng.per_mille(150) {
            let r = self.next_request;
            self.next_request += 1;
            self.drivers.insert(
                r,
                Driver {
                    request: r,
                    attempt: 1,
                    stage: Stage::Submit,
                    sent_at: 0,
                    outstanding: BTreeSet::new(),
                    locked: false,
                },
            );
        }
        self.maybe_close_epoch();
        self.deliver_messages();
        // The leader moves every request one step.
        let ids: Vec<u32> = self.drivers.keys().copied().collect();
        for r in ids {
            if self.report.violation.is_some() {
                return;
            }
            self.drive(r);
        }
        self.drivers.retain(|_, d| d.stage != Stage::Done);
    }

    // ----- log and replicas ------------------------------------------------------

    /// Applies the next log entry to replica `m`.
    fn apply_next(&mut self, m: usize) {
        let idx = self.replicas[m].applied;
        let Some(entry) = self.log.get(idx).cloned() else {
            return;
        };
        let check = m == self.leader;
        let r = &mut self.replicas[m];
        r.applied += 1;
        match entry {
            Entry::Master(cmd) => {
                // What a refused command could have touched: its task's record, the
                // audit log, the command counter and the governance state. (The model
                // check compares whole states; a full clone per command here would
                // double the cost of a run.)
                let before = check.then(|| Touched::of(&r.master, &cmd));
                match r.master.apply(&cmd) {
                    Ok(_) => {
                        if let (true, Command::RecordDelivery { task_id, .. }) =
                            (check, cmd.as_ref())
                        {
                            self.report.invariant_checks += 1;
                            let n = self.replicas[m]
                                .master
                                .audit_log()
                                .iter()
                                .filter(|e| &e.task_id == task_id && e.kind == "result_delivered")
                                .count();
                            if n > 1 {
                                let detail = format!("{task_id} delivered {n} times");
                                self.violate(Invariant::SingleDelivery, detail);
                            }
                        }
                    }
                    Err(e) => {
                        if check {
                            self.report.refused_commands += 1;
                            self.report.invariant_checks += 1;
                        }
                        if before.is_some_and(|b| b != Touched::of(&self.replicas[m].master, &cmd))
                        {
                            self.violate(
                                Invariant::RefusedChangesNothing,
                                format!("refused {cmd:?} ({e}) changed the state"),
                            );
                        }
                    }
                }
            }
            other => {
                r.requests.apply(&other);
            }
        }
    }

    fn catch_up(&mut self, m: usize, limit: Option<usize>) {
        let mut n = 0;
        while self.replicas[m].applied < self.log.len() && limit.is_none_or(|l| n < l) {
            self.apply_next(m);
            n += 1;
        }
    }

    fn take_snapshot(&mut self, m: usize) {
        let r = &mut self.replicas[m];
        if let Ok(bytes) = r.master.snapshot() {
            r.snapshot = Some((r.applied, bytes, r.requests.clone()));
        }
    }

    fn crash_leader(&mut self) {
        let old = self.leader;
        self.report.crashes += 1;
        self.replicas[old].up = false;
        // A new leader: the next live replica (one of three is down at most).
        let Some(new) = (1..MASTERS)
            .map(|i| (old + i) % MASTERS)
            .find(|m| self.replicas[*m].up)
        else {
            self.replicas[old].up = true;
            return;
        };
        self.leader = new;
        self.term += 1;
        self.log_step(format!(
            "CRASH leader m{old}; m{new} leads (term {}, skew {} ms)",
            self.term, self.skew[new]
        ));
        // Read barrier: the new leader applies every committed entry first.
        self.catch_up(new, None);
        // Its volatile state starts empty: every running attempt is taken over.
        let ids: Vec<u32> = self.drivers.keys().copied().collect();
        for r in ids {
            let Some(attempt) = self.drivers.get(&r).map(|d| d.attempt) else {
                continue;
            };
            let submitted = self.replicas[new].requests.status.get(&r).copied();
            let stage = match submitted {
                None => Stage::Submit,
                Some(Some(_)) => Stage::Done,
                Some(None) => self.takeover_stage(r, &task_id(r, attempt)),
            };
            self.set_stage(r, stage);
        }
    }

    fn takeover_stage(&mut self, r: u32, t: &TaskId) -> Stage {
        let m = &self.replicas[self.leader].master;
        let escrow = self.ledger.escrow(&escrow_id(t));
        let paid = escrow.as_ref().is_some_and(|e| e.payout_id.is_some());
        let staged = m
            .task(t)
            .filter(|rec| {
                rec.aggregate.is_some()
                    && matches!(
                        rec.state,
                        TaskState::AwaitingSettlement | TaskState::Completed
                    )
            })
            .map(|_| 5);
        let decision = decide(m, t, paid, staged);
        self.log_step(format!("takeover r{r} {t}: {decision:?}"));
        match decision {
            Ok(Takeover::Abort { reject }) => {
                self.report.aborted_attempts += 1;
                let end = Stage::EndAttempt {
                    event: reject.then_some(TaskEvent::Reject),
                    outcome: Final::Rejected,
                };
                if self.config.bug == Some(PlantedBug::AbortKeepsReservation) {
                    end
                } else {
                    Stage::Release {
                        acks: BTreeSet::new(),
                        then: Box::new(end),
                    }
                }
            }
            Ok(Takeover::Complete(c)) => {
                if c.finalize_settlement.is_some() {
                    Stage::Settle(SettlementState::Finalized)
                } else if c.advance_to_completed {
                    Stage::Advance(TaskEvent::SettlementFinalized)
                } else {
                    Stage::Deliver
                }
            }
            Ok(Takeover::CompletedWithoutResult) => Stage::Deliver,
            Err(e) => {
                self.violate(Invariant::EscrowBalanced, format!("takeover: {e}"));
                Stage::Done
            }
        }
    }

    fn restart(&mut self, m: usize) {
        let r = &mut self.replicas[m];
        r.up = true;
        match r.snapshot.clone() {
            Some((idx, bytes, requests)) => match MasterState::restore(&bytes) {
                Ok(state) => {
                    r.master = state;
                    r.requests = requests;
                    r.applied = idx;
                }
                Err(_) => *r = Replica::new(),
            },
            None => {
                r.master = MasterState::new();
                r.requests = Requests::default();
                r.applied = 0;
            }
        }
        let from = self.replicas[m].applied;
        self.log_step(format!(
            "RESTART m{m} from snapshot at {from}, replaying the log"
        ));
        self.catch_up(m, None);
        self.compare_roots("after restart");
    }

    /// Proposes an entry: committed (and applied by the leader) unless lost.
    fn propose(&mut self, entry: Entry) -> Proposal {
        let f = self.config.faults.clone();
        if self.rng.per_mille(f.loss_per_mille) {
            self.report.lost += 1;
            self.log_step(format!("proposal lost: {}", short(&entry)));
            return Proposal::Lost;
        }
        let leader = self.leader;
        self.catch_up(leader, None);
        let before = self.replicas[leader].master.applied_commands();
        let request_of = |e: &Entry| match e {
            Entry::Submit(r) | Entry::Finish(r, _) => Some(*r),
            Entry::Master(_) => None,
        };
        let status_before =
            request_of(&entry).map(|r| self.replicas[leader].requests.status.get(&r).copied());
        self.log.push(entry.clone());
        if self.rng.per_mille(f.dup_log_per_mille) {
            self.report.duplicated += 1;
            self.log_step(format!("log duplicate: {}", short(&entry)));
            self.log.push(entry.clone());
        }
        self.catch_up(leader, None);
        let accepted = match &entry {
            Entry::Master(_) => self.replicas[leader].master.applied_commands() > before,
            _ => {
                request_of(&entry).map(|r| self.replicas[leader].requests.status.get(&r).copied())
                    != status_before
            }
        };
        self.log_step(format!(
            "commit {}{}",
            short(&entry),
            if accepted { "" } else { " (refused)" }
        ));
        if self.rng.per_mille(f.lost_ack_per_mille) {
            self.log_step("commit acknowledgement lost".into());
            return Proposal::Lost;
        }
        Proposal::Committed(accepted)
    }

    // ----- network ---------------------------------------------------------------

    fn send(&mut self, vault: usize, body: Body) {
        let f = self.config.faults.clone();
        if self.rng.per_mille(f.loss_per_mille) {
            self.report.lost += 1;
            self.log_step(format!("lost on the way to vault-{vault}: {body:?}"));
            return;
        }
        let copies = if self.rng.per_mille(f.dup_per_mille) {
            self.report.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = 1 + self.rng.below(2);
            if self.rng.per_mille(f.reorder_per_mille) {
                self.report.reordered += 1;
                delay += self.rng.below(12);
            }
            self.net.push(Message {
                deliver_at: self.step + delay,
                term: self.term,
                vault,
                body: body.clone(),
            });
        }
    }

    fn deliver_messages(&mut self) {
        let (due, rest): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| m.deliver_at <= self.step);
        self.net = rest;
        for msg in due {
            match msg.body {
                Body::Request(op) => {
                    let fail = matches!(op, VaultOp::Execute(_))
                        && self.rng.per_mille(self.config.faults.slice_fail_per_mille);
                    let forget = self.config.bug == Some(PlantedBug::VaultForgetsReleased);
                    let reply = self.vaults[msg.vault].handle(&op, fail, forget);
                    self.log_step(format!("vault-{} {op:?} -> {reply:?}", msg.vault));
                    if let VaultOp::Reserve(t) = &op {
                        if self.ended.contains(t) {
                            let t = t.clone();
                            self.check_released(&t);
                        }
                    }
                    let term = msg.term;
                    let f = self.config.faults.clone();
                    if self.rng.per_mille(f.loss_per_mille) {
                        self.report.lost += 1;
                        continue;
                    }
                    self.net.push(Message {
                        deliver_at: self.step + 1 + self.rng.below(2),
                        term,
                        vault: msg.vault,
                        body: Body::Reply(reply),
                    });
                }
                Body::Reply(reply) => {
                    if msg.term == self.term {
                        self.on_reply(msg.vault, reply);
                    }
                }
            }
        }
    }

    fn on_reply(&mut self, vault: usize, reply: VaultReply) {
        if let VaultReply::Replenished(e) = reply {
            self.replenished[vault] = self.replenished[vault].max(e);
            return;
        }
        let t = match &reply {
            VaultReply::Reserved(t, _)
            | VaultReply::Executed(t, _)
            | VaultReply::Released(t)
            | VaultReply::Refused(t) => t.clone(),
            VaultReply::Replenished(_) => return,
        };
        let Some(d) = self
            .drivers
            .values_mut()
            .find(|d| task_id(d.request, d.attempt) == t)
        else {
            return;
        };
        if !d.outstanding.remove(&vault) {
            return;
        }
        match (&mut d.stage, reply) {
            (Stage::Reserve(got), VaultReply::Reserved(_, n)) => {
                got.insert(vault, n);
            }
            (Stage::Reserve(got), VaultReply::Refused(_)) => {
                got.insert(vault, 0);
            }
            (Stage::Execute(got), VaultReply::Executed(_, s)) => {
                got.insert(vault, s);
            }
            (Stage::Execute(got), VaultReply::Refused(_)) => {
                got.insert(vault, SliceState::Failed);
            }
            (Stage::Release { acks, .. }, VaultReply::Released(_)) => {
                acks.insert(vault);
            }
            _ => {
                d.outstanding.insert(vault);
            }
        }
    }

    fn maybe_close_epoch(&mut self) {
        let leader = self.leader;
        self.catch_up(leader, None);
        let g = self.replicas[leader].master.governance();
        let due = g.epoch_opened_at_ms.saturating_add(g.epoch_length_ms);
        let now = self.leader_now();
        if now >= due {
            let cmd = Command::CloseEpoch {
                trigger: CloseTrigger::Time,
                at_ms: now,
            };
            if let Proposal::Committed(true) = self.propose(Entry::Master(Box::new(cmd))) {
                self.report.epochs += 1;
            }
        }
        // Replenish each Vault once per epoch (idempotent: a retry is refused there).
        let epoch = self.replicas[leader].master.current_epoch().0;
        if self.step.is_multiple_of(RESEND_TICKS) {
            for v in 0..VAULTS {
                if self.replenished[v] < epoch {
                    self.send(v, Body::Request(VaultOp::Replenish(epoch)));
                }
            }
        }
    }

    // ----- the driver ------------------------------------------------------------

    fn vault_round(&mut self, r: u32, op: impl Fn(&TaskId) -> VaultOp) {
        let Some(d) = self.drivers.get(&r) else {
            return;
        };
        let t = task_id(r, d.attempt);
        let pending: Vec<usize> = (0..VAULTS)
            .filter(|v| match &d.stage {
                Stage::Reserve(got) => !got.contains_key(v),
                Stage::Execute(got) => !got.contains_key(v),
                Stage::Release { acks, .. } => !acks.contains(v),
                _ => false,
            })
            .collect();
        let resend = d.outstanding.is_empty() || self.step >= d.sent_at + RESEND_TICKS;
        if !resend {
            return;
        }
        for v in &pending {
            self.send(*v, Body::Request(op(&t)));
        }
        if let Some(d) = self.drivers.get_mut(&r) {
            d.outstanding = pending.into_iter().collect();
            d.sent_at = self.step;
        }
    }

    fn task_state(&self, t: &TaskId) -> Option<TaskState> {
        self.replicas[self.leader].master.task(t).map(|r| r.state)
    }

    fn set_stage(&mut self, r: u32, stage: Stage) {
        if let Some(d) = self.drivers.get_mut(&r) {
            d.stage = stage;
            d.outstanding.clear();
            d.sent_at = 0;
        }
    }

    /// Proposes a master command; `Some(accepted)` once committed.
    fn command(&mut self, cmd: Command) -> Option<bool> {
        match self.propose(Entry::Master(Box::new(cmd))) {
            Proposal::Committed(ok) => Some(ok),
            Proposal::Lost => None,
        }
    }

    fn envelope(&self, r: u32, t: &TaskId, reserved: u64) -> Option<TaskEnvelope> {
        let m = &self.replicas[self.leader].master;
        let vaults: BTreeSet<VaultId> = (0..VAULTS).map(vault_id).collect();
        let at = self.leader_now();
        TaskEnvelope::seal(EnvelopeBody {
            task_id: t.clone(),
            task_class: TaskClass::Query,
            caller: CallerContext {
                actor_id: caller(r),
                public_key: [1; 32],
                request_hash: Digest([2; 32]),
                nonce: u64::from(r) * 16 + u64::from(self.drivers.get(&r)?.attempt),
                admitted_at_ms: at,
            },
            authorization: Authorization {
                granted_by: "sim".into(),
                vault_permits: vaults.clone(),
            },
            consent_refs: vec![],
            semantic_version: SemanticVersion(1),
            policy_version: m.active_policy_version(),
            epoch_id: m.current_epoch(),
            budget_reservation: BudgetReservation {
                usage_scope: UsageScope::Marketing,
                epsilon_per_subject: Epsilon::from_micro(ESTIMATE_MICRO),
                subjects_reserved: reserved,
            },
            coordination_envelope: CoordinationEnvelope {
                participating_vault_ids: vaults,
                minimum_vault_quorum: QUORUM,
                aggregation_method: AggregationMethod::UnionWithCardinalityCap,
            },
            budget_lock_ref: Some(BudgetLockRef {
                ledger: "embedded".into(),
                escrow_id: escrow_id(t).to_string(),
                amount_base_units: ESCROW,
            }),
            iteration_policy: None,
            resolved_plan_hash: Digest([3; 32]),
            constraints: BTreeMap::new(),
            deadline_ms: at + DEADLINE_MS,
        })
        .ok()
    }

    fn settlement_record(state: SettlementState) -> SettlementRecord {
        SettlementRecord {
            state,
            epoch_id: EpochId(0),
            fee_total: FEE,
            fee_shares: [("treasury".to_string(), 100), ("vaults".to_string(), 600)]
                .into_iter()
                .collect(),
            refund: ESCROW - FEE,
        }
    }

    fn drive(&mut self, r: u32) {
        let Some(d) = self.drivers.get(&r).cloned() else {
            return;
        };
        let t = task_id(r, d.attempt);
        // A deadline passed (by the leader's clock) before execution finished.
        if let Some(st) = self.task_state(&t) {
            let deadline = self.replicas[self.leader]
                .master
                .task(&t)
                .map_or(u64::MAX, |rec| rec.envelope.body().deadline_ms);
            let running = matches!(
                d.stage,
                Stage::Advance(TaskEvent::BeginResolution | TaskEvent::Dispatch)
                    | Stage::Execute(_)
                    | Stage::RecordSlices
                    | Stage::Aggregate
            );
            if running
                && matches!(
                    st,
                    TaskState::Accepted | TaskState::Resolving | TaskState::Dispatched
                )
                && self.leader_now() > deadline
            {
                self.log_step(format!("r{r} {t}: deadline passed"));
                self.set_stage(
                    r,
                    Stage::Release {
                        acks: BTreeSet::new(),
                        then: Box::new(Stage::EndAttempt {
                            event: Some(TaskEvent::Timeout),
                            outcome: Final::TimedOut,
                        }),
                    },
                );
                return;
            }
        }
        match d.stage {
            Stage::Submit => {
                if let Proposal::Committed(_) = self.propose(Entry::Submit(r)) {
                    // Acknowledged; a duplicate from the client is refused.
                    if self.rng.per_mille(self.config.faults.dup_per_mille) {
                        self.report.duplicated += 1;
                        let _ = self.propose(Entry::Submit(r));
                    }
                    self.set_stage(r, Stage::Reserve(BTreeMap::new()));
                } else if self.replicas[self.leader].requests.status.contains_key(&r) {
                    self.set_stage(r, Stage::Reserve(BTreeMap::new()));
                }
            }
            Stage::Reserve(got) => {
                if got.len() < VAULTS {
                    self.vault_round(r, |t| VaultOp::Reserve(t.clone()));
                    return;
                }
                let total: u64 = got.values().sum();
                let enough = got.values().filter(|n| **n > 0).count() >= QUORUM as usize
                    && total >= MIN_SUBJECTS;
                if !enough {
                    self.log_step(format!("r{r} {t}: {total} subjects reservable: refused"));
                    self.set_stage(
                        r,
                        Stage::Release {
                            acks: BTreeSet::new(),
                            then: Box::new(Stage::Finish(Final::Refused)),
                        },
                    );
                    return;
                }
                // Lock the escrow (idempotent by escrow id), then admit.
                let lock = self
                    .ledger
                    .lock(&escrow_id(&t), &account(caller(r).as_str()), ESCROW);
                if let Err(e) = lock {
                    self.violate(Invariant::EscrowBalanced, format!("lock {t}: {e}"));
                    return;
                }
                if let Some(d) = self.drivers.get_mut(&r) {
                    d.locked = true;
                }
                self.set_stage(r, Stage::Admit);
            }
            Stage::Admit => {
                if self.task_state(&t).is_some() {
                    self.set_stage(r, Stage::Advance(TaskEvent::BeginResolution));
                    return;
                }
                let Some(env) = self.envelope(r, &t, MIN_SUBJECTS) else {
                    self.violate(Invariant::RefusedChangesNothing, "envelope refused".into());
                    return;
                };
                match self.command(Command::AdmitTask {
                    envelope: Box::new(env),
                }) {
                    Some(true) => self.set_stage(r, Stage::Advance(TaskEvent::BeginResolution)),
                    Some(false) => {
                        // E.g. the epoch closed meanwhile: end this attempt, try again.
                        self.report.aborted_attempts += 1;
                        self.set_stage(
                            r,
                            Stage::Release {
                                acks: BTreeSet::new(),
                                then: Box::new(Stage::EndAttempt {
                                    event: None,
                                    outcome: Final::Rejected,
                                }),
                            },
                        );
                    }
                    None => {}
                }
            }
            Stage::Advance(event) => {
                let next = self.after_advance(event);
                let rec = self.replicas[self.leader].master.task(&t);
                // Already applied (its acknowledgement was lost)?
                let done = rec.is_some_and(|rec| {
                    rec.history
                        .iter()
                        .any(|s| Some(*s) == advance_target(event))
                });
                let legal = rec.is_some_and(|rec| rec.state.next(event).is_ok());
                if done {
                    self.set_stage(r, next);
                } else if !legal {
                    self.abort(r, &t, "the lifecycle refuses the next event");
                } else if self.command(advance_cmd(&t, event)) == Some(true) {
                    self.set_stage(r, next);
                }
            }
            Stage::Execute(got) => {
                if got.len() < VAULTS {
                    self.vault_round(r, |t| VaultOp::Execute(t.clone()));
                    return;
                }
                self.executed.insert(t.clone(), got);
                self.set_stage(r, Stage::RecordSlices);
            }
            Stage::RecordSlices => {
                let rec = self.replicas[self.leader].master.task(&t).cloned();
                let Some(rec) = rec else { return };
                // Which Vault's slice is not recorded yet?
                let got = self.executed.get(&t).cloned().unwrap_or_default();
                if let Some((v, state)) = got
                    .iter()
                    .find(|(v, _)| !rec.slices.contains_key(&vault_id(**v)))
                {
                    let cmd = Command::RecordSlice {
                        task_id: t.clone(),
                        vault_id: vault_id(*v),
                        record: SliceRecord {
                            state: *state,
                            commitment: Digest([9; 32]),
                            subjects_evaluated: SUBJECTS as u64,
                            epsilon_committed_micro: ACTUAL_MICRO,
                            enclave_kind: Some(symphony_core::EnclaveKind::Software),
                        },
                    };
                    let _ = self.command(cmd);
                    return;
                }
                let ok = rec
                    .slices
                    .values()
                    .filter(|s| s.state == SliceState::Verified)
                    .count();
                if ok >= QUORUM as usize {
                    self.set_stage(r, Stage::Aggregate);
                } else {
                    self.log_step(format!("r{r} {t}: {ok} slices verified, below quorum"));
                    self.abort(r, &t, "quorum");
                }
            }
            Stage::Aggregate => {
                let has = self.replicas[self.leader]
                    .master
                    .task(&t)
                    .is_some_and(|rec| rec.aggregate.is_some());
                if has {
                    self.set_stage(r, Stage::Advance(TaskEvent::ExecutionFinished));
                    return;
                }
                let cmd = Command::RecordAggregate {
                    task_id: t.clone(),
                    record: AggregateRecord {
                        commitment: Digest([4; 32]),
                        eligible_count: 6,
                        delivered_count: 5,
                        result_hash: Digest([5; 32]),
                        enclave_kind: symphony_core::EnclaveKind::Software,
                    },
                };
                if self.command(cmd) == Some(false) {
                    self.abort(r, &t, "aggregate refused");
                }
            }
            Stage::Settle(state) => {
                let cur = self.replicas[self.leader]
                    .master
                    .task(&t)
                    .and_then(|rec| rec.settlement.as_ref().map(|s| s.state));
                if reached(cur, state) {
                    let next = match state {
                        SettlementState::CandidateReady => Stage::OpenWindow,
                        SettlementState::Finalizing => Stage::Pay,
                        SettlementState::Finalized => {
                            Stage::Advance(TaskEvent::SettlementFinalized)
                        }
                        s => s.advance().map_or(Stage::Pay, Stage::Settle),
                    };
                    self.set_stage(r, next);
                    return;
                }
                let cmd = Command::RecordSettlement {
                    task_id: t.clone(),
                    record: Self::settlement_record(state),
                };
                if self.command(cmd) == Some(false) && state != SettlementState::Finalizing {
                    self.abort(r, &t, "settlement refused");
                }
            }
            Stage::OpenWindow => {
                let opened = self.replicas[self.leader]
                    .master
                    .challenge_window(&t)
                    .is_some();
                if opened {
                    self.set_stage(r, Stage::CloseWindow);
                    return;
                }
                let cmd = Command::OpenChallengeWindow {
                    task_id: t.clone(),
                    closes_at_ms: self.leader_now() + WINDOW_MS,
                };
                let _ = self.command(cmd);
            }
            Stage::CloseWindow => {
                let w = self.replicas[self.leader].master.challenge_window(&t);
                if w.is_some_and(|w| w.closed) {
                    self.set_stage(r, Stage::Settle(SettlementState::Finalizing));
                    return;
                }
                if w.is_some_and(|w| self.leader_now() >= w.closes_at_ms) {
                    let cmd = Command::CloseChallengeWindow {
                        task_id: t.clone(),
                        at_ms: self.leader_now(),
                    };
                    let _ = self.command(cmd);
                }
            }
            Stage::Pay => {
                // After the `finalizing` certificate: the ledger pays the escrow once.
                let set = PayoutInstructionSet {
                    payout_id: payout_id("pay", &t),
                    epoch_id: 0,
                    settlement_ref: t.to_string(),
                    instructions: vec![
                        PayoutInstruction {
                            recipient: AccountId::treasury(),
                            amount: 100,
                            kind: PayoutKind::Treasury,
                        },
                        PayoutInstruction {
                            recipient: account("operator:vaults"),
                            amount: FEE - 100,
                            kind: PayoutKind::VaultOperator,
                        },
                    ],
                };
                if let Err(e) = self.ledger.payout(&escrow_id(&t), &set) {
                    self.violate(Invariant::EscrowBalanced, format!("payout {t}: {e}"));
                    return;
                }
                // A duplicated payout message is a no-op at the ledger.
                if self.rng.per_mille(self.config.faults.dup_per_mille) {
                    if let Err(e) = self.ledger.payout(&escrow_id(&t), &set) {
                        self.violate(Invariant::EscrowBalanced, format!("retried payout: {e}"));
                    }
                }
                self.set_stage(r, Stage::Settle(SettlementState::Finalized));
            }
            Stage::Deliver => {
                let m = &self.replicas[self.leader].master;
                let delivered = m
                    .audit_log()
                    .iter()
                    .any(|e| e.task_id == t && e.kind == "result_delivered");
                let completed = self.task_state(&t) == Some(TaskState::Completed);
                if !completed {
                    self.abort(r, &t, "not completed at delivery");
                    return;
                }
                if delivered {
                    // Refund what is left, release leftovers, finish.
                    self.set_stage(
                        r,
                        Stage::Release {
                            acks: BTreeSet::new(),
                            then: Box::new(Stage::EndAttempt {
                                event: None,
                                outcome: Final::Completed,
                            }),
                        },
                    );
                    return;
                }
                let cmd = Command::RecordDelivery {
                    task_id: t.clone(),
                    recipient: caller(r),
                    result_hash: Digest([5; 32]),
                    count: 5,
                    at_ms: self.leader_now(),
                };
                let _ = self.command(cmd);
            }
            Stage::Release { acks, then } => {
                if acks.len() < VAULTS {
                    self.vault_round(r, |t| VaultOp::Release(t.clone()));
                    return;
                }
                self.set_stage(r, *then);
            }
            Stage::EndAttempt { event, outcome } => {
                if let Some(ev) = event {
                    let st = self.task_state(&t);
                    if st.is_some_and(|s| s.next(ev).is_ok())
                        && self.command(advance_cmd(&t, ev)).is_none()
                    {
                        return; // lost: retry
                    }
                }
                let rejected = matches!(
                    self.task_state(&t),
                    Some(TaskState::Rejected | TaskState::TimedOut)
                );
                if let Err(e) = self.settle_escrow(&t, rejected) {
                    self.violate(Invariant::EscrowBalanced, e);
                    return;
                }
                self.end_attempt(&t);
                let attempt = self.drivers.get(&r).map_or(0, |d| d.attempt);
                match outcome {
                    Final::Completed | Final::TimedOut | Final::Refused => {
                        self.set_stage(r, Stage::Finish(outcome))
                    }
                    Final::Rejected if attempt < MAX_ATTEMPTS => {
                        self.log_step(format!("r{r}: attempt {attempt} ended; retrying"));
                        if let Some(d) = self.drivers.get_mut(&r) {
                            d.attempt += 1;
                            d.locked = false;
                        }
                        self.set_stage(r, Stage::Reserve(BTreeMap::new()));
                    }
                    Final::Rejected => self.set_stage(r, Stage::Finish(Final::Rejected)),
                }
            }
            Stage::Finish(outcome) => {
                if outcome == Final::Refused {
                    self.end_attempt(&t);
                }
                let status = self.replicas[self.leader].requests.status.get(&r).copied();
                if let Some(Some(_)) = status {
                    self.set_stage(r, Stage::Done);
                    return;
                }
                if let Proposal::Committed(true) = self.propose(Entry::Finish(r, outcome)) {
                    self.set_stage(r, Stage::Done);
                }
            }
            Stage::Done => {}
        }
    }

    fn after_advance(&self, event: TaskEvent) -> Stage {
        match event {
            TaskEvent::BeginResolution => Stage::Advance(TaskEvent::Dispatch),
            TaskEvent::Dispatch => Stage::Execute(BTreeMap::new()),
            TaskEvent::ExecutionFinished => Stage::Advance(TaskEvent::VerificationAccepted),
            TaskEvent::VerificationAccepted => Stage::Settle(SettlementState::Collecting),
            TaskEvent::SettlementFinalized => Stage::Deliver,
            _ => Stage::Done,
        }
    }

    fn abort(&mut self, r: u32, t: &TaskId, why: &str) {
        self.log_step(format!("r{r} {t}: abort ({why})"));
        self.report.aborted_attempts += 1;
        self.set_stage(
            r,
            Stage::Release {
                acks: BTreeSet::new(),
                then: Box::new(Stage::EndAttempt {
                    event: Some(TaskEvent::Reject),
                    outcome: Final::Rejected,
                }),
            },
        );
    }

    /// Base fee when the lifecycle rejected the task, refund of the remainder.
    fn settle_escrow(&mut self, t: &TaskId, rejected: bool) -> Result<(), String> {
        let id = escrow_id(t);
        let Some(e) = self.ledger.escrow(&id) else {
            return Ok(()); // never locked
        };
        if rejected && e.payout_id.is_none() && e.remaining() >= BASE_FEE {
            let set = PayoutInstructionSet {
                payout_id: payout_id("reject", t),
                epoch_id: 0,
                settlement_ref: t.to_string(),
                instructions: vec![PayoutInstruction {
                    recipient: AccountId::treasury(),
                    amount: BASE_FEE,
                    kind: PayoutKind::Treasury,
                }],
            };
            self.ledger
                .payout(&id, &set)
                .map_err(|e| format!("base fee {t}: {e}"))?;
        }
        let remaining = self.ledger.escrow(&id).map_or(0, |e| e.remaining());
        if remaining > 0 {
            self.ledger
                .refund(&id, remaining)
                .map_err(|e| format!("refund {t}: {e}"))?;
        }
        Ok(())
    }

    /// The attempt's effects are applied: from now on no Vault may hold a reservation
    /// for it, and its escrow must balance.
    fn end_attempt(&mut self, t: &TaskId) {
        if !self.ended.insert(t.clone()) {
            return;
        }
        self.log_step(format!("{t} ended"));
        self.check_released(t);
        self.report.invariant_checks += 1;
        if let Some(e) = self.ledger.escrow(&escrow_id(t)) {
            if e.paid_out + e.refunded != e.locked {
                self.violate(
                    Invariant::EscrowBalanced,
                    format!(
                        "{t}: paid {} + refunded {} != locked {}",
                        e.paid_out, e.refunded, e.locked
                    ),
                );
            }
        }
    }

    // ----- invariants --------------------------------------------------------------

    fn check_step(&mut self) {
        self.report.invariant_checks += 1;
        for (v, vault) in self.vaults.iter().enumerate() {
            for (j, a) in vault.accounts.iter().enumerate() {
                let used = a.committed().checked_add(a.reserved());
                if used.is_none_or(|u| u > a.capacity()) {
                    let detail = format!("vault-{v} subject {j}: {a:?}");
                    self.violate(Invariant::BudgetWithinCapacity, detail);
                    return;
                }
            }
        }
    }

    /// No Vault holds a reservation of an ended attempt `t`.
    fn check_released(&mut self, t: &TaskId) {
        self.report.invariant_checks += 1;
        for (v, vault) in self.vaults.iter().enumerate() {
            for (j, a) in vault.accounts.iter().enumerate() {
                if a.reservation_of(t).is_some() {
                    let detail = format!("vault-{v} subject {j} holds {t} after it ended");
                    self.violate(Invariant::ReservationsEnded, detail);
                    return;
                }
            }
        }
    }

    fn compare_roots(&mut self, when: &str) {
        let leader = self.leader;
        self.catch_up(leader, None);
        let want = self.replicas[leader].master.state_root().ok();
        for m in 0..MASTERS {
            if m == leader || !self.replicas[m].up {
                continue;
            }
            self.catch_up(m, None);
            self.report.invariant_checks += 1;
            let got = self.replicas[m].master.state_root().ok();
            if got != want || self.replicas[m].requests != self.replicas[leader].requests {
                self.violate(
                    Invariant::ReplicasConverge,
                    format!("{when}: m{m} root {got:?} != leader m{leader} root {want:?}"),
                );
                return;
            }
        }
    }

    fn checkpoint(&mut self) {
        self.compare_roots("checkpoint");
        self.report.checkpoints += 1;
    }

    fn finish_checks(&mut self) {
        // Drain the network: late copies still reach the Vaults.
        for _ in 0..32 {
            self.step += 1;
            self.deliver_messages();
        }
        self.check_step();
        self.compare_roots("end");
        // Below: every request final, no reservation left, the ledger reconciles.
        self.report.invariant_checks += 3;
        let requests = self.replicas[self.leader].requests.clone();
        for status in requests.status.values().flatten() {
            match status {
                Final::Completed => self.report.completed += 1,
                Final::Refused => self.report.refused += 1,
                Final::Rejected | Final::TimedOut => self.report.rejected += 1,
            }
        }
        for r in 0..self.config.tasks {
            match requests.status.get(&r) {
                Some(Some(_)) => {}
                other => {
                    self.violate(
                        Invariant::NoAcknowledgedRequestLost,
                        format!("request r{r} is {other:?} at the end"),
                    );
                    return;
                }
            }
        }
        let finishes = self
            .log
            .iter()
            .filter(|e| matches!(e, Entry::Finish(..)))
            .count();
        if finishes < self.config.tasks as usize {
            self.violate(
                Invariant::NoAcknowledgedRequestLost,
                format!("{finishes} finishes for {} requests", self.config.tasks),
            );
        }
        // No reservation is left anywhere once every request is final.
        for (v, vault) in self.vaults.iter().enumerate() {
            for (j, a) in vault.accounts.iter().enumerate() {
                if a.reserved() > Epsilon::ZERO {
                    let detail = format!("vault-{v} subject {j} still reserves {:?} at the end", a);
                    self.violate(Invariant::ReservationsEnded, detail);
                    return;
                }
            }
        }
        if let Err(e) = self.ledger.reconcile() {
            self.violate(Invariant::LedgerReconciles, e.to_string());
        }
    }
}

/// The parts of the master state one command can touch.
#[derive(PartialEq)]
struct Touched {
    task: Option<symphony_master::TaskRecord>,
    audit_len: usize,
    applied: u64,
    epoch: EpochId,
    tasks_in_epoch: u64,
}

impl Touched {
    fn of(m: &MasterState, cmd: &Command) -> Self {
        let task = match cmd {
            Command::AdmitTask { envelope } => Some(&envelope.body().task_id),
            Command::Advance { task_id, .. }
            | Command::RecordSlice { task_id, .. }
            | Command::RecordAggregate { task_id, .. }
            | Command::RecordSettlement { task_id, .. }
            | Command::RecordDelivery { task_id, .. }
            | Command::OpenChallengeWindow { task_id, .. }
            | Command::CloseChallengeWindow { task_id, .. } => Some(task_id),
            _ => None,
        };
        Touched {
            task: task.and_then(|t| m.task(t).cloned()),
            audit_len: m.audit_log().len(),
            applied: m.applied_commands(),
            epoch: m.current_epoch(),
            tasks_in_epoch: m.governance().tasks_in_epoch,
        }
    }
}

fn reached(cur: Option<SettlementState>, want: SettlementState) -> bool {
    let order = |s: SettlementState| match s {
        SettlementState::Collecting => 0,
        SettlementState::VerifyingInputs => 1,
        SettlementState::CandidateReady => 2,
        SettlementState::Finalizing => 3,
        SettlementState::Finalized => 4,
    };
    cur.is_some_and(|c| order(c) >= order(want))
}

fn advance_target(event: TaskEvent) -> Option<TaskState> {
    Some(match event {
        TaskEvent::BeginResolution => TaskState::Resolving,
        TaskEvent::Dispatch => TaskState::Dispatched,
        TaskEvent::ExecutionFinished => TaskState::Verifying,
        TaskEvent::VerificationAccepted => TaskState::AwaitingSettlement,
        TaskEvent::SettlementFinalized => TaskState::Completed,
        TaskEvent::Reject => TaskState::Rejected,
        TaskEvent::Timeout => TaskState::TimedOut,
        _ => return None,
    })
}

fn advance_cmd(t: &TaskId, event: TaskEvent) -> Command {
    Command::Advance {
        task_id: t.clone(),
        event,
        reason: None,
    }
}

fn short(e: &Entry) -> String {
    match e {
        Entry::Submit(r) => format!("submit r{r}"),
        Entry::Finish(r, f) => format!("finish r{r} {f:?}"),
        Entry::Master(c) => match c.as_ref() {
            Command::AdmitTask { envelope } => format!("admit {}", envelope.body().task_id),
            Command::Advance { task_id, event, .. } => format!("{task_id} {event}"),
            Command::RecordSlice {
                task_id,
                vault_id,
                record,
            } => format!("{task_id} slice {vault_id} {}", record.state),
            Command::RecordAggregate { task_id, .. } => format!("{task_id} aggregate"),
            Command::RecordSettlement { task_id, record } => {
                format!("{task_id} settlement {}", record.state)
            }
            Command::RecordDelivery { task_id, .. } => format!("{task_id} delivered"),
            Command::OpenChallengeWindow { task_id, .. } => format!("{task_id} window open"),
            Command::CloseChallengeWindow { task_id, .. } => format!("{task_id} window closed"),
            Command::CloseEpoch { at_ms, .. } => format!("close epoch at {at_ms}"),
            other => format!("{other:?}"),
        },
    }
}
