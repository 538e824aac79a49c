//! Exact discrete Laplace noise for differential privacy.
//!
//! # Why not floating-point Laplace
//!
//! The textbook Laplace mechanism adds `b · ln(U)`-style noise computed in `f64`.
//! Mironov ("On Significance of the Least Significant Bits for Differential
//! Privacy", CCS 2012) showed that this is **not** differentially private in
//! practice: floating-point values are unevenly spaced and the logarithm is
//! rounded, so the set of reachable noisy outputs depends on the true value, and
//! an attacker who sees the low-order bits of a released float can often tell
//! which input produced it — privacy is lost entirely, not degraded gracefully.
//!
//! # What this module does instead
//!
//! It samples the *discrete* Laplace distribution on ℤ,
//! `P(X = x) ∝ exp(-|x| / t)`, exactly, following Canonne, Kamath and Steinke,
//! "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020, CKS 2020):
//!
//! - Algorithm 1: an exact `Bernoulli(exp(-γ))` for rational `γ = n/d`, using only
//!   Bernoulli trials with rational probabilities;
//! - Algorithm 2: the discrete Laplace with rational scale `t = num/den`, built
//!   from Algorithm 1 and uniform integers.
//!
//! The sampling path uses only integer arithmetic (`u64`/`u128`, checked):
//! uniform integers are drawn by rejection on `u64` (no modulo bias), and no `f64`
//! is ever involved. Adding the noise to an integer query with L1 sensitivity Δ
//! and scale `Δ/ε` gives ε-DP ([`laplace_scale`]).
//!
//! The module is pure: the caller passes the randomness source
//! (`&mut impl RngCore`); there is no IO, clock or OS randomness. Use a
//! cryptographically secure generator in production: the guarantee is only as
//! good as the bits it is given.

use std::fmt;

use rand_core::RngCore;
use serde::{Deserialize, Serialize};

/// Largest accepted scale, `2^48` (≈ 2.8 · 10¹⁴).
///
/// With this bound a sample's magnitude reaches `i64::MAX` = `2^63 − 1` only with
/// probability below `exp(-2^15)`, so sampling never overflows in practice.
pub const MAX_SCALE: u64 = 1 << 48;

/// Micro-units per whole ε (ε = `epsilon_micro / 1_000_000`).
const MICRO_PER_EPSILON: u64 = 1_000_000;

/// A rational scale `num/den` > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// Numerator.
    pub num: u64,
    /// Denominator.
    pub den: u64,
}

impl Scale {
    /// A checked scale `num/den`: both nonzero and `num/den ≤` [`MAX_SCALE`].
    pub fn new(num: u64, den: u64) -> Result<Self, DpError> {
        let scale = Scale { num, den };
        scale.validate()?;
        Ok(scale)
    }

    /// Checks that the scale is positive, has a nonzero denominator and is at most
    /// [`MAX_SCALE`].
    pub fn validate(&self) -> Result<(), DpError> {
        let Scale { num, den } = *self;
        if den == 0 {
            return Err(DpError::ZeroDenominator { num });
        }
        if num == 0 {
            return Err(DpError::NonPositiveScale { num, den });
        }
        if u128::from(num) > u128::from(MAX_SCALE) * u128::from(den) {
            return Err(DpError::ScaleTooLarge { num, den });
        }
        Ok(())
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// A refused noise computation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpError {
    /// The scale's numerator is zero.
    #[error("scale must be positive: {num}/{den}")]
    NonPositiveScale {
        /// Numerator (zero).
        num: u64,
        /// Denominator.
        den: u64,
    },
    /// The scale's denominator is zero.
    #[error("scale denominator must be nonzero: {num}/0")]
    ZeroDenominator {
        /// Numerator.
        num: u64,
    },
    /// The scale exceeds [`MAX_SCALE`].
    #[error("scale too large: {num}/{den} exceeds the maximum 2^48")]
    ScaleTooLarge {
        /// Numerator.
        num: u64,
        /// Denominator.
        den: u64,
    },
    /// ε is zero: no finite noise gives 0-DP.
    #[error("epsilon must be positive: epsilon_micro = 0")]
    ZeroEpsilon,
    /// The query sensitivity is zero, so no noise scale is defined.
    #[error("sensitivity must be positive: sensitivity = 0")]
    ZeroSensitivity,
    /// A uniform integer was requested from an empty range `[0, 0)`.
    #[error("uniform range must be nonempty: upper bound 0")]
    EmptyRange,
    /// Integer arithmetic would overflow.
    #[error("arithmetic overflow: {0}")]
    Overflow(&'static str),
}

/// Discrete Laplace: P(X = x) ∝ exp(-|x| / scale).
///
/// CKS 2020, Algorithm 2, with scale `t = num/den`: draw `X ≥ 0` geometric with
/// `P(X = x) ∝ exp(-x/num)` as `U + num·V` (`U` uniform in `[0, num)` kept with
/// probability `exp(-U/num)`, `V` geometric via `Bernoulli(exp(-1))`), set
/// `Y = ⌊X/den⌋`, attach a fair random sign and reject `(−, 0)` so zero is not
/// counted twice.
///
/// Errors if the scale is invalid (see [`Scale::validate`]); for a valid scale
/// an [`DpError::Overflow`] is possible in principle but has probability below
/// `exp(-2^15)`.
pub fn sample_discrete_laplace<R: RngCore + ?Sized>(
    scale: Scale,
    rng: &mut R,
) -> Result<i64, DpError> {
    scale.validate()?;
    let Scale { num, den } = scale;
    loop {
        let u = uniform_below(num, rng)?;
        if !bernoulli_exp(u, num, rng)? {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp(1, 1, rng)? {
            v = v
                .checked_add(1)
                .ok_or(DpError::Overflow("geometric count"))?;
        }
        let x = u128::from(num)
            .checked_mul(u128::from(v))
            .and_then(|nv| nv.checked_add(u128::from(u)))
            .ok_or(DpError::Overflow("U + num * V"))?;
        let y = x / u128::from(den);
        let negative = rng.next_u32() & 1 == 1;
        if negative && y == 0 {
            continue;
        }
        let y = i64::try_from(y).map_err(|_| DpError::Overflow("sample exceeds i64"))?;
        return Ok(if negative { -y } else { y });
    }
}

/// Scale for ε-DP of an integer query with L1 sensitivity `sensitivity`, ε given in micro-units (ε = epsilon_micro / 1e6): scale = sensitivity / ε = sensitivity * 1e6 / epsilon_micro, as an exact rational.
///
/// The fraction is reduced to lowest terms. Errors if either input is zero, if
/// the reduced numerator does not fit `u64`, or if the scale exceeds
/// [`MAX_SCALE`].
pub fn laplace_scale(sensitivity: u64, epsilon_micro: u64) -> Result<Scale, DpError> {
    if epsilon_micro == 0 {
        return Err(DpError::ZeroEpsilon);
    }
    if sensitivity == 0 {
        return Err(DpError::ZeroSensitivity);
    }
    // At most 2^64 · 10^6 < 2^84: no u128 overflow.
    let num = u128::from(sensitivity) * u128::from(MICRO_PER_EPSILON);
    let den = u128::from(epsilon_micro);
    let g = gcd(num, den);
    let num = u64::try_from(num / g)
        .map_err(|_| DpError::Overflow("sensitivity * 1e6 / epsilon_micro numerator"))?;
    let den = u64::try_from(den / g)
        .map_err(|_| DpError::Overflow("sensitivity * 1e6 / epsilon_micro denominator"))?;
    Scale::new(num, den)
}

/// Variance of the discrete Laplace with this scale (f64, for reports and tests only): 2 e^{-1/t} / (1 - e^{-1/t})^2.
///
/// Returns `NaN` for a scale with a zero numerator or denominator.
pub fn discrete_laplace_variance(scale: Scale) -> f64 {
    if scale.num == 0 || scale.den == 0 {
        return f64::NAN;
    }
    let inv_t = scale.den as f64 / scale.num as f64;
    let q = (-inv_t).exp();
    let one_minus_q = -(-inv_t).exp_m1();
    2.0 * q / (one_minus_q * one_minus_q)
}

/// A uniform integer in `[0, n)`, by rejection on `u64` (no modulo bias).
///
/// Draws are accepted below the largest multiple of `n` that fits in `2^64`, so
/// each value is equally likely; fewer than half the draws are rejected.
fn uniform_below<R: RngCore + ?Sized>(n: u64, rng: &mut R) -> Result<u64, DpError> {
    if n == 0 {
        return Err(DpError::EmptyRange);
    }
    // 2^64 mod n: values above u64::MAX - rem form an incomplete block.
    let rem = n.wrapping_neg() % n;
    let limit = u64::MAX - rem;
    loop {
        let x = rng.next_u64();
        if x <= limit {
            return Ok(x % n);
        }
    }
}

/// `Bernoulli(num/den)` for `num ≤ den` (true with probability `num/den`).
fn bernoulli_rational<R: RngCore + ?Sized>(
    num: u64,
    den: u64,
    rng: &mut R,
) -> Result<bool, DpError> {
    Ok(uniform_below(den, rng)? < num)
}

/// `Bernoulli(exp(-n/d))` exactly, for `n ≥ 0`, `d > 0` (CKS 2020, Algorithm 1).
///
/// For `γ = n/d ≤ 1`: `K ← 1`; while `Bernoulli(γ/K)` succeeds, `K ← K + 1`;
/// return whether `K` is odd. The trial `Bernoulli(γ/K)` is drawn as the
/// conjunction of independent `Bernoulli(n/d)` and `Bernoulli(1/K)`, so `d·K` is
/// never formed and cannot overflow. For `γ > 1`: `⌊γ⌋` independent
/// `Bernoulli(exp(-1))` trials must all succeed, then `Bernoulli(exp(-(γ-⌊γ⌋)))`.
fn bernoulli_exp<R: RngCore + ?Sized>(n: u64, d: u64, rng: &mut R) -> Result<bool, DpError> {
    if d == 0 {
        return Err(DpError::ZeroDenominator { num: n });
    }
    if n <= d {
        return bernoulli_exp_at_most_one(n, d, rng);
    }
    for _ in 0..n / d {
        if !bernoulli_exp_at_most_one(1, 1, rng)? {
            return Ok(false);
        }
    }
    bernoulli_exp_at_most_one(n % d, d, rng)
}

/// `Bernoulli(exp(-n/d))` for `0 ≤ n ≤ d`, `d > 0`.
fn bernoulli_exp_at_most_one<R: RngCore + ?Sized>(
    n: u64,
    d: u64,
    rng: &mut R,
) -> Result<bool, DpError> {
    let mut k: u64 = 1;
    loop {
        let success = bernoulli_rational(n, d, rng)? && uniform_below(k, rng)? == 0;
        if !success {
            return Ok(k % 2 == 1);
        }
        k = k
            .checked_add(1)
            .ok_or(DpError::Overflow("Bernoulli(exp) counter"))?;
    }
}

/// Greatest common divisor (Euclid); `gcd(0, 0) = 0` is never asked for here.
fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    fn samples(scale: Scale, n: usize, seed: u64) -> Vec<i64> {
        let mut r = rng(seed);
        (0..n)
            .map(|_| sample_discrete_laplace(scale, &mut r).unwrap())
            .collect()
    }

    /// Exact pmf `p(x) = (1-q)/(1+q) q^|x|`, `q = e^{-1/t}`.
    fn pmf(scale: Scale, x: i64) -> f64 {
        let q = (-(scale.den as f64) / scale.num as f64).exp();
        (1.0 - q) / (1.0 + q) * q.powi(x.unsigned_abs() as i32)
    }

    /// `P(X > k)` (= `P(X < -k)`) for `k ≥ 0`.
    fn upper_tail(scale: Scale, k: i64) -> f64 {
        let q = (-(scale.den as f64) / scale.num as f64).exp();
        (1.0 - q) / (1.0 + q) * q.powi(k as i32 + 1) / (1.0 - q)
    }

    /// Largest `K` such that every bin `|x| ≤ K` and both tails expect ≥ 20 draws.
    fn bin_limit(scale: Scale, n: usize) -> i64 {
        let mut k = 0;
        while n as f64 * upper_tail(scale, k + 1) >= 20.0 {
            k += 1;
        }
        k
    }

    /// Pearson χ² of `xs` against the pmf of `scale` over bins `-K..=K` plus tails.
    /// Returns (statistic, degrees of freedom).
    fn chi_square(xs: &[i64], scale: Scale, k: i64) -> (f64, usize) {
        let width = (2 * k + 3) as usize; // [< -K], -K..=K, [> K]
        let mut observed = vec![0u64; width];
        for &x in xs {
            let bin = if x < -k {
                0
            } else if x > k {
                width - 1
            } else {
                (x + k + 1) as usize
            };
            observed[bin] += 1;
        }
        let n = xs.len() as f64;
        let mut expected = vec![0.0; width];
        expected[0] = upper_tail(scale, k) * n;
        expected[width - 1] = upper_tail(scale, k) * n;
        for x in -k..=k {
            expected[(x + k + 1) as usize] = pmf(scale, x) * n;
        }
        let stat = observed
            .iter()
            .zip(&expected)
            .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
            .sum();
        (stat, width - 1)
    }

    /// Upper χ² quantile by Wilson–Hilferty, at z = 4.75 (p ≈ 1e-6).
    fn chi_square_threshold(df: usize) -> f64 {
        let df = df as f64;
        let z = 4.75;
        let c = 2.0 / (9.0 * df);
        df * (1.0 - c + z * c.sqrt()).powi(3)
    }

    #[test]
    fn bernoulli_exp_matches_probability() {
        const N: usize = 40_000;
        for (i, &(n, d)) in [(1u64, 2u64), (1, 1), (5, 2)].iter().enumerate() {
            let mut r = rng(100 + i as u64);
            let hits = (0..N)
                .filter(|_| bernoulli_exp(n, d, &mut r).unwrap())
                .count();
            let p = (-(n as f64) / d as f64).exp();
            let freq = hits as f64 / N as f64;
            let se = (p * (1.0 - p) / N as f64).sqrt();
            assert!(
                (freq - p).abs() < 4.0 * se,
                "gamma {n}/{d}: frequency {freq}, expected {p} ± {}",
                4.0 * se
            );
        }
    }

    #[test]
    fn bernoulli_exp_edge_cases() {
        let mut r = rng(7);
        // γ = 0 → always true.
        assert!((0..1000).all(|_| bernoulli_exp(0, 3, &mut r).unwrap()));
        assert!(matches!(
            bernoulli_exp(1, 0, &mut r),
            Err(DpError::ZeroDenominator { .. })
        ));
    }

    #[test]
    fn uniform_below_is_in_range_and_unbiased() {
        let mut r = rng(11);
        assert_eq!(uniform_below(0, &mut r), Err(DpError::EmptyRange));
        assert!((0..100).all(|_| uniform_below(1, &mut r).unwrap() == 0));
        // Worst case for rejection: n just above 2^63.
        let big = (1u64 << 63) + 1;
        assert!((0..1000).all(|_| uniform_below(big, &mut r).unwrap() < big));
        // Frequencies over 6 values.
        const N: usize = 60_000;
        let mut counts = [0u64; 6];
        for _ in 0..N {
            counts[uniform_below(6, &mut r).unwrap() as usize] += 1;
        }
        let e = N as f64 / 6.0;
        let stat: f64 = counts.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
        assert!(stat < chi_square_threshold(5), "chi2 {stat}");
    }

    fn check_distribution(scale: Scale, wrong: Scale, seed: u64) {
        const N: usize = 200_000;
        let xs = samples(scale, N, seed);
        let n = N as f64;
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let true_var = discrete_laplace_variance(scale);
        let se = (true_var / n).sqrt();
        assert!(
            mean.abs() < 4.0 * se,
            "scale {scale}: mean {mean}, 4 SE = {}",
            4.0 * se
        );
        assert!(
            (var / true_var - 1.0).abs() < 0.03,
            "scale {scale}: variance {var}, expected {true_var}"
        );

        let k = bin_limit(scale, N);
        let (stat, df) = chi_square(&xs, scale, k);
        let threshold = chi_square_threshold(df);
        assert!(
            stat < threshold,
            "scale {scale}: chi2 {stat} ≥ {threshold} (df {df})"
        );

        // The same test must reject samples of a wrong scale.
        let wrong_xs = samples(wrong, N, seed + 1);
        let (wrong_stat, _) = chi_square(&wrong_xs, scale, k);
        assert!(
            wrong_stat > threshold,
            "wrong scale {wrong} passed as {scale}: chi2 {wrong_stat} < {threshold}"
        );
    }

    #[test]
    fn discrete_laplace_scale_2_fits_exact_pmf() {
        check_distribution(Scale::new(2, 1).unwrap(), Scale::new(3, 1).unwrap(), 1);
    }

    #[test]
    fn discrete_laplace_scale_10_over_3_fits_exact_pmf() {
        check_distribution(Scale::new(10, 3).unwrap(), Scale::new(3, 1).unwrap(), 2);
    }

    #[test]
    fn discrete_laplace_small_scale() {
        // Scale 1/4: almost all mass at 0; P(0) = (1-q)/(1+q), q = e^-4.
        let scale = Scale::new(1, 4).unwrap();
        let xs = samples(scale, 20_000, 3);
        let zeros = xs.iter().filter(|&&x| x == 0).count() as f64 / xs.len() as f64;
        let p0 = pmf(scale, 0);
        let se = (p0 * (1.0 - p0) / xs.len() as f64).sqrt();
        assert!((zeros - p0).abs() < 4.0 * se, "P(0) {zeros} vs {p0}");
    }

    #[test]
    fn same_seed_same_samples() {
        let scale = Scale::new(10, 3).unwrap();
        let a = samples(scale, 1000, 42);
        let b = samples(scale, 1000, 42);
        assert_eq!(a, b);
        let c = samples(scale, 1000, 43);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut r = rng(0);
        let err = sample_discrete_laplace(Scale { num: 0, den: 5 }, &mut r).unwrap_err();
        assert_eq!(err.to_string(), "scale must be positive: 0/5");
        let err = sample_discrete_laplace(Scale { num: 3, den: 0 }, &mut r).unwrap_err();
        assert_eq!(err.to_string(), "scale denominator must be nonzero: 3/0");
        let err = Scale::new(MAX_SCALE + 1, 1).unwrap_err();
        assert!(err.to_string().contains("scale too large"), "{err}");
        assert!(Scale::new(MAX_SCALE, 1).is_ok());

        let err = laplace_scale(1, 0).unwrap_err();
        assert_eq!(err, DpError::ZeroEpsilon);
        assert!(
            err.to_string().contains("epsilon must be positive"),
            "{err}"
        );
        let err = laplace_scale(0, 1_000_000).unwrap_err();
        assert!(
            err.to_string().contains("sensitivity must be positive"),
            "{err}"
        );
        let err = laplace_scale(u64::MAX, 1).unwrap_err();
        assert!(matches!(err, DpError::Overflow(_)), "{err}");
        assert!(err.to_string().contains("overflow"), "{err}");
        // Fits u64 but exceeds MAX_SCALE.
        let err = laplace_scale(1 << 40, 1).unwrap_err();
        assert!(matches!(err, DpError::ScaleTooLarge { .. }), "{err}");

        assert!(discrete_laplace_variance(Scale { num: 0, den: 1 }).is_nan());
    }

    #[test]
    fn laplace_scale_is_exact_and_reduced() {
        assert_eq!(laplace_scale(1, 500_000).unwrap(), Scale { num: 2, den: 1 });
        assert_eq!(
            laplace_scale(3, 900_000).unwrap(),
            Scale { num: 10, den: 3 }
        );
        assert_eq!(
            laplace_scale(1, 1_000_000).unwrap(),
            Scale { num: 1, den: 1 }
        );
        assert_eq!(
            laplace_scale(7, 3).unwrap(),
            Scale {
                num: 7_000_000,
                den: 3
            }
        );
        // Large sensitivity that only fits after reduction.
        assert_eq!(
            laplace_scale(1 << 40, 1_000_000).unwrap(),
            Scale {
                num: 1 << 40,
                den: 1
            }
        );
    }

    #[test]
    fn variance_formula() {
        // t = 1: 2e^-1 / (1 - e^-1)^2.
        let q = (-1.0f64).exp();
        let v = discrete_laplace_variance(Scale { num: 1, den: 1 });
        assert!((v - 2.0 * q / (1.0 - q).powi(2)).abs() < 1e-12);
        // Large t: ≈ 2t² (continuous Laplace).
        let v = discrete_laplace_variance(Scale { num: 1000, den: 1 });
        assert!((v / 2e6 - 1.0).abs() < 1e-3, "{v}");
    }
}
