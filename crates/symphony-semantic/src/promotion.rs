//! Attribute promotion as governance proposes it (seed 002, "Semantic Model":
//! local attributes "may be promoted to vault-scoped query attributes (for local
//! use) or to full canonical attributes (after cross-Vault validation and
//! governance approval)").
//!
//! An [`AttributePromotion`] is one step up the ladder, checked against the
//! registry it would change ([`AttributePromotion::changes`]) and applied as one
//! registry batch (one `semantic_version` bump):
//!
//! * **vault-scoped** ([`PromotionTarget::VaultScopedQuery`]): the Vault's local
//!   attribute enters the registry (unless it is there already, identical) with a
//!   query attribute usable only inside that Vault, whose rule must read the local
//!   attribute; the query attribute is activated.
//! * **canonical** ([`PromotionTarget::Canonical`]): a local attribute in the
//!   registry becomes the canonical attribute of the same name and is activated.
//!   Cross-Vault validation: the proposal lists, per Vault, the rule by which that
//!   Vault derives the attribute from its records; at least
//!   [`PROMOTION_QUORUM`] Vaults, one of them not the origin, and every rule the
//!   same (a different rule in one Vault means the Vaults do not agree on what the
//!   attribute is).
//!
//! Tasks resolve against the registry version of their admission, so an enacted
//! promotion changes only later admissions (see `registry.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use symphony_core::{SemanticVersion, VaultId};

use crate::derivation::{
    DerivationRule, GovernanceApproval, LocalAttribute, QueryAttribute, QueryGranularity,
    QueryScope, MIN_VALIDATING_VAULTS,
};
use crate::model::{AttributeName, AttributeState, DomainId, LifecycleEvent, ValueType};
use crate::registry::{RegistryChange, RegistryError, SemanticRegistry};

/// Vaults that must derive a local attribute, by one rule, before it becomes
/// canonical (the seeds name no number: two, one of them not the origin, as
/// [`MIN_VALIDATING_VAULTS`]).
pub const PROMOTION_QUORUM: usize = MIN_VALIDATING_VAULTS;

/// Where a promotion takes a local attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionTarget {
    /// A query attribute usable only inside the local attribute's Vault.
    VaultScopedQuery {
        /// The query attribute's name.
        name: AttributeName,
        /// Its domain.
        domain: DomainId,
        /// How it is derived (must read the local attribute).
        rule: DerivationRule,
        /// How much it may reveal.
        granularity: QueryGranularity,
        /// The type of its values.
        value_type: ValueType,
        /// What it means, in one sentence.
        description: String,
    },
    /// The canonical attribute of the local attribute's name.
    Canonical {
        /// Its domain.
        domain: DomainId,
        /// Whether queries may use it directly.
        directly_queryable: bool,
        /// Per Vault, the rule by which that Vault derives the attribute from its
        /// records (the cross-Vault validation).
        derivations: BTreeMap<VaultId, DerivationRule>,
    },
}

/// One promotion proposal's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributePromotion {
    /// The local attribute (as its Vault declares it).
    pub local: LocalAttribute,
    /// Where it goes.
    pub target: PromotionTarget,
}

/// A refused promotion proposal: what is wrong, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PromotionRefusal {
    /// The registry refuses the change.
    #[error("promotion of {local}: {error}")]
    Registry {
        /// The local attribute.
        local: AttributeName,
        /// Why.
        error: Box<RegistryError>,
    },
    /// The vault-scoped rule does not read the local attribute.
    #[error("promotion of {local}: the rule of {name} does not read {local}")]
    RuleDoesNotReadLocal {
        /// The local attribute.
        local: AttributeName,
        /// The query attribute.
        name: AttributeName,
    },
    /// The local attribute in the registry differs from the proposal's.
    #[error("promotion of {local}: the registry holds {local} of {registered}, the proposal names {proposed}")]
    LocalMismatch {
        /// The local attribute.
        local: AttributeName,
        /// Its Vault in the registry.
        registered: VaultId,
        /// The proposal's Vault.
        proposed: VaultId,
    },
    /// Canonical promotion of an attribute that is not a registered local one.
    #[error("promotion of {local} to canonical: it is not a local attribute in the registry (promote it to a vault-scoped query attribute first)")]
    NotLocal {
        /// The local attribute.
        local: AttributeName,
    },
    /// Too few Vaults derive it.
    #[error("promotion of {local} to canonical: derivable in {validated} Vault(s), {others} besides its origin {origin}; needs at least {required}, one besides the origin")]
    TooFewVaults {
        /// The local attribute.
        local: AttributeName,
        /// Vaults listed.
        validated: usize,
        /// Of them, not the origin.
        others: usize,
        /// The origin Vault.
        origin: VaultId,
        /// The quorum.
        required: usize,
    },
    /// The Vaults derive it by different rules.
    #[error("promotion of {local} to canonical: the Vaults derive it by different rules ({vault} differs from {first})")]
    InconsistentRules {
        /// The local attribute.
        local: AttributeName,
        /// The first Vault listed.
        first: VaultId,
        /// A Vault whose rule differs.
        vault: VaultId,
    },
}

impl AttributePromotion {
    /// Short description for listings.
    pub fn summary(&self) -> String {
        match &self.target {
            PromotionTarget::VaultScopedQuery { name, .. } => format!(
                "local {} of {} → vault-scoped query attribute {name}",
                self.local.name, self.local.vault
            ),
            PromotionTarget::Canonical { derivations, .. } => format!(
                "local {} of {} → canonical (derivable in {} Vaults)",
                self.local.name,
                self.local.vault,
                derivations.len()
            ),
        }
    }

    /// The checks that need no registry (cross-Vault validation, the rule reads
    /// the local attribute).
    pub fn check(&self) -> Result<(), PromotionRefusal> {
        let local = &self.local.name;
        match &self.target {
            PromotionTarget::VaultScopedQuery { name, rule, .. } => {
                if !rule.sources().contains(&local) {
                    return Err(PromotionRefusal::RuleDoesNotReadLocal {
                        local: local.clone(),
                        name: name.clone(),
                    });
                }
            }
            PromotionTarget::Canonical { derivations, .. } => {
                let vaults: BTreeSet<&VaultId> = derivations.keys().collect();
                let others = vaults.iter().filter(|v| ***v != self.local.vault).count();
                if vaults.len() < PROMOTION_QUORUM || others == 0 {
                    return Err(PromotionRefusal::TooFewVaults {
                        local: local.clone(),
                        validated: vaults.len(),
                        others,
                        origin: self.local.vault.clone(),
                        required: PROMOTION_QUORUM,
                    });
                }
                let mut it = derivations.iter();
                if let Some((first, rule)) = it.next() {
                    if let Some((vault, _)) = it.find(|(_, r)| *r != rule) {
                        return Err(PromotionRefusal::InconsistentRules {
                            local: local.clone(),
                            first: first.clone(),
                            vault: vault.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The registry changes that enact it on `registry`, approved by proposal
    /// `proposal_id` (checked: [`Self::check`], and the batch applies).
    pub fn changes(
        &self,
        registry: &SemanticRegistry,
        proposal_id: &str,
    ) -> Result<Vec<RegistryChange>, PromotionRefusal> {
        self.check()?;
        let local = &self.local;
        let registered = registry.local(&local.name);
        if let Some(r) = registered {
            if r.vault != local.vault {
                return Err(PromotionRefusal::LocalMismatch {
                    local: local.name.clone(),
                    registered: r.vault.clone(),
                    proposed: local.vault.clone(),
                });
            }
        }
        let changes = match &self.target {
            PromotionTarget::VaultScopedQuery {
                name,
                domain,
                rule,
                granularity,
                value_type,
                description,
            } => {
                let mut changes = Vec::new();
                if registered.is_none() {
                    changes.push(RegistryChange::AddLocal(local.clone()));
                }
                changes.push(RegistryChange::AddQuery(QueryAttribute {
                    name: name.clone(),
                    domain: domain.clone(),
                    value_type: *value_type,
                    privacy_class: local.privacy_class,
                    rule: rule.clone(),
                    granularity: granularity.clone(),
                    scope: QueryScope::VaultScoped {
                        vault: local.vault.clone(),
                    },
                    cross_domain_approval: None,
                    state: AttributeState::Proposed,
                    semantic_version: SemanticVersion::default(),
                    description: description.clone(),
                }));
                changes.push(RegistryChange::Transition {
                    attribute: name.clone(),
                    event: LifecycleEvent::Register,
                });
                changes.push(RegistryChange::Transition {
                    attribute: name.clone(),
                    event: LifecycleEvent::Activate,
                });
                changes
            }
            PromotionTarget::Canonical {
                domain,
                directly_queryable,
                derivations,
            } => {
                let Some(registered) = registered else {
                    return Err(PromotionRefusal::NotLocal {
                        local: local.name.clone(),
                    });
                };
                let validated: BTreeSet<VaultId> = derivations.keys().cloned().collect();
                let approval = GovernanceApproval {
                    proposal_id: proposal_id.to_owned(),
                    approved_at: SemanticVersion(registry.semantic_version().0.saturating_add(1)),
                };
                let canonical = registered
                    .promote_to_canonical(
                        domain.clone(),
                        &validated,
                        Some(&approval),
                        *directly_queryable,
                    )
                    .map_err(|_| PromotionRefusal::TooFewVaults {
                        local: local.name.clone(),
                        validated: validated.len(),
                        others: validated.iter().filter(|v| **v != local.vault).count(),
                        origin: local.vault.clone(),
                        required: PROMOTION_QUORUM,
                    })?;
                vec![
                    RegistryChange::PromoteLocal(canonical),
                    RegistryChange::Transition {
                        attribute: local.name.clone(),
                        event: LifecycleEvent::Activate,
                    },
                ]
            }
        };
        // The batch must apply (a dry run on a copy).
        registry
            .clone()
            .apply_batch(changes.clone())
            .map_err(|error| PromotionRefusal::Registry {
                local: local.name.clone(),
                error: Box::new(error),
            })?;
        Ok(changes)
    }

    /// Enacts it on `registry` (one version bump); returns the new version.
    pub fn enact(
        &self,
        registry: &mut SemanticRegistry,
        proposal_id: &str,
    ) -> Result<SemanticVersion, PromotionRefusal> {
        let changes = self.changes(registry, proposal_id)?;
        registry
            .apply_batch(changes)
            .map_err(|error| PromotionRefusal::Registry {
                local: self.local.name.clone(),
                error: Box::new(error),
            })
    }
}
