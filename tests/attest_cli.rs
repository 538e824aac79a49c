//! `symphony attest verify` on the SGX and TDX samples of `dcap-qvl`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn attest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_symphony"))
        .arg("attest")
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/symphony-attest/tests/data"
);

#[test]
fn verify_prints_the_evidence_and_refuses_with_reasons() {
    let sgx = format!("{DATA}/sgx_quote");
    let sgx_c = format!("{DATA}/sgx_quote_collateral.json");
    let tdx = format!("{DATA}/tdx_quote");
    let tdx_c = format!("{DATA}/tdx_quote_collateral.json");
    let at = "2025-06-20T00:00:00Z";
    let out = attest(&[
        &sgx,
        "--collateral",
        &sgx_c,
        "--at",
        at,
        "--policy",
        "development",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "sgx");
    assert_eq!(v["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    let out = attest(&[
        &tdx,
        "--collateral",
        &tdx_c,
        "--at",
        at,
        "--policy",
        "development",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("kind          tdx") && text.contains("MRTD"),
        "{text}"
    );
    // The production policy refuses the sample's TCB status; after nextUpdate the
    // collateral is no longer valid; a bad time names the flag.
    let out = attest(&[&sgx, "--collateral", &sgx_c, "--at", at]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TCB status"));
    let out = attest(&[
        &sgx,
        "--collateral",
        &sgx_c,
        "--at",
        "2026-01-01T00:00:00Z",
        "--policy",
        "development",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("collateral is valid from"));
    let out = attest(&[&sgx, "--collateral", &sgx_c, "--at", "tomorrow"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--at \"tomorrow\""));
}
