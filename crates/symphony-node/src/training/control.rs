//! The Composite Iteration Controller and the run's privacy schedule: pure functions
//! (no IO, no clock) so that composite verification can replay them.
//!
//! * [`epsilon_schedule`]: ε of each round from the RDP accountant. A round is the
//!   Vault's DP-SGD steps plus the round's released metrics ([`compose_round`]: one
//!   Gaussian release of the noisy loss sums and example counts, noise multiplier
//!   [`METRICS_NOISE_MULTIPLIER`]). Round `r` spends
//!   `ceil(ε(r + 1 rounds)) − ceil(ε(r rounds))` in micro-ε, so the per-round records
//!   sum exactly to the cumulative ε of the rounds run. Rounds whose cumulative ε would
//!   exceed the run's allocation are not scheduled.
//! * Per person, the charge is exact because participation is a **prefix**: a person
//!   takes part in round `r` only if it took part in every round before (a subject who
//!   misses a round, for any reason, is out for the rest of the run and its later
//!   reservations are released), so a person in `k` rounds is charged
//!   `ceil(ε(k rounds))`, its composed loss. Admission reserves the whole run for a
//!   person or nothing ([`super::persons`]).
//! * [`decide`]: after each round, continue or stop (converged, no improvement for
//!   `patience` rounds, budget exhausted, or max rounds → `convergence_not_reached`).
//!   Both stopping rules read the **held-out** loss each round releases, which carries
//!   Gaussian noise; the noise's standard deviation is known from the release
//!   mechanism and the released held-out count ([`HeldOut::noise_sd_micro`]). The run
//!   has **converged** when, over the last [`CONVERGENCE_WINDOW`] rounds, the best
//!   held-out loss improved on the best before them by less than
//!   `max(threshold, CONVERGENCE_Z × sd of that difference)`: no improvement beyond
//!   what the noise alone could show (a threshold of 0 turns this rule off). A run that stops for lack of improvement
//!   delivers the model with the lowest released held-out loss ([`delivered_round`]).

use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::envelope::IterationPolicy;
use symphony_train::accountant::RdpAccountant;

use crate::NodeError;

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The loss improved by less than the convergence threshold.
    Converged,
    /// `early_stop_patience` rounds without improvement.
    NoImprovement,
    /// The next round would exceed the privacy allocation, or too few subjects keep
    /// budget for it.
    BudgetExhausted,
    /// `max_rounds` ran without convergence.
    ConvergenceNotReached,
}

impl StopReason {
    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Converged => "converged",
            StopReason::NoImprovement => "no_improvement",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::ConvergenceNotReached => "convergence_not_reached",
        }
    }
}

/// The controller's decision after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Open the next round.
    Continue,
    /// Go to verification.
    Stop(StopReason),
}

/// Noise multiplier of each round's released metrics: the aggregation enclave adds
/// Gaussian noise of standard deviation `METRICS_NOISE_MULTIPLIER × √2` (in units of
/// one example and of [`LOSS_CLIP`]) to the round's four sums (train examples, train
/// loss, held-out examples, held-out loss). One person moves one count by 1 and one
/// loss sum by at most `LOSS_CLIP`: ℓ2 sensitivity √2 in those units.
pub const METRICS_NOISE_MULTIPLIER: f64 = 50.0;

/// Per-example log loss is clipped to this before it is summed for the metrics.
pub const LOSS_CLIP: f64 = 2.0;

/// Composes one round into `accountant`: `steps` DP-SGD steps at Poisson rate `q`
/// and noise `sigma`, then the round's Gaussian metrics release.
pub fn compose_round(
    accountant: &mut RdpAccountant,
    q: f64,
    sigma: f64,
    steps: u64,
) -> Result<(), NodeError> {
    let acc = |e| NodeError::Refused(format!("accountant: {e}"));
    accountant
        .compose_poisson_gaussian(q, sigma, steps)
        .map_err(acc)?;
    accountant
        .compose_poisson_gaussian(1.0, METRICS_NOISE_MULTIPLIER, 1)
        .map_err(acc)
}

/// ε of `rounds` rounds (DP-SGD and released metrics) at `delta`.
pub fn composed_epsilon(
    q: f64,
    sigma: f64,
    steps: u64,
    rounds: u32,
    delta: f64,
) -> Result<f64, NodeError> {
    let mut accountant = RdpAccountant::new();
    for _ in 0..rounds {
        compose_round(&mut accountant, q, sigma, steps)?;
    }
    accountant
        .epsilon(delta)
        .map_err(|e| NodeError::Refused(format!("accountant: {e}")))
}

/// Per-round ε (micro) for up to `max_rounds` rounds of `steps_per_round` DP-SGD
/// steps at Poisson rate `q` and noise `sigma` plus each round's metrics release,
/// within `allocation` at `delta`.
pub fn epsilon_schedule(
    q: f64,
    sigma: f64,
    steps_per_round: u64,
    delta: f64,
    max_rounds: u32,
    allocation: Epsilon,
) -> Result<Vec<Epsilon>, NodeError> {
    let mut accountant = RdpAccountant::new();
    let mut out = Vec::new();
    let mut previous_micro = 0u64;
    for _ in 0..max_rounds {
        compose_round(&mut accountant, q, sigma, steps_per_round)?;
        let eps = accountant
            .epsilon(delta)
            .map_err(|e| NodeError::Refused(format!("accountant: {e}")))?;
        let cumulative_micro = (eps * Epsilon::SCALE as f64).ceil();
        if !cumulative_micro.is_finite() || cumulative_micro > allocation.micro as f64 {
            break;
        }
        let cumulative_micro = cumulative_micro as u64;
        out.push(Epsilon::from_micro(
            cumulative_micro.saturating_sub(previous_micro),
        ));
        previous_micro = cumulative_micro;
    }
    Ok(out)
}

/// Convergence threshold of a policy as a float loss.
pub fn threshold(policy: &IterationPolicy) -> f64 {
    policy.convergence_threshold_micro as f64 / 1e6
}

/// Rounds over which the held-out loss must improve beyond its noise (see the
/// module documentation).
pub const CONVERGENCE_WINDOW: usize = 3;

/// An improvement counts when it exceeds this many standard deviations of the
/// difference of two released held-out losses.
pub const CONVERGENCE_Z: f64 = 2.0;

/// One round's released held-out loss (of the model before the round's update) and
/// the standard deviation of its noise, in micro-units of loss so that replaying the
/// decision is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldOut {
    /// The noisy mean held-out loss (clipped to [`LOSS_CLIP`]).
    pub loss_micro: u64,
    /// The standard deviation of its noise.
    pub noise_sd_micro: u64,
}

impl HeldOut {
    /// The released mean `loss` over a noisy held-out count `examples`: the noise of
    /// the mean `(S + e_S) / (N + e_N)`, with `e_S ~ N(0, (sd·LOSS_CLIP)²)` and
    /// `e_N ~ N(0, sd²)` (`sd = METRICS_NOISE_MULTIPLIER·√2`), is to first order
    /// `sd · √(LOSS_CLIP² + loss²) / N`.
    pub fn released(loss: f64, examples: u64) -> Self {
        let sd = METRICS_NOISE_MULTIPLIER * std::f64::consts::SQRT_2;
        let n = examples.max(1) as f64;
        let noise = sd * (LOSS_CLIP * LOSS_CLIP + loss * loss).sqrt() / n;
        let micro = |x: f64| {
            if x.is_finite() && x > 0.0 {
                (x * 1e6).round() as u64
            } else {
                0
            }
        };
        Self {
            loss_micro: micro(loss),
            noise_sd_micro: micro(noise),
        }
    }
}

/// The smallest improvement of `from` → `to` that the noise does not explain:
/// `max(threshold, CONVERGENCE_Z · √(sd_from² + sd_to²))` (micro).
fn margin_micro(policy: &IterationPolicy, from: HeldOut, to: HeldOut) -> u64 {
    let (a, b) = (from.noise_sd_micro as f64, to.noise_sd_micro as f64);
    let noise = (CONVERGENCE_Z * (a * a + b * b).sqrt()).ceil() as u64;
    noise.max(policy.convergence_threshold_micro)
}

/// The lowest held-out loss of `rounds` and its index (the first on ties).
fn best(rounds: &[HeldOut]) -> Option<(usize, HeldOut)> {
    rounds
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|(i, h)| (h.loss_micro, *i))
}

/// After `holdout.len()` rounds (each round's released held-out loss of the model
/// before its update): continue or stop. `next_round_budgeted` says whether the
/// schedule and the subjects' reservations cover another round.
pub fn decide(
    policy: &IterationPolicy,
    holdout: &[HeldOut],
    next_round_budgeted: bool,
) -> Decision {
    let rounds = holdout.len();
    // A threshold of 0 turns the convergence rule off (run to patience or max rounds).
    if policy.convergence_threshold_micro > 0 && rounds > CONVERGENCE_WINDOW {
        let (earlier, recent) = holdout.split_at(rounds - CONVERGENCE_WINDOW);
        if let (Some((_, before)), Some((_, now))) = (best(earlier), best(recent)) {
            let improvement = before.loss_micro.saturating_sub(now.loss_micro);
            if improvement < margin_micro(policy, before, now) {
                return Decision::Stop(StopReason::Converged);
            }
        }
    }
    if policy.early_stop_patience > 0 {
        let best_at = best(holdout).map_or(0, |(i, _)| i);
        if rounds.saturating_sub(best_at + 1) >= policy.early_stop_patience as usize {
            return Decision::Stop(StopReason::NoImprovement);
        }
    }
    if rounds as u32 >= policy.max_rounds {
        return Decision::Stop(StopReason::ConvergenceNotReached);
    }
    if !next_round_budgeted {
        return Decision::Stop(StopReason::BudgetExhausted);
    }
    Decision::Continue
}

/// Which model a run delivers: `Some(r)` for the model after `r` rounds (the lowest
/// released held-out loss, `r ≥ 1`) when the run stopped for lack of improvement
/// and that model is not the last; `None` for the model after the last round.
pub fn delivered_round(stop: StopReason, holdout: &[HeldOut]) -> Option<u32> {
    if stop != StopReason::NoImprovement {
        return None;
    }
    // holdout[r] is the loss of the model after r rounds; the untrained model
    // (r = 0) is never delivered.
    let (i, _) = best(holdout.get(1..)?)?;
    Some(i as u32 + 1)
}

/// Composite verification of convergence: replaying [`decide`] over the recorded
/// held-out losses and budget availability must continue after every round but the
/// last and stop with `reason` after the last.
pub fn convergence_consistent(
    policy: &IterationPolicy,
    holdout: &[HeldOut],
    budgeted_after: &[bool],
    reason: StopReason,
) -> bool {
    if holdout.is_empty() || holdout.len() != budgeted_after.len() {
        return false;
    }
    let n = holdout.len();
    (1..n).all(|k| decide(policy, &holdout[..k], budgeted_after[k - 1]) == Decision::Continue)
        && decide(policy, holdout, budgeted_after[n - 1]) == Decision::Stop(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_rounds: u32, threshold_micro: u64, patience: u32) -> IterationPolicy {
        IterationPolicy {
            max_rounds,
            convergence_threshold_micro: threshold_micro,
            early_stop_patience: patience,
            stop_on_budget_exhaustion: true,
        }
    }

    fn h(losses: &[u64], noise: u64) -> Vec<HeldOut> {
        losses
            .iter()
            .map(|&l| HeldOut {
                loss_micro: l,
                noise_sd_micro: noise,
            })
            .collect()
    }

    #[test]
    fn decisions_table() {
        let p = policy(6, 1_000, 0);
        let table: &[(Vec<HeldOut>, bool, Decision)] = &[
            (h(&[690_000], 0), true, Decision::Continue),
            (h(&[690_000, 600_000], 0), true, Decision::Continue),
            // Fewer rounds than the window + 1: never converged yet.
            (h(&[690_000, 689_900, 689_800], 0), true, Decision::Continue),
            // The last three rounds improved on the best before them by 600 < 1 000.
            (
                h(&[690_000, 600_000, 599_800, 599_600, 599_400], 0),
                true,
                Decision::Stop(StopReason::Converged),
            ),
            (
                h(&[690_000, 600_000, 500_000, 400_000, 300_000, 200_000], 0),
                true,
                Decision::Stop(StopReason::ConvergenceNotReached),
            ),
            (
                h(&[690_000, 600_000], 0),
                false,
                Decision::Stop(StopReason::BudgetExhausted),
            ),
        ];
        for (losses, budgeted, want) in table {
            assert_eq!(decide(&p, losses, *budgeted), *want, "{losses:?}");
        }
        let p = policy(10, 0, 2);
        assert_eq!(
            decide(&p, &h(&[5, 4, 6, 7], 1_000), true),
            Decision::Stop(StopReason::NoImprovement)
        );
        assert!(convergence_consistent(
            &policy(3, 1_000, 0),
            &h(&[690_000, 600_000, 500_000], 0),
            &[true, true, true],
            StopReason::ConvergenceNotReached
        ));
        assert!(!convergence_consistent(
            &policy(5, 1_000, 0),
            &h(&[690_000, 689_900, 689_800, 689_700, 500_000], 0),
            &[true; 5],
            StopReason::ConvergenceNotReached
        ));
    }

    /// The same steady improvement converges or not depending on the noise: an
    /// improvement the noise could explain is not one.
    #[test]
    fn convergence_waits_for_improvement_beyond_the_noise() {
        let p = policy(20, 500, 0);
        let steady = [690_000, 640_000, 600_000, 595_000, 590_000, 580_000];
        // Quiet releases: 20 000 µ of improvement over the window is real.
        assert_eq!(decide(&p, &h(&steady, 100), true), Decision::Continue);
        // sd 10 000 µ per release: 2·√2·10 000 ≈ 28 285 > 20 000, so it is noise.
        assert_eq!(
            decide(&p, &h(&steady, 10_000), true),
            Decision::Stop(StopReason::Converged)
        );
        // The noise of a release shrinks with the held-out count.
        let small = HeldOut::released(0.4, 500);
        let large = HeldOut::released(0.4, 50_000);
        assert!(small.noise_sd_micro > 90 * large.noise_sd_micro);
        // sd·√(4 + 0.16)/500 with sd = 50·√2.
        let want = 50.0 * std::f64::consts::SQRT_2 * (4.16f64).sqrt() / 500.0;
        assert_eq!(small.noise_sd_micro, (want * 1e6).round() as u64);
    }

    #[test]
    fn a_run_without_improvement_delivers_its_best_released_model() {
        let losses = h(&[690_000, 500_000, 450_000, 470_000, 480_000], 0);
        assert_eq!(delivered_round(StopReason::NoImprovement, &losses), Some(2));
        assert_eq!(delivered_round(StopReason::Converged, &losses), None);
        assert_eq!(
            delivered_round(StopReason::ConvergenceNotReached, &losses),
            None
        );
        // The untrained model is never delivered, even when its loss is the lowest.
        let worse = h(&[400_000, 500_000, 450_000], 0);
        assert_eq!(delivered_round(StopReason::NoImprovement, &worse), Some(2));
    }

    #[test]
    fn schedule_sums_to_cumulative_and_respects_allocation() {
        let all =
            epsilon_schedule(0.05, 1.1, 5, 1e-5, 50, Epsilon::from_micro(u64::MAX / 2)).unwrap();
        let capped = epsilon_schedule(0.05, 1.1, 5, 1e-5, 50, Epsilon::from_milli(2_000)).unwrap();
        assert!(!capped.is_empty() && capped.len() < all.len());
        let total: u64 = capped.iter().map(|e| e.micro).sum();
        assert!(total <= 2_000_000);
        let eps = composed_epsilon(0.05, 1.1, 5, capped.len() as u32, 1e-5).unwrap();
        assert_eq!(total, (eps * 1e6).ceil() as u64);
        // The metrics release costs something: more than DP-SGD alone.
        let sgd_only =
            symphony_train::accountant::epsilon(0.05, 1.1, 5 * capped.len() as u64, 1e-5).unwrap();
        assert!(eps > sgd_only);
    }
}
