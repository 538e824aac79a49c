//! Generator and importer: determinism, realism checks, malformed rows, idempotence,
//! and an audience computed from the plaintext files equals the one from the Vaults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::Path;

use common::*;
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_vault::{
    generate, import_consent, import_file, import_records, GenerateParams, ImportError,
    ImportOptions,
};

const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY_MS: u64 = 86_400_000;

fn params(seed: u64) -> GenerateParams {
    GenerateParams {
        subjects: 400,
        vaults: 3,
        records: 6_000,
        seed,
        now_ms: NOW_MS,
    }
}

fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generator_is_deterministic_and_looks_real() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let sa = generate(&params(42), a.path()).unwrap();
    let sb = generate(&params(42), b.path()).unwrap();
    generate(&params(43), c.path()).unwrap();
    for name in [
        "vault-01.jsonl",
        "vault-02.jsonl",
        "vault-03.jsonl",
        "consent.jsonl",
    ] {
        let x = std::fs::read(a.path().join(name)).unwrap();
        assert_eq!(x, std::fs::read(b.path().join(name)).unwrap(), "{name}");
        assert_ne!(x, std::fs::read(c.path().join(name)).unwrap(), "{name}");
    }
    assert_eq!(
        (sa.memberships, sa.record_rows, sa.consent_rows),
        (sb.memberships, sb.record_rows, sb.consent_rows)
    );
    assert_eq!(sa.purchases, 6_000);
    let mut purchases = 0;
    let mut brands = BTreeSet::new();
    let mut cities = BTreeSet::new();
    let mut handles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (vault, file) in sa.vault_ids.iter().zip(&sa.vault_files) {
        for row in rows(file) {
            match row["kind"].as_str().unwrap() {
                "purchase" => {
                    purchases += 1;
                    brands.insert(row["brand"].as_str().unwrap().to_owned());
                    cities.insert(row["store_city"].as_str().unwrap().to_owned());
                    let ts = row["ts_ms"].as_u64().unwrap();
                    assert!((NOW_MS - 91 * DAY_MS..NOW_MS).contains(&ts));
                    assert!(row["amount_minor"].as_u64().unwrap() > 0);
                }
                "identity" => {
                    handles
                        .entry(row["contact"].as_str().unwrap().to_owned())
                        .or_default()
                        .insert(vault.clone());
                }
                _ => {}
            }
        }
    }
    assert_eq!(purchases, 6_000);
    for brand in [
        "Luckin Coffee",
        "Starbucks",
        "The Coffee Bean & Tea Leaf",
        "Toast Box",
    ] {
        assert!(brands.contains(brand), "{brand}");
    }
    assert!(cities.contains("Singapore") && cities.len() >= 5);
    assert_eq!(handles.len(), 400, "one handle per person");
    assert!(handles.values().filter(|v| v.len() >= 2).count() > 100);
    // Consent: some without marketing, some withdrawn, some exhausted.
    let consent = rows(&sa.consent_file);
    let withdrawn = consent
        .iter()
        .filter(|r| r["scope"] == "marketing" && r["granted"] == false)
        .count();
    let exhausted = consent
        .iter()
        .filter(|r| r["kind"] == "budget" && r["spent_micro"] == r["capacity_micro"])
        .count();
    let marketing: BTreeSet<_> = consent
        .iter()
        .filter(|r| r["scope"] == "marketing")
        .map(|r| r["subject"].as_str().unwrap().to_owned())
        .collect();
    assert!(withdrawn > 20 && exhausted > 5, "{withdrawn} {exhausted}");
    assert!((marketing.len() as u64) < sa.memberships * 9 / 10);
}

/// The Luckin scenario audience from the plaintext files alone: contact handles of
/// subjects with a Luckin purchase in the last 30 days, home Singapore, marketing
/// consent in force at `now`, and at least `needed` budget left.
fn expected_audience(dir: &Path, vaults: &[String], needed: u64) -> BTreeSet<String> {
    let mut consent: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut spent: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in rows(&dir.join("consent.jsonl")) {
        let k = (
            r["vault"].as_str().unwrap().to_owned(),
            r["subject"].as_str().unwrap().to_owned(),
        );
        if r["kind"] == "consent"
            && r["scope"] == "marketing"
            && r["at_ms"].as_u64().unwrap() <= NOW_MS
        {
            consent.insert(k, r["granted"].as_bool().unwrap()); // rows are in time order
        } else if r["kind"] == "budget" {
            spent.insert(k, r["spent_micro"].as_u64().unwrap());
        }
    }
    let mut out = BTreeSet::new();
    for v in vaults {
        let mut handle = BTreeMap::new();
        let mut home = BTreeMap::new();
        let mut luckin = BTreeSet::new();
        for r in rows(&dir.join(format!("{v}.jsonl"))) {
            let s = r["subject"].as_str().unwrap().to_owned();
            match r["kind"].as_str().unwrap() {
                "identity" => drop(handle.insert(s, r["contact"].as_str().unwrap().to_owned())),
                "geography" => drop(home.insert(s, r["home_city"].as_str().unwrap().to_owned())),
                _ => {
                    if r["brand"] == "Luckin Coffee"
                        && r["ts_ms"].as_u64().unwrap() >= NOW_MS - 30 * DAY_MS
                    {
                        luckin.insert(s);
                    }
                }
            }
        }
        for s in luckin {
            let k = (v.clone(), s.clone());
            let ok = home.get(&s).map(String::as_str) == Some("Singapore")
                && consent.get(&k) == Some(&true)
                && 1_000_000 - spent.get(&k).copied().unwrap_or(0) >= needed;
            if ok {
                out.insert(handle[&s].clone());
            }
        }
    }
    out
}

#[test]
fn imported_vaults_give_the_audience_the_plaintext_files_give() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&params(7), dir.path()).unwrap();
    let needed = Epsilon::from_milli(100);
    let mut audience = BTreeSet::new();
    let mut stored = 0;
    for (id, file) in summary.vault_ids.iter().zip(&summary.vault_files) {
        let vault = create(&dir.path().join(format!("{id}.redb")), id);
        let mut last = 0;
        let s = import_file(
            &vault,
            file,
            &ImportOptions {
                batch_records: 500,
                ..ImportOptions::default()
            },
            &mut |p| last = p.lines_done,
        )
        .unwrap();
        assert!(s.batches > 1);
        assert_eq!(last, s.rows);
        let c = import_file(
            &vault,
            &summary.consent_file,
            &ImportOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert!(c.consent_changes > 0 && c.other_vault_rows > 0);
        let eligible = vault
            .eligible_subjects(UsageScope::Marketing, NOW_MS, needed)
            .unwrap();
        let auth = reader(&vault);
        let scan = vault
            .for_each_subject(&auth, |view| {
                let home_sg = view.geography.is_some_and(|g| g.home_city == "Singapore");
                let recent = view
                    .purchases
                    .iter()
                    .any(|p| p.brand == "Luckin Coffee" && p.ts_ms >= NOW_MS - 30 * DAY_MS);
                let subject = symphony_core::ids::SubjectId::new(view.subject).unwrap();
                if home_sg && recent && eligible.contains(&subject) {
                    audience.insert(view.identity.unwrap().contact.to_owned());
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        stored += scan.records;
    }
    assert_eq!(stored, summary.record_rows);
    let expected = expected_audience(dir.path(), &summary.vault_ids, needed.micro);
    assert!(expected.len() >= 5, "{}", expected.len());
    assert_eq!(audience, expected);
}

#[test]
fn reimport_does_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&params(9), dir.path()).unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-01");
    let file = &summary.vault_files[0];
    let first = import_records(&vault, file, &ImportOptions::default(), &mut |_| {}).unwrap();
    let before = dump(&vault);
    let second = import_records(
        &vault,
        file,
        &ImportOptions {
            batch_records: 77,
            ..ImportOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(second.inserted, 0);
    assert_eq!(second.duplicates, first.inserted);
    assert_eq!(dump(&vault), before);
    let c1 = import_consent(&vault, &summary.consent_file, &mut |_| {}).unwrap();
    let c2 = import_consent(&vault, &summary.consent_file, &mut |_| {}).unwrap();
    assert!(c1.consent_changes > 0 && c1.budget_rows > 0);
    assert_eq!((c2.consent_changes, c2.budget_rows), (0, 0));
}

const GOOD: &str = r#"{"kind":"purchase","subject":"s-1","brand":"Luckin Coffee","category":"coffee","amount_minor":590,"currency":"SGD","ts_ms":5,"store_city":"Singapore","store_country":"SG"}"#;

#[test]
fn malformed_rows_name_file_line_field_and_change_nothing() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"kind":"purchase","subject":"s-1","brand":"X","category":"coffee","amount_minor":"12","currency":"SGD","ts_ms":5,"store_city":"S","store_country":"SG"}"#,
            "amount_minor",
        ),
        (
            r#"{"kind":"purchase","subject":"s-1","brand":"X","category":"coffee","amount_minor":-3,"currency":"SGD","ts_ms":5,"store_city":"S","store_country":"SG"}"#,
            "amount_minor",
        ),
        (
            r#"{"kind":"purchase","subject":"s-1","brand":"X","category":"coffee","amount_minor":3,"currency":"SGD","store_city":"S","store_country":"SG"}"#,
            "ts_ms",
        ),
        (
            r#"{"kind":"purchase","subject":"s-1","brand":"X","category":"coffee","amount_minor":3,"currency":"sgd","ts_ms":5,"store_city":"S","store_country":"SG"}"#,
            "currency",
        ),
        (
            r#"{"kind":"purchase","subject":"bad subject","brand":"X","category":"coffee","amount_minor":3,"currency":"SGD","ts_ms":5,"store_city":"S","store_country":"SG"}"#,
            "subject",
        ),
        (
            r#"{"kind":"purchase","subject":"s-1","brand":"","category":"coffee","amount_minor":3,"currency":"SGD","ts_ms":5,"store_city":"S","store_country":"SG"}"#,
            "brand",
        ),
        (r#"{"kind":"refund","subject":"s-1"}"#, "kind"),
        (
            r#"{"kind":"identity","subject":"s-1","contact_kind":"phone","contact":"12345"}"#,
            "contact",
        ),
        (
            r#"{"kind":"identity","subject":"s-1","contact_kind":"fax","contact":"+6512345"}"#,
            "contact_kind",
        ),
        (
            r#"{"kind":"geography","subject":"s-1","home_city":"Singapore","home_country":"SGP"}"#,
            "home_country",
        ),
        (
            r#"{"kind":"geography","subject":"s-1","home_city":"Singapore","home_country":"SG","zip":"1"}"#,
            "zip",
        ),
        (r#"{"kind":"purchase", "subject":"s-1""#, "<row>"),
        (r#"[1,2]"#, "<row>"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    vault
        .insert_batch(&[(sid("s-0"), purchase("Starbucks", 700, 1))])
        .unwrap();
    let before = dump(&vault);
    for (i, (bad, field)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.jsonl"));
        // Three good lines, a blank line, the bad row on line 5, more good lines.
        let text = format!("{GOOD}\n{GOOD}\n{GOOD}\n\n{bad}\n{GOOD}\n");
        std::fs::write(&file, text).unwrap();
        let err = import_records(
            &vault,
            &file,
            &ImportOptions {
                batch_records: 1,
                ..ImportOptions::default()
            },
            &mut |_| {},
        )
        .unwrap_err();
        match &err {
            ImportError::Row {
                file: f,
                line,
                field: got,
                ..
            } => {
                assert_eq!(f, &file);
                assert_eq!(*line, 5, "{err}");
                assert_eq!(got, field, "{err}");
            }
            other => panic!("case {i}: {other}"),
        }
        assert!(err
            .to_string()
            .starts_with(&format!("{}:5: field `{field}`", file.display())));
        assert_eq!(dump(&vault), before, "case {i} changed the Vault");
    }
    // A malformed consent row: also named, also nothing written.
    let file = dir.path().join("consent-bad.jsonl");
    std::fs::write(
        &file,
        "{\"kind\":\"consent\",\"vault\":\"vault-a\",\"subject\":\"s-0\",\"scope\":\"marketing\",\"granted\":true,\"at_ms\":1}\n{\"kind\":\"consent\",\"vault\":\"vault-a\",\"subject\":\"s-0\",\"scope\":\"ads\",\"granted\":true,\"at_ms\":2}\n",
    )
    .unwrap();
    let err = import_consent(&vault, &file, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, ImportError::Row { line: 2, field, .. } if field == "scope"),
        "{err}"
    );
    assert!(vault
        .consent_history(&sid("s-0"), UsageScope::Marketing)
        .unwrap()
        .changes()
        .is_empty());
}

#[test]
fn large_files_are_validated_in_two_halves_with_exact_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let n = 30_000u64; // ~5.7 MB: above the two-thread threshold
    let write = |bad_at: Option<u64>| {
        let mut text = String::new();
        for line in 1..=n {
            if Some(line) == bad_at {
                text.push_str(&GOOD.replace("\"SGD\"", "\"S1D\""));
            } else {
                text.push_str(GOOD);
            }
            text.push('\n');
        }
        std::fs::write(&file, text).unwrap();
    };
    write(None);
    assert!(std::fs::metadata(&file).unwrap().len() > 4 << 20);
    assert_eq!(
        symphony_vault::validate_records(&file, &mut |_| {}).unwrap(),
        n
    );
    for bad in [1, 100, n / 2, n / 2 + 1, 20_001, n] {
        write(Some(bad));
        match symphony_vault::validate_records(&file, &mut |_| {}) {
            Err(ImportError::Row { line, field, .. }) => {
                assert_eq!((line, field.as_str()), (bad, "currency"))
            }
            other => panic!("bad row at {bad}: {other:?}"),
        }
    }
}

#[test]
fn single_pass_import_stops_at_a_malformed_row_after_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let file = dir.path().join("f.jsonl");
    let good = |i: u64| GOOD.replace("\"ts_ms\":5", &format!("\"ts_ms\":{i}"));
    let text = format!(
        "{}\n{}\n{}\n{{\"kind\":\"x\"}}\n{}\n",
        good(1),
        good(2),
        good(3),
        good(4)
    );
    std::fs::write(&file, text).unwrap();
    let options = ImportOptions {
        batch_records: 2,
        validate_first: false,
        ..ImportOptions::default()
    };
    let err = import_records(&vault, &file, &options, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, ImportError::Row { line: 4, .. }), "{err}");
    // Lines 1-2 formed a whole committed batch; line 3 was in the unfinished one.
    let have = dump(&vault);
    assert_eq!(have["s-1"].len(), 2);
}
