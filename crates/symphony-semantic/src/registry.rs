//! The semantic registry: every domain, attribute and composition under one
//! `semantic_version`.
//!
//! The registry changes only through [`RegistryChange`]s. Each successful
//! [`SemanticRegistry::apply`] bumps `semantic_version` by one;
//! [`SemanticRegistry::apply_batch`] applies several changes atomically under one bump
//! (a failing batch leaves the registry untouched). Attributes carry the version at
//! which they last changed.
//!
//! Resolution rule (chosen; the seeds are silent): new tasks resolve only `active`
//! attributes, so a `deprecated` attribute no longer resolves. A task admitted under
//! an older version is unaffected, because its resolved plan carries the bound
//! conditions and `semantic_version` it was admitted with and is never re-resolved.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use symphony_core::{SemanticVersion, UsageScope};

use crate::composition::{
    AttributeComposition, CompositionError, CompositionOperand, CompositionOperator,
};
use crate::derivation::{LocalAttribute, QueryAttribute, QueryScope};
use crate::model::{
    AttributeName, AttributeState, CanonicalAttribute, CrossDomainPolicy, Domain, DomainId,
    LifecycleError, LifecycleEvent, PrivacyClass,
};

/// A declared composition: which query attributes combine, how, and its suppression
/// threshold. The [`AttributeComposition`] is built from it and the current registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositionSpec {
    /// The composition's name.
    pub name: AttributeName,
    /// AND or OR.
    pub operator: CompositionOperator,
    /// The query attributes it combines.
    pub operand_attributes: Vec<AttributeName>,
    /// Results describing fewer subjects are suppressed.
    pub minimum_result_cardinality: u64,
    /// The usage scopes it may serve.
    pub usage_scopes: BTreeSet<UsageScope>,
}

/// One governed change of the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryChange {
    /// Add a domain under an existing parent of the right level.
    AddDomain(Domain),
    /// Change a domain's cross-domain policy.
    SetCrossDomainPolicy {
        /// The domain.
        domain: DomainId,
        /// The new policy.
        policy: CrossDomainPolicy,
    },
    /// Add a canonical attribute (state `proposed`, or `registered` when promoted).
    AddCanonical(CanonicalAttribute),
    /// Add a query attribute (state `proposed`).
    AddQuery(QueryAttribute),
    /// Record a Vault-local attribute.
    AddLocal(LocalAttribute),
    /// Move a canonical or query attribute along its lifecycle.
    Transition {
        /// The attribute.
        attribute: AttributeName,
        /// The event.
        event: LifecycleEvent,
    },
    /// A registered local attribute becomes canonical under the same name
    /// (`registered`; cross-Vault validation and approval are checked by
    /// [`crate::promotion`]).
    PromoteLocal(CanonicalAttribute),
    /// Declare a composition.
    DeclareComposition(CompositionSpec),
}

/// Why a cross-domain derivation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossDomainRefusal {
    /// The derivation has no governance approval.
    MissingApproval,
    /// The source domain is `read_only`: others may compose with it, not derive from it.
    SourceDomainReadOnly,
    /// The source domain is `forbidden`.
    SourceDomainForbidden,
}

/// A refused registry change; the registry is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The domain exists already.
    #[error("domain {domain} already exists")]
    DuplicateDomain {
        /// The domain.
        domain: DomainId,
    },
    /// The domain does not exist.
    #[error("unknown domain {domain}")]
    UnknownDomain {
        /// The domain.
        domain: DomainId,
    },
    /// The domain's parent is missing or of the wrong level.
    #[error("domain {domain} cannot sit under {parent:?}: {reason}")]
    BadDomainParent {
        /// The domain.
        domain: DomainId,
        /// Its declared parent.
        parent: Option<DomainId>,
        /// Why.
        reason: &'static str,
    },
    /// Attributes live in concrete domains or sub-domains only.
    #[error("domain {domain} is not a concrete domain or sub-domain and holds no attributes")]
    DomainHoldsNoAttributes {
        /// The domain.
        domain: DomainId,
    },
    /// The name is taken.
    #[error("attribute or composition {name} already exists")]
    DuplicateName {
        /// The name.
        name: AttributeName,
    },
    /// No such attribute.
    #[error("unknown attribute {name}")]
    UnknownAttribute {
        /// The name.
        name: AttributeName,
    },
    /// A new attribute must enter the lifecycle at its start.
    #[error("attribute {name} cannot be added in state {state}; new attributes start proposed (registered when promoted)")]
    BadInitialState {
        /// The name.
        name: AttributeName,
        /// Its state.
        state: AttributeState,
    },
    /// A derivation reads an attribute the registry does not know, or a local
    /// attribute from a global query attribute or another Vault.
    #[error("attribute {attribute} derives from {source_attribute}, which is unknown or not visible to it")]
    UnknownSource {
        /// The derived attribute.
        attribute: AttributeName,
        /// The source.
        source_attribute: AttributeName,
    },
    /// A cross-domain derivation was refused.
    #[error("cross-domain derivation refused: {attribute} (domain {domain}) reads {source_attribute} from domain {source_domain}: {refusal:?}")]
    CrossDomainDerivation {
        /// The derived attribute.
        attribute: AttributeName,
        /// Its domain.
        domain: DomainId,
        /// The source attribute.
        source_attribute: AttributeName,
        /// The source's domain.
        source_domain: DomainId,
        /// Why.
        refusal: CrossDomainRefusal,
    },
    /// An illegal lifecycle transition.
    #[error("attribute {attribute}: {error}")]
    Lifecycle {
        /// The attribute.
        attribute: AttributeName,
        /// The refused transition.
        error: LifecycleError,
    },
    /// A query attribute cannot become active while a source is not active.
    #[error(
        "query attribute {attribute} cannot be activated: source {source_attribute} is {state}"
    )]
    InactiveSource {
        /// The query attribute.
        attribute: AttributeName,
        /// The source.
        source_attribute: AttributeName,
        /// The source's state.
        state: AttributeState,
    },
    /// A composition operand is not a query attribute.
    #[error("composition {composition}: operand {operand} is not a query attribute")]
    UnknownOperand {
        /// The composition.
        composition: AttributeName,
        /// The operand.
        operand: AttributeName,
    },
    /// The composition itself is invalid.
    #[error("composition {composition}: {error}")]
    Composition {
        /// The composition.
        composition: AttributeName,
        /// Why.
        error: CompositionError,
    },
    /// A name in a change was invalid.
    #[error(transparent)]
    Name(#[from] crate::model::NameError),
    /// `semantic_version` would overflow.
    #[error("semantic_version overflow")]
    VersionOverflow,
}

/// Every domain, attribute and composition under one `semantic_version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemanticRegistry {
    semantic_version: SemanticVersion,
    domains: BTreeMap<DomainId, Domain>,
    canonical: BTreeMap<AttributeName, CanonicalAttribute>,
    query: BTreeMap<AttributeName, QueryAttribute>,
    local: BTreeMap<AttributeName, LocalAttribute>,
    compositions: BTreeMap<AttributeName, CompositionSpec>,
}

impl SemanticRegistry {
    /// An empty registry at `semantic_version` 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current version.
    pub fn semantic_version(&self) -> SemanticVersion {
        self.semantic_version
    }
    /// A domain.
    pub fn domain(&self, id: &DomainId) -> Option<&Domain> {
        self.domains.get(id)
    }
    /// Every domain, by name.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.values()
    }
    /// A canonical attribute.
    pub fn canonical(&self, name: &AttributeName) -> Option<&CanonicalAttribute> {
        self.canonical.get(name)
    }
    /// Every canonical attribute, by name.
    pub fn canonical_attributes(&self) -> impl Iterator<Item = &CanonicalAttribute> {
        self.canonical.values()
    }
    /// A query attribute.
    pub fn query(&self, name: &AttributeName) -> Option<&QueryAttribute> {
        self.query.get(name)
    }
    /// Every query attribute, by name.
    pub fn query_attributes(&self) -> impl Iterator<Item = &QueryAttribute> {
        self.query.values()
    }
    /// A local attribute.
    pub fn local(&self, name: &AttributeName) -> Option<&LocalAttribute> {
        self.local.get(name)
    }
    /// A declared composition.
    pub fn composition_spec(&self, name: &AttributeName) -> Option<&CompositionSpec> {
        self.compositions.get(name)
    }
    /// Every declared composition, by name.
    pub fn composition_specs(&self) -> impl Iterator<Item = &CompositionSpec> {
        self.compositions.values()
    }

    /// The state of a canonical or query attribute.
    pub fn state_of(&self, name: &AttributeName) -> Option<AttributeState> {
        self.canonical
            .get(name)
            .map(|a| a.state)
            .or_else(|| self.query.get(name).map(|a| a.state))
    }

    /// The domain and privacy class of a canonical, query or (no domain) local attribute.
    fn domain_of(&self, name: &AttributeName) -> Option<&DomainId> {
        self.canonical
            .get(name)
            .map(|a| &a.domain)
            .or_else(|| self.query.get(name).map(|a| &a.domain))
    }

    fn name_taken(&self, name: &AttributeName) -> bool {
        self.canonical.contains_key(name)
            || self.query.contains_key(name)
            || self.local.contains_key(name)
            || self.compositions.contains_key(name)
    }

    /// Applies one change and bumps `semantic_version`; returns the new version.
    pub fn apply(&mut self, change: RegistryChange) -> Result<SemanticVersion, RegistryError> {
        self.apply_batch(vec![change])
    }

    /// Applies changes atomically under one version bump; on error nothing changes.
    pub fn apply_batch(
        &mut self,
        changes: Vec<RegistryChange>,
    ) -> Result<SemanticVersion, RegistryError> {
        let next = self
            .semantic_version
            .0
            .checked_add(1)
            .map(SemanticVersion)
            .ok_or(RegistryError::VersionOverflow)?;
        let mut staged = self.clone();
        staged.semantic_version = next;
        for change in changes {
            staged.apply_one(change)?;
        }
        *self = staged;
        Ok(next)
    }

    fn apply_one(&mut self, change: RegistryChange) -> Result<(), RegistryError> {
        match change {
            RegistryChange::AddDomain(domain) => self.add_domain(domain),
            RegistryChange::SetCrossDomainPolicy { domain, policy } => {
                let entry = self
                    .domains
                    .get_mut(&domain)
                    .ok_or(RegistryError::UnknownDomain { domain })?;
                entry.governance.cross_domain_policy = policy;
                Ok(())
            }
            RegistryChange::AddCanonical(attr) => self.add_canonical(attr),
            RegistryChange::AddQuery(attr) => self.add_query(attr),
            RegistryChange::AddLocal(attr) => {
                if self.name_taken(&attr.name) {
                    return Err(RegistryError::DuplicateName { name: attr.name });
                }
                self.local.insert(attr.name.clone(), attr);
                Ok(())
            }
            RegistryChange::Transition { attribute, event } => self.transition(attribute, event),
            RegistryChange::PromoteLocal(attr) => self.promote_local(attr),
            RegistryChange::DeclareComposition(spec) => {
                if self.name_taken(&spec.name) {
                    return Err(RegistryError::DuplicateName { name: spec.name });
                }
                self.build_composition(&spec, &spec.operand_attributes)?;
                self.compositions.insert(spec.name.clone(), spec);
                Ok(())
            }
        }
    }

    /// A local attribute becomes the canonical attribute of the same name (state
    /// `registered`): the local entry is superseded; a vault-scoped query
    /// attribute that read it now reads the canonical one.
    fn promote_local(&mut self, mut attr: CanonicalAttribute) -> Result<(), RegistryError> {
        let Some(local) = self.local.get(&attr.name) else {
            return Err(RegistryError::UnknownAttribute { name: attr.name });
        };
        if attr.state != AttributeState::Registered || attr.value_type != local.value_type {
            return Err(RegistryError::BadInitialState {
                name: attr.name,
                state: attr.state,
            });
        }
        self.check_attribute_domain(&attr.domain)?;
        self.local.remove(&attr.name);
        attr.semantic_version = self.semantic_version;
        self.canonical.insert(attr.name.clone(), attr);
        Ok(())
    }

    fn add_domain(&mut self, domain: Domain) -> Result<(), RegistryError> {
        if self.domains.contains_key(&domain.id) {
            return Err(RegistryError::DuplicateDomain { domain: domain.id });
        }
        let bad = |reason| RegistryError::BadDomainParent {
            domain: domain.id.clone(),
            parent: domain.parent.clone(),
            reason,
        };
        match (domain.level.parent_level(), &domain.parent) {
            (None, None) => {}
            (None, Some(_)) => return Err(bad("the global domain has no parent")),
            (Some(_), None) => return Err(bad("only the global domain has no parent")),
            (Some(level), Some(parent)) => match self.domains.get(parent) {
                None => return Err(bad("the parent does not exist")),
                Some(p) if p.level != level => {
                    return Err(bad("the parent is not one level up the hierarchy"))
                }
                Some(_) => {}
            },
        }
        self.domains.insert(domain.id.clone(), domain);
        Ok(())
    }

    fn check_attribute_domain(&self, domain: &DomainId) -> Result<(), RegistryError> {
        match self.domains.get(domain) {
            None => Err(RegistryError::UnknownDomain {
                domain: domain.clone(),
            }),
            Some(d) if !d.level.holds_attributes() => Err(RegistryError::DomainHoldsNoAttributes {
                domain: domain.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    fn add_canonical(&mut self, mut attr: CanonicalAttribute) -> Result<(), RegistryError> {
        if self.name_taken(&attr.name) {
            return Err(RegistryError::DuplicateName { name: attr.name });
        }
        if !matches!(
            attr.state,
            AttributeState::Proposed | AttributeState::Registered
        ) {
            return Err(RegistryError::BadInitialState {
                name: attr.name,
                state: attr.state,
            });
        }
        self.check_attribute_domain(&attr.domain)?;
        attr.semantic_version = self.semantic_version;
        self.canonical.insert(attr.name.clone(), attr);
        Ok(())
    }

    fn add_query(&mut self, mut attr: QueryAttribute) -> Result<(), RegistryError> {
        if self.name_taken(&attr.name) {
            return Err(RegistryError::DuplicateName { name: attr.name });
        }
        if attr.state != AttributeState::Proposed {
            return Err(RegistryError::BadInitialState {
                name: attr.name,
                state: attr.state,
            });
        }
        self.check_attribute_domain(&attr.domain)?;
        for source in attr.rule.sources() {
            self.check_source(&attr, source)?;
        }
        attr.semantic_version = self.semantic_version;
        self.query.insert(attr.name.clone(), attr);
        Ok(())
    }

    /// A source must be visible (a canonical attribute, or a local attribute of the
    /// same Vault for a vault-scoped attribute); a source in another domain needs
    /// that domain's policy `allowed` and an explicit governance approval.
    fn check_source(
        &self,
        attr: &QueryAttribute,
        source: &AttributeName,
    ) -> Result<(), RegistryError> {
        let unknown = || RegistryError::UnknownSource {
            attribute: attr.name.clone(),
            source_attribute: source.clone(),
        };
        if let Some(local) = self.local.get(source) {
            return match &attr.scope {
                QueryScope::VaultScoped { vault } if *vault == local.vault => Ok(()),
                _ => Err(unknown()),
            };
        }
        let source_domain = self.canonical.get(source).map(|a| &a.domain);
        let source_domain = source_domain.ok_or_else(unknown)?;
        if *source_domain == attr.domain {
            return Ok(());
        }
        let policy = self
            .domains
            .get(source_domain)
            .map(|d| d.governance.cross_domain_policy)
            .ok_or_else(unknown)?;
        let refusal = match (policy, &attr.cross_domain_approval) {
            (CrossDomainPolicy::Forbidden, _) => Some(CrossDomainRefusal::SourceDomainForbidden),
            (CrossDomainPolicy::ReadOnly, _) => Some(CrossDomainRefusal::SourceDomainReadOnly),
            (CrossDomainPolicy::Allowed, None) => Some(CrossDomainRefusal::MissingApproval),
            (CrossDomainPolicy::Allowed, Some(_)) => None,
        };
        match refusal {
            None => Ok(()),
            Some(refusal) => Err(RegistryError::CrossDomainDerivation {
                attribute: attr.name.clone(),
                domain: attr.domain.clone(),
                source_attribute: source.clone(),
                source_domain: source_domain.clone(),
                refusal,
            }),
        }
    }

    fn transition(
        &mut self,
        attribute: AttributeName,
        event: LifecycleEvent,
    ) -> Result<(), RegistryError> {
        let version = self.semantic_version;
        let lifecycle = |from: AttributeState, attribute: &AttributeName| {
            from.next(event).map_err(|error| RegistryError::Lifecycle {
                attribute: attribute.clone(),
                error,
            })
        };
        if let Some(attr) = self.canonical.get_mut(&attribute) {
            attr.state = lifecycle(attr.state, &attribute)?;
            attr.semantic_version = version;
            return Ok(());
        }
        let attr = self
            .query
            .get(&attribute)
            .ok_or_else(|| RegistryError::UnknownAttribute {
                name: attribute.clone(),
            })?;
        let to = lifecycle(attr.state, &attribute)?;
        if to == AttributeState::Active {
            for source in attr.rule.sources() {
                if let Some(state) = self.state_of(source) {
                    if state != AttributeState::Active {
                        return Err(RegistryError::InactiveSource {
                            attribute: attribute.clone(),
                            source_attribute: source.clone(),
                            state,
                        });
                    }
                }
            }
        }
        if let Some(attr) = self.query.get_mut(&attribute) {
            attr.state = to;
            attr.semantic_version = version;
        }
        Ok(())
    }

    /// Builds the composition `spec` over `operands` (the spec's operands or a subset)
    /// from the current attributes and domain policies.
    pub fn build_composition(
        &self,
        spec: &CompositionSpec,
        operands: &[AttributeName],
    ) -> Result<AttributeComposition, RegistryError> {
        let mut operand_attributes = Vec::with_capacity(operands.len());
        let mut policies = BTreeMap::new();
        for name in operands {
            let attr = self
                .query
                .get(name)
                .ok_or_else(|| RegistryError::UnknownOperand {
                    composition: spec.name.clone(),
                    operand: name.clone(),
                })?;
            if let Some(domain) = self.domains.get(&attr.domain) {
                policies.insert(attr.domain.clone(), domain.governance.cross_domain_policy);
            }
            operand_attributes.push(CompositionOperand {
                attribute: attr.name.clone(),
                domain: attr.domain.clone(),
                privacy_class: attr.privacy_class,
            });
        }
        AttributeComposition::new(
            spec.name.clone(),
            spec.operator,
            operand_attributes,
            spec.minimum_result_cardinality,
            policies,
            spec.usage_scopes.clone(),
        )
        .map_err(|error| RegistryError::Composition {
            composition: spec.name.clone(),
            error,
        })
    }

    /// The privacy class of a canonical or query attribute.
    pub fn privacy_class_of(&self, name: &AttributeName) -> Option<PrivacyClass> {
        self.canonical
            .get(name)
            .map(|a| a.privacy_class)
            .or_else(|| self.query.get(name).map(|a| a.privacy_class))
    }

    /// The domain of a canonical or query attribute.
    pub fn attribute_domain(&self, name: &AttributeName) -> Option<&DomainId> {
        self.domain_of(name)
    }
}
