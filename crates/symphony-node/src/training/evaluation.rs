//! Final evaluation of the model (held-out quality and membership inference) in
//! the aggregation enclave.

use symphony_core::encoding::{content_hash, Digest};
use symphony_enclave::Tee;
use symphony_master::link_commitment;
use symphony_train::metrics;

use super::admission::Admitted;
use super::coordinator::{assignment, micro, model_hash, refused};
use super::endpoint::TrainingEndpoint;
use super::model::GlobalModel;
use super::spec::TrainingSpec;
use crate::network::MasterServices;
use crate::verify::{verify_evidence, SliceEvidence};
use crate::NodeError;

pub(super) struct Quality {
    pub(super) auc: f64,
    pub(super) accuracy: f64,
    pub(super) mia_advantage: f64,
    /// Held-out examples across the Vaults.
    pub(super) holdout_size: u64,
    /// Held-out examples with a positive label.
    pub(super) holdout_positives: u64,
}

/// Final evaluation: every Vault scores the final model on its held-out split and its
/// members in its enclave; the aggregation enclave computes the metrics and keeps
/// nothing else.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate(
    m: &MasterServices,
    trainers: &[&dyn TrainingEndpoint],
    adm: &Admitted,
    spec: &TrainingSpec,
    model: &GlobalModel,
    round: u32,
    seed: u64,
    evidence: &mut Vec<SliceEvidence>,
) -> Result<Quality, NodeError> {
    let hash = model_hash(model)?;
    let verifier = m.verifier_for(&adm.envelope)?;
    let at_ms = m.now_ms + u64::from(round) * spec.round_duration_ms;
    let mut bundles = Vec::new();
    for t in trainers {
        let a = assignment(adm, spec, t.vault_id(), round, at_ms, seed);
        let Ok(b) = t.train_evaluate(&a, model, &hash) else {
            continue;
        };
        let ev = SliceEvidence {
            commitment: b.commitment,
            inputs_commitment: b.inputs_commitment,
            attestation: b.attestation.clone(),
        };
        verify_evidence(&verifier, &adm.envelope, &ev, t.vault_id().as_str()).map_err(refused)?;
        evidence.push(ev);
        bundles.push(b);
    }
    let mut commitments: Vec<Digest> = bundles.iter().map(|b| b.commitment).collect();
    commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &commitments);
    let run = m
        .aggregator
        .run(&inputs.0, adm.envelope.hash().0, at_ms, move || {
            let (mut scores, mut labels, mut members) = (vec![], vec![], vec![]);
            for b in bundles {
                scores.extend(b.holdout_scores);
                labels.extend(b.holdout_labels);
                members.extend(b.member_losses);
            }
            let nonmembers: Vec<f64> = scores
                .iter()
                .zip(&labels)
                .map(|(p, y)| metrics::example_log_loss(*p, *y).unwrap_or(f64::MAX))
                .collect();
            let q = (
                metrics::auc(&scores, &labels).unwrap_or(0.0),
                metrics::accuracy(&scores, &labels, 0.5).unwrap_or(0.0),
                metrics::membership_advantage(&members, &nonmembers).unwrap_or(1.0),
                labels.len() as u64,
                labels.iter().filter(|y| **y).count() as u64,
            );
            let h = content_hash(
                "scp/train-quality/v2",
                &(micro(q.0), micro(q.1), micro(q.2), q.3, q.4),
            )
            .unwrap_or_default();
            ((q, h), h.0)
        });
    let (((auc, accuracy, mia_advantage, holdout_size, holdout_positives), h), attestation) =
        run.map_err(|e| NodeError::Enclave(e.to_string()))?;
    let ev = SliceEvidence {
        commitment: h,
        inputs_commitment: inputs,
        attestation,
    };
    verify_evidence(&verifier, &adm.envelope, &ev, "evaluation").map_err(refused)?;
    evidence.push(ev);
    Ok(Quality {
        auc,
        accuracy,
        mia_advantage,
        holdout_size,
        holdout_positives,
    })
}
