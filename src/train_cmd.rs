//! `symphony demo train`: the federated training scenario (seed 003) on the embedded
//! network, with a progress bar per round and a summary table.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Observer};
use symphony_node::training::{
    permit_training, run_training, RoundSummary, TrainObserver, TrainOutcome, TrainingRequest,
    TrainingSpec,
};

const DEFAULT_SPEC: &str = include_str!("../examples/train.toml");

/// Options of `symphony demo train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// People in the synthetic population.
    #[arg(long, default_value_t = 20_000)]
    subjects: u64,
    /// Purchase records in total.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Enterprise nodes (one Vault each).
    #[arg(long, default_value_t = 4)]
    vaults: u32,
    /// Seed of data, keys, DP-SGD noise and masks.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Maximum rounds (overrides the spec's iteration_policy.max_rounds).
    #[arg(long)]
    rounds: Option<u32>,
    /// Training spec (default: the embedded examples/train.toml).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Model registry directory (default: ./model-registry).
    #[arg(long, default_value = "model-registry")]
    registry: PathBuf,
    /// Keep the network's files here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the generated plaintext import files (`data/*.jsonl`) after the Vaults
    /// imported them (default: deleted, only the encrypted Vaults stay).
    #[arg(long)]
    keep_plaintext: bool,
    /// Print one JSON object instead of the story.
    #[arg(long)]
    json: bool,
}

struct Progress {
    json: bool,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Observer for Progress {
    fn step(&mut self, name: &str, detail: &str) {
        if self.json {
            return;
        }
        let line = format!(
            "  [{:7.2}s] {name:<24} {detail}",
            self.started.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(b) if name != "controller" => b.println(line),
            _ => {
                if let Some(b) = self.bar.take() {
                    b.finish();
                }
                println!("{line}");
            }
        }
    }
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
}

impl TrainObserver for Progress {
    fn round(&mut self, s: &RoundSummary, max_rounds: u32) {
        if self.json {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(u64::from(max_rounds));
            b.set_style(
                ProgressStyle::with_template("  rounds [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        bar.set_position(u64::from(s.round) + 1);
        bar.set_message(format!(
            "loss {:.3}  held-out loss {:.3}  ε {:.3}  ({} Vaults, ~{} examples, epoch {})",
            s.train_loss, s.holdout_loss, s.epsilon_cumulative, s.vaults, s.examples, s.epoch_id
        ));
    }
}

fn summary(o: &TrainOutcome, epoch: crate::EpochInfo) {
    let (epoch_label, epoch_value) = epoch.row();
    let rows: Vec<(&str, String)> = vec![
        ("task", o.task_id.clone()),
        ("states", o.states.join(" → ")),
        (epoch_label, epoch_value),
        (
            "rounds run",
            format!(
                "{} of max {} ({} budgeted)",
                o.rounds_run, o.max_rounds, o.rounds_budgeted
            ),
        ),
        (
            "stop",
            format!(
                "{} (converged {}, convergence_not_reached {})",
                o.stop_reason, o.converged, o.convergence_not_reached
            ),
        ),
        (
            "delivered model",
            if o.delivered_round == o.rounds_run {
                format!("after round {} (the last)", o.rounds_run)
            } else {
                format!(
                    "after round {} of {} (lowest released held-out loss)",
                    o.delivered_round, o.rounds_run
                )
            },
        ),
        (
            "objects",
            format!("1 + {} + {} = {}", o.rounds_run, o.n_slices, o.n_objects),
        ),
        (
            "privacy",
            format!(
                "ε {:.6} of {} spent, δ {}",
                o.epsilon_spent, o.epsilon_allocation, o.delta
            ),
        ),
        ("held-out AUC", format!("{:.4}", o.auc_holdout)),
        ("held-out accuracy", format!("{:.4}", o.accuracy_holdout)),
        ("MIA advantage", format!("{:.4}", o.mia_advantage)),
        (
            "attestations",
            format!(
                "{} (software enclave: development backend)",
                o.attestations_verified
            ),
        ),
        (
            "fee",
            format!(
                "{} charged, {} refunded (locked {})",
                symphony_economics::format_sym(o.fee_total),
                symphony_economics::format_sym(o.refund),
                symphony_economics::format_sym(o.fee_locked)
            ),
        ),
        ("model", o.model_path.clone().unwrap_or_else(|| "-".into())),
        (
            "model card",
            o.model_card_path.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "training curve",
            o.curve_path.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    println!();
    for (k, v) in rows {
        println!("  {k:<18} {v}");
    }
    if let Some(r) = &o.reason {
        println!("  {:<18} {r}", "reason");
    }
}

/// Runs `symphony demo train`.
pub fn demo_train(args: TrainArgs, now_ms: u64) -> Result<()> {
    let text = match &args.spec {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => DEFAULT_SPEC.to_owned(),
    };
    let mut spec = TrainingSpec::parse(&text).with_context(|| {
        args.spec
            .as_ref()
            .map_or("the embedded examples/train.toml".into(), |p| {
                p.display().to_string()
            })
    })?;
    if let Some(r) = args.rounds {
        spec.iteration_policy.max_rounds = r;
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let mut progress = Progress {
        json: args.json,
        bar: None,
        started: Instant::now(),
    };
    if !args.json {
        println!(
            "Symphony embedded network — federated training: {}",
            spec.target
        );
    }
    let params = NetworkParams {
        subjects: args.subjects,
        vaults: args.vaults,
        records: args.records,
        seed: args.seed,
        now_ms,
    };
    let mut net = EmbeddedNetwork::build(
        &dir,
        &params,
        &[spec.model_operator.as_str()],
        &mut progress,
    )?;
    permit_training(&net, &spec.model_operator)?;
    if !args.keep_plaintext {
        net.remove_plaintext()?;
    }
    let key = advertiser_key(args.seed, &spec.model_operator);
    let req = TrainingRequest::sign(spec, 1, &key)?;
    let outcome = run_training(&mut net, &req, &args.registry, args.seed, &mut progress)?;
    let epoch = crate::epoch_of(&net, &outcome.task_id);
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("epoch".into(), epoch.json());
        }
        crate::output::print_json(&v)?;
    } else {
        summary(&outcome, epoch);
    }
    crate::ended(&outcome.task_id, &outcome.states, outcome.reason.as_deref())
}
