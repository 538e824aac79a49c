//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
//!
//! * RDP of one step at order α: `log(A_α) / (α - 1)` (Mironov, Talwar & Zhang 2019,
//!   "Rényi Differential Privacy of the Sampled Gaussian Mechanism"). Integer orders use
//!   the exact binomial sum; fractional orders use the two-sided series of Sec. 3.3 of
//!   that paper, exactly as Google's `dp_accounting` (`_compute_log_a_frac`, version
//!   0.6.0) evaluates it, including its 1000-term cap (an order whose series does not
//!   converge is excluded, i.e. treated as `+∞`).
//! * Composition: RDP adds up over steps, order by order.
//! * Conversion to (ε, δ): the improved bound of Balle et al. 2020 (Prop. 12 of
//!   arXiv:2004.00010), `ε = rdp + log1p(-1/α) - log(δ·α)/(α-1)`, minimised over the
//!   orders of [`DEFAULT_RDP_ORDERS`] (the default list of `dp_accounting`).
//!
//! The golden test `tests/accountant_golden.rs` checks this module against values
//! produced by `dp_accounting` (see `scripts/gen_accountant_golden.py`).

use std::f64::consts::PI;

/// Errors of the accountant. All are caused by out-of-range inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountantError {
    /// The sampling rate is not a number in `[0, 1]`.
    #[error("sampling rate must be in [0, 1], got {0}")]
    SamplingRate(f64),
    /// The noise multiplier is negative or not finite.
    #[error("noise multiplier must be finite and >= 0, got {0}")]
    NoiseMultiplier(f64),
    /// δ is not in `(0, 1)`.
    #[error("delta must be in (0, 1), got {0}")]
    Delta(f64),
    /// The ε budget is negative or not a number.
    #[error("epsilon budget must be >= 0, got {0}")]
    EpsilonBudget(f64),
}

/// Number of fractional orders (1.1 ..= 10.9) in [`DEFAULT_RDP_ORDERS`].
const N_FRACTIONAL_ORDERS: usize = 99;
/// Number of integer orders 11 ..= 63 in [`DEFAULT_RDP_ORDERS`].
const N_INTEGER_ORDERS: usize = 53;
/// Length of [`DEFAULT_RDP_ORDERS`].
pub const N_DEFAULT_ORDERS: usize = N_FRACTIONAL_ORDERS + N_INTEGER_ORDERS + 4;

/// The default orders of `dp_accounting.rdp.RdpAccountant`:
/// `[1 + x/10 for x in 1..100] + [11..64) + [128, 256, 512, 1024]`.
pub const DEFAULT_RDP_ORDERS: [f64; N_DEFAULT_ORDERS] = default_orders();

const fn default_orders() -> [f64; N_DEFAULT_ORDERS] {
    let mut orders = [0.0; N_DEFAULT_ORDERS];
    let mut i = 0;
    while i < N_FRACTIONAL_ORDERS {
        // Same float expression as Python's `1 + x / 10.0`.
        orders[i] = 1.0 + (i as f64 + 1.0) / 10.0;
        i += 1;
    }
    while i < N_FRACTIONAL_ORDERS + N_INTEGER_ORDERS {
        orders[i] = (i - N_FRACTIONAL_ORDERS + 11) as f64;
        i += 1;
    }
    orders[i] = 128.0;
    orders[i + 1] = 256.0;
    orders[i + 2] = 512.0;
    orders[i + 3] = 1024.0;
    orders
}

/// Cap on the terms of the fractional-order series (as in `dp_accounting`).
const MAX_STEPS_LOG_A_FRAC: usize = 1000;

/// An RDP curve over [`DEFAULT_RDP_ORDERS`], composed over any number of steps that
/// may use different sampling rates and noise multipliers (e.g. one entry per round).
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    rdp: [f64; N_DEFAULT_ORDERS],
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant that has spent nothing.
    pub fn new() -> Self {
        Self {
            rdp: [0.0; N_DEFAULT_ORDERS],
        }
    }

    /// Composes `steps` steps of the Gaussian mechanism with noise multiplier
    /// `noise_multiplier` on a Poisson sample of rate `sampling_rate`.
    pub fn compose_poisson_gaussian(
        &mut self,
        sampling_rate: f64,
        noise_multiplier: f64,
        steps: u64,
    ) -> Result<(), AccountantError> {
        let one_step = rdp_poisson_subsampled_gaussian(sampling_rate, noise_multiplier)?;
        for (total, step) in self.rdp.iter_mut().zip(one_step.iter()) {
            *total += steps as f64 * step;
        }
        Ok(())
    }

    /// The RDP value at each of [`DEFAULT_RDP_ORDERS`].
    pub fn rdp(&self) -> &[f64; N_DEFAULT_ORDERS] {
        &self.rdp
    }

    /// The smallest ε over all orders at which the composition is (ε, δ)-DP.
    pub fn epsilon(&self, delta: f64) -> Result<f64, AccountantError> {
        epsilon_from_rdp(&self.rdp, delta)
    }
}

/// RDP of one step of the Poisson-subsampled Gaussian mechanism at every default order.
pub fn rdp_poisson_subsampled_gaussian(
    sampling_rate: f64,
    noise_multiplier: f64,
) -> Result<[f64; N_DEFAULT_ORDERS], AccountantError> {
    let q = sampling_rate;
    let sigma = noise_multiplier;
    if !(0.0..=1.0).contains(&q) {
        return Err(AccountantError::SamplingRate(q));
    }
    if !(sigma >= 0.0 && sigma.is_finite()) {
        return Err(AccountantError::NoiseMultiplier(sigma));
    }
    let mut out = [0.0; N_DEFAULT_ORDERS];
    for (rdp, &alpha) in out.iter_mut().zip(DEFAULT_RDP_ORDERS.iter()) {
        *rdp = if q == 0.0 {
            0.0
        } else if sigma == 0.0 {
            f64::INFINITY
        } else if q == 1.0 {
            alpha / (2.0 * sigma * sigma)
        } else {
            compute_log_a(q, sigma, alpha) / (alpha - 1.0)
        };
    }
    Ok(out)
}

/// Converts an RDP curve over [`DEFAULT_RDP_ORDERS`] into ε for the given δ
/// (Balle et al. 2020, Prop. 12), minimised over orders, as `dp_accounting` does.
pub fn epsilon_from_rdp(rdp: &[f64; N_DEFAULT_ORDERS], delta: f64) -> Result<f64, AccountantError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(AccountantError::Delta(delta));
    }
    let mut best = f64::INFINITY;
    for (&alpha, &r) in DEFAULT_RDP_ORDERS.iter().zip(rdp.iter()) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            // Negative RDP is numerical noise; the second case is the KL bound
            // δ ≤ sqrt(1 - exp(-KL)), which already gives ε = 0.
            0.0
        } else if alpha > 1.01 {
            r + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best {
            best = eps;
        }
    }
    Ok(best.max(0.0))
}

/// ε after `steps` steps of DP-SGD with Poisson rate `sampling_rate` and noise
/// multiplier `noise_multiplier`, for the given δ.
pub fn epsilon(
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
) -> Result<f64, AccountantError> {
    let mut accountant = RdpAccountant::new();
    accountant.compose_poisson_gaussian(sampling_rate, noise_multiplier, steps)?;
    accountant.epsilon(delta)
}

/// The largest number of steps whose ε (at δ) stays within `epsilon_budget`.
/// Returns 0 when even one step would exceed the budget, and `u64::MAX` when no
/// number of steps ever spends anything (sampling rate 0).
pub fn max_steps_within(
    sampling_rate: f64,
    noise_multiplier: f64,
    delta: f64,
    epsilon_budget: f64,
) -> Result<u64, AccountantError> {
    if epsilon_budget.is_nan() || epsilon_budget < 0.0 {
        return Err(AccountantError::EpsilonBudget(epsilon_budget));
    }
    let one_step = rdp_poisson_subsampled_gaussian(sampling_rate, noise_multiplier)?;
    let eps_at = |steps: u64| -> Result<f64, AccountantError> {
        let mut rdp = one_step;
        for r in rdp.iter_mut() {
            *r *= steps as f64;
        }
        epsilon_from_rdp(&rdp, delta)
    };
    if eps_at(1)? > epsilon_budget {
        return Ok(0);
    }
    // Exponential search for an upper bound, then bisection; ε is non-decreasing in
    // the number of steps because every order's RDP is.
    let mut lo: u64 = 1; // eps_at(lo) <= budget
    let mut hi: u64 = 2;
    loop {
        if eps_at(hi)? > epsilon_budget {
            break;
        }
        lo = hi;
        if hi >= u64::MAX / 2 {
            return Ok(u64::MAX);
        }
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if eps_at(mid)? <= epsilon_budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

fn compute_log_a(q: f64, sigma: f64, alpha: f64) -> f64 {
    if alpha.fract() == 0.0 {
        compute_log_a_int(q, sigma, alpha)
    } else {
        compute_log_a_frac(q, sigma, alpha)
    }
}

/// `log(exp(x) + exp(y))`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `log |binom(n, k)|` through log-gamma, as `scipy.special.gammaln` does it.
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// Integer α: `A_α = Σ_i binom(α, i) q^i (1-q)^(α-i) exp((i² - i) / (2σ²))`.
fn compute_log_a_int(q: f64, sigma: f64, alpha: f64) -> f64 {
    let log1mq = (-q).ln_1p();
    let log_q = q.ln();
    let mut log_a = f64::NEG_INFINITY;
    let n = alpha as u64;
    for i in 0..=n {
        let i = i as f64;
        let log_coef = log_comb(alpha, i) + i * log_q + (alpha - i) * log1mq;
        let s = log_coef + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

/// Fractional α: the two half-line integrals of Mironov et al. Sec. 3.3, summed as
/// series until both terms decrease and fall 30 nats below the running total.
fn compute_log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log1mq = (-q).ln_1p();
    let log_q = q.ln();
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let mut last_s0 = f64::NEG_INFINITY;
    let mut last_s1 = f64::NEG_INFINITY;
    for i in 0..MAX_STEPS_LOG_A_FRAC {
        let i = i as f64;
        let log_coef = log_comb(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * log_q + j * log1mq;
        let log_t1 = log_coef + j * log_q + i * log1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / sqrt2_sigma);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// `log(erfc(x))`, accurate also where `erfc(x)` underflows.
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    // Asymptotic (Laurent) series of log(erfc(x)) + log(x) + log(π)/2 + x² at ∞;
    // at x ≥ 20 the truncation error is below 1e-16.
    let x2 = x * x;
    let inv2 = 1.0 / x2;
    -0.5 * PI.ln() - x.ln() - x2 - 0.5 * inv2 + 0.625 * inv2 * inv2 - 37.0 / 24.0 * inv2.powi(3)
        + 353.0 / 64.0 * inv2.powi(4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_match_dp_accounting_list() {
        assert_eq!(DEFAULT_RDP_ORDERS[0], 1.1);
        assert_eq!(DEFAULT_RDP_ORDERS[98], 10.9);
        assert_eq!(DEFAULT_RDP_ORDERS[99], 11.0);
        assert_eq!(DEFAULT_RDP_ORDERS[151], 63.0);
        assert_eq!(DEFAULT_RDP_ORDERS[155], 1024.0);
    }

    #[test]
    fn log_erfc_is_continuous_at_the_switch() {
        let below = libm::erfc(19.999_999).ln();
        let above = log_erfc(20.0);
        assert!((below - above).abs() < 1e-4, "{below} vs {above}");
    }

    #[test]
    fn full_batch_gaussian_matches_closed_form() {
        let rdp = rdp_poisson_subsampled_gaussian(1.0, 2.0).unwrap();
        assert_eq!(rdp[99], 11.0 / 8.0);
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(epsilon(1.5, 1.0, 1, 1e-5).is_err());
        assert!(epsilon(0.1, -1.0, 1, 1e-5).is_err());
        assert!(epsilon(0.1, 1.0, 1, 0.0).is_err());
        assert!(max_steps_within(0.1, 1.0, 1e-5, f64::NAN).is_err());
    }

    #[test]
    fn max_steps_within_is_tight() {
        let (q, sigma, delta, budget) = (0.01, 1.0, 1e-5, 2.0);
        let steps = max_steps_within(q, sigma, delta, budget).unwrap();
        assert!(steps > 0);
        assert!(epsilon(q, sigma, steps, delta).unwrap() <= budget);
        assert!(epsilon(q, sigma, steps + 1, delta).unwrap() > budget);
    }
}
