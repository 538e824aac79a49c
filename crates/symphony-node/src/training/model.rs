//! The global model of a run: logistic regression or a small MLP behind one enum.

use symphony_train::dpsgd::{train_local, Dataset, DpSgdConfig, LogisticRegression, Mlp, Model};

use crate::NodeError;

/// The global model.
#[derive(Clone, Debug, PartialEq)]
pub enum GlobalModel {
    /// Logistic regression.
    Logistic(LogisticRegression),
    /// One-hidden-layer MLP.
    Mlp(Mlp),
}

pub(crate) fn train_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(format!("training: {e}"))
}

impl GlobalModel {
    /// The flat parameter vector.
    pub fn parameters(&self) -> Vec<f64> {
        match self {
            GlobalModel::Logistic(m) => m.parameters(),
            GlobalModel::Mlp(m) => m.parameters(),
        }
    }

    /// Number of parameters.
    pub fn n_parameters(&self) -> usize {
        match self {
            GlobalModel::Logistic(m) => m.n_parameters(),
            GlobalModel::Mlp(m) => m.n_parameters(),
        }
    }

    /// Adds `delta` to the parameters.
    pub fn add(&mut self, delta: &[f64]) -> Result<(), NodeError> {
        match self {
            GlobalModel::Logistic(m) => m.add_to_parameters(delta),
            GlobalModel::Mlp(m) => m.add_to_parameters(delta),
        }
        .map_err(train_err)
    }

    /// Positive-class probabilities.
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f64>, NodeError> {
        match self {
            GlobalModel::Logistic(m) => m.predict_proba(data),
            GlobalModel::Mlp(m) => m.predict_proba(data),
        }
        .map_err(train_err)
    }

    /// Local DP-SGD from this model: the parameter delta and examples processed.
    pub fn train_local(
        &self,
        data: &Dataset,
        config: &DpSgdConfig,
        seed: [u8; 32],
    ) -> Result<(Vec<f64>, u64), NodeError> {
        match self {
            GlobalModel::Logistic(m) => {
                let t = train_local(m, data, config, seed).map_err(train_err)?;
                Ok((t.update_from(m).map_err(train_err)?, t.examples_processed))
            }
            GlobalModel::Mlp(m) => {
                let t = train_local(m, data, config, seed).map_err(train_err)?;
                Ok((t.update_from(m).map_err(train_err)?, t.examples_processed))
            }
        }
    }

    /// Named tensors for the safetensors file: (name, shape, values).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        let p = self.parameters();
        match self {
            GlobalModel::Logistic(m) => {
                let d = m.n_features();
                vec![
                    ("bias".into(), vec![1], p[d..].to_vec()),
                    ("weights".into(), vec![d], p[..d].to_vec()),
                ]
            }
            GlobalModel::Mlp(m) => {
                let (d, h) = (m.n_features(), m.hidden());
                let w1 = h * d;
                vec![
                    ("hidden.bias".into(), vec![h], p[w1..w1 + h].to_vec()),
                    ("hidden.weight".into(), vec![h, d], p[..w1].to_vec()),
                    ("output.bias".into(), vec![1], p[w1 + 2 * h..].to_vec()),
                    (
                        "output.weight".into(),
                        vec![h],
                        p[w1 + h..w1 + 2 * h].to_vec(),
                    ),
                ]
            }
        }
    }
}
