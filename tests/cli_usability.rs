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
