//! `symphony demo compute`: a `compute` task (a noisy per-group aggregate) on the
//! embedded network, through the same planes as the Luckin query.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use symphony_node::network::advertiser_key;
use symphony_node::task::{ComputeOutcome, SignedTask, TaskSpec};

use crate::{
    head_rows, money_rows, print_reason_and_shares, print_table, ConsensusSummary, Embedded,
    NetArgs, Story,
};

const DEFAULT_COMPUTE_SPEC: &str = include_str!("../examples/compute.toml");

/// Options of `symphony demo compute`.
#[derive(clap::Args)]
pub struct ComputeArgs {
    /// People in the synthetic population.
    #[arg(long, default_value_t = 20_000)]
    subjects: u64,
    /// Purchase records in total.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Enterprise nodes (one Vault each).
    #[arg(long, default_value_t = 4)]
    vaults: u32,
    /// Seed of data and keys.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Compute spec file (default: the embedded examples/compute.toml).
    #[arg(long)]
    spec: Option<PathBuf>,
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

/// Runs the compute demo.
pub fn demo_compute(args: ComputeArgs) -> Result<()> {
    let text = match &args.spec {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => DEFAULT_COMPUTE_SPEC.to_owned(),
    };
    let spec = TaskSpec::from_toml(&text).with_context(|| {
        format!(
            "compute spec {}",
            args.spec
                .as_ref()
                .map_or("(the embedded examples/compute.toml)".into(), |p| p
                    .display()
                    .to_string())
        )
    })?;
    let TaskSpec::Compute(compute) = &spec else {
        bail!(
            "demo compute runs a compute task; the spec is a {} task",
            spec.class()
        );
    };
    if !args.json {
        println!(
            "Symphony embedded network — compute: customers and mean basket per home city \
             ({} in {}, last {} days, ε = {})",
            compute.brand, compute.country, compute.window_days, compute.epsilon
        );
    }
    let mut story = Story::new(args.json);
    let net_args = NetArgs {
        subjects: args.subjects,
        records: args.records,
        vaults: args.vaults,
        seed: args.seed,
        dir: args.dir.clone(),
        keep_plaintext: args.keep_plaintext,
    };
    let submitter = compute.submitter.clone();
    let mut emb = Embedded::start(&net_args, &[submitter.as_str()], &mut story)?;
    let key = advertiser_key(args.seed, &submitter);
    let req = SignedTask::sign(spec, 1, &key)?;
    let outcome = emb.net.run_compute(&req, &mut story)?;
    let epoch = crate::epoch_of(&emb.net, &outcome.task_id);
    let consensus = emb.stop()?.with_epoch(epoch);
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("consensus".into(), serde_json::to_value(&consensus)?);
            o.insert("epoch".into(), epoch.json());
        }
        crate::output::print_json(&v)?;
    } else {
        summary(&outcome, &consensus, story.started.elapsed().as_secs_f64());
    }
    crate::ended(&outcome.task_id, &outcome.states, outcome.reason.as_deref())
}

fn summary(o: &ComputeOutcome, c: &ConsensusSummary, secs: f64) {
    let mut rows = head_rows(&o.task_id, &o.states);
    rows.extend([
        (
            "groups released / suppressed",
            format!("{} / {}", o.groups.len(), o.suppressed_groups.len()),
        ),
        ("vaults responded", o.vaults_responded.to_string()),
        ("subjects evaluated", o.subjects_evaluated.to_string()),
        ("ε committed per subject", o.epsilon_committed.clone()),
        (
            "attestations verified",
            format!(
                "{} (software enclave: development backend)",
                o.attestations_verified
            ),
        ),
    ]);
    rows.extend(money_rows(
        o.fee_locked,
        o.fee_total,
        o.refund,
        o.settlement_state.as_deref(),
        c,
        secs,
    ));
    print_table(&rows);
    if !o.groups.is_empty() {
        println!("  released (noisy) table:");
        println!(
            "    {:<24} {:>10} {:>18}",
            "home city", "customers", "mean basket (minor)"
        );
        for g in &o.groups {
            println!("    {:<24} {:>10} {:>18}", g.group, g.count, g.value);
        }
    }
    if !o.suppressed_groups.is_empty() {
        println!(
            "  suppressed (below minimum_result_cardinality): {}",
            o.suppressed_groups.join(", ")
        );
    }
    print_reason_and_shares(o.reason.as_deref(), &o.fee_shares);
}
