//! Audience resolution: a campaign intent becomes a [`ResolvedAudiencePlan`].
//!
//! Seed 000, section 3: the Luckin campaign resolves to the AND composition of
//! `purchase_recency` (commerce, threshold over `purchase_date` for a brand within a
//! window) and `singapore_eligibility` (geography, read-only), with the
//! `contact_handle` (identity) as the delivered attribute. A brand, country or city
//! is a value bound into the plan; a concept (attribute, granularity, composition,
//! cross-domain use) that does not resolve blocks the task with a [`ResolutionError`].
//!
//! Geography rule (chosen): the geography condition is on the subject's **home**
//! location (`home_country`, and `home_city` when the intent names a city), not on the
//! store of the qualifying purchase. `singapore_eligibility` is a subject attribute in
//! the geography domain, composed with purchase recency as a separate operand; the
//! recency condition counts a brand purchase made anywhere.

use serde::{Deserialize, Serialize};
use symphony_core::{content_hash, Digest, SemanticVersion, UsageScope};

use crate::catalog::{
    CAMPAIGN_AUDIENCE_MEMBERSHIP, CONTACT_HANDLE, CUSTOMER_STATISTICS, PURCHASE_RECENCY,
    SINGAPORE_ELIGIBILITY,
};
use crate::composition::{AttributeComposition, CompositionOperator};
use crate::derivation::{DerivationRule, QueryAttribute, SpatialResolution};
use crate::facts::{normalize, same_value, within_window, AudienceFacts};
use crate::model::{AttributeName, AttributeState, PrivacyClass};
use crate::registry::{CompositionSpec, RegistryError, SemanticRegistry};

/// Domain tag of the audience plan hash.
pub const AUDIENCE_PLAN_TAG: &str = "scp/semantic/audience_plan/v1";

/// A campaign's business intent (seed 000, section 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceIntent {
    /// The purchased brand (a value, e.g. `luckin`).
    pub brand: String,
    /// The country (a value, e.g. `SG`).
    pub country: String,
    /// The city, for city-level eligibility.
    pub city: Option<String>,
    /// The recency window in days.
    pub window_days: u32,
    /// The usage scope the task runs under.
    pub usage_scope: UsageScope,
}

/// Why a task did not resolve; names the concept and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolutionError {
    /// The attribute is not in the registry.
    #[error("concept {name} is not in the semantic registry")]
    UnknownAttribute {
        /// The attribute.
        name: String,
    },
    /// The attribute exists but is not active.
    #[error("concept {name} is {state}, only active attributes resolve")]
    InactiveAttribute {
        /// The attribute.
        name: AttributeName,
        /// Its state.
        state: AttributeState,
    },
    /// The composition is not declared.
    #[error("composition {name} is not declared in the semantic registry")]
    UnknownComposition {
        /// The composition.
        name: String,
    },
    /// The composition is declared with a different shape than this resolution needs.
    #[error("composition {name} is not the AND of {expected}")]
    UnexpectedComposition {
        /// The composition.
        name: AttributeName,
        /// The expected operands.
        expected: String,
    },
    /// The attribute's derivation rule is not the kind this resolution needs.
    #[error("concept {name} is derived by a {found} rule; resolution needs {expected}")]
    UnexpectedRule {
        /// The attribute.
        name: AttributeName,
        /// The rule kind found.
        found: &'static str,
        /// The rule kind needed.
        expected: &'static str,
    },
    /// The requested granularity is finer than the attribute allows, or not offered.
    #[error("concept {name} does not offer {requested:?} spatial granularity (finest allowed: {allowed:?})")]
    GranularityNotAllowed {
        /// The attribute.
        name: AttributeName,
        /// What the intent asked for.
        requested: SpatialResolution,
        /// The finest the attribute allows.
        allowed: Option<SpatialResolution>,
    },
    /// A bound parameter is outside what the rule allows.
    #[error("parameter {parameter} = {value} is outside {min}..={max} allowed by {name}")]
    ParameterOutOfRange {
        /// The attribute whose rule bounds it.
        name: AttributeName,
        /// The parameter.
        parameter: &'static str,
        /// Its value.
        value: u64,
        /// Lowest allowed.
        min: u64,
        /// Highest allowed.
        max: u64,
    },
    /// A bound text value is empty.
    #[error("parameter {parameter} is empty")]
    EmptyValue {
        /// The parameter.
        parameter: &'static str,
    },
    /// The composition does not serve the intent's usage scope.
    #[error("composition {name} does not serve usage scope {scope}")]
    UsageScopeNotAllowed {
        /// The composition.
        name: AttributeName,
        /// The refused scope.
        scope: UsageScope,
    },
    /// The composition could not be built (e.g. a forbidden cross-domain composition).
    #[error("composition refused: {0}")]
    Composition(RegistryError),
    /// A requested feature is not a feature-capable query attribute.
    #[error("concept {name} cannot serve as a training feature: {reason}")]
    NotAFeature {
        /// The attribute.
        name: AttributeName,
        /// Why.
        reason: &'static str,
    },
    /// The same feature twice.
    #[error("feature {name} is requested more than once")]
    DuplicateFeature {
        /// The attribute.
        name: AttributeName,
    },
    /// The plan could not be encoded (a bug).
    #[error("plan encoding failed: {0}")]
    Encoding(String),
}

/// An attribute that resolves for a new task: known and active, with active sources.
pub(crate) fn active_query<'r>(
    registry: &'r SemanticRegistry,
    name: &str,
) -> Result<&'r QueryAttribute, ResolutionError> {
    let unknown = || ResolutionError::UnknownAttribute {
        name: name.to_owned(),
    };
    let key = AttributeName::new(name).map_err(|_| unknown())?;
    let attr = registry.query(&key).ok_or_else(unknown)?;
    require_active(registry, &attr.name)?;
    for source in attr.rule.sources() {
        require_active(registry, source)?;
    }
    Ok(attr)
}

pub(crate) fn require_active(
    registry: &SemanticRegistry,
    name: &AttributeName,
) -> Result<(), ResolutionError> {
    match registry.state_of(name) {
        None => Err(ResolutionError::UnknownAttribute {
            name: name.to_string(),
        }),
        Some(AttributeState::Active) => Ok(()),
        Some(state) => Err(ResolutionError::InactiveAttribute {
            name: name.clone(),
            state,
        }),
    }
}

pub(crate) fn composition_spec<'r>(
    registry: &'r SemanticRegistry,
    name: &str,
) -> Result<&'r CompositionSpec, ResolutionError> {
    let unknown = || ResolutionError::UnknownComposition {
        name: name.to_owned(),
    };
    let key = AttributeName::new(name).map_err(|_| unknown())?;
    registry.composition_spec(&key).ok_or_else(unknown)
}

pub(crate) fn check_window(attr: &QueryAttribute, window_days: u32) -> Result<(), ResolutionError> {
    let max = attr.rule.max_window_days().unwrap_or(0);
    if window_days == 0 || window_days > max {
        return Err(ResolutionError::ParameterOutOfRange {
            name: attr.name.clone(),
            parameter: "window_days",
            value: u64::from(window_days),
            min: 1,
            max: u64::from(max),
        });
    }
    Ok(())
}

pub(crate) fn non_empty(parameter: &'static str, value: &str) -> Result<String, ResolutionError> {
    let value = normalize(value);
    if value.is_empty() {
        return Err(ResolutionError::EmptyValue { parameter });
    }
    Ok(value)
}

/// The bound conditions of an audience plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceConditions {
    /// Brand (normalized: trimmed, lower case).
    pub brand: String,
    /// Recency window in days; a purchase exactly `window_days` old qualifies.
    pub window_days: u32,
    /// Home country (normalized).
    pub country: String,
    /// Home city (normalized), for city-level eligibility.
    pub city: Option<String>,
    /// The spatial granularity the plan uses.
    pub spatial_resolution: SpatialResolution,
}

/// Everything the plan hash covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudiencePlanBody {
    /// The registry version the plan was resolved under.
    pub semantic_version: SemanticVersion,
    /// The AND of `purchase_recency` and `singapore_eligibility`.
    pub composition: AttributeComposition,
    /// The bound conditions.
    pub conditions: AudienceConditions,
    /// The usage scope.
    pub usage_scope: UsageScope,
    /// The identity attribute delivered for each selected subject.
    pub delivery_attribute: AttributeName,
}

/// A resolved campaign: what to evaluate, under which version, and its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlanWire")]
pub struct ResolvedAudiencePlan {
    body: AudiencePlanBody,
    plan_hash: Digest,
}

#[derive(Deserialize)]
struct PlanWire {
    body: AudiencePlanBody,
    plan_hash: Digest,
}

impl TryFrom<PlanWire> for ResolvedAudiencePlan {
    type Error = ResolutionError;
    fn try_from(wire: PlanWire) -> Result<Self, ResolutionError> {
        let plan = ResolvedAudiencePlan::seal(wire.body)?;
        if plan.plan_hash != wire.plan_hash {
            return Err(ResolutionError::Encoding(format!(
                "plan_hash {} does not match the plan's content hash {}",
                wire.plan_hash, plan.plan_hash
            )));
        }
        Ok(plan)
    }
}

impl ResolvedAudiencePlan {
    fn seal(body: AudiencePlanBody) -> Result<Self, ResolutionError> {
        let plan_hash = content_hash(AUDIENCE_PLAN_TAG, &body)
            .map_err(|e| ResolutionError::Encoding(e.to_string()))?;
        Ok(Self { body, plan_hash })
    }

    /// Everything the hash covers.
    pub fn body(&self) -> &AudiencePlanBody {
        &self.body
    }
    /// Content hash of the canonical (BCS) encoding of [`Self::body`].
    pub fn plan_hash(&self) -> Digest {
        self.plan_hash
    }
    /// The registry version the plan was resolved under.
    pub fn semantic_version(&self) -> SemanticVersion {
        self.body.semantic_version
    }
    /// The composition.
    pub fn composition(&self) -> &AttributeComposition {
        &self.body.composition
    }
    /// The bound conditions.
    pub fn conditions(&self) -> &AudienceConditions {
        &self.body.conditions
    }
    /// Results describing fewer subjects are suppressed.
    pub fn minimum_result_cardinality(&self) -> u64 {
        self.body.composition.minimum_result_cardinality()
    }
    /// The highest operand privacy class.
    pub fn combined_privacy_class(&self) -> PrivacyClass {
        self.body.composition.combined_privacy_class()
    }
    /// The delivered identity attribute (`contact_handle`).
    pub fn delivery_attribute(&self) -> &AttributeName {
        &self.body.delivery_attribute
    }
    /// The usage scope.
    pub fn usage_scope(&self) -> UsageScope {
        self.body.usage_scope
    }

    /// Whether an audience of `count` subjects must be suppressed.
    pub fn suppress_below_cardinality(&self, count: u64) -> bool {
        self.body.composition.suppress_below_cardinality(count)
    }

    /// `singapore_eligibility`: the subject's home country (and home city when bound)
    /// equals the bound place.
    pub fn geography_matches<F: AudienceFacts + ?Sized>(&self, facts: &F) -> bool {
        let c = &self.body.conditions;
        same_value(facts.home_country(), &c.country)
            && c.city
                .as_deref()
                .is_none_or(|city| same_value(facts.home_city(), city))
    }

    /// `purchase_recency`: the latest purchase of the brand at or before `now_ms` and
    /// at most `window_days` old.
    fn last_recent_purchase_ms<F: AudienceFacts + ?Sized>(
        &self,
        facts: &F,
        now_ms: u64,
    ) -> Option<u64> {
        let c = &self.body.conditions;
        let mut last = None;
        facts.for_each_purchase(&mut |brand, ts, _| {
            if same_value(brand, &c.brand) && within_window(ts, now_ms, c.window_days) {
                last = last.max(Some(ts));
            }
        });
        last
    }

    /// For an eligible subject: the sum (minor units) and number of its qualifying
    /// brand purchases in the window (what a `compute` statistic aggregates);
    /// `None` exactly when the subject is not eligible.
    pub fn qualifying_purchase_totals<F: AudienceFacts + ?Sized>(
        &self,
        facts: &F,
        now_ms: u64,
    ) -> Option<(u64, u64)> {
        if !self.geography_matches(facts) {
            return None;
        }
        let c = &self.body.conditions;
        let (mut sum, mut n) = (0u64, 0u64);
        facts.for_each_purchase(&mut |brand, ts, amount| {
            if same_value(brand, &c.brand) && within_window(ts, now_ms, c.window_days) {
                sum = sum.saturating_add(amount);
                n += 1;
            }
        });
        (n > 0).then_some((sum, n))
    }

    /// The composition evaluated on plaintext facts at task time `now_ms`.
    pub fn is_eligible<F: AudienceFacts + ?Sized>(&self, facts: &F, now_ms: u64) -> bool {
        self.last_qualifying_purchase_ms(facts, now_ms).is_some()
    }

    /// The time of the latest qualifying brand purchase, `Some` exactly when the
    /// subject is eligible (used for recency-weighted selection).
    pub fn last_qualifying_purchase_ms<F: AudienceFacts + ?Sized>(
        &self,
        facts: &F,
        now_ms: u64,
    ) -> Option<u64> {
        if !self.geography_matches(facts) {
            return None;
        }
        self.last_recent_purchase_ms(facts, now_ms)
    }
}

impl SemanticRegistry {
    /// Resolves a campaign intent into a plan, or says which concept blocks it.
    pub fn resolve_audience(
        &self,
        intent: &AudienceIntent,
    ) -> Result<ResolvedAudiencePlan, ResolutionError> {
        self.resolve_membership(CAMPAIGN_AUDIENCE_MEMBERSHIP, intent)
    }

    /// Resolves the population of a `compute` task (a brand's recent customers in a
    /// geography) under the `customer_statistics` composition, whose results are
    /// released only as per-group aggregates. Grouping by home city needs the
    /// geography attribute's granularity to allow city resolution.
    pub fn resolve_customer_statistics(
        &self,
        intent: &AudienceIntent,
    ) -> Result<ResolvedAudiencePlan, ResolutionError> {
        let geography = active_query(self, SINGAPORE_ELIGIBILITY)?;
        let allowed = geography.granularity.spatial;
        if allowed.is_none_or(|finest| SpatialResolution::City > finest) {
            return Err(ResolutionError::GranularityNotAllowed {
                name: geography.name.clone(),
                requested: SpatialResolution::City,
                allowed,
            });
        }
        self.resolve_membership(CUSTOMER_STATISTICS, intent)
    }

    fn resolve_membership(
        &self,
        composition: &str,
        intent: &AudienceIntent,
    ) -> Result<ResolvedAudiencePlan, ResolutionError> {
        let spec = composition_spec(self, composition)?;
        let expected = [PURCHASE_RECENCY, SINGAPORE_ELIGIBILITY];
        if spec.operator != CompositionOperator::And
            || spec
                .operand_attributes
                .iter()
                .map(|a| a.as_str())
                .ne(expected)
        {
            return Err(ResolutionError::UnexpectedComposition {
                name: spec.name.clone(),
                expected: expected.join(", "),
            });
        }
        if !spec.usage_scopes.contains(&intent.usage_scope) {
            return Err(ResolutionError::UsageScopeNotAllowed {
                name: spec.name.clone(),
                scope: intent.usage_scope,
            });
        }
        let recency = active_query(self, PURCHASE_RECENCY)?;
        if !matches!(recency.rule, DerivationRule::Threshold { .. }) {
            return Err(ResolutionError::UnexpectedRule {
                name: recency.name.clone(),
                found: recency.rule.kind(),
                expected: "threshold",
            });
        }
        check_window(recency, intent.window_days)?;
        let geography = active_query(self, SINGAPORE_ELIGIBILITY)?;
        let spatial_resolution = match intent.city {
            Some(_) => SpatialResolution::City,
            None => SpatialResolution::Country,
        };
        let allowed = geography.granularity.spatial;
        if allowed.is_none_or(|finest| spatial_resolution > finest) {
            return Err(ResolutionError::GranularityNotAllowed {
                name: geography.name.clone(),
                requested: spatial_resolution,
                allowed,
            });
        }
        let delivery =
            AttributeName::new(CONTACT_HANDLE).map_err(|_| ResolutionError::UnknownAttribute {
                name: CONTACT_HANDLE.to_owned(),
            })?;
        require_active(self, &delivery)?;
        let composition = self
            .build_composition(spec, &spec.operand_attributes)
            .map_err(ResolutionError::Composition)?;
        let conditions = AudienceConditions {
            brand: non_empty("brand", &intent.brand)?,
            window_days: intent.window_days,
            country: non_empty("country", &intent.country)?,
            city: intent
                .city
                .as_deref()
                .map(|c| non_empty("city", c))
                .transpose()?,
            spatial_resolution,
        };
        ResolvedAudiencePlan::seal(AudiencePlanBody {
            semantic_version: self.semantic_version(),
            composition,
            conditions,
            usage_scope: intent.usage_scope,
            delivery_attribute: delivery,
        })
    }
}
