//! `symphony producer claim` and `ledger reconcile|show` on a directory whose Vault
//! dividends were committed as distributions (a small network paid with a direct
//! payout limit of 3, so a few hundred people exercise it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use symphony_core::consent::UsageScope;
use symphony_core::ids::TaskId;
use symphony_node::aggregation::SelectionPolicy;
use symphony_node::enterprise::EnterpriseEndpoint;
use symphony_node::network::{
    advertiser_key, CampaignSpec, EmbeddedNetwork, NetworkParams, Quiet, SignedRequest,
};
use symphony_node::settlement::embedded::pay_embedded_vault_dividends_with_limit;

const ADVERTISER: &str = "advertiser:luckin";
const SEED: u64 = 5;

fn symphony(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A network in `dir` that settled one campaign and paid its dividends as
/// distributions; the producers' accounts of the first distribution.
fn network_with_distributions(dir: &std::path::Path) -> Vec<String> {
    let params = NetworkParams {
        subjects: 300,
        vaults: 2,
        records: 3_000,
        seed: SEED,
        now_ms: 1_795_219_200_000,
    };
    let mut net = EmbeddedNetwork::build(dir, &params, &[ADVERTISER], &mut Quiet).unwrap();
    let spec = CampaignSpec {
        advertiser: ADVERTISER.into(),
        brand: "Luckin Coffee".into(),
        country: "SG".into(),
        city: None,
        window_days: 30,
        audience_cap: 5_000,
        selection: SelectionPolicy::RandomSampling,
        usage_scope: UsageScope::Marketing,
        selection_seed: 7,
        minimum_vault_quorum: None,
    };
    let req = SignedRequest::sign(spec, 1, &advertiser_key(SEED, ADVERTISER)).unwrap();
    let endpoints: Vec<&dyn EnterpriseEndpoint> = net
        .enterprises
        .iter()
        .map(|e| e as &dyn EnterpriseEndpoint)
        .collect();
    let out = net
        .master
        .run_campaign(&endpoints, &req, &mut Quiet)
        .unwrap();
    let task = TaskId::new(out.task_id).unwrap();
    let at = net.master.now_ms;
    pay_embedded_vault_dividends_with_limit(&mut net.master, &net.enterprises, &task, at, 3)
        .unwrap();
    let d = net
        .master
        .settlements
        .as_ref()
        .unwrap()
        .distributions()
        .unwrap();
    assert_eq!(d.len(), 2, "one distribution per Vault");
    d[0].leaves
        .iter()
        .map(|l| l.recipient.to_string())
        .collect()
}

#[test]
fn a_producer_claims_its_dividend_once_and_bad_claims_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let producers = network_with_distributions(dir.path());
    let d = dir.path().to_str().unwrap();

    let show = json(&symphony(&["ledger", "show", "--dir", d, "--json"]));
    let dists = show["distributions"].as_array().unwrap();
    assert_eq!(dists.len(), 2);
    assert_eq!(dists[0]["claimed"], 0);

    // By subject: the leaf is proven and paid.
    let account = &producers[0];
    let subject = account.strip_prefix("actor:producer:").unwrap();
    let r = json(&symphony(&[
        "producer",
        "claim",
        "--dir",
        d,
        "--producer",
        subject,
        "--json",
    ]));
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["producer"], account.as_str());
    assert_eq!(r["claimed"].as_array().unwrap().len(), 1);
    assert_eq!(r["claimed"][0]["kind"], "data_usage_dividend");
    let paid = r["total_micro_sym"].as_u64().unwrap();
    assert!(paid > 0);
    assert_eq!(r["balance_micro_sym"].as_u64(), Some(paid));

    // Again, by account: already claimed, named, exit code non-zero.
    let again = symphony(&["producer", "claim", "--dir", d, "--producer", account]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already claimed"), "{err}");

    // Unknown producer.
    let unknown = symphony(&["producer", "claim", "--dir", d, "--producer", "s-nobody"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("actor:producer:s-nobody") && err.contains("no leaf"),
        "{err}"
    );

    // Reconcile checks the roots and the claim; show counts it.
    let rec = json(&symphony(&["ledger", "reconcile", "--dir", d, "--json"]));
    assert_eq!(rec["distributions"]["distributions"], 2);
    assert_eq!(rec["distributions"]["claimed"], 1);
    assert_eq!(
        rec["distributions"]["claimed_micro_sym"].as_u64(),
        Some(paid)
    );
    let show = json(&symphony(&["ledger", "show", "--dir", d, "--json"]));
    let claimed: u64 = show["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["claimed"].as_u64().unwrap())
        .sum();
    assert_eq!(claimed, 1);
    let text = String::from_utf8(symphony(&["ledger", "show", "--dir", d]).stdout).unwrap();
    assert!(
        text.contains("distributions (claimed by producers"),
        "{text}"
    );
}
