//! Attribute promotion through governance (issue #13, seed 002 "Semantic Model"):
//! local → vault-scoped query attribute → canonical, each step one registry batch
//! (one `semantic_version` bump), the canonical step only with a consistent rule
//! in at least the promotion quorum of Vaults, one besides the origin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use symphony_core::{SemanticVersion, VaultId};
use symphony_semantic::{
    AttributeName, AttributePromotion, AttributeState, DerivationRule, DomainId, LocalAttribute,
    PrivacyClass, PromotionRefusal, PromotionTarget, QueryScope, SemanticRegistry, ValueType,
    PROMOTION_QUORUM,
};

fn name(s: &str) -> AttributeName {
    AttributeName::new(s).unwrap()
}

fn vault(s: &str) -> VaultId {
    VaultId::new(s).unwrap()
}

fn local() -> LocalAttribute {
    LocalAttribute {
        name: name("oat_milk_preference"),
        vault: vault("vault-00"),
        value_type: ValueType::Boolean,
        privacy_class: PrivacyClass::Personal,
        description: "Prefers oat milk.".into(),
    }
}

fn reads_local() -> DerivationRule {
    DerivationRule::Boolean {
        sources: vec![name("oat_milk_preference")],
    }
}

fn vault_scoped(rule: DerivationRule) -> AttributePromotion {
    AttributePromotion {
        local: local(),
        target: PromotionTarget::VaultScopedQuery {
            name: name("oat_milk_buyer"),
            domain: DomainId::new("commerce").unwrap(),
            rule,
            granularity: Default::default(),
            value_type: ValueType::Boolean,
            description: "Bought oat milk drinks.".into(),
        },
    }
}

fn canonical(derivations: &[(&str, DerivationRule)]) -> AttributePromotion {
    AttributePromotion {
        local: local(),
        target: PromotionTarget::Canonical {
            domain: DomainId::new("commerce").unwrap(),
            directly_queryable: true,
            derivations: derivations
                .iter()
                .map(|(v, r)| (vault(v), r.clone()))
                .collect::<BTreeMap<_, _>>(),
        },
    }
}

fn from_purchases() -> DerivationRule {
    DerivationRule::Boolean {
        sources: vec![name("purchase_category")],
    }
}

#[test]
fn local_to_vault_scoped_to_canonical_one_version_each() {
    let genesis = SemanticRegistry::catalog_v1();
    let v0 = genesis.semantic_version();
    let mut r = genesis.clone();

    // Vault-scoped: the local attribute and its query attribute enter, active.
    let v1 = vault_scoped(reads_local())
        .enact(&mut r, "proposal-3")
        .unwrap();
    assert_eq!(v1, SemanticVersion(v0.0 + 1));
    let q = r.query(&name("oat_milk_buyer")).unwrap();
    assert_eq!(q.state, AttributeState::Active);
    assert_eq!(
        q.scope,
        QueryScope::VaultScoped {
            vault: vault("vault-00")
        }
    );
    assert!(r.local(&name("oat_milk_preference")).is_some());
    assert!(r.canonical(&name("oat_milk_preference")).is_none());

    // Canonical: consistent rule in two Vaults, one besides the origin.
    let p = canonical(&[
        ("vault-00", from_purchases()),
        ("vault-01", from_purchases()),
    ]);
    let v2 = p.enact(&mut r, "proposal-4").unwrap();
    assert_eq!(v2, SemanticVersion(v1.0 + 1));
    let c = r.canonical(&name("oat_milk_preference")).unwrap();
    assert_eq!(c.state, AttributeState::Active);
    assert!(c.directly_queryable);
    assert!(r.local(&name("oat_milk_preference")).is_none());
    // The vault-scoped attribute still resolves (it now reads the canonical one).
    assert_eq!(
        r.query(&name("oat_milk_buyer")).unwrap().state,
        AttributeState::Active
    );
    // No retroactivity: the genesis registry a task admitted earlier resolved
    // against is untouched.
    assert_eq!(genesis, SemanticRegistry::catalog_v1());
    assert!(genesis.query(&name("oat_milk_buyer")).is_none());
}

#[test]
fn canonical_promotion_needs_a_consistent_rule_in_the_quorum_of_vaults() {
    let mut r = SemanticRegistry::catalog_v1();
    vault_scoped(reads_local()).enact(&mut r, "p1").unwrap();
    let before = r.clone();

    // Only the origin Vault derives it.
    let err = canonical(&[("vault-00", from_purchases())])
        .enact(&mut r, "p2")
        .unwrap_err();
    assert!(
        matches!(err, PromotionRefusal::TooFewVaults { validated: 1, others: 0, required, .. } if required == PROMOTION_QUORUM),
        "{err}"
    );
    // Two Vaults, but they derive it differently.
    let err = canonical(&[("vault-00", from_purchases()), ("vault-01", reads_local())])
        .enact(&mut r, "p2")
        .unwrap_err();
    assert!(
        matches!(&err, PromotionRefusal::InconsistentRules { vault: v, .. } if *v == vault("vault-01")),
        "{err}"
    );
    assert!(err.to_string().contains("different rules"), "{err}");
    assert_eq!(r, before, "a refused promotion changes nothing");
}

#[test]
fn refused_promotions_name_what_is_wrong() {
    let mut r = SemanticRegistry::catalog_v1();
    let before = r.clone();
    // The vault-scoped rule must read the local attribute.
    let err = vault_scoped(from_purchases())
        .enact(&mut r, "p1")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the rule of oat_milk_buyer does not read oat_milk_preference"),
        "{err}"
    );
    // Canonical before the local attribute is in the registry.
    let err = canonical(&[
        ("vault-00", from_purchases()),
        ("vault-01", from_purchases()),
    ])
    .enact(&mut r, "p1")
    .unwrap_err();
    assert!(matches!(err, PromotionRefusal::NotLocal { .. }), "{err}");
    // A name the catalog already holds.
    let mut taken = vault_scoped(reads_local());
    if let PromotionTarget::VaultScopedQuery { name: n, .. } = &mut taken.target {
        *n = name("home_city");
    }
    let err = taken.enact(&mut r, "p1").unwrap_err();
    assert!(matches!(err, PromotionRefusal::Registry { .. }), "{err}");
    assert_eq!(r, before);
    // The same local attribute claimed by another Vault.
    vault_scoped(reads_local()).enact(&mut r, "p1").unwrap();
    let mut other = vault_scoped(reads_local());
    other.local.vault = vault("vault-02");
    if let PromotionTarget::VaultScopedQuery { name: n, .. } = &mut other.target {
        *n = name("oat_milk_buyer_2");
    }
    let err = other.enact(&mut r, "p2").unwrap_err();
    assert!(
        matches!(err, PromotionRefusal::LocalMismatch { .. }),
        "{err}"
    );
}
