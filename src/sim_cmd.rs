//! `symphony sim --seeds N [--tasks T] [--json]`: the deterministic fault simulator
//! (`symphony_sim`). Runs seeds `first..first+N`, each with `T` requests under
//! injected faults, checks the invariants after every step and exits 1 on the first
//! violated one, printing the seed and the steps that led to it. `--seed S` replays
//! one seed and prints every step.
use anyhow::{bail, Result};
use clap::Args;
use symphony_sim::{run, PlantedBug, SimConfig, SimReport};

/// Arguments of `symphony sim`.
#[derive(Args)]
pub struct SimArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Requests per seed.
    #[arg(long, default_value_t = 200)]
    tasks: u32,
    /// Replay this one seed and print every step.
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    seed: Option<u64>,
    /// Print one JSON object per seed.
    #[arg(long)]
    json: bool,
    /// Append proposals twice to the log now and then (per mille), bypassing the
    /// leader's read barrier: exercises the state machine's own duplicate refusal.
    #[arg(long, default_value_t = 0)]
    dup_log: u32,
    /// Plant a bug to see the simulator find it: `abort-keeps-reservation` or
    /// `vault-forgets-released`.
    #[arg(long, hide = true)]
    plant_bug: Option<String>,
}

fn json(r: &SimReport) -> serde_json::Value {
    serde_json::json!({
        "seed": r.seed,
        "tasks": r.tasks,
        "passed": r.passed(),
        "steps": r.steps,
        "log_entries": r.log_entries,
        "completed": r.completed,
        "rejected": r.rejected,
        "refused": r.refused,
        "aborted_attempts": r.aborted_attempts,
        "crashes": r.crashes,
        "lost": r.lost,
        "duplicated": r.duplicated,
        "reordered": r.reordered,
        "epochs": r.epochs,
        "refused_commands": r.refused_commands,
        "checkpoints": r.checkpoints,
        "invariant_checks": r.invariant_checks,
        "trace_hash": format!("{:016x}", r.trace_hash),
        "violation": r.violation.as_ref().map(|v| serde_json::json!({
            "step": v.step,
            "invariant": v.invariant.to_string(),
            "detail": v.detail,
        })),
    })
}

fn line(r: &SimReport) -> String {
    format!(
        "seed {:>6}: {} ({} steps, {} log entries; completed {}, rejected {}, refused {}, \
         aborted attempts {}; crashes {}, lost {}, duplicated {}, reordered {}, epochs {}; \
         {} invariant checks)",
        r.seed,
        if r.passed() { "ok" } else { "VIOLATION" },
        r.steps,
        r.log_entries,
        r.completed,
        r.rejected,
        r.refused,
        r.aborted_attempts,
        r.crashes,
        r.lost,
        r.duplicated,
        r.reordered,
        r.epochs,
        r.invariant_checks
    )
}

/// Runs `symphony sim`.
pub fn sim(args: SimArgs) -> Result<()> {
    let bug = match args.plant_bug.as_deref() {
        None => None,
        Some("abort-keeps-reservation") => Some(PlantedBug::AbortKeepsReservation),
        Some("vault-forgets-released") => Some(PlantedBug::VaultForgetsReleased),
        Some(other) => bail!(
            "unknown planted bug {other:?}: abort-keeps-reservation or vault-forgets-released"
        ),
    };
    let (first, count, full) = match args.seed {
        Some(s) => (s, 1, true),
        None => (args.first_seed, args.seeds, false),
    };
    let started = std::time::Instant::now();
    let mut passed = 0u64;
    let (mut steps, mut checks, mut entries) = (0u64, 0u64, 0u64);
    for seed in first..first.saturating_add(count) {
        let mut config = SimConfig::new(seed, args.tasks);
        config.bug = bug;
        config.full_trace = full;
        config.faults.dup_log_per_mille = args.dup_log;
        let r = run(&config);
        if args.json {
            crate::output::print_json_line(&json(&r))?;
        } else {
            println!("{}", line(&r));
        }
        if full && !args.json {
            for step in &r.trace {
                println!("  {step}");
            }
        }
        if let Some(v) = &r.violation {
            if !full && !args.json {
                println!("the last {} steps before the violation:", r.trace.len());
                for step in &r.trace {
                    println!("  {step}");
                }
            }
            bail!(
                "seed {seed}: invariant \"{}\" violated at step {}: {}\n\
                 replay it with: symphony sim --seed {seed} --tasks {}{}{}",
                v.invariant,
                v.step,
                v.detail,
                args.tasks,
                if args.dup_log > 0 {
                    format!(" --dup-log {}", args.dup_log)
                } else {
                    String::new()
                },
                args.plant_bug
                    .as_deref()
                    .map(|b| format!(" --plant-bug {b}"))
                    .unwrap_or_default()
            );
        }
        passed += 1;
        steps += r.steps;
        checks += r.invariant_checks;
        entries += r.log_entries;
    }
    if !args.json {
        println!(
            "{passed} seeds x {} requests passed every invariant in {:.1?} \
             ({steps} steps, {entries} log entries, {checks} invariant checks)",
            args.tasks,
            started.elapsed()
        );
    }
    Ok(())
}
