//! Seeded synthetic datasets, for tests and benchmarks only (real features come from
//! Vaults).

use ndarray::Array2;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::dpsgd::{standard_normal, Dataset, DpSgdError};

/// `n` examples with `d` standard-normal features labelled by a fixed random
/// hyperplane through the origin; each label is flipped with probability `label_noise`.
/// With `label_noise = 0` the data are linearly separable.
pub fn linear_dataset(
    n: usize,
    d: usize,
    label_noise: f64,
    seed: u64,
) -> Result<Dataset, DpSgdError> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let direction: Vec<f64> = (0..d).map(|_| standard_normal(&mut rng)).collect();
    let mut features = Array2::zeros((n, d));
    let mut labels = Vec::with_capacity(n);
    for mut row in features.rows_mut() {
        let mut margin = 0.0;
        for (x, w) in row.iter_mut().zip(&direction) {
            *x = standard_normal(&mut rng);
            margin += *x * w;
        }
        let flip = rng.gen::<f64>() < label_noise;
        labels.push((margin > 0.0) != flip);
    }
    Dataset::new(features, labels)
}

/// `n` examples with `d ≥ 2` standard-normal features and the XOR label
/// `x_0 · x_1 > 0`, which no linear model can fit (a linear model stays near 50%).
pub fn xor_dataset(n: usize, d: usize, seed: u64) -> Result<Dataset, DpSgdError> {
    if d < 2 {
        return Err(DpSgdError::InvalidConfig("xor_dataset needs d >= 2"));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut features = Array2::zeros((n, d));
    let mut labels = Vec::with_capacity(n);
    for mut row in features.rows_mut() {
        row.iter_mut().for_each(|x| *x = standard_normal(&mut rng));
        labels.push(row[0] * row[1] > 0.0);
    }
    Dataset::new(features, labels)
}
