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
    // Replay: same seed, same consensus state root and result.
    let again = deployed::demo_json("luckin", SUBJECTS, RECORDS, SEED);
    assert_eq!(again["result_hash"], demo["result_hash"]);
    assert_eq!(again["consensus"]["state_root"], c["state_root"]);
}
