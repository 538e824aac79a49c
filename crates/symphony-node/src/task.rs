//! A task request of any class, as a submitter writes it and signs it: the one entry
//! point of the protocol pipeline (Request → Admission → Execution → Settlement →
//! Result). The class tag picks the class module (`query`, `compute`, `train`,
//! `parse`) that supplies what differs per class; the planes are the same.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{canonical_bytes, tagged_hash, Digest};
use symphony_core::envelope::TaskClass;

use crate::network::{CampaignOutcome, CampaignSpec};
use crate::training::{TrainOutcome, TrainingSpec};
use crate::NodeError;

/// What a `compute` task groups its result by.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The subject's home city (geography domain).
    HomeCity,
}

/// The statistic a `compute` task releases per group (besides the group's count).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Mean over customers of each customer's mean basket value (minor units) in
    /// the window, each customer's value clipped to the contribution bound.
    MeanBasketValue,
}

/// A bounded computation over authorized records returning a noisy aggregate, as
/// written in `examples/compute.toml`: "number of customers and mean basket value
/// per home city for customers of brand X in the last N days".
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    /// The submitter (actor id).
    pub submitter: String,
    /// Brand bought.
    pub brand: String,
    /// Country of the purchases (ISO code as in the Vault data).
    pub country: String,
    /// Optional city of the purchases.
    #[serde(default)]
    pub city: Option<String>,
    /// Window of qualifying purchases, days.
    pub window_days: u32,
    /// Grouping of the result.
    pub group_by: GroupBy,
    /// Statistic per group.
    pub statistic: Statistic,
    /// Each person's value is clipped to `[0, contribution_bound_minor]` (minor
    /// currency units): the sensitivity of a group's sum.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub contribution_bound_minor: u64,
    /// ε of the whole release per person (decimal, at most 6 fractional digits),
    /// split equally between the counts and the sums.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[0-9]+(\.[0-9]{1,6})?$", example = "1.0")
    )]
    pub epsilon: String,
    /// Usage scope (analytics).
    pub usage_scope: UsageScope,
    /// Minimum Vaults that must respond (default: a majority).
    #[serde(default)]
    pub minimum_vault_quorum: Option<u32>,
}

/// One released group of a `compute` result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    /// The group key (e.g. the home city).
    pub group: String,
    /// Noisy number of distinct customers.
    pub count: i64,
    /// Noisy mean of the statistic (minor units; noisy sum / noisy count).
    pub value: i64,
}

/// What a `compute` run produced (the `--json` of `symphony demo compute`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeOutcome {
    /// Task id.
    pub task_id: String,
    /// Envelope hash.
    pub envelope_hash: String,
    /// Lifecycle states in order.
    pub states: Vec<String>,
    /// Why it was rejected, if it was.
    pub reason: Option<String>,
    /// Released groups (noisy), sorted by group.
    pub groups: Vec<GroupValue>,
    /// Groups whose noisy count fell below `minimum_result_cardinality`.
    pub suppressed_groups: Vec<String>,
    /// ε committed per evaluated subject.
    pub epsilon_committed: String,
    /// Escrow locked at admission.
    pub fee_locked: u64,
    /// Fee charged.
    pub fee_total: u64,
    /// Recipient → amount.
    pub fee_shares: BTreeMap<String, u64>,
    /// Refund to the submitter.
    pub refund: u64,
    /// Attestation reports verified (slices + aggregation).
    pub attestations_verified: u32,
    /// What produced each piece of evidence (Vault id → kind; `aggregation`).
    #[serde(default)]
    pub enclave_kinds: std::collections::BTreeMap<String, symphony_enclave::EnclaveKind>,
    /// Slices verified.
    pub vaults_responded: u32,
    /// Subjects evaluated across Vaults.
    pub subjects_evaluated: u64,
    /// Settlement state.
    pub settlement_state: Option<String>,
    /// Epoch.
    pub epoch_id: u64,
    /// Commit certificate signatures on the final state.
    pub certificate_signatures: usize,
    /// Hash of the released table.
    pub result_hash: String,
}

/// A task of any class: an object with exactly one key naming the class.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSpec {
    /// Governed audience selection across Vaults (the Luckin campaign).
    Query(CampaignSpec),
    /// A bounded computation returning a noisy aggregate.
    Compute(ComputeSpec),
    /// Federated training (composite task).
    Train(TrainingSpec),
}

impl TaskSpec {
    /// The task class.
    pub fn class(&self) -> TaskClass {
        match self {
            TaskSpec::Query(_) => TaskClass::Query,
            TaskSpec::Compute(_) => TaskClass::Compute,
            TaskSpec::Train(_) => TaskClass::Train,
        }
    }

    /// The submitter's actor id as written in the spec.
    pub fn submitter(&self) -> &str {
        match self {
            TaskSpec::Query(s) => &s.advertiser,
            TaskSpec::Compute(s) => &s.submitter,
            TaskSpec::Train(s) => &s.model_operator,
        }
    }

    /// Reads a spec file. The class is the top-level `task_class` key when present
    /// (`query`, `compute`, `train`); otherwise it is inferred (`model_operator` →
    /// train, `advertiser` → query). Errors name the file's problem.
    pub fn from_toml(text: &str) -> Result<TaskSpec, NodeError> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| NodeError::Refused(format!("spec is not valid TOML: {e}")))?;
        let class = match table.remove("task_class") {
            Some(toml::Value::String(c)) => c,
            Some(other) => {
                return Err(NodeError::Refused(format!(
                    "task_class: expected a string (query, compute, train), found {other}"
                )))
            }
            None if table.contains_key("model_operator") => "train".into(),
            None if table.contains_key("submitter") => "compute".into(),
            None => "query".into(),
        };
        let value = toml::Value::Table(table);
        let bad = |e: toml::de::Error| NodeError::Refused(format!("{class} spec: {e}"));
        match class.as_str() {
            "query" => Ok(TaskSpec::Query(value.try_into().map_err(bad)?)),
            "compute" => Ok(TaskSpec::Compute(value.try_into().map_err(bad)?)),
            "train" => Ok(TaskSpec::Train(value.try_into().map_err(bad)?)),
            other => Err(NodeError::Refused(format!(
                "task_class: unknown class {other:?} (expected query, compute or train; \
                 parse tasks come from data producers)"
            ))),
        }
    }

    /// The hash the submitter signs for `(spec, nonce)`. For `query` and `train` it is
    /// the hash their signed requests always used (task ids stay the same).
    pub fn request_hash(&self, nonce: u64) -> Result<Digest, NodeError> {
        match self {
            TaskSpec::Query(s) => crate::network::request_hash(s, nonce),
            TaskSpec::Train(s) => crate::training::request_message(s, nonce),
            TaskSpec::Compute(s) => {
                let bytes =
                    canonical_bytes(&(s, nonce)).map_err(|e| NodeError::Encoding(e.to_string()))?;
                Ok(tagged_hash("scp/compute-request/v1", &bytes))
            }
        }
    }
}

/// A signed task request of any class.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedTask {
    /// The task.
    pub spec: TaskSpec,
    /// Replay protection.
    pub nonce: u64,
    /// Submitter's public key.
    pub public_key: [u8; 32],
    /// ed25519 signature over [`TaskSpec::request_hash`].
    pub signature: Vec<u8>,
}

impl SignedTask {
    /// Signs a task.
    pub fn sign(spec: TaskSpec, nonce: u64, key: &SigningKey) -> Result<Self, NodeError> {
        let msg = spec.request_hash(nonce)?;
        Ok(SignedTask {
            spec,
            nonce,
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&msg.0).to_bytes().to_vec(),
        })
    }
}

/// What a task of any class produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// A `query` result.
    Query(CampaignOutcome),
    /// A `compute` result.
    Compute(ComputeOutcome),
    /// A `train` result.
    Train(Box<TrainOutcome>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_files_are_read_by_class_and_errors_name_the_class() {
        let luckin = include_str!("../../../examples/luckin.toml");
        assert_eq!(
            TaskSpec::from_toml(luckin).unwrap().class(),
            TaskClass::Query
        );
        let train = include_str!("../../../examples/train.toml");
        assert_eq!(
            TaskSpec::from_toml(train).unwrap().class(),
            TaskClass::Train
        );
        let e = TaskSpec::from_toml("task_class = \"mine\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown class \"mine\""), "{e}");
        let e = TaskSpec::from_toml("task_class = \"query\"\nbrand = 3\n").unwrap_err();
        assert!(e.to_string().starts_with("query spec:"), "{e}");
    }
}
