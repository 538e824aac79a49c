//! Crash safety: a child process importing is killed with SIGKILL at random points.
//! After every kill the Vault must open, hold every acknowledged batch, and hold
//! exactly a prefix of whole batches of the file (nothing half-written). Importing
//! again resumes without duplicates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use symphony_vault::{generate, GenerateParams, Vault};

const BATCH: u64 = 700;

/// A record file line as (subject, canonical JSON) for set comparison.
fn line_key(v: &serde_json::Value) -> (String, String) {
    (v["subject"].as_str().unwrap().to_owned(), v.to_string())
}

fn stored(vault: &Vault) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (subject, recs) in dump(vault) {
        for r in recs {
            let json = match r {
                symphony_vault::Record::Identity(i) => {
                    serde_json::json!({"kind":"identity","subject":subject,"contact_kind":match i.contact_kind { symphony_vault::ContactKind::Phone => "phone", symphony_vault::ContactKind::Email => "email" },"contact":i.contact})
                }
                symphony_vault::Record::Geography(g) => {
                    serde_json::json!({"kind":"geography","subject":subject,"home_city":g.home_city,"home_country":g.home_country})
                }
                symphony_vault::Record::Receipt(r) => panic!("the import wrote a receipt: {r:?}"),
                symphony_vault::Record::Purchase(p) => {
                    serde_json::json!({"kind":"purchase","subject":subject,"brand":p.brand,"category":p.category,"amount_minor":p.amount_minor,"currency":p.currency,"ts_ms":p.ts_ms,"store_city":p.store_city,"store_country":p.store_country})
                }
            };
            out.insert(line_key(&json));
        }
    }
    out
}

#[test]
fn sigkill_during_import_loses_no_acknowledged_batch_and_tears_none() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(
        &GenerateParams {
            subjects: 1_500,
            vaults: 1,
            records: 12_000,
            seed: 5,
            now_ms: 1_767_225_600_000,
        },
        dir.path(),
    )
    .unwrap();
    let file = &summary.vault_files[0];
    let lines: Vec<(String, String)> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| line_key(&serde_json::from_str(l).unwrap()))
        .collect();
    let total = lines.len() as u64;
    let path = dir.path().join("v.redb");
    drop(create(&path, "vault-01"));
    let key_hex = hex::encode([7u8; 32]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut acked_max = 0u64;
    let mut kills = 0;
    for round in 0..16 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_symphony-vault-crash-child"))
            .args([
                path.to_str().unwrap(),
                &key_hex,
                file.to_str().unwrap(),
                &BATCH.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let last_round = round == 15;
        if !last_round {
            std::thread::sleep(Duration::from_millis(rng.gen_range(5..600)));
            if child.try_wait().unwrap().is_none() {
                kills += 1;
            }
            let _ = child.kill(); // SIGKILL on Unix
        }
        let status = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let acked = out
            .lines()
            .filter_map(|l| l.strip_prefix("ACK "))
            .map(|n| n.parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        if last_round {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "{err}");
            assert_eq!(acked, total);
        }
        acked_max = acked_max.max(acked);

        let vault = Vault::open(&path, &key(7), [3; 32]).unwrap();
        let have = stored(&vault);
        let n = have.len() as u64;
        assert!(
            n >= acked_max,
            "round {round}: {n} records stored, {acked_max} acknowledged"
        );
        assert!(
            n.is_multiple_of(BATCH) || n == total,
            "round {round}: {n} is not a whole number of batches"
        );
        eprintln!("round {round}: acked {acked}, stored {n} of {total}");
        let prefix: BTreeSet<_> = lines[..n as usize].iter().cloned().collect();
        assert_eq!(have, prefix, "round {round}: not a prefix of the file");
        drop(vault);
        if n == total && !last_round && round < 10 {
            // Complete: start over so later kills land mid-import again.
            std::fs::remove_file(&path).unwrap();
            drop(create(&path, "vault-01"));
            acked_max = 0;
        }
    }
    assert!(kills >= 3, "only {kills} kills landed during an import");
}
