//! The seeded catalog and registry versioning.

use symphony_core::{SemanticVersion, VaultId};
use symphony_semantic::derivation::MIN_VALIDATING_VAULTS;
use symphony_semantic::{
    AttributeName, AttributeState, CrossDomainPolicy, DomainId, GovernanceApproval, LifecycleEvent,
    LocalAttribute, PrivacyClass, PromotionError, RegistryChange, RegistryError, SemanticRegistry,
    ValueType,
};

fn name(s: &str) -> AttributeName {
    AttributeName::new(s).unwrap()
}

#[test]
fn catalog_v1_contents() {
    let r = SemanticRegistry::catalog_v1();
    assert_eq!(r.semantic_version(), SemanticVersion(1));
    let canonical: Vec<_> = r
        .canonical_attributes()
        .map(|a| a.name.as_str().to_owned())
        .collect();
    for want in [
        "purchase_brand",
        "purchase_category",
        "purchase_amount",
        "purchase_date",
        "store_city",
        "store_country",
        "home_city",
        "home_country",
        "contact_handle",
        "subject_pseudonym",
    ] {
        assert!(canonical.iter().any(|c| c == want), "{want} missing");
    }
    for q in [
        "purchase_recency",
        "singapore_eligibility",
        "purchase_frequency",
        "brand_affinity_score",
        "purchase_recency_bucket",
        "purchase_amount_bucket",
    ] {
        assert_eq!(r.state_of(&name(q)), Some(AttributeState::Active), "{q}");
    }
    assert!(r
        .canonical_attributes()
        .all(|a| a.state == AttributeState::Active));
    let policy = |d: &str| {
        r.domain(&DomainId::new(d).unwrap())
            .unwrap()
            .governance
            .cross_domain_policy
    };
    assert_eq!(policy("commerce"), CrossDomainPolicy::Allowed);
    assert_eq!(policy("geography"), CrossDomainPolicy::ReadOnly);
    assert_eq!(policy("identity"), CrossDomainPolicy::Forbidden);
    assert_eq!(
        r.canonical(&name("contact_handle")).unwrap().privacy_class,
        PrivacyClass::Identifying
    );
    let spec = r
        .composition_spec(&name("campaign_audience_membership"))
        .unwrap();
    assert_eq!(spec.minimum_result_cardinality, 20);
}

#[test]
fn every_change_bumps_the_version_and_a_failed_batch_changes_nothing() {
    let mut r = SemanticRegistry::catalog_v1();
    let v = r
        .apply(RegistryChange::Transition {
            attribute: name("store_city"),
            event: LifecycleEvent::Deprecate,
        })
        .unwrap();
    assert_eq!(v, SemanticVersion(2));
    assert_eq!(
        r.canonical(&name("store_city")).unwrap().semantic_version,
        SemanticVersion(2)
    );
    let before = r.clone();
    let err = r
        .apply_batch(vec![
            RegistryChange::Transition {
                attribute: name("store_city"),
                event: LifecycleEvent::Retire,
            },
            RegistryChange::Transition {
                attribute: name("store_city"),
                event: LifecycleEvent::Activate,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, RegistryError::Lifecycle { .. }));
    assert_eq!(r, before);
}

#[test]
fn catalog_is_deterministic() {
    assert_eq!(
        SemanticRegistry::catalog_v1(),
        SemanticRegistry::catalog_v1()
    );
}

#[test]
fn local_attribute_promotion_paths() {
    let local = LocalAttribute {
        name: name("oat_milk_preference"),
        vault: VaultId::new("vault-a").unwrap(),
        value_type: ValueType::Boolean,
        privacy_class: PrivacyClass::Personal,
        description: "Prefers oat milk.".into(),
    };
    let commerce = DomainId::new("commerce").unwrap();
    let mut vaults = std::collections::BTreeSet::from([VaultId::new("vault-a").unwrap()]);
    let approval = GovernanceApproval {
        proposal_id: "p-7".into(),
        approved_at: SemanticVersion(3),
    };
    assert!(matches!(
        local.promote_to_canonical(commerce.clone(), &vaults, Some(&approval), false),
        Err(PromotionError::InsufficientValidation {
            required: MIN_VALIDATING_VAULTS,
            ..
        })
    ));
    vaults.insert(VaultId::new("vault-b").unwrap());
    assert!(matches!(
        local.promote_to_canonical(commerce.clone(), &vaults, None, false),
        Err(PromotionError::MissingApproval { .. })
    ));
    let canonical = local
        .promote_to_canonical(commerce.clone(), &vaults, Some(&approval), false)
        .unwrap();
    assert_eq!(canonical.state, AttributeState::Registered);
    let mut r = SemanticRegistry::catalog_v1();
    r.apply(RegistryChange::AddCanonical(canonical)).unwrap();
    r.apply(RegistryChange::Transition {
        attribute: name("oat_milk_preference"),
        event: LifecycleEvent::Activate,
    })
    .unwrap();

    // Vault-scoped path: the rule must read the local attribute.
    let wrong = symphony_semantic::DerivationRule::Boolean {
        sources: vec![name("home_city")],
    };
    assert!(local
        .promote_to_vault_scoped_query(
            commerce.clone(),
            wrong,
            Default::default(),
            ValueType::Boolean,
            "x"
        )
        .is_err());
    let rule = symphony_semantic::DerivationRule::Boolean {
        sources: vec![name("oat_milk_preference")],
    };
    let q = local
        .promote_to_vault_scoped_query(commerce, rule, Default::default(), ValueType::Boolean, "x")
        .unwrap();
    assert_eq!(q.state, AttributeState::Proposed);
    assert!(matches!(
        q.scope,
        symphony_semantic::QueryScope::VaultScoped { .. }
    ));
}
