//! `symphony demo luckin` runs the same services on real consensus (three openraft
//! masters over mutual TLS on 127.0.0.1) and delivers exactly what the in-process
//! replicas deliver for the same seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use symphony_core::encoding::content_hash;
use symphony_node::aggregation::AUDIENCE_HASH_TAG;
use symphony_node::network::{advertiser_key, Quiet, SignedRequest};

mod deployed;

use deployed::{embedded_network, luckin, RECORDS, SUBJECTS};

const SEED: u64 = 11;

#[test]
fn demo_on_openraft_delivers_what_the_in_process_replicas_deliver() {
    let demo = deployed::demo_json("luckin", SUBJECTS, RECORDS, SEED);
    // The same campaign on the in-process replicas (LocalReplicator).
    let spec = luckin();
    let dir = tempfile::tempdir().unwrap();
    let mut net = embedded_network(dir.path(), SEED);
    let req =
        SignedRequest::sign(spec.clone(), 1, &advertiser_key(SEED, &spec.advertiser)).unwrap();
    let local = net.run_campaign(&req, &mut Quiet).unwrap();
    assert_eq!(local.states.last().unwrap(), "completed");

    let hash = content_hash(AUDIENCE_HASH_TAG, &local.audience)
        .unwrap()
        .to_hex();
    assert_eq!(demo["result_hash"], hash, "different audience: {demo}");
    let local = serde_json::to_value(&local).unwrap();
    for field in [
        "task_id",
        "envelope_hash",
        "states",
        "eligible_count",
        "delivered_count",
        "subjects_evaluated",
        "fee_locked",
        "fee_total",
        "fee_shares",
        "refund",
        "settlement_state",
    ] {
        assert_eq!(demo[field], local[field], "{field} differs");
    }
    // Real consensus: three replicas that agree, and certificates final (≥ 2 of 3).
    let c = &demo["consensus"];
    assert_eq!(c["masters"], 3, "{c}");
    assert_eq!(c["roots_agree"], true, "{c}");
    assert!(c["log_index"].as_u64().unwrap() >= 15, "{c}");
    assert!(demo["certificate_signatures"].as_u64().unwrap() >= 2);
    // The epoch and policy version the task was admitted in (its envelope's).
    assert_eq!(
        demo["epoch"],
        serde_json::json!({"epoch_id": 0, "policy_version": 1})
    );
    // The dry run's fee estimate is the escrow the real run locked.
    let dry = dry_run(&["--json"]);
    assert_eq!(dry["fee_estimate_micro_sym"], demo["fee_locked"], "{dry}");
    assert_eq!(dry["audience_bound"], demo["audience_cap"], "{dry}");
    // Replay: same seed, same consensus state root and result.
    let again = deployed::demo_json("luckin", SUBJECTS, RECORDS, SEED);
    assert_eq!(again["result_hash"], demo["result_hash"]);
    assert_eq!(again["consensus"]["state_root"], c["state_root"]);
}

/// Exit codes (README): a task that ends `rejected` exits 3 after printing its
/// summary; a spec refused before anything is spent exits 1 naming the field.
#[test]
fn a_rejected_task_exits_3_and_an_invalid_spec_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |window_days: u32, brand: &str| {
        let p = dir.path().join(format!("spec-{window_days}.toml"));
        std::fs::write(
            &p,
            format!(
                "advertiser = \"advertiser:luckin\"\nbrand = \"{brand}\"\ncountry = \"SG\"\n\
                 window_days = {window_days}\naudience_cap = 5000\nselection = \"random_sampling\"\n\
                 usage_scope = \"marketing\"\nselection_seed = 7\n"
            ),
        )
        .unwrap();
        p
    };
    let run = |p: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_symphony"))
            .args([
                "demo",
                "luckin",
                "--subjects",
                "2000",
                "--records",
                "20000",
                "--spec",
            ])
            .arg(p)
            .output()
            .unwrap()
    };
    // One day of purchases: fewer than 20 eligible, suppressed, rejected.
    let out = run(&spec(1, "Luckin Coffee"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ended rejected"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("suppressed"));
    let out = run(&spec(30, "Luckin Cofee"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did you mean \"Luckin Coffee\""),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Luckin Cofee").count(),
        1,
        "cause printed once: {stderr}"
    );
}

/// `demo luckin --dry-run` with `extra` arguments: exit 0, stdout (JSON when
/// `--json` is among them).
fn dry_run(extra: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(["demo", "luckin", "--dry-run"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or(serde_json::Value::String(stdout))
}

/// A dry run builds nothing and spends nothing: no network, no Vault, no ledger in
/// its directory; it prints the audience bound, ε and the fee estimate; an invalid
/// spec is refused the same way as without `--dry-run`.
#[test]
fn a_dry_run_prints_the_figures_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("net");
    let net_arg = net_dir.to_str().unwrap();
    let v = dry_run(&["--json", "--dir", net_arg, "--cap", "300"]);
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["task_class"], "query");
    assert_eq!(v["audience_bound"], 300);
    assert_eq!(v["epsilon_per_subject"], "0.1");
    assert_eq!(v["minimum_vault_quorum"], 3);
    assert_eq!(v["vaults"], 4);
    let fee = v["fee_estimate_micro_sym"].as_u64().unwrap();
    assert!(fee > v["rejection_fee_micro_sym"].as_u64().unwrap(), "{v}");
    assert!(!net_dir.exists(), "a dry run created {}", net_dir.display());
    let text = dry_run(&["--cap", "300"]);
    let text = text.as_str().unwrap();
    for needle in [
        "dry run",
        "at most 300 subjects",
        "ε per subject       0.1",
        "fee estimate",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let spec = dir.path().join("bad.toml");
    std::fs::write(
        &spec,
        "advertiser = \"advertiser:luckin\"\nbrand = \"Luckin Coffee\"\ncountry = \"SG\"\n\
         window_days = 30\naudience_cap = 0\nselection = \"random_sampling\"\n\
         usage_scope = \"marketing\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(["demo", "luckin", "--dry-run", "--spec"])
        .arg(&spec)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("audience_cap must be >= 1"), "{stderr}");
}
