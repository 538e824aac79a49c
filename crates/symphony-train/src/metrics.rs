//! Quality and privacy metrics for binary classifiers.
//!
//! * [`auc`]: area under the ROC curve by the rank-sum (Mann–Whitney U) formula with
//!   mid-ranks for ties, so a tie between a positive and a negative counts one half.
//! * [`accuracy`] at a probability threshold, [`log_loss`] with probabilities clamped to
//!   `[1e-15, 1 - 1e-15]`.
//! * [`membership_advantage`]: the loss-threshold membership-inference attack of
//!   Yeom et al. 2018 ("Privacy Risk in Machine Learning"): guess "member" when the
//!   loss is at most τ; the advantage is `max_τ (TPR(τ) − FPR(τ))`, in `[0, 1]`.

use std::cmp::Ordering;

/// Errors of the metric functions (all from malformed inputs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Scores and labels have different lengths.
    #[error("length mismatch: {scores} scores, {labels} labels")]
    LengthMismatch {
        /// Number of scores.
        scores: usize,
        /// Number of labels.
        labels: usize,
    },
    /// The metric is undefined without both classes (or without any input).
    #[error("need at least one positive and one negative example")]
    NeedBothClasses,
    /// An input value is NaN.
    #[error("input contains NaN")]
    NotANumber,
    /// A probability lies outside `[0, 1]`.
    #[error("probability out of [0, 1]: {0}")]
    Probability(f64),
}

fn check_lengths(scores: &[f64], labels: &[bool]) -> Result<(), MetricsError> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(MetricsError::NotANumber);
    }
    Ok(())
}

/// Area under the ROC curve of `scores` (higher means "more positive").
pub fn auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricsError> {
    check_lengths(scores, labels)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(MetricsError::NeedBothClasses);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum_pos = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        let pos_in_group = order[start..end].iter().filter(|&&i| labels[i]).count();
        rank_sum_pos += mid_rank * pos_in_group as f64;
        start = end;
    }
    let n_pos_f = n_pos as f64;
    let u = rank_sum_pos - n_pos_f * (n_pos_f + 1.0) / 2.0;
    Ok(u / (n_pos_f * n_neg as f64))
}

/// Fraction of examples whose prediction `probability >= threshold` equals the label.
pub fn accuracy(
    probabilities: &[f64],
    labels: &[bool],
    threshold: f64,
) -> Result<f64, MetricsError> {
    check_lengths(probabilities, labels)?;
    if labels.is_empty() {
        return Err(MetricsError::NeedBothClasses);
    }
    let correct = probabilities
        .iter()
        .zip(labels)
        .filter(|(&p, &l)| (p >= threshold) == l)
        .count();
    Ok(correct as f64 / labels.len() as f64)
}

/// Per-example binary cross-entropy, probabilities clamped to `[1e-15, 1 - 1e-15]`.
pub fn example_log_loss(probability: f64, label: bool) -> Result<f64, MetricsError> {
    if probability.is_nan() {
        return Err(MetricsError::NotANumber);
    }
    if !(0.0..=1.0).contains(&probability) {
        return Err(MetricsError::Probability(probability));
    }
    let p = probability.clamp(1e-15, 1.0 - 1e-15);
    Ok(if label { -p.ln() } else { -(1.0 - p).ln() })
}

/// Mean binary cross-entropy.
pub fn log_loss(probabilities: &[f64], labels: &[bool]) -> Result<f64, MetricsError> {
    check_lengths(probabilities, labels)?;
    if labels.is_empty() {
        return Err(MetricsError::NeedBothClasses);
    }
    let mut total = 0.0;
    for (&p, &l) in probabilities.iter().zip(labels) {
        total += example_log_loss(p, l)?;
    }
    Ok(total / labels.len() as f64)
}

/// Advantage of the loss-threshold membership-inference attack:
/// `max over τ of P[loss ≤ τ | member] − P[loss ≤ τ | non-member]` (0 when the
/// attack is no better than guessing, 1 when it separates the two sets perfectly).
pub fn membership_advantage(
    member_losses: &[f64],
    nonmember_losses: &[f64],
) -> Result<f64, MetricsError> {
    if member_losses.is_empty() || nonmember_losses.is_empty() {
        return Err(MetricsError::NeedBothClasses);
    }
    if member_losses
        .iter()
        .chain(nonmember_losses)
        .any(|l| l.is_nan())
    {
        return Err(MetricsError::NotANumber);
    }
    let mut members = member_losses.to_vec();
    let mut nonmembers = nonmember_losses.to_vec();
    members.sort_by(f64::total_cmp);
    nonmembers.sort_by(f64::total_cmp);
    let (n_m, n_n) = (members.len() as f64, nonmembers.len() as f64);
    // Sweep τ over every distinct loss value; τ = -∞ gives advantage 0.
    let (mut i, mut j) = (0usize, 0usize);
    let mut best: f64 = 0.0;
    while i < members.len() || j < nonmembers.len() {
        let tau = match (members.get(i), nonmembers.get(j)) {
            (Some(&a), Some(&b)) => match a.total_cmp(&b) {
                Ordering::Greater => b,
                _ => a,
            },
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < members.len() && members[i] <= tau {
            i += 1;
        }
        while j < nonmembers.len() && nonmembers[j] <= tau {
            j += 1;
        }
        best = best.max(i as f64 / n_m - j as f64 / n_n);
    }
    Ok(best)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn auc_perfect_reversed_and_known_example() {
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &labels).unwrap(), 1.0);
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &labels).unwrap(), 0.0);
        // sklearn.metrics.roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) == 0.75
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &labels).unwrap(), 0.75);
    }

    #[test]
    fn auc_counts_ties_as_half() {
        assert_eq!(auc(&[0.5, 0.5], &[false, true]).unwrap(), 0.5);
        // pairs (pos,neg): (0.5,0.5)=1/2, (0.5,0.1)=1, (0.9,0.5)=1, (0.9,0.1)=1 -> 3.5/4
        let auc_value = auc(&[0.5, 0.1, 0.5, 0.9], &[false, false, true, true]).unwrap();
        assert_eq!(auc_value, 0.875);
    }

    #[test]
    fn auc_rejects_bad_input() {
        assert_eq!(
            auc(&[0.1, 0.2], &[true, true]),
            Err(MetricsError::NeedBothClasses)
        );
        assert!(matches!(
            auc(&[0.1], &[true, false]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert_eq!(
            auc(&[f64::NAN, 0.2], &[true, false]),
            Err(MetricsError::NotANumber)
        );
    }

    #[test]
    fn accuracy_and_log_loss() {
        let labels = [true, false, true, false];
        assert_eq!(accuracy(&[0.9, 0.1, 0.4, 0.6], &labels, 0.5).unwrap(), 0.5);
        let ll = log_loss(&[0.5, 0.5, 0.5, 0.5], &labels).unwrap();
        assert!((ll - std::f64::consts::LN_2).abs() < 1e-15);
        assert!(log_loss(&[1.5], &[true]).is_err());
    }

    #[test]
    fn membership_advantage_extremes() {
        // Members all have lower loss: perfect attack.
        assert_eq!(membership_advantage(&[0.1, 0.2], &[0.5, 0.6]).unwrap(), 1.0);
        // Identical distributions: no advantage.
        assert_eq!(membership_advantage(&[0.1, 0.5], &[0.1, 0.5]).unwrap(), 0.0);
        // Members with higher loss: the ≤ τ attack never helps.
        assert_eq!(membership_advantage(&[0.9], &[0.1]).unwrap(), 0.0);
        // Partial: τ = 0.2 -> TPR 2/3, FPR 0 ... τ = 0.3 -> TPR 2/3, FPR 1/2.
        let adv = membership_advantage(&[0.1, 0.2, 0.9], &[0.3, 0.4]).unwrap();
        assert!((adv - 2.0 / 3.0).abs() < 1e-12);
    }
}
