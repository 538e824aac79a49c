//! The Governance Service's part of the replicated master state: the current epoch
//! and the active policy version. Admission reads both from here (never a literal)
//! and the master state machine refuses an envelope that names another epoch or
//! policy version than the ones in force, so a replay reproduces the same values.

use serde::{Deserialize, Serialize};
use symphony_core::ids::{EpochId, PolicyVersion, TaskId};

use crate::MasterError;

/// Current epoch and active policy version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceState {
    /// The epoch tasks are admitted in now.
    pub epoch: EpochId,
    /// The policy version tasks are admitted under now.
    pub policy_version: PolicyVersion,
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
        }
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
}
