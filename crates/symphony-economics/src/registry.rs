//! `PolicyRegistry`: policy versions and the epochs at which they activate.
//!
//! Seed 002 "Protocol Configuration": parameters change only at epoch boundaries; a
//! task is evaluated under the policy version active at its admission, even if it is
//! later deprecated (no retroactive application); parameter resolution is a
//! deterministic function of `(epoch_id, semantic_version, policy_version)`.
//!
//! Invariants: version numbers are dense from 1; activation epochs strictly increase
//! with the version; a version proposed in epoch `e` activates at `e + 1` or later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::{content_hash, Digest, EpochId, PolicyVersion, SemanticVersion};

use crate::error::EconomicsError;
use crate::policy::PolicyParams;

/// One registered policy version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The version number.
    pub version: PolicyVersion,
    /// The epoch in which the change was proposed (genesis: epoch 0).
    pub proposed_in: EpochId,
    /// The first epoch in which new tasks are admitted under it.
    pub activation_epoch: EpochId,
    /// The parameters.
    pub params: PolicyParams,
}

/// The parameters a task runs under, with the context they were resolved in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedParams {
    /// The epoch the resolution is for.
    pub epoch_id: EpochId,
    /// The semantic registry version (carried for replay; economics does not vary by it).
    pub semantic_version: SemanticVersion,
    /// The policy version the task was admitted under.
    pub policy_version: PolicyVersion,
    /// When that version activated.
    pub activation_epoch: EpochId,
    /// Whether a newer version is active at `epoch_id` (the task keeps its own).
    pub superseded: bool,
    /// The parameters.
    pub params: PolicyParams,
}

/// Domain tag of [`ResolvedParams::digest`].
pub const RESOLVED_PARAMS_TAG: &str = "scp/resolved-params/v1";

impl ResolvedParams {
    /// Content hash of the canonical (BCS) bytes: equal inputs, equal digest.
    pub fn digest(&self) -> Result<Digest, EconomicsError> {
        content_hash(RESOLVED_PARAMS_TAG, self).map_err(|_| EconomicsError::InvalidParam {
            field: "resolved params",
            reason: "cannot be encoded canonically",
        })
    }
}

/// All policy versions, keyed by number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRegistry {
    records: BTreeMap<PolicyVersion, PolicyRecord>,
}

impl PolicyRegistry {
    /// A registry whose version 1 holds `params`, active from epoch 0.
    pub fn genesis(params: PolicyParams) -> Result<Self, EconomicsError> {
        params.validate()?;
        let version = PolicyVersion::GENESIS;
        let record = PolicyRecord {
            version,
            proposed_in: EpochId::GENESIS,
            activation_epoch: EpochId::GENESIS,
            params,
        };
        Ok(PolicyRegistry {
            records: BTreeMap::from([(version, record)]),
        })
    }

    fn latest(&self) -> Option<&PolicyRecord> {
        self.records.values().next_back()
    }

    /// Registers a change proposed in `proposed_in` to activate at `activation_epoch`
    /// (at least `proposed_in + 1`, and after every earlier activation). Returns the
    /// new version number.
    pub fn propose(
        &mut self,
        params: PolicyParams,
        proposed_in: EpochId,
        activation_epoch: EpochId,
    ) -> Result<PolicyVersion, EconomicsError> {
        params.validate()?;
        if activation_epoch.0 <= proposed_in.0 {
            return Err(EconomicsError::ActivationNotAtFutureBoundary {
                proposed_in,
                activation_epoch,
            });
        }
        let (last_version, latest_activation) = match self.latest() {
            Some(r) => (r.version.0, r.activation_epoch),
            None => (0, EpochId::GENESIS),
        };
        if !self.records.is_empty() && activation_epoch <= latest_activation {
            return Err(EconomicsError::ActivationNotMonotonic {
                activation_epoch,
                latest_activation,
            });
        }
        let version = PolicyVersion(
            last_version
                .checked_add(1)
                .ok_or(EconomicsError::VersionSpaceExhausted)?,
        );
        self.records.insert(
            version,
            PolicyRecord {
                version,
                proposed_in,
                activation_epoch,
                params,
            },
        );
        Ok(version)
    }

    /// The version new tasks are admitted under at `epoch`: the latest whose
    /// activation epoch is at or before it.
    pub fn active_version_at(&self, epoch: EpochId) -> Option<PolicyVersion> {
        self.records
            .values()
            .rev()
            .find(|r| r.activation_epoch <= epoch)
            .map(|r| r.version)
    }

    /// Every registered version, in version order.
    pub fn records(&self) -> impl Iterator<Item = &PolicyRecord> {
        self.records.values()
    }

    /// A registered version.
    pub fn record(&self, version: PolicyVersion) -> Option<&PolicyRecord> {
        self.records.get(&version)
    }

    /// Resolves the parameters for a task admitted under `policy_version`, evaluated
    /// at `epoch_id`. Pure: identical inputs give identical output (and bytes).
    ///
    /// A version that is not yet active at `epoch_id` is refused; a version that a
    /// newer one has superseded still resolves (no retroactive application).
    pub fn resolve(
        &self,
        epoch_id: EpochId,
        semantic_version: SemanticVersion,
        policy_version: PolicyVersion,
    ) -> Result<ResolvedParams, EconomicsError> {
        let record =
            self.records
                .get(&policy_version)
                .ok_or(EconomicsError::UnknownPolicyVersion {
                    version: policy_version,
                })?;
        if record.activation_epoch > epoch_id {
            return Err(EconomicsError::PolicyNotYetActive {
                version: policy_version,
                activation_epoch: record.activation_epoch,
                epoch: epoch_id,
            });
        }
        let superseded = self.active_version_at(epoch_id) != Some(policy_version);
        Ok(ResolvedParams {
            epoch_id,
            semantic_version,
            policy_version,
            activation_epoch: record.activation_epoch,
            superseded,
            params: record.params.clone(),
        })
    }
}
