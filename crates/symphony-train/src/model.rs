//! Binary classifiers with hand-written per-example gradients of the log-loss.
//!
//! * [`LogisticRegression`]: `p = sigmoid(w·x + b)`, parameters `[w_1..w_d, b]`.
//! * [`Mlp`]: one hidden layer of `tanh` units, `p = sigmoid(w2·tanh(W1 x + b1) + b2)`,
//!   parameters `[W1 (row-major, hidden × d), b1, w2, b2]`.
//!
//! Every model exposes its parameters as one flat `f64` vector, the unit that DP-SGD
//! updates and secure aggregation sums. Arithmetic is sequential and transcendental
//! functions come from the pure-Rust `libm`, so results are bit-reproducible.

use ndarray::Array1;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::dpsgd::{standard_normal, Dataset, DpSgdError};

/// Numerically stable logistic function.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + libm::exp(-z))
    } else {
        let e = libm::exp(z);
        e / (1.0 + e)
    }
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = 0.0;
    for (x, y) in a.iter().zip(b) {
        acc += x * y;
    }
    acc
}

fn check_len(expected: usize, got: usize) -> Result<(), DpSgdError> {
    if expected != got {
        return Err(DpSgdError::DimensionMismatch { expected, got });
    }
    Ok(())
}

/// A binary classifier trainable by DP-SGD.
pub trait Model: Clone {
    /// Number of input features.
    fn n_features(&self) -> usize;
    /// Number of parameters.
    fn n_parameters(&self) -> usize;
    /// The flat parameter vector.
    fn parameters(&self) -> Vec<f64>;
    /// Adds `delta` (layout of [`Model::parameters`]) to the parameters.
    fn add_to_parameters(&mut self, delta: &[f64]) -> Result<(), DpSgdError>;
    /// Probability of the positive class for one feature row (`x.len() == n_features`).
    fn predict_row(&self, x: &[f64]) -> f64;
    /// Writes the log-loss gradient of one example into `out`; the caller has checked
    /// `x.len() == n_features()` and `out.len() == n_parameters()`.
    fn write_example_gradient(&self, x: &[f64], label: bool, out: &mut [f64]);

    /// Probabilities of the positive class for every example of `data`.
    fn predict_proba(&self, data: &Dataset) -> Result<Vec<f64>, DpSgdError> {
        check_len(self.n_features(), data.n_features())?;
        Ok((0..data.len())
            .filter_map(|i| data.row(i))
            .map(|x| self.predict_row(x))
            .collect())
    }

    /// Writes the log-loss gradient of one example, clipped to L2 norm `clip_norm`,
    /// into `out`; returns the norm before clipping.
    fn clipped_example_gradient(
        &self,
        x: &[f64],
        label: bool,
        clip_norm: f64,
        out: &mut [f64],
    ) -> Result<f64, DpSgdError> {
        check_len(self.n_features(), x.len())?;
        check_len(self.n_parameters(), out.len())?;
        self.write_example_gradient(x, label, out);
        let norm = dot(out, out).sqrt();
        if norm > clip_norm {
            let scale = clip_norm / norm;
            out.iter_mut().for_each(|g| *g *= scale);
        }
        Ok(norm)
    }
}

/// Logistic regression `p(y=1|x) = sigmoid(w·x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    weights: Array1<f64>,
    bias: f64,
}

impl LogisticRegression {
    /// The all-zero model for `n_features` features.
    pub fn zeros(n_features: usize) -> Self {
        Self {
            weights: Array1::zeros(n_features),
            bias: 0.0,
        }
    }

    /// Builds a model from the flat parameter vector `[w_1, …, w_d, b]`.
    pub fn from_parameters(parameters: &[f64]) -> Result<Self, DpSgdError> {
        let Some((&bias, weights)) = parameters.split_last() else {
            return Err(DpSgdError::DimensionMismatch {
                expected: 1,
                got: 0,
            });
        };
        Ok(Self {
            weights: Array1::from(weights.to_vec()),
            bias,
        })
    }

    /// The weights.
    pub fn weights(&self) -> &Array1<f64> {
        &self.weights
    }

    /// The bias.
    pub fn bias(&self) -> f64 {
        self.bias
    }
}

impl Model for LogisticRegression {
    fn n_features(&self) -> usize {
        self.weights.len()
    }

    fn n_parameters(&self) -> usize {
        self.weights.len() + 1
    }

    fn parameters(&self) -> Vec<f64> {
        let mut p = self.weights.to_vec();
        p.push(self.bias);
        p
    }

    fn add_to_parameters(&mut self, delta: &[f64]) -> Result<(), DpSgdError> {
        check_len(self.n_parameters(), delta.len())?;
        for (w, d) in self.weights.iter_mut().zip(delta) {
            *w += d;
        }
        self.bias += delta[self.weights.len()];
        Ok(())
    }

    fn predict_row(&self, x: &[f64]) -> f64 {
        let z = self
            .weights
            .iter()
            .zip(x)
            .fold(0.0, |acc, (w, xi)| acc + w * xi);
        sigmoid(z + self.bias)
    }

    fn write_example_gradient(&self, x: &[f64], label: bool, out: &mut [f64]) {
        let residual = self.predict_row(x) - if label { 1.0 } else { 0.0 };
        if let Some((last, head)) = out.split_last_mut() {
            for (o, xi) in head.iter_mut().zip(x) {
                *o = residual * xi;
            }
            *last = residual;
        }
    }
}

/// A multi-layer perceptron with one hidden layer of `tanh` units.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    n_features: usize,
    hidden: usize,
    /// `[W1 (hidden × n_features, row-major), b1 (hidden), w2 (hidden), b2]`
    params: Vec<f64>,
}

impl Mlp {
    /// A network with weights drawn from `N(0, 1/fan_in)` (seeded) and zero biases;
    /// random initialisation breaks the symmetry between hidden units.
    pub fn new(n_features: usize, hidden: usize, seed: [u8; 32]) -> Result<Self, DpSgdError> {
        if n_features == 0 || hidden == 0 {
            return Err(DpSgdError::InvalidConfig(
                "MLP needs at least one feature and one hidden unit",
            ));
        }
        let mut rng = ChaCha20Rng::from_seed(seed);
        let n_params = hidden * n_features + 2 * hidden + 1;
        let mut params = vec![0.0; n_params];
        let s1 = 1.0 / (n_features as f64).sqrt();
        let s2 = 1.0 / (hidden as f64).sqrt();
        for p in params[..hidden * n_features].iter_mut() {
            *p = s1 * standard_normal(&mut rng);
        }
        let w2 = hidden * n_features + hidden;
        for p in params[w2..w2 + hidden].iter_mut() {
            *p = s2 * standard_normal(&mut rng);
        }
        Ok(Self {
            n_features,
            hidden,
            params,
        })
    }

    /// Number of hidden units.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Hidden activations `tanh(W1 x + b1)` written into `act`, then the output logit.
    fn forward(&self, x: &[f64], act: &mut [f64]) -> f64 {
        let (d, h) = (self.n_features, self.hidden);
        let (w1, rest) = self.params.split_at(h * d);
        let (b1, rest) = rest.split_at(h);
        let (w2, b2) = rest.split_at(h);
        for (k, a) in act.iter_mut().enumerate() {
            *a = libm::tanh(dot(&w1[k * d..(k + 1) * d], x) + b1[k]);
        }
        dot(w2, act) + b2.first().copied().unwrap_or(0.0)
    }
}

impl Model for Mlp {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn n_parameters(&self) -> usize {
        self.params.len()
    }

    fn parameters(&self) -> Vec<f64> {
        self.params.clone()
    }

    fn add_to_parameters(&mut self, delta: &[f64]) -> Result<(), DpSgdError> {
        check_len(self.params.len(), delta.len())?;
        for (p, d) in self.params.iter_mut().zip(delta) {
            *p += d;
        }
        Ok(())
    }

    fn predict_row(&self, x: &[f64]) -> f64 {
        let mut act = vec![0.0; self.hidden];
        sigmoid(self.forward(x, &mut act))
    }

    fn write_example_gradient(&self, x: &[f64], label: bool, out: &mut [f64]) {
        let (d, h) = (self.n_features, self.hidden);
        let mut act = vec![0.0; h];
        let residual = sigmoid(self.forward(x, &mut act)) - if label { 1.0 } else { 0.0 };
        let w2 = &self.params[h * d + h..h * d + 2 * h];
        let (g_w1, rest) = out.split_at_mut(h * d);
        let (g_b1, rest) = rest.split_at_mut(h);
        let (g_w2, g_b2) = rest.split_at_mut(h);
        for k in 0..h {
            // dL/dz1_k = r · w2_k · (1 − tanh²)
            let delta = residual * w2[k] * (1.0 - act[k] * act[k]);
            for (g, xi) in g_w1[k * d..(k + 1) * d].iter_mut().zip(x) {
                *g = delta * xi;
            }
            g_b1[k] = delta;
            g_w2[k] = residual * act[k];
        }
        if let Some(g) = g_b2.first_mut() {
            *g = residual;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn log_loss<M: Model>(m: &M, x: &[f64], label: bool) -> f64 {
        let p = m.predict_row(x);
        if label {
            -p.ln()
        } else {
            -(1.0 - p).ln()
        }
    }

    /// Central finite differences against the hand-written gradient.
    fn check_gradient<M: Model + std::fmt::Debug>(model: &M, x: &[f64], label: bool) {
        let mut g = vec![0.0; model.n_parameters()];
        model.write_example_gradient(x, label, &mut g);
        let h = 1e-6;
        for i in 0..model.n_parameters() {
            let mut e = vec![0.0; model.n_parameters()];
            e[i] = h;
            let mut plus = model.clone();
            plus.add_to_parameters(&e).unwrap();
            e[i] = -h;
            let mut minus = model.clone();
            minus.add_to_parameters(&e).unwrap();
            let numeric = (log_loss(&plus, x, label) - log_loss(&minus, x, label)) / (2.0 * h);
            assert!(
                (numeric - g[i]).abs() < 1e-6,
                "param {i}: analytic {} numeric {numeric}",
                g[i]
            );
        }
    }

    #[test]
    fn logistic_gradient_matches_finite_differences() {
        let m = LogisticRegression::from_parameters(&[0.3, -0.7, 0.2, 0.1]).unwrap();
        check_gradient(&m, &[1.0, 0.5, -2.0], true);
        check_gradient(&m, &[-0.4, 1.5, 0.3], false);
    }

    #[test]
    fn mlp_gradient_matches_finite_differences() {
        let m = Mlp::new(3, 4, [5; 32]).unwrap();
        assert_eq!(m.n_parameters(), 4 * 3 + 4 + 4 + 1);
        check_gradient(&m, &[1.0, 0.5, -2.0], true);
        check_gradient(&m, &[-0.4, 1.5, 0.3], false);
    }
}
