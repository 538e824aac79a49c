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
