//! Evidence says what produced it (`enclave_kinds`: every slice and the
//! aggregation), and an attestation policy that refuses software evidence rejects
//! a task at verification, with the reason.

use symphony_core::consent::UsageScope;
use symphony_enclave::EnclaveKind;
use symphony_node::aggregation::SelectionPolicy;
use symphony_node::network::{
    advertiser_key, CampaignSpec, EmbeddedNetwork, NetworkParams, Quiet, SignedRequest,
};

const NOW_MS: u64 = 1_795_219_200_000;
const ADVERTISER: &str = "advertiser:luckin";

fn spec() -> CampaignSpec {
    CampaignSpec {
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
    }
}

#[test]
fn evidence_names_its_enclave_and_a_production_policy_refuses_software() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 31;
    let params = NetworkParams {
        subjects: 400,
        vaults: 2,
        records: 4_000,
        seed,
        now_ms: NOW_MS,
    };
    let mut net = EmbeddedNetwork::build(dir.path(), &params, &[ADVERTISER], &mut Quiet).unwrap();
    let key = advertiser_key(seed, ADVERTISER);
    let out = net
        .run_campaign(&SignedRequest::sign(spec(), 1, &key).unwrap(), &mut Quiet)
        .unwrap();
    let kinds: Vec<(&str, EnclaveKind)> = out
        .enclave_kinds
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        kinds,
        [
            ("aggregation", EnclaveKind::Software),
            ("vault-01", EnclaveKind::Software),
            ("vault-02", EnclaveKind::Software)
        ]
    );
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["enclave_kinds"]["vault-01"], "software");

    // Production: only real hardware attests. The slices' evidence is refused, the
    // quorum is not met, the task is rejected with the reason; nothing delivered.
    net.master.verifier.refuse_software = true;
    let out = net
        .run_campaign(&SignedRequest::sign(spec(), 2, &key).unwrap(), &mut Quiet)
        .unwrap();
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    assert!(out.audience.is_empty());
    let reason = out.reason.unwrap_or_default();
    assert!(reason.contains("quorum"), "{reason}");
    assert!(
        reason.contains("software evidence is not accepted by the attestation policy"),
        "{reason}"
    );
    assert!(out.enclave_kinds.is_empty());
}
