//! The Governance Service's part of the replicated master state: the current epoch
//! and the active policy version. Admission reads both from here (never a literal)
//! and the master state machine refuses an envelope that names another epoch or
//! policy version than the ones in force, so a replay reproduces the same values.

use serde::{Deserialize, Serialize};
use symphony_core::ids::{EpochId, PolicyVersion, TaskId};

use crate::{Event, MasterError};

/// Current epoch and active policy version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceState {
    /// The epoch tasks are admitted in now.
    pub epoch: EpochId,
    /// The policy version tasks are admitted under now.
    pub policy_version: PolicyVersion,
    /// When the current epoch opened, ms (0 at genesis).
    pub epoch_opened_at_ms: u64,
}

impl Default for GovernanceState {
    fn default() -> Self {
        GovernanceState::genesis()
    }
}

impl GovernanceState {
    /// The state at genesis: the first epoch under the genesis policy version.
    pub fn genesis() -> Self {
        GovernanceState {
            epoch: EpochId::GENESIS,
            policy_version: PolicyVersion::GENESIS,
            epoch_opened_at_ms: 0,
        }
    }

    /// Opens `epoch`: epochs only move forward.
    pub(crate) fn open_epoch(
        &mut self,
        epoch: EpochId,
        at_ms: u64,
    ) -> Result<Vec<Event>, MasterError> {
        if epoch <= self.epoch {
            return Err(MasterError::Governance(format!(
                "{epoch} cannot open: {} is current and epochs only move forward",
                self.epoch
            )));
        }
        if at_ms < self.epoch_opened_at_ms {
            return Err(MasterError::Governance(format!(
                "{epoch} cannot open at {at_ms} ms, before {} opened ({} ms)",
                self.epoch, self.epoch_opened_at_ms
            )));
        }
        self.epoch = epoch;
        self.epoch_opened_at_ms = at_ms;
        Ok(vec![Event::EpochOpened { epoch, at_ms }])
    }

    /// An envelope is admitted only in the current epoch under the active policy.
    pub(crate) fn check_admission(
        &self,
        task_id: &TaskId,
        epoch: EpochId,
        policy: PolicyVersion,
    ) -> Result<(), MasterError> {
        if epoch != self.epoch {
            return Err(MasterError::Refused {
                task_id: task_id.clone(),
                reason: format!(
                    "envelope names {epoch}, but admission is in {} now",
                    self.epoch
                ),
            });
        }
        if policy != self.policy_version {
            return Err(MasterError::Refused {
                task_id: task_id.clone(),
                reason: format!(
                    "envelope names {policy}, but {} is active",
                    self.policy_version
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_outside_the_current_epoch_or_policy_is_refused() {
        let g = GovernanceState::genesis();
        let t = TaskId::new("t-1").unwrap();
        assert!(g
            .check_admission(&t, EpochId::GENESIS, PolicyVersion::GENESIS)
            .is_ok());
        let e = g
            .check_admission(&t, EpochId(1), PolicyVersion::GENESIS)
            .unwrap_err();
        assert!(e.to_string().contains("epoch-1"), "{e}");
        let e = g
            .check_admission(&t, EpochId::GENESIS, PolicyVersion(2))
            .unwrap_err();
        assert!(e.to_string().contains("policy-v2"), "{e}");
    }

    #[test]
    fn epochs_only_move_forward() {
        let mut g = GovernanceState::genesis();
        assert!(g.open_epoch(EpochId(2), 10).is_ok());
        assert_eq!(g.epoch, EpochId(2));
        let e = g.open_epoch(EpochId(2), 20).unwrap_err();
        assert!(e.to_string().contains("only move forward"), "{e}");
        let e = g.open_epoch(EpochId(3), 5).unwrap_err();
        assert!(e.to_string().contains("before epoch-2 opened"), "{e}");
        assert_eq!(g.epoch, EpochId(2));
    }
}
