//! Consent registry and privacy budget ledger.
//!
//! Both are keyed `(scope, subject)` so that "who may be used for scope S" is one
//! range scan. Values are the core's own types, BCS-encoded: [`ConsentHistory`] and
//! [`BudgetAccount`]. Every change goes through the core's rules
//! (`ConsentHistory::push`, `BudgetAccount::apply`); this module only persists them,
//! atomically, in redb write transactions (which redb serializes, so concurrent
//! reservations can never overspend).

use std::collections::BTreeSet;

use redb::{ReadableTable, TableDefinition};
use symphony_core::budget::{BudgetAccount, BudgetError, BudgetOp, BudgetOutcome, Epsilon};
use symphony_core::consent::{ConsentChange, ConsentHistory, UsageScope};
use symphony_core::ids::{EpochId, SubjectId, TaskId};

use crate::bulk::{Overlay, BULK};
use crate::error::VaultError;
use crate::store::{read_u64, Vault, META};

/// (scope, subject) → BCS `ConsentHistory`.
pub(crate) const CONSENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("consent");
/// (scope, subject) → BCS `BudgetAccount`.
pub(crate) const BUDGET: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("budget");
/// Task ids released in this Vault (their attempt was aborted or refused): such a
/// task never reserves again here. Written by [`Vault::release_task`]; read by
/// [`Vault::reserve_for_task`] in its own write transaction.
pub(crate) const RELEASED_TASKS: TableDefinition<&str, ()> = TableDefinition::new("released_tasks");
/// Task id → BCS `(UsageScope, Vec<(SubjectId, Epsilon)>)`: the subjects whose ε a
/// slice of the task committed, written by [`Vault::commit_task`] in the same
/// transaction as the commits (what the Vault's dividends are split over).
pub(crate) const TASK_USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("task_usage");

/// A task's usage in one Vault ([`Vault::task_usage`]): its scope and each subject
/// with the ε committed.
pub type TaskUsage = (UsageScope, Vec<(SubjectId, Epsilon)>);

/// How a batch reservation treats subjects whose budget can not cover the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveMode {
    /// Any refusal rolls back the whole batch.
    AllOrNothing,
    /// Subjects with insufficient budget are excluded (reported), the rest reserved,
    /// in the same transaction (no check-then-act race).
    SkipInsufficient,
}

/// What a batch reservation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReserveReport {
    /// Subjects that now hold the reservation (newly or from an earlier retry).
    pub reserved: Vec<SubjectId>,
    /// How many of those were already reserved (idempotent retry).
    pub already_applied: u64,
    /// Subjects left out because their budget was insufficient (SkipInsufficient).
    pub excluded: Vec<SubjectId>,
}

/// What an epoch replenishment did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplenishReport {
    /// Accounts replenished.
    pub applied: u64,
    /// Accounts already at this epoch (a retried replenishment).
    pub already_applied: u64,
}

impl Vault {
    /// Appends consent changes atomically (all or nothing), through
    /// [`ConsentHistory::push`] (append-only in time).
    pub fn record_consent(
        &self,
        changes: &[(SubjectId, UsageScope, ConsentChange)],
    ) -> Result<(), VaultError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(CONSENT)?;
            for (subject, scope, change) in changes {
                let key = (scope.as_str(), subject.as_str());
                let mut history: ConsentHistory = match table.get(key)? {
                    Some(v) => bcs::from_bytes(v.value())?,
                    None => ConsentHistory::new(),
                };
                history
                    .push(*change)
                    .map_err(|source| VaultError::Consent {
                        subject: subject.to_string(),
                        scope: *scope,
                        source,
                    })?;
                table.insert(key, bcs::to_bytes(&history)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The consent history of a subject for a scope (empty: never granted).
    pub fn consent_history(
        &self,
        subject: &SubjectId,
        scope: UsageScope,
    ) -> Result<ConsentHistory, VaultError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CONSENT)?;
        Ok(match table.get((scope.as_str(), subject.as_str()))? {
            Some(v) => bcs::from_bytes(v.value())?,
            None => ConsentHistory::new(),
        })
    }

    /// Subjects whose consent for `scope` is in force at `at_ms`.
    pub fn consented_subjects(
        &self,
        scope: UsageScope,
        at_ms: u64,
    ) -> Result<BTreeSet<SubjectId>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CONSENT)?;
        let s = scope.as_str();
        let mut out = BTreeSet::new();
        for entry in table.range((s, "")..)? {
            let (k, v) = entry?;
            let (ks, subject) = k.value();
            if ks != s {
                break;
            }
            let history: ConsentHistory = bcs::from_bytes(v.value())?;
            if history.is_granted_at(at_ms) {
                out.insert(SubjectId::new(subject)?);
            }
        }
        Ok(out)
    }

    /// Subjects that may be used for `scope` at `at_ms` by a task needing `needed`
    /// ε: consent in force and at least `needed` budget remaining.
    pub fn eligible_subjects(
        &self,
        scope: UsageScope,
        at_ms: u64,
        needed: Epsilon,
    ) -> Result<BTreeSet<SubjectId>, VaultError> {
        let consented = self.consented_subjects(scope, at_ms)?;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BUDGET)?;
        let overlay = Overlay::load_read(&tx, scope)?;
        let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
        let mut out = BTreeSet::new();
        for subject in consented {
            let opens = overlay.epoch_for(&subject, epoch);
            let stored = self.stored_account(&table, (scope.as_str(), subject.as_str()), opens)?;
            if overlay
                .effective(&subject, scope, &stored)?
                .can_reserve(needed)
            {
                out.insert(subject);
            }
        }
        Ok(out)
    }

    /// The epoch new budget accounts open in (the last replenished epoch).
    pub fn budget_epoch(&self) -> Result<EpochId, VaultError> {
        let tx = self.db.begin_read()?;
        current_epoch(&tx.open_table(META)?, self.config.initial_epoch)
    }

    /// The subject's budget account for `scope` (a fresh default account if none is
    /// stored yet).
    pub fn budget_account(
        &self,
        subject: &SubjectId,
        scope: UsageScope,
    ) -> Result<BudgetAccount, VaultError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BUDGET)?;
        let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
        let overlay = Overlay::load_read(&tx, scope)?;
        let opens = overlay.epoch_for(subject, epoch);
        let stored = self.stored_account(&table, (scope.as_str(), subject.as_str()), opens)?;
        Ok(overlay.effective(subject, scope, &stored)?.into_owned())
    }

    /// The budget accounts of `subjects` (in the given order) for a scope, read in
    /// one snapshot: one read transaction for the lot instead of one per subject.
    pub fn budget_accounts<'s>(
        &self,
        subjects: impl IntoIterator<Item = &'s SubjectId>,
        scope: UsageScope,
    ) -> Result<Vec<BudgetAccount>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BUDGET)?;
        let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
        let overlay = Overlay::load_read(&tx, scope)?;
        subjects
            .into_iter()
            .map(|subject| {
                let opens = overlay.epoch_for(subject, epoch);
                let stored =
                    self.stored_account(&table, (scope.as_str(), subject.as_str()), opens)?;
                Ok(overlay.effective(subject, scope, &stored)?.into_owned())
            })
            .collect()
    }

    /// Applies budget operations in one write transaction, all or nothing: if any is
    /// refused by [`BudgetAccount::apply`], nothing is written and the first refusal
    /// is returned. Idempotent by task id (retries report `AlreadyApplied`).
    pub fn apply_budget_ops(
        &self,
        scope: UsageScope,
        ops: &[(SubjectId, BudgetOp)],
    ) -> Result<Vec<BudgetOutcome>, VaultError> {
        self.apply_each(scope, ops.len(), ops.iter().map(|(s, op)| (s, op)))
    }

    /// [`Vault::apply_budget_ops`] over borrowed `(subject, op)` pairs.
    fn apply_each<'a>(
        &self,
        scope: UsageScope,
        len: usize,
        ops: impl Iterator<Item = (&'a SubjectId, &'a BudgetOp)>,
    ) -> Result<Vec<BudgetOutcome>, VaultError> {
        let tx = self.db.begin_write()?;
        let outcomes = self.apply_each_in(&tx, scope, len, ops)?;
        tx.commit()?;
        Ok(outcomes)
    }

    /// Commits `actual` for `task` on every subject (as [`Vault::finish_task`] with
    /// [`BudgetOp::Commit`]) and records, in the same transaction, which subjects
    /// the task used and how much ([`Vault::task_usage`]). A retry commits nothing
    /// more and records the same usage.
    pub fn commit_task(
        &self,
        scope: UsageScope,
        task: &TaskId,
        subjects: &[SubjectId],
        actual: Epsilon,
    ) -> Result<Vec<BudgetOutcome>, VaultError> {
        let op = BudgetOp::Commit {
            task: task.clone(),
            actual,
        };
        let tx = self.db.begin_write()?;
        let outcomes = self.apply_each_in(
            &tx,
            scope,
            subjects.len(),
            subjects.iter().map(|s| (s, &op)),
        )?;
        if actual.micro > 0 {
            let used: Vec<(&SubjectId, Epsilon)> = subjects.iter().map(|s| (s, actual)).collect();
            tx.open_table(TASK_USAGE)?
                .insert(task.as_str(), bcs::to_bytes(&(scope, used))?.as_slice())?;
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// What [`Vault::commit_task`] recorded for `task`: its scope and each subject
    /// with the ε committed, in subject order; `None` when no slice of the task
    /// committed here through it.
    pub fn task_usage(&self, task: &TaskId) -> Result<Option<TaskUsage>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TASK_USAGE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(v) = table.get(task.as_str())? else {
            return Ok(None);
        };
        let (scope, mut used): TaskUsage = bcs::from_bytes(v.value())?;
        used.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some((scope, used)))
    }

    fn apply_each_in<'a>(
        &self,
        tx: &redb::WriteTransaction,
        scope: UsageScope,
        len: usize,
        ops: impl Iterator<Item = (&'a SubjectId, &'a BudgetOp)>,
    ) -> Result<Vec<BudgetOutcome>, VaultError> {
        let mut outcomes = Vec::with_capacity(len);
        {
            let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
            let overlay = Overlay::load(&tx.open_table(BULK)?, scope)?;
            let mut table = tx.open_table(BUDGET)?;
            let mut encoded = Vec::new();
            for (subject, op) in ops {
                let key = (scope.as_str(), subject.as_str());
                let mut account =
                    self.stored_account(&table, key, overlay.epoch_for(subject, epoch))?;
                let outcome = overlay.apply(subject, scope, &mut account, op)?;
                if outcome == BudgetOutcome::Applied {
                    encoded.clear();
                    bcs::serialize_into(&mut encoded, &account)?;
                    table.insert(key, encoded.as_slice())?;
                }
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    /// Reserves `amount` for `task` on every subject, in one write transaction.
    /// Refused with [`VaultError::TaskReleased`] (nothing written) if `task` was
    /// released here before ([`Vault::release_task`]): a master that resumes an
    /// attempt another master already aborted can not reserve for it again.
    pub fn reserve_for_task(
        &self,
        task: &TaskId,
        scope: UsageScope,
        subjects: &[SubjectId],
        amount: Epsilon,
        mode: ReserveMode,
    ) -> Result<ReserveReport, VaultError> {
        let op = BudgetOp::Reserve {
            task: task.clone(),
            amount,
        };
        let mut report = ReserveReport::default();
        let tx = self.db.begin_write()?;
        refuse_released(&tx, [task])?;
        {
            let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
            let overlay = Overlay::load(&tx.open_table(BULK)?, scope)?;
            let mut table = tx.open_table(BUDGET)?;
            let mut encoded = Vec::new();
            for subject in subjects {
                let key = (scope.as_str(), subject.as_str());
                let mut account =
                    self.stored_account(&table, key, overlay.epoch_for(subject, epoch))?;
                match overlay.apply(subject, scope, &mut account, &op) {
                    Ok(BudgetOutcome::Applied) => {
                        encoded.clear();
                        bcs::serialize_into(&mut encoded, &account)?;
                        table.insert(key, encoded.as_slice())?;
                        report.reserved.push(subject.clone());
                    }
                    Ok(BudgetOutcome::AlreadyApplied) => {
                        report.already_applied += 1;
                        report.reserved.push(subject.clone());
                    }
                    Err(VaultError::Budget {
                        source: BudgetError::Insufficient { .. },
                        ..
                    }) if mode == ReserveMode::SkipInsufficient => {
                        report.excluded.push(subject.clone());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// Reserves, for each subject, *every* `(task, amount)` of `tasks` or none of
    /// them, in one write transaction: a subject whose budget can not cover the
    /// sum is left unchanged and reported in `excluded`. One read and one write per
    /// subject, whatever the number of tasks (a composite task's rounds reserve
    /// this way at admission). Refused with [`VaultError::TaskReleased`] (nothing
    /// written) if any of the tasks was released here before.
    pub fn reserve_all_or_none(
        &self,
        scope: UsageScope,
        subjects: &[SubjectId],
        tasks: &[(TaskId, Epsilon)],
    ) -> Result<ReserveReport, VaultError> {
        let ops: Vec<BudgetOp> = tasks
            .iter()
            .map(|(task, amount)| BudgetOp::Reserve {
                task: task.clone(),
                amount: *amount,
            })
            .collect();
        let mut report = ReserveReport::default();
        let tx = self.db.begin_write()?;
        refuse_released(&tx, tasks.iter().map(|(task, _)| task))?;
        {
            let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
            let overlay = Overlay::load(&tx.open_table(BULK)?, scope)?;
            let mut table = tx.open_table(BUDGET)?;
            'subjects: for subject in subjects {
                let key = (scope.as_str(), subject.as_str());
                let mut account =
                    self.stored_account(&table, key, overlay.epoch_for(subject, epoch))?;
                let (mut applied, mut again) = (false, 0u64);
                for op in &ops {
                    match overlay.apply(subject, scope, &mut account, op) {
                        Ok(BudgetOutcome::Applied) => applied = true,
                        Ok(BudgetOutcome::AlreadyApplied) => again += 1,
                        Err(VaultError::Budget {
                            source: BudgetError::Insufficient { .. },
                            ..
                        }) => {
                            report.excluded.push(subject.clone());
                            continue 'subjects;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if applied {
                    table.insert(key, bcs::to_bytes(&account)?.as_slice())?;
                }
                if again == ops.len() as u64 && !ops.is_empty() {
                    report.already_applied += 1;
                }
                report.reserved.push(subject.clone());
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// Applies groups of operations — each `(subjects, op)` applies `op` to every
    /// subject of its group — in one write transaction, all or nothing, reading and
    /// writing each subject's account once. A subject's operations apply in the
    /// order of the groups. Returns the number of operations applied (retries of
    /// already applied ones are not counted).
    pub fn apply_op_groups(
        &self,
        scope: UsageScope,
        groups: &[(Vec<SubjectId>, BudgetOp)],
    ) -> Result<u64, VaultError> {
        let tx = self.db.begin_write()?;
        let applied = self.apply_op_groups_in(&tx, scope, groups)?;
        tx.commit()?;
        Ok(applied)
    }

    /// [`Vault::apply_op_groups`] in `tx`.
    pub(crate) fn apply_op_groups_in(
        &self,
        tx: &redb::WriteTransaction,
        scope: UsageScope,
        groups: &[(Vec<SubjectId>, BudgetOp)],
    ) -> Result<u64, VaultError> {
        let mut per_subject: std::collections::BTreeMap<&SubjectId, Vec<&BudgetOp>> =
            std::collections::BTreeMap::new();
        for (subjects, op) in groups {
            for subject in subjects {
                per_subject.entry(subject).or_default().push(op);
            }
        }
        let mut applied = 0u64;
        {
            let epoch = current_epoch(&tx.open_table(META)?, self.config.initial_epoch)?;
            let overlay = Overlay::load(&tx.open_table(BULK)?, scope)?;
            let mut table = tx.open_table(BUDGET)?;
            for (subject, ops) in per_subject {
                let key = (scope.as_str(), subject.as_str());
                let mut account =
                    self.stored_account(&table, key, overlay.epoch_for(subject, epoch))?;
                let mut changed = false;
                for op in ops {
                    let outcome = overlay.apply(subject, scope, &mut account, op)?;
                    if outcome == BudgetOutcome::Applied {
                        changed = true;
                        applied += 1;
                    }
                }
                if changed {
                    table.insert(key, bcs::to_bytes(&account)?.as_slice())?;
                }
            }
        }
        Ok(applied)
    }

    /// Applies the same finishing operation (commit / release / commit-at-estimate)
    /// for a task to every subject, all or nothing.
    pub fn finish_task(
        &self,
        scope: UsageScope,
        subjects: &[SubjectId],
        op: &BudgetOp,
    ) -> Result<Vec<BudgetOutcome>, VaultError> {
        self.apply_each(scope, subjects.len(), subjects.iter().map(|s| (s, op)))
    }

    /// Releases every reservation `task` holds in this Vault, in any scope, and
    /// marks the task released so that it never reserves here again; one write
    /// transaction. Returns how many subjects' reservations were released (0 if
    /// none was held: a second call, a task that never reserved here, or one whose
    /// reservations were committed).
    ///
    /// It finds the reservations in the budget ledger itself, not from what the
    /// caller remembers reserving, so it also releases what an enterprise process
    /// reserved before it restarted, or what a reservation racing this release
    /// wrote (redb serializes the two transactions: the reservation either
    /// commits first and is found here, or comes second and is refused).
    pub fn release_task(&self, task: &TaskId) -> Result<u64, VaultError> {
        let op = BudgetOp::Release { task: task.clone() };
        let tx = self.db.begin_write()?;
        let released;
        {
            tx.open_table(RELEASED_TASKS)?.insert(task.as_str(), ())?;
            let mut table = tx.open_table(BUDGET)?;
            let mut updates: Vec<(String, String, Vec<u8>)> = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let mut account: BudgetAccount = bcs::from_bytes(v.value())?;
                if account.reservation_of(task).is_none() {
                    continue;
                }
                let (scope, subject) = k.value();
                account.apply(&op).map_err(|source| VaultError::Budget {
                    subject: subject.to_owned(),
                    // A stored key's scope always parses; the fallback only names it.
                    scope: scope.parse().unwrap_or(UsageScope::Personal),
                    source,
                })?;
                updates.push((
                    scope.to_owned(),
                    subject.to_owned(),
                    bcs::to_bytes(&account)?,
                ));
            }
            let mut held = updates.len() as u64;
            for (scope, subject, bytes) in updates {
                table.insert((scope.as_str(), subject.as_str()), bytes.as_slice())?;
            }
            // A bulk reservation of the task finishes released: every subject's
            // reservation ends committing nothing, as the per-subject release does.
            let mut bulk = tx.open_table(BULK)?;
            for scope in UsageScope::ALL {
                let key = (scope.as_str(), task.as_str());
                let row = match bulk.get(key)? {
                    Some(v) => Some(crate::bulk::release_row(v.value())?),
                    None => None,
                };
                if let Some((bytes, n)) = row.filter(|(_, n)| *n > 0) {
                    bulk.insert(key, bytes.as_slice())?;
                    held += n;
                }
            }
            released = held;
        }
        tx.commit()?;
        Ok(released)
    }

    /// Whether `task` was released in this Vault ([`Vault::release_task`]).
    pub fn is_task_released(&self, task: &TaskId) -> Result<bool, VaultError> {
        let tx = self.db.begin_read()?;
        match tx.open_table(RELEASED_TASKS) {
            Ok(t) => Ok(t.get(task.as_str())?.is_some()),
            // A Vault created before the table existed, with nothing released yet.
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Epoch boundary: replenishes every stored account of `scope` by `amount` and
    /// makes `epoch` the epoch new accounts open in. A retry for the same epoch is
    /// reported as already applied; an epoch older than an account's last one is
    /// refused (nothing written).
    pub fn replenish_scope(
        &self,
        scope: UsageScope,
        epoch: EpochId,
        amount: Epsilon,
    ) -> Result<ReplenishReport, VaultError> {
        let op = BudgetOp::Replenish { epoch, amount };
        let mut report = ReplenishReport::default();
        let tx = self.db.begin_write()?;
        // Replenishment does not commute with commits: finished bulk rows of every
        // scope become stored accounts first, opened in the epoch they were made
        // in. Open reservations commute with it and stay bulk.
        self.fold_bulk_in(&tx, None)?;
        {
            let mut meta = tx.open_table(META)?;
            let current = current_epoch(&meta, self.config.initial_epoch)?;
            if epoch > current {
                meta.insert("epoch", epoch.0.to_le_bytes().as_slice())?;
            }
            let mut table = tx.open_table(BUDGET)?;
            let s = scope.as_str();
            let mut updates: Vec<(String, Vec<u8>)> = Vec::new();
            for entry in table.range((s, "")..)? {
                let (k, v) = entry?;
                let (ks, subject) = k.value();
                if ks != s {
                    break;
                }
                let mut account: BudgetAccount = bcs::from_bytes(v.value())?;
                if account.last_replenished() == epoch {
                    report.already_applied += 1;
                    continue;
                }
                account.apply(&op).map_err(|source| VaultError::Budget {
                    subject: subject.to_owned(),
                    scope,
                    source,
                })?;
                updates.push((subject.to_owned(), bcs::to_bytes(&account)?));
                report.applied += 1;
            }
            for (subject, bytes) in updates {
                table.insert((s, subject.as_str()), bytes.as_slice())?;
            }
        }
        let (applied, again) = self.replenish_bulk_in(&tx, scope, epoch)?;
        report.applied += applied;
        report.already_applied += again;
        tx.commit()?;
        Ok(report)
    }
}

impl Vault {
    /// The stored account under `key`, or a fresh one opened in `epoch` with the
    /// Vault's default budget.
    pub(crate) fn stored_account(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        key: (&str, &str),
        epoch: EpochId,
    ) -> Result<BudgetAccount, VaultError> {
        Ok(match table.get(key)? {
            Some(v) => bcs::from_bytes(v.value())?,
            None => BudgetAccount::new(self.config.default_budget, epoch),
        })
    }
}

/// Refuses with [`VaultError::TaskReleased`] the first of `tasks` released here
/// ([`Vault::release_task`]): such a task never reserves again.
pub(crate) fn refuse_released<'t>(
    tx: &redb::WriteTransaction,
    tasks: impl IntoIterator<Item = &'t TaskId>,
) -> Result<(), VaultError> {
    let released = tx.open_table(RELEASED_TASKS)?;
    for task in tasks {
        if released.get(task.as_str())?.is_some() {
            return Err(VaultError::TaskReleased(task.to_string()));
        }
    }
    Ok(())
}

pub(crate) fn current_epoch(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    initial: EpochId,
) -> Result<EpochId, VaultError> {
    Ok(match meta.get("epoch")? {
        Some(v) => EpochId(read_u64(v.value())),
        None => initial,
    })
}
