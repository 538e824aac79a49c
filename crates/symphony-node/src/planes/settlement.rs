//! The Settlement Plane (seed 002): verification of the aggregate against the
//! verified slices, staging of the verified result, settlement (replay of stored
//! evidence, challenge window, 2-of-3 finality, fee split, payout — the machinery in
//! `crate::settlement`), delivery as an audit event; and the rejection path.

use symphony_core::ids::{ActorId, TaskId};
use symphony_core::lifecycle::TaskEvent;
use symphony_ledger::EscrowId;
use symphony_master::Command;

use super::admission::{release_all, Admitted};
use super::execution::{advance, Executed};
use super::{ClassModule, Report, Run};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{MasterServices, Observer};
use crate::settlement::embedded::{evidence_of, Settled};
use crate::settlement::SettlementInputs;
use crate::verify::verify_aggregate_claim;
use crate::NodeError;

fn escrow(a: &Admitted) -> Result<EscrowId, NodeError> {
    EscrowId::new(a.escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))
}

/// Copies the task's lifecycle history and reason from the master state.
pub fn fill_states(master: &MasterServices, task_id: &TaskId, report: &mut Report) {
    if let Some(rec) = master.masters.state().task(task_id) {
        report.states = rec.history.iter().map(|s| s.to_string()).collect();
        report.reason.clone_from(&rec.reason);
    }
}

/// Rejects the task: reservations not yet executed are released (executed slices
/// already committed: failure after execution commits at the estimate), the
/// rejection is committed, then the class's base fee goes to the treasury and the
/// rest of the escrow back to the submitter (documented in ARCHITECTURE.md).
pub fn reject(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    a: &Admitted,
    reason: String,
    report: &mut Report,
    obs: &mut dyn Observer,
) -> Result<(), NodeError> {
    release_all(endpoints, &a.task_id);
    obs.step("rejected", &reason);
    advance(master, &a.task_id, TaskEvent::Reject, Some(reason), obs)?;
    if a.estimate > 0 {
        let fee = master.charge_rejected(&a.task_id, &escrow(a)?)?;
        if fee.estimate_micro_sym != a.estimate {
            return Err(NodeError::Ledger(format!(
                "escrow {} holds {}, expected {}",
                a.escrow_id, fee.estimate_micro_sym, a.estimate
            )));
        }
        report.fee_total = fee.charged_micro_sym;
        report.refund = fee.refund_micro_sym;
        if fee.charged_micro_sym > 0 {
            report
                .fee_shares
                .insert("treasury".to_owned(), fee.charged_micro_sym);
        }
    }
    fill_states(master, &a.task_id, report);
    Ok(())
}

/// The masters that took verification decisions.
fn verifiers() -> Result<Vec<ActorId>, NodeError> {
    (0..3)
        .map(|i| ActorId::new(format!("master-{i}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::Refused(e.to_string()))
}

/// Runs the Settlement Plane on an executed task: verify → stage → settle → deliver.
pub fn settle_and_deliver<C: ClassModule>(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    class: &C,
    a: &Admitted,
    executed: Executed<C::Aggregate>,
    mut report: Report,
    obs: &mut dyn Observer,
) -> Result<Run<C::Aggregate>, NodeError> {
    let _ = endpoints;
    let Executed {
        evidence,
        aggregate,
    } = executed;
    let claim = class.claim(&aggregate);
    let aggregation_kind = claim.attestation.kind();
    verify_aggregate_claim(
        &master.verifier_for(&a.envelope)?,
        &a.envelope,
        &evidence,
        claim,
    )
    .map_err(|e| NodeError::Refused(e.to_string()))?;
    report.attestations_verified += 1;
    report
        .enclave_kinds
        .insert("aggregation".into(), aggregation_kind);
    advance(
        master,
        &a.task_id,
        TaskEvent::VerificationAccepted,
        None,
        obs,
    )?;
    class.stage(master, &a.task_id, &aggregate, obs)?;
    let inputs = SettlementInputs {
        task_id: a.task_id.clone(),
        escrow_id: escrow(a)?,
        usage: class.usage(&aggregate, &report, a.class.epsilon),
        evidence: evidence_of(
            &*master.masters,
            &a.task_id,
            &evidence,
            class.claim(&aggregate),
            class.compute_units(&aggregate),
        )?,
        verifiers: verifiers()?,
    };
    let settled = master.settle(&inputs, &a.params, obs)?;
    let row = match settled {
        Settled::Finalized(row) => row,
        Settled::Rejected {
            reason,
            fee,
            refund,
        } => {
            report.fee_total = fee;
            report.refund = refund;
            if fee > 0 {
                report.fee_shares.insert("treasury".to_owned(), fee);
            }
            obs.step("rejected", &reason);
            fill_states(master, &a.task_id, &mut report);
            return Ok(Run {
                report,
                aggregate: Some(aggregate),
            });
        }
    };
    report.certificate_signatures = row
        .certificate
        .as_ref()
        .map_or(0, |c| c.valid_signatures(&master.masters.master_keys()));
    report.fee_total = row.candidate.fee_total;
    report.refund = row.candidate.refund;
    report.fee_shares = row.candidate.fee_shares.clone();
    report.epoch_id = row.epoch_id.0;
    report.settlement_state = Some(row.state.to_string());
    // --- Delivery
    let (result_hash, count, what) = class.delivery(&aggregate);
    master.masters.submit(Command::RecordDelivery {
        task_id: a.task_id.clone(),
        recipient: a.actor.clone(),
        result_hash,
        count,
        at_ms: master.now_ms,
    })?;
    obs.step(
        "delivered",
        &format!("{what} to {} (audit event recorded)", a.actor),
    );
    report.delivered = true;
    fill_states(master, &a.task_id, &mut report);
    Ok(Run {
        report,
        aggregate: Some(aggregate),
    })
}

/// The settlement of a free class (`parse`): the same lifecycle —
/// `collecting → verifying_inputs → candidate_ready → finalizing → finalized` — with
/// a zero fee, no shares and no escrow (the master state machine checks fee +
/// refund = the envelope's lock, 0); finality still needs 2 of 3 signatures.
/// Returns the signatures on the `finalizing` certificate.
pub fn settle_free(
    master: &mut MasterServices,
    task_id: &TaskId,
    epoch: symphony_core::ids::EpochId,
    obs: &mut dyn Observer,
) -> Result<usize, NodeError> {
    use symphony_core::lifecycle::SettlementState as S;
    let mut signatures = 0;
    for state in [
        S::Collecting,
        S::VerifyingInputs,
        S::CandidateReady,
        S::Finalizing,
        S::Finalized,
    ] {
        let committed = master.masters.submit(Command::RecordSettlement {
            task_id: task_id.clone(),
            record: symphony_master::SettlementRecord {
                state,
                epoch_id: epoch,
                fee_total: 0,
                fee_shares: Default::default(),
                refund: 0,
            },
        })?;
        if state == S::Finalizing {
            let keys = master.masters.master_keys();
            if !committed.certificate.is_final(&keys) {
                return Err(NodeError::Refused(
                    "commit certificate not final; settlement withheld".into(),
                ));
            }
            signatures = committed.certificate.valid_signatures(&keys);
        }
        obs.step(&format!("settlement:{state}"), "free class: fee 0");
    }
    advance(master, task_id, TaskEvent::SettlementFinalized, None, obs)?;
    Ok(signatures)
}
