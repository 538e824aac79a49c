//! Vault benchmark: generate N purchases, import them (encrypting), then run the
//! Luckin audience scan (decrypt everything, filter). Plain `Instant` timing.
//!
//! `SYMPHONY_VAULT_BENCH_RECORDS` (default 1,000,000) sets N;
//! `SYMPHONY_VAULT_BENCH_DIR` (default the system temp dir) where files go;
//! `SYMPHONY_VAULT_BENCH_IMPORT_ONLY` (set) stops after the default import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::ControlFlow;
use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use symphony_core::budget::Epsilon;
use symphony_core::ids::{ActorId, EpochId, VaultId};
use symphony_core::TaskClass;
use symphony_vault::{
    generate, import_records, GenerateParams, ImportOptions, ImportPhase, Vault, VaultConfig,
    VaultKey,
};

const NOW_MS: u64 = 1_767_225_600_000;
const DAY_MS: u64 = 86_400_000;

/// CPU seconds used by this process so far (all threads), from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used by the calling thread so far.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The writer alone: batches prepared in memory first, then encrypted and
/// committed one write transaction each (what the import's writer thread does).
fn write_only(dir: &std::path::Path, file: &std::path::Path, batch_records: usize) {
    let path = dir.join("write-only.redb");
    let config = VaultConfig {
        vault_id: VaultId::new("vault-01").unwrap(),
        default_budget: Epsilon::from_micro(1_000_000),
        initial_epoch: EpochId::GENESIS,
    };
    let vault = Vault::create(&path, config, &VaultKey::from_bytes([7; 32]), [1; 32]).unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    let mut batches = Vec::new();
    let mut builder = vault.batch_builder();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let record = match v["kind"].as_str().unwrap() {
            "identity" => symphony_vault::Record::Identity(symphony_vault::Identity {
                contact_kind: if v["contact_kind"] == "phone" {
                    symphony_vault::ContactKind::Phone
                } else {
                    symphony_vault::ContactKind::Email
                },
                contact: v["contact"].as_str().unwrap().to_owned(),
            }),
            "geography" => symphony_vault::Record::Geography(symphony_vault::Geography {
                home_city: v["home_city"].as_str().unwrap().to_owned(),
                home_country: v["home_country"].as_str().unwrap().to_owned(),
            }),
            _ => symphony_vault::Record::Purchase(symphony_vault::Purchase {
                brand: v["brand"].as_str().unwrap().to_owned(),
                category: v["category"].as_str().unwrap().to_owned(),
                amount_minor: v["amount_minor"].as_u64().unwrap(),
                currency: v["currency"].as_str().unwrap().to_owned(),
                ts_ms: v["ts_ms"].as_u64().unwrap(),
                store_city: v["store_city"].as_str().unwrap().to_owned(),
                store_country: v["store_country"].as_str().unwrap().to_owned(),
            }),
        };
        let subject = symphony_core::ids::SubjectId::new(v["subject"].as_str().unwrap()).unwrap();
        builder.push_record(subject, &record).unwrap();
        if builder.len() >= batch_records {
            batches.push(builder.finish());
        }
    }
    if !builder.is_empty() {
        batches.push(builder.finish());
    }
    drop(text);
    let rows: usize = batches.iter().map(|b| b.len()).sum();
    let (t, c) = (Instant::now(), thread_cpu_secs());
    for batch in &batches {
        vault.insert_prepared(batch).unwrap();
    }
    let (secs, cpu) = (t.elapsed().as_secs_f64(), thread_cpu_secs() - c);
    println!(
        "write only (prepared batches, encrypt + commit): {rows} rows in {secs:.2}s wall, {cpu:.2}s CPU = {} rows/s, {} rows/CPU-s",
        per_sec(rows as u64, secs),
        per_sec(rows as u64, cpu)
    );
}

/// Import without the validation pass (`validate_first: false`).
fn single_pass(dir: &std::path::Path, file: &std::path::Path, batch_records: usize) {
    let path = dir.join("single-pass.redb");
    let config = VaultConfig {
        vault_id: VaultId::new("vault-01").unwrap(),
        default_budget: Epsilon::from_micro(1_000_000),
        initial_epoch: EpochId::GENESIS,
    };
    let vault = Vault::create(&path, config, &VaultKey::from_bytes([7; 32]), [1; 32]).unwrap();
    let options = ImportOptions {
        batch_records,
        validate_first: false,
        ..ImportOptions::default()
    };
    let (t, c) = (Instant::now(), cpu_secs());
    let s = import_records(&vault, file, &options, &mut |_| {}).unwrap();
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "import single pass (validate_first = false): {} rows in {secs:.2}s wall, {cpu:.2}s CPU = {} rows/s",
        s.rows,
        per_sec(s.rows, secs)
    );
}

fn per_sec(n: u64, secs: f64) -> String {
    format!("{:.0}/s", n as f64 / secs)
}

fn raw_aes_gcm() {
    let cipher = Aes256Gcm::new((&[9u8; 32]).into());
    let mut buf = vec![0u8; 64 << 20];
    let nonce = Nonce::from_slice(&[0u8; 12]);
    let t = Instant::now();
    let tag = cipher
        .encrypt_in_place_detached(nonce, b"", &mut buf)
        .unwrap();
    let enc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    cipher
        .decrypt_in_place_detached(nonce, b"", &mut buf, &tag)
        .unwrap();
    let dec = t.elapsed().as_secs_f64();
    println!(
        "raw AES-256-GCM (aes-gcm 0.10, one core, 64 MiB): encrypt {:.2} GB/s, decrypt {:.2} GB/s",
        64.0 * 1.048_576 / 1000.0 / enc,
        64.0 * 1.048_576 / 1000.0 / dec
    );
}

fn main() {
    let n: u64 = std::env::var("SYMPHONY_VAULT_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var("SYMPHONY_VAULT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(base).unwrap();
    raw_aes_gcm();

    let t = Instant::now();
    let params = GenerateParams {
        subjects: (n / 10).max(1),
        vaults: 1,
        records: n,
        seed: 1,
        now_ms: NOW_MS,
    };
    let summary = generate(&params, dir.path()).unwrap();
    let file = &summary.vault_files[0];
    let file_mb = std::fs::metadata(file).unwrap().len() as f64 / 1e6;
    println!(
        "generate: {} purchases, {} rows ({file_mb:.0} MB JSONL) in {:.2}s",
        summary.purchases,
        summary.record_rows,
        t.elapsed().as_secs_f64()
    );

    let path = dir.path().join("bench.redb");
    let config = VaultConfig {
        vault_id: VaultId::new("vault-01").unwrap(),
        default_budget: Epsilon::from_micro(1_000_000),
        initial_epoch: EpochId::GENESIS,
    };
    let vault = Vault::create(&path, config, &VaultKey::from_bytes([7; 32]), [1; 32]).unwrap();
    let (t, c) = (Instant::now(), cpu_secs());
    let lines = symphony_vault::validate_records(file, &mut |_| {}).unwrap();
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "validate only (parse, no writes): {lines} rows in {secs:.2}s wall, {cpu:.2}s CPU = {} rows/CPU-s",
        per_sec(lines, cpu)
    );
    let (t, c) = (Instant::now(), cpu_secs());
    let mut validated_at = None;
    let batch_records = std::env::var("SYMPHONY_VAULT_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ImportOptions::default().batch_records);
    let options = ImportOptions {
        batch_records,
        ..ImportOptions::default()
    };
    let s = import_records(&vault, file, &options, &mut |p| {
        if p.phase == ImportPhase::Writing && validated_at.is_none() {
            validated_at = Some(t.elapsed().as_secs_f64());
        }
    })
    .unwrap();
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    let db_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    println!(
        "import: {} rows in {secs:.2}s wall, {cpu:.2}s CPU = {} rows/s ({} purchases/s, {} rows/CPU-s); {} batches; first batch committed at {:.2}s (validation pass + 1 batch); vault file {db_mb:.0} MB",
        s.rows,
        per_sec(s.rows, secs),
        per_sec(summary.purchases, secs),
        per_sec(s.rows, cpu),
        s.batches,
        validated_at.unwrap_or(0.0)
    );

    if std::env::var_os("SYMPHONY_VAULT_BENCH_IMPORT_ONLY").is_some() {
        return;
    }
    if n <= 2_000_000 {
        write_only(dir.path(), file, batch_records);
        single_pass(dir.path(), file, batch_records);
    }

    let actor = ActorId::new("bench").unwrap();
    vault.permit(&actor, TaskClass::Query).unwrap();
    let auth = vault.authorize(&actor, TaskClass::Query).unwrap();
    for round in 0..2 {
        let (t, c) = (Instant::now(), cpu_secs());
        let mut audience = 0u64;
        let since = NOW_MS - 30 * DAY_MS;
        let stats = vault
            .for_each_subject(&auth, |view| {
                let sg = view.geography.is_some_and(|g| g.home_city == "Singapore");
                if sg
                    && view
                        .purchases
                        .iter()
                        .any(|p| p.ts_ms >= since && p.brand == "Luckin Coffee")
                {
                    audience += 1;
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
        println!(
            "scan {round}: {} subjects, {} records ({:.0} MB plaintext) decrypted and filtered in {secs:.2}s wall, {cpu:.2}s CPU = {} records/s; audience {audience}",
            stats.subjects,
            stats.records,
            stats.plaintext_bytes as f64 / 1e6,
            per_sec(stats.records, secs)
        );
    }
    let (t, c) = (Instant::now(), cpu_secs());
    let since = NOW_MS - 30 * DAY_MS;
    let (counts, stats) = vault
        .par_for_each_subject(
            &auth,
            2,
            || 0u64,
            |audience, view| {
                let sg = view.geography.is_some_and(|g| g.home_city == "Singapore");
                if sg
                    && view
                        .purchases
                        .iter()
                        .any(|p| p.ts_ms >= since && p.brand == "Luckin Coffee")
                {
                    *audience += 1;
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
    println!(
        "scan on 2 threads: {} records in {secs:.2}s wall, {cpu:.2}s CPU = {} records/s; audience {}",
        stats.records,
        per_sec(stats.records, secs),
        counts.iter().sum::<u64>()
    );
}
