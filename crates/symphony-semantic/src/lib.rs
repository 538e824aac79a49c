//! # symphony-semantic
//!
//! The SCP semantic model (overview, "Semantic Model") and semantic resolution:
//!
//! - [`model`]: domains in a hierarchy (global → family → concrete → sub-domain) with
//!   governance boundaries, [`CanonicalAttribute`]s with the lifecycle
//!   `proposed → registered → active → deprecated → retired → superseded`,
//!   ordered [`PrivacyClass`]es.
//! - [`derivation`]: [`QueryAttribute`]s derived by an explicit [`DerivationRule`] with
//!   a structured [`QueryGranularity`]; [`LocalAttribute`]s and their promotion paths.
//! - [`composition`]: [`AttributeComposition`] with a computed
//!   `combined_privacy_class` and a `minimum_result_cardinality`.
//! - [`registry`]: the [`SemanticRegistry`] under a `semantic_version`.
//! - [`catalog`]: the seeded catalog `SemanticRegistry::catalog_v1()`.
//! - [`resolve`]: the audience resolution of a campaign intent into a
//!   [`ResolvedAudiencePlan`] and its pure eligibility evaluator.
//! - [`features`]: the training feature resolution into a [`FeaturePlan`].
//!
//! Architecture Invariant: this crate does no IO and reads no clock or randomness;
//! time (`now_ms`) is an input. The same registry and intent give the same plan bytes
//! and the same `plan_hash`.
//!
//! Architecture Invariant: resolution for a new task only uses `active` attributes;
//! a plan, once resolved, is self-contained (it carries the bound conditions), so a
//! later deprecation does not change how an already admitted task is evaluated.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod catalog;
pub mod composition;
pub mod derivation;
pub mod facts;
pub mod features;
pub mod model;
pub mod promotion;
pub mod registry;
pub mod resolve;
pub mod vocabulary;

pub use composition::{AttributeComposition, CompositionError, CompositionOperator};
pub use derivation::{
    AggregateFunction, CompositeCombinator, DerivationRule, GovernanceApproval, LocalAttribute,
    PromotionError, QueryAttribute, QueryGranularity, QueryScope, SpatialResolution,
    TemporalResolution,
};
pub use facts::{AudienceFacts, PurchaseFact, SubjectFacts};
pub use features::{FeatureIntent, FeaturePlan};

pub use model::{
    AttributeName, AttributeState, CanonicalAttribute, CrossDomainPolicy, Domain, DomainId,
    DomainLevel, GovernanceBoundary, LifecycleError, LifecycleEvent, NameError, PrivacyClass,
    ValueType,
};
pub use promotion::{AttributePromotion, PromotionRefusal, PromotionTarget, PROMOTION_QUORUM};
pub use registry::{RegistryChange, RegistryError, SemanticRegistry};
pub use resolve::{AudienceIntent, ResolutionError, ResolvedAudiencePlan};
