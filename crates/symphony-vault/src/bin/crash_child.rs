//! Test helper for the crash-safety test: imports a record file into an existing
//! Vault and prints `ACK <lines>` to stdout after every committed batch, so the
//! parent knows which batches were acknowledged before it kills this process.
//!
//! Usage: `symphony-vault-crash-child VAULT_FILE KEY_HEX RECORD_FILE BATCH_RECORDS`
//!
//! Or `symphony-vault-crash-child VAULT_FILE KEY_HEX --parsed COUNT`: stores
//! receipts 0..COUNT of subject `producer` with their duplicate markers
//! ([`Vault::store_parsed`], [`parsed_fixture`]), printing `ACK <n>` after each.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use symphony_core::ids::{EpochId, SubjectId};
use symphony_vault::parsed::ParsedRecord;
use symphony_vault::{
    import_records, ImportOptions, ImportPhase, LineItem, Purchase, Receipt, Record, Vault,
    VaultKey,
};

/// Receipt `n` of the `--parsed` mode and its marker (hash `receipt-<n>`).
pub fn parsed_fixture(n: u64) -> Result<(Record, ParsedRecord), String> {
    let subject = SubjectId::new("producer").map_err(|e| e.to_string())?;
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
            amount_minor: items.iter().map(|i| i.amount_minor).sum(),
            currency: "SGD".into(),
            ts_ms: 1_767_225_600_000 + n * 60_000,
            store_city: "Singapore".into(),
            store_country: "SG".into(),
        },
        items,
    });
    let row = ParsedRecord {
        subject,
        record_hash: format!("receipt-{n}"),
        epoch: EpochId(1),
        task_id: format!("task-{n}"),
        score_bp: 9_000,
    };
    Ok((record, row))
}

fn run_parsed(vault: &Vault, count: &str) -> Result<(), String> {
    let count: u64 = count.parse().map_err(|e| format!("count: {e}"))?;
    let mut out = std::io::stdout().lock();
    for n in 0..count {
        let (record, row) = parsed_fixture(n)?;
        vault
            .store_parsed(&record, &row)
            .map_err(|e| e.to_string())?;
        let _ = writeln!(out, "ACK {}", n + 1);
        let _ = out.flush();
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    if let [_, vault, key_hex, flag, count] = args {
        if flag == "--parsed" {
            let vault = open(vault, key_hex)?;
            return run_parsed(&vault, count);
        }
    }
    let [_, vault, key_hex, file, batch] = args else {
        return Err("usage: VAULT_FILE KEY_HEX RECORD_FILE BATCH_RECORDS".to_owned());
    };
    let batch_records = batch.parse().map_err(|e| format!("batch: {e}"))?;
    let vault = open(vault, key_hex)?;
    let mut out = std::io::stdout().lock();
    import_records(
        &vault,
        Path::new(file),
        &ImportOptions {
            batch_records,
            ..ImportOptions::default()
        },
        &mut |p| {
            if p.phase == ImportPhase::Writing {
                // Printed only after the batch's transaction committed.
                let _ = writeln!(out, "ACK {}", p.lines_done);
                let _ = out.flush();
            }
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn open(vault: &str, key_hex: &str) -> Result<Vault, String> {
    let key: [u8; 32] = hex::decode(key_hex)
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "key must be 32 bytes".to_owned())?;
    Vault::open(Path::new(vault), &VaultKey::from_bytes(key), [5; 32]).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
