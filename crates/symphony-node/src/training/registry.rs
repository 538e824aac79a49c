//! Delivery to the model registry: the model as `safetensors` (written here, byte for
//! byte deterministic: tensors and metadata in name order, little-endian `F64`), a JSON
//! model card, and the training curve: `training_curve.png` (three panels — training
//! loss, held-out loss, cumulative ε — of the model after each round, with a title,
//! axes, ticks, labels and legends in DejaVu Sans, which is bundled into the binary) and
//! `training_curve.csv` with exactly the plotted values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::json;
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::TaskId;
use symphony_semantic::FeaturePlan;

use super::model::GlobalModel;
use super::outcome::{RoundSummary, TrainOutcome};
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

/// Writes model, card and curve (PNG and CSV) under `dir/<task>/`; returns the
/// paths of the model, the card and the PNG.
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
    std::fs::write(&model_path, file).map_err(io)?;
    let card = model_card(task, spec, plan, model, out, envelope);
    let text =
        serde_json::to_string_pretty(&card).map_err(|e| NodeError::Encoding(e.to_string()))?;
    std::fs::write(&card_path, text).map_err(io)?;
    let curve_path = write_curve(&base, task, &out.rounds)?;
    Ok((model_path, card_path, curve_path))
}

/// Writes `training_curve.png` and `training_curve.csv` of `rounds` (the model
/// card's `rounds`) into `dir`; returns the PNG's path.
pub fn write_curve(
    dir: &Path,
    task: &TaskId,
    rounds: &[RoundSummary],
) -> Result<PathBuf, NodeError> {
    let points = curve_points(rounds);
    std::fs::write(dir.join("training_curve.csv"), curve_csv(&points)).map_err(io)?;
    let png = dir.join("training_curve.png");
    draw_curve(&png, task, &points)?;
    Ok(png)
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
    let features: Vec<serde_json::Value> = plan
        .feature_definitions()
        .into_iter()
        .map(|(name, definition)| json!({"name": name, "definition": definition}))
        .collect();
    json!({
        "task_id": task.to_string(),
        "task_class": "train",
        "target": spec.target,
        "label": format!("1 if {} was bought in the {} days after the cutoff, else 0", plan.body().brand, spec.horizon_days),
        "horizon_days": spec.horizon_days,
        "window_days": spec.window_days,
        "model_operator": spec.model_operator,
        "model_type": spec.model,
        "n_parameters": model.n_parameters(),
        "features": features,
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
        "delivered_round": out.delivered_round,
        "delivered_model": if out.delivered_round == out.rounds_run {
            format!("the model after the last round run (round {})", out.rounds_run)
        } else {
            format!("the model after round {} of {}: the lowest released held-out loss (the run stopped for lack of improvement)", out.delivered_round, out.rounds_run)
        },
        "convergence_rule": format!("converged when the best held-out loss of the last {} rounds improves on the best before them by less than max(convergence_threshold, {} standard deviations of the release noise of that difference)", super::control::CONVERGENCE_WINDOW, super::control::CONVERGENCE_Z),
        "privacy": {"unit": "person (one account per person across Vaults; a person trains through one Vault and is charged in every Vault that holds it)",
                    "epsilon_spent": out.epsilon_spent, "epsilon_allocation": out.epsilon_allocation, "delta": out.delta,
                    "per_person_epsilon_max": out.per_person_epsilon_max, "released": out.released_metrics,
                    "accountant": "RDP, Poisson-subsampled Gaussian (Mironov et al. 2019) per DP-SGD step plus one Gaussian metrics release per round, Balle et al. 2020 conversion",
                    "dp_sgd": {"local_steps": spec.dp_sgd.local_steps, "sampling_rate": spec.dp_sgd.sampling_rate,
                               "noise_multiplier": spec.dp_sgd.noise_multiplier, "clip_norm": spec.dp_sgd.clip_norm}},
        "holdout_size": out.holdout_size,
        "class_balance": {"positive_rate": out.holdout_positive_rate, "negative_rate": if out.holdout_size == 0 { 0.0 } else { 1.0 - out.holdout_positive_rate },
                          "of": "the held-out split across all Vaults"},
        "baseline_accuracy": out.baseline_accuracy,
        "baseline": "always predict the majority class of the held-out split",
        "metrics": {"auc_holdout": out.auc_holdout, "accuracy_holdout": out.accuracy_holdout, "mia_advantage": out.mia_advantage},
        "acceptance": spec.acceptance,
        "settlement": {"settlement_ref": task.to_string(), "escrow": body.budget_lock_ref.as_ref().map(|l| l.escrow_id.clone()),
                       "payout_id": format!("payout-{task}"), "fee_total_micro_sym": out.fee_total, "state": out.settlement_state,
                       "round_settlements": out.round_settlements},
        "rounds": out.rounds,
        "model_file": "model.safetensors",
        "curve": {"file": "training_curve.png", "values": "training_curve.csv",
                  "x": "round k: the model after k rounds (round 0, the untrained model, is not plotted)",
                  "panels": ["training loss (noisy release)", "held-out loss (noisy release)", "cumulative epsilon"]},
    })
}

/// One point of the training curve: the model after `round` rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Rounds run (1-based).
    pub round: u32,
    /// Mean training loss of the model after the round (noisy), if measured: the
    /// loss a round releases is that of the model it starts from, so the model after
    /// the last round has none.
    pub train_loss: Option<f64>,
    /// Mean held-out loss of the model after the round (noisy), if measured.
    pub holdout_loss: Option<f64>,
    /// Cumulative ε after the round.
    pub epsilon_cumulative: f64,
}

/// The curve's points, from round 1: round k's losses are those released at the start
/// of round k + 1 (measured on the model after k rounds).
pub fn curve_points(rounds: &[RoundSummary]) -> Vec<CurvePoint> {
    rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let next = rounds.get(i + 1);
            CurvePoint {
                round: r.round + 1,
                train_loss: next.map(|n| n.train_loss),
                holdout_loss: next.map(|n| n.holdout_loss),
                epsilon_cumulative: r.epsilon_cumulative,
            }
        })
        .collect()
}

/// `training_curve.csv`: the plotted values, one row per round.
pub fn curve_csv(points: &[CurvePoint]) -> String {
    let cell = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut s = String::from("round,train_loss,holdout_loss,epsilon_cumulative\n");
    for p in points {
        s.push_str(&format!(
            "{},{},{},{:.6}\n",
            p.round,
            cell(p.train_loss),
            cell(p.holdout_loss),
            p.epsilon_cumulative
        ));
    }
    s
}

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() -> Result<(), NodeError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(NodeError::Io(
            "the bundled DejaVu Sans font does not load".into(),
        ))
    }
}

/// One panel of the curve: caption, y-axis unit, points, colour, legend position.
type Panel<'a> = (
    &'a str,
    &'a str,
    Vec<(f64, f64)>,
    RGBColor,
    SeriesLabelPosition,
);

/// The training curve: title, then three panels (training loss, held-out loss,
/// cumulative ε) over rounds, each with axes, ticks, axis labels and a legend.
pub fn draw_curve(path: &Path, task: &TaskId, points: &[CurvePoint]) -> Result<(), NodeError> {
    register_font()?;
    use SeriesLabelPosition::{UpperLeft, UpperRight};
    let panels: [Panel<'_>; 3] = [
        (
            "training loss (noisy, clipped at 2)",
            "mean log-loss",
            points
                .iter()
                .filter_map(|p| p.train_loss.map(|v| (f64::from(p.round), v)))
                .collect(),
            RED,
            UpperRight,
        ),
        (
            "held-out loss (noisy, clipped at 2)",
            "mean log-loss",
            points
                .iter()
                .filter_map(|p| p.holdout_loss.map(|v| (f64::from(p.round), v)))
                .collect(),
            BLUE,
            UpperRight,
        ),
        (
            "cumulative ε (per person)",
            "ε",
            points
                .iter()
                .map(|p| (f64::from(p.round), p.epsilon_cumulative))
                .collect(),
            RGBColor(0, 140, 0),
            // ε only grows: the legend goes where the curve is not.
            UpperLeft,
        ),
    ];
    let root = BitMapBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(io)?;
    let root = root
        .titled(
            &format!("Training curve of {task}: the model after each round"),
            ("sans-serif", 22),
        )
        .map_err(io)?;
    let last = points.last().map_or(1, |p| p.round).max(2);
    for (area, (name, unit, values, color, legend_at)) in
        root.split_evenly((3, 1)).iter().zip(panels)
    {
        let lo = values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        let hi = values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
            (true, true) if hi > lo => (lo, hi),
            (true, true) => (lo - 0.5, hi + 0.5),
            _ => (0.0, 1.0),
        };
        let pad = (hi - lo) * 0.15;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .caption(name, ("sans-serif", 17))
            .x_label_area_size(38)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5..(f64::from(last) + 0.5), (lo - pad)..(hi + pad))
            .map_err(io)?;
        chart
            .configure_mesh()
            .x_desc("round (the model after k rounds)")
            .y_desc(unit)
            .x_labels(last.min(12) as usize)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(io)?;
        chart
            .draw_series(LineSeries::new(values.clone(), color.stroke_width(2)))
            .map_err(io)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                values
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(io)?;
        chart
            .configure_series_labels()
            .position(legend_at)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(io)?;
    }
    root.present().map_err(io)?;
    Ok(())
}
