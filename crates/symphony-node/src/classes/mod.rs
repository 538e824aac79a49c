//! One module per task class: what differs per class behind
//! [`crate::planes::ClassModule`]. `query` (audience selection, seed 000),
//! `compute` (a noisy aggregate under differential privacy), `parse` (one
//! receipt into one Vault, free), `train` (the composite
//! federated-training task of seed 003, see `crate::training`).

pub mod compute;
pub mod parse;
pub mod query;
pub mod train;

use symphony_core::consent::UsageScope;
use symphony_semantic::{AudienceIntent, ResolutionError, ResolvedAudiencePlan};

use crate::NodeError;

/// A brand's recent customers in a place under a usage scope, resolved by one of
/// the registry's membership resolvers; a block names the concept that blocked it.
pub(crate) fn resolve_population(
    resolve: impl FnOnce(&AudienceIntent) -> Result<ResolvedAudiencePlan, ResolutionError>,
    brand: &str,
    country: &str,
    city: &Option<String>,
    window_days: u32,
    usage_scope: UsageScope,
) -> Result<ResolvedAudiencePlan, NodeError> {
    use symphony_semantic::vocabulary::{check_brand, check_country};
    let invalid = |e: symphony_semantic::vocabulary::VocabularyError| {
        NodeError::Refused(format!("invalid spec, nothing reserved or charged: {e}"))
    };
    check_brand("brand", brand).map_err(invalid)?;
    check_country("country", country).map_err(invalid)?;
    if let Some(c) = city {
        if c.trim().is_empty() {
            return Err(NodeError::Refused(
                "invalid spec, nothing reserved or charged: city must not be empty".into(),
            ));
        }
    }
    resolve(&AudienceIntent {
        brand: brand.to_owned(),
        country: country.to_owned(),
        city: city.clone(),
        window_days,
        usage_scope,
    })
    .map_err(|e| NodeError::Refused(format!("semantic resolution blocked the task: {e}")))
}
