//! The composite hierarchy: parent task → sub-task per round → slice per Vault per
//! round. For N rounds across M Vaults: 1 + N + N×M objects, each with its own
//! lifecycle (overview, "Composite and Iterative Tasks").
//!
//! Single-round tasks (query, compute, parse) use the same structure with one
//! sub-task, so the orchestrator has one code path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{EpochId, SliceId, SubTaskId, TaskId, VaultId};
use crate::lifecycle::{SliceEvent, SliceState, TaskEvent, TaskState, TransitionError};

/// A refused operation on the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompositeError {
    /// A lifecycle refused the event.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// No such round.
    #[error("task {task} has no round {round}")]
    UnknownRound {
        /// The parent.
        task: TaskId,
        /// The round asked for.
        round: u32,
    },
    /// No such slice.
    #[error("round {sub_task} has no slice for vault {vault}")]
    UnknownSlice {
        /// The sub-task.
        sub_task: SubTaskId,
        /// The Vault asked for.
        vault: VaultId,
    },
    /// A new round while the previous one is not finished, or past the maximum.
    #[error("cannot open round {round} of {task}: {reason}")]
    RoundRefused {
        /// The parent.
        task: TaskId,
        /// The round.
        round: u32,
        /// Why.
        reason: String,
    },
}

/// One slice: one Vault's part of one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// Identity.
    pub id: SliceId,
    /// Lifecycle state.
    pub state: SliceState,
}

/// One round of a composite task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubTask {
    /// Identity.
    pub id: SubTaskId,
    /// The epoch the round was assigned at dispatch; it settles there.
    pub epoch_id: EpochId,
    /// Lifecycle state.
    pub state: TaskState,
    /// One slice per participating Vault.
    pub slices: BTreeMap<VaultId, Slice>,
}

impl SubTask {
    /// Slices that reached `state`.
    pub fn count_in(&self, state: SliceState) -> usize {
        self.slices.values().filter(|s| s.state == state).count()
    }
}

/// A parent task and its rounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeTask {
    /// The parent task id.
    pub task_id: TaskId,
    /// The parent's lifecycle state.
    pub state: TaskState,
    /// Maximum rounds (1 for single-round classes).
    pub max_rounds: u32,
    /// The participating Vaults.
    pub vaults: Vec<VaultId>,
    /// The rounds opened so far.
    pub rounds: Vec<SubTask>,
}

impl CompositeTask {
    /// A new parent in `accepted`.
    pub fn new(task_id: TaskId, max_rounds: u32, vaults: Vec<VaultId>) -> Self {
        CompositeTask {
            task_id,
            state: TaskState::Accepted,
            max_rounds,
            vaults,
            rounds: Vec::new(),
        }
    }

    /// Applies an event to the parent.
    pub fn advance(&mut self, event: TaskEvent) -> Result<TaskState, CompositeError> {
        self.state = self.state.next(event)?;
        Ok(self.state)
    }

    /// Opens the next round (sub-task) in `epoch`, with one `assigned` slice per Vault.
    /// The sub-task starts `accepted` and is moved to `dispatched` here, since opening
    /// a round is its admission, resolution (inherited from the parent) and dispatch.
    pub fn open_round(&mut self, epoch: EpochId) -> Result<&SubTask, CompositeError> {
        let round = self.rounds.len() as u32;
        let refuse = |reason: &str| CompositeError::RoundRefused {
            task: self.task_id.clone(),
            round,
            reason: reason.to_owned(),
        };
        if self.state != TaskState::Dispatched {
            return Err(refuse("the parent task is not dispatched"));
        }
        if round >= self.max_rounds {
            return Err(refuse("max_rounds reached"));
        }
        if let Some(last) = self.rounds.last() {
            if !last.state.is_terminal() {
                return Err(refuse("the previous round is still open"));
            }
        }
        let id = SubTaskId {
            parent: self.task_id.clone(),
            round,
        };
        let mut state = TaskState::Accepted;
        state = state.next(TaskEvent::BeginResolution)?;
        state = state.next(TaskEvent::Dispatch)?;
        let slices = self
            .vaults
            .iter()
            .map(|v| {
                let slice = Slice {
                    id: SliceId {
                        sub_task: id.clone(),
                        vault: v.clone(),
                    },
                    state: SliceState::Assigned,
                };
                (v.clone(), slice)
            })
            .collect();
        self.rounds.push(SubTask {
            id,
            epoch_id: epoch,
            state,
            slices,
        });
        let last = self.rounds.len() - 1;
        Ok(&self.rounds[last])
    }

    /// The round, if opened.
    pub fn round(&self, round: u32) -> Result<&SubTask, CompositeError> {
        self.rounds
            .get(round as usize)
            .ok_or(CompositeError::UnknownRound {
                task: self.task_id.clone(),
                round,
            })
    }

    fn round_mut(&mut self, round: u32) -> Result<&mut SubTask, CompositeError> {
        let task = self.task_id.clone();
        self.rounds
            .get_mut(round as usize)
            .ok_or(CompositeError::UnknownRound { task, round })
    }

    /// Applies an event to a round.
    pub fn advance_round(
        &mut self,
        round: u32,
        event: TaskEvent,
    ) -> Result<TaskState, CompositeError> {
        let sub = self.round_mut(round)?;
        sub.state = sub.state.next(event)?;
        Ok(sub.state)
    }

    /// Applies an event to a slice.
    pub fn advance_slice(
        &mut self,
        round: u32,
        vault: &VaultId,
        event: SliceEvent,
    ) -> Result<SliceState, CompositeError> {
        let sub = self.round_mut(round)?;
        let sub_id = sub.id.clone();
        let slice = sub
            .slices
            .get_mut(vault)
            .ok_or_else(|| CompositeError::UnknownSlice {
                sub_task: sub_id,
                vault: vault.clone(),
            })?;
        slice.state = slice.state.next(event)?;
        Ok(slice.state)
    }

    /// Number of protocol objects: 1 parent + rounds + slices.
    pub fn object_count(&self) -> usize {
        1 + self.rounds.len() + self.rounds.iter().map(|r| r.slices.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(m: usize, n: u32) -> CompositeTask {
        let vaults = (0..m)
            .map(|i| VaultId::new(format!("v{i}")).unwrap())
            .collect();
        let mut c = CompositeTask::new(TaskId::new("train-1").unwrap(), n, vaults);
        c.advance(TaskEvent::BeginResolution).unwrap();
        c.advance(TaskEvent::Dispatch).unwrap();
        c
    }

    fn finish_round(c: &mut CompositeTask, r: u32) {
        let vaults = c.vaults.clone();
        for v in &vaults {
            c.advance_slice(r, v, SliceEvent::Return).unwrap();
            c.advance_slice(r, v, SliceEvent::Verify).unwrap();
        }
        for e in [
            TaskEvent::ExecutionFinished,
            TaskEvent::VerificationAccepted,
            TaskEvent::SettlementFinalized,
        ] {
            c.advance_round(r, e).unwrap();
        }
    }

    #[test]
    fn one_plus_n_plus_n_times_m() {
        let (m, n) = (4usize, 3u32);
        let mut c = parent(m, n);
        for r in 0..n {
            c.open_round(EpochId(u64::from(r) / 2)).unwrap();
            finish_round(&mut c, r);
        }
        assert_eq!(c.object_count(), 1 + n as usize + n as usize * m);
        assert!(c.open_round(EpochId(9)).is_err(), "max_rounds enforced");
        assert_eq!(c.round(2).unwrap().epoch_id, EpochId(1));
    }

    #[test]
    fn rounds_are_sequential_and_slices_have_lifecycles() {
        let mut c = parent(2, 5);
        c.open_round(EpochId(0)).unwrap();
        assert!(matches!(
            c.open_round(EpochId(0)),
            Err(CompositeError::RoundRefused { .. })
        ));
        let v0 = VaultId::new("v0").unwrap();
        assert!(c.advance_slice(0, &v0, SliceEvent::Verify).is_err());
        c.advance_slice(0, &v0, SliceEvent::Timeout).unwrap();
        assert!(c.advance_slice(0, &v0, SliceEvent::Return).is_err());
        assert_eq!(c.round(0).unwrap().count_in(SliceState::TimedOut), 1);
        assert!(c
            .advance_slice(0, &VaultId::new("zz").unwrap(), SliceEvent::Return)
            .is_err());
        assert!(c.advance_round(7, TaskEvent::Reject).is_err());
    }
}
