//! The protocol pipeline of seed 002: Request → [`admission`] → [`execution`] →
//! [`settlement`] → Result, beside the Data Sovereignty Service (each Vault:
//! `crate::enterprise`, `symphony-vault`) and the Governance Service (epoch and policy
//! version in the replicated master state: `symphony_master::GovernanceState`).
//!
//! Each plane is a sequence of small steps. What differs per task class — what a
//! slice computes, how slices aggregate, how the result is verified, priced and
//! delivered — sits behind one narrow trait, [`ClassModule`], with one module per
//! class in `crate::classes` (`query`, `compute`, `parse`, `train`). The single-round
//! classes (`query`, `compute`, `parse`) run through [`run_task`]; `train` is a
//! composite task whose rounds drive the same planes' steps round by round
//! (`crate::training`).

pub mod admission;
pub mod execution;
pub mod quote;
pub mod settlement;

use std::collections::BTreeMap;

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::Digest;
use symphony_core::envelope::{AggregationMethod, TaskClass, TaskEnvelope};
use symphony_core::ids::TaskId;
use symphony_economics::{PolicyParams, TaskUsage};
use symphony_master::AggregateRecord;
use symphony_semantic::{ResolvedAudiencePlan, SemanticRegistry};

use crate::bundle::{SliceAssignment, SliceBody, SliceResultBundle};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{MasterServices, Observer};
use crate::verify::AggregateClaim;
use crate::NodeError;

/// Runs `work` for every endpoint — each Vault's part of a task is independent —
/// on up to as many threads as the machine has cores, and hands each result to
/// `done` on the calling thread in endpoint order, as soon as it and every earlier
/// one are in (so what `done` records is in the same order as a sequential run).
/// An error from `done` stops the hand-over; work already started finishes.
pub fn for_each_vault<E: Sync, T: Send>(
    endpoints: &[E],
    work: impl Fn(&E) -> T + Sync,
    mut done: impl FnMut(usize, T) -> Result<(), NodeError>,
) -> Result<(), NodeError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(endpoints.len());
    if workers <= 1 {
        for (i, e) in endpoints.iter().enumerate() {
            done(i, work(e))?;
        }
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, T)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (tx, next, work) = (tx.clone(), &next, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(e) = endpoints.get(i) else { break };
                if tx.send((i, work(e))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0usize;
        for (i, result) in rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&want) {
                done(want, result)?;
                want += 1;
            }
        }
        Ok(())
    })
}

/// What a class decides at admission, once the plan is resolved and the policy
/// is known.
pub struct ClassAdmission {
    /// The usage scope subjects must have consented to.
    pub usage_scope: UsageScope,
    /// ε reserved (and committed on execution) per subject.
    pub epsilon: Epsilon,
    /// The envelope's class constraints.
    pub constraints: BTreeMap<String, String>,
    /// How slices combine.
    pub aggregation_method: AggregationMethod,
    /// Minimum Vaults that must respond, when the submitter set one.
    pub minimum_vault_quorum: Option<u32>,
}

/// What differs per task class. One implementation per class module.
pub trait ClassModule: Sync {
    /// What one slice returns.
    type Body: SliceBody + Send;
    /// What the aggregation enclave returns.
    type Aggregate;

    /// The class.
    fn class(&self) -> TaskClass;
    /// The submitter, as written in the request.
    fn submitter(&self) -> &str;
    /// The request hash the submitter signed.
    fn request_hash(&self, nonce: u64) -> Result<Digest, NodeError>;
    /// Semantic resolution of the request.
    fn resolve(&self, semantic: &SemanticRegistry) -> Result<ResolvedAudiencePlan, NodeError>;
    /// Scope, ε, estimate, constraints of the envelope (`n_vaults` Vaults asked).
    fn admission(&self, params: &PolicyParams, n_vaults: u32) -> Result<ClassAdmission, NodeError>;
    /// The fee estimate's usage (locked in escrow): an upper bound of the actual
    /// usage, given the Vaults asked and the subjects reserved.
    fn estimate(&self, c: &ClassAdmission, n_vaults: u32, subjects_reserved: u64) -> TaskUsage;
    /// Runs one slice at a Vault.
    fn execute(
        &self,
        endpoint: &dyn EnterpriseEndpoint,
        assignment: &SliceAssignment,
    ) -> Result<SliceResultBundle<Self::Body>, NodeError>;
    /// Aggregates the verified slices inside the master's aggregation enclave (the
    /// bundles are moved in and purged).
    fn aggregate(
        &self,
        master: &MasterServices,
        envelope: &TaskEnvelope,
        plan: &ResolvedAudiencePlan,
        bundles: Vec<SliceResultBundle<Self::Body>>,
    ) -> Result<Self::Aggregate, NodeError>;
    /// Why the aggregate may not be released (suppression), if so.
    fn suppressed(
        &self,
        aggregate: &Self::Aggregate,
        plan: &ResolvedAudiencePlan,
    ) -> Option<String>;
    /// One line on the released aggregate (progress output).
    fn summary(&self, aggregate: &Self::Aggregate) -> String;
    /// What the master state records of the aggregate.
    fn record(&self, aggregate: &Self::Aggregate) -> AggregateRecord;
    /// What verification replays of the aggregate.
    fn claim<'a>(&self, aggregate: &'a Self::Aggregate) -> AggregateClaim<'a>;
    /// Compute units the aggregation executor reports.
    fn compute_units(&self, aggregate: &Self::Aggregate) -> u64;
    /// The measured usage the fee is computed from.
    fn usage(&self, aggregate: &Self::Aggregate, report: &Report, epsilon: Epsilon) -> TaskUsage;
    /// Stages the verified result with the masters before settlement moves money.
    fn stage(
        &self,
        master: &mut MasterServices,
        task_id: &TaskId,
        aggregate: &Self::Aggregate,
        obs: &mut dyn Observer,
    ) -> Result<(), NodeError>;
    /// What delivery records: the result hash and the count delivered.
    fn delivery(&self, aggregate: &Self::Aggregate) -> (Digest, u64, String);
}

/// What the pipeline reports for a task of any single-round class.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Task id.
    pub task_id: String,
    /// Envelope hash.
    pub envelope_hash: String,
    /// Lifecycle states in order.
    pub states: Vec<String>,
    /// Why it was rejected, if it was.
    pub reason: Option<String>,
    /// Slices verified.
    pub vaults_responded: u32,
    /// Quorum.
    pub minimum_vault_quorum: u32,
    /// Escrow locked at admission.
    pub fee_locked: u64,
    /// Fee charged.
    pub fee_total: u64,
    /// Recipient → amount.
    pub fee_shares: BTreeMap<String, u64>,
    /// Refund to the submitter.
    pub refund: u64,
    /// Attestation reports verified.
    pub attestations_verified: u32,
    /// What produced each verified piece of evidence: Vault id → kind, and
    /// `aggregation` → the masters' aggregation enclave (empty when rebuilt from
    /// the replicated state, which keeps commitments, not reports).
    pub enclave_kinds: BTreeMap<String, symphony_enclave::EnclaveKind>,
    /// Why slices failed (Vault id: reason), named in a quorum rejection.
    pub slice_failures: Vec<String>,
    /// ε committed per evaluated subject.
    pub epsilon_committed: String,
    /// Subjects evaluated across Vaults.
    pub subjects_evaluated: u64,
    /// Settlement state.
    pub settlement_state: Option<String>,
    /// Epoch.
    pub epoch_id: u64,
    /// Commit certificate signatures on the final state.
    pub certificate_signatures: usize,
    /// Whether the result was delivered.
    pub delivered: bool,
}

impl Report {
    /// The report of a task that completed with a finalized settlement, rebuilt
    /// from the replicated master state (a master taking over after the leader
    /// crashed between payout and delivery), with the recorded aggregate. `None`
    /// for any other task.
    pub fn recovered(
        state: &symphony_master::MasterState,
        task_id: &TaskId,
        certificate_signatures: usize,
    ) -> Option<(Report, AggregateRecord)> {
        use symphony_core::lifecycle::{SettlementState, SliceState, TaskState};
        let rec = state.task(task_id)?;
        let settlement = rec.settlement.as_ref()?;
        let aggregate = rec.aggregate.clone()?;
        if rec.state != TaskState::Completed || settlement.state != SettlementState::Finalized {
            return None;
        }
        let body = rec.envelope.body();
        let verified = rec
            .slices
            .values()
            .filter(|s| s.state == SliceState::Verified)
            .count() as u32;
        let report = Report {
            task_id: task_id.to_string(),
            envelope_hash: rec.envelope.hash().to_hex(),
            states: rec.history.iter().map(|s| s.to_string()).collect(),
            reason: rec.reason.clone(),
            vaults_responded: verified,
            minimum_vault_quorum: body.coordination_envelope.minimum_vault_quorum,
            fee_locked: body
                .budget_lock_ref
                .as_ref()
                .map_or(0, |b| b.amount_base_units),
            fee_total: settlement.fee_total,
            fee_shares: settlement.fee_shares.clone(),
            refund: settlement.refund,
            // The slices' attestations and the aggregation enclave's.
            attestations_verified: verified + 1,
            enclave_kinds: rec.enclave_kinds(),
            slice_failures: Vec::new(),
            epsilon_committed: body.budget_reservation.epsilon_per_subject.to_string(),
            subjects_evaluated: rec.slices.values().map(|s| s.subjects_evaluated).sum(),
            settlement_state: Some(settlement.state.to_string()),
            epoch_id: settlement.epoch_id.0,
            certificate_signatures,
            delivered: true,
        };
        Some((report, aggregate))
    }
}

/// A finished run: the report and, when aggregation ran, the aggregate.
pub struct Run<A> {
    /// The report.
    pub report: Report,
    /// The aggregate (also when suppressed or rejected after aggregation).
    pub aggregate: Option<A>,
}

/// A signed request of one class, as the pipeline takes it.
pub struct Request<'a, C> {
    /// The class module holding the request.
    pub class: &'a C,
    /// Nonce.
    pub nonce: u64,
    /// Submitter's public key.
    pub public_key: [u8; 32],
    /// Signature over the request hash.
    pub signature: &'a [u8],
}

/// Runs one single-round task through the three planes.
pub fn run_task<C: ClassModule>(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    req: &Request<'_, C>,
    obs: &mut dyn Observer,
) -> Result<Run<C::Aggregate>, NodeError> {
    let mut clock = crate::network::PhaseClock::start();
    let admitted = admission::admit(master, endpoints, req, obs)?;
    clock.lap(obs, "admission");
    let mut report = admitted.report();
    let executed = execution::execute(master, endpoints, req.class, &admitted, &mut report, obs)?;
    clock.lap(obs, "execution");
    let run = match executed {
        execution::Execution::Rejected(aggregate) => Ok(Run { report, aggregate }),
        execution::Execution::Finished(executed) => settlement::settle_and_deliver(
            master, endpoints, req.class, &admitted, executed, report, obs,
        ),
    };
    clock.lap(obs, "settlement");
    run
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::network::Unreachable;
    use symphony_core::ids::VaultId;

    /// Results reach `done` in endpoint order even when later Vaults finish first,
    /// every Vault's work runs exactly once, and an error from `done` stops the
    /// hand-over there.
    #[test]
    fn for_each_vault_hands_results_over_in_vault_order() {
        let ids: Vec<VaultId> = (0..7)
            .map(|i| VaultId::new(format!("vault-{i}")).unwrap())
            .collect();
        let nodes: Vec<Unreachable<'_>> = ids.iter().map(Unreachable).collect();
        let endpoints: Vec<&dyn EnterpriseEndpoint> =
            nodes.iter().map(|n| n as &dyn EnterpriseEndpoint).collect();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let work = |e: &&dyn EnterpriseEndpoint| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let i: u64 = e.vault_id().as_str()[6..].parse().unwrap();
            // The first Vaults are the slowest.
            std::thread::sleep(std::time::Duration::from_millis(5 * (7 - i)));
            e.vault_id().to_string()
        };
        let mut seen = Vec::new();
        for_each_vault(&endpoints, work, |i, id| {
            seen.push((i, id));
            Ok(())
        })
        .unwrap();
        let expect: Vec<(usize, String)> = (0..7).map(|i| (i, format!("vault-{i}"))).collect();
        assert_eq!(seen, expect);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 7);

        let mut taken = Vec::new();
        let err = for_each_vault(&endpoints, work, |i, _| {
            if i == 3 {
                return Err(NodeError::Refused("stop at 3".into()));
            }
            taken.push(i);
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("stop at 3"), "{err}");
        assert_eq!(taken, vec![0, 1, 2]);
    }
}
