//! `symphony demo compute` runs a `compute` task through the three planes on real
//! consensus (three openraft masters over mutual TLS on 127.0.0.1) and releases
//! exactly what the in-process replicas release for the same seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Quiet};
use symphony_node::task::{SignedTask, TaskSpec};

mod deployed;

const SEED: u64 = 13;
const SUBJECTS: u64 = 3_000;
const RECORDS: u64 = 30_000;
const NOW_MS: u64 = 1_795_219_200_000;
const SPEC: &str = include_str!("../examples/compute.toml");

#[test]
fn demo_compute_json_reports_the_noisy_table_and_matches_the_in_process_run() {
    let demo = deployed::demo_json("compute", SUBJECTS, RECORDS, SEED);
    let states: Vec<&str> = demo["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "accepted",
            "resolving",
            "dispatched",
            "verifying",
            "awaiting_settlement",
            "completed"
        ]
    );
    let fee_total = demo["fee_total"].as_u64().unwrap();
    let shares: u64 = demo["fee_shares"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(shares, fee_total);
    assert!(fee_total > 0);
    assert_eq!(demo["epsilon_committed"], "0.5");
    assert_eq!(demo["attestations_verified"], 4 + 1);
    assert!(demo["suppressed_groups"].is_array());
    let groups = demo["groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["group"].is_string() && g["count"].is_i64() && g["value"].is_i64());
    }
    assert_eq!(demo["consensus"]["roots_agree"], true);
    assert_eq!(demo["epoch"]["epoch_id"], 0);
    assert_eq!(demo["epoch"]["policy_version"], 1);
    assert!(
        demo.get("exact_customers").is_none(),
        "the noise-free figure is not released"
    );

    // The same task on the in-process replicas gives the same released table.
    let dir = tempfile::tempdir().unwrap();
    let spec = TaskSpec::from_toml(SPEC).unwrap();
    let submitter = spec.submitter().to_owned();
    let mut net = EmbeddedNetwork::build(
        dir.path(),
        &NetworkParams {
            subjects: SUBJECTS,
            vaults: 4,
            records: RECORDS,
            seed: SEED,
            now_ms: NOW_MS,
        },
        &[submitter.as_str()],
        &mut Quiet,
    )
    .unwrap();
    let req = SignedTask::sign(spec, 1, &advertiser_key(SEED, &submitter)).unwrap();
    let local = net.run_compute(&req, &mut Quiet).unwrap();
    assert_eq!(serde_json::to_value(&local.groups).unwrap(), demo["groups"]);
    assert_eq!(local.result_hash, demo["result_hash"].as_str().unwrap());
    assert_eq!(local.fee_total, fee_total);
}
