//! Evidence says what produced it (`enclave_kinds`: every slice and the
//! aggregation, also in the replicated records a taking-over master reads), and the
//! attestation policy is governed: a policy version approved in epoch e that refuses
//! software evidence rejects tasks admitted from e + 1 at verification, with the
//! reason, while a task admitted under the old version keeps it.

mod common;

use common::{luckin, ADVERTISER};

use symphony_core::ids::TaskId;
use symphony_economics::{AttestationPolicy, PolicyParams};
use symphony_enclave::EnclaveKind;
use symphony_node::governance::{propose_policy, vote};
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

    // The replicated records carry the same kinds (a master taking over reads them).
    let tid = TaskId::new(out.task_id.clone()).unwrap();
    let rec = net.master.masters.state().task(&tid).unwrap();
    assert_eq!(rec.enclave_kinds(), out.enclave_kinds);

    // Production: only real hardware attests. Masters 0 and 2 approve a policy
    // version whose attestation policy refuses software; it activates when the epoch
    // closes.
    let mut v2 = PolicyParams::default_v1();
    v2.attestation = AttestationPolicy::production();
    let id = propose_policy(&mut net.master, v2, None, 0).unwrap();
    vote(&mut net.master, id, 2, true).unwrap();
    // Approved but not yet active: a task admitted now still runs under v1.
    let out = net
        .run_campaign(&SignedRequest::sign(luckin(), 2, &key).unwrap(), &mut Quiet)
        .unwrap();
    assert_eq!(out.states.last().map(String::as_str), Some("completed"));
    net.close_epoch().unwrap();
    // Admitted under v2: the slices' evidence is refused, the quorum is not met,
    // the task is rejected with the reason; nothing delivered.
    let out = net
        .run_campaign(&SignedRequest::sign(luckin(), 3, &key).unwrap(), &mut Quiet)
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
    let tid = TaskId::new(out.task_id.clone()).unwrap();
    let rec = net.master.masters.state().task(&tid).unwrap();
    assert_eq!(rec.envelope.body().policy_version.0, 2);
    assert!(rec.enclave_kinds().is_empty());
}
