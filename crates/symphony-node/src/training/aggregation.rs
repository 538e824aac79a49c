//! The aggregation runtime of a round: the secure sum inside the master's enclave.
//!
//! The unmasked sum carries, divided by the run's public scale, the example-weighted
//! update and four metric sums (train examples, clipped train loss, held-out
//! examples, clipped held-out loss). The exact sums never leave the enclave run:
//! Gaussian noise ([`super::control::METRICS_NOISE_MULTIPLIER`], seeded by the
//! enclave's key) is added to the four metric sums, and what leaves is the noisy
//! example count, the noisy mean losses and the FedAvg update divided by the noisy
//! count — all post-processing of the DP-SGD updates and of the noisy release the
//! accountant charges each round.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use symphony_core::encoding::{tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_enclave::{SoftwareEnclave, Tee};
use symphony_master::link_commitment;
use symphony_train::secagg::{Aggregator, ParticipantId, Roster};

use super::model::train_err;
use super::vault::TrainSliceBundle;
use crate::verify::SliceEvidence;
use crate::NodeError;

pub(super) struct RoundAggregate {
    /// The unmasked sum in `Z_2^32` (handed only to a [`super::tap::RoundTap`]).
    pub(super) sum: Vec<u32>,
    /// The FedAvg update (example-weighted mean of the Vaults' local updates).
    pub(super) update: Vec<f64>,
    /// The round's released metrics (noisy).
    pub(super) metrics: RoundMetrics,
    pub(super) evidence: SliceEvidence,
}

/// What a round releases about the data, with Gaussian noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Noisy count of training examples across the Vaults.
    pub examples: u64,
    /// Noisy mean of the per-example training loss (clipped) before the update.
    pub train_loss: f64,
    /// Noisy mean of the per-example held-out loss (clipped) before the update.
    pub holdout_loss: f64,
    /// Noisy count of held-out examples (post-processing of the same release: it
    /// tells the controller how noisy `holdout_loss` is).
    pub holdout_examples: u64,
}

/// The metrics noise seed only the aggregation enclave can derive for a round.
fn noise_seed(enclave: &SoftwareEnclave, envelope: &TaskEnvelope, round: u32) -> [u8; 32] {
    let mut msg = b"scp/train/metrics-noise/v1".to_vec();
    msg.extend_from_slice(&envelope.hash().0);
    msg.extend_from_slice(&round.to_le_bytes());
    let signature = enclave.sign(&msg);
    tagged_hash("scp/train/metrics-noise/v1", &signature.to_bytes()).0
}

/// Noisy metrics and the FedAvg update from the decoded sum (scaled back by the
/// run's public `scale`). Runs inside the aggregation enclave.
fn release(
    decoded: &[f64],
    n_params: usize,
    scale: f64,
    rng: &mut ChaCha20Rng,
) -> (Vec<f64>, RoundMetrics) {
    use super::control::{LOSS_CLIP, METRICS_NOISE_MULTIPLIER};
    use symphony_train::dpsgd::standard_normal;
    let sd = METRICS_NOISE_MULTIPLIER * std::f64::consts::SQRT_2;
    let exact = |i: usize| decoded.get(n_params + i).copied().unwrap_or(0.0) * scale;
    let mut noisy = |i: usize, unit: f64| exact(i) + sd * unit * standard_normal(rng);
    let train_n = noisy(0, 1.0);
    let train_loss = noisy(1, LOSS_CLIP);
    let holdout_n = noisy(2, 1.0);
    let holdout_loss = noisy(3, LOSS_CLIP);
    let count = train_n.round().max(1.0);
    let mean = |sum: f64, n: f64| (sum / n.round().max(1.0)).clamp(0.0, LOSS_CLIP);
    let update = decoded[..n_params.min(decoded.len())]
        .iter()
        .map(|x| x * scale / count)
        .collect();
    (
        update,
        RoundMetrics {
            examples: count as u64,
            train_loss: mean(train_loss, train_n),
            holdout_loss: mean(holdout_loss, holdout_n),
            holdout_examples: holdout_n.round().max(1.0) as u64,
        },
    )
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
    n_params: usize,
    at_ms: u64,
) -> Result<RoundAggregate, NodeError> {
    let len = n_params + super::vault::METRIC_SLOTS;
    let scale = super::vault::run_scale(envelope);
    let mut rng = ChaCha20Rng::from_seed(noise_seed(aggregator, envelope, round));
    let mut commitments: Vec<Digest> = bundles.iter().map(|(_, b)| b.commitment).collect();
    commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &commitments);
    let mut failure = None;
    let run = aggregator.run(&inputs.0, envelope.hash().0, at_ms, || {
        let out = (|| -> Result<(Vec<u32>, Vec<f64>, RoundMetrics), NodeError> {
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
            let (update, metrics) = release(&decoded, n_params, scale, &mut rng);
            Ok((sum, update, metrics))
        })();
        match out {
            Ok((sum, update, metrics)) => {
                let released = [
                    metrics.examples as f64,
                    metrics.train_loss,
                    metrics.holdout_loss,
                    metrics.holdout_examples as f64,
                ];
                let h = super::f64_hash("scp/train-aggregate/v3", &[&update, &released]);
                (Some((sum, update, metrics, h)), h.0)
            }
            Err(e) => {
                failure = Some(e);
                (None, [0; 32])
            }
        }
    });
    let (out, attestation) = run.map_err(|e| NodeError::Enclave(e.to_string()))?;
    let Some((sum, update, metrics, result_hash)) = out else {
        return Err(failure.unwrap_or_else(|| NodeError::Enclave("aggregation failed".into())));
    };
    Ok(RoundAggregate {
        sum,
        update,
        metrics,
        evidence: SliceEvidence {
            commitment: result_hash,
            inputs_commitment: inputs,
            attestation,
        },
    })
}
