//! Task classes and the immutable `TaskEnvelope`.
//!
//! The Admission Plane produces one `TaskEnvelope` per admitted task, carrying
//! everything downstream processing needs (overview, "TaskEnvelope"). Its fields are
//! private and there are no setters: once [`TaskEnvelopeBuilder::build`] has checked
//! the class constraints, nothing downstream can override or extend it. The envelope
//! hash is SHA-256 over the BCS encoding of the body (see [`crate::encoding`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::budget::Epsilon;
use crate::consent::UsageScope;
use crate::encoding::{canonical_bytes, tagged_hash, Digest, EncodingError};
use crate::ids::{ActorId, EpochId, PolicyVersion, SemanticVersion, TaskId, VaultId};

/// Hash domain tag of envelopes.
pub const ENVELOPE_HASH_TAG: &str = "scp/task-envelope/v1";

/// The four task classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskClass {
    /// Single-record interpretation within one Vault. Free.
    Parse,
    /// Governed retrieval or audience selection across Vaults.
    Query,
    /// Bounded computation against authorized records.
    Compute,
    /// Iterative model training across Vaults (composite).
    Train,
}

impl TaskClass {
    /// Every class.
    pub const ALL: [TaskClass; 4] = [
        TaskClass::Parse,
        TaskClass::Query,
        TaskClass::Compute,
        TaskClass::Train,
    ];

    /// The class's protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskClass::Parse => "parse",
            TaskClass::Query => "query",
            TaskClass::Compute => "compute",
            TaskClass::Train => "train",
        }
    }

    /// Whether tasks of this class are composite (parent → sub-tasks → slices).
    pub fn is_composite(self) -> bool {
        self == TaskClass::Train
    }
}

impl fmt::Display for TaskClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskClass {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, EnvelopeError> {
        TaskClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| EnvelopeError::UnknownClass(s.to_owned()))
    }
}

/// Who submitted the task and how the request was authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerContext {
    /// The submitter.
    pub actor_id: ActorId,
    /// The submitter's ed25519 public key.
    pub public_key: [u8; 32],
    /// Hash of the signed request.
    pub request_hash: Digest,
    /// The request's nonce (replay protection).
    pub nonce: u64,
    /// Admission time, ms since the Unix epoch, injected by the leader.
    pub admitted_at_ms: u64,
}

/// The authorization decision admission relied on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The rule or registry entry that authorized the caller for the class.
    pub granted_by: String,
    /// Vaults whose operators permit this (actor, class) pair.
    pub vault_permits: BTreeSet<VaultId>,
}

/// A reference to the consent state admission checked in one Vault.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsentRef {
    /// The Vault.
    pub vault_id: VaultId,
    /// The usage scope checked.
    pub usage_scope: UsageScope,
    /// Commitment to the consent snapshot the Vault reported.
    pub snapshot_commitment: Digest,
    /// How many subjects held consent and budget at admission.
    pub eligible_subjects: u64,
}

/// The privacy budget reserved at admission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReservation {
    /// The scope charged.
    pub usage_scope: UsageScope,
    /// ε reserved per affected subject (for `train`: the total over all rounds).
    pub epsilon_per_subject: Epsilon,
    /// Subjects holding a reservation.
    pub subjects_reserved: u64,
}

/// How slice results are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationMethod {
    /// Union with de-duplication and a cardinality cap (audience selection).
    UnionWithCardinalityCap,
    /// Sum of aggregates (compute).
    Sum,
    /// Federated averaging weighted by example counts (train).
    FederatedAverage,
    /// A single slice's result as is (parse).
    Single,
}

/// Multi-Vault coordination parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinationEnvelope {
    /// Every Vault that may hold relevant records.
    pub participating_vault_ids: BTreeSet<VaultId>,
    /// Slices that must return for a valid result.
    pub minimum_vault_quorum: u32,
    /// How slice results are combined.
    pub aggregation_method: AggregationMethod,
}

/// Reference to the SYM escrow locked for the task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLockRef {
    /// The settlement ledger holding the escrow (e.g. `embedded`, `aptos:testnet`).
    pub ledger: String,
    /// The escrow id on that ledger.
    pub escrow_id: String,
    /// Amount locked, in base units.
    pub amount_base_units: u64,
}

/// Iteration policy of a composite (`train`) task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationPolicy {
    /// Hard cap on rounds.
    pub max_rounds: u32,
    /// Converged when the held-out loss improves by less than this, or than its
    /// release noise, over a window of rounds (micro-units of loss; 0 = off).
    pub convergence_threshold_micro: u64,
    /// Stop after this many rounds without improvement (0 = never).
    pub early_stop_patience: u32,
    /// Stop when the next round would exceed the training budget.
    pub stop_on_budget_exhaustion: bool,
}

/// A refused envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A required field was not set.
    #[error("TaskEnvelope field `{0}` is required")]
    Missing(&'static str),
    /// A class constraint does not hold.
    #[error("task_class {class}: {rule}")]
    ClassConstraint {
        /// The class.
        class: TaskClass,
        /// The violated rule.
        rule: String,
    },
    /// An unknown class name.
    #[error("unknown task_class {0:?}; expected parse, query, compute or train")]
    UnknownClass(String),
    /// Encoding failure.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
}

/// The body of an envelope: every field the seeds list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeBody {
    /// Task identity.
    pub task_id: TaskId,
    /// Classification.
    pub task_class: TaskClass,
    /// Caller context.
    pub caller: CallerContext,
    /// Authorization.
    pub authorization: Authorization,
    /// Consent references.
    pub consent_refs: Vec<ConsentRef>,
    /// Semantic version.
    pub semantic_version: SemanticVersion,
    /// Policy version.
    pub policy_version: PolicyVersion,
    /// The epoch of admission.
    pub epoch_id: EpochId,
    /// Privacy budget reservation.
    pub budget_reservation: BudgetReservation,
    /// Multi-Vault coordination parameters.
    pub coordination_envelope: CoordinationEnvelope,
    /// SYM escrow reference (`None` only for free `parse` tasks).
    pub budget_lock_ref: Option<BudgetLockRef>,
    /// Iteration policy (`Some` exactly for `train`).
    pub iteration_policy: Option<IterationPolicy>,
    /// The resolved plan the task runs (its hash binds semantics to the envelope).
    pub resolved_plan_hash: Digest,
    /// Task constraints fixed at admission (e.g. `audience_cap`, `window_days`).
    pub constraints: BTreeMap<String, String>,
    /// Deadline, ms since the Unix epoch.
    pub deadline_ms: u64,
}

/// The immutable, admitted task envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    body: EnvelopeBody,
    hash: Digest,
}

impl TaskEnvelope {
    /// Checks the class constraints and seals the body.
    pub fn seal(body: EnvelopeBody) -> Result<TaskEnvelope, EnvelopeError> {
        check_class_constraints(&body)?;
        let hash = tagged_hash(ENVELOPE_HASH_TAG, &canonical_bytes(&body)?);
        Ok(TaskEnvelope { body, hash })
    }

    /// Re-checks a decoded envelope: the stored hash must match the body.
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        check_class_constraints(&self.body)?;
        let hash = tagged_hash(ENVELOPE_HASH_TAG, &canonical_bytes(&self.body)?);
        if hash != self.hash {
            return Err(EnvelopeError::ClassConstraint {
                class: self.body.task_class,
                rule: format!("envelope hash {} does not match its body", self.hash),
            });
        }
        Ok(())
    }

    /// The content hash.
    pub fn hash(&self) -> Digest {
        self.hash
    }

    /// Read-only access to every field.
    pub fn body(&self) -> &EnvelopeBody {
        &self.body
    }

    /// Canonical bytes of the body.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EncodingError> {
        canonical_bytes(&self.body)
    }

    /// The task id.
    pub fn task_id(&self) -> &TaskId {
        &self.body.task_id
    }

    /// The task class.
    pub fn task_class(&self) -> TaskClass {
        self.body.task_class
    }
}

fn class_rule(class: TaskClass, rule: impl Into<String>) -> EnvelopeError {
    EnvelopeError::ClassConstraint {
        class,
        rule: rule.into(),
    }
}

fn check_class_constraints(body: &EnvelopeBody) -> Result<(), EnvelopeError> {
    let class = body.task_class;
    let coord = &body.coordination_envelope;
    let n_vaults = coord.participating_vault_ids.len();
    if n_vaults == 0 {
        return Err(class_rule(class, "coordination_envelope names no Vault"));
    }
    let quorum = coord.minimum_vault_quorum as usize;
    if quorum == 0 || quorum > n_vaults {
        return Err(class_rule(
            class,
            format!("minimum_vault_quorum {quorum} must be between 1 and the {n_vaults} participating Vaults"),
        ));
    }
    match class {
        TaskClass::Parse => {
            if n_vaults != 1 {
                return Err(class_rule(
                    class,
                    "a parse task reads a single record in exactly one Vault",
                ));
            }
            if body.budget_lock_ref.is_some() {
                return Err(class_rule(class, "parse is free: no budget_lock_ref"));
            }
        }
        TaskClass::Query | TaskClass::Compute | TaskClass::Train => {
            if body.budget_lock_ref.is_none() {
                return Err(EnvelopeError::Missing("budget_lock_ref"));
            }
        }
    }
    match (class, &body.iteration_policy) {
        (TaskClass::Train, None) => return Err(EnvelopeError::Missing("iteration_policy")),
        (TaskClass::Train, Some(p)) if p.max_rounds == 0 => {
            return Err(class_rule(
                class,
                "iteration_policy.max_rounds must be at least 1",
            ))
        }
        (TaskClass::Parse | TaskClass::Query | TaskClass::Compute, Some(_)) => {
            return Err(class_rule(
                class,
                "iteration_policy is only for train tasks",
            ))
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_body() -> EnvelopeBody {
        let v = |s: &str| VaultId::new(s).unwrap();
        EnvelopeBody {
            task_id: TaskId::new("task-luckin-0001").unwrap(),
            task_class: TaskClass::Query,
            caller: CallerContext {
                actor_id: ActorId::new("advertiser:luckin").unwrap(),
                public_key: [7u8; 32],
                request_hash: Digest([1u8; 32]),
                nonce: 42,
                admitted_at_ms: 1_700_000_000_000,
            },
            authorization: Authorization {
                granted_by: "registry:advertiser".into(),
                vault_permits: [v("vault-a"), v("vault-b")].into_iter().collect(),
            },
            consent_refs: vec![ConsentRef {
                vault_id: v("vault-a"),
                usage_scope: UsageScope::Marketing,
                snapshot_commitment: Digest([2u8; 32]),
                eligible_subjects: 10,
            }],
            semantic_version: SemanticVersion(1),
            policy_version: PolicyVersion(1),
            epoch_id: EpochId(3),
            budget_reservation: BudgetReservation {
                usage_scope: UsageScope::Marketing,
                epsilon_per_subject: Epsilon::from_milli(100),
                subjects_reserved: 10,
            },
            coordination_envelope: CoordinationEnvelope {
                participating_vault_ids: [v("vault-a"), v("vault-b")].into_iter().collect(),
                minimum_vault_quorum: 2,
                aggregation_method: AggregationMethod::UnionWithCardinalityCap,
            },
            budget_lock_ref: Some(BudgetLockRef {
                ledger: "embedded".into(),
                escrow_id: "escrow-1".into(),
                amount_base_units: 1_000,
            }),
            iteration_policy: None,
            resolved_plan_hash: Digest([3u8; 32]),
            constraints: [("audience_cap".to_string(), "5000".to_string())]
                .into_iter()
                .collect(),
            deadline_ms: 1_700_000_600_000,
        }
    }

    #[test]
    fn golden_envelope_hash() {
        // A changed byte layout of any field changes this hash: update it only with a
        // deliberate, versioned change of the encoding.
        let env = TaskEnvelope::seal(sample_body()).unwrap();
        if std::env::var_os("SYMPHONY_BLESS").is_some() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
            std::fs::write(format!("{dir}/envelope_hash.txt"), env.hash().to_hex()).unwrap();
            let hex_bytes = hex::encode(env.canonical_bytes().unwrap());
            std::fs::write(format!("{dir}/envelope_bytes.hex"), hex_bytes).unwrap();
            return;
        }
        assert_eq!(
            env.hash().to_hex(),
            include_str!("../tests/golden/envelope_hash.txt").trim()
        );
        let bytes = env.canonical_bytes().unwrap();
        assert_eq!(
            hex::encode(&bytes),
            include_str!("../tests/golden/envelope_bytes.hex").trim()
        );
    }

    #[test]
    fn class_constraints() {
        let mut b = sample_body();
        b.task_class = TaskClass::Parse;
        assert!(matches!(
            TaskEnvelope::seal(b.clone()),
            Err(EnvelopeError::ClassConstraint {
                class: TaskClass::Parse,
                ..
            })
        ));
        b.coordination_envelope.participating_vault_ids =
            [VaultId::new("vault-a").unwrap()].into_iter().collect();
        b.coordination_envelope.minimum_vault_quorum = 1;
        assert!(TaskEnvelope::seal(b.clone()).is_err(), "parse must be free");
        b.budget_lock_ref = None;
        assert!(TaskEnvelope::seal(b).is_ok());

        let mut t = sample_body();
        t.task_class = TaskClass::Train;
        assert_eq!(
            TaskEnvelope::seal(t.clone()),
            Err(EnvelopeError::Missing("iteration_policy"))
        );
        t.iteration_policy = Some(IterationPolicy {
            max_rounds: 5,
            convergence_threshold_micro: 100,
            early_stop_patience: 2,
            stop_on_budget_exhaustion: true,
        });
        assert!(TaskEnvelope::seal(t).is_ok());

        let mut q = sample_body();
        q.coordination_envelope.minimum_vault_quorum = 3;
        assert!(TaskEnvelope::seal(q.clone()).is_err());
        q.coordination_envelope.minimum_vault_quorum = 1;
        q.budget_lock_ref = None;
        assert_eq!(
            TaskEnvelope::seal(q),
            Err(EnvelopeError::Missing("budget_lock_ref"))
        );
    }

    #[test]
    fn decoded_envelope_is_checked() {
        let env = TaskEnvelope::seal(sample_body()).unwrap();
        let json = serde_json::to_string(&env).unwrap();
        let back: TaskEnvelope = serde_json::from_str(&json).unwrap();
        assert!(back.verify().is_ok());
        let tampered = json.replace("\"nonce\":42", "\"nonce\":43");
        let bad: TaskEnvelope = serde_json::from_str(&tampered).unwrap();
        assert!(bad.verify().is_err());
    }
}
