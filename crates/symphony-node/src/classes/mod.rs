//! One module per task class: what differs per class behind
//! [`crate::planes::ClassModule`]. `query` (audience selection, seed 000),
//! `compute` (a noisy aggregate under differential privacy), `parse` (one
//! receipt into one Vault, free), `train` (the composite
//! federated-training task of seed 003, see `crate::training`).

pub mod compute;
pub mod parse;
pub mod query;
pub mod train;
