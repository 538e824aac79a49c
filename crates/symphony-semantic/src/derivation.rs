//! Query attributes, derivation rules, granularity, local attributes and promotion.
//!
//! Overview, "Three Attribute Layers": a query attribute is a governed projection
//! derived from canonical attributes through an explicit [`DerivationRule`] and
//! carries a structured [`QueryGranularity`] bounding what it reveals. Local
//! attributes live inside one Vault and may be promoted to a vault-scoped query
//! attribute, or to a canonical attribute after cross-Vault validation and governance
//! approval.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use symphony_core::{SemanticVersion, VaultId};

use crate::model::{
    AttributeName, AttributeState, CanonicalAttribute, DomainId, PrivacyClass, ValueType,
};

/// Spatial resolution, ordered from coarse to fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpatialResolution {
    /// Country level.
    Country,
    /// City level.
    City,
}

/// Temporal resolution, ordered from coarse to fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemporalResolution {
    /// Calendar month.
    Month,
    /// Week.
    Week,
    /// Day.
    Day,
}

/// How much a query attribute may reveal. `None` means "this dimension is not
/// revealed at all"; a resolution is the finest one allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QueryGranularity {
    /// Finest spatial resolution allowed.
    pub spatial: Option<SpatialResolution>,
    /// Finest temporal resolution allowed.
    pub temporal: Option<TemporalResolution>,
    /// Width of numeric buckets, in the source's unit, if the value is bucketed.
    pub numeric_bucket_width: Option<u64>,
    /// Fewest subjects a result using this attribute may describe.
    pub cardinality_floor: u64,
}

/// Aggregate functions over a subject's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFunction {
    /// Number of matching records.
    Count,
    /// Sum of the source values.
    Sum,
    /// Mean of the source values.
    Mean,
}

/// How a composite rule combines its sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompositeCombinator {
    /// Share of the filtered (brand) records among the records of the same category:
    /// `count(brand) / count(category of the brand's records)`.
    ShareOfCategory,
}

/// An explicit derivation from source attributes. Parameters that depend on the task
/// (brand, place, window) are bound at resolution; the rule states their limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DerivationRule {
    /// Bucket a numeric source (days since, for a timestamp) by ascending boundaries.
    Bucket {
        /// The bucketed attribute.
        source: AttributeName,
        /// Records are restricted to those whose `filter` equals the bound value.
        filter: Option<AttributeName>,
        /// Inclusive upper bounds of the buckets, strictly ascending.
        boundaries: Vec<u64>,
    },
    /// A keyed one-way hash of the source.
    Hash {
        /// The hashed attribute.
        source: AttributeName,
        /// Label of the key the hash uses (keys live with the Vault, not here).
        key_label: String,
    },
    /// Whether the sources equal values bound at resolution.
    Boolean {
        /// The compared attributes, coarse to fine (e.g. country, then city).
        sources: Vec<AttributeName>,
    },
    /// An aggregate of the source over a window of days.
    Aggregate {
        /// The aggregated attribute (a record's timestamp for a count).
        source: AttributeName,
        /// Records are restricted to those whose `filter` equals the bound value.
        filter: Option<AttributeName>,
        /// The function.
        function: AggregateFunction,
        /// Longest window a task may bind.
        max_window_days: u32,
    },
    /// Whether a timestamp source lies within a window of days before the task time.
    Threshold {
        /// A timestamp attribute.
        source: AttributeName,
        /// Records are restricted to those whose `filter` equals the bound value.
        filter: Option<AttributeName>,
        /// Longest window a task may bind.
        max_window_days: u32,
    },
    /// A combination of several sources.
    Composite {
        /// The combined attributes.
        sources: Vec<AttributeName>,
        /// How they are combined.
        combinator: CompositeCombinator,
        /// Longest window a task may bind.
        max_window_days: u32,
    },
}

impl DerivationRule {
    /// Every attribute the rule reads, in declaration order.
    pub fn sources(&self) -> Vec<&AttributeName> {
        match self {
            DerivationRule::Bucket { source, filter, .. }
            | DerivationRule::Aggregate { source, filter, .. }
            | DerivationRule::Threshold { source, filter, .. } => {
                std::iter::once(source).chain(filter.iter()).collect()
            }
            DerivationRule::Hash { source, .. } => vec![source],
            DerivationRule::Boolean { sources } | DerivationRule::Composite { sources, .. } => {
                sources.iter().collect()
            }
        }
    }

    /// The longest window a task may bind, if the rule takes a window.
    pub fn max_window_days(&self) -> Option<u32> {
        match self {
            DerivationRule::Aggregate {
                max_window_days, ..
            }
            | DerivationRule::Threshold {
                max_window_days, ..
            }
            | DerivationRule::Composite {
                max_window_days, ..
            } => Some(*max_window_days),
            _ => None,
        }
    }

    /// The rule's kind as the seeds name it.
    pub fn kind(&self) -> &'static str {
        match self {
            DerivationRule::Bucket { .. } => "bucket",
            DerivationRule::Hash { .. } => "hash",
            DerivationRule::Boolean { .. } => "boolean",
            DerivationRule::Aggregate { .. } => "aggregate",
            DerivationRule::Threshold { .. } => "threshold",
            DerivationRule::Composite { .. } => "composite",
        }
    }
}

/// A governance approval (a passed proposal), e.g. for a cross-domain derivation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GovernanceApproval {
    /// The proposal that approved it.
    pub proposal_id: String,
    /// The `semantic_version` under which it was approved.
    pub approved_at: SemanticVersion,
}

/// Where a query attribute may be used.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryScope {
    /// Protocol-wide.
    Global,
    /// Only inside one Vault (a promoted local attribute).
    VaultScoped {
        /// The Vault.
        vault: VaultId,
    },
}

/// A governed projection for retrieval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryAttribute {
    /// The attribute's name.
    pub name: AttributeName,
    /// The domain it belongs to.
    pub domain: DomainId,
    /// The type of its values.
    pub value_type: ValueType,
    /// Its disclosure risk (of the projection, not of its sources).
    pub privacy_class: PrivacyClass,
    /// How it is derived.
    pub rule: DerivationRule,
    /// How much it may reveal.
    pub granularity: QueryGranularity,
    /// Where it may be used.
    pub scope: QueryScope,
    /// Governance approval, required when a source lies in another domain.
    pub cross_domain_approval: Option<GovernanceApproval>,
    /// Its lifecycle state.
    pub state: AttributeState,
    /// The `semantic_version` at which it was last changed.
    pub semantic_version: SemanticVersion,
    /// What it means, in one sentence.
    pub description: String,
}

/// An emerging attribute that exists inside one Vault only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAttribute {
    /// The attribute's name.
    pub name: AttributeName,
    /// The Vault it lives in.
    pub vault: VaultId,
    /// The type of its values.
    pub value_type: ValueType,
    /// Its disclosure risk.
    pub privacy_class: PrivacyClass,
    /// What it means, in one sentence.
    pub description: String,
}

/// A refused promotion of a local attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PromotionError {
    /// The derivation rule does not read the local attribute.
    #[error("the derivation rule of the promoted attribute does not read local attribute {local}")]
    RuleDoesNotReadLocal {
        /// The local attribute.
        local: AttributeName,
    },
    /// Canonical promotion needs a passed governance proposal.
    #[error("promoting local attribute {local} to canonical needs a governance approval")]
    MissingApproval {
        /// The local attribute.
        local: AttributeName,
    },
    /// Canonical promotion needs validation in enough distinct Vaults, at least one
    /// besides the origin.
    #[error("local attribute {local} was validated in {validated} Vault(s) (other than its origin: {others}); canonical promotion needs at least {required} including one other than the origin")]
    InsufficientValidation {
        /// The local attribute.
        local: AttributeName,
        /// Distinct Vaults that validated it.
        validated: usize,
        /// How many of them are not the origin Vault.
        others: usize,
        /// Required number of Vaults.
        required: usize,
    },
}

/// The fewest Vaults that must validate a local attribute before canonical promotion.
pub const MIN_VALIDATING_VAULTS: usize = 2;

impl LocalAttribute {
    /// Promotes to a query attribute usable only inside the local attribute's Vault.
    /// The result is `proposed`; the registry governs the rest of its lifecycle.
    pub fn promote_to_vault_scoped_query(
        &self,
        domain: DomainId,
        rule: DerivationRule,
        granularity: QueryGranularity,
        value_type: ValueType,
        description: impl Into<String>,
    ) -> Result<QueryAttribute, PromotionError> {
        if !rule.sources().contains(&&self.name) {
            return Err(PromotionError::RuleDoesNotReadLocal {
                local: self.name.clone(),
            });
        }
        Ok(QueryAttribute {
            name: self.name.clone(),
            domain,
            value_type,
            privacy_class: self.privacy_class,
            rule,
            granularity,
            scope: QueryScope::VaultScoped {
                vault: self.vault.clone(),
            },
            cross_domain_approval: None,
            state: AttributeState::Proposed,
            semantic_version: SemanticVersion::default(),
            description: description.into(),
        })
    }

    /// Promotes to a canonical attribute after cross-Vault validation and governance
    /// approval. The result is `registered` (governance accepted it); activation is a
    /// separate registry change.
    pub fn promote_to_canonical(
        &self,
        domain: DomainId,
        validated_in: &BTreeSet<VaultId>,
        approval: Option<&GovernanceApproval>,
        directly_queryable: bool,
    ) -> Result<CanonicalAttribute, PromotionError> {
        let others = validated_in.iter().filter(|v| **v != self.vault).count();
        if validated_in.len() < MIN_VALIDATING_VAULTS || others == 0 {
            return Err(PromotionError::InsufficientValidation {
                local: self.name.clone(),
                validated: validated_in.len(),
                others,
                required: MIN_VALIDATING_VAULTS,
            });
        }
        let approval = approval.ok_or_else(|| PromotionError::MissingApproval {
            local: self.name.clone(),
        })?;
        Ok(CanonicalAttribute {
            name: self.name.clone(),
            domain,
            value_type: self.value_type,
            privacy_class: self.privacy_class,
            directly_queryable,
            state: AttributeState::Registered,
            semantic_version: approval.approved_at,
            description: self.description.clone(),
        })
    }
}
