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
