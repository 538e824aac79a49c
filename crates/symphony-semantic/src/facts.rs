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

/// What an audience plan's conditions read of one subject: home place and, per
/// purchase, brand, time and amount. [`SubjectFacts`] implements it; a Vault's
/// scan implements it over borrowed records or over the per-subject summary it
/// keeps, so a slice evaluates a plan without copying a subject's purchases.
pub trait AudienceFacts {
    /// Home country (`home_country`).
    fn home_country(&self) -> &str;
    /// Home city (`home_city`).
    fn home_city(&self) -> &str;
    /// Calls `f(brand, timestamp_ms, amount_minor)` for every purchase, in any order.
    fn for_each_purchase(&self, f: &mut dyn FnMut(&str, u64, u64));
}

impl AudienceFacts for SubjectFacts {
    fn home_country(&self) -> &str {
        &self.home_country
    }
    fn home_city(&self) -> &str {
        &self.home_city
    }
    fn for_each_purchase(&self, f: &mut dyn FnMut(&str, u64, u64)) {
        for p in &self.purchases {
            f(&p.brand, p.timestamp_ms, p.amount_minor);
        }
    }
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
