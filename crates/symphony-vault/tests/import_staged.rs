//! The default (atomic) import reads the file once: every line is validated and
//! prepared before anything is written, the prepared batches wait in memory or in a
//! sealed spill file, and a malformed row anywhere leaves the Vault as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use symphony_vault::{generate, import_records, GenerateParams, ImportError, ImportOptions};

const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// One Vault file of ~36k rows (~6.5 MB: above the two-thread threshold).
fn big_file(dir: &Path, seed: u64) -> std::path::PathBuf {
    let params = GenerateParams {
        subjects: 3_000,
        vaults: 1,
        records: 30_000,
        seed,
        now_ms: NOW_MS,
    };
    let out = dir.join(format!("gen-{seed}"));
    let summary = generate(&params, &out).unwrap();
    let file = summary.vault_files[0].clone();
    assert!(std::fs::metadata(&file).unwrap().len() > 4 << 20);
    file
}

/// Names in `dir` (not recursive), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn malformed_last_line_after_many_batches_leaves_the_vault_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    std::fs::create_dir(&vault_dir).unwrap();
    let vault_path = vault_dir.join("v.redb");
    let vault = create(&vault_path, "vault-01");
    // Some content first, so "unchanged" is not "empty".
    let first = big_file(dir.path(), 1);
    import_records(&vault, &first, &ImportOptions::default(), &mut |_| {}).unwrap();
    let before = dump(&vault); // grants a read permit: a write, so first
    let before_bytes = std::fs::read(&vault_path).unwrap();

    // Another file whose very last line is malformed.
    let second = big_file(dir.path(), 2);
    let mut text = std::fs::read_to_string(&second).unwrap();
    let lines = text.lines().count() as u64;
    let last_start = text.trim_end().rfind('\n').unwrap() + 1;
    text.replace_range(last_start.., "{\"kind\":\"purchase\",\"subject\":\"s-x\",\"brand\":\"B\",\"category\":\"c\",\"amount_minor\":1,\"currency\":\"sgd\",\"ts_ms\":1,\"store_city\":\"S\",\"store_country\":\"SG\"}\n");
    std::fs::write(&second, text).unwrap();
    // Small batches (hundreds of them staged), in memory and spilled.
    for staging_memory_bytes in [usize::MAX, 64 << 10, 0] {
        let options = ImportOptions {
            batch_records: 100,
            staging_memory_bytes,
            ..ImportOptions::default()
        };
        let mut wrote = 0u64;
        let err = import_records(&vault, &second, &options, &mut |p| {
            wrote = wrote.max(p.batches_committed)
        })
        .unwrap_err();
        match &err {
            ImportError::Row {
                file, line, field, ..
            } => {
                assert_eq!(file, &second);
                assert_eq!((*line, field.as_str()), (lines, "currency"), "{err}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(wrote, 0, "a batch was committed before the error");
        assert!(
            std::fs::read(&vault_path).unwrap() == before_bytes,
            "the Vault file changed (staging {staging_memory_bytes})"
        );
        assert_eq!(names(&vault_dir), ["v.redb"], "a spill file was left");
    }
    assert_eq!(dump(&vault), before);
}

#[test]
fn spilled_batches_import_exactly_what_memory_staged_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = big_file(dir.path(), 3);
    let mut dumps = Vec::new();
    for (i, staging_memory_bytes) in [usize::MAX, 256 << 10, 0].into_iter().enumerate() {
        let vault_dir = dir.path().join(format!("vault-{i}"));
        std::fs::create_dir(&vault_dir).unwrap();
        let vault = create(&vault_dir.join("v.redb"), "vault-01");
        let options = ImportOptions {
            batch_records: 1_000,
            staging_memory_bytes,
            ..ImportOptions::default()
        };
        let mut acked = Vec::new();
        let s = import_records(&vault, &file, &options, &mut |p| {
            if p.phase == symphony_vault::ImportPhase::Writing {
                acked.push((p.lines_done, p.batches_committed, p.lines_total));
            }
        })
        .unwrap();
        let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
        assert_eq!((s.rows, s.inserted, s.duplicates), (lines, lines, 0));
        // Progress: acknowledged lines rise to the last line, one report per batch.
        assert_eq!(acked.first(), Some(&(0, 0, lines)));
        assert_eq!(acked.last(), Some(&(lines, s.batches, lines)));
        assert!(acked
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 + 1 == w[1].1));
        assert_eq!(names(&vault_dir), ["v.redb"], "a spill file was left");
        // Re-import (spilled or not) deduplicates.
        let again = import_records(&vault, &file, &options, &mut |_| {}).unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, lines));
        dumps.push(dump(&vault));
    }
    assert_eq!(dumps[0], dumps[1]);
    assert_eq!(dumps[0], dumps[2]);
    assert_eq!(dumps[0].len(), 3_000);
}

/// Subjects in the order a scan visits them (their numbers in the Vault).
fn scan_order(vault: &symphony_vault::Vault) -> Vec<String> {
    let actor = symphony_core::ids::ActorId::new("order").unwrap();
    vault
        .permit(&actor, symphony_core::TaskClass::Query)
        .unwrap();
    let auth = vault
        .authorize(&actor, symphony_core::TaskClass::Query)
        .unwrap();
    let mut order = Vec::new();
    vault
        .for_each_subject(&auth, |view| {
            order.push(view.subject.to_owned());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    order
}

/// The two-thread staged import commits the same batches as a one-thread import:
/// the same subjects share a transaction, so they get the same numbers and a scan
/// visits them in the same order (a training run's examples come in that order).
#[test]
fn two_thread_preparation_numbers_subjects_as_one_thread_does() {
    let dir = tempfile::tempdir().unwrap();
    let file = big_file(dir.path(), 3);
    let options = ImportOptions {
        batch_records: 7_000, // not a divisor of either half's rows
        ..ImportOptions::default()
    };
    let staged = create(&dir.path().join("staged.redb"), "vault-01");
    let s = import_records(&staged, &file, &options, &mut |_| {}).unwrap();
    let one = create(&dir.path().join("one.redb"), "vault-01");
    let streaming = ImportOptions {
        validate_first: false,
        ..options
    };
    let t = import_records(&one, &file, &streaming, &mut |_| {}).unwrap();
    assert_eq!(
        (s.rows, s.inserted, s.batches),
        (t.rows, t.inserted, t.batches)
    );
    assert_eq!(s.batches, s.rows.div_ceil(7_000));
    let order = scan_order(&staged);
    assert_eq!(order.len(), 3_000);
    assert_eq!(order, scan_order(&one));
    assert_eq!(dump(&staged), dump(&one));
}
