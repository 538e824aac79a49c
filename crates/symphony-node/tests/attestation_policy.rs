//! Evidence says what produced it (`enclave_kinds`: every slice and the
//! aggregation), and an attestation policy that refuses software evidence rejects
//! a task at verification, with the reason.

mod common;

use common::{luckin, ADVERTISER};

use symphony_enclave::EnclaveKind;
use symphony_node::network::{advertiser_key, Quiet, SignedRequest};

#[test]
fn evidence_names_its_enclave_and_a_production_policy_refuses_software() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 31;
    let mut net = common::network(dir.path(), seed, 400, 2);
    let key = advertiser_key(seed, ADVERTISER);
    let out = net
        .run_campaign(&SignedRequest::sign(luckin(), 1, &key).unwrap(), &mut Quiet)
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
        .run_campaign(&SignedRequest::sign(luckin(), 2, &key).unwrap(), &mut Quiet)
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
