//! The command line as a newcomer meets it: examples in `--help`, shell completions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn symphony(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_shows_examples_and_completions_cover_every_command() {
    let help = symphony(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.contains("Examples:"), "{text}");
    assert!(text.contains("symphony demo luckin"), "{text}");

    for shell in ["bash", "zsh", "fish"] {
        let out = symphony(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for cmd in [
            "demo",
            "devnet",
            "task",
            "ledger",
            "gov",
            "epoch",
            "completions",
        ] {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let bad = symphony(&["completions", "tcsh"]);
    assert!(!bad.status.success());
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn vault_import_documents_its_format_counts_every_row_and_explains_a_csv() {
    let help = symphony(&["vault", "import", "--help"]);
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.contains("\"kind\":\"purchase\"") && text.contains("\"kind\":\"consent\""));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let data = format!("{d}/data");
    let gen = symphony(&[
        "data",
        "generate",
        "--subjects",
        "200",
        "--vaults",
        "2",
        "--records",
        "1000",
        "--out",
        &data,
    ]);
    assert!(gen.status.success());
    let vault = format!("{d}/v1.redb");
    let out = symphony(&[
        "vault",
        "import",
        "--vault",
        &vault,
        &format!("{data}/vault-01.jsonl"),
        &format!("{data}/consent.jsonl"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("records inserted"), "{text}");
    assert!(text.contains("consent changes recorded"), "{text}");
    assert!(text.contains("rows for other Vaults skipped"), "{text}");

    let csv = format!("{d}/people.csv");
    std::fs::write(&csv, "subject,brand\ns-1,Luckin\n").unwrap();
    let out = symphony(&["vault", "import", "--vault", &format!("{d}/v2.redb"), &csv]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("people.csv:1") && err.contains("JSONL formats"),
        "{err}"
    );
    assert!(!std::path::Path::new(&format!("{d}/v2.redb")).exists());
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn micro(v: &serde_json::Value) -> u128 {
    v.as_u64()
        .map(u128::from)
        .unwrap_or_else(|| panic!("not an amount: {v}"))
}

/// `ledger show` after a demo: labelled rows, producers summed unless asked for,
/// filters by account and epoch, and amounts that add up to the total supply.
#[test]
fn ledger_show_is_labelled_filterable_and_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let demo = json(&symphony(&[
        "demo",
        "luckin",
        "--subjects",
        "1500",
        "--records",
        "15000",
        "--dir",
        d,
        "--json",
    ]));
    assert_eq!(demo["schema_version"], 1);

    let all = json(&symphony(&["ledger", "show", "--dir", d, "--json"]));
    assert_eq!(all["schema_version"], 1);
    // Balances + escrow remainders + stakes = total supply, to the µSYM.
    let balances: u128 = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            micro(&a["balance_micro_sym"])
                + micro(&a["bonded_micro_sym"])
                + micro(&a["unbonding_micro_sym"])
        })
        .sum();
    let escrowed: u128 = all["escrows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| micro(&e["remaining_micro_sym"]))
        .sum();
    let supply: u128 = all["total_supply_micro_sym"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(balances + escrowed, supply, "{all}");
    // The settlement is the demo's, labelled.
    let s = &all["settlements"][0];
    assert_eq!(s["task_id"], demo["task_id"]);
    assert_eq!(s["fee_total_micro_sym"], demo["fee_total"]);
    assert_eq!(s["state"], "finalized");
    let producers = all["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "producer")
        .unwrap()["accounts"]
        .as_u64()
        .unwrap();
    assert!(producers > 100, "{producers}");

    // Text: producers summed, not listed; --all lists them.
    let text = String::from_utf8(symphony(&["ledger", "show", "--dir", d]).stdout).unwrap();
    assert!(
        text.contains("accounts by role") && text.contains("settlements"),
        "{text}"
    );
    assert!(
        !text.contains("actor:producer:"),
        "producers listed by default"
    );
    assert!(
        text.contains(&format!("{producers} producers summed above")),
        "{text}"
    );
    let listed =
        String::from_utf8(symphony(&["ledger", "show", "--dir", d, "--all"]).stdout).unwrap();
    assert!(listed.matches("actor:producer:").count() as u64 >= producers);

    // One account: only it, and the payments it received add up to its balance.
    let op = json(&symphony(&[
        "ledger",
        "show",
        "--dir",
        d,
        "--json",
        "--account",
        "operator:vault-01",
    ]));
    let accounts = op["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{op}");
    let received: u128 = op["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| micro(&r["amount_micro_sym"]))
        .sum();
    assert_eq!(received, micro(&accounts[0]["balance_micro_sym"]), "{op}");
    // Another epoch holds nothing yet.
    let later = json(&symphony(&[
        "ledger", "show", "--dir", d, "--json", "--epoch", "5",
    ]));
    assert!(later["settlements"].as_array().unwrap().is_empty());
    assert!(later["epoch_payouts"].as_array().unwrap().is_empty());
}

/// Every `--json` output carries `schema_version` (here: two commands that need
/// no network; the demos and `ledger show` are checked above).
#[test]
fn json_outputs_carry_a_schema_version() {
    let sim = symphony(&["sim", "--seeds", "1", "--tasks", "5", "--json"]);
    let line = String::from_utf8(sim.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1, "{v}");
    let dry = json(&symphony(&["demo", "luckin", "--dry-run", "--json"]));
    assert_eq!(dry["schema_version"], 1, "{dry}");
}

#[test]
fn bench_import_prints_one_json_line_with_its_figures() {
    let out = symphony(&[
        "bench",
        "import",
        "--records",
        "3000",
        "--subjects",
        "300",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["bench"], "import", "{v}");
    assert_eq!(v["records"], 3000, "{v}");
    assert_eq!(v["subjects"], 300, "{v}");
    // Every purchase plus an identity and a geography row per subject.
    assert_eq!(v["rows"], 3000 + 2 * 300, "{v}");
    assert!(v["rows_per_s"].as_f64().unwrap() > 0.0, "{v}");
    let split = v["validate_secs"].as_f64().unwrap() + v["write_secs"].as_f64().unwrap();
    assert!((split - v["secs"].as_f64().unwrap()).abs() < 1e-6, "{v}");
    assert_eq!(v["load_average"].as_array().unwrap().len(), 3, "{v}");
    assert!(
        v["git_commit"].is_string() && v["schema_version"].is_number(),
        "{v}"
    );
    let bad = symphony(&["bench", "import", "--records", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--records"));
}
