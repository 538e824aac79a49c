//! Training feature resolution (seed 003, section 3).
//!
//! A [`FeatureIntent`] names query attributes; each must be active, declared in the
//! `consumer_behavior_features` composition and derived by a rule this evaluator
//! implements. The resulting [`FeaturePlan`] is protocol-visible (it carries the
//! rules' parameters and a `plan_hash`) and evaluates features on plaintext facts
//! inside the enclave. All features are over purchases of the bound brand at or
//! before `now_ms`:
//!
//! - `purchase_recency` (threshold): 1.0 if a brand purchase lies in the window.
//! - `purchase_frequency` (aggregate count): number of brand purchases in the window.
//! - `brand_affinity_score` (composite share of category): brand purchases in the
//!   window divided by all purchases in the window whose category is one the brand's
//!   purchases in the window have; 0.0 without brand purchases.
//! - `purchase_recency_bucket` (bucket over a timestamp): one-hot of whole days since
//!   the last brand purchase (any age) over the boundaries, then "older", then "never".
//! - `purchase_amount_bucket` (bucket over an amount): one-hot of the mean brand
//!   purchase amount in the window (integer minor units, currency not converted: the
//!   catalog assumes one currency per market) over the boundaries, then "above", then
//!   "no purchase".
//!
//! Labels: [`FeaturePlan::label`] is 1.0 when the brand was bought in
//! `(cutoff_ms, cutoff_ms + horizon_days]`; features at the same cutoff only read
//! purchases at or before it, so a label never leaks into its features.

use serde::{Deserialize, Serialize};
use symphony_core::{content_hash, Digest, SemanticVersion};

use crate::catalog::CONSUMER_BEHAVIOR_FEATURES;
use crate::composition::AttributeComposition;
use crate::derivation::{AggregateFunction, CompositeCombinator, DerivationRule};
use crate::facts::{same_value, within_window, PurchaseFact, SubjectFacts, DAY_MS};
use crate::model::{AttributeName, ValueType};
use crate::registry::SemanticRegistry;
use crate::resolve::{active_query, check_window, composition_spec, non_empty, ResolutionError};

/// Domain tag of the feature plan hash.
pub const FEATURE_PLAN_TAG: &str = "scp/semantic/feature_plan/v1";

/// A training task's feature request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureIntent {
    /// The brand the features are about (a value).
    pub brand: String,
    /// Query attribute names, in the order the feature vector should follow.
    pub feature_names: Vec<String>,
    /// The window in days for windowed features.
    pub window_days: u32,
}

/// How one feature is computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Threshold: a brand purchase in the window (1 value).
    RecentPurchase,
    /// Aggregate count of brand purchases in the window (1 value).
    Frequency,
    /// Composite share of the brand in its categories (1 value).
    Affinity,
    /// One-hot of days since the last brand purchase (`boundaries + 2` values).
    RecencyBucket {
        /// Inclusive upper bounds in days.
        boundaries_days: Vec<u64>,
    },
    /// One-hot of the mean brand amount in the window (`boundaries + 2` values).
    AmountBucket {
        /// Inclusive upper bounds in minor units.
        boundaries_minor: Vec<u64>,
    },
}

impl FeatureKind {
    fn width(&self) -> usize {
        match self {
            FeatureKind::RecencyBucket { boundaries_days: b }
            | FeatureKind::AmountBucket {
                boundaries_minor: b,
            } => b.len() + 2,
            _ => 1,
        }
    }
}

/// One resolved feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// The query attribute.
    pub attribute: AttributeName,
    /// How it is computed.
    pub kind: FeatureKind,
}

/// Everything the feature plan hash covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeaturePlanBody {
    /// The registry version.
    pub semantic_version: SemanticVersion,
    /// Brand (normalized).
    pub brand: String,
    /// Window in days.
    pub window_days: u32,
    /// The features, in vector order.
    pub features: Vec<FeatureSpec>,
    /// The composition over the requested features.
    pub composition: AttributeComposition,
}

/// A resolved, hashed feature-engineering plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeaturePlan {
    body: FeaturePlanBody,
    plan_hash: Digest,
}

fn bucket_index(value: u64, boundaries: &[u64]) -> usize {
    boundaries
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(boundaries.len())
}

fn one_hot(out: &mut Vec<f64>, width: usize, hot: usize) {
    out.extend((0..width).map(|i| if i == hot { 1.0 } else { 0.0 }));
}

impl FeaturePlan {
    /// Everything the hash covers.
    pub fn body(&self) -> &FeaturePlanBody {
        &self.body
    }
    /// Content hash of the canonical encoding of the body.
    pub fn plan_hash(&self) -> Digest {
        self.plan_hash
    }
    /// Subjects below this count must not form a training cohort.
    pub fn minimum_result_cardinality(&self) -> u64 {
        self.body.composition.minimum_result_cardinality()
    }
    /// Length of the feature vector.
    pub fn dimension(&self) -> usize {
        self.body.features.iter().map(|f| f.kind.width()).sum()
    }

    /// A name per vector position (`attribute` or `attribute[i]` for one-hots).
    pub fn feature_labels(&self) -> Vec<String> {
        let mut labels = Vec::with_capacity(self.dimension());
        for f in &self.body.features {
            match f.kind.width() {
                1 => labels.push(f.attribute.to_string()),
                n => labels.extend((0..n).map(|i| format!("{}[{i}]", f.attribute))),
            }
        }
        labels
    }

    fn brand_purchases<'f>(
        &'f self,
        facts: &'f SubjectFacts,
    ) -> impl Iterator<Item = &'f PurchaseFact> + 'f {
        facts
            .purchases
            .iter()
            .filter(|p| same_value(&p.brand, &self.body.brand))
    }

    /// What each vector position means, in vector order: `(label, definition)` with the
    /// label of [`Self::feature_labels`]. Windows count back from the cutoff.
    pub fn feature_definitions(&self) -> Vec<(String, String)> {
        let brand = &self.body.brand;
        let window = self.body.window_days;
        let buckets = |b: &[u64], unit: &str| -> Vec<String> {
            let mut out = Vec::with_capacity(b.len() + 2);
            for (i, hi) in b.iter().enumerate() {
                out.push(match i {
                    0 => format!("at most {hi} {unit}"),
                    _ => format!("more than {} and at most {hi} {unit}", b[i - 1]),
                });
            }
            out.push(match b.last() {
                Some(last) => format!("more than {last} {unit}"),
                None => format!("any {unit}"),
            });
            out
        };
        let mut defs = Vec::with_capacity(self.dimension());
        for f in &self.body.features {
            let a = f.attribute.to_string();
            match &f.kind {
                FeatureKind::RecentPurchase => defs.push((
                    a,
                    format!("1 if {brand} was bought in the {window} days before the cutoff, else 0"),
                )),
                FeatureKind::Frequency => defs.push((
                    a,
                    format!("number of {brand} purchases in the {window} days before the cutoff"),
                )),
                FeatureKind::Affinity => defs.push((
                    a,
                    format!("{brand}'s share of the person's purchases in its categories over the {window} days before the cutoff (0..1)"),
                )),
                FeatureKind::RecencyBucket { boundaries_days } => {
                    let mut names = buckets(boundaries_days, "days");
                    names.push(format!("never bought {brand}"));
                    for (i, n) in names.into_iter().enumerate() {
                        defs.push((
                            format!("{a}[{i}]"),
                            format!("one-hot: days since the last {brand} purchase: {n}"),
                        ));
                    }
                }
                FeatureKind::AmountBucket { boundaries_minor } => {
                    let mut names = buckets(boundaries_minor, "minor currency units");
                    names.push(format!("no {brand} purchase in the window"));
                    for (i, n) in names.into_iter().enumerate() {
                        defs.push((
                            format!("{a}[{i}]"),
                            format!("one-hot: mean {brand} purchase amount over the {window} days before the cutoff: {n}"),
                        ));
                    }
                }
            }
        }
        defs
    }

    /// The feature vector at `now_ms`: deterministic, finite, of [`Self::dimension`].
    pub fn features(&self, facts: &SubjectFacts, now_ms: u64) -> Vec<f64> {
        let window = self.body.window_days;
        let in_window: Vec<&PurchaseFact> = facts
            .purchases
            .iter()
            .filter(|p| within_window(p.timestamp_ms, now_ms, window))
            .collect();
        let brand_in_window: Vec<&PurchaseFact> = in_window
            .iter()
            .copied()
            .filter(|p| same_value(&p.brand, &self.body.brand))
            .collect();
        let mut out = Vec::with_capacity(self.dimension());
        for f in &self.body.features {
            match &f.kind {
                FeatureKind::RecentPurchase => {
                    out.push(if brand_in_window.is_empty() { 0.0 } else { 1.0 })
                }
                FeatureKind::Frequency => out.push(brand_in_window.len() as f64),
                FeatureKind::Affinity => out.push(affinity(&in_window, &brand_in_window)),
                FeatureKind::RecencyBucket { boundaries_days } => {
                    let last = self
                        .brand_purchases(facts)
                        .filter(|p| p.timestamp_ms <= now_ms)
                        .map(|p| p.timestamp_ms)
                        .max();
                    let hot = match last {
                        Some(t) => bucket_index((now_ms - t) / DAY_MS, boundaries_days),
                        None => boundaries_days.len() + 1,
                    };
                    one_hot(&mut out, f.kind.width(), hot);
                }
                FeatureKind::AmountBucket { boundaries_minor } => {
                    let total: u128 = brand_in_window
                        .iter()
                        .map(|p| u128::from(p.amount_minor))
                        .sum();
                    let hot = match total.checked_div(brand_in_window.len() as u128) {
                        None => boundaries_minor.len() + 1,
                        Some(mean) => {
                            bucket_index(u64::try_from(mean).unwrap_or(u64::MAX), boundaries_minor)
                        }
                    };
                    one_hot(&mut out, f.kind.width(), hot);
                }
            }
        }
        out
    }

    /// 1.0 if the brand was bought in `(cutoff_ms, cutoff_ms + horizon_days]`, else 0.0.
    pub fn label(&self, facts: &SubjectFacts, cutoff_ms: u64, horizon_days: u32) -> f64 {
        let end = cutoff_ms.saturating_add(u64::from(horizon_days).saturating_mul(DAY_MS));
        let bought = self
            .brand_purchases(facts)
            .any(|p| p.timestamp_ms > cutoff_ms && p.timestamp_ms <= end);
        if bought {
            1.0
        } else {
            0.0
        }
    }

    /// Features at `cutoff_ms` and the label over the following `horizon_days`.
    pub fn training_example(
        &self,
        facts: &SubjectFacts,
        cutoff_ms: u64,
        horizon_days: u32,
    ) -> (Vec<f64>, f64) {
        (
            self.features(facts, cutoff_ms),
            self.label(facts, cutoff_ms, horizon_days),
        )
    }
}

fn affinity(in_window: &[&PurchaseFact], brand_in_window: &[&PurchaseFact]) -> f64 {
    if brand_in_window.is_empty() {
        return 0.0;
    }
    let in_category = in_window
        .iter()
        .filter(|p| {
            brand_in_window
                .iter()
                .any(|b| same_value(&p.category, b.category.trim()))
        })
        .count();
    // Every brand purchase is in its own category, so in_category >= brand count > 0.
    brand_in_window.len() as f64 / in_category.max(1) as f64
}

impl SemanticRegistry {
    fn feature_kind(
        &self,
        name: &AttributeName,
        rule: &DerivationRule,
    ) -> Result<FeatureKind, ResolutionError> {
        let source_type = |source: &AttributeName| self.canonical(source).map(|a| a.value_type);
        let not = |reason| ResolutionError::NotAFeature {
            name: name.clone(),
            reason,
        };
        match rule {
            DerivationRule::Threshold { .. } => Ok(FeatureKind::RecentPurchase),
            DerivationRule::Aggregate {
                function: AggregateFunction::Count,
                ..
            } => Ok(FeatureKind::Frequency),
            DerivationRule::Composite {
                combinator: CompositeCombinator::ShareOfCategory,
                ..
            } => Ok(FeatureKind::Affinity),
            DerivationRule::Bucket {
                source, boundaries, ..
            } => {
                if boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(not("bucket boundaries are not strictly ascending"));
                }
                match source_type(source) {
                    Some(ValueType::TimestampMs) => Ok(FeatureKind::RecencyBucket {
                        boundaries_days: boundaries.clone(),
                    }),
                    Some(ValueType::MoneyMinor) => Ok(FeatureKind::AmountBucket {
                        boundaries_minor: boundaries.clone(),
                    }),
                    _ => Err(not("only timestamp and amount buckets are evaluable")),
                }
            }
            _ => Err(not("its derivation rule has no feature evaluator")),
        }
    }

    /// Resolves a training feature request into a plan, or says which concept blocks it.
    pub fn resolve_features(&self, intent: &FeatureIntent) -> Result<FeaturePlan, ResolutionError> {
        let spec = composition_spec(self, CONSUMER_BEHAVIOR_FEATURES)?;
        let brand = non_empty("brand", &intent.brand)?;
        if intent.feature_names.is_empty() {
            return Err(ResolutionError::EmptyValue {
                parameter: "feature_names",
            });
        }
        let mut features: Vec<FeatureSpec> = Vec::with_capacity(intent.feature_names.len());
        for feature in &intent.feature_names {
            let attr = active_query(self, feature)?;
            if features.iter().any(|f| f.attribute == attr.name) {
                return Err(ResolutionError::DuplicateFeature {
                    name: attr.name.clone(),
                });
            }
            if !spec.operand_attributes.contains(&attr.name) {
                return Err(ResolutionError::NotAFeature {
                    name: attr.name.clone(),
                    reason: "not declared in the consumer_behavior_features composition",
                });
            }
            if attr.rule.max_window_days().is_some() {
                check_window(attr, intent.window_days)?;
            }
            features.push(FeatureSpec {
                attribute: attr.name.clone(),
                kind: self.feature_kind(&attr.name, &attr.rule)?,
            });
        }
        let operands: Vec<AttributeName> = features.iter().map(|f| f.attribute.clone()).collect();
        let composition = self
            .build_composition(spec, &operands)
            .map_err(ResolutionError::Composition)?;
        let body = FeaturePlanBody {
            semantic_version: self.semantic_version(),
            brand,
            window_days: intent.window_days,
            features,
            composition,
        };
        let plan_hash = content_hash(FEATURE_PLAN_TAG, &body)
            .map_err(|e| ResolutionError::Encoding(e.to_string()))?;
        Ok(FeaturePlan { body, plan_hash })
    }
}
