//! Shared fixtures.
#![allow(dead_code)]

use symphony_core::UsageScope;
use symphony_semantic::facts::DAY_MS;
use symphony_semantic::{AudienceIntent, PurchaseFact, SubjectFacts};

/// 2025-01-31T00:00:00Z.
pub const NOW_MS: u64 = 1_738_281_600_000;

pub fn luckin_intent() -> AudienceIntent {
    AudienceIntent {
        brand: "Luckin".to_owned(),
        country: "SG".to_owned(),
        city: Some("Singapore".to_owned()),
        window_days: 30,
        usage_scope: UsageScope::Marketing,
    }
}

pub fn purchase(brand: &str, category: &str, amount_minor: u64, days_ago: u64) -> PurchaseFact {
    PurchaseFact {
        brand: brand.to_owned(),
        category: category.to_owned(),
        amount_minor,
        currency: "SGD".to_owned(),
        timestamp_ms: NOW_MS - days_ago * DAY_MS,
        store_city: "Singapore".to_owned(),
        store_country: "SG".to_owned(),
    }
}

pub fn subject(country: &str, city: &str, purchases: Vec<PurchaseFact>) -> SubjectFacts {
    SubjectFacts {
        home_city: city.to_owned(),
        home_country: country.to_owned(),
        purchases,
    }
}
