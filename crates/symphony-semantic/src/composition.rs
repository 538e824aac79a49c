//! Attribute composition (overview, "Attribute Composition").
//!
//! Combining attributes can narrow a result set enough to compromise anonymity, so a
//! composition is a protocol object: it declares its operator, operands, the
//! `minimum_result_cardinality` below which results are suppressed, and the
//! `cross_domain_policy` of every domain it touches. Its `combined_privacy_class` is
//! computed as the highest operand class, never taken from input: the fields are
//! private, and deserialization recomputes and checks it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use symphony_core::UsageScope;

use crate::model::{AttributeName, CrossDomainPolicy, DomainId, PrivacyClass};

/// How operands combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompositionOperator {
    /// Every operand holds.
    And,
    /// At least one operand holds.
    Or,
}

/// One operand: a query attribute with the facts a composition needs about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CompositionOperand {
    /// The query attribute.
    pub attribute: AttributeName,
    /// Its domain.
    pub domain: DomainId,
    /// Its privacy class.
    pub privacy_class: PrivacyClass,
}

/// A refused composition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompositionError {
    /// No operands.
    #[error("a composition needs at least one operand")]
    NoOperands,
    /// The same attribute twice.
    #[error("operand {attribute} appears more than once")]
    DuplicateOperand {
        /// The repeated attribute.
        attribute: AttributeName,
    },
    /// Zero would suppress nothing.
    #[error("minimum_result_cardinality must be at least 1")]
    ZeroMinimumCardinality,
    /// A cross-domain composition touches a domain whose policy is `forbidden`.
    #[error("cross-domain composition refused: domain {domain} has cross_domain_policy forbidden (operand {attribute})")]
    CrossDomainForbidden {
        /// The domain.
        domain: DomainId,
        /// The operand from that domain.
        attribute: AttributeName,
    },
    /// A domain of an operand has no declared policy.
    #[error(
        "cross-domain composition refused: no cross_domain_policy declared for domain {domain}"
    )]
    MissingDomainPolicy {
        /// The domain.
        domain: DomainId,
    },
    /// Deserialized input claimed a different combined class than its operands give.
    #[error(
        "combined_privacy_class {claimed:?} does not match the highest operand class {computed:?}"
    )]
    CombinedClassMismatch {
        /// What the input said.
        claimed: PrivacyClass,
        /// What the operands give.
        computed: PrivacyClass,
    },
}

/// A validated composition of query attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CompositionWire")]
pub struct AttributeComposition {
    name: AttributeName,
    operator: CompositionOperator,
    operand_attributes: Vec<CompositionOperand>,
    combined_privacy_class: PrivacyClass,
    minimum_result_cardinality: u64,
    cross_domain_policy: BTreeMap<DomainId, CrossDomainPolicy>,
    usage_scopes: BTreeSet<UsageScope>,
}

/// The serialized form, validated on the way in.
#[derive(Deserialize)]
struct CompositionWire {
    name: AttributeName,
    operator: CompositionOperator,
    operand_attributes: Vec<CompositionOperand>,
    combined_privacy_class: PrivacyClass,
    minimum_result_cardinality: u64,
    cross_domain_policy: BTreeMap<DomainId, CrossDomainPolicy>,
    usage_scopes: BTreeSet<UsageScope>,
}

impl TryFrom<CompositionWire> for AttributeComposition {
    type Error = CompositionError;
    fn try_from(wire: CompositionWire) -> Result<Self, CompositionError> {
        let built = AttributeComposition::new(
            wire.name,
            wire.operator,
            wire.operand_attributes,
            wire.minimum_result_cardinality,
            wire.cross_domain_policy,
            wire.usage_scopes,
        )?;
        if built.combined_privacy_class != wire.combined_privacy_class {
            return Err(CompositionError::CombinedClassMismatch {
                claimed: wire.combined_privacy_class,
                computed: built.combined_privacy_class,
            });
        }
        Ok(built)
    }
}

/// The highest class among `classes` (`Public` for none).
pub fn combined_privacy_class(classes: impl IntoIterator<Item = PrivacyClass>) -> PrivacyClass {
    classes.into_iter().max().unwrap_or_default()
}

impl AttributeComposition {
    /// Validates a composition and computes its `combined_privacy_class`.
    ///
    /// `cross_domain_policy` holds each operand domain's policy (the registry fills it
    /// from the domains' governance boundaries). When the operands span more than one
    /// domain, every operand domain needs a declared policy and none may be
    /// `forbidden`; `read_only` and `allowed` domains may be composed.
    pub fn new(
        name: AttributeName,
        operator: CompositionOperator,
        operand_attributes: Vec<CompositionOperand>,
        minimum_result_cardinality: u64,
        cross_domain_policy: BTreeMap<DomainId, CrossDomainPolicy>,
        usage_scopes: BTreeSet<UsageScope>,
    ) -> Result<Self, CompositionError> {
        if operand_attributes.is_empty() {
            return Err(CompositionError::NoOperands);
        }
        if minimum_result_cardinality == 0 {
            return Err(CompositionError::ZeroMinimumCardinality);
        }
        let mut seen = BTreeSet::new();
        for operand in &operand_attributes {
            if !seen.insert(&operand.attribute) {
                return Err(CompositionError::DuplicateOperand {
                    attribute: operand.attribute.clone(),
                });
            }
        }
        let domains: BTreeSet<&DomainId> = operand_attributes.iter().map(|o| &o.domain).collect();
        if domains.len() > 1 {
            for operand in &operand_attributes {
                match cross_domain_policy.get(&operand.domain) {
                    None => {
                        return Err(CompositionError::MissingDomainPolicy {
                            domain: operand.domain.clone(),
                        })
                    }
                    Some(CrossDomainPolicy::Forbidden) => {
                        return Err(CompositionError::CrossDomainForbidden {
                            domain: operand.domain.clone(),
                            attribute: operand.attribute.clone(),
                        })
                    }
                    Some(CrossDomainPolicy::Allowed | CrossDomainPolicy::ReadOnly) => {}
                }
            }
        }
        let combined = combined_privacy_class(operand_attributes.iter().map(|o| o.privacy_class));
        Ok(Self {
            name,
            operator,
            operand_attributes,
            combined_privacy_class: combined,
            minimum_result_cardinality,
            cross_domain_policy,
            usage_scopes,
        })
    }

    /// The composition's name.
    pub fn name(&self) -> &AttributeName {
        &self.name
    }
    /// AND or OR.
    pub fn operator(&self) -> CompositionOperator {
        self.operator
    }
    /// The operands, in declaration order.
    pub fn operand_attributes(&self) -> &[CompositionOperand] {
        &self.operand_attributes
    }
    /// The highest operand privacy class.
    pub fn combined_privacy_class(&self) -> PrivacyClass {
        self.combined_privacy_class
    }
    /// Results describing fewer subjects than this are suppressed.
    pub fn minimum_result_cardinality(&self) -> u64 {
        self.minimum_result_cardinality
    }
    /// The policy of every domain the composition touches.
    pub fn cross_domain_policy(&self) -> &BTreeMap<DomainId, CrossDomainPolicy> {
        &self.cross_domain_policy
    }
    /// The usage scopes the composition may serve.
    pub fn usage_scopes(&self) -> &BTreeSet<UsageScope> {
        &self.usage_scopes
    }
    /// Whether the operands span more than one domain.
    pub fn is_cross_domain(&self) -> bool {
        let first = self.operand_attributes.first().map(|o| &o.domain);
        self.operand_attributes
            .iter()
            .any(|o| Some(&o.domain) != first)
    }
    /// Whether a result of `count` subjects must be suppressed.
    pub fn suppress_below_cardinality(&self, count: u64) -> bool {
        count < self.minimum_result_cardinality
    }
}
