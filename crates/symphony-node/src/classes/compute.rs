//! `compute`: a bounded computation over authorized records that returns a noisy
//! aggregate — "number of customers and mean basket value per home city for
//! customers of brand X in the last N days".
//!
//! - **Slice** (each Vault's enclave): for every subject with consent for the
//!   analytics scope and a reservation, if eligible under the resolved plan: a
//!   task-scoped de-duplication token, the home city, and the sum and count of its
//!   qualifying purchases (`EnterpriseNode::execute_compute_slice`).
//! - **Aggregation** (the masters' aggregation enclave): the same person in several
//!   Vaults is merged by token (one person, one contribution); each person's mean
//!   basket value is clipped to `[0, contribution_bound_minor]`; per group the exact
//!   count and clipped sum get discrete Laplace noise (exact integer sampler,
//!   `symphony_core::dp`): the declared ε is split equally, counts with L1
//!   sensitivity 1 (scale 2/ε), sums with sensitivity `bound` (scale 2·bound/ε);
//!   a person is in one group, so the two releases compose to ε. The noise is drawn
//!   from a seed only the aggregation enclave can derive (its key signs the
//!   envelope hash): the masters and the submitter cannot subtract it. Groups whose
//!   *noisy* count is below `minimum_result_cardinality` are suppressed (group keys
//!   come from the data, so this thresholding adds a δ of at most ½·e^(−(τ−1)·ε/2)
//!   per group — documented in ARCHITECTURE.md). Only the noisy table leaves the
//!   enclave; the per-Vault inputs are dropped before it returns.
//! - **Price**: the compute formula over the subjects the slices evaluated (compute
//!   units and data volume — not over how many were eligible, which the fee would
//!   otherwise reveal) and the declared ε.

use std::collections::BTreeMap;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::dp::{laplace_scale, sample_discrete_laplace};
use symphony_core::encoding::{content_hash, tagged_hash, Digest};
use symphony_core::envelope::{AggregationMethod, TaskClass, TaskEnvelope};
use symphony_core::ids::TaskId;
use symphony_core::UsageScope;
use symphony_economics::pricing::{data_volume_units, ComputeUsage};
use symphony_economics::{PolicyParams, TaskUsage};
use symphony_enclave::{AttestationReport, SoftwareEnclave, Tee};
use symphony_master::{link_commitment, AggregateRecord};
use symphony_semantic::{ResolvedAudiencePlan, SemanticRegistry};

use crate::bundle::{ComputeBody, Contribution, SliceAssignment, SliceResultBundle};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{MasterServices, Observer};
use crate::planes::{ClassAdmission, ClassModule, Report, Run};
use crate::task::{ComputeOutcome, ComputeSpec, GroupValue};
use crate::verify::AggregateClaim;
use crate::NodeError;

/// Hash tag of a released compute table.
pub const COMPUTE_RESULT_TAG: &str = "scp/compute-result/v1";

/// The noise-free table the aggregation enclave computed, before noise: kept for
/// audits of the embedded network (tests compare it with a plaintext computation);
/// never released to the submitter or recorded by the masters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactGroup {
    /// Distinct customers.
    pub count: u64,
    /// Sum of clipped per-customer mean basket values, minor units.
    pub clipped_sum: u64,
}

/// What the aggregation enclave returns.
#[derive(Clone, Debug)]
pub struct ComputeAggregate {
    /// Released groups, sorted by group.
    pub groups: Vec<GroupValue>,
    /// Suppressed groups, sorted.
    pub suppressed_groups: Vec<String>,
    /// The noise-free table (audit only; see [`ExactGroup`]).
    pub exact: BTreeMap<String, ExactGroup>,
    /// Hash of `(groups, suppressed_groups)`.
    pub result_hash: Digest,
    /// Commitment linking the result to the input commitments.
    pub commitment: Digest,
    /// Input commitments, sorted.
    pub input_commitments: Vec<Digest>,
    /// The aggregation enclave's attestation.
    pub attestation: AttestationReport,
}

/// The `compute` class over a spec.
pub struct Compute<'a> {
    /// The spec.
    pub spec: &'a ComputeSpec,
}

impl Compute<'_> {
    fn epsilon(&self) -> Result<Epsilon, NodeError> {
        let e = Epsilon::parse_decimal(&self.spec.epsilon)
            .map_err(|e| NodeError::Refused(format!("epsilon {:?}: {e}", self.spec.epsilon)))?;
        if e.micro == 0 {
            return Err(NodeError::Refused(
                "epsilon must be positive: a release with ε = 0 carries no information".into(),
            ));
        }
        Ok(e)
    }
}

/// Merges contributions by person, clips each person's mean basket value to
/// `[0, bound]`, and sums per group (the noise-free table).
pub fn exact_table(
    contributions: impl IntoIterator<Item = Contribution>,
    bound: u64,
) -> BTreeMap<String, ExactGroup> {
    let mut people: BTreeMap<[u8; 32], (String, u64, u64)> = BTreeMap::new();
    for c in contributions {
        let e = people
            .entry(c.dedup_token)
            .or_insert((c.group.clone(), 0, 0));
        // One person, one group: the smallest group name seen (deterministic).
        if c.group < e.0 {
            e.0 = c.group;
        }
        e.1 = e.1.saturating_add(c.amount_sum_minor);
        e.2 = e.2.saturating_add(c.purchases);
    }
    let mut table: BTreeMap<String, ExactGroup> = BTreeMap::new();
    for (group, sum, n) in people.into_values() {
        let mean = sum.checked_div(n).unwrap_or(0).min(bound);
        let g = table.entry(group).or_default();
        g.count += 1;
        g.clipped_sum = g.clipped_sum.saturating_add(mean);
    }
    table
}

/// Adds discrete Laplace noise to the table and suppresses small groups.
pub fn release(
    exact: &BTreeMap<String, ExactGroup>,
    bound: u64,
    epsilon: Epsilon,
    minimum_result_cardinality: u64,
    rng: &mut ChaCha20Rng,
) -> Result<(Vec<GroupValue>, Vec<String>), NodeError> {
    let half = (epsilon.micro / 2).max(1);
    let dp = |e: symphony_core::dp::DpError| NodeError::Refused(e.to_string());
    let count_scale = laplace_scale(1, half).map_err(dp)?;
    let sum_scale = laplace_scale(bound.max(1), half).map_err(dp)?;
    let mut groups = Vec::new();
    let mut suppressed = Vec::new();
    for (group, g) in exact {
        let count = g.count as i64 + sample_discrete_laplace(count_scale, rng).map_err(dp)?;
        let sum = g.clipped_sum as i64 + sample_discrete_laplace(sum_scale, rng).map_err(dp)?;
        if count < minimum_result_cardinality as i64 {
            suppressed.push(group.clone());
            continue;
        }
        // Post-processing of the noisy pair: the mean rounded to the nearest unit.
        let c = count.max(1);
        let value = (2 * sum + c).div_euclid(2 * c).clamp(0, bound as i64);
        groups.push(GroupValue {
            group: group.clone(),
            count,
            value,
        });
    }
    Ok((groups, suppressed))
}

/// The noise seed only the aggregation enclave can derive for this envelope.
fn noise_seed(enclave: &SoftwareEnclave, envelope: &TaskEnvelope) -> [u8; 32] {
    let mut msg = b"scp/compute/noise-seed/v1".to_vec();
    msg.extend_from_slice(&envelope.hash().0);
    let signature = enclave.sign(&msg);
    tagged_hash("scp/compute/noise-seed/v1", &signature.to_bytes()).0
}

/// Runs the compute aggregation inside `enclave`.
pub fn aggregate_compute(
    enclave: &SoftwareEnclave,
    envelope: &TaskEnvelope,
    bundles: Vec<SliceResultBundle<ComputeBody>>,
    bound: u64,
    epsilon: Epsilon,
    minimum_result_cardinality: u64,
    now_ms: u64,
) -> Result<ComputeAggregate, NodeError> {
    for b in &bundles {
        if b.body.envelope_hash != envelope.hash() {
            return Err(NodeError::Refused(format!(
                "bundle from {} was produced for another envelope",
                b.body.vault_id
            )));
        }
    }
    let mut input_commitments: Vec<Digest> = bundles.iter().map(|b| b.commitment).collect();
    input_commitments.sort();
    let inputs = link_commitment("scp/aggregation-inputs/v1", &input_commitments);
    let mut rng = ChaCha20Rng::from_seed(noise_seed(enclave, envelope));
    let mut failure = None;
    let run = enclave.run(&inputs.0, envelope.hash().0, now_ms, || {
        let exact = exact_table(
            bundles.into_iter().flat_map(|b| b.body.contributions),
            bound,
        );
        // bundles dropped: per-Vault inputs purged
        let (groups, suppressed) =
            match release(&exact, bound, epsilon, minimum_result_cardinality, &mut rng) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e);
                    (Vec::new(), Vec::new())
                }
            };
        let result_hash = table_hash(&groups, &suppressed);
        ((exact, groups, suppressed, result_hash), result_hash.0)
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let ((exact, groups, suppressed_groups, result_hash), attestation) =
        run.map_err(|e| NodeError::Enclave(e.to_string()))?;
    Ok(ComputeAggregate {
        groups,
        suppressed_groups,
        exact,
        result_hash,
        commitment: link_commitment("scp/aggregate/v1", &[inputs, result_hash]),
        input_commitments,
        attestation,
    })
}

impl ClassModule for Compute<'_> {
    type Body = ComputeBody;
    type Aggregate = ComputeAggregate;

    fn class(&self) -> TaskClass {
        TaskClass::Compute
    }
    fn submitter(&self) -> &str {
        &self.spec.submitter
    }
    fn request_hash(&self, nonce: u64) -> Result<Digest, NodeError> {
        crate::task::TaskSpec::Compute(self.spec.clone()).request_hash(nonce)
    }
    fn resolve(&self, semantic: &SemanticRegistry) -> Result<ResolvedAudiencePlan, NodeError> {
        let s = self.spec;
        super::resolve_population(
            |i| semantic.resolve_customer_statistics(i),
            &s.brand,
            &s.country,
            &s.city,
            s.window_days,
            s.usage_scope,
        )
    }
    fn admission(
        &self,
        params: &PolicyParams,
        _n_vaults: u32,
    ) -> Result<ClassAdmission, NodeError> {
        let spec = self.spec;
        let epsilon = self.epsilon()?;
        let cap = params
            .privacy
            .epsilon_capacity_per_epoch
            .get(UsageScope::Analytics);
        if epsilon > cap {
            return Err(NodeError::Refused(format!(
                "epsilon {epsilon} exceeds the analytics budget per subject per epoch ({cap})"
            )));
        }
        if spec.contribution_bound_minor == 0 {
            return Err(NodeError::Refused(
                "contribution_bound_minor must be positive".into(),
            ));
        }
        Ok(ClassAdmission {
            usage_scope: spec.usage_scope,
            epsilon,
            constraints: BTreeMap::from([
                ("brand".to_string(), spec.brand.clone()),
                ("country".to_string(), spec.country.clone()),
                ("window_days".to_string(), spec.window_days.to_string()),
                ("group_by".to_string(), "home_city".to_string()),
                ("statistic".to_string(), "mean_basket_value".to_string()),
                (
                    "contribution_bound_minor".to_string(),
                    spec.contribution_bound_minor.to_string(),
                ),
                ("noise".to_string(), "discrete_laplace".to_string()),
            ]),
            aggregation_method: AggregationMethod::Sum,
            minimum_vault_quorum: spec.minimum_vault_quorum,
        })
    }
    fn estimate(&self, c: &ClassAdmission, _n_vaults: u32, subjects_reserved: u64) -> TaskUsage {
        TaskUsage::Compute(ComputeUsage {
            compute_units: subjects_reserved,
            data_volume_units: data_volume_units(subjects_reserved),
            epsilon: c.epsilon,
        })
    }
    fn execute(
        &self,
        endpoint: &dyn EnterpriseEndpoint,
        assignment: &SliceAssignment,
    ) -> Result<SliceResultBundle<ComputeBody>, NodeError> {
        endpoint.execute_compute_slice(assignment)
    }
    fn aggregate(
        &self,
        master: &MasterServices,
        envelope: &TaskEnvelope,
        plan: &ResolvedAudiencePlan,
        bundles: Vec<SliceResultBundle<ComputeBody>>,
    ) -> Result<ComputeAggregate, NodeError> {
        aggregate_compute(
            &master.aggregator,
            envelope,
            bundles,
            self.spec.contribution_bound_minor,
            envelope.body().budget_reservation.epsilon_per_subject,
            plan.minimum_result_cardinality(),
            master.now_ms,
        )
    }
    fn suppressed(&self, agg: &ComputeAggregate, plan: &ResolvedAudiencePlan) -> Option<String> {
        agg.groups.is_empty().then(|| {
            format!(
                "every group ({}) is below minimum_result_cardinality {}: suppressed",
                agg.suppressed_groups.len(),
                plan.minimum_result_cardinality()
            )
        })
    }
    fn summary(&self, agg: &ComputeAggregate) -> String {
        format!(
            "{} groups released with discrete Laplace noise, {} suppressed",
            agg.groups.len(),
            agg.suppressed_groups.len()
        )
    }
    fn record(&self, agg: &ComputeAggregate) -> AggregateRecord {
        // The masters record only released (noisy) figures.
        let released: i64 = agg.groups.iter().map(|g| g.count).sum();
        AggregateRecord {
            commitment: agg.commitment,
            eligible_count: released.max(0) as u64,
            delivered_count: agg.groups.len() as u64,
            result_hash: agg.result_hash,
            enclave_kind: agg.attestation.kind(),
        }
    }
    fn claim<'a>(&self, agg: &'a ComputeAggregate) -> AggregateClaim<'a> {
        AggregateClaim {
            input_commitments: &agg.input_commitments,
            result_hash: agg.result_hash,
            commitment: agg.commitment,
            attestation: &agg.attestation,
        }
    }
    fn compute_units(&self, agg: &ComputeAggregate) -> u64 {
        agg.groups.len() as u64 + agg.suppressed_groups.len() as u64
    }
    fn usage(&self, _agg: &ComputeAggregate, report: &Report, epsilon: Epsilon) -> TaskUsage {
        TaskUsage::Compute(ComputeUsage {
            compute_units: report.subjects_evaluated,
            data_volume_units: data_volume_units(report.subjects_evaluated),
            epsilon,
        })
    }
    fn stage(
        &self,
        master: &mut MasterServices,
        task_id: &TaskId,
        agg: &ComputeAggregate,
        obs: &mut dyn Observer,
    ) -> Result<(), NodeError> {
        if let Some(stage) = master.result_stage.as_mut() {
            stage.stage_table(
                task_id,
                &agg.result_hash,
                &agg.groups,
                &agg.suppressed_groups,
            )?;
            obs.step(
                "staged",
                &format!("{} noisy groups staged with the masters", agg.groups.len()),
            );
        }
        Ok(())
    }
    fn delivery(&self, agg: &ComputeAggregate) -> (Digest, u64, String) {
        let n = agg.groups.len() as u64;
        (agg.result_hash, n, format!("{n} noisy groups"))
    }
}

/// The hash of a released table (what the aggregate records as its result hash).
pub fn table_hash(groups: &[GroupValue], suppressed_groups: &[String]) -> Digest {
    content_hash(COMPUTE_RESULT_TAG, &(groups, suppressed_groups)).unwrap_or_default()
}

/// The outcome of a completed `compute` task rebuilt from the replicated master
/// state and the staged table: what a master that takes over after the leader
/// crashed between payout and delivery returns. `None` unless the task is
/// completed with a finalized settlement and an aggregate whose result hash is the
/// table's.
pub fn recovered_compute_outcome(
    state: &symphony_master::MasterState,
    task_id: &TaskId,
    groups: Vec<GroupValue>,
    suppressed_groups: Vec<String>,
    certificate_signatures: usize,
) -> Option<ComputeOutcome> {
    let (report, aggregate) = Report::recovered(state, task_id, certificate_signatures)?;
    if table_hash(&groups, &suppressed_groups) != aggregate.result_hash {
        return None;
    }
    Some(outcome_of(
        report,
        groups,
        suppressed_groups,
        aggregate.result_hash,
    ))
}

/// The compute outcome of a pipeline run (the noise-free table is dropped here).
pub fn outcome(run: Run<ComputeAggregate>) -> ComputeOutcome {
    match run.aggregate {
        Some(a) if run.report.delivered => {
            outcome_of(run.report, a.groups, a.suppressed_groups, a.result_hash)
        }
        _ => outcome_of(run.report, Vec::new(), Vec::new(), Digest::default()),
    }
}

fn outcome_of(
    r: Report,
    groups: Vec<GroupValue>,
    suppressed_groups: Vec<String>,
    result_hash: Digest,
) -> ComputeOutcome {
    ComputeOutcome {
        task_id: r.task_id,
        envelope_hash: r.envelope_hash,
        states: r.states,
        reason: r.reason,
        groups,
        suppressed_groups,
        epsilon_committed: r.epsilon_committed,
        fee_locked: r.fee_locked,
        fee_total: r.fee_total,
        fee_shares: r.fee_shares,
        refund: r.refund,
        attestations_verified: r.attestations_verified,
        enclave_kinds: r.enclave_kinds,
        vaults_responded: r.vaults_responded,
        subjects_evaluated: r.subjects_evaluated,
        settlement_state: r.settlement_state,
        epoch_id: r.epoch_id,
        certificate_signatures: r.certificate_signatures,
        result_hash: if result_hash == Digest::default() {
            String::new()
        } else {
            result_hash.to_hex()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphony_core::dp::discrete_laplace_variance;

    fn contribution(token: u8, group: &str, sum: u64, n: u64) -> Contribution {
        Contribution {
            dedup_token: [token; 32],
            group: group.into(),
            amount_sum_minor: sum,
            purchases: n,
        }
    }

    #[test]
    fn one_person_in_several_vaults_counts_once_with_a_clipped_mean() {
        let t = exact_table(
            [
                contribution(1, "Singapore", 3_000, 2), // same person, two Vaults
                contribution(1, "Singapore", 9_000, 1), // mean 4,000 → clipped 3,500
                contribution(2, "Singapore", 1_000, 1),
                contribution(3, "Jurong", 500, 1),
            ],
            3_500,
        );
        assert_eq!(
            t["Singapore"],
            ExactGroup {
                count: 2,
                clipped_sum: 3_500 + 1_000
            }
        );
        assert_eq!(t["Jurong"].count, 1);
    }

    /// Over many seeds the released counts and sums are unbiased with the variance
    /// of the discrete Laplace at scale 2/ε (counts) and 2·bound/ε (sums).
    #[test]
    fn noise_over_many_seeds_is_centred_with_the_declared_scale() {
        let exact = BTreeMap::from([(
            "Singapore".to_string(),
            ExactGroup {
                count: 10_000,
                clipped_sum: 10_000 * 50,
            },
        )]);
        let (bound, eps) = (100u64, Epsilon::from_micro(500_000));
        let n = 4_000u64;
        let (mut s1, mut s2, mut v1) = (0f64, 0f64, 0f64);
        for seed in 0..n {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let (groups, _) = release(&exact, bound, eps, 20, &mut rng).unwrap();
            let g = &groups[0];
            let dc = (g.count - 10_000) as f64;
            s1 += dc;
            v1 += dc * dc;
            let dv = (g.value - 50) as f64;
            s2 += dv;
        }
        let nf = n as f64;
        let count_var = discrete_laplace_variance(laplace_scale(1, 250_000).unwrap());
        let mean = s1 / nf;
        let var = v1 / nf - mean * mean;
        assert!(
            mean.abs() < 4.0 * (count_var / nf).sqrt(),
            "count noise mean {mean}"
        );
        assert!(
            (var / count_var - 1.0).abs() < 0.1,
            "count noise variance {var} vs {count_var}"
        );
        // Sum noise at scale 2·100/0.5 = 400 over a count of 10,000: the mean moves
        // by ~0.04 on average, so the released mean is 50 almost always.
        assert!((s2 / nf).abs() < 0.5, "mean noise {}", s2 / nf);
        // A wrong scale would show: ε ten times larger gives a much smaller variance.
        let mut v_small = 0f64;
        for seed in 0..n {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let (groups, _) =
                release(&exact, bound, Epsilon::from_micro(5_000_000), 20, &mut rng).unwrap();
            let dc = (groups[0].count - 10_000) as f64;
            v_small += dc * dc;
        }
        assert!(v_small / nf < count_var / 10.0);
    }

    #[test]
    fn small_groups_are_suppressed_on_the_noisy_count() {
        let exact = BTreeMap::from([
            (
                "Big".to_string(),
                ExactGroup {
                    count: 500,
                    clipped_sum: 500 * 10,
                },
            ),
            (
                "Tiny".to_string(),
                ExactGroup {
                    count: 2,
                    clipped_sum: 20,
                },
            ),
        ]);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (groups, suppressed) =
            release(&exact, 100, Epsilon::from_micro(1_000_000), 20, &mut rng).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].group, "Big");
        assert_eq!(suppressed, vec!["Tiny".to_string()]);
    }
}
