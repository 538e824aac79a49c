//! Shared builders of the embedded-network tests: the Luckin campaign and a small
//! network for one advertiser.
#![allow(dead_code)]

use std::path::Path;

use symphony_core::consent::UsageScope;
use symphony_node::aggregation::SelectionPolicy;
use symphony_node::network::{CampaignSpec, EmbeddedNetwork, NetworkParams, Quiet};

/// The injected "now" of the test networks.
pub const NOW_MS: u64 = 1_795_219_200_000;
/// The advertiser of [`luckin`].
pub const ADVERTISER: &str = "advertiser:luckin";

/// The Luckin Coffee campaign in Singapore, last 30 days, cap 5,000.
pub fn luckin() -> CampaignSpec {
    CampaignSpec {
        advertiser: ADVERTISER.into(),
        brand: "Luckin Coffee".into(),
        country: "SG".into(),
        city: None,
        window_days: 30,
        audience_cap: 5_000,
        selection: SelectionPolicy::RandomSampling,
        usage_scope: UsageScope::Marketing,
        selection_seed: 7,
        minimum_vault_quorum: None,
    }
}

/// A network of `subjects` people (ten records each) in `vaults` Vaults for the
/// advertiser of [`luckin`].
pub fn network(dir: &Path, seed: u64, subjects: u64, vaults: u32) -> EmbeddedNetwork {
    let params = NetworkParams {
        subjects,
        vaults,
        records: subjects * 10,
        seed,
        now_ms: NOW_MS,
    };
    EmbeddedNetwork::build(dir, &params, &[ADVERTISER], &mut Quiet).unwrap()
}
