//! `symphony vault budget`: a Vault operator reads a subject's privacy budget per
//! scope from a Vault file (capacity, reserved, committed, remaining, replenishment).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn symphony(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn vault_budget_shows_what_the_import_recorded_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let vault = dir.path().join("v.redb");
    let (d, v) = (data.to_str().unwrap(), vault.to_str().unwrap());
    let out = symphony(&[
        "data",
        "generate",
        "--subjects",
        "60",
        "--vaults",
        "1",
        "--records",
        "300",
        "--out",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = data.join("vault-01.jsonl");
    let consent = data.join("consent.jsonl");
    let out = symphony(&[
        "vault",
        "import",
        "--vault",
        v,
        records.to_str().unwrap(),
        consent.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A subject whose marketing budget the generator marked as partly spent.
    let text = std::fs::read_to_string(&consent).unwrap();
    let spent: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["kind"] == "budget")
        .expect("the generator writes some prior spend");
    let subject = spent["subject"].as_str().unwrap();
    let out = symphony(&[
        "vault",
        "budget",
        "--vault",
        v,
        "--subject",
        subject,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &b["scopes"]["marketing"];
    let micro = |x: &Value| (x.as_str().unwrap().parse::<f64>().unwrap() * 1e6).round() as u64;
    assert_eq!(
        micro(&m["committed"]),
        spent["spent_micro"].as_u64().unwrap(),
        "{b}"
    );
    assert_eq!(
        micro(&m["capacity"]),
        spent["capacity_micro"].as_u64().unwrap()
    );
    assert_eq!(
        micro(&m["remaining"]) + micro(&m["committed"]) + micro(&m["reserved"]),
        micro(&m["capacity"])
    );
    assert!(b["scopes"]["training"]["replenishes_per_epoch"].is_string());
    // Bad input is named.
    let out = symphony(&["vault", "budget", "--vault", v, "--subject", "bad id!"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--subject \"bad id!\""));
    let missing = dir.path().join("none.redb");
    let out = symphony(&[
        "vault",
        "budget",
        "--vault",
        missing.to_str().unwrap(),
        "--subject",
        subject,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such Vault file"));
}
