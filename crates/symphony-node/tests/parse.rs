//! `parse` end to end on the embedded network: a producer's sealed receipt becomes
//! one encrypted purchase record in one Vault, free, through the planes' lifecycle.

use std::path::Path;

use symphony_core::ids::{SubjectId, VaultId};
use symphony_node::classes::parse::{seal_upload, ParseRequest};
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Quiet};
use symphony_vault::record::Record;

const NOW_MS: u64 = 1_795_219_200_000;
const PRODUCER: &str = "producer:alice";
const RECEIPT: &str = "merchant: Luckin Coffee\ncategory: coffee\ntotal: 5.90\n\
    currency: SGD\ntime: 2026-11-20 08:30\nstore_city: Singapore\nstore_country: SG\n";

fn build(dir: &Path, seed: u64) -> EmbeddedNetwork {
    let params = NetworkParams {
        subjects: 200,
        vaults: 2,
        records: 1_000,
        seed,
        now_ms: NOW_MS,
    };
    EmbeddedNetwork::build(dir, &params, &[PRODUCER], &mut Quiet).unwrap()
}

fn first_subject(net: &EmbeddedNetwork) -> SubjectId {
    let (files, _) = net.data_files();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    SubjectId::new(row["subject"].as_str().unwrap()).unwrap()
}

fn request(
    net: &EmbeddedNetwork,
    seed: u64,
    receipt: &str,
    key_of: usize,
    nonce: u64,
) -> ParseRequest {
    let vault = net.enterprises[0].vault_id().clone();
    let upload_key = net.enterprises[key_of].upload_key();
    let sealed = seal_upload(
        &upload_key,
        receipt.as_bytes(),
        [nonce as u8 + 1; 32],
        [3; 12],
    )
    .unwrap();
    ParseRequest::sign(
        PRODUCER,
        vault,
        first_subject(net),
        sealed,
        nonce,
        &advertiser_key(seed, PRODUCER),
    )
    .unwrap()
}

fn purchases(net: &EmbeddedNetwork, subject: &SubjectId) -> usize {
    net.enterprises[0]
        .vault()
        .subject_records(subject)
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r, Record::Purchase(p) if p.amount_minor == 590 && p.store_city == "Singapore"))
        .count()
}

#[test]
fn a_sealed_receipt_is_parsed_into_the_producers_vault_for_free() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 9;
    let mut net = build(dir.path(), seed);
    let subject = first_subject(&net);
    assert_eq!(purchases(&net, &subject), 0);
    let out = net
        .run_parse(&request(&net, seed, RECEIPT, 0, 1), &mut Quiet)
        .unwrap();
    assert_eq!(
        out.states,
        [
            "accepted",
            "resolving",
            "dispatched",
            "verifying",
            "awaiting_settlement",
            "completed"
        ]
    );
    assert_eq!(out.fee_total, 0);
    assert_eq!(out.settlement_state.as_deref(), Some("finalized"));
    assert_eq!(out.attestations_verified, 1);
    assert_eq!(out.record_commitment.len(), 64);
    assert_eq!(purchases(&net, &subject), 1, "the record is in the Vault");
    // Free: no escrow in the envelope, nothing charged in the master state.
    let state = net.master.masters.state();
    let rec = state.tasks().next().unwrap();
    let body = rec.envelope.body();
    assert!(body.budget_lock_ref.is_none());
    assert_eq!(body.coordination_envelope.participating_vault_ids.len(), 1);
    assert_eq!(rec.settlement.as_ref().unwrap().fee_total, 0);
    // The masters never saw the receipt: not in the replicated state's bytes.
    let snapshot = state.snapshot().unwrap();
    assert!(!snapshot.windows(13).any(|w| w == b"Luckin Coffee"));
    assert!(!snapshot.windows(4).any(|w| w == b"5.90"));
}

#[test]
fn a_bad_receipt_or_a_wrong_key_is_rejected_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 4;
    let mut net = build(dir.path(), seed);
    let subject = first_subject(&net);
    let bad = RECEIPT.replace("total: 5.90", "total: five");
    let out = net
        .run_parse(&request(&net, seed, &bad, 0, 1), &mut Quiet)
        .unwrap();
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    let reason = out.reason.unwrap_or_default();
    assert!(reason.contains("line 3: total"), "{reason}");
    assert_eq!(out.fee_total, 0);
    // Sealed to the other Vault's key: the Vault cannot open it.
    let out = net
        .run_parse(&request(&net, seed, RECEIPT, 1, 2), &mut Quiet)
        .unwrap();
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    assert!(out.reason.unwrap_or_default().contains("does not open"));
    assert_eq!(purchases(&net, &subject), 0);
    // An unknown Vault or a replayed nonce is refused before admission.
    let mut r = request(&net, seed, RECEIPT, 0, 3);
    r.vault = VaultId::new("vault-99").unwrap();
    assert!(net.run_parse(&r, &mut Quiet).is_err());
    let replay = request(&net, seed, RECEIPT, 0, 1);
    let e = net.run_parse(&replay, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
}
