//! Delivery to the model registry: the model as `safetensors` (written here, byte for
//! byte deterministic: tensors and metadata in name order, little-endian `F64`), a JSON
//! model card, and a training-curve PNG (loss, held-out AUC and cumulative ε per round,
//! drawn without text so no font is needed: red = training loss, blue = held-out AUC,
//! green = cumulative ε, one panel each, x = round).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::json;
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::TaskId;
use symphony_semantic::FeaturePlan;

use super::model::GlobalModel;
use super::outcome::TrainOutcome;
use super::spec::TrainingSpec;
use crate::NodeError;

fn io(e: impl std::fmt::Display) -> NodeError {
    NodeError::Io(e.to_string())
}

/// Tag of the model artifact's hash (the composite result's `model_hash`).
pub const MODEL_ARTIFACT_TAG: &str = "scp/model-artifact/v1";

/// Metadata stored in the safetensors header (`__metadata__`).
pub fn card_metadata(
    task: &TaskId,
    spec: &TrainingSpec,
    plan: &FeaturePlan,
) -> BTreeMap<String, String> {
    [
        ("task_id", task.to_string()),
        ("target", spec.target.clone()),
        ("model", format!("{:?}", spec.model)),
        ("features", plan.feature_labels().join(",")),
        ("feature_plan_hash", plan.plan_hash().to_hex()),
        ("semantic_version", plan.body().semantic_version.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The safetensors bytes of `model`.
pub fn model_file_bytes(
    model: &GlobalModel,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, NodeError> {
    let mut tensors = model.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut data = Vec::new();
    for (name, shape, values) in &tensors {
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            json!({"dtype": "F64", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header))
        .map_err(|e| NodeError::Encoding(e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes model, card and curve under `dir/<task>/`; returns their paths.
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    dir: &Path,
    task: &TaskId,
    spec: &TrainingSpec,
    plan: &FeaturePlan,
    model: &GlobalModel,
    file: &[u8],
    out: &TrainOutcome,
    envelope: &TaskEnvelope,
) -> Result<(PathBuf, PathBuf, PathBuf), NodeError> {
    let base = dir.join(task.as_str().replace(['/', ':'], "_"));
    std::fs::create_dir_all(&base).map_err(io)?;
    let model_path = base.join("model.safetensors");
    let card_path = base.join("model_card.json");
    let curve_path = base.join("training_curve.png");
    std::fs::write(&model_path, file).map_err(io)?;
    let card = model_card(task, spec, plan, model, out, envelope);
    let text =
        serde_json::to_string_pretty(&card).map_err(|e| NodeError::Encoding(e.to_string()))?;
    std::fs::write(&card_path, text).map_err(io)?;
    draw_curve(&curve_path, out)?;
    Ok((model_path, card_path, curve_path))
}

/// The model card of a run (what `model_card.json` holds).
pub fn model_card(
    task: &TaskId,
    spec: &TrainingSpec,
    plan: &FeaturePlan,
    model: &GlobalModel,
    out: &TrainOutcome,
    envelope: &TaskEnvelope,
) -> serde_json::Value {
    let body = envelope.body();
    json!({
        "task_id": task.to_string(),
        "task_class": "train",
        "target": spec.target,
        "model_operator": spec.model_operator,
        "model_type": spec.model,
        "n_parameters": model.n_parameters(),
        "features": plan.feature_labels(),
        "feature_plan_hash": plan.plan_hash().to_hex(),
        "market_scope": spec.market_scope.countries,
        "semantic_version": body.semantic_version.to_string(),
        "policy_version": body.policy_version.0,
        "envelope_hash": envelope.hash().to_hex(),
        "rounds_run": out.rounds_run,
        "max_rounds": out.max_rounds,
        "stop_reason": out.stop_reason,
        "converged": out.converged,
        "convergence_not_reached": out.convergence_not_reached,
        "privacy": {"unit": "person (one account per person across Vaults; a person trains through one Vault and is charged in every Vault that holds it)",
                    "epsilon_spent": out.epsilon_spent, "epsilon_allocation": out.epsilon_allocation, "delta": out.delta,
                    "per_person_epsilon_max": out.per_person_epsilon_max, "released": out.released_metrics,
                    "accountant": "RDP, Poisson-subsampled Gaussian (Mironov et al. 2019) per DP-SGD step plus one Gaussian metrics release per round, Balle et al. 2020 conversion",
                    "dp_sgd": {"local_steps": spec.dp_sgd.local_steps, "sampling_rate": spec.dp_sgd.sampling_rate,
                               "noise_multiplier": spec.dp_sgd.noise_multiplier, "clip_norm": spec.dp_sgd.clip_norm}},
        "metrics": {"auc_holdout": out.auc_holdout, "accuracy_holdout": out.accuracy_holdout, "mia_advantage": out.mia_advantage},
        "acceptance": spec.acceptance,
        "settlement": {"settlement_ref": task.to_string(), "escrow": body.budget_lock_ref.as_ref().map(|l| l.escrow_id.clone()),
                       "payout_id": format!("payout-{task}"), "fee_total_micro_sym": out.fee_total, "state": out.settlement_state,
                       "round_settlements": out.round_settlements},
        "rounds": out.rounds,
        "model_file": "model.safetensors",
        "curve": {"file": "training_curve.png", "panels": ["training loss, noisy (red)", "held-out loss, noisy (blue)", "cumulative epsilon (green)"]},
    })
}

/// The training curve: three panels (training loss, held-out loss, ε), no text.
pub fn draw_curve(path: &Path, out: &TrainOutcome) -> Result<(), NodeError> {
    let series: [(Vec<f64>, RGBColor); 3] = [
        (out.rounds.iter().map(|r| r.train_loss).collect(), RED),
        (out.rounds.iter().map(|r| r.holdout_loss).collect(), BLUE),
        (
            out.rounds.iter().map(|r| r.epsilon_cumulative).collect(),
            GREEN,
        ),
    ];
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(io)?;
    let n = out.rounds.len().max(2) as f64;
    for (panel, (values, color)) in root.split_evenly((3, 1)).iter().zip(series) {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        let pad = (hi - lo) * 0.1;
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .build_cartesian_2d(-0.5..(n - 0.5), (lo - pad)..(hi + pad))
            .map_err(io)?;
        chart
            .plotting_area()
            .draw(&Rectangle::new(
                [(-0.5, lo - pad), (n - 0.5, hi + pad)],
                BLACK.stroke_width(1),
            ))
            .map_err(io)?;
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(io)?;
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(io)?;
    }
    root.present().map_err(io)?;
    Ok(())
}
