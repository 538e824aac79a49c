//! `symphony bench import`: generates a record file with the Vault crate's
//! generator, imports it with the default (atomic) options into a fresh Vault and
//! prints rows/s, MB/s and the split between the preparing pass (parse, validate,
//! encode; nothing written) and the writing pass (seal, commit).

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use symphony_core::budget::Epsilon;
use symphony_core::ids::{EpochId, VaultId};
use symphony_vault::{
    generate, import_records, GenerateParams, ImportOptions, ImportPhase, Vault, VaultConfig,
    VaultKey,
};

/// Purchases fall in the 90 days before this "now" (2026-01-01).
const NOW_MS: u64 = 1_767_225_600_000;

#[derive(clap::Args)]
pub struct BenchImportArgs {
    /// Purchase records to generate (identity and geography rows come on top).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct people (default: records / 10).
    #[arg(long)]
    pub subjects: Option<u64>,
    /// One JSON line with the figures.
    #[arg(long)]
    pub json: bool,
}

/// What `symphony bench import` measured.
#[derive(Debug, Serialize)]
pub struct ImportFigures {
    /// Purchase records generated.
    pub records: u64,
    /// Subjects (people) generated.
    pub subjects: u64,
    /// Rows in the file (identity + geography + purchases).
    pub rows: u64,
    /// Size of the JSONL file.
    pub file_bytes: u64,
    /// Batches committed.
    pub batches: u64,
    /// Records per write transaction (the default).
    pub batch_records: usize,
    /// Whole import, seconds.
    pub secs: f64,
    /// Rows imported per second.
    pub rows_per_s: f64,
    /// JSONL megabytes (10^6) imported per second.
    pub mb_per_s: f64,
    /// Preparing pass (parse, validate, encode, digest; nothing written), seconds.
    pub validate_secs: f64,
    /// Writing pass (deduplicate, seal, commit), seconds.
    pub write_secs: f64,
    /// CPU seconds of the process during the import (all threads).
    pub cpu_secs: f64,
    /// Size of the Vault file after the import.
    pub vault_bytes: u64,
}

/// CPU seconds used by this process so far (all threads), from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `symphony bench import ...`.
pub fn bench(args: BenchImportArgs) -> Result<()> {
    if args.records == 0 {
        bail!("--records must be > 0");
    }
    let subjects = args.subjects.unwrap_or((args.records / 10).max(1));
    if subjects == 0 {
        bail!("--subjects must be > 0");
    }
    let dir = tempfile::tempdir()?;
    let summary = generate(
        &GenerateParams {
            subjects,
            vaults: 1,
            records: args.records,
            seed: 1,
            now_ms: NOW_MS,
        },
        dir.path(),
    )?;
    let Some(file) = summary.vault_files.first() else {
        bail!("the generator wrote no record file");
    };
    let file_bytes = std::fs::metadata(file)?.len();
    let vault_path = dir.path().join("bench.redb");
    let vault = Vault::create(
        &vault_path,
        VaultConfig {
            vault_id: VaultId::new("vault-01")?,
            default_budget: Epsilon::from_micro(1_000_000),
            initial_epoch: EpochId::GENESIS,
        },
        &VaultKey::from_bytes([7; 32]),
        [1; 32],
    )?;
    let options = ImportOptions::default();
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let mut validated_at = None;
    let s = import_records(&vault, file, &options, &mut |p| {
        // The first `Writing` report comes when the whole file is validated.
        if p.phase == ImportPhase::Writing && validated_at.is_none() {
            validated_at = Some(start.elapsed().as_secs_f64());
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    drop(vault);
    let validate_secs = validated_at.unwrap_or(secs);
    let f = ImportFigures {
        records: summary.purchases,
        subjects,
        rows: s.rows,
        file_bytes,
        batches: s.batches,
        batch_records: options.batch_records,
        secs,
        rows_per_s: s.rows as f64 / secs,
        mb_per_s: file_bytes as f64 / 1e6 / secs,
        validate_secs,
        write_secs: secs - validate_secs,
        cpu_secs: cpu,
        vault_bytes: std::fs::metadata(&vault_path)?.len(),
    };
    if args.json {
        crate::output::print_bench_json("import", &f)?;
    } else {
        println!(
            "Vault import (default: atomic, validate before writing): {} rows ({} purchases, {} subjects), {:.1} MB JSONL",
            f.rows,
            f.records,
            f.subjects,
            f.file_bytes as f64 / 1e6
        );
        println!(
            "  {:.0} rows/s   {:.1} MB/s   {:.2} s wall, {:.2} s CPU",
            f.rows_per_s, f.mb_per_s, f.secs, f.cpu_secs
        );
        println!(
            "  prepare (parse, validate, encode; nothing written) {:.2} s, write (seal, commit) {:.2} s, {} batches of ≤ {} records",
            f.validate_secs, f.write_secs, f.batches, f.batch_records
        );
        println!(
            "  Vault file {:.1} MB; load average {:?}",
            f.vault_bytes as f64 / 1e6,
            crate::output::load_average()
        );
    }
    Ok(())
}
