//! Settlement-plane verification of slice and aggregation evidence.
//!
//! Evidence is replayable: the checks below use only the bundle's commitment
//! inputs and the attestation reports, so re-running them from stored evidence gives
//! the same verdict.

use symphony_core::encoding::Digest;
use symphony_core::envelope::TaskEnvelope;
use symphony_enclave::{
    run_commitment, AttestationReport, AttestationVerifier, ReportExpectation,
    SoftwareAttestationVerifier,
};
use symphony_master::link_commitment;

use crate::aggregation::AggregateResult;
use crate::bundle::{inputs_commitment, SliceBody, SliceResultBundle};

/// Evidence of one slice kept after its signals were aggregated (and purged).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceEvidence {
    /// Bundle commitment.
    pub commitment: Digest,
    /// Inputs commitment.
    pub inputs_commitment: Digest,
    /// Attestation of the run.
    pub attestation: AttestationReport,
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The bundle's body does not hash to its commitment.
    #[error("slice from {vault}: bundle body does not match its commitment (tampered)")]
    CommitmentMismatch {
        /// The Vault.
        vault: String,
    },
    /// The inputs commitment is not the task's.
    #[error("slice from {vault}: inputs commitment is not this task's")]
    WrongInputs {
        /// The Vault.
        vault: String,
    },
    /// The attestation failed.
    #[error("{what}: attestation refused: {reason}")]
    Attestation {
        /// Which evidence.
        what: String,
        /// The verifier's reason.
        reason: String,
    },
    /// The aggregate does not link to the verified slices.
    #[error("aggregate commitment does not link to the verified slice commitments")]
    AggregateLink,
}

/// Checks a returned bundle before its signals may be aggregated.
pub fn verify_slice<B: SliceBody>(
    verifier: &SoftwareAttestationVerifier,
    envelope: &TaskEnvelope,
    bundle: &SliceResultBundle<B>,
) -> Result<SliceEvidence, EvidenceError> {
    let vault = bundle.body.vault_id().to_string();
    let recomputed = bundle
        .body
        .commit()
        .map_err(|_| EvidenceError::CommitmentMismatch {
            vault: vault.clone(),
        })?;
    if recomputed != bundle.commitment || bundle.body.envelope_hash() != envelope.hash() {
        return Err(EvidenceError::CommitmentMismatch { vault });
    }
    if inputs_commitment(envelope, bundle.body.vault_id()) != bundle.inputs_commitment {
        return Err(EvidenceError::WrongInputs { vault });
    }
    let evidence = SliceEvidence {
        commitment: bundle.commitment,
        inputs_commitment: bundle.inputs_commitment,
        attestation: bundle.attestation.clone(),
    };
    verify_evidence(verifier, envelope, &evidence, &vault)?;
    Ok(evidence)
}

/// Re-verifies stored slice evidence.
pub fn verify_evidence(
    verifier: &SoftwareAttestationVerifier,
    envelope: &TaskEnvelope,
    evidence: &SliceEvidence,
    what: &str,
) -> Result<(), EvidenceError> {
    let expected = ReportExpectation {
        report_data: run_commitment(&evidence.inputs_commitment.0, &evidence.commitment.0),
        nonce: Some(envelope.hash().0),
    };
    verifier
        .verify(&evidence.attestation, &expected)
        .map(|_| ())
        .map_err(|e| EvidenceError::Attestation {
            what: format!("slice from {what}"),
            reason: e.to_string(),
        })
}

/// What an aggregate claims about its run: the parts its verification replays. Built
/// from a fresh [`AggregateResult`] or from stored settlement evidence
/// (`settlement::AggregateEvidence`).
#[derive(Clone, Copy, Debug)]
pub struct AggregateClaim<'a> {
    /// Commitments of the inputs, sorted.
    pub input_commitments: &'a [Digest],
    /// Hash of the result.
    pub result_hash: Digest,
    /// Commitment linking result and inputs.
    pub commitment: Digest,
    /// The aggregation enclave's attestation.
    pub attestation: &'a AttestationReport,
}

impl<'a> From<&'a AggregateResult> for AggregateClaim<'a> {
    fn from(aggregate: &'a AggregateResult) -> Self {
        Self {
            input_commitments: &aggregate.input_commitments,
            result_hash: aggregate.result_hash,
            commitment: aggregate.commitment,
            attestation: &aggregate.attestation,
        }
    }
}

/// Verifies the aggregate against the verified slices' evidence.
pub fn verify_aggregate(
    verifier: &SoftwareAttestationVerifier,
    envelope: &TaskEnvelope,
    slices: &[SliceEvidence],
    aggregate: &AggregateResult,
) -> Result<(), EvidenceError> {
    verify_aggregate_claim(verifier, envelope, slices, aggregate.into())
}

/// Verifies an aggregate's claim: its input commitments are exactly the slices'
/// (sorted), its commitment links them to its result, and its attestation covers that
/// run under this task's envelope.
pub fn verify_aggregate_claim(
    verifier: &SoftwareAttestationVerifier,
    envelope: &TaskEnvelope,
    slices: &[SliceEvidence],
    aggregate: AggregateClaim<'_>,
) -> Result<(), EvidenceError> {
    let mut commitments: Vec<Digest> = slices.iter().map(|s| s.commitment).collect();
    commitments.sort();
    if commitments != aggregate.input_commitments {
        return Err(EvidenceError::AggregateLink);
    }
    let inputs = link_commitment("scp/aggregation-inputs/v1", &commitments);
    if link_commitment("scp/aggregate/v1", &[inputs, aggregate.result_hash]) != aggregate.commitment
    {
        return Err(EvidenceError::AggregateLink);
    }
    let expected = ReportExpectation {
        report_data: run_commitment(&inputs.0, &aggregate.result_hash.0),
        nonce: Some(envelope.hash().0),
    };
    verifier
        .verify(aggregate.attestation, &expected)
        .map(|_| ())
        .map_err(|e| EvidenceError::Attestation {
            what: "aggregation".into(),
            reason: e.to_string(),
        })
}
