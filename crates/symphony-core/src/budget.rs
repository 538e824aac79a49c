//! Privacy budget: per data subject, per usage scope, in fixed-point epsilon.
//!
//! The reserve-commit model of the overview:
//! - admission **reserves** the estimated budget ([`BudgetOp::Reserve`]);
//! - execution **commits** the actual consumption, at most the reservation
//!   ([`BudgetOp::Commit`]);
//! - failure before execution **releases** the reservation ([`BudgetOp::Release`]);
//! - failure after execution **commits at the estimate** ([`BudgetOp::CommitAtEstimate`]),
//!   because information may already have been disclosed;
//! - **replenishment** only at an epoch boundary ([`BudgetOp::Replenish`]), by an
//!   amount the policy sets.
//!
//! Every operation is idempotent by task id: a retried reserve or commit is reported
//! as [`BudgetOutcome::AlreadyApplied`] and changes nothing.
//!
//! Invariant: `committed + Σ reservations ≤ capacity` after every operation, and no
//! quantity is ever negative (unsigned fixed point, checked arithmetic).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{EpochId, TaskId};

/// Privacy loss ε in fixed point: an integer count of micro-epsilon (10⁻⁶ ε).
///
/// Sums of budgets must match exactly, so ε is never a float inside the protocol.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Epsilon {
    /// Micro-epsilon units.
    pub micro: u64,
}

impl Epsilon {
    /// Zero budget.
    pub const ZERO: Epsilon = Epsilon { micro: 0 };
    /// Micro-units per whole ε.
    pub const SCALE: u64 = 1_000_000;

    /// ε from micro-units.
    pub const fn from_micro(micro: u64) -> Self {
        Epsilon { micro }
    }

    /// ε from thousandths (milli-epsilon).
    pub const fn from_milli(milli: u64) -> Self {
        Epsilon {
            micro: milli * 1_000,
        }
    }

    /// Parses a decimal like `"0.25"` or `"3"` (at most 6 fractional digits).
    pub fn parse_decimal(text: &str) -> Result<Self, BudgetError> {
        let bad = || BudgetError::BadEpsilon(text.to_owned());
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
            return Err(bad());
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut frac_micro: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micro += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        whole
            .checked_mul(Self::SCALE)
            .and_then(|w| w.checked_add(frac_micro))
            .map(Epsilon::from_micro)
            .ok_or_else(bad)
    }

    /// Checked addition.
    pub fn checked_add(self, other: Epsilon) -> Option<Epsilon> {
        self.micro.checked_add(other.micro).map(Epsilon::from_micro)
    }

    /// Checked subtraction.
    pub fn checked_sub(self, other: Epsilon) -> Option<Epsilon> {
        self.micro.checked_sub(other.micro).map(Epsilon::from_micro)
    }

    /// Saturating subtraction (never below zero).
    pub fn saturating_sub(self, other: Epsilon) -> Epsilon {
        Epsilon::from_micro(self.micro.saturating_sub(other.micro))
    }

    /// Checked multiplication by an integer count.
    pub fn checked_mul(self, n: u64) -> Option<Epsilon> {
        self.micro.checked_mul(n).map(Epsilon::from_micro)
    }

    /// The value as a float, for display only.
    pub fn as_f64(self) -> f64 {
        self.micro as f64 / Self::SCALE as f64
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.micro / Self::SCALE;
        let frac = self.micro % Self::SCALE;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:06}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

/// One operation on a subject's budget for one scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetOp {
    /// Admission reserves the estimate for a task.
    Reserve {
        /// The task.
        task: TaskId,
        /// The estimate.
        amount: Epsilon,
    },
    /// Execution commits the actual consumption (≤ the reservation).
    Commit {
        /// The task.
        task: TaskId,
        /// The actual consumption.
        actual: Epsilon,
    },
    /// Failure before execution: the reservation is returned.
    Release {
        /// The task.
        task: TaskId,
    },
    /// Failure after execution: the whole reservation is committed.
    CommitAtEstimate {
        /// The task.
        task: TaskId,
    },
    /// Epoch boundary: up to `amount` of committed budget becomes available again.
    Replenish {
        /// The epoch that begins.
        epoch: EpochId,
        /// How much the policy replenishes.
        amount: Epsilon,
    },
}

/// What an accepted operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetOutcome {
    /// The operation changed the account.
    Applied,
    /// The same operation had been applied before; nothing changed.
    AlreadyApplied,
}

/// A refused budget operation. The account is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// Not enough budget left for the reservation.
    #[error("privacy budget exhausted: {requested} ε requested, {remaining} ε remaining")]
    Insufficient {
        /// Requested ε.
        requested: Epsilon,
        /// Remaining ε.
        remaining: Epsilon,
    },
    /// The task already holds a reservation of a different amount.
    #[error("task {task} already reserved {existing} ε; a second reservation of {requested} ε is refused")]
    ConflictingReservation {
        /// The task.
        task: TaskId,
        /// What it holds.
        existing: Epsilon,
        /// What was asked.
        requested: Epsilon,
    },
    /// Commit or release for a task that holds no reservation.
    #[error("task {0} holds no privacy budget reservation")]
    NoReservation(TaskId),
    /// The actual consumption exceeds the reservation.
    #[error("task {task} tried to commit {actual} ε but reserved only {reserved} ε")]
    ExceedsReservation {
        /// The task.
        task: TaskId,
        /// The attempted commit.
        actual: Epsilon,
        /// The reservation.
        reserved: Epsilon,
    },
    /// The task already finished with a different outcome.
    #[error(
        "task {task} already finished having committed {committed} ε; the new operation conflicts"
    )]
    AlreadyFinished {
        /// The task.
        task: TaskId,
        /// What it committed.
        committed: Epsilon,
    },
    /// Replenishment outside an epoch boundary.
    #[error("replenishment for {requested} refused: the account was last replenished at {last}; budgets replenish only when a new epoch begins")]
    NotEpochBoundary {
        /// The epoch asked for.
        requested: EpochId,
        /// The last replenished epoch.
        last: EpochId,
    },
    /// An ε value that is not a decimal with at most 6 fractional digits.
    #[error("{0:?} is not a valid ε (a non-negative decimal with at most 6 fractional digits)")]
    BadEpsilon(String),
    /// Arithmetic would overflow u64 micro-epsilon.
    #[error("privacy budget arithmetic overflow")]
    Overflow,
}

/// A subject's budget for one usage scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetAccount {
    capacity: Epsilon,
    committed: Epsilon,
    reservations: BTreeMap<TaskId, Epsilon>,
    finished: BTreeMap<TaskId, Epsilon>,
    last_replenished: EpochId,
}

impl BudgetAccount {
    /// A fresh account with `capacity` ε, opened in `epoch`.
    pub fn new(capacity: Epsilon, epoch: EpochId) -> Self {
        BudgetAccount {
            capacity,
            committed: Epsilon::ZERO,
            reservations: BTreeMap::new(),
            finished: BTreeMap::new(),
            last_replenished: epoch,
        }
    }

    /// Total capacity.
    pub fn capacity(&self) -> Epsilon {
        self.capacity
    }

    /// Committed (spent) ε.
    pub fn committed(&self) -> Epsilon {
        self.committed
    }

    /// Sum of open reservations.
    pub fn reserved(&self) -> Epsilon {
        Epsilon::from_micro(self.reservations.values().map(|e| e.micro).sum())
    }

    /// The reservation a task holds, if any.
    pub fn reservation_of(&self, task: &TaskId) -> Option<Epsilon> {
        self.reservations.get(task).copied()
    }

    /// What a finished task committed, if it finished.
    pub fn finished_of(&self, task: &TaskId) -> Option<Epsilon> {
        self.finished.get(task).copied()
    }

    /// Budget neither committed nor reserved.
    pub fn remaining(&self) -> Epsilon {
        self.capacity
            .saturating_sub(self.committed)
            .saturating_sub(self.reserved())
    }

    /// The epoch of the last replenishment.
    pub fn last_replenished(&self) -> EpochId {
        self.last_replenished
    }

    /// Whether `amount` could be reserved now.
    pub fn can_reserve(&self, amount: Epsilon) -> bool {
        amount <= self.remaining()
    }

    /// Applies one operation; on error the account is unchanged.
    pub fn apply(&mut self, op: &BudgetOp) -> Result<BudgetOutcome, BudgetError> {
        match op {
            BudgetOp::Reserve { task, amount } => self.reserve(task, *amount),
            BudgetOp::Commit { task, actual } => self.commit(task, *actual),
            BudgetOp::Release { task } => self.finish(task, Epsilon::ZERO, true),
            BudgetOp::CommitAtEstimate { task } => {
                if let Some(done) = self.finished.get(task) {
                    return self.already(task, *done, *done);
                }
                let reserved = self
                    .reservations
                    .get(task)
                    .copied()
                    .ok_or_else(|| BudgetError::NoReservation(task.clone()))?;
                self.commit(task, reserved)
            }
            BudgetOp::Replenish { epoch, amount } => self.replenish(*epoch, *amount),
        }
    }

    /// Folds in a reservation of `amount` for `task` that was held outside this
    /// account (a Vault's bulk reservation: one record for a task's many
    /// subjects), and its outcome if the task finished: `Some(actual)` committed
    /// `actual` (zero: released). There is no balance check here: the reservation
    /// was checked when it was made, against this account with everything held
    /// outside it, so folding it in later never overspends. Refused (account
    /// unchanged) if the account already knows the task, or if `actual` exceeds
    /// `amount`.
    pub fn include_held(
        &mut self,
        task: &TaskId,
        amount: Epsilon,
        finished: Option<Epsilon>,
    ) -> Result<(), BudgetError> {
        if let Some(done) = self.finished.get(task) {
            return Err(BudgetError::AlreadyFinished {
                task: task.clone(),
                committed: *done,
            });
        }
        if let Some(existing) = self.reservations.get(task) {
            return Err(BudgetError::ConflictingReservation {
                task: task.clone(),
                existing: *existing,
                requested: amount,
            });
        }
        match finished {
            None => {
                self.reservations.insert(task.clone(), amount);
            }
            Some(actual) => {
                if actual > amount {
                    return Err(BudgetError::ExceedsReservation {
                        task: task.clone(),
                        actual,
                        reserved: amount,
                    });
                }
                self.committed = self
                    .committed
                    .checked_add(actual)
                    .ok_or(BudgetError::Overflow)?;
                self.finished.insert(task.clone(), actual);
            }
        }
        Ok(())
    }

    fn reserve(&mut self, task: &TaskId, amount: Epsilon) -> Result<BudgetOutcome, BudgetError> {
        if let Some(done) = self.finished.get(task) {
            return Err(BudgetError::AlreadyFinished {
                task: task.clone(),
                committed: *done,
            });
        }
        if let Some(existing) = self.reservations.get(task) {
            return if *existing == amount {
                Ok(BudgetOutcome::AlreadyApplied)
            } else {
                Err(BudgetError::ConflictingReservation {
                    task: task.clone(),
                    existing: *existing,
                    requested: amount,
                })
            };
        }
        let remaining = self.remaining();
        if amount > remaining {
            return Err(BudgetError::Insufficient {
                requested: amount,
                remaining,
            });
        }
        self.reservations.insert(task.clone(), amount);
        Ok(BudgetOutcome::Applied)
    }

    fn commit(&mut self, task: &TaskId, actual: Epsilon) -> Result<BudgetOutcome, BudgetError> {
        self.finish(task, actual, false)
    }

    fn already(
        &self,
        task: &TaskId,
        done: Epsilon,
        wanted: Epsilon,
    ) -> Result<BudgetOutcome, BudgetError> {
        if done == wanted {
            Ok(BudgetOutcome::AlreadyApplied)
        } else {
            Err(BudgetError::AlreadyFinished {
                task: task.clone(),
                committed: done,
            })
        }
    }

    /// Ends a reservation, committing `actual` (zero for a release).
    fn finish(
        &mut self,
        task: &TaskId,
        actual: Epsilon,
        release: bool,
    ) -> Result<BudgetOutcome, BudgetError> {
        if let Some(done) = self.finished.get(task) {
            return self.already(task, *done, actual);
        }
        let reserved = self
            .reservations
            .get(task)
            .copied()
            .ok_or_else(|| BudgetError::NoReservation(task.clone()))?;
        if !release && actual > reserved {
            return Err(BudgetError::ExceedsReservation {
                task: task.clone(),
                actual,
                reserved,
            });
        }
        let committed = self
            .committed
            .checked_add(actual)
            .ok_or(BudgetError::Overflow)?;
        self.reservations.remove(task);
        self.committed = committed;
        self.finished.insert(task.clone(), actual);
        Ok(BudgetOutcome::Applied)
    }

    fn replenish(&mut self, epoch: EpochId, amount: Epsilon) -> Result<BudgetOutcome, BudgetError> {
        if epoch <= self.last_replenished {
            return Err(BudgetError::NotEpochBoundary {
                requested: epoch,
                last: self.last_replenished,
            });
        }
        self.committed = self.committed.saturating_sub(amount);
        self.last_replenished = epoch;
        Ok(BudgetOutcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    #[test]
    fn epsilon_parses_and_prints() {
        assert_eq!(Epsilon::parse_decimal("0.25").unwrap().micro, 250_000);
        assert_eq!(Epsilon::parse_decimal("3").unwrap().micro, 3_000_000);
        assert_eq!(Epsilon::parse_decimal(".5").unwrap().micro, 500_000);
        assert!(Epsilon::parse_decimal("-1").is_err());
        assert!(Epsilon::parse_decimal("0.1234567").is_err());
        assert!(Epsilon::parse_decimal("").is_err());
        assert_eq!(Epsilon::from_micro(1_500_000).to_string(), "1.5");
        assert_eq!(Epsilon::from_micro(2_000_000).to_string(), "2");
    }

    /// A reservation held outside the account and folded in gives the account the
    /// ops would have given it.
    #[test]
    fn a_held_reservation_folds_in_like_the_ops() {
        let amount = Epsilon::from_milli(250);
        for finished in [None, Some(Epsilon::ZERO), Some(Epsilon::from_milli(200))] {
            let mut by_ops = BudgetAccount::new(Epsilon::from_milli(1000), EpochId(0));
            by_ops
                .apply(&BudgetOp::Reserve {
                    task: t("a"),
                    amount,
                })
                .unwrap();
            match finished {
                Some(a) if a == Epsilon::ZERO => {
                    by_ops.apply(&BudgetOp::Release { task: t("a") }).unwrap();
                }
                Some(actual) => {
                    by_ops
                        .apply(&BudgetOp::Commit {
                            task: t("a"),
                            actual,
                        })
                        .unwrap();
                }
                None => {}
            }
            let mut held = BudgetAccount::new(Epsilon::from_milli(1000), EpochId(0));
            held.include_held(&t("a"), amount, finished).unwrap();
            assert_eq!(held, by_ops);
            // Twice is refused, unchanged.
            assert!(held.include_held(&t("a"), amount, finished).is_err());
            assert_eq!(held, by_ops);
        }
        let mut a = BudgetAccount::new(Epsilon::from_milli(1000), EpochId(0));
        assert!(matches!(
            a.include_held(&t("x"), amount, Some(Epsilon::from_milli(300))),
            Err(BudgetError::ExceedsReservation { .. })
        ));
    }

    #[test]
    fn reserve_commit_release_rules() {
        let mut a = BudgetAccount::new(Epsilon::from_milli(1000), EpochId(0));
        let r = |task: &str, m: u64| BudgetOp::Reserve {
            task: t(task),
            amount: Epsilon::from_milli(m),
        };
        assert_eq!(a.apply(&r("a", 600)), Ok(BudgetOutcome::Applied));
        assert_eq!(a.apply(&r("a", 600)), Ok(BudgetOutcome::AlreadyApplied));
        assert!(matches!(
            a.apply(&r("a", 500)),
            Err(BudgetError::ConflictingReservation { .. })
        ));
        assert!(matches!(
            a.apply(&r("b", 500)),
            Err(BudgetError::Insufficient { .. })
        ));
        assert_eq!(a.apply(&r("b", 400)), Ok(BudgetOutcome::Applied));
        assert_eq!(a.remaining(), Epsilon::ZERO);
        // commit more than reserved: refused
        assert!(matches!(
            a.apply(&BudgetOp::Commit {
                task: t("a"),
                actual: Epsilon::from_milli(700)
            }),
            Err(BudgetError::ExceedsReservation { .. })
        ));
        // commit less: the rest returns
        let c = BudgetOp::Commit {
            task: t("a"),
            actual: Epsilon::from_milli(500),
        };
        assert_eq!(a.apply(&c), Ok(BudgetOutcome::Applied));
        assert_eq!(a.apply(&c), Ok(BudgetOutcome::AlreadyApplied));
        assert_eq!(a.committed(), Epsilon::from_milli(500));
        assert_eq!(a.remaining(), Epsilon::from_milli(100));
        // failure before execution releases
        assert_eq!(
            a.apply(&BudgetOp::Release { task: t("b") }),
            Ok(BudgetOutcome::Applied)
        );
        assert_eq!(a.remaining(), Epsilon::from_milli(500));
        // a finished task cannot reserve again
        assert!(matches!(
            a.apply(&r("b", 1)),
            Err(BudgetError::AlreadyFinished { .. })
        ));
    }

    #[test]
    fn failure_after_execution_commits_estimate() {
        let mut a = BudgetAccount::new(Epsilon::from_milli(1000), EpochId(0));
        a.apply(&BudgetOp::Reserve {
            task: t("x"),
            amount: Epsilon::from_milli(300),
        })
        .unwrap();
        a.apply(&BudgetOp::CommitAtEstimate { task: t("x") })
            .unwrap();
        assert_eq!(a.committed(), Epsilon::from_milli(300));
        assert_eq!(
            a.apply(&BudgetOp::CommitAtEstimate { task: t("x") }),
            Ok(BudgetOutcome::AlreadyApplied)
        );
    }

    #[test]
    fn replenish_only_at_new_epoch() {
        let mut a = BudgetAccount::new(Epsilon::from_milli(1000), EpochId(3));
        a.apply(&BudgetOp::Reserve {
            task: t("x"),
            amount: Epsilon::from_milli(1000),
        })
        .unwrap();
        a.apply(&BudgetOp::CommitAtEstimate { task: t("x") })
            .unwrap();
        let rep = |e| BudgetOp::Replenish {
            epoch: EpochId(e),
            amount: Epsilon::from_milli(400),
        };
        assert!(matches!(
            a.apply(&rep(3)),
            Err(BudgetError::NotEpochBoundary { .. })
        ));
        assert_eq!(a.apply(&rep(4)), Ok(BudgetOutcome::Applied));
        assert_eq!(a.remaining(), Epsilon::from_milli(400));
        assert!(a.apply(&rep(4)).is_err());
    }
}
