//! `symphony bench luckin`: the Luckin campaign on the embedded network at a bench
//! size, admission → delivered timed by plane, against an in-process plaintext
//! scan-and-filter of the same generated records (the baseline issue #14 measures
//! the encrypted query against).
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Deserialize;
use symphony_node::network::{advertiser_key, CampaignSpec, SignedRequest};

use crate::train_cmd::PhaseTimes;
use crate::{Embedded, NetArgs, DEFAULT_SPEC, DEMO_NOW_MS};

/// Options of `symphony bench luckin`.
#[derive(clap::Args)]
pub struct BenchLuckinArgs {
    /// People in the synthetic population.
    #[arg(long, default_value_t = 100_000)]
    subjects: u64,
    /// Purchase records in total.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Enterprise nodes (one Vault each).
    #[arg(long, default_value_t = 8)]
    vaults: u32,
    /// Seed of the data and keys.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

/// One purchase line of a generated record file (other kinds are skipped).
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    kind: &'a str,
    #[serde(borrow)]
    subject: &'a str,
    #[serde(borrow, default)]
    brand: Option<&'a str>,
    #[serde(default)]
    ts_ms: Option<u64>,
    #[serde(borrow, default)]
    store_country: Option<&'a str>,
}

/// The baseline: every generated record file read and parsed in this process,
/// the campaign's filter applied in plaintext (a purchase of the brand in the
/// country within the window), distinct subjects per Vault counted. No
/// encryption, consent, budget, consensus or evidence: what the protocol adds is
/// the difference.
fn plaintext_scan(files: &[PathBuf], spec: &CampaignSpec, now_ms: u64) -> Result<(u64, u64)> {
    let since = now_ms.saturating_sub(u64::from(spec.window_days) * 86_400_000);
    let mut matched = 0u64;
    let mut rows = 0u64;
    for file in files {
        let reader = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        );
        let mut subjects: BTreeSet<String> = BTreeSet::new();
        for line in reader.split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            rows += 1;
            let row: Row<'_> = serde_json::from_slice(&line)
                .with_context(|| format!("{}: line {rows}", file.display()))?;
            let hit = row.kind == "purchase"
                && row
                    .brand
                    .is_some_and(|b| b.eq_ignore_ascii_case(&spec.brand))
                && row
                    .store_country
                    .is_some_and(|c| c.eq_ignore_ascii_case(&spec.country))
                && row.ts_ms.is_some_and(|t| t >= since && t <= now_ms);
            if hit && !subjects.contains(row.subject) {
                subjects.insert(row.subject.to_owned());
            }
        }
        matched += subjects.len() as u64;
    }
    Ok((matched, rows))
}

/// Runs `symphony bench luckin`.
pub fn bench(args: BenchLuckinArgs) -> Result<()> {
    anyhow::ensure!(args.vaults > 0, "--vaults must be > 0");
    let spec: CampaignSpec = toml::from_str(DEFAULT_SPEC)?;
    let net_args = NetArgs {
        subjects: args.subjects,
        records: args.records,
        vaults: args.vaults,
        seed: args.seed,
        dir: None,
        keep_plaintext: true,
    };
    let started = Instant::now();
    let mut emb = Embedded::start(
        &net_args,
        &[spec.advertiser.as_str()],
        &mut symphony_node::network::Quiet,
    )?;
    let build_s = started.elapsed().as_secs_f64();
    let files = emb.net.generated.vault_files.clone();
    let t = Instant::now();
    let (baseline_subjects, rows) = plaintext_scan(&files, &spec, DEMO_NOW_MS)?;
    let baseline_s = t.elapsed().as_secs_f64();
    emb.net.remove_plaintext()?;
    let key = advertiser_key(args.seed, &spec.advertiser);
    let req = SignedRequest::sign(spec, 1, &key)?;
    let mut times = PhaseTimes::default();
    let t = Instant::now();
    let o = emb.net.run_campaign(&req, &mut times)?;
    let p = |k: &str| times.0.get(k).copied().unwrap_or(0.0);
    // Dividends are paid after delivery, from the settled fee: their own figure
    // (issue #14 target 2), not part of admission → delivered.
    let dividends_s = p("dividends");
    let run_s = t.elapsed().as_secs_f64() - dividends_s;
    emb.stop()?;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let figures = serde_json::json!({
        "subjects": args.subjects,
        "records": args.records,
        "rows": rows,
        "vaults": args.vaults,
        "states": o.states,
        "eligible": o.eligible_count,
        "delivered": o.delivered_count,
        "baseline_subjects": baseline_subjects,
        "build_s": r3(build_s),
        "run_s": r3(run_s),
        "admission_s": r3(p("admission")),
        "admission_reserve_s": r3(p("admission_reserve")),
        "execution_s": r3(p("execution")),
        "execution_slices_s": r3(p("execution_slices")),
        "settlement_s": r3(p("settlement")),
        "dividends_s": r3(dividends_s),
        "baseline_scan_s": r3(baseline_s),
        "ratio_to_baseline": r3(run_s / baseline_s.max(1e-9)),
    });
    if args.json {
        return crate::output::print_bench_json("luckin", &figures);
    }
    println!(
        "Luckin campaign on the embedded network: {} people, {} records ({rows} rows), {} Vaults",
        args.subjects, args.records, args.vaults
    );
    println!("  states: {}", o.states.join(" → "));
    println!("  {:<52} {:>9}", "phase", "seconds");
    println!(
        "  {:<52} {build_s:>9.2}",
        "(network build: generate + import)"
    );
    for (label, s) in [
        ("admission", p("admission")),
        (
            "  of which budget reservation in the Vaults",
            p("admission_reserve"),
        ),
        ("execution", p("execution")),
        ("  of which slices (Vault enclaves)", p("execution_slices")),
        ("settlement and delivery", p("settlement")),
        ("admission → delivered", run_s),
        (
            "dividends to the data producers (after delivery)",
            dividends_s,
        ),
        ("plaintext scan-and-filter of the same records", baseline_s),
    ] {
        println!("  {label:<52} {s:>9.2}");
    }
    println!(
        "  ratio {:.1}× the plaintext scan; eligible {} (plaintext filter: {baseline_subjects} before consent, budget and de-duplication); load average {:?}; commit {}",
        run_s / baseline_s.max(1e-9),
        o.eligible_count,
        crate::output::load_average(),
        crate::output::git_commit()
    );
    Ok(())
}
