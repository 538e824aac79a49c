//! The seeded catalog `SemanticRegistry::catalog_v1()`.
//!
//! Domains: `global` → family `consumer` → concrete `commerce` (cross_domain_policy
//! allowed), `geography` (read_only: composed as is, never derived from by other
//! domains, as the Luckin seed requires), `identity` (forbidden: contact handles are
//! delivered, never composed or derived across domains) and `behavior` (allowed; holds
//! the training features derived from commerce under governance approval).
//!
//! The whole catalog is one batch, so it sits at `semantic_version` 1.

use std::collections::BTreeSet;

use symphony_core::{SemanticVersion, UsageScope};

use crate::derivation::{
    AggregateFunction, CompositeCombinator, DerivationRule, GovernanceApproval, QueryAttribute,
    QueryGranularity, QueryScope, SpatialResolution, TemporalResolution,
};
use crate::model::{
    AttributeName, AttributeState, CanonicalAttribute, CrossDomainPolicy, Domain, DomainId,
    DomainLevel, GovernanceBoundary, LifecycleEvent, PrivacyClass, ValueType,
};
use crate::registry::{CompositionSpec, RegistryChange, RegistryError, SemanticRegistry};

/// `commerce` domain.
pub const COMMERCE: &str = "commerce";
/// `geography` domain.
pub const GEOGRAPHY: &str = "geography";
/// `identity` domain.
pub const IDENTITY: &str = "identity";
/// `behavior` domain.
pub const BEHAVIOR: &str = "behavior";

/// Threshold query attribute: a brand purchase within a window of days.
pub const PURCHASE_RECENCY: &str = "purchase_recency";
/// Boolean geography eligibility (home country, optionally home city).
pub const SINGAPORE_ELIGIBILITY: &str = "singapore_eligibility";
/// Aggregate: count of brand purchases in a window.
pub const PURCHASE_FREQUENCY: &str = "purchase_frequency";
/// Composite: share of brand purchases in its categories.
pub const BRAND_AFFINITY_SCORE: &str = "brand_affinity_score";
/// Bucket of days since the last brand purchase.
pub const PURCHASE_RECENCY_BUCKET: &str = "purchase_recency_bucket";
/// Bucket of the mean brand purchase amount in a window.
pub const PURCHASE_AMOUNT_BUCKET: &str = "purchase_amount_bucket";
/// The contact handle delivered to the campaign system.
pub const CONTACT_HANDLE: &str = "contact_handle";
/// The campaign composition (seed 000, section 3: "campaign audience membership").
pub const CAMPAIGN_AUDIENCE_MEMBERSHIP: &str = "campaign_audience_membership";
/// The `compute` composition: a brand's recent customers in a geography, released
/// only as per-group aggregates (analytics scope).
pub const CUSTOMER_STATISTICS: &str = "customer_statistics";
/// The training feature composition (seed 003, section 3).
pub const CONSUMER_BEHAVIOR_FEATURES: &str = "consumer_behavior_features";

/// Suppression threshold of the campaign composition (policy default, chosen).
pub const CAMPAIGN_MINIMUM_RESULT_CARDINALITY: u64 = 20;
/// Suppression threshold of the training composition (policy default, chosen).
pub const TRAINING_MINIMUM_RESULT_CARDINALITY: u64 = 100;
/// Longest window any catalog rule accepts.
pub const MAX_WINDOW_DAYS: u32 = 365;
/// Recency bucket upper bounds, in days since the last brand purchase.
pub const RECENCY_BUCKET_BOUNDARIES_DAYS: [u64; 3] = [7, 30, 90];
/// Amount bucket upper bounds, in minor units of the purchase currency.
pub const AMOUNT_BUCKET_BOUNDARIES_MINOR: [u64; 4] = [500, 1_000, 2_000, 5_000];

fn name(text: &str) -> Result<AttributeName, RegistryError> {
    Ok(AttributeName::new(text)?)
}

fn domain(
    id: &str,
    level: DomainLevel,
    parent: Option<&str>,
    policy: CrossDomainPolicy,
) -> Result<Domain, RegistryError> {
    Ok(Domain {
        id: DomainId::new(id)?,
        level,
        parent: parent.map(DomainId::new).transpose()?,
        governance: GovernanceBoundary {
            steward: "symphony-foundation-semantic-council".to_owned(),
            cross_domain_policy: policy,
        },
    })
}

fn canonical(
    attr: &str,
    domain: &str,
    value_type: ValueType,
    privacy_class: PrivacyClass,
    directly_queryable: bool,
    description: &str,
) -> Result<CanonicalAttribute, RegistryError> {
    Ok(CanonicalAttribute {
        name: name(attr)?,
        domain: DomainId::new(domain)?,
        value_type,
        privacy_class,
        directly_queryable,
        state: AttributeState::Proposed,
        semantic_version: SemanticVersion::default(),
        description: description.to_owned(),
    })
}

struct QuerySpec<'a> {
    name: &'a str,
    domain: &'a str,
    value_type: ValueType,
    privacy_class: PrivacyClass,
    rule: DerivationRule,
    granularity: QueryGranularity,
    approval: Option<&'a str>,
    description: &'a str,
}

fn query(spec: QuerySpec<'_>) -> Result<QueryAttribute, RegistryError> {
    Ok(QueryAttribute {
        name: name(spec.name)?,
        domain: DomainId::new(spec.domain)?,
        value_type: spec.value_type,
        privacy_class: spec.privacy_class,
        rule: spec.rule,
        granularity: spec.granularity,
        scope: QueryScope::Global,
        cross_domain_approval: spec.approval.map(|proposal_id| GovernanceApproval {
            proposal_id: proposal_id.to_owned(),
            approved_at: SemanticVersion(1),
        }),
        state: AttributeState::Proposed,
        semantic_version: SemanticVersion::default(),
        description: spec.description.to_owned(),
    })
}

fn domains() -> Result<Vec<Domain>, RegistryError> {
    use CrossDomainPolicy::{Allowed, Forbidden, ReadOnly};
    Ok(vec![
        domain("global", DomainLevel::Global, None, ReadOnly)?,
        domain("consumer", DomainLevel::Family, Some("global"), ReadOnly)?,
        domain(COMMERCE, DomainLevel::Concrete, Some("consumer"), Allowed)?,
        domain(GEOGRAPHY, DomainLevel::Concrete, Some("consumer"), ReadOnly)?,
        domain(IDENTITY, DomainLevel::Concrete, Some("consumer"), Forbidden)?,
        domain(BEHAVIOR, DomainLevel::Concrete, Some("consumer"), Allowed)?,
    ])
}

fn canonical_attributes() -> Result<Vec<CanonicalAttribute>, RegistryError> {
    use PrivacyClass::{Identifying, Personal, Pseudonymous, Sensitive};
    use ValueType as T;
    Ok(vec![
        canonical(
            "purchase_brand",
            COMMERCE,
            T::Text,
            Personal,
            true,
            "Brand of a purchased item or store.",
        )?,
        canonical(
            "purchase_category",
            COMMERCE,
            T::Category,
            Personal,
            true,
            "Governed category of a purchase (e.g. coffee).",
        )?,
        canonical(
            "purchase_amount",
            COMMERCE,
            T::MoneyMinor,
            Sensitive,
            false,
            "Amount paid, integer minor units with currency.",
        )?,
        canonical(
            "purchase_date",
            COMMERCE,
            T::TimestampMs,
            Personal,
            false,
            "When the purchase happened, ms since the Unix epoch.",
        )?,
        canonical(
            "store_city",
            GEOGRAPHY,
            T::City,
            Personal,
            false,
            "City of the store where a purchase happened.",
        )?,
        canonical(
            "store_country",
            GEOGRAPHY,
            T::CountryCode,
            Pseudonymous,
            true,
            "Country of the store where a purchase happened.",
        )?,
        canonical(
            "home_city",
            GEOGRAPHY,
            T::City,
            Personal,
            true,
            "City the data subject lives in.",
        )?,
        canonical(
            "home_country",
            GEOGRAPHY,
            T::CountryCode,
            Pseudonymous,
            true,
            "Country the data subject lives in.",
        )?,
        canonical(
            CONTACT_HANDLE,
            IDENTITY,
            T::ContactHandle,
            Identifying,
            false,
            "Coupon-targetable contact handle; delivered, never queried.",
        )?,
        canonical(
            "subject_pseudonym",
            IDENTITY,
            T::Pseudonym,
            Pseudonymous,
            false,
            "Stable pseudonymous identifier of a data subject.",
        )?,
    ])
}

fn day_granularity(cardinality_floor: u64) -> QueryGranularity {
    QueryGranularity {
        temporal: Some(TemporalResolution::Day),
        cardinality_floor,
        ..QueryGranularity::default()
    }
}

fn query_attributes() -> Result<Vec<QueryAttribute>, RegistryError> {
    use PrivacyClass::Personal;
    let brand = || name("purchase_brand");
    let date = || name("purchase_date");
    Ok(vec![
        query(QuerySpec {
            name: PURCHASE_RECENCY,
            domain: COMMERCE,
            value_type: ValueType::Boolean,
            privacy_class: Personal,
            rule: DerivationRule::Threshold { source: date()?, filter: Some(brand()?), max_window_days: MAX_WINDOW_DAYS },
            granularity: day_granularity(CAMPAIGN_MINIMUM_RESULT_CARDINALITY),
            approval: None,
            description: "Whether the subject bought the bound brand within the bound window of days.",
        })?,
        query(QuerySpec {
            name: SINGAPORE_ELIGIBILITY,
            domain: GEOGRAPHY,
            value_type: ValueType::Boolean,
            privacy_class: Personal,
            rule: DerivationRule::Boolean { sources: vec![name("home_country")?, name("home_city")?] },
            granularity: QueryGranularity {
                spatial: Some(SpatialResolution::City),
                cardinality_floor: CAMPAIGN_MINIMUM_RESULT_CARDINALITY,
                ..QueryGranularity::default()
            },
            approval: None,
            description: "Whether the subject's home country (and city, when bound) equals the bound place.",
        })?,
        query(QuerySpec {
            name: PURCHASE_FREQUENCY,
            domain: BEHAVIOR,
            value_type: ValueType::Count,
            privacy_class: Personal,
            rule: DerivationRule::Aggregate { source: date()?, filter: Some(brand()?), function: AggregateFunction::Count, max_window_days: MAX_WINDOW_DAYS },
            granularity: day_granularity(TRAINING_MINIMUM_RESULT_CARDINALITY),
            approval: Some("scp-gov-behavior-features-1"),
            description: "Number of purchases of the bound brand in the bound window.",
        })?,
        query(QuerySpec {
            name: BRAND_AFFINITY_SCORE,
            domain: BEHAVIOR,
            value_type: ValueType::Score,
            privacy_class: Personal,
            rule: DerivationRule::Composite { sources: vec![brand()?, name("purchase_category")?, date()?], combinator: CompositeCombinator::ShareOfCategory, max_window_days: MAX_WINDOW_DAYS },
            granularity: day_granularity(TRAINING_MINIMUM_RESULT_CARDINALITY),
            approval: Some("scp-gov-behavior-features-1"),
            description: "Share of the bound brand among the subject's purchases in the brand's categories, in the window.",
        })?,
        query(QuerySpec {
            name: PURCHASE_RECENCY_BUCKET,
            domain: BEHAVIOR,
            value_type: ValueType::Bucket,
            privacy_class: Personal,
            rule: DerivationRule::Bucket { source: date()?, filter: Some(brand()?), boundaries: RECENCY_BUCKET_BOUNDARIES_DAYS.to_vec() },
            granularity: day_granularity(TRAINING_MINIMUM_RESULT_CARDINALITY),
            approval: Some("scp-gov-behavior-features-1"),
            description: "Days since the last purchase of the bound brand, bucketed (<=7, <=30, <=90, older, never).",
        })?,
        query(QuerySpec {
            name: PURCHASE_AMOUNT_BUCKET,
            domain: COMMERCE,
            value_type: ValueType::Bucket,
            privacy_class: Personal,
            rule: DerivationRule::Bucket { source: name("purchase_amount")?, filter: Some(brand()?), boundaries: AMOUNT_BUCKET_BOUNDARIES_MINOR.to_vec() },
            granularity: QueryGranularity { numeric_bucket_width: Some(500), cardinality_floor: TRAINING_MINIMUM_RESULT_CARDINALITY, ..QueryGranularity::default() },
            approval: None,
            description: "Mean amount of the bound brand's purchases in the window, bucketed.",
        })?,
    ])
}

fn compositions() -> Result<Vec<CompositionSpec>, RegistryError> {
    Ok(vec![
        CompositionSpec {
            name: name(CAMPAIGN_AUDIENCE_MEMBERSHIP)?,
            operator: crate::CompositionOperator::And,
            operand_attributes: vec![name(PURCHASE_RECENCY)?, name(SINGAPORE_ELIGIBILITY)?],
            minimum_result_cardinality: CAMPAIGN_MINIMUM_RESULT_CARDINALITY,
            usage_scopes: BTreeSet::from([UsageScope::Marketing]),
        },
        CompositionSpec {
            name: name(CUSTOMER_STATISTICS)?,
            operator: crate::CompositionOperator::And,
            operand_attributes: vec![name(PURCHASE_RECENCY)?, name(SINGAPORE_ELIGIBILITY)?],
            minimum_result_cardinality: CAMPAIGN_MINIMUM_RESULT_CARDINALITY,
            usage_scopes: BTreeSet::from([UsageScope::Analytics]),
        },
        CompositionSpec {
            name: name(CONSUMER_BEHAVIOR_FEATURES)?,
            operator: crate::CompositionOperator::And,
            operand_attributes: vec![
                name(PURCHASE_RECENCY)?,
                name(PURCHASE_FREQUENCY)?,
                name(BRAND_AFFINITY_SCORE)?,
                name(PURCHASE_RECENCY_BUCKET)?,
                name(PURCHASE_AMOUNT_BUCKET)?,
            ],
            minimum_result_cardinality: TRAINING_MINIMUM_RESULT_CARDINALITY,
            usage_scopes: BTreeSet::from([UsageScope::Training, UsageScope::Analytics]),
        },
    ])
}

/// The catalog as one batch of changes: domains, canonical attributes (proposed,
/// registered, activated), query attributes (same), then compositions. Exposed so
/// that tests and governance tooling can vary it.
pub fn catalog_v1_changes() -> Result<Vec<RegistryChange>, RegistryError> {
    let mut changes: Vec<RegistryChange> = domains()?
        .into_iter()
        .map(RegistryChange::AddDomain)
        .collect();
    let mut activate = Vec::new();
    for attr in canonical_attributes()? {
        activate.push(attr.name.clone());
        changes.push(RegistryChange::AddCanonical(attr));
    }
    let queries = query_attributes()?;
    for attr in &queries {
        activate.push(attr.name.clone());
    }
    let mut transitions = Vec::new();
    for attribute in activate {
        for event in [LifecycleEvent::Register, LifecycleEvent::Activate] {
            transitions.push(RegistryChange::Transition {
                attribute: attribute.clone(),
                event,
            });
        }
    }
    // Canonical attributes are active before query attributes activate over them.
    let split = canonical_attributes()?.len() * 2;
    let (canonical_transitions, query_transitions) = transitions.split_at(split);
    changes.extend(canonical_transitions.iter().cloned());
    changes.extend(queries.into_iter().map(RegistryChange::AddQuery));
    changes.extend(query_transitions.iter().cloned());
    changes.extend(
        compositions()?
            .into_iter()
            .map(RegistryChange::DeclareComposition),
    );
    Ok(changes)
}

impl SemanticRegistry {
    /// The catalog applied to an empty registry, or the error if a change is invalid.
    pub fn try_catalog_v1() -> Result<SemanticRegistry, RegistryError> {
        let mut registry = SemanticRegistry::new();
        registry.apply_batch(catalog_v1_changes()?)?;
        Ok(registry)
    }

    /// The seeded catalog at `semantic_version` 1.
    #[allow(clippy::expect_used)]
    pub fn catalog_v1() -> SemanticRegistry {
        // The catalog is constant data; a failure here is a bug caught by the tests.
        Self::try_catalog_v1().expect("the built-in catalog is valid")
    }
}
