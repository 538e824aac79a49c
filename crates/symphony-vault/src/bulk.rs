//! Bulk reservations: one record per task and scope instead of one budget
//! account write per subject.
//!
//! A `query` or `compute` task reserves the same ε on every consenting subject
//! of a Vault and, when its slice ran, commits it on those evaluated and releases
//! the rest. A training run reserves each round's ε on its subjects, all rounds
//! or none ([`Vault::reserve_bulk_all_or_none`]), and its rounds end those
//! reservations a group at a time: persons only charged here commit as the round
//! opens, trainees when it trained, drop-outs release the rounds left
//! ([`Vault::apply_bulk_groups`]; the row keeps each ended group with its ε).
//! Written per subject, that was two B-tree writes per subject per task (most
//! of a slice's cost at a million people), and a read-modify-write of every
//! trainee's account twice a round. Here the task's reservation is
//! one row — `(scope, task) → amount, the subjects, and once finished the ε
//! committed and by whom` — and every read of an account folds the rows that
//! name the subject into it (the [`Overlay`]), so an account reads exactly as if
//! each subject had been written one by one:
//!
//! - **Reservation** checks each subject against its account *with every other
//!   bulk row folded in*, in the same write transaction as the row (redb
//!   serializes writers), so bulk and per-subject reservations together never
//!   overspend.
//! - **Per-subject operations** on other tasks are checked against the folded
//!   account and written to the stored one; an operation naming a bulk task is
//!   refused ([`VaultError::BulkTask`]): a bulk task finishes with
//!   [`Vault::commit_bulk`], [`Vault::apply_bulk_groups`] or
//!   [`Vault::release_task`].
//! - **Folding for good.** Epoch replenishment first writes every ended bulk
//!   reservation into the subjects' stored accounts (replenishing does not
//!   commute with commits; it does with open reservations, which stay bulk): a
//!   finished row (or one whose every reservation ended) is deleted, a row still
//!   partly open keeps only its open subjects. A commit folds the finished rows
//!   of its scope once more than [`FOLD_FINISHED_ABOVE`] have piled up, so a
//!   read folds a bounded number of rows.

use std::borrow::Cow;
use std::collections::BTreeSet;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use symphony_core::budget::{BudgetAccount, BudgetError, BudgetOp, BudgetOutcome, Epsilon};
use symphony_core::consent::UsageScope;
use symphony_core::ids::{EpochId, SubjectId, TaskId};

use crate::error::VaultError;
use crate::ledger::{ReserveReport, BUDGET, TASK_USAGE};
use crate::store::{Vault, META};

/// (scope, task) → BCS [`BulkReservation`].
pub(crate) const BULK: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("bulk_reservations");

/// Finished bulk rows a scope may hold before a commit folds them into the
/// subjects' accounts.
pub const FOLD_FINISHED_ABOVE: usize = 4;

/// One task's reservation on many subjects of one scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BulkReservation {
    amount: Epsilon,
    /// The epoch a subject's account would have opened in had the reservation
    /// been written to it (the epoch it was made in, moved on when its scope
    /// replenishes): what an account that exists only through bulk rows reads as
    /// its last replenishment.
    opened_in: EpochId,
    /// Sorted, distinct.
    subjects: Vec<SubjectId>,
    /// Subjects whose reservation ended before the task finished as a whole
    /// ([`Vault::apply_bulk_groups`]), by the ε each group committed (zero:
    /// released); the groups are disjoint, each sorted.
    ended: Vec<(Epsilon, Vec<SubjectId>)>,
    /// Once the task finished here: the ε committed by each of the listed
    /// subjects (sorted); every other subject of `subjects` not in `ended` was
    /// released.
    finished: Option<(Epsilon, Vec<SubjectId>)>,
}

/// A row as Vaults wrote it before reservations could end one by one (no
/// `ended`). Its bytes never decode as a [`BulkReservation`]: after the
/// subjects, its `finished` tag leaves nothing for the last field.
#[derive(Deserialize)]
struct BulkReservationV1 {
    amount: Epsilon,
    opened_in: EpochId,
    subjects: Vec<SubjectId>,
    finished: Option<(Epsilon, Vec<SubjectId>)>,
}

impl BulkReservation {
    /// Decodes a stored row, in the current layout or the first one.
    fn decode(bytes: &[u8]) -> Result<Self, VaultError> {
        match bcs::from_bytes(bytes) {
            Ok(row) => Ok(row),
            Err(current) => match bcs::from_bytes::<BulkReservationV1>(bytes) {
                Ok(v1) => Ok(BulkReservation {
                    amount: v1.amount,
                    opened_in: v1.opened_in,
                    subjects: v1.subjects,
                    ended: Vec::new(),
                    finished: v1.finished,
                }),
                Err(_) => Err(current.into()),
            },
        }
    }

    /// What the row means for one subject: `None` if it does not name it, else
    /// the outcome (`None`: still reserved; `Some(ε)`: finished committing ε).
    fn outcome_for(&self, subject: &SubjectId) -> Option<Option<Epsilon>> {
        self.subjects.binary_search(subject).ok()?;
        if let Some(ended) = self.ended_with(subject) {
            return Some(Some(ended));
        }
        Some(self.finished.as_ref().map(|(actual, used)| {
            if used.binary_search(subject).is_ok() {
                *actual
            } else {
                Epsilon::ZERO
            }
        }))
    }

    /// Adds newly reserved subjects (kept sorted and distinct).
    fn add_subjects(&mut self, added: Vec<SubjectId>) {
        self.subjects.extend(added);
        self.subjects.sort();
        self.subjects.dedup();
    }

    /// The ε `subject` committed if its reservation ended on its own.
    fn ended_with(&self, subject: &SubjectId) -> Option<Epsilon> {
        self.ended
            .iter()
            .find(|(_, group)| group.binary_search(subject).is_ok())
            .map(|(actual, _)| *actual)
    }

    fn ended_count(&self) -> usize {
        self.ended.iter().map(|(_, group)| group.len()).sum()
    }

    /// Every subject's reservation ended: the row only records outcomes.
    fn is_done(&self) -> bool {
        self.finished.is_some() || self.ended_count() == self.subjects.len()
    }

    /// The subjects still holding the reservation.
    fn open_subjects(&self) -> Vec<SubjectId> {
        if self.finished.is_some() {
            return Vec::new();
        }
        self.subjects
            .iter()
            .filter(|s| self.ended_with(s).is_none())
            .cloned()
            .collect()
    }
}

/// The bulk rows of one scope, folded into accounts as they are read.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    rows: Vec<(TaskId, BulkReservation)>,
}

impl Overlay {
    /// The rows of `scope` (none if the table does not exist yet).
    pub(crate) fn load(
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        scope: UsageScope,
    ) -> Result<Self, VaultError> {
        let s = scope.as_str();
        let mut rows = Vec::new();
        for entry in table.range((s, "")..)? {
            let (k, v) = entry?;
            let (ks, task) = k.value();
            if ks != s {
                break;
            }
            rows.push((TaskId::new(task)?, BulkReservation::decode(v.value())?));
        }
        Ok(Overlay { rows })
    }

    /// [`Overlay::load`] in a read transaction of a Vault that may predate bulk rows.
    pub(crate) fn load_read(
        tx: &redb::ReadTransaction,
        scope: UsageScope,
    ) -> Result<Self, VaultError> {
        match tx.open_table(BULK) {
            Ok(t) => Self::load(&t, scope),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Overlay::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// The epoch an account that does not exist yet opens in: the earliest
    /// `opened_in` of the rows naming the subject, else `current`.
    pub(crate) fn epoch_for(&self, subject: &SubjectId, current: EpochId) -> EpochId {
        self.rows
            .iter()
            .filter(|(_, r)| r.subjects.binary_search(subject).is_ok())
            .map(|(_, r)| r.opened_in)
            .min()
            .unwrap_or(current)
    }

    /// `task`'s row, or a new empty one reserving `amount`, opened in `epoch`.
    fn row_or_new(&self, task: &TaskId, amount: Epsilon, epoch: EpochId) -> BulkReservation {
        match self.rows.iter().find(|(t, _)| t == task) {
            Some((_, row)) => row.clone(),
            None => BulkReservation {
                amount,
                opened_in: epoch,
                subjects: Vec::new(),
                ended: Vec::new(),
                finished: None,
            },
        }
    }

    fn holds(&self, task: &TaskId) -> bool {
        self.rows.iter().any(|(t, _)| t == task)
    }

    /// The account as the subject's operations made it: `stored` with every row
    /// naming the subject folded in.
    pub(crate) fn effective<'a>(
        &self,
        subject: &SubjectId,
        scope: UsageScope,
        stored: &'a BudgetAccount,
    ) -> Result<Cow<'a, BudgetAccount>, VaultError> {
        let mut account = Cow::Borrowed(stored);
        for (task, row) in &self.rows {
            if let Some(outcome) = row.outcome_for(subject) {
                account
                    .to_mut()
                    .include_held(task, row.amount, outcome)
                    .map_err(|source| VaultError::Budget {
                        subject: subject.to_string(),
                        scope,
                        source,
                    })?;
            }
        }
        Ok(account)
    }

    /// Applies a per-subject operation: refused if it names a bulk task, checked
    /// against the effective account, applied to `stored` (what is written back).
    pub(crate) fn apply(
        &self,
        subject: &SubjectId,
        scope: UsageScope,
        stored: &mut BudgetAccount,
        op: &BudgetOp,
    ) -> Result<BudgetOutcome, VaultError> {
        if let Some(task) = op_task(op).filter(|t| self.holds(t)) {
            return Err(VaultError::BulkTask {
                task: task.to_string(),
                scope,
            });
        }
        let budget = |source| VaultError::Budget {
            subject: subject.to_string(),
            scope,
            source,
        };
        let effective = self.effective(subject, scope, stored)?;
        if let Cow::Owned(mut effective) = effective {
            let outcome = effective.apply(op).map_err(budget)?;
            stored.apply(op).map_err(budget)?;
            Ok(outcome)
        } else {
            stored.apply(op).map_err(budget)
        }
    }
}

fn op_task(op: &BudgetOp) -> Option<&TaskId> {
    match op {
        BudgetOp::Reserve { task, .. }
        | BudgetOp::Commit { task, .. }
        | BudgetOp::Release { task }
        | BudgetOp::CommitAtEstimate { task } => Some(task),
        BudgetOp::Replenish { .. } => None,
    }
}

impl Vault {
    /// Reserves `amount` for `task` on those of `subjects` whose budget covers it
    /// (the others are reported in `excluded`), as **one** row: the bulk form of
    /// [`Vault::reserve_for_task`] with [`crate::ReserveMode::SkipInsufficient`],
    /// in one write transaction. A retry reports the subjects already reserved as
    /// such and reserves those newly covered. Refused with
    /// [`VaultError::TaskReleased`] for a task released here, and with the
    /// account's own refusal (naming the subject) for a task that already
    /// reserved another amount or finished.
    pub fn reserve_bulk(
        &self,
        task: &TaskId,
        scope: UsageScope,
        subjects: &[SubjectId],
        amount: Epsilon,
    ) -> Result<ReserveReport, VaultError> {
        // One task reserved all or none is one task reserved where it fits.
        self.reserve_bulk_all_or_none(scope, subjects, &[(task.clone(), amount)])
    }

    /// Finishes a bulk reservation: `used` (each holding the reservation) commit
    /// `actual`, every other reserved subject is released; records the usage
    /// ([`Vault::task_usage`]) in the same transaction. One row rewritten, whatever
    /// the number of subjects. A retry with the same outcome changes nothing;
    /// another outcome is refused, as are a subject without the reservation and an
    /// `actual` above the reserved amount. Returns how many subjects committed.
    pub fn commit_bulk(
        &self,
        scope: UsageScope,
        task: &TaskId,
        used: &[SubjectId],
        actual: Epsilon,
    ) -> Result<u64, VaultError> {
        let s = scope.as_str();
        let mut used: Vec<SubjectId> = used.to_vec();
        used.sort();
        used.dedup();
        let n = used.len() as u64;
        let tx = self.db.begin_write()?;
        {
            let mut bulk = tx.open_table(BULK)?;
            let existing: Option<BulkReservation> = match bulk.get((s, task.as_str()))? {
                Some(v) => Some(BulkReservation::decode(v.value())?),
                None => None,
            };
            let mut row = match existing {
                Some(row) => row,
                // Nothing was reserved here (no subject could be): nothing to
                // finish; the (empty) usage is recorded as a commit records it.
                None if used.is_empty() => {
                    drop(bulk);
                    if actual.micro > 0 {
                        let usage: Vec<(&SubjectId, Epsilon)> = Vec::new();
                        tx.open_table(TASK_USAGE)?
                            .insert(task.as_str(), bcs::to_bytes(&(scope, usage))?.as_slice())?;
                    }
                    tx.commit()?;
                    return Ok(0);
                }
                None => {
                    let subject = used.first().map(|s| s.to_string()).unwrap_or_default();
                    return Err(VaultError::Budget {
                        subject,
                        scope,
                        source: BudgetError::NoReservation(task.clone()),
                    });
                }
            };
            // A refusal names the first subject concerned.
            let first = used
                .first()
                .or(row.subjects.first())
                .map(|s| s.to_string())
                .unwrap_or_default();
            let refuse = |subject: String, source| VaultError::Budget {
                subject,
                scope,
                source,
            };
            if let Some((done, done_used)) = &row.finished {
                if *done == actual && *done_used == used {
                    return Ok(n);
                }
                let source = BudgetError::AlreadyFinished {
                    task: task.clone(),
                    committed: *done,
                };
                return Err(refuse(first, source));
            }
            if let Some(subject) = used.iter().find(|s| row.subjects.binary_search(s).is_err()) {
                let source = BudgetError::NoReservation(task.clone());
                return Err(refuse(subject.to_string(), source));
            }
            // A subject whose reservation already ended on its own keeps that
            // outcome; committing another one is refused as the account would.
            for subject in &used {
                if let Some(done) = row.ended_with(subject).filter(|d| *d != actual) {
                    let source = BudgetError::AlreadyFinished {
                        task: task.clone(),
                        committed: done,
                    };
                    return Err(refuse(subject.to_string(), source));
                }
            }
            if actual > row.amount {
                let source = BudgetError::ExceedsReservation {
                    task: task.clone(),
                    actual,
                    reserved: row.amount,
                };
                return Err(refuse(first, source));
            }
            if actual.micro > 0 {
                let usage: Vec<(&SubjectId, Epsilon)> = used.iter().map(|s| (s, actual)).collect();
                tx.open_table(TASK_USAGE)?
                    .insert(task.as_str(), bcs::to_bytes(&(scope, usage))?.as_slice())?;
            }
            row.finished = Some((actual, used));
            bulk.insert((s, task.as_str()), bcs::to_bytes(&row)?.as_slice())?;
        }
        self.fold_if_piled_up(&tx, scope)?;
        tx.commit()?;
        Ok(n)
    }

    /// Folds the finished rows of `scope` once more than [`FOLD_FINISHED_ABOVE`]
    /// have piled up.
    fn fold_if_piled_up(&self, tx: &WriteTransaction, scope: UsageScope) -> Result<(), VaultError> {
        let finished = Overlay::load(&tx.open_table(BULK)?, scope)?
            .rows
            .iter()
            .filter(|(_, r)| r.is_done())
            .count();
        if finished > FOLD_FINISHED_ABOVE {
            self.fold_bulk_in(tx, Some(scope))?;
        }
        Ok(())
    }

    /// Reserves, for each subject, *every* `(task, amount)` of `tasks` or none of
    /// them, as one bulk row per task, in one write transaction: the bulk form of
    /// [`Vault::reserve_all_or_none`] (a training run's rounds reserve this way at
    /// admission), with the same report and refusals. A subject is checked
    /// against its account with every bulk row folded in, so bulk and
    /// per-subject reservations together never overspend. A retry reports the
    /// subjects already holding every task as such.
    pub fn reserve_bulk_all_or_none(
        &self,
        scope: UsageScope,
        subjects: &[SubjectId],
        tasks: &[(TaskId, Epsilon)],
    ) -> Result<ReserveReport, VaultError> {
        let s = scope.as_str();
        let mut report = ReserveReport::default();
        let tx = self.db.begin_write()?;
        crate::ledger::refuse_released(&tx, tasks.iter().map(|(task, _)| task))?;
        {
            let epoch =
                crate::ledger::current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
            let accounts = tx.open_table(BUDGET)?;
            let mut bulk = tx.open_table(BULK)?;
            let overlay = Overlay::load(&bulk, scope)?;
            let mut rows: Vec<BulkReservation> = Vec::with_capacity(tasks.len());
            let mut ops = Vec::with_capacity(tasks.len());
            for (task, amount) in tasks {
                rows.push(overlay.row_or_new(task, *amount, epoch));
                ops.push(BudgetOp::Reserve {
                    task: task.clone(),
                    amount: *amount,
                });
            }
            let budget = |subject: &SubjectId, source| VaultError::Budget {
                subject: subject.to_string(),
                scope,
                source,
            };
            let mut added: Vec<Vec<SubjectId>> = vec![Vec::new(); tasks.len()];
            let mut applied = Vec::with_capacity(tasks.len());
            'subjects: for subject in subjects {
                let opens = overlay.epoch_for(subject, epoch);
                let stored = self.stored_account(&accounts, (s, subject.as_str()), opens)?;
                let mut account = overlay.effective(subject, scope, &stored)?.into_owned();
                applied.clear();
                for (i, op) in ops.iter().enumerate() {
                    match account.apply(op) {
                        Ok(BudgetOutcome::Applied) => applied.push(i),
                        Ok(BudgetOutcome::AlreadyApplied) => {}
                        Err(BudgetError::Insufficient { .. }) => {
                            report.excluded.push(subject.clone());
                            continue 'subjects;
                        }
                        Err(source) => return Err(budget(subject, source)),
                    }
                }
                for &i in &applied {
                    // A row takes one amount: another one for a new subject
                    // conflicts as a second reservation of the task would.
                    if rows[i].amount != tasks[i].1 {
                        let source = BudgetError::ConflictingReservation {
                            task: tasks[i].0.clone(),
                            existing: rows[i].amount,
                            requested: tasks[i].1,
                        };
                        return Err(budget(subject, source));
                    }
                    added[i].push(subject.clone());
                }
                if applied.is_empty() && !ops.is_empty() {
                    report.already_applied += 1;
                }
                report.reserved.push(subject.clone());
            }
            for ((row, added), (task, _)) in rows.iter_mut().zip(added).zip(tasks) {
                if added.is_empty() {
                    continue;
                }
                row.add_subjects(added);
                bulk.insert((s, task.as_str()), bcs::to_bytes(row)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// Applies groups of finishing operations — each `(subjects, op)` commits
    /// (`Commit`, `CommitAtEstimate`) or releases (`Release`) `op`'s task for
    /// every subject of its group — in one write transaction, all or nothing, as
    /// [`Vault::apply_op_groups`] would, with the same outcomes and refusals. A
    /// task held as a bulk row ends its subjects' reservations in the row, which
    /// is rewritten once whatever the number of subjects; a task reserved per
    /// subject goes through [`Vault::apply_op_groups`]'s path. A row whose
    /// every reservation ended counts as finished. Returns the number of
    /// operations applied (retries of applied ones are not counted).
    pub fn apply_bulk_groups(
        &self,
        scope: UsageScope,
        groups: &[(Vec<SubjectId>, BudgetOp)],
    ) -> Result<u64, VaultError> {
        let s = scope.as_str();
        let tx = self.db.begin_write()?;
        let mut applied = 0u64;
        let mut per_subject: Vec<(Vec<SubjectId>, BudgetOp)> = Vec::new();
        // Subjects of a bulk task the row no longer (or never) held.
        let mut stored_ops: Vec<(Vec<SubjectId>, BudgetOp)> = Vec::new();
        let mut now_done = false;
        {
            let mut bulk = tx.open_table(BULK)?;
            // Only the rows named are read (not the scope's whole overlay).
            let mut changed: Vec<(TaskId, BulkReservation)> = Vec::new();
            for (subjects, op) in groups {
                let Some(task) = op_task(op).filter(|_| !matches!(op, BudgetOp::Reserve { .. }))
                else {
                    per_subject.push((subjects.clone(), op.clone()));
                    continue;
                };
                let at = match changed.iter().position(|(t, _)| t == task) {
                    Some(at) => at,
                    None => {
                        let found: Option<BulkReservation> = match bulk.get((s, task.as_str()))? {
                            Some(v) => Some(BulkReservation::decode(v.value())?),
                            None => None,
                        };
                        match found {
                            Some(row) => {
                                changed.push((task.clone(), row));
                                changed.len() - 1
                            }
                            None => {
                                per_subject.push((subjects.clone(), op.clone()));
                                continue;
                            }
                        }
                    }
                };
                let row = &mut changed[at].1;
                let was_done = row.is_done();
                let (n, outside) = end_in_row(row, task, scope, subjects, op)?;
                applied += n;
                now_done |= !was_done && row.is_done();
                if !outside.is_empty() {
                    stored_ops.push((outside, op.clone()));
                }
            }
            for (task, row) in &changed {
                bulk.insert((s, task.as_str()), bcs::to_bytes(row)?.as_slice())?;
            }
        }
        if !per_subject.is_empty() {
            applied += self.apply_op_groups_in(&tx, scope, &per_subject)?;
        }
        if !stored_ops.is_empty() {
            applied += self.finish_in_stored(&tx, scope, &stored_ops)?;
        }
        if now_done {
            self.fold_if_piled_up(&tx, scope)?;
        }
        tx.commit()?;
        Ok(applied)
    }

    /// The subjects a bulk reservation of `task` holds in `scope` and has not yet
    /// finished (empty if none).
    pub fn bulk_reserved(
        &self,
        scope: UsageScope,
        task: &TaskId,
    ) -> Result<Vec<SubjectId>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(BULK) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(match table.get((scope.as_str(), task.as_str()))? {
            Some(v) => {
                let row = BulkReservation::decode(v.value())?;
                row.open_subjects()
            }
            None => Vec::new(),
        })
    }

    /// Writes every ended reservation of `scope`'s bulk rows (all scopes for
    /// `None`) into the subjects' stored accounts: a finished row is deleted, a
    /// row with some reservations still open keeps only those.
    pub(crate) fn fold_bulk_in(
        &self,
        tx: &WriteTransaction,
        scope: Option<UsageScope>,
    ) -> Result<(), VaultError> {
        let epoch = crate::ledger::current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
        let mut bulk = tx.open_table(BULK)?;
        let mut accounts = tx.open_table(BUDGET)?;
        let scopes: Vec<UsageScope> = match scope {
            Some(s) => vec![s],
            None => UsageScope::ALL.to_vec(),
        };
        for scope in scopes {
            let s = scope.as_str();
            let all = Overlay::load(&bulk, scope)?;
            // What is folded: finished rows whole, and the ended part of the others.
            let mut rows: Vec<(TaskId, BulkReservation)> = Vec::new();
            let mut kept: Vec<(TaskId, BulkReservation)> = Vec::new();
            for (task, row) in &all.rows {
                if row.is_done() {
                    rows.push((task.clone(), row.clone()));
                } else if !row.ended.is_empty() {
                    let mut ended: Vec<SubjectId> = row
                        .ended
                        .iter()
                        .flat_map(|(_, g)| g.iter().cloned())
                        .collect();
                    ended.sort();
                    let part = BulkReservation {
                        subjects: ended,
                        ..row.clone()
                    };
                    let rest = BulkReservation {
                        subjects: row.open_subjects(),
                        ended: Vec::new(),
                        ..row.clone()
                    };
                    rows.push((task.clone(), part));
                    kept.push((task.clone(), rest));
                }
            }
            if rows.is_empty() {
                continue;
            }
            let overlay = Overlay { rows };
            let subjects: BTreeSet<&SubjectId> = overlay
                .rows
                .iter()
                .flat_map(|(_, r)| r.subjects.iter())
                .collect();
            let mut encoded = Vec::new();
            for subject in subjects {
                let key = (s, subject.as_str());
                let opens = all.epoch_for(subject, epoch);
                let stored = self.stored_account(&accounts, key, opens)?;
                let account = overlay.effective(subject, scope, &stored)?;
                encoded.clear();
                bcs::serialize_into(&mut encoded, account.as_ref())?;
                accounts.insert(key, encoded.as_slice())?;
            }
            for (task, _) in &overlay.rows {
                match kept.iter().find(|(t, _)| t == task) {
                    Some((_, rest)) => {
                        bulk.insert((s, task.as_str()), bcs::to_bytes(rest)?.as_slice())?
                    }
                    None => bulk.remove((s, task.as_str()))?,
                };
            }
        }
        Ok(())
    }
}

impl Vault {
    /// Finishing operations of a bulk task for subjects its row does not hold:
    /// a fold moved their outcome into their stored account (a retry is applied
    /// again there), or they never held it. A finish checks no balance, so the
    /// stored account alone decides, as the subject's own account would.
    fn finish_in_stored(
        &self,
        tx: &WriteTransaction,
        scope: UsageScope,
        groups: &[(Vec<SubjectId>, BudgetOp)],
    ) -> Result<u64, VaultError> {
        let s = scope.as_str();
        let epoch = crate::ledger::current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
        let mut accounts = tx.open_table(BUDGET)?;
        let mut applied = 0;
        for (subjects, op) in groups {
            for subject in subjects {
                let key = (s, subject.as_str());
                let mut account = self.stored_account(&accounts, key, epoch)?;
                let outcome = account.apply(op).map_err(|source| VaultError::Budget {
                    subject: subject.to_string(),
                    scope,
                    source,
                })?;
                if outcome == BudgetOutcome::Applied {
                    applied += 1;
                    accounts.insert(key, bcs::to_bytes(&account)?.as_slice())?;
                }
            }
        }
        Ok(applied)
    }
}

/// Ends the reservations of `subjects` in `row` (a bulk row of `task`) as `op`
/// (a commit or a release) would end each subject's own: an ended one is
/// applied again only with the same outcome. Returns the number ended now and
/// the subjects the row does not hold (their stored account decides).
fn end_in_row(
    row: &mut BulkReservation,
    task: &TaskId,
    scope: UsageScope,
    subjects: &[SubjectId],
    op: &BudgetOp,
) -> Result<(u64, Vec<SubjectId>), VaultError> {
    let (wanted, release) = match op {
        BudgetOp::Commit { actual, .. } => (*actual, false),
        BudgetOp::CommitAtEstimate { .. } => (row.amount, false),
        _ => (Epsilon::ZERO, true),
    };
    let refuse = |subject: &SubjectId, source| VaultError::Budget {
        subject: subject.to_string(),
        scope,
        source,
    };
    let mut now: Vec<SubjectId> = Vec::new();
    let mut outside: Vec<SubjectId> = Vec::new();
    for subject in subjects {
        if row.subjects.binary_search(subject).is_err() {
            outside.push(subject.clone());
            continue;
        }
        if let Some(done) = row.outcome_for(subject).flatten() {
            // A commit at the estimate of a finished task is a retry whatever
            // it committed.
            let estimate = matches!(op, BudgetOp::CommitAtEstimate { .. });
            if done != wanted && !estimate {
                let source = BudgetError::AlreadyFinished {
                    task: task.clone(),
                    committed: done,
                };
                return Err(refuse(subject, source));
            }
            continue;
        }
        if !release && wanted > row.amount {
            let source = BudgetError::ExceedsReservation {
                task: task.clone(),
                actual: wanted,
                reserved: row.amount,
            };
            return Err(refuse(subject, source));
        }
        now.push(subject.clone());
    }
    now.sort();
    now.dedup();
    let n = now.len() as u64;
    if n == 0 {
        return Ok((0, outside));
    }
    match row.ended.iter_mut().find(|(e, _)| *e == wanted) {
        Some((_, group)) => {
            group.extend(now);
            group.sort();
        }
        None => row.ended.push((wanted, now)),
    }
    Ok((n, outside))
}

/// A bulk row finished released (nothing committed): its new bytes and how many
/// subjects' reservations that ended (0 if it had already finished).
pub(crate) fn release_row(bytes: &[u8]) -> Result<(Vec<u8>, u64), VaultError> {
    let mut row = BulkReservation::decode(bytes)?;
    if row.is_done() {
        return Ok((bytes.to_vec(), 0));
    }
    let open = row.open_subjects().len() as u64;
    row.finished = Some((Epsilon::ZERO, Vec::new()));
    Ok((bcs::to_bytes(&row)?, open))
}

impl Vault {
    /// Replenishment of `scope` to `epoch` for the accounts that exist only
    /// through open bulk rows (after the finished rows were folded): each reads as
    /// replenished (an open reservation commits nothing, so only the epoch
    /// moves). Returns (applied, already applied) as the per-subject accounts
    /// would count them; refused like them for an epoch older than a row's.
    pub(crate) fn replenish_bulk_in(
        &self,
        tx: &WriteTransaction,
        scope: UsageScope,
        epoch: EpochId,
    ) -> Result<(u64, u64), VaultError> {
        let s = scope.as_str();
        let mut bulk = tx.open_table(BULK)?;
        let accounts = tx.open_table(BUDGET)?;
        let overlay = Overlay::load(&bulk, scope)?;
        let implicit: BTreeSet<&SubjectId> = overlay
            .rows
            .iter()
            .flat_map(|(_, r)| r.subjects.iter())
            .collect();
        let (mut applied, mut again) = (0u64, 0u64);
        for subject in implicit {
            if accounts.get((s, subject.as_str()))?.is_some() {
                continue;
            }
            let last = overlay.epoch_for(subject, epoch);
            if last > epoch {
                return Err(VaultError::Budget {
                    subject: subject.to_string(),
                    scope,
                    source: BudgetError::NotEpochBoundary {
                        requested: epoch,
                        last,
                    },
                });
            }
            if last == epoch {
                again += 1;
            } else {
                applied += 1;
            }
        }
        for (task, row) in &overlay.rows {
            if row.opened_in < epoch {
                let mut row = row.clone();
                row.opened_in = epoch;
                bulk.insert((s, task.as_str()), bcs::to_bytes(&row)?.as_slice())?;
            }
        }
        Ok((applied, again))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct V1<'a> {
        amount: Epsilon,
        opened_in: EpochId,
        subjects: &'a [SubjectId],
        finished: Option<(Epsilon, Vec<SubjectId>)>,
    }

    #[test]
    fn rows_of_the_first_layout_still_decode_and_never_pass_for_the_current_one() {
        let subjects: Vec<SubjectId> = ["a", "b", "c"]
            .iter()
            .map(|s| SubjectId::new(*s).unwrap())
            .collect();
        for finished in [None, Some((Epsilon::from_milli(2), subjects[..1].to_vec()))] {
            let old = bcs::to_bytes(&V1 {
                amount: Epsilon::from_milli(3),
                opened_in: EpochId(4),
                subjects: &subjects,
                finished: finished.clone(),
            })
            .unwrap();
            assert!(bcs::from_bytes::<BulkReservation>(&old).is_err());
            let row = BulkReservation::decode(&old).unwrap();
            let want = BulkReservation {
                amount: Epsilon::from_milli(3),
                opened_in: EpochId(4),
                subjects: subjects.clone(),
                ended: Vec::new(),
                finished,
            };
            assert_eq!(row, want);
            // The current layout round-trips, ended groups included.
            let mut current = want;
            current.ended = vec![(Epsilon::ZERO, subjects[1..2].to_vec())];
            let bytes = bcs::to_bytes(&current).unwrap();
            assert_eq!(BulkReservation::decode(&bytes).unwrap(), current);
        }
    }
}
