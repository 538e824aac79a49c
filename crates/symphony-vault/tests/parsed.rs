//! Parsed receipts: the record keeps its line items, and the record and its
//! duplicate marker are one write (both or neither, even under SIGKILL); a refused
//! duplicate leaves the Vault file byte-identical.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use symphony_core::ids::EpochId;
use symphony_vault::parsed::{ParsedRecord, StoreParsed};
use symphony_vault::{LineItem, Purchase, Receipt, Record, Vault, VaultError};

fn receipt(n: u64) -> (Record, ParsedRecord) {
    let items = vec![
        LineItem {
            name: format!("Latte {n}"),
            quantity: 2,
            amount_minor: 900,
        },
        LineItem {
            name: "Muffin".into(),
            quantity: 1,
            amount_minor: 350 + n,
        },
    ];
    let record = Record::Receipt(Receipt {
        purchase: Purchase {
            brand: "Luckin Coffee".into(),
            category: "coffee".into(),
            amount_minor: 1_250 + n,
            currency: "SGD".into(),
            ts_ms: 1_767_225_600_000 + n * 60_000,
            store_city: "Singapore".into(),
            store_country: "SG".into(),
        },
        items,
    });
    let row = ParsedRecord {
        subject: sid("producer"),
        record_hash: format!("receipt-{n}"),
        epoch: EpochId(1),
        task_id: format!("task-{n}"),
        score_bp: 9_000,
    };
    (record, row)
}

#[test]
fn a_parsed_receipt_keeps_its_line_items_and_scans_see_its_purchase() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "pv-producer");
    let (record, row) = receipt(3);
    assert_eq!(
        vault.store_parsed(&record, &row).unwrap(),
        StoreParsed::Stored
    );
    let stored = vault.subject_records(&sid("producer")).unwrap();
    assert_eq!(stored, vec![record.clone()]);
    let Record::Receipt(r) = &stored[0] else {
        panic!("not a receipt: {stored:?}")
    };
    assert_eq!(r.items.len(), 2);
    assert_eq!(r.items[0].name, "Latte 3");
    assert_eq!(r.items[0].quantity, 2);
    assert_eq!(r.items[1].amount_minor, 353);
    assert_eq!(
        r.items.iter().map(|i| i.amount_minor).sum::<u64>(),
        r.purchase.amount_minor
    );
    assert_eq!(
        vault.parsed_record(&row.subject, "receipt-3").unwrap(),
        Some(row)
    );
    // A scan (what query tasks read) sees the receipt's purchase.
    let all = dump(&vault);
    let Record::Receipt(r) = &record else {
        unreachable!()
    };
    assert_eq!(
        all["producer"],
        vec![Record::Purchase(r.purchase.clone())],
        "the scan view lists the receipt's purchase"
    );
}

#[test]
fn a_refused_duplicate_leaves_the_vault_file_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "pv-producer");
    let (record, row) = receipt(1);
    assert_eq!(
        vault.store_parsed(&record, &row).unwrap(),
        StoreParsed::Stored
    );
    let before = std::fs::read(&path).unwrap();
    // The same receipt again (the same hash), even under another task id.
    let again = ParsedRecord {
        task_id: "task-later".into(),
        ..row.clone()
    };
    assert_eq!(
        vault.store_parsed(&record, &again).unwrap(),
        StoreParsed::Duplicate(row.clone())
    );
    // Another photo of it read slightly differently, same hash: still refused.
    let (other, _) = receipt(2);
    assert_eq!(
        vault.store_parsed(&other, &again).unwrap(),
        StoreParsed::Duplicate(row)
    );
    // Compared while the Vault is open (closing and opening write their own state).
    let after = std::fs::read(&path).unwrap();
    assert!(after == before, "the refused duplicates changed the file");
    drop(vault);
    let vault = Vault::open(&path, &key(7), [3; 32]).unwrap();
    assert_eq!(
        vault.subject_records(&sid("producer")).unwrap(),
        vec![record]
    );
    assert_eq!(vault.parsed_records().unwrap().len(), 1);
}

#[test]
fn an_erased_subjects_upload_writes_neither_record_nor_marker() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "pv-producer");
    let (first, row) = receipt(0);
    vault.store_parsed(&first, &row).unwrap();
    assert!(vault.erase_subject(&sid("producer"), 5).unwrap());
    let (record, row) = receipt(1);
    let e = vault.store_parsed(&record, &row).unwrap_err();
    assert!(
        matches!(e, VaultError::Erased(ref s) if s == "producer"),
        "{e}"
    );
    assert_eq!(
        vault.parsed_record(&row.subject, "receipt-1").unwrap(),
        None
    );
    assert_eq!(vault.parsed_records().unwrap().len(), 1);
}

/// The receipts' numbers among the stored records and among the markers.
fn numbers(vault: &Vault) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let records = match vault.subject_records(&sid("producer")) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let stored = records
        .iter()
        .map(|r| match r {
            Record::Receipt(r) => r.items[0]
                .name
                .strip_prefix("Latte ")
                .unwrap()
                .parse()
                .unwrap(),
            other => panic!("not a receipt: {other:?}"),
        })
        .collect();
    let marked = vault
        .parsed_records()
        .unwrap()
        .iter()
        .map(|r| {
            r.record_hash
                .strip_prefix("receipt-")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    (stored, marked)
}

#[test]
fn sigkill_never_leaves_a_record_without_its_marker_or_the_reverse() {
    const COUNT: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    drop(create(&path, "pv-producer"));
    let key_hex = hex::encode([7u8; 32]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut kills = 0;
    let mut acked_max = 0u64;
    for round in 0..12 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_symphony-vault-crash-child"))
            .args([
                path.to_str().unwrap(),
                &key_hex,
                "--parsed",
                &COUNT.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let last = round == 11;
        if !last {
            std::thread::sleep(Duration::from_millis(rng.gen_range(5..300)));
            if child.try_wait().unwrap().is_none() {
                kills += 1;
            }
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        if last {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "{err}");
        }
        let acked = out
            .lines()
            .filter_map(|l| l.strip_prefix("ACK "))
            .map(|n| n.parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        acked_max = acked_max.max(acked);
        let vault = Vault::open(&path, &key(7), [3; 32]).unwrap();
        let (stored, marked) = numbers(&vault);
        assert_eq!(stored, marked, "round {round}: records and markers differ");
        assert!(
            stored.len() as u64 >= acked_max,
            "round {round}: {} stored, {acked_max} acknowledged",
            stored.len()
        );
        assert_eq!(
            stored,
            (0..stored.len() as u64).collect::<BTreeSet<_>>(),
            "round {round}: not a prefix"
        );
        eprintln!("round {round}: acked {acked}, stored {}", stored.len());
        if stored.len() as u64 == COUNT && round < 8 {
            drop(vault);
            std::fs::remove_file(&path).unwrap();
            drop(create(&path, "pv-producer"));
            acked_max = 0;
        }
    }
    assert!(kills >= 3, "only {kills} kills landed during the uploads");
    let vault = Vault::open(&path, &key(7), [3; 32]).unwrap();
    assert_eq!(numbers(&vault).0.len() as u64, COUNT);
}
