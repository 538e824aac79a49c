//! The Aggregation Runtime: runs on a master inside an attested enclave.
//!
//! It takes the per-Vault `SliceResultBundle`s **by value** (they are dropped —
//! purged — when it returns), forms the union with de-duplication of the same person
//! across Vaults, enforces the audience cap as a protocol invariant with the policy's
//! seeded selection, suppresses results below `minimum_result_cardinality`, and
//! emits a commitment linking the aggregate to its inputs. Its output is sorted by
//! contact handle, so nothing in it tells which Vault contributed whom.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::encoding::{content_hash, tagged_hash, Digest};
use symphony_core::envelope::TaskEnvelope;
use symphony_enclave::{AttestationReport, SoftwareEnclave, Tee};
use symphony_master::link_commitment;

use crate::bundle::SliceResultBundle;

/// Domain tag of the result hash over a selected audience.
pub const AUDIENCE_HASH_TAG: &str = "scp/audience/v1";

/// How the cap is applied when more subjects are eligible than the cap allows.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionPolicy {
    /// Uniform random sample (seeded).
    RandomSampling,
    /// Weighted sample favouring recent purchasers (seeded; Efraimidis–Spirakis keys
    /// with weight 1 / (1 + days since the qualifying purchase)).
    RecencyWeighted,
}

/// The aggregate, as the aggregation enclave returns it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AggregateResult {
    /// Selected contact handles, sorted.
    pub audience: Vec<String>,
    /// Distinct eligible subjects before the cap.
    pub eligible_count: u64,
    /// The result was suppressed (below `minimum_result_cardinality`).
    pub suppressed: bool,
    /// Hash of the audience.
    pub result_hash: Digest,
    /// Commitment linking the aggregate to the input bundle commitments.
    pub commitment: Digest,
    /// Commitments of the inputs, sorted (what the commitment links).
    pub input_commitments: Vec<Digest>,
    /// The enclave's attestation of the run.
    pub attestation: AttestationReport,
}

/// Aggregation refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AggregationError {
    /// A bundle is for another task.
    #[error("bundle from {vault} was produced for envelope {found}, not {expected}")]
    WrongTask {
        /// The Vault.
        vault: String,
        /// Its envelope hash.
        found: Digest,
        /// The task's.
        expected: Digest,
    },
    /// The enclave failed.
    #[error("aggregation enclave: {0}")]
    Enclave(String),
}

/// Parameters fixed by the envelope.
#[derive(Clone, Copy, Debug)]
pub struct AggregationParams {
    /// Audience cap.
    pub audience_cap: u64,
    /// Selection policy.
    pub selection: SelectionPolicy,
    /// Selection seed.
    pub selection_seed: u64,
    /// Results below this are suppressed.
    pub minimum_result_cardinality: u64,
    /// Time of the run (attestation), ms.
    pub now_ms: u64,
}

/// Runs the union-with-cap aggregation inside `enclave`.
pub fn aggregate(
    enclave: &SoftwareEnclave,
    envelope: &TaskEnvelope,
    bundles: Vec<SliceResultBundle>,
    params: AggregationParams,
) -> Result<AggregateResult, AggregationError> {
    for b in &bundles {
        if b.body.envelope_hash != envelope.hash() {
            return Err(AggregationError::WrongTask {
                vault: b.body.vault_id.to_string(),
                found: b.body.envelope_hash,
                expected: envelope.hash(),
            });
        }
    }
    let mut input_commitments: Vec<Digest> = bundles.iter().map(|b| b.commitment).collect();
    input_commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &input_commitments);
    let nonce = envelope.hash().0;
    let run = enclave.run(&inputs.0, nonce, params.now_ms, move || {
        // Union with de-duplication by token; keep the most recent purchase.
        let mut union: BTreeMap<[u8; 32], (String, u64)> = BTreeMap::new();
        for bundle in bundles {
            for s in bundle.body.signals {
                let e = union
                    .entry(s.dedup_token)
                    .or_insert((s.contact_handle, s.last_qualifying_ms));
                e.1 = e.1.max(s.last_qualifying_ms);
            }
        } // bundles dropped here: per-Vault inputs purged
        let eligible_count = union.len() as u64;
        let suppressed = eligible_count < params.minimum_result_cardinality;
        let mut audience = if suppressed {
            Vec::new()
        } else {
            select(&union, &envelope.hash(), params)
        };
        audience.sort();
        let result_hash = content_hash(AUDIENCE_HASH_TAG, &audience).unwrap_or_default();
        let out = (audience, eligible_count, suppressed, result_hash);
        (out, result_hash.0)
    });
    let ((audience, eligible_count, suppressed, result_hash), attestation) =
        run.map_err(|e| AggregationError::Enclave(e.to_string()))?;
    let commitment = link_commitment("scp/aggregate/v1", &[inputs, result_hash]);
    Ok(AggregateResult {
        audience,
        eligible_count,
        suppressed,
        result_hash,
        commitment,
        input_commitments,
        attestation,
    })
}

/// Seeded selection of at most `audience_cap` handles.
fn select(
    union: &BTreeMap<[u8; 32], (String, u64)>,
    envelope_hash: &Digest,
    params: AggregationParams,
) -> Vec<String> {
    let cap = usize::try_from(params.audience_cap).unwrap_or(usize::MAX);
    if union.len() <= cap {
        return union.values().map(|(h, _)| h.clone()).collect();
    }
    let mut keyed: Vec<(f64, &String)> = union
        .iter()
        .map(|(token, (handle, last_ms))| {
            let mut bytes = params.selection_seed.to_le_bytes().to_vec();
            bytes.extend_from_slice(&envelope_hash.0);
            bytes.extend_from_slice(token);
            let h = tagged_hash("scp/selection/v1", &bytes).0;
            let mut word = [0u8; 8];
            word.copy_from_slice(&h[..8]);
            // u in (0, 1]
            let u = ((u64::from_le_bytes(word) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let key = match params.selection {
                SelectionPolicy::RandomSampling => u,
                SelectionPolicy::RecencyWeighted => {
                    let age_days = params.now_ms.saturating_sub(*last_ms) as f64 / 86_400_000.0;
                    let weight = 1.0 / (1.0 + age_days);
                    u.ln() / weight // larger is better; ln(u) ≤ 0
                }
            };
            (key, handle)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    keyed
        .into_iter()
        .take(cap)
        .map(|(_, h)| h.clone())
        .collect()
}
