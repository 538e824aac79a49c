//! Exact proportional splitting by the largest-remainder (Hamilton) method.
//!
//! Every split in this crate — fee to classes, class share to recipients, Vault
//! contributor share to producers — goes through [`split_by_weights`], so every one
//! sums exactly to its amount. Each part is `⌊amount × w / W⌋` or one more: it is
//! within one base unit of the exact proportional value. The leftover units go to
//! the largest fractional remainders; ties go to the smaller key, so the result does
//! not depend on input order.

use std::collections::BTreeSet;
use std::fmt::Display;

use crate::error::EconomicsError;

/// Splits `amount` in proportion to `weights`; returns `(key, part)` sorted by key.
///
/// Errors: a key appears twice; all weights are zero while `amount > 0`.
/// Invariant (checked): the parts sum to `amount`.
pub fn split_by_weights<K: Ord + Clone + Display>(
    amount: u64,
    weights: &[(K, u64)],
    what: &'static str,
) -> Result<Vec<(K, u64)>, EconomicsError> {
    let mut seen = BTreeSet::new();
    for (k, _) in weights {
        if !seen.insert(k) {
            return Err(EconomicsError::DuplicateRecipient {
                what,
                recipient: k.to_string(),
            });
        }
    }
    // Σ of at most usize::MAX values below 2^64 fits in u128.
    let total_weight: u128 = weights.iter().map(|(_, w)| u128::from(*w)).sum();
    if total_weight == 0 {
        if amount == 0 {
            let mut zeros: Vec<(K, u64)> = weights.iter().map(|(k, _)| (k.clone(), 0)).collect();
            zeros.sort_by(|a, b| a.0.cmp(&b.0));
            return Ok(zeros);
        }
        return Err(EconomicsError::ZeroTotalWeight { amount });
    }
    // amount × w < 2^128, so the exact products fit.
    let mut rows: Vec<(K, u64, u128)> = Vec::with_capacity(weights.len());
    let mut floor_sum: u128 = 0;
    for (k, w) in weights {
        let exact = u128::from(amount) * u128::from(*w);
        let floor = exact / total_weight;
        floor_sum += floor;
        // floor ≤ amount because w ≤ W.
        let floor = u64::try_from(floor).map_err(|_| EconomicsError::Overflow { what })?;
        rows.push((k.clone(), floor, exact % total_weight));
    }
    let mut leftover = u128::from(amount) - floor_sum; // < number of keys
    rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    for row in rows.iter_mut() {
        if leftover == 0 {
            break;
        }
        row.1 += 1; // row.1 < amount here, since leftover > 0 means some floor fell short
        leftover -= 1;
    }
    let mut parts: Vec<(K, u64)> = rows.into_iter().map(|(k, p, _)| (k, p)).collect();
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let actual: u128 = parts.iter().map(|(_, p)| u128::from(*p)).sum();
    if actual != u128::from(amount) {
        return Err(EconomicsError::SumMismatch {
            what,
            expected: amount,
            actual,
        });
    }
    Ok(parts)
}
