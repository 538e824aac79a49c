//! Test helper for the crash-safety test: imports a record file into an existing
//! Vault and prints `ACK <lines>` to stdout after every committed batch, so the
//! parent knows which batches were acknowledged before it kills this process.
//!
//! Usage: `symphony-vault-crash-child VAULT_FILE KEY_HEX RECORD_FILE BATCH_RECORDS`
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use symphony_vault::{import_records, ImportOptions, ImportPhase, Vault, VaultKey};

fn run(args: &[String]) -> Result<(), String> {
    let [_, vault, key_hex, file, batch] = args else {
        return Err("usage: VAULT_FILE KEY_HEX RECORD_FILE BATCH_RECORDS".to_owned());
    };
    let key: [u8; 32] = hex::decode(key_hex)
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "key must be 32 bytes".to_owned())?;
    let batch_records = batch.parse().map_err(|e| format!("batch: {e}"))?;
    let vault = Vault::open(Path::new(vault), &VaultKey::from_bytes(key), [5; 32])
        .map_err(|e| e.to_string())?;
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
