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

/// Options of `symphony bench train`.
#[derive(clap::Args)]
pub struct BenchTrainArgs {
    /// People in the synthetic population.
    #[arg(long, default_value_t = 100_000)]
    subjects: u64,
    /// Purchase records in total (default: 10 per person).
    #[arg(long)]
    records: Option<u64>,
    /// Enterprise nodes (one Vault each).
    #[arg(long, default_value_t = 4)]
    vaults: u32,
    /// Rounds to run (the convergence and patience rules are off, so all run).
    #[arg(long, default_value_t = 12)]
    rounds: u32,
    /// Seed of data, keys, DP-SGD noise and masks.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

/// Wall-clock seconds per named phase of a run ([`Observer::phase`]).
#[derive(Default)]
pub(crate) struct PhaseTimes(pub(crate) std::collections::BTreeMap<&'static str, f64>);

impl Observer for PhaseTimes {
    fn step(&mut self, _: &str, _: &str) {}
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
    fn phase(&mut self, name: &'static str, elapsed: std::time::Duration) {
        *self.0.entry(name).or_default() += elapsed.as_secs_f64();
    }
}

impl TrainObserver for PhaseTimes {
    fn round(&mut self, _: &RoundSummary, _: u32) {}
}

/// The parts of one round, in order ([`symphony_node::training`]'s round laps).
const ROUND_PHASES: &[(&str, &str)] = &[
    ("round_open", "open the round (consensus)"),
    ("prepare", "prepare: budget ops + features in each Vault"),
    ("secagg_setup", "secure aggregation: roster, share dealing"),
    (
        "train_and_verify",
        "DP-SGD + masking + budget commit, verify",
    ),
    ("record_slices", "record the round's slices (consensus)"),
    ("aggregate", "aggregation enclave: unmask, FedAvg"),
    ("round_close", "update model, accountant, close (consensus)"),
];

/// Runs `symphony bench train`: the federated training of `demo train` at a bench
/// size, timed by phase (network build, admission, each part of a round, finish).
pub fn bench_train(args: BenchTrainArgs, now_ms: u64) -> Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be > 0");
    anyhow::ensure!(args.vaults > 0, "--vaults must be > 0");
    let records = args.records.unwrap_or(args.subjects.saturating_mul(10));
    let mut spec = TrainingSpec::parse(DEFAULT_SPEC)?;
    spec.iteration_policy.max_rounds = args.rounds;
    spec.iteration_policy.convergence_threshold = 0.0;
    spec.iteration_policy.early_stop_patience = args.rounds;
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("model-registry");
    let params = NetworkParams {
        subjects: args.subjects,
        vaults: args.vaults,
        records,
        seed: args.seed,
        now_ms,
    };
    let mut times = PhaseTimes::default();
    let started = Instant::now();
    let mut net = EmbeddedNetwork::build(
        dir.path(),
        &params,
        &[spec.model_operator.as_str()],
        &mut symphony_node::network::Quiet,
    )?;
    permit_training(&net, &spec.model_operator)?;
    net.remove_plaintext()?;
    let build_s = started.elapsed().as_secs_f64();
    let key = advertiser_key(args.seed, &spec.model_operator);
    let req = TrainingRequest::sign(spec, 1, &key)?;
    let run_started = Instant::now();
    let o = run_training(&mut net, &req, &registry, args.seed, &mut times)?;
    let run_s = run_started.elapsed().as_secs_f64();
    let t = |k: &str| times.0.get(k).copied().unwrap_or(0.0);
    let rounds_s = t("rounds");
    let finish_s = (t("rounds_and_finish") - rounds_s).max(0.0);
    let round_split: serde_json::Map<String, serde_json::Value> = ROUND_PHASES
        .iter()
        .map(|(k, _)| ((*k).to_owned(), round3(t(k)).into()))
        .collect();
    let figures = serde_json::json!({
        "subjects": args.subjects,
        "records": records,
        "vaults": args.vaults,
        "rounds_run": o.rounds_run,
        "states": o.states,
        "auc_holdout": o.auc_holdout,
        "build_s": round3(build_s),
        "run_s": round3(run_s),
        "admission_s": round3(t("admission")),
        "rounds_s": round3(rounds_s),
        "per_round_s": round3(rounds_s / f64::from(o.rounds_run.max(1))),
        "round_split_s": round_split,
        "finish_s": round3(finish_s),
        "release_unused_s": round3(t("release_unused")),
    });
    if args.json {
        return crate::output::print_bench_json("train", &figures);
    }
    println!(
        "federated training on the embedded network: {} people, {} records, {} Vaults, {} rounds",
        args.subjects, records, args.vaults, o.rounds_run
    );
    println!("  states: {}", o.states.join(" → "));
    println!("  {:<46} {:>9} {:>7}", "phase", "seconds", "share");
    let row = |name: &str, s: f64| {
        println!(
            "  {name:<46} {s:>9.2} {:>6.1}%",
            100.0 * s / run_s.max(f64::EPSILON)
        );
    };
    println!(
        "  {:<46} {build_s:>9.2}",
        "(network build: generate + import)"
    );
    row("admission (persons, reservations, escrow)", t("admission"));
    row("rounds", rounds_s);
    for (k, label) in ROUND_PHASES {
        row(&format!("  {label}"), t(k));
    }
    row("finish (verify, settle, deliver)", finish_s);
    row("release unused reservations", t("release_unused"));
    println!("  {:<46} {run_s:>9.2}", "run total (admission → delivered)");
    println!(
        "  per round {:.2} s; load average {:?}; commit {}",
        rounds_s / f64::from(o.rounds_run.max(1)),
        crate::output::load_average(),
        crate::output::git_commit()
    );
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
