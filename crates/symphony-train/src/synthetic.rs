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
