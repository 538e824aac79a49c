//! The aggregation runtime of a round: the secure sum inside the master's enclave.

use symphony_core::encoding::Digest;
use symphony_core::envelope::*;
use symphony_enclave::{SoftwareEnclave, Tee};
use symphony_master::link_commitment;
use symphony_train::secagg::{Aggregator, ParticipantId, Roster};

use super::model::train_err;
use super::vault::TrainSliceBundle;
use crate::verify::SliceEvidence;
use crate::NodeError;

pub(super) struct RoundAggregate {
    /// The unmasked sum in `Z_2^32` (what `decoded` decodes).
    pub(super) sum: Vec<u32>,
    pub(super) decoded: Vec<f64>,
    pub(super) evidence: SliceEvidence,
}

/// The aggregation runtime: inside the master's enclave, sums the masked updates
/// (recovering dropped Vaults' masks from Shamir shares), decodes only the sum, and
/// drops the per-Vault inputs before returning.
#[allow(clippy::too_many_arguments)]
pub(super) fn aggregate(
    aggregator: &SoftwareEnclave,
    envelope: &TaskEnvelope,
    round: u32,
    roster: Roster,
    threshold: u8,
    bundles: Vec<(ParticipantId, TrainSliceBundle)>,
    recovery: Vec<(
        ParticipantId,
        ParticipantId,
        symphony_train::secagg::SecretShare,
    )>,
    participants: u32,
    len: usize,
    at_ms: u64,
) -> Result<RoundAggregate, NodeError> {
    let mut commitments: Vec<Digest> = bundles.iter().map(|(_, b)| b.commitment).collect();
    commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &commitments);
    let mut failure = None;
    let run = aggregator.run(&inputs.0, envelope.hash().0, at_ms, || {
        let out = (|| -> Result<(Vec<u32>, Vec<f64>), NodeError> {
            let mut agg = Aggregator::new(roster.clone(), u64::from(round), threshold, len)
                .map_err(train_err)?;
            for (from, b) in bundles {
                agg.add_masked(symphony_train::secagg::MaskedUpdate {
                    from,
                    round: u64::from(round),
                    masked: b.body.masked,
                })
                .map_err(train_err)?;
            }
            for (dropped, holder, share) in recovery {
                agg.add_recovery_share(dropped, holder, share)
                    .map_err(train_err)?;
            }
            let sum = agg.finish().map_err(train_err)?;
            let decoded = super::vault::quantizer(participants)?.decode(&sum);
            Ok((sum, decoded))
        })();
        match out {
            Ok((sum, v)) => {
                let h = super::f64_hash("scp/train-aggregate/v1", &[&v]);
                (Some((sum, v, h)), h.0)
            }
            Err(e) => {
                failure = Some(e);
                (None, [0; 32])
            }
        }
    });
    let (out, attestation) = run.map_err(|e| NodeError::Enclave(e.to_string()))?;
    let Some((sum, decoded, result_hash)) = out else {
        return Err(failure.unwrap_or_else(|| NodeError::Enclave("aggregation failed".into())));
    };
    Ok(RoundAggregate {
        sum,
        decoded,
        evidence: SliceEvidence {
            commitment: result_hash,
            inputs_commitment: inputs,
            attestation,
        },
    })
}
