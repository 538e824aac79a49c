//! Exact proportional splitting by the largest-remainder (Hamilton) method.
//!
//! Every split in this crate — fee to classes, class share to recipients, Vault
//! contributor share to producers — goes through [`split_by_weights`], so every one
//! sums exactly to its amount. Each part is `⌊amount × w / W⌋` or one more: it is
//! within one base unit of the exact proportional value. The leftover units go to
//! the largest fractional remainders; ties go to the smaller key, so the result does
//! not depend on input order.

use std::cmp::Ordering;
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
    let parts = split_indexed(
        amount,
        weights.len(),
        |i| &weights[i].0,
        |i| weights[i].1,
        what,
    )?;
    Ok(parts
        .into_iter()
        .map(|(i, p)| (weights[i].0.clone(), p))
        .collect())
}

/// [`split_by_weights`] over `n` items given by index (`key(i)`, `weight(i)`),
/// without copying a key: `(index, part)` in key order. The same parts, errors and
/// invariant as [`split_by_weights`].
pub(crate) fn split_indexed<'a, K: Ord + Display + 'a>(
    amount: u64,
    n: usize,
    key: impl Fn(usize) -> &'a K,
    weight: impl Fn(usize) -> u64,
    what: &'static str,
) -> Result<Vec<(usize, u64)>, EconomicsError> {
    // Key order (a stable sort: linear on input already in key order).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| key(a).cmp(key(b)));
    if order.windows(2).any(|w| key(w[0]) == key(w[1])) {
        // Name the duplicate the way a scan in input order meets it.
        let mut seen = BTreeSet::new();
        for i in 0..n {
            if !seen.insert(key(i)) {
                return Err(EconomicsError::DuplicateRecipient {
                    what,
                    recipient: key(i).to_string(),
                });
            }
        }
    }
    // Σ of at most usize::MAX values below 2^64 fits in u128.
    let total_weight: u128 = (0..n).map(|i| u128::from(weight(i))).sum();
    if total_weight == 0 {
        if amount == 0 {
            return Ok(order.into_iter().map(|i| (i, 0)).collect());
        }
        return Err(EconomicsError::ZeroTotalWeight { amount });
    }
    // amount × w < 2^128, so the exact products fit. `parts[p]` and `rems[p]` are
    // those of the p-th key.
    let mut parts: Vec<(usize, u64)> = Vec::with_capacity(n);
    let mut rems: Vec<(u128, usize)> = Vec::with_capacity(n);
    let mut floor_sum: u128 = 0;
    for (p, &i) in order.iter().enumerate() {
        let exact = u128::from(amount) * u128::from(weight(i));
        let floor = exact / total_weight;
        let rem = exact - floor * total_weight;
        floor_sum += floor;
        // floor ≤ amount because w ≤ W.
        let floor = u64::try_from(floor).map_err(|_| EconomicsError::Overflow { what })?;
        parts.push((i, floor));
        rems.push((rem, p));
    }
    let leftover = u128::from(amount) - floor_sum; // < number of keys
                                                   // The leftover units go to the largest remainders, ties to the smaller key: the
                                                   // first `leftover` rows in (remainder desc, key asc) order, picked without
                                                   // sorting every row.
    let leftover = usize::try_from(leftover).map_err(|_| EconomicsError::Overflow { what })?;
    let by_remainder = |a: &(u128, usize), b: &(u128, usize)| -> Ordering {
        b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1))
    };
    let take = leftover.min(rems.len());
    if take > 0 {
        if take < rems.len() {
            rems.select_nth_unstable_by(take - 1, by_remainder);
        }
        for &(_, p) in &rems[..take] {
            parts[p].1 += 1; // < amount here, since leftover > 0 means some floor fell short
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every row sorted by (remainder desc, key asc), the leftover
    /// units to the first rows, then sorted by key.
    fn reference(amount: u64, weights: &[(String, u64)]) -> Vec<(String, u64)> {
        let total: u128 = weights.iter().map(|(_, w)| u128::from(*w)).sum();
        let mut rows: Vec<(String, u64, u128)> = weights
            .iter()
            .map(|(k, w)| {
                let exact = u128::from(amount) * u128::from(*w);
                (k.clone(), (exact / total) as u64, exact % total)
            })
            .collect();
        let mut leftover = u128::from(amount) - rows.iter().map(|r| u128::from(r.1)).sum::<u128>();
        rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        for row in rows.iter_mut() {
            if leftover == 0 {
                break;
            }
            row.1 += 1;
            leftover -= 1;
        }
        let mut parts: Vec<(String, u64)> = rows.into_iter().map(|(k, p, _)| (k, p)).collect();
        parts.sort();
        parts
    }

    #[test]
    fn the_selection_of_the_largest_remainders_matches_the_sorted_definition() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..300 {
            let n = 1 + (next() % 60) as usize;
            // Few distinct weights: many equal remainders, so ties decide.
            let weights: Vec<(String, u64)> = (0..n)
                .map(|i| (format!("k{:03}", (i * 37 + case) % 1000), 1 + next() % 4))
                .collect();
            let mut seen = BTreeSet::new();
            if !weights.iter().all(|(k, _)| seen.insert(k.clone())) {
                continue;
            }
            let amount = next() % 1_000;
            let parts = split_by_weights(amount, &weights, "test").unwrap();
            assert_eq!(parts, reference(amount, &weights), "case {case}");
        }
    }

    #[test]
    fn a_duplicate_is_named_in_input_order() {
        let w = |k: &str| (k.to_owned(), 1u64);
        let weights = [w("b"), w("a"), w("b"), w("a")];
        match split_by_weights(10, &weights, "test") {
            Err(EconomicsError::DuplicateRecipient { recipient, .. }) => assert_eq!(recipient, "b"),
            other => panic!("{other:?}"),
        }
    }
}
