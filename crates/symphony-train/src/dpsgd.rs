//! Models of [`crate::model`] trained with DP-SGD (Abadi et al. 2016, "Deep Learning with
//! Differential Privacy").
//!
//! One step:
//! 1. sample a batch: Poisson with rate `q` (each example independently; implemented
//!    by geometric skips, so a step costs O(batch) random draws) or a fixed-size batch
//!    drawn without replacement;
//! 2. per example, the gradient of the log-loss is clipped to L2 norm `C`;
//! 3. the clipped gradients are summed in index order, Gaussian noise `N(0, (σC)²)` is
//!    added to every coordinate, and the sum is divided by the *expected* batch size
//!    (`q·n` for Poisson, `B` for fixed size) so the divisor does not leak the batch size;
//! 4. `θ ← θ − η·g`.
//!
//! Determinism: all randomness comes from a [`ChaCha20Rng`] seeded by the caller; all
//! reductions are sequential; transcendental functions come from the pure-Rust `libm`
//! crate rather than the platform's C library. The same seed and inputs therefore give
//! bit-identical parameters on every platform with IEEE-754 doubles.
//!
//! Only Poisson sampling matches the privacy analysis of [`crate::accountant`];
//! fixed-size sampling is offered for experiments and must not be accounted as if it
//! were Poisson sampling with `q = B/n` without saying so.

use ndarray::{Array2, Axis, Slice};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub use crate::model::{LogisticRegression, Mlp, Model};

/// Errors from DP-SGD inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DpSgdError {
    /// Features and labels disagree in length.
    #[error("{features} feature rows but {labels} labels")]
    LengthMismatch {
        /// Rows of the feature matrix.
        features: usize,
        /// Number of labels.
        labels: usize,
    },
    /// The dataset has no rows.
    #[error("dataset is empty")]
    EmptyDataset,
    /// A feature is NaN or infinite.
    #[error("feature at row {row}, column {column} is not finite")]
    NonFiniteFeature {
        /// Row index.
        row: usize,
        /// Column index.
        column: usize,
    },
    /// Model and data have different numbers of features, or a parameter vector has
    /// the wrong length.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A hyper-parameter is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

/// A labelled binary-classification dataset: one row of `f64` features per example.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Array2<f64>,
    labels: Vec<bool>,
}

impl Dataset {
    /// Checks shapes and finiteness; stores the features in row-major layout.
    pub fn new(features: Array2<f64>, labels: Vec<bool>) -> Result<Self, DpSgdError> {
        if features.nrows() != labels.len() {
            return Err(DpSgdError::LengthMismatch {
                features: features.nrows(),
                labels: labels.len(),
            });
        }
        if labels.is_empty() {
            return Err(DpSgdError::EmptyDataset);
        }
        if let Some(((row, column), _)) = features.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(DpSgdError::NonFiniteFeature { row, column });
        }
        let features = features.as_standard_layout().into_owned();
        Ok(Self { features, labels })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false: an empty dataset is rejected by [`Dataset::new`].
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features per example.
    pub fn n_features(&self) -> usize {
        self.features.ncols()
    }

    /// The feature matrix (rows are examples).
    pub fn features(&self) -> &Array2<f64> {
        &self.features
    }

    /// The labels.
    pub fn labels(&self) -> &[bool] {
        &self.labels
    }

    /// Splits into the first `at` examples and the rest (e.g. training / held-out).
    pub fn split_at(&self, at: usize) -> Result<(Dataset, Dataset), DpSgdError> {
        if at == 0 || at >= self.len() {
            return Err(DpSgdError::EmptyDataset);
        }
        let head = self
            .features
            .slice_axis(Axis(0), Slice::from(..at))
            .to_owned();
        let tail = self
            .features
            .slice_axis(Axis(0), Slice::from(at..))
            .to_owned();
        Ok((
            Dataset::new(head, self.labels[..at].to_vec())?,
            Dataset::new(tail, self.labels[at..].to_vec())?,
        ))
    }

    /// The features of example `index`, or `None` when out of range.
    pub fn row(&self, index: usize) -> Option<&[f64]> {
        let d = self.n_features();
        let all = self.features.as_slice()?;
        all.get(index * d..(index + 1) * d)
    }
}

/// How a batch is drawn for each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every example independently with probability `rate` (what the accountant assumes).
    Poisson {
        /// Sampling rate `q` in `(0, 1]`.
        rate: f64,
    },
    /// `batch_size` distinct examples, uniformly without replacement.
    FixedSize {
        /// Batch size `B` in `1..=n`.
        batch_size: usize,
    },
}

/// Hyper-parameters of local DP-SGD training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgdConfig {
    /// Step size η.
    pub learning_rate: f64,
    /// Per-example L2 clipping norm C.
    pub clip_norm: f64,
    /// Noise multiplier σ (noise standard deviation is σ·C); 0 disables noise.
    pub noise_multiplier: f64,
    /// Batch sampling.
    pub sampling: Sampling,
    /// Number of steps.
    pub steps: u64,
}

impl DpSgdConfig {
    /// Checks the ranges of every field against a dataset of `n_examples`.
    pub fn validate(&self, n_examples: usize) -> Result<(), DpSgdError> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(DpSgdError::InvalidConfig(
                "learning_rate must be finite and > 0",
            ));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(DpSgdError::InvalidConfig(
                "clip_norm must be finite and > 0",
            ));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(DpSgdError::InvalidConfig(
                "noise_multiplier must be finite and >= 0",
            ));
        }
        match self.sampling {
            Sampling::Poisson { rate } if !(rate > 0.0 && rate <= 1.0) => {
                Err(DpSgdError::InvalidConfig("Poisson rate must be in (0, 1]"))
            }
            Sampling::FixedSize { batch_size } if batch_size == 0 || batch_size > n_examples => {
                Err(DpSgdError::InvalidConfig(
                    "batch_size must be in 1..=n_examples",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Expected batch size, the divisor of the noisy gradient sum.
    pub fn expected_batch_size(&self, n_examples: usize) -> f64 {
        match self.sampling {
            Sampling::Poisson { rate } => rate * n_examples as f64,
            Sampling::FixedSize { batch_size } => batch_size as f64,
        }
    }
}

/// One standard normal draw (Box–Muller, first output only).
pub fn standard_normal(rng: &mut ChaCha20Rng) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let u2: f64 = rng.gen();
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * std::f64::consts::PI * u2)
}

/// Indices of one batch, increasing for Poisson sampling.
pub fn sample_batch(sampling: Sampling, n_examples: usize, rng: &mut ChaCha20Rng) -> Vec<usize> {
    match sampling {
        Sampling::Poisson { rate } if rate >= 1.0 => (0..n_examples).collect(),
        Sampling::Poisson { rate } => {
            // Gaps between selected indices are Geometric(rate): floor(ln U / ln(1-q)).
            let log1mq = libm::log1p(-rate);
            let mut batch = Vec::with_capacity((rate * n_examples as f64) as usize + 16);
            let mut next = 0usize;
            loop {
                let u = 1.0 - rng.gen::<f64>();
                let skip = libm::floor(libm::log(u) / log1mq);
                if skip.is_nan() || skip >= (n_examples - next) as f64 {
                    break;
                }
                next += skip as usize;
                batch.push(next);
                next += 1;
                if next >= n_examples {
                    break;
                }
            }
            batch
        }
        Sampling::FixedSize { batch_size } => {
            let mut idx =
                rand::seq::index::sample(rng, n_examples, batch_size.min(n_examples)).into_vec();
            idx.sort_unstable();
            idx
        }
    }
}

/// Computes the noisy clipped mean gradient of one DP-SGD step into `out`;
/// returns the realised batch size.
pub fn noisy_gradient<M: Model>(
    model: &M,
    data: &Dataset,
    config: &DpSgdConfig,
    rng: &mut ChaCha20Rng,
    out: &mut [f64],
) -> Result<usize, DpSgdError> {
    config.validate(data.len())?;
    check_dimensions(model, data)?;
    if out.len() != model.n_parameters() {
        return Err(DpSgdError::DimensionMismatch {
            expected: model.n_parameters(),
            got: out.len(),
        });
    }
    let batch = sample_batch(config.sampling, data.len(), rng);
    let mut scratch = vec![0.0; out.len()];
    out.iter_mut().for_each(|o| *o = 0.0);
    for &i in &batch {
        let x = data.row(i).ok_or(DpSgdError::EmptyDataset)?;
        model.clipped_example_gradient(x, data.labels[i], config.clip_norm, &mut scratch)?;
        for (o, g) in out.iter_mut().zip(&scratch) {
            *o += g;
        }
    }
    let noise_std = config.noise_multiplier * config.clip_norm;
    let denominator = config.expected_batch_size(data.len());
    for o in out.iter_mut() {
        if noise_std > 0.0 {
            *o += noise_std * standard_normal(rng);
        }
        *o /= denominator;
    }
    Ok(batch.len())
}

/// Result of [`train_local`].
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTraining<M> {
    /// The trained model.
    pub model: M,
    /// Steps taken.
    pub steps: u64,
    /// Sum of realised batch sizes (examples whose gradients were computed).
    pub examples_processed: u64,
}

impl<M: Model> LocalTraining<M> {
    /// The parameter delta `trained − initial`, the update sent to secure aggregation.
    pub fn update_from(&self, initial: &M) -> Result<Vec<f64>, DpSgdError> {
        if initial.n_parameters() != self.model.n_parameters() {
            return Err(DpSgdError::DimensionMismatch {
                expected: self.model.n_parameters(),
                got: initial.n_parameters(),
            });
        }
        Ok(self
            .model
            .parameters()
            .iter()
            .zip(initial.parameters())
            .map(|(a, b)| a - b)
            .collect())
    }
}

/// Runs `config.steps` DP-SGD steps from `initial`, with all randomness from `seed`.
pub fn train_local<M: Model>(
    initial: &M,
    data: &Dataset,
    config: &DpSgdConfig,
    seed: [u8; 32],
) -> Result<LocalTraining<M>, DpSgdError> {
    config.validate(data.len())?;
    check_dimensions(initial, data)?;
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut model = initial.clone();
    let mut gradient = vec![0.0; model.n_parameters()];
    let mut examples_processed = 0u64;
    for _ in 0..config.steps {
        let batch = noisy_gradient(&model, data, config, &mut rng, &mut gradient)?;
        examples_processed += batch as u64;
        for g in gradient.iter_mut() {
            *g *= -config.learning_rate;
        }
        model.add_to_parameters(&gradient)?;
    }
    Ok(LocalTraining {
        model,
        steps: config.steps,
        examples_processed,
    })
}

fn check_dimensions<M: Model>(model: &M, data: &Dataset) -> Result<(), DpSgdError> {
    if model.n_features() != data.n_features() {
        return Err(DpSgdError::DimensionMismatch {
            expected: model.n_features(),
            got: data.n_features(),
        });
    }
    Ok(())
}
