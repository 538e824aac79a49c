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

/// A failed first import leaves no Vault and no key behind; a new Vault key is
/// readable by its owner only; a demo keeps no plaintext import files unless asked.
#[test]
fn no_plaintext_or_loose_keys_at_rest() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("purchases.csv");
    std::fs::write(&bad, "subject,brand\ns-1,Luckin Coffee\n").unwrap();
    let vault = dir.path().join("new.redb");
    let out = symphony(&[
        "vault",
        "import",
        "--vault",
        vault.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("purchases.csv"));
    assert!(!vault.exists(), "an empty Vault was left behind");
    assert!(
        !vault.with_extension("key").exists(),
        "an unused key was left behind"
    );

    let data = dir.path().join("data");
    let out = symphony(&[
        "data",
        "generate",
        "--subjects",
        "30",
        "--vaults",
        "1",
        "--records",
        "100",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let out = symphony(&[
        "vault",
        "import",
        "--vault",
        vault.to_str().unwrap(),
        data.join("vault-01.jsonl").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(vault.with_extension("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");

    for keep in [false, true] {
        let net = dir.path().join(format!("net-{keep}"));
        let mut args = vec![
            "demo",
            "luckin",
            "--subjects",
            "300",
            "--records",
            "3000",
            "--dir",
            net.to_str().unwrap(),
            "--json",
        ];
        if keep {
            args.push("--keep-plaintext");
        }
        let out = symphony(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jsonl = walk(&net)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .count();
        if keep {
            assert!(jsonl > 0);
        } else {
            assert_eq!(jsonl, 0, "plaintext left in {}", net.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
