//! Slice assignments and `SliceResultBundle`s: what crosses between a master and an
//! enterprise node.
//!
//! A bundle carries privacy-safe eligible-user signals — a campaign-scoped
//! de-duplication token, the coupon-targetable contact handle (the identity-domain
//! attribute the plan delivers) and the recency of the qualifying purchase — never
//! purchase records. It is bound to its contents by a commitment, and the commitment
//! to the enclave run by the attestation report.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::{SliceId, VaultId};
use symphony_enclave::{AttestationReport, CodeIdentity};
use symphony_semantic::ResolvedAudiencePlan;

/// Hash tag of bundle commitments.
pub const BUNDLE_TAG: &str = "scp/slice-result-bundle/v1";

/// Code identity of the per-Vault eligibility evaluation (the enclave's measured code).
pub fn slice_code_identity() -> CodeIdentity {
    code_identity("scp.computation-runtime.audience-slice")
}

/// Code identity of the master's aggregation runtime.
pub fn aggregation_code_identity() -> CodeIdentity {
    code_identity("scp.aggregation-runtime.union-cap")
}

fn code_identity(name: &str) -> CodeIdentity {
    // A software enclave has no hardware measurement: the code hash names the
    // program and the exact build version that runs it.
    let code_hash: [u8; 32] = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(env!("CARGO_PKG_VERSION").as_bytes())
        .finalize()
        .into();
    CodeIdentity::new(name, env!("CARGO_PKG_VERSION"), code_hash)
}

/// What a master sends an enterprise node for one slice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SliceAssignment {
    /// The slice.
    pub slice_id: SliceId,
    /// The admitted envelope (immutable; verified by the node).
    pub envelope: TaskEnvelope,
    /// The resolved plan; its hash must equal the envelope's `resolved_plan_hash`.
    pub plan: ResolvedAudiencePlan,
    /// Evaluation time (the admission time of the task), ms.
    pub evaluate_at_ms: u64,
}

/// One eligible subject as a slice reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AudienceSignal {
    /// HMAC of the normalized contact handle under a task-scoped key: equal for the
    /// same person in every Vault, meaningless outside this task.
    pub dedup_token: [u8; 32],
    /// The coupon-targetable contact handle.
    pub contact_handle: String,
    /// When the latest qualifying purchase happened, ms (for recency-weighted
    /// selection).
    pub last_qualifying_ms: u64,
}

/// The body a bundle's commitment covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleBody {
    /// The slice.
    pub slice_id: SliceId,
    /// The Vault.
    pub vault_id: VaultId,
    /// The envelope it ran under.
    pub envelope_hash: Digest,
    /// Eligible subjects, sorted by token.
    pub signals: Vec<AudienceSignal>,
    /// Subjects whose records were evaluated (after consent and budget filtering).
    pub subjects_evaluated: u64,
    /// ε committed per evaluated subject, micro-units.
    pub epsilon_committed_micro: u64,
}

/// What every slice result body carries, whatever its class computed: the Vault,
/// the envelope it ran under, what it cost in budget, and a commitment.
pub trait SliceBody: Serialize {
    /// Hash tag of the body's commitment.
    const TAG: &'static str;
    /// The Vault that ran the slice.
    fn vault_id(&self) -> &VaultId;
    /// The envelope the slice ran under.
    fn envelope_hash(&self) -> Digest;
    /// Subjects whose records were evaluated.
    fn subjects_evaluated(&self) -> u64;
    /// ε committed per evaluated subject, micro-units.
    fn epsilon_committed_micro(&self) -> u64;
    /// The commitment over the body.
    fn commit(&self) -> Result<Digest, symphony_core::encoding::EncodingError> {
        content_hash(Self::TAG, self)
    }
}

impl SliceBody for BundleBody {
    const TAG: &'static str = BUNDLE_TAG;
    fn vault_id(&self) -> &VaultId {
        &self.vault_id
    }
    fn envelope_hash(&self) -> Digest {
        self.envelope_hash
    }
    fn subjects_evaluated(&self) -> u64 {
        self.subjects_evaluated
    }
    fn epsilon_committed_micro(&self) -> u64 {
        self.epsilon_committed_micro
    }
}

/// Hash tag of `compute` slice commitments.
pub const COMPUTE_BUNDLE_TAG: &str = "scp/compute-slice-bundle/v1";

/// One customer's contribution to a `compute` task, as a slice reports it: a
/// task-scoped de-duplication token (the same person in several Vaults is merged by
/// the aggregation enclave), the group, and the sums the statistic needs. Never a
/// purchase record; never released as such (only noisy per-group aggregates are).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Contribution {
    /// HMAC of the normalized contact handle under the task-scoped key.
    pub dedup_token: [u8; 32],
    /// The group key (e.g. the home city).
    pub group: String,
    /// Sum of the qualifying purchase amounts, minor units.
    pub amount_sum_minor: u64,
    /// Number of qualifying purchases.
    pub purchases: u64,
}

/// The body of a `compute` slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeBody {
    /// The slice.
    pub slice_id: SliceId,
    /// The Vault.
    pub vault_id: VaultId,
    /// The envelope it ran under.
    pub envelope_hash: Digest,
    /// Eligible customers' contributions, sorted by token.
    pub contributions: Vec<Contribution>,
    /// Subjects whose records were evaluated (after consent and budget filtering).
    pub subjects_evaluated: u64,
    /// ε committed per evaluated subject, micro-units.
    pub epsilon_committed_micro: u64,
}

impl SliceBody for ComputeBody {
    const TAG: &'static str = COMPUTE_BUNDLE_TAG;
    fn vault_id(&self) -> &VaultId {
        &self.vault_id
    }
    fn envelope_hash(&self) -> Digest {
        self.envelope_hash
    }
    fn subjects_evaluated(&self) -> u64 {
        self.subjects_evaluated
    }
    fn epsilon_committed_micro(&self) -> u64 {
        self.epsilon_committed_micro
    }
}

/// A slice's result with its evidence (`B`: what the task's class computed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SliceResultBundle<B = BundleBody> {
    /// The result.
    pub body: B,
    /// Commitment over `body`.
    pub commitment: Digest,
    /// Commitment over the slice's inputs (envelope, plan, Vault).
    pub inputs_commitment: Digest,
    /// The enclave's attestation of the run.
    pub attestation: AttestationReport,
}

impl BundleBody {
    /// The commitment over the body.
    pub fn commitment(&self) -> Result<Digest, symphony_core::encoding::EncodingError> {
        content_hash(BUNDLE_TAG, self)
    }
}

/// Commitment over a slice's inputs.
pub fn inputs_commitment(envelope: &TaskEnvelope, vault: &VaultId) -> Digest {
    let mut bytes = envelope.hash().0.to_vec();
    bytes.extend_from_slice(&envelope.body().resolved_plan_hash.0);
    bytes.extend_from_slice(vault.as_str().as_bytes());
    symphony_core::encoding::tagged_hash("scp/slice-inputs/v1", &bytes)
}

/// The task-scoped de-duplication key (known only to enclaves running the task).
pub fn dedup_key(envelope: &TaskEnvelope) -> [u8; 32] {
    symphony_core::encoding::tagged_hash("scp/dedup-key/v1", &envelope.hash().0).0
}

/// HMAC-SHA256(key, normalized handle).
pub fn dedup_token(key: &[u8; 32], handle: &str) -> [u8; 32] {
    let normalized = handle.trim().to_ascii_lowercase();
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..32 {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(normalized.as_bytes())
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}
