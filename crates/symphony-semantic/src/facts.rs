//! The plaintext facts an enclave evaluates a plan against.
//!
//! These exist only inside a Vault or an attested enclave; a plan's evaluator reads
//! them and returns booleans, timestamps or feature vectors, never the facts.

use serde::{Deserialize, Serialize};

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// One purchase of a data subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseFact {
    /// The brand (`purchase_brand`).
    pub brand: String,
    /// The category (`purchase_category`).
    pub category: String,
    /// The amount in minor units of `currency` (`purchase_amount`).
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// When it happened, ms since the Unix epoch (`purchase_date`).
    pub timestamp_ms: u64,
    /// City of the store (`store_city`).
    pub store_city: String,
    /// Country of the store (`store_country`).
    pub store_country: String,
}

/// What one Vault knows about one data subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubjectFacts {
    /// Home city (`home_city`).
    pub home_city: String,
    /// Home country (`home_country`).
    pub home_country: String,
    /// Purchases, in any order.
    pub purchases: Vec<PurchaseFact>,
}

/// Text values (brand, place, category) compare trimmed and ASCII case-insensitively.
pub(crate) fn same_value(fact: &str, bound: &str) -> bool {
    fact.trim().eq_ignore_ascii_case(bound)
}

/// The canonical form of a bound text value: trimmed, ASCII lower case.
pub(crate) fn normalize(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

/// Whether `timestamp_ms` lies in the window `[now_ms - window_days, now_ms]`: both
/// edges included; purchases after `now_ms` are not yet facts and never count.
pub(crate) fn within_window(timestamp_ms: u64, now_ms: u64, window_days: u32) -> bool {
    timestamp_ms <= now_ms && now_ms - timestamp_ms <= u64::from(window_days) * DAY_MS
}
