//! The training task spec a model operator writes (`examples/train.toml`).
//!
//! This is still training *intent* (seed 003, section 1): it becomes protocol work
//! only when admission turns it into a `task_class: train` `TaskEnvelope`.

use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;

use crate::NodeError;

/// The model family the run trains.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    /// `p = sigmoid(w·x + b)`.
    LogisticRegression,
    /// One hidden `tanh` layer.
    Mlp,
}

/// Eligible market scope: subjects whose home country is listed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketScope {
    /// ISO country codes as in the Vault data (`SG`, `MY`, ...).
    pub countries: Vec<String>,
}

/// Maximum rounds, convergence threshold and early-stop conditions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterationSpec {
    /// Hard cap on rounds.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_rounds: u32,
    /// Converged when, over the last 3 rounds, the released held-out loss improves
    /// on the best before them by less than this or than 2 standard deviations of
    /// its release noise, whichever is larger (0 turns the rule off).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub convergence_threshold: f64,
    /// Stop after this many rounds without a new best held-out loss (0 = never);
    /// the best model is then delivered.
    #[serde(default)]
    pub early_stop_patience: u32,
}

/// A decimal written as a number or a string, kept as its decimal text (parsed
/// exactly later, with [`Epsilon`]'s fixed-point rules).
/// Binary encodings (the replicated log) always carry the string.
fn decimal_number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    if !d.is_human_readable() {
        return String::deserialize(d);
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Decimal {
        Text(String),
        Integer(u64),
        Number(f64),
    }
    match Decimal::deserialize(d)? {
        Decimal::Text(s) => Ok(s),
        Decimal::Integer(n) => Ok(n.to_string()),
        // Rust prints the shortest text that reads back as the same f64: 0.9 → "0.9".
        Decimal::Number(x) if x.is_finite() => Ok(x.to_string()),
        Decimal::Number(x) => Err(serde::de::Error::custom(format!(
            "epsilon must be a finite decimal, not {x}"
        ))),
    }
}

/// Total privacy budget of the run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpec {
    /// ε for the whole run (decimal, at most 6 fractional digits): a number
    /// (`epsilon = 0.9`) or, as before, a string (`epsilon = "0.9"`).
    #[serde(deserialize_with = "decimal_number_or_string")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[0-9]+(\.[0-9]{1,6})?$", example = "4.0")
    )]
    pub epsilon: String,
    /// δ for the whole run, in (0, 1).
    #[cfg_attr(
        feature = "openapi",
        schema(exclusive_minimum = 0, exclusive_maximum = 1)
    )]
    pub delta: f64,
}

/// DP-SGD hyper-parameters of every Vault's local training.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSgdSpec {
    /// Local DP-SGD steps per round.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub local_steps: u64,
    /// Poisson sampling rate `q`, in (0, 1].
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1))]
    pub sampling_rate: f64,
    /// Noise multiplier σ (> 0: DP-SGD without noise is not private).
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0))]
    pub noise_multiplier: f64,
    /// Per-example clipping norm C.
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0))]
    pub clip_norm: f64,
    /// Step size η.
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0))]
    pub learning_rate: f64,
}

/// What the result must reach to be accepted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptanceSpec {
    /// Minimum AUC on the held-out split.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub min_auc: f64,
    /// Minimum accuracy on the held-out split (0 = not checked).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub min_accuracy: f64,
    /// Maximum loss-threshold membership-inference advantage.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub max_mia_advantage: f64,
}

/// A model operator's training request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// The model operator (task submitter) identity.
    pub model_operator: String,
    /// Human-readable target.
    pub target: String,
    /// The brand the propensity is about.
    pub brand: String,
    /// Label horizon: bought the brand within this many days after the cutoff.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub horizon_days: u32,
    /// Window of the windowed features, days before the cutoff.
    pub window_days: u32,
    /// Eligible market scope.
    pub market_scope: MarketScope,
    /// Allowed feature families (query attributes of `consumer_behavior_features`).
    pub feature_families: Vec<String>,
    /// Model type.
    pub model: ModelType,
    /// Hidden units of the MLP (ignored for logistic regression).
    #[serde(default = "default_hidden")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256, default = 8))]
    pub mlp_hidden: usize,
    /// Iteration policy.
    pub iteration_policy: IterationSpec,
    /// Total (ε, δ).
    pub privacy: PrivacySpec,
    /// DP-SGD hyper-parameters.
    pub dp_sgd: DpSgdSpec,
    /// Acceptance criteria.
    pub acceptance: AcceptanceSpec,
    /// Fraction of each Vault's examples held out for evaluation, in (0, 0.9).
    #[cfg_attr(
        feature = "openapi",
        schema(exclusive_minimum = 0, exclusive_maximum = 0.9)
    )]
    pub holdout_fraction: f64,
    /// Minimum Vaults per round (default: a majority, at least 2).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub minimum_vault_quorum: Option<u32>,
    /// Simulated wall time per round, ms (rounds crossing an epoch boundary settle
    /// in their own dispatch epochs).
    #[serde(default = "default_round_ms")]
    #[cfg_attr(feature = "openapi", schema(default = 900000))]
    pub round_duration_ms: u64,
}

fn default_hidden() -> usize {
    8
}

fn default_round_ms() -> u64 {
    900_000
}

fn refused(what: &str) -> NodeError {
    NodeError::Refused(format!("training spec: {what}"))
}

impl TrainingSpec {
    /// Parses TOML (or JSON when the text starts with `{`) and validates.
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let spec: TrainingSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| refused(&e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| refused(&e.to_string()))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The run's total ε in fixed point.
    pub fn epsilon_total(&self) -> Result<Epsilon, NodeError> {
        Epsilon::parse_decimal(&self.privacy.epsilon).map_err(|e| refused(&e.to_string()))
    }

    /// Range checks of every field.
    pub fn validate(&self) -> Result<(), NodeError> {
        let d = &self.dp_sgd;
        let checks: [(bool, &str); 11] = [
            (
                self.iteration_policy.max_rounds >= 1,
                "max_rounds must be >= 1",
            ),
            (
                self.iteration_policy.max_rounds <= 1_000,
                "max_rounds must be <= 1000",
            ),
            (
                self.iteration_policy.convergence_threshold.is_finite()
                    && self.iteration_policy.convergence_threshold >= 0.0,
                "convergence_threshold must be >= 0",
            ),
            (
                self.privacy.delta > 0.0 && self.privacy.delta < 1.0,
                "delta must be in (0, 1)",
            ),
            (d.local_steps >= 1, "local_steps must be >= 1"),
            (
                d.sampling_rate > 0.0 && d.sampling_rate <= 1.0,
                "sampling_rate must be in (0, 1]",
            ),
            (
                d.noise_multiplier > 0.0 && d.noise_multiplier.is_finite(),
                "noise_multiplier must be > 0 (DP-SGD without noise is not private)",
            ),
            (
                d.clip_norm > 0.0 && d.learning_rate > 0.0,
                "clip_norm and learning_rate must be > 0",
            ),
            (
                self.holdout_fraction > 0.0 && self.holdout_fraction < 0.9,
                "holdout_fraction must be in (0, 0.9)",
            ),
            (
                (0.0..=1.0).contains(&self.acceptance.min_auc)
                    && (0.0..=1.0).contains(&self.acceptance.max_mia_advantage)
                    && (0.0..=1.0).contains(&self.acceptance.min_accuracy),
                "acceptance criteria must be in [0, 1]",
            ),
            (
                self.horizon_days >= 1 && self.mlp_hidden >= 1 && self.mlp_hidden <= 256,
                "horizon_days and mlp_hidden must be >= 1 (mlp_hidden <= 256)",
            ),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(refused(what));
        }
        if self.market_scope.countries.is_empty() || self.feature_families.is_empty() {
            return Err(refused(
                "market_scope.countries and feature_families must not be empty",
            ));
        }
        if self.epsilon_total()? == Epsilon::ZERO {
            return Err(refused("privacy.epsilon must be > 0"));
        }
        use symphony_semantic::vocabulary::{check_brand, check_country};
        check_brand("brand", &self.brand).map_err(|e| refused(&e.to_string()))?;
        for c in &self.market_scope.countries {
            check_country("market_scope.countries", c).map_err(|e| refused(&e.to_string()))?;
        }
        if let Some(q) = self.minimum_vault_quorum {
            if q == 0 {
                return Err(refused("minimum_vault_quorum must be >= 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = include_str!("../../../../examples/train.toml");

    #[test]
    fn epsilon_is_a_number_or_a_string_and_parses_exactly() {
        let number = TrainingSpec::parse(SPEC).unwrap();
        assert_eq!(number.privacy.epsilon, "0.9");
        assert_eq!(number.epsilon_total().unwrap(), Epsilon::from_milli(900));
        let text = SPEC.replace("epsilon = 0.9 ", "epsilon = \"0.9\"");
        assert_ne!(text, SPEC);
        assert_eq!(TrainingSpec::parse(&text).unwrap(), number);
        let int = SPEC.replace("epsilon = 0.9 ", "epsilon = 2 ");
        assert_eq!(
            TrainingSpec::parse(&int).unwrap().epsilon_total().unwrap(),
            Epsilon::from_milli(2_000)
        );
        let json = serde_json::to_string(&number).unwrap();
        assert_eq!(TrainingSpec::parse(&json).unwrap(), number);
        // The replicated log encodes specs with bincode (not self-describing).
        let bytes = bincode::serialize(&number).unwrap();
        assert_eq!(
            bincode::deserialize::<TrainingSpec>(&bytes).unwrap(),
            number
        );
        let bad = SPEC.replace("epsilon = 0.9 ", "epsilon = true ");
        let e = TrainingSpec::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("training spec"), "{e}");
    }
}
