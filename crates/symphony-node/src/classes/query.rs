//! `query`: governed audience selection across Vaults (seed 000). A slice returns
//! eligible subjects' de-duplication tokens and contact handles; the aggregation
//! enclave forms the union, removes duplicates, applies the audience cap with seeded
//! selection; the fee is the query formula over the delivered handles; the
//! submitter receives the handles.

use std::collections::BTreeMap;

use symphony_core::budget::Epsilon;
use symphony_core::encoding::Digest;
use symphony_core::envelope::{AggregationMethod, TaskClass, TaskEnvelope};
use symphony_core::ids::TaskId;
use symphony_economics::pricing::QueryUsage;
use symphony_economics::{PolicyParams, TaskUsage};
use symphony_master::AggregateRecord;
use symphony_semantic::{ResolvedAudiencePlan, SemanticRegistry};

use crate::aggregation::{aggregate, AggregateResult, AggregationParams};
use crate::bundle::{BundleBody, SliceAssignment, SliceResultBundle};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{CampaignOutcome, CampaignSpec, MasterServices, Observer};
use crate::planes::{ClassAdmission, ClassModule, Report, Run};
use crate::verify::AggregateClaim;
use crate::NodeError;

/// The `query` class over a campaign spec.
pub struct Query<'a> {
    /// The campaign.
    pub spec: &'a CampaignSpec,
}

impl ClassModule for Query<'_> {
    type Body = BundleBody;
    type Aggregate = AggregateResult;

    fn class(&self) -> TaskClass {
        TaskClass::Query
    }
    fn submitter(&self) -> &str {
        &self.spec.advertiser
    }
    fn request_hash(&self, nonce: u64) -> Result<Digest, NodeError> {
        crate::network::request_hash(self.spec, nonce)
    }
    fn resolve(&self, semantic: &SemanticRegistry) -> Result<ResolvedAudiencePlan, NodeError> {
        let s = self.spec;
        super::resolve_population(
            |i| semantic.resolve_audience(i),
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
        if spec.audience_cap == 0 {
            return Err(NodeError::Refused(
                "invalid spec, nothing reserved or charged: audience_cap must be >= 1".into(),
            ));
        }
        let epsilon = params.privacy.epsilon_per_query;
        Ok(ClassAdmission {
            usage_scope: spec.usage_scope,
            epsilon,
            constraints: BTreeMap::from([
                ("audience_cap".to_string(), spec.audience_cap.to_string()),
                ("brand".to_string(), spec.brand.clone()),
                ("country".to_string(), spec.country.clone()),
                ("selection".to_string(), format!("{:?}", spec.selection)),
                (
                    "selection_seed".to_string(),
                    spec.selection_seed.to_string(),
                ),
                ("window_days".to_string(), spec.window_days.to_string()),
            ]),
            aggregation_method: AggregationMethod::UnionWithCardinalityCap,
            minimum_vault_quorum: spec.minimum_vault_quorum,
        })
    }
    fn estimate(&self, c: &ClassAdmission, n_vaults: u32, _subjects_reserved: u64) -> TaskUsage {
        TaskUsage::Query(QueryUsage {
            n_vaults,
            n_records: self.spec.audience_cap,
            epsilon: c.epsilon,
        })
    }
    fn execute(
        &self,
        endpoint: &dyn EnterpriseEndpoint,
        assignment: &SliceAssignment,
    ) -> Result<SliceResultBundle, NodeError> {
        endpoint.execute_slice(assignment)
    }
    fn aggregate(
        &self,
        master: &MasterServices,
        envelope: &TaskEnvelope,
        plan: &ResolvedAudiencePlan,
        bundles: Vec<SliceResultBundle>,
    ) -> Result<AggregateResult, NodeError> {
        Ok(aggregate(
            &master.aggregator,
            envelope,
            bundles,
            AggregationParams {
                audience_cap: self.spec.audience_cap,
                selection: self.spec.selection,
                selection_seed: self.spec.selection_seed,
                minimum_result_cardinality: plan.minimum_result_cardinality(),
                now_ms: master.now_ms,
            },
        )?)
    }
    fn suppressed(&self, agg: &AggregateResult, plan: &ResolvedAudiencePlan) -> Option<String> {
        agg.suppressed.then(|| {
            format!(
                "result of {} subjects is below minimum_result_cardinality {}: suppressed",
                agg.eligible_count,
                plan.minimum_result_cardinality()
            )
        })
    }
    fn summary(&self, agg: &AggregateResult) -> String {
        format!(
            "{} distinct eligible, {} selected (cap {})",
            agg.eligible_count,
            agg.audience.len(),
            self.spec.audience_cap
        )
    }
    fn record(&self, agg: &AggregateResult) -> AggregateRecord {
        AggregateRecord {
            commitment: agg.commitment,
            eligible_count: agg.eligible_count,
            delivered_count: agg.audience.len() as u64,
            result_hash: agg.result_hash,
            enclave_kind: agg.attestation.kind(),
        }
    }
    fn claim<'a>(&self, agg: &'a AggregateResult) -> AggregateClaim<'a> {
        agg.into()
    }
    fn compute_units(&self, agg: &AggregateResult) -> u64 {
        agg.eligible_count
    }
    fn usage(&self, agg: &AggregateResult, report: &Report, epsilon: Epsilon) -> TaskUsage {
        TaskUsage::Query(QueryUsage {
            n_vaults: report.vaults_responded,
            n_records: agg.audience.len() as u64,
            epsilon,
        })
    }
    fn stage(
        &self,
        master: &mut MasterServices,
        task_id: &TaskId,
        agg: &AggregateResult,
        obs: &mut dyn Observer,
    ) -> Result<(), NodeError> {
        if let Some(stage) = master.result_stage.as_mut() {
            stage.stage(task_id, &agg.result_hash, &agg.audience)?;
            obs.step(
                "staged",
                &format!("{} handles staged with the masters", agg.audience.len()),
            );
        }
        Ok(())
    }
    fn delivery(&self, agg: &AggregateResult) -> (Digest, u64, String) {
        let n = agg.audience.len() as u64;
        (agg.result_hash, n, format!("{n} contact handles"))
    }
}

/// The campaign outcome of a pipeline run.
pub fn outcome(spec: &CampaignSpec, run: Run<AggregateResult>) -> CampaignOutcome {
    let r = run.report;
    let (eligible_count, audience) = match run.aggregate {
        Some(agg) => (agg.eligible_count, agg.audience),
        None => (0, Vec::new()),
    };
    let audience = if r.delivered { audience } else { Vec::new() };
    CampaignOutcome {
        task_id: r.task_id,
        envelope_hash: r.envelope_hash,
        states: r.states,
        reason: r.reason,
        eligible_count,
        delivered_count: audience.len() as u64,
        audience_cap: spec.audience_cap,
        vaults_responded: r.vaults_responded,
        minimum_vault_quorum: r.minimum_vault_quorum,
        fee_locked: r.fee_locked,
        fee_total: r.fee_total,
        fee_shares: r.fee_shares,
        refund: r.refund,
        attestations_verified: r.attestations_verified,
        enclave_kinds: r.enclave_kinds,
        epsilon_committed: r.epsilon_committed,
        subjects_evaluated: r.subjects_evaluated,
        settlement_state: r.settlement_state,
        epoch_id: r.epoch_id,
        certificate_signatures: r.certificate_signatures,
        audience,
    }
}
