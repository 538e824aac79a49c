//! The mathematics of Symphony's federated training (`task_class: train`): what a Vault
//! computes inside its enclave each round, how the master's aggregation runtime combines
//! the Vaults' updates, how the privacy budget of a run is accounted, and how the
//! result is evaluated. Pure computation: no IO, no clock, no OS randomness; every
//! random choice comes from a caller-provided seed, so a round replays bit-identically.
//!
//! * [`model`]: logistic regression and a one-hidden-layer `tanh` MLP with
//!   hand-written gradients on `ndarray`/slices (no ML framework).
//! * [`dpsgd`]: those models trained by DP-SGD (Abadi et al. 2016): per-example
//!   clipping to L2 norm `C`, Gaussian noise `N(0, (σC)²)` on the sum, division by the
//!   expected batch size, Poisson (or fixed-size) sampling. `f64` throughout,
//!   sequential reductions, pure-Rust `libm` transcendentals.
//! * [`accountant`]: Rényi-DP accountant of the Poisson-subsampled Gaussian mechanism
//!   (Mironov, Talwar & Zhang 2019), composed over steps, converted to (ε, δ) by the
//!   bound of Balle et al. 2020 over `dp_accounting`'s default orders; checked against
//!   golden values of Google's `dp-accounting` 0.6.0.
//! * [`secagg`]: pairwise-masked secure aggregation (Bonawitz et al. 2017) with X25519,
//!   HKDF-SHA256 and ChaCha20 masks over `Z_2^32`, Shamir-shared secrets (`blahaj`) for
//!   dropout recovery, and example-weighted federated averaging (McMahan et al. 2017).
//! * [`metrics`]: AUC, accuracy, log-loss and the loss-threshold membership-inference
//!   advantage (Yeom et al. 2018) used by composite verification.
//! * [`synthetic`]: seeded synthetic datasets for tests and benchmarks only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
pub mod dpsgd;
pub mod metrics;
pub mod model;
pub mod secagg;
pub mod synthetic;
