//! Resolution of the Luckin campaign and its evaluator.

mod common;

use common::{luckin_intent, purchase, subject, NOW_MS};
use symphony_semantic::facts::DAY_MS;
use symphony_semantic::CompositionError;
use symphony_semantic::{
    AttributeName, AttributeState, CompositionOperator, CrossDomainPolicy, DomainId,
    LifecycleEvent, PrivacyClass, RegistryChange, RegistryError, ResolutionError, SemanticRegistry,
    SpatialResolution,
};

fn name(s: &str) -> AttributeName {
    AttributeName::new(s).unwrap()
}

#[test]
fn luckin_plan_matches_golden_hash() {
    let registry = SemanticRegistry::catalog_v1();
    let plan = registry.resolve_audience(&luckin_intent()).unwrap();
    let golden = include_str!("golden/luckin_plan_hash.hex").trim();
    assert_eq!(plan.plan_hash().to_hex(), golden);
    // Same inputs, fresh registry: same hash.
    let again = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    assert_eq!(again.plan_hash(), plan.plan_hash());
    assert_eq!(again, plan);
}

#[test]
fn luckin_plan_content() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    assert_eq!(plan.semantic_version().0, 1);
    let c = plan.composition();
    assert_eq!(c.operator(), CompositionOperator::And);
    let operands: Vec<_> = c
        .operand_attributes()
        .iter()
        .map(|o| (o.attribute.as_str(), o.domain.as_str()))
        .collect();
    assert_eq!(
        operands,
        [
            ("purchase_recency", "commerce"),
            ("singapore_eligibility", "geography")
        ]
    );
    assert_eq!(
        c.cross_domain_policy()
            .get(&DomainId::new("geography").unwrap()),
        Some(&CrossDomainPolicy::ReadOnly)
    );
    assert_eq!(plan.combined_privacy_class(), PrivacyClass::Personal);
    assert_eq!(plan.minimum_result_cardinality(), 20);
    assert_eq!(plan.delivery_attribute().as_str(), "contact_handle");
    assert_eq!(plan.conditions().brand, "luckin");
    assert_eq!(
        plan.conditions().spatial_resolution,
        SpatialResolution::City
    );
}

#[test]
fn plan_hash_depends_on_every_bound_value() {
    let registry = SemanticRegistry::catalog_v1();
    let base = registry
        .resolve_audience(&luckin_intent())
        .unwrap()
        .plan_hash();
    let mut other = luckin_intent();
    other.window_days = 31;
    assert_ne!(registry.resolve_audience(&other).unwrap().plan_hash(), base);
    let mut other = luckin_intent();
    other.city = None;
    assert_ne!(registry.resolve_audience(&other).unwrap().plan_hash(), base);
    // Case and whitespace of values are normalized: same plan.
    let mut same = luckin_intent();
    same.brand = " LUCKIN ".to_owned();
    assert_eq!(registry.resolve_audience(&same).unwrap().plan_hash(), base);
}

#[test]
fn plan_round_trips_and_refuses_a_tampered_hash() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    let back: symphony_semantic::ResolvedAudiencePlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    let tampered = json.replace("\"window_days\":30", "\"window_days\":300");
    assert_ne!(tampered, json);
    assert!(serde_json::from_str::<symphony_semantic::ResolvedAudiencePlan>(&tampered).is_err());
    let class = json.replace(
        "\"combined_privacy_class\":\"personal\"",
        "\"combined_privacy_class\":\"public\"",
    );
    assert_ne!(class, json);
    assert!(serde_json::from_str::<symphony_semantic::ResolvedAudiencePlan>(&class).is_err());
}

#[test]
fn unknown_brand_is_a_value_not_a_concept() {
    let mut intent = luckin_intent();
    intent.brand = "NeverHeardOfIt".to_owned();
    assert!(SemanticRegistry::catalog_v1()
        .resolve_audience(&intent)
        .is_ok());
}

#[test]
fn empty_registry_names_the_missing_concept() {
    let err = SemanticRegistry::new()
        .resolve_audience(&luckin_intent())
        .unwrap_err();
    assert_eq!(
        err,
        ResolutionError::UnknownComposition {
            name: "campaign_audience_membership".to_owned()
        }
    );
}

#[test]
fn deprecated_attribute_blocks_new_tasks_but_not_an_admitted_plan() {
    let mut registry = SemanticRegistry::catalog_v1();
    let admitted = registry.resolve_audience(&luckin_intent()).unwrap();
    let v = registry
        .apply(RegistryChange::Transition {
            attribute: name("purchase_recency"),
            event: LifecycleEvent::Deprecate,
        })
        .unwrap();
    assert_eq!(v.0, 2);
    let err = registry.resolve_audience(&luckin_intent()).unwrap_err();
    assert_eq!(
        err,
        ResolutionError::InactiveAttribute {
            name: name("purchase_recency"),
            state: AttributeState::Deprecated
        }
    );
    // The admitted plan is self-contained and still evaluates.
    let facts = subject(
        "SG",
        "Singapore",
        vec![purchase("Luckin", "coffee", 450, 3)],
    );
    assert!(admitted.is_eligible(&facts, NOW_MS));
}

#[test]
fn deprecated_source_blocks_resolution() {
    let mut registry = SemanticRegistry::catalog_v1();
    registry
        .apply(RegistryChange::Transition {
            attribute: name("home_city"),
            event: LifecycleEvent::Deprecate,
        })
        .unwrap();
    assert_eq!(
        registry.resolve_audience(&luckin_intent()).unwrap_err(),
        ResolutionError::InactiveAttribute {
            name: name("home_city"),
            state: AttributeState::Deprecated
        }
    );
}

#[test]
fn finer_granularity_than_the_catalog_offers_is_refused() {
    let mut changes = symphony_semantic::catalog::catalog_v1_changes().unwrap();
    for change in &mut changes {
        if let RegistryChange::AddQuery(q) = change {
            if q.name.as_str() == "singapore_eligibility" {
                q.granularity.spatial = Some(SpatialResolution::Country);
            }
        }
    }
    let mut registry = SemanticRegistry::new();
    registry.apply_batch(changes).unwrap();
    let err = registry.resolve_audience(&luckin_intent()).unwrap_err();
    assert_eq!(
        err,
        ResolutionError::GranularityNotAllowed {
            name: name("singapore_eligibility"),
            requested: SpatialResolution::City,
            allowed: Some(SpatialResolution::Country),
        }
    );
    let mut country_only = luckin_intent();
    country_only.city = None;
    assert!(registry.resolve_audience(&country_only).is_ok());
}

#[test]
fn window_outside_the_rule_is_refused() {
    let registry = SemanticRegistry::catalog_v1();
    for window_days in [0, 366] {
        let mut intent = luckin_intent();
        intent.window_days = window_days;
        assert!(matches!(
            registry.resolve_audience(&intent),
            Err(ResolutionError::ParameterOutOfRange {
                parameter: "window_days",
                ..
            })
        ));
    }
}

#[test]
fn wrong_usage_scope_is_refused() {
    let mut intent = luckin_intent();
    intent.usage_scope = symphony_core::UsageScope::Training;
    assert!(matches!(
        SemanticRegistry::catalog_v1().resolve_audience(&intent),
        Err(ResolutionError::UsageScopeNotAllowed { .. })
    ));
}

#[test]
fn forbidden_cross_domain_composition_is_refused_at_resolution() {
    let mut registry = SemanticRegistry::catalog_v1();
    registry
        .apply(RegistryChange::SetCrossDomainPolicy {
            domain: DomainId::new("geography").unwrap(),
            policy: CrossDomainPolicy::Forbidden,
        })
        .unwrap();
    let err = registry.resolve_audience(&luckin_intent()).unwrap_err();
    assert_eq!(
        err,
        ResolutionError::Composition(RegistryError::Composition {
            composition: name("campaign_audience_membership"),
            error: CompositionError::CrossDomainForbidden {
                domain: DomainId::new("geography").unwrap(),
                attribute: name("singapore_eligibility"),
            },
        })
    );
}

fn apply_err(registry: &mut SemanticRegistry, change: RegistryChange) -> RegistryError {
    let before = registry.clone();
    let err = registry.apply(change).unwrap_err();
    assert_eq!(
        *registry, before,
        "a refused change leaves the registry untouched"
    );
    err
}

#[test]
fn cross_domain_derivation_needs_approval_and_an_allowed_source_domain() {
    use symphony_semantic::registry::CrossDomainRefusal;
    let mut registry = SemanticRegistry::catalog_v1();
    let base = registry.query(&name("purchase_frequency")).unwrap().clone();
    let mut unapproved = base.clone();
    unapproved.name = name("purchase_frequency_unapproved");
    unapproved.state = AttributeState::Proposed;
    unapproved.cross_domain_approval = None;
    assert!(matches!(
        apply_err(&mut registry, RegistryChange::AddQuery(unapproved)),
        RegistryError::CrossDomainDerivation {
            refusal: CrossDomainRefusal::MissingApproval,
            ..
        }
    ));
    // Derive in behavior from geography (read_only): refused even with approval.
    let mut from_geo = base.clone();
    from_geo.name = name("home_city_hash");
    from_geo.state = AttributeState::Proposed;
    from_geo.rule = symphony_semantic::DerivationRule::Hash {
        source: name("home_city"),
        key_label: "k".into(),
    };
    assert!(matches!(
        apply_err(&mut registry, RegistryChange::AddQuery(from_geo.clone())),
        RegistryError::CrossDomainDerivation {
            refusal: CrossDomainRefusal::SourceDomainReadOnly,
            ..
        }
    ));
    from_geo.rule = symphony_semantic::DerivationRule::Hash {
        source: name("contact_handle"),
        key_label: "k".into(),
    };
    assert!(matches!(
        apply_err(&mut registry, RegistryChange::AddQuery(from_geo)),
        RegistryError::CrossDomainDerivation {
            refusal: CrossDomainRefusal::SourceDomainForbidden,
            ..
        }
    ));
}

#[test]
fn composing_an_identity_attribute_across_domains_is_refused() {
    let mut registry = SemanticRegistry::catalog_v1();
    // A hash of the handle inside identity is fine (same domain)...
    let mut hashed = registry.query(&name("purchase_recency")).unwrap().clone();
    hashed.name = name("contact_handle_hash");
    hashed.domain = DomainId::new("identity").unwrap();
    hashed.state = AttributeState::Proposed;
    hashed.rule = symphony_semantic::DerivationRule::Hash {
        source: name("contact_handle"),
        key_label: "k".into(),
    };
    registry.apply(RegistryChange::AddQuery(hashed)).unwrap();
    // ...but composing it with commerce is not.
    let spec = symphony_semantic::registry::CompositionSpec {
        name: name("handle_and_recency"),
        operator: CompositionOperator::And,
        operand_attributes: vec![name("purchase_recency"), name("contact_handle_hash")],
        minimum_result_cardinality: 20,
        usage_scopes: [symphony_core::UsageScope::Marketing].into(),
    };
    assert!(matches!(
        apply_err(&mut registry, RegistryChange::DeclareComposition(spec)),
        RegistryError::Composition {
            error: CompositionError::CrossDomainForbidden { .. },
            ..
        }
    ));
}

/// (home country, home city, purchases as (brand, days ago), eligible, why).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, u64)], bool, &'a str);

/// Evaluator truth table: (home country, home city, purchases as (brand, days ago), eligible).
#[test]
fn evaluator_truth_table() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    let cases: &[Case] = &[
        ("SG", "Singapore", &[("Luckin", 3)], true, "within window"),
        (
            "sg",
            " singapore ",
            &[("luckin", 3)],
            true,
            "case and space insensitive",
        ),
        (
            "SG",
            "Singapore",
            &[("Luckin", 30)],
            true,
            "exactly at the window edge",
        ),
        (
            "SG",
            "Singapore",
            &[("Luckin", 31)],
            false,
            "outside window",
        ),
        ("SG", "Singapore", &[("Starbucks", 3)], false, "other brand"),
        ("MY", "Singapore", &[("Luckin", 3)], false, "other country"),
        ("SG", "Jurong", &[("Luckin", 3)], false, "other city"),
        ("SG", "Singapore", &[], false, "no purchases"),
        (
            "SG",
            "Singapore",
            &[("Luckin", 45), ("Starbucks", 1), ("Luckin", 10)],
            true,
            "one qualifying among many",
        ),
    ];
    for (country, city, purchases, want, why) in cases {
        let facts = subject(
            country,
            city,
            purchases
                .iter()
                .map(|(b, d)| purchase(b, "coffee", 450, *d))
                .collect(),
        );
        assert_eq!(plan.is_eligible(&facts, NOW_MS), *want, "{why}");
        assert_eq!(
            plan.last_qualifying_purchase_ms(&facts, NOW_MS).is_some(),
            *want,
            "{why}"
        );
    }
}

#[test]
fn window_edge_to_the_millisecond_and_future_purchases() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    let mut p = purchase("Luckin", "coffee", 450, 0);
    p.timestamp_ms = NOW_MS - 30 * DAY_MS;
    assert!(plan.is_eligible(&subject("SG", "Singapore", vec![p.clone()]), NOW_MS));
    p.timestamp_ms -= 1;
    assert!(!plan.is_eligible(&subject("SG", "Singapore", vec![p.clone()]), NOW_MS));
    p.timestamp_ms = NOW_MS + 1;
    assert!(
        !plan.is_eligible(&subject("SG", "Singapore", vec![p]), NOW_MS),
        "after task time"
    );
}

#[test]
fn last_qualifying_purchase_is_the_latest_brand_purchase_in_window() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    let facts = subject(
        "SG",
        "Singapore",
        vec![
            purchase("Luckin", "coffee", 450, 20),
            purchase("Luckin", "coffee", 450, 5),
            purchase("Kopi", "coffee", 300, 1),
        ],
    );
    assert_eq!(
        plan.last_qualifying_purchase_ms(&facts, NOW_MS),
        Some(NOW_MS - 5 * DAY_MS)
    );
}

#[test]
fn country_level_plan_ignores_city() {
    let mut intent = luckin_intent();
    intent.city = None;
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&intent)
        .unwrap();
    assert!(plan.is_eligible(
        &subject("SG", "Jurong", vec![purchase("Luckin", "coffee", 450, 2)]),
        NOW_MS
    ));
}

#[test]
fn suppression_below_minimum_result_cardinality() {
    let plan = SemanticRegistry::catalog_v1()
        .resolve_audience(&luckin_intent())
        .unwrap();
    let min = plan.minimum_result_cardinality();
    assert!(plan.suppress_below_cardinality(0));
    assert!(plan.suppress_below_cardinality(min - 1));
    assert!(!plan.suppress_below_cardinality(min));
    assert!(!plan.suppress_below_cardinality(5000));
}
