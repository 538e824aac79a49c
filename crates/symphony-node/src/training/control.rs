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

/// After `losses.len()` rounds (mean training loss per round, micro-units so the
/// decision replays exactly): continue or stop. `next_round_budgeted` says whether
/// the schedule and the subjects' reservations cover another round.
pub fn decide(
    policy: &IterationPolicy,
    losses_micro: &[u64],
    next_round_budgeted: bool,
) -> Decision {
    let rounds = losses_micro.len() as u32;
    if let [.., before, last] = losses_micro {
        if before.saturating_sub(*last) < policy.convergence_threshold_micro && last <= before {
            return Decision::Stop(StopReason::Converged);
        }
    }
    if policy.early_stop_patience > 0 {
        let best_at = losses_micro
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .map_or(0, |(i, _)| i as u32);
        if rounds.saturating_sub(best_at + 1) >= policy.early_stop_patience {
            return Decision::Stop(StopReason::NoImprovement);
        }
    }
    if rounds >= policy.max_rounds {
        return Decision::Stop(StopReason::ConvergenceNotReached);
    }
    if !next_round_budgeted {
        return Decision::Stop(StopReason::BudgetExhausted);
    }
    Decision::Continue
}

/// Composite verification of convergence: replaying [`decide`] over the recorded
/// losses and budget availability must continue after every round but the last and
/// stop with `reason` after the last.
pub fn convergence_consistent(
    policy: &IterationPolicy,
    losses_micro: &[u64],
    budgeted_after: &[bool],
    reason: StopReason,
) -> bool {
    if losses_micro.is_empty() || losses_micro.len() != budgeted_after.len() {
        return false;
    }
    let n = losses_micro.len();
    (1..n).all(|k| decide(policy, &losses_micro[..k], budgeted_after[k - 1]) == Decision::Continue)
        && decide(policy, losses_micro, budgeted_after[n - 1]) == Decision::Stop(reason)
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

    #[test]
    fn decisions_table() {
        let p = policy(3, 1_000, 0);
        let table: &[(&[u64], bool, Decision)] = &[
            (&[690_000], true, Decision::Continue),
            (&[690_000, 600_000], true, Decision::Continue),
            (
                &[690_000, 689_500],
                true,
                Decision::Stop(StopReason::Converged),
            ),
            (
                &[690_000, 600_000, 500_000],
                true,
                Decision::Stop(StopReason::ConvergenceNotReached),
            ),
            (
                &[690_000, 600_000],
                false,
                Decision::Stop(StopReason::BudgetExhausted),
            ),
        ];
        for (losses, budgeted, want) in table {
            assert_eq!(decide(&p, losses, *budgeted), *want, "{losses:?}");
        }
        let p = policy(10, 0, 2);
        assert_eq!(
            decide(&p, &[5, 4, 6, 7], true),
            Decision::Stop(StopReason::NoImprovement)
        );
        assert!(convergence_consistent(
            &policy(3, 1_000, 0),
            &[690_000, 600_000, 500_000],
            &[true, true, true],
            StopReason::ConvergenceNotReached
        ));
        assert!(!convergence_consistent(
            &policy(3, 1_000, 0),
            &[690_000, 689_900, 500_000],
            &[true, true, true],
            StopReason::ConvergenceNotReached
        ));
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
