//! Training feature resolution and evaluation.

mod common;

use common::{purchase, subject, NOW_MS};
use proptest::prelude::*;
use symphony_semantic::facts::DAY_MS;
use symphony_semantic::{FeatureIntent, ResolutionError, SemanticRegistry};

const ALL: [&str; 5] = [
    "purchase_frequency",
    "brand_affinity_score",
    "purchase_recency_bucket",
    "purchase_amount_bucket",
    "purchase_recency",
];

fn intent(names: &[&str]) -> FeatureIntent {
    FeatureIntent {
        brand: "Luckin".into(),
        feature_names: names.iter().map(|s| s.to_string()).collect(),
        window_days: 90,
    }
}

#[test]
fn feature_vector_values() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_features(&intent(&ALL))
        .unwrap();
    assert_eq!(plan.dimension(), 1 + 1 + 5 + 6 + 1);
    assert_eq!(plan.feature_labels().len(), plan.dimension());
    assert_eq!(plan.minimum_result_cardinality(), 100);
    let facts = subject(
        "SG",
        "Singapore",
        vec![
            purchase("Luckin", "coffee", 400, 10),
            purchase("Luckin", "coffee", 800, 40),
            purchase("Starbucks", "coffee", 700, 5),
            purchase("Starbucks", "coffee", 700, 6),
            purchase("FairPrice", "grocery", 9000, 2),
            purchase("Luckin", "coffee", 500, 200), // outside the 90-day window
        ],
    );
    let v = plan.features(&facts, NOW_MS);
    let want = [
        2.0, // frequency in window
        0.5, // 2 Luckin of 4 coffee purchases in window
        0.0, 1.0, 0.0, 0.0, 0.0, // last Luckin 10 days ago: <=30 bucket
        0.0, 1.0, 0.0, 0.0, 0.0, 0.0, // mean 600: <=1000 bucket
        1.0, // recent purchase
    ];
    assert_eq!(v, want);
}

#[test]
fn no_brand_purchases_gives_never_buckets() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_features(&intent(&ALL))
        .unwrap();
    let v = plan.features(
        &subject("SG", "Singapore", vec![purchase("Kopi", "coffee", 300, 1)]),
        NOW_MS,
    );
    assert_eq!(
        v,
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
}

#[test]
fn label_reads_after_cutoff_features_before() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_features(&intent(&["purchase_frequency"]))
        .unwrap();
    let cutoff = NOW_MS - 30 * DAY_MS;
    let facts = subject(
        "SG",
        "Singapore",
        vec![
            purchase("Luckin", "coffee", 400, 10),
            purchase("Luckin", "coffee", 400, 45),
        ],
    );
    let (x, y) = plan.training_example(&facts, cutoff, 30);
    assert_eq!(x, [1.0], "only the purchase before the cutoff is a feature");
    assert_eq!(y, 1.0);
    assert_eq!(
        plan.label(&facts, cutoff, 19),
        0.0,
        "10 days ago is day 20 after the cutoff"
    );
    assert_eq!(
        plan.label(&facts, cutoff, 20),
        1.0,
        "horizon edge is included"
    );
}

#[test]
fn resolution_errors() {
    let r = SemanticRegistry::catalog_v1();
    assert_eq!(
        r.resolve_features(&intent(&["shoe_size"])).unwrap_err(),
        ResolutionError::UnknownAttribute {
            name: "shoe_size".into()
        }
    );
    assert!(matches!(
        r.resolve_features(&intent(&["singapore_eligibility"])),
        Err(ResolutionError::NotAFeature { .. })
    ));
    assert!(matches!(
        r.resolve_features(&intent(&["purchase_frequency", "purchase_frequency"])),
        Err(ResolutionError::DuplicateFeature { .. })
    ));
    assert!(matches!(
        r.resolve_features(&intent(&[])),
        Err(ResolutionError::EmptyValue { .. })
    ));
}

#[test]
fn plan_hash_is_stable_and_order_sensitive() {
    let r = SemanticRegistry::catalog_v1();
    let a = r.resolve_features(&intent(&ALL)).unwrap();
    let b = SemanticRegistry::catalog_v1()
        .resolve_features(&intent(&ALL))
        .unwrap();
    assert_eq!(a.plan_hash(), b.plan_hash());
    let mut reversed = ALL;
    reversed.reverse();
    assert_ne!(
        r.resolve_features(&intent(&reversed)).unwrap().plan_hash(),
        a.plan_hash()
    );
}

proptest! {
    #[test]
    fn features_are_deterministic_finite_and_sized(
        raw in prop::collection::vec((0..3usize, 0..2usize, 0..1_000_000u64, 0..400u64), 0..30)
    ) {
        let brands = ["Luckin", "Starbucks", "Kopi"];
        let categories = ["coffee", "grocery"];
        let purchases = raw.iter().map(|(b, c, amount, days)| purchase(brands[*b], categories[*c], *amount, *days)).collect();
        let facts = subject("SG", "Singapore", purchases);
        let plan = SemanticRegistry::catalog_v1().resolve_features(&intent(&ALL)).unwrap();
        let v = plan.features(&facts, NOW_MS);
        prop_assert_eq!(v.len(), plan.dimension());
        prop_assert!(v.iter().all(|x| x.is_finite()));
        prop_assert!((0.0..=1.0).contains(&v[1]));
        prop_assert_eq!(v[2..7].iter().sum::<f64>(), 1.0);
        prop_assert_eq!(v[7..13].iter().sum::<f64>(), 1.0);
        prop_assert_eq!(plan.features(&facts, NOW_MS), v);
    }
}

#[test]
fn every_vector_position_has_a_definition_under_its_label() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_features(&intent(&ALL))
        .unwrap();
    let defs = plan.feature_definitions();
    let labels: Vec<String> = defs.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(labels, plan.feature_labels());
    assert!(defs.iter().all(|(_, d)| d.contains("luckin")), "{defs:?}");
    // The recency one-hot: one bucket per boundary, one above the last, one for
    // never; the windowed features name the window.
    let recency: Vec<&String> = defs
        .iter()
        .filter(|(l, _)| l.starts_with("purchase_recency_bucket["))
        .map(|(_, d)| d)
        .collect();
    assert!(recency.first().unwrap().contains("at most"), "{recency:?}");
    assert!(
        recency.last().unwrap().contains("never bought"),
        "{recency:?}"
    );
    assert!(defs
        .iter()
        .any(|(l, d)| l == "purchase_frequency" && d.contains("90 days")));
}
