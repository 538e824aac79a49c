//! The Execution Plane (seed 002): drives the task state machine, fans the task
//! out to one slice per Vault, verifies and records each slice, checks the quorum,
//! and runs the class's aggregation inside the master's aggregation enclave.

use symphony_core::encoding::Digest;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SliceState, TaskEvent};
use symphony_master::{Command, SliceRecord};

use super::admission::Admitted;
use super::settlement::reject;
use super::{for_each_vault, ClassModule, Report};
use crate::bundle::{SliceAssignment, SliceBody, SliceResultBundle};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{MasterServices, Observer};
use crate::verify::{verify_slice, SliceEvidence};
use crate::NodeError;
use symphony_enclave::SoftwareAttestationVerifier;

/// What execution hands to settlement.
pub struct Executed<A> {
    /// Evidence of the verified slices.
    pub evidence: Vec<SliceEvidence>,
    /// The aggregate.
    pub aggregate: A,
}

/// Moves the task one lifecycle step, through the masters.
pub fn advance(
    master: &mut MasterServices,
    task: &TaskId,
    event: TaskEvent,
    reason: Option<String>,
    obs: &mut dyn Observer,
) -> Result<(), NodeError> {
    let committed = master.masters.submit(Command::Advance {
        task_id: task.clone(),
        event,
        reason,
    })?;
    if let Some(symphony_master::Event::TaskStateChanged { to, .. }) = committed.events.first() {
        obs.step(
            to.as_str(),
            &format!(
                "certificate {}/3 signatures at log index {}",
                committed.certificate.signatures.len(),
                committed.certificate.log_index
            ),
        );
    }
    Ok(())
}

/// One slice: assigned, executed at the Vault, verified (commitment + attestation)
/// with the task's verifier (`Err`: the master can not verify this task's slices).
fn run_slice<C: ClassModule>(
    verifier: &Result<SoftwareAttestationVerifier, String>,
    now_ms: u64,
    class: &C,
    endpoint: &dyn EnterpriseEndpoint,
    a: &Admitted,
) -> Result<(SliceResultBundle<C::Body>, SliceEvidence), NodeError> {
    let envelope = &a.envelope;
    let assignment = SliceAssignment {
        slice_id: SliceId {
            sub_task: SubTaskId {
                parent: a.task_id.clone(),
                round: 0,
            },
            vault: endpoint.vault_id().clone(),
        },
        envelope: envelope.clone(),
        plan: a.plan.clone(),
        evaluate_at_ms: now_ms,
    };
    let bundle = class.execute(endpoint, &assignment)?;
    let verifier = verifier
        .as_ref()
        .map_err(|e| NodeError::Refused(e.clone()))?;
    let evidence = verify_slice(verifier, envelope, &bundle)
        .map_err(|err| NodeError::Refused(err.to_string()))?;
    Ok((bundle, evidence))
}

/// The verified slices' bundles and their evidence.
pub type Verified<B> = (Vec<SliceResultBundle<B>>, Vec<SliceEvidence>);

/// Fans out one slice per Vault — the Vaults run theirs in parallel
/// ([`for_each_vault`]) — and records each in the master state, in Vault order.
pub fn fan_out<C: ClassModule>(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    class: &C,
    a: &Admitted,
    report: &mut Report,
    obs: &mut dyn Observer,
) -> Result<Verified<C::Body>, NodeError> {
    let mut evidence = Vec::new();
    let mut bundles = Vec::new();
    let total = endpoints.len() as u64;
    let verifier = master.verifier_for(&a.envelope).map_err(|e| e.to_string());
    let now_ms = master.now_ms;
    for_each_vault(
        endpoints,
        |e| run_slice(&verifier, now_ms, class, *e, a),
        |i, result| {
            let vault_id = endpoints[i].vault_id().clone();
            let record = match result {
                Ok((bundle, ev)) => {
                    let r = SliceRecord {
                        state: SliceState::Verified,
                        commitment: bundle.commitment,
                        subjects_evaluated: bundle.body.subjects_evaluated(),
                        epsilon_committed_micro: bundle.body.epsilon_committed_micro(),
                        enclave_kind: Some(ev.attestation.kind()),
                    };
                    report.subjects_evaluated += bundle.body.subjects_evaluated();
                    report
                        .enclave_kinds
                        .insert(vault_id.to_string(), ev.attestation.kind());
                    evidence.push(ev);
                    bundles.push(bundle);
                    r
                }
                Err(err) => {
                    obs.step("slice_failed", &format!("{vault_id}: {err}"));
                    report.slice_failures.push(format!("{vault_id}: {err}"));
                    let state = match err {
                        NodeError::Unavailable(_) => SliceState::TimedOut,
                        _ => SliceState::Failed,
                    };
                    SliceRecord {
                        state,
                        commitment: Digest::default(),
                        subjects_evaluated: 0,
                        epsilon_committed_micro: 0,
                        enclave_kind: None,
                    }
                }
            };
            obs.progress("slices", i as u64 + 1, total);
            master.masters.submit(Command::RecordSlice {
                task_id: a.task_id.clone(),
                vault_id,
                record,
            })?;
            Ok(())
        },
    )?;
    report.vaults_responded = evidence.len() as u32;
    report.attestations_verified = evidence.len() as u32;
    obs.step(
        "slices",
        &format!(
            "{}/{} slices verified (attestation + commitment)",
            evidence.len(),
            total
        ),
    );
    Ok((bundles, evidence))
}

/// How the Execution Plane ended.
pub enum Execution<A> {
    /// Rejected on the way (quorum, suppression); the report holds the rejection,
    /// and the aggregate when aggregation ran.
    Rejected(Option<A>),
    /// Aggregated and recorded: the task is `verifying`.
    Finished(Executed<A>),
}

/// Runs the Execution Plane: `resolving` → `dispatched` → slices → aggregate →
/// `verifying`.
pub fn execute<C: ClassModule>(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    class: &C,
    a: &Admitted,
    report: &mut Report,
    obs: &mut dyn Observer,
) -> Result<Execution<C::Aggregate>, NodeError> {
    advance(master, &a.task_id, TaskEvent::BeginResolution, None, obs)?;
    if a.vaults_reserved < a.quorum as usize {
        let reason = format!(
            "{} Vaults reachable at admission, below minimum_vault_quorum {}",
            a.vaults_reserved, a.quorum
        );
        reject(master, endpoints, a, reason, report, obs)?;
        return Ok(Execution::Rejected(None));
    }
    advance(master, &a.task_id, TaskEvent::Dispatch, None, obs)?;
    let fan_out_started = std::time::Instant::now();
    let (bundles, evidence) = fan_out(master, endpoints, class, a, report, obs)?;
    obs.phase("execution_slices", fan_out_started.elapsed());
    if evidence.len() < a.quorum as usize {
        let failures = if report.slice_failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.slice_failures.join("; "))
        };
        let reason = format!(
            "{} slices verified, below minimum_vault_quorum {}{failures}",
            evidence.len(),
            a.quorum
        );
        reject(master, endpoints, a, reason, report, obs)?;
        return Ok(Execution::Rejected(None));
    }
    let aggregate = class.aggregate(master, &a.envelope, &a.plan, bundles)?;
    if let Some(reason) = class.suppressed(&aggregate, &a.plan) {
        reject(master, endpoints, a, reason, report, obs)?;
        return Ok(Execution::Rejected(Some(aggregate)));
    }
    obs.step("aggregate", &class.summary(&aggregate));
    master.masters.submit(Command::RecordAggregate {
        task_id: a.task_id.clone(),
        record: class.record(&aggregate),
    })?;
    advance(master, &a.task_id, TaskEvent::ExecutionFinished, None, obs)?;
    Ok(Execution::Finished(Executed {
        evidence,
        aggregate,
    }))
}
