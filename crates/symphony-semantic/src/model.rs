//! Domains, canonical attributes, privacy classes and the attribute lifecycle.
//!
//! Overview, "Semantic Model": every canonical attribute belongs to exactly one domain,
//! has the lifecycle `proposed → registered → active → deprecated → retired →
//! superseded`, and is versioned under `semantic_version`. Domains form a hierarchy
//! `global → family → concrete → optional sub-domain` and are governance boundaries.

use std::fmt;

use serde::{Deserialize, Serialize};
use symphony_core::SemanticVersion;

/// Longest domain or attribute name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A name that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_LEN`].
    #[error("{kind} name {value:?} must be 1..={MAX_NAME_LEN} bytes long")]
    BadLength {
        /// Which kind of name.
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
    /// A character outside `[a-z0-9_.]`.
    #[error("{kind} name {value:?} has {ch:?}; allowed are a-z 0-9 _ .")]
    BadChar {
        /// Which kind of name.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The offending character.
        ch: char,
    },
}

fn validate_name(kind: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(NameError::BadLength {
            kind,
            value: value.to_owned(),
        });
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.')))
    {
        Some(ch) => Err(NameError::BadChar {
            kind,
            value: value.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

symphony_core::string_newtype!(
    /// A domain's name (`commerce`, `geography`, `identity`, `behavior`, ...).
    DomainId,
    "domain",
    NameError,
    validate_name
);
symphony_core::string_newtype!(
    /// An attribute's name; unique across canonical, query and local attributes of a
    /// registry.
    AttributeName,
    "attribute",
    NameError,
    validate_name
);

/// Where a domain sits in the hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainLevel {
    /// The single root.
    Global,
    /// A family of concrete domains.
    Family,
    /// A concrete domain; attributes live here (or in a sub-domain).
    Concrete,
    /// An optional refinement of a concrete domain.
    SubDomain,
}

impl DomainLevel {
    /// The level a parent must have, or `None` for the root.
    pub fn parent_level(self) -> Option<DomainLevel> {
        match self {
            DomainLevel::Global => None,
            DomainLevel::Family => Some(DomainLevel::Global),
            DomainLevel::Concrete => Some(DomainLevel::Family),
            DomainLevel::SubDomain => Some(DomainLevel::Concrete),
        }
    }

    /// Whether attributes may belong to a domain of this level.
    pub fn holds_attributes(self) -> bool {
        matches!(self, DomainLevel::Concrete | DomainLevel::SubDomain)
    }
}

/// How a domain's attributes may be used across its governance boundary.
///
/// Ordered from most to least permissive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossDomainPolicy {
    /// Other domains may derive from this domain's attributes (each derivation still
    /// needs an explicit governance approval) and compose with them.
    Allowed,
    /// This domain's query attributes may be composed with other domains' as they
    /// are, but no other domain may derive from its attributes.
    ReadOnly,
    /// No cross-domain use at all: neither derivation nor composition.
    Forbidden,
}

impl fmt::Display for CrossDomainPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CrossDomainPolicy::Allowed => "allowed",
            CrossDomainPolicy::ReadOnly => "read_only",
            CrossDomainPolicy::Forbidden => "forbidden",
        })
    }
}

/// The governance boundary of a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceBoundary {
    /// Who approves changes inside the domain (a governance body's name).
    pub steward: String,
    /// How the domain's attributes may be used by other domains.
    pub cross_domain_policy: CrossDomainPolicy,
}

/// A semantic namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The domain's name.
    pub id: DomainId,
    /// Its level in the hierarchy.
    pub level: DomainLevel,
    /// The parent (`None` only for the global domain).
    pub parent: Option<DomainId>,
    /// Its governance boundary.
    pub governance: GovernanceBoundary,
}

/// Disclosure risk of an attribute, ordered from least to most sensitive.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyClass {
    /// Not about any one person (e.g. a country list).
    #[default]
    Public,
    /// About a person but coarse (country of residence, a pseudonym).
    Pseudonymous,
    /// Personal behaviour or location at city level (purchases, home city).
    Personal,
    /// Special-category or fine-grained data (precise amounts per person over time).
    Sensitive,
    /// Directly reaches a person (contact handle).
    Identifying,
}

impl PrivacyClass {
    /// Every class, in order.
    pub const ALL: [PrivacyClass; 5] = [
        PrivacyClass::Public,
        PrivacyClass::Pseudonymous,
        PrivacyClass::Personal,
        PrivacyClass::Sensitive,
        PrivacyClass::Identifying,
    ];
}

/// The type of an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Free text / a label such as a brand.
    Text,
    /// A value from a governed category list.
    Category,
    /// Money in integer minor units with a currency.
    MoneyMinor,
    /// A point in time, ms since the Unix epoch.
    TimestampMs,
    /// An ISO country code.
    CountryCode,
    /// A city name.
    City,
    /// A contact handle (e-mail, phone, app id).
    ContactHandle,
    /// A stable pseudonymous subject id.
    Pseudonym,
    /// True or false.
    Boolean,
    /// A non-negative count.
    Count,
    /// A score in `[0, 1]`.
    Score,
    /// A bucket index.
    Bucket,
    /// A one-way hash.
    Hash,
}

/// State of an attribute in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeState {
    /// Submitted to governance.
    Proposed,
    /// Accepted by governance, not yet usable.
    Registered,
    /// Usable by resolution.
    Active,
    /// Still defined, no longer resolvable for new tasks.
    Deprecated,
    /// Withdrawn from use.
    Retired,
    /// Replaced by a successor. Terminal.
    Superseded,
}

impl AttributeState {
    /// Every state, in lifecycle order.
    pub const ALL: [AttributeState; 6] = [
        AttributeState::Proposed,
        AttributeState::Registered,
        AttributeState::Active,
        AttributeState::Deprecated,
        AttributeState::Retired,
        AttributeState::Superseded,
    ];

    /// The protocol's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeState::Proposed => "proposed",
            AttributeState::Registered => "registered",
            AttributeState::Active => "active",
            AttributeState::Deprecated => "deprecated",
            AttributeState::Retired => "retired",
            AttributeState::Superseded => "superseded",
        }
    }

    /// The state after `event`: the lifecycle is the seed's chain, one step at a time.
    pub fn next(self, event: LifecycleEvent) -> Result<AttributeState, LifecycleError> {
        use AttributeState as S;
        use LifecycleEvent as E;
        match (self, event) {
            (S::Proposed, E::Register) => Ok(S::Registered),
            (S::Registered, E::Activate) => Ok(S::Active),
            (S::Active, E::Deprecate) => Ok(S::Deprecated),
            (S::Deprecated, E::Retire) => Ok(S::Retired),
            (S::Retired, E::Supersede) => Ok(S::Superseded),
            (from, event) => Err(LifecycleError { from, event }),
        }
    }
}

impl fmt::Display for AttributeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What governance does to an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// proposed → registered.
    Register,
    /// registered → active.
    Activate,
    /// active → deprecated.
    Deprecate,
    /// deprecated → retired.
    Retire,
    /// retired → superseded.
    Supersede,
}

impl LifecycleEvent {
    /// Every event.
    pub const ALL: [LifecycleEvent; 5] = [
        LifecycleEvent::Register,
        LifecycleEvent::Activate,
        LifecycleEvent::Deprecate,
        LifecycleEvent::Retire,
        LifecycleEvent::Supersede,
    ];
}

impl fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LifecycleEvent::Register => "register",
            LifecycleEvent::Activate => "activate",
            LifecycleEvent::Deprecate => "deprecate",
            LifecycleEvent::Retire => "retire",
            LifecycleEvent::Supersede => "supersede",
        })
    }
}

/// A refused lifecycle transition; the state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal attribute lifecycle transition: {event} is not allowed in state {from}")]
pub struct LifecycleError {
    /// The current state.
    pub from: AttributeState,
    /// The refused event.
    pub event: LifecycleEvent,
}

/// A protocol-recognized attribute: what a record field means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalAttribute {
    /// The attribute's name.
    pub name: AttributeName,
    /// The one domain it belongs to.
    pub domain: DomainId,
    /// The type of its values.
    pub value_type: ValueType,
    /// Its disclosure risk.
    pub privacy_class: PrivacyClass,
    /// Whether it may be used in a query as it is, without a derivation.
    pub directly_queryable: bool,
    /// Its lifecycle state.
    pub state: AttributeState,
    /// The `semantic_version` at which it was last changed.
    pub semantic_version: SemanticVersion,
    /// What it means, in one sentence.
    pub description: String,
}
