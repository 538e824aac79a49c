//! Property tests of the certificate collector against a simple model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use symphony_consensus::{CertificateCollector, MasterKeys, SignedStatement};

fn keys() -> (MasterKeys, BTreeMap<u64, SigningKey>) {
    // Fixed seeds: the property is about the collector, not about key generation.
    let signing: BTreeMap<u64, SigningKey> = (1..=3u64)
        .map(|id| (id, SigningKey::from_bytes(&[id as u8; 32])))
        .collect();
    let keys = MasterKeys::new(
        "p",
        signing
            .iter()
            .map(|(id, k)| (*id, k.verifying_key()))
            .collect(),
    );
    (keys, signing)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Statements `(signer, index, root_choice)` in any order, duplicates included:
    /// evidence exists exactly for signers that signed two roots at one index, every
    /// final certificate verifies, and an index is final iff two signers' *first*
    /// statements agree on a root.
    #[test]
    fn collector_matches_model(
        statements in proptest::collection::vec((1..=3u64, 0..6u64, 0..2u8), 0..40)
    ) {
        let (keys, signing) = keys();
        let collector = CertificateCollector::new(keys.clone());
        let mut first: BTreeMap<(u64, u64), u8> = BTreeMap::new();
        let mut equivocators: BTreeSet<(u64, u64)> = BTreeSet::new();
        for (signer, index, root_choice) in statements {
            let root = [root_choice; 32];
            let statement = SignedStatement::sign("p", index, root, signer, &signing[&signer]);
            collector.add(statement).unwrap();
            match first.get(&(signer, index)) {
                None => { first.insert((signer, index), root_choice); }
                Some(previous) if *previous != root_choice => { equivocators.insert((signer, index)); }
                Some(_) => {}
            }
        }
        let evidence = collector.evidence();
        let seen: BTreeSet<(u64, u64)> =
            evidence.iter().map(|e| (e.signer(), e.first.log_index)).collect();
        prop_assert_eq!(&seen, &equivocators);
        for e in &evidence {
            prop_assert!(e.verify(&keys).is_ok());
        }
        for index in 0..6u64 {
            let mut votes: BTreeMap<u8, usize> = BTreeMap::new();
            for signer in 1..=3u64 {
                if let Some(choice) = first.get(&(signer, index)) {
                    *votes.entry(*choice).or_default() += 1;
                }
            }
            let expect_final = votes.values().any(|n| *n >= 2);
            let certificate = collector.certificate(index);
            prop_assert_eq!(certificate.is_some(), expect_final, "index {}", index);
            if let Some(c) = certificate {
                prop_assert!(c.is_final(&keys));
                prop_assert!(votes.get(&c.state_root[0]).copied().unwrap_or(0) >= 2);
            }
        }
    }
}

/// A master's own fresh statement is recorded without a signature check, but only
/// under the key registered for it; a statement already recorded byte for byte is a
/// duplicate without a second check; a forged signature over a recorded root is
/// still refused.
#[test]
fn own_statements_and_known_duplicates_skip_the_check_and_forgeries_do_not() {
    use symphony_consensus::{AddOutcome, CertificateError};
    let (keys, signing) = keys();
    let collector = CertificateCollector::new(keys.clone());
    let own = SignedStatement::sign("p", 1, [7; 32], 1, &signing[&1]);
    // Claimed as master 1's own statement under master 2's key: refused.
    let wrong = collector.add_own(own.clone(), &signing[&2].verifying_key());
    assert!(matches!(
        wrong,
        Err(CertificateError::BadSignature { signer: 1, .. })
    ));
    assert_eq!(
        collector
            .add_own(own.clone(), &signing[&1].verifying_key())
            .unwrap(),
        AddOutcome::Recorded
    );
    assert_eq!(collector.add(own.clone()).unwrap(), AddOutcome::Duplicate);
    // Same signer, index and root, another signature: checked, and refused.
    let mut forged = own.clone();
    forged.signature = ed25519_dalek::Signer::sign(&signing[&1], b"something else");
    assert!(matches!(
        collector.add(forged),
        Err(CertificateError::BadSignature { signer: 1, .. })
    ));
    // A peer's statement over the same root makes the index final.
    let peer = SignedStatement::sign("p", 1, [7; 32], 2, &signing[&2]);
    assert!(matches!(collector.add(peer), Ok(AddOutcome::Finalized(_))));
    assert!(collector.certificate(1).unwrap().verify(&keys).is_ok());
}
