//! Per-subject summaries agree with the records they summarize, through
//! imports in several batches (duplicates, receipts, later identities and
//! homes), erasure and reopening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use symphony_vault::{
    ContactKind, Geography, Identity, LineItem, Purchase, Receipt, Record, Vault, VaultError,
};

/// What a plan can read of one subject: contact, home, sorted (brand, time, amount).
type Readable = (
    Option<String>,
    Option<(String, String)>,
    Vec<(String, u64, u64)>,
);

/// What a plan reads of one subject, from a view's parts.
fn readable(
    identity: Option<symphony_vault::IdentityRef<'_>>,
    geography: Option<symphony_vault::GeographyRef<'_>>,
    mut purchases: Vec<(String, u64, u64)>,
) -> Readable {
    purchases.sort();
    (
        identity.map(|i| i.contact.to_owned()),
        geography.map(|g| (g.home_city.to_owned(), g.home_country.to_owned())),
        purchases,
    )
}

fn from_records(vault: &Vault) -> BTreeMap<String, Readable> {
    let auth = reader(vault);
    let mut out = BTreeMap::new();
    vault
        .for_each_subject(&auth, |view| {
            let purchases = view
                .purchases
                .iter()
                .map(|p| (p.brand.to_owned(), p.ts_ms, p.amount_minor))
                .collect();
            let r = readable(view.identity, view.geography, purchases);
            out.insert(view.subject.to_owned(), r);
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

fn from_summaries(vault: &Vault, include: impl Fn(&str) -> bool) -> BTreeMap<String, Readable> {
    let auth = reader(vault);
    let mut out = BTreeMap::new();
    let stats = vault
        .for_each_summary_in(&auth, include, |view| {
            let mut purchases = Vec::new();
            view.for_each_purchase(&mut |b, t, a| purchases.push((b.to_owned(), t, a)));
            assert_eq!(purchases.len(), view.purchase_count());
            let r = readable(view.identity, view.geography, purchases);
            out.insert(view.subject.to_owned(), r);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(stats.subjects as usize, out.len());
    out
}

fn random_record(rng: &mut ChaCha8Rng) -> Record {
    const BRANDS: [&str; 4] = ["Luckin Coffee", " luckin coffee", "Starbucks", "Toast Box"];
    let p = Purchase {
        brand: BRANDS[rng.gen_range(0..BRANDS.len())].to_owned(),
        category: "coffee".to_owned(),
        amount_minor: rng.gen_range(100..900),
        currency: "SGD".to_owned(),
        ts_ms: rng.gen_range(0..40),
        store_city: "Singapore".to_owned(),
        store_country: "SG".to_owned(),
    };
    match rng.gen_range(0..10) {
        0 => Record::Identity(Identity {
            contact_kind: ContactKind::Phone,
            contact: format!("+65{}", rng.gen_range(0..5)),
        }),
        1 => Record::Geography(Geography {
            home_city: ["Singapore", "Jurong"][rng.gen_range(0..2)].to_owned(),
            home_country: "SG".to_owned(),
        }),
        2 => Record::Receipt(Receipt {
            items: vec![LineItem {
                name: "latte".to_owned(),
                quantity: 1,
                amount_minor: p.amount_minor,
            }],
            purchase: p,
        }),
        _ => Record::Purchase(p),
    }
}

#[test]
fn summaries_hold_what_the_records_hold_through_batches_erasure_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let mut seen_batches = Vec::new();
    for round in 0..12 {
        let mut batch: Vec<_> = (0..rng.gen_range(1..60))
            .map(|_| {
                (
                    sid(&format!("s{}", rng.gen_range(0..25))),
                    random_record(&mut rng),
                )
            })
            .collect();
        // Re-import part of an earlier batch: duplicates must not count twice.
        if let Some(earlier) = seen_batches.get(round / 2) {
            let earlier: &Vec<_> = earlier;
            batch.extend(earlier.iter().take(10).cloned());
        }
        vault.insert_batch(&batch).unwrap();
        seen_batches.push(batch);
        if round == 5 {
            vault.erase_subject(&sid("s3"), 1).unwrap();
        }
        assert_eq!(
            from_summaries(&vault, |_| true),
            from_records(&vault),
            "round {round}"
        );
    }
    let records = from_records(&vault);
    assert!(records.len() > 20 && !records.contains_key("s3"));
    assert!(
        records.values().any(|r| r.2.len() > 8),
        "some subjects hold many purchases"
    );
    // Restricted: only included subjects, with the same contents.
    let some = from_summaries(&vault, |s| s.ends_with('1'));
    let expect: BTreeMap<_, _> = records
        .iter()
        .filter(|(s, _)| s.ends_with('1'))
        .map(|(s, r)| (s.clone(), r.clone()))
        .collect();
    assert_eq!(some, expect);
    drop(vault);
    let vault = Vault::open(&path, &key(7), [3; 32]).unwrap();
    assert_eq!(from_summaries(&vault, |_| true), records);
}

#[test]
fn large_batches_sealed_on_another_thread_summarize_what_they_store() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for _ in 0..2 {
        // Over a megabyte of records: the blocks are sealed as they are built.
        let batch: Vec<_> = (0..20_000)
            .map(|_| {
                (
                    sid(&format!("s{}", rng.gen_range(0..300))),
                    random_record(&mut rng),
                )
            })
            .collect();
        let s = vault.insert_batch(&batch).unwrap();
        assert_eq!(s.inserted + s.duplicates, 20_000);
        assert_eq!(from_summaries(&vault, |_| true), from_records(&vault));
    }
}

#[test]
fn a_summary_is_sealed_like_the_records_and_a_wrong_key_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let contact = "+6599990000";
    vault
        .insert_batch(&[
            (
                sid("alice"),
                Record::Identity(Identity {
                    contact_kind: ContactKind::Phone,
                    contact: contact.to_owned(),
                }),
            ),
            (sid("alice"), purchase("Luckin Coffee Zebra", 450, 7)),
        ])
        .unwrap();
    drop(vault);
    let bytes = std::fs::read(&path).unwrap();
    for secret in [contact.as_bytes(), b"Luckin Coffee Zebra".as_slice()] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "plaintext in the file"
        );
    }
    assert!(matches!(
        Vault::open(&path, &key(8), [3; 32]),
        Err(VaultError::WrongKey { .. })
    ));
}
