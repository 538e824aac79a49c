//! The takeover rule: what a master that becomes leader does with a task attempt
//! the previous leader started and did not finish.
//!
//! The rule is a function of the replicated state alone (plus two facts the adapter
//! reads from replicated stores: whether the attempt's escrow was already paid out,
//! and whether a verified result was staged), so every master decides the same:
//!
//! - **Complete** when the submitter's money already moved: the task is `completed`,
//!   or the escrow was paid while the task is `awaiting_settlement` with its
//!   settlement `finalizing` or `finalized` — and a result was staged. The adapter
//!   then refunds the escrow remainder, finalizes the settlement, completes the task
//!   and records the delivery of the staged result (never a second payout, never a
//!   re-run).
//! - **Completed without result** when the task completed but nothing was staged
//!   (a leader of an older version ran it).
//! - **Abort** otherwise: the adapter releases every Vault's reservations (for a
//!   `train` task: every round's), rejects the task if its lifecycle still allows
//!   it, and refunds what is left in the escrow (unpaid escrows only).
//!
//! The same rule holds for every class; what differs is only which record names the
//! delivered result (`query`/`compute`: the aggregate's result hash; `train`: the
//! composite result's model artifact hash).

use symphony_core::encoding::Digest;
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, TaskId};
use symphony_core::lifecycle::{SettlementState, SliceState, TaskState};

use crate::{MasterState, SettlementRecord};

/// A delivery the adapter records (`Command::RecordDelivery`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The submitter.
    pub recipient: ActorId,
    /// Hash of the delivered result (aggregate result hash, or model artifact hash).
    pub result_hash: Digest,
    /// Items delivered (audience size, groups, or 1 model).
    pub count: u64,
}

/// The steps that complete an attempt whose escrow was paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The `finalized` settlement record to replicate, when the settlement stopped
    /// at `finalizing`.
    pub finalize_settlement: Option<SettlementRecord>,
    /// `train`: the rounds still to settle in their dispatch epochs (each with
    /// its verified slices, which its fee is priced by), before `completed`.
    pub settle_rounds: Vec<(u32, u32)>,
    /// Whether the task still has to move to `completed` (`SettlementFinalized`).
    pub advance_to_completed: bool,
    /// The delivery to record, unless one is already in the audit log.
    pub delivery: Option<Delivery>,
}

/// What to do with an interrupted attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// Complete from the replicated state and deliver the staged result; refund the
    /// escrow remainder.
    Complete(Completion),
    /// The task completed, but no result was staged to deliver.
    CompletedWithoutResult,
    /// Abort: release the reservations, reject the task when `reject` (its
    /// lifecycle still allows it), refund the unpaid escrow.
    Abort {
        /// Whether the task is still in a non-terminal state (reject it).
        reject: bool,
    },
}

/// Why the rule could not decide (the replicated state is inconsistent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("takeover of {task_id}: {reason}")]
pub struct TakeoverError {
    /// The task.
    pub task_id: String,
    /// What is missing.
    pub reason: String,
}

/// Decides the fate of the attempt `task_id`: `escrow_paid` says whether its escrow
/// was paid out, `staged_items` how many items of a verified result are staged
/// (`None`: nothing staged).
pub fn decide(
    state: &MasterState,
    task_id: &TaskId,
    escrow_paid: bool,
    staged_items: Option<u64>,
) -> Result<Takeover, TakeoverError> {
    let Some(rec) = state.task(task_id) else {
        // Never admitted: only reservations (and maybe an escrow) to undo.
        return Ok(Takeover::Abort { reject: false });
    };
    let abort = Takeover::Abort {
        reject: !rec.state.is_terminal(),
    };
    let Some(items) = staged_items else {
        return Ok(if rec.state == TaskState::Completed {
            Takeover::CompletedWithoutResult
        } else {
            abort
        });
    };
    let settlement = rec.settlement.as_ref().map(|s| s.state);
    let completable = rec.state == TaskState::Completed
        || (escrow_paid
            && rec.state == TaskState::AwaitingSettlement
            && matches!(
                settlement,
                Some(SettlementState::Finalizing | SettlementState::Finalized)
            ));
    if !completable {
        return Ok(abort);
    }
    let finalize_settlement = rec
        .settlement
        .as_ref()
        .filter(|s| s.state == SettlementState::Finalizing)
        .map(|s| {
            let mut finalized = s.clone();
            finalized.state = SettlementState::Finalized;
            finalized
        });
    let delivered = state
        .audit_log()
        .iter()
        .any(|e| &e.task_id == task_id && e.kind == "result_delivered");
    let err = |reason: &str| TakeoverError {
        task_id: task_id.to_string(),
        reason: reason.to_owned(),
    };
    let body = rec.envelope.body();
    let delivery = if delivered {
        None
    } else {
        let result_hash = match body.task_class {
            TaskClass::Train => {
                state
                    .composite(task_id)
                    .and_then(|c| c.result.as_ref())
                    .filter(|r| r.accepted)
                    .ok_or_else(|| err("no accepted composite result to deliver"))?
                    .model_hash
            }
            _ => {
                rec.aggregate
                    .as_ref()
                    .ok_or_else(|| err("no aggregate to deliver"))?
                    .result_hash
            }
        };
        Some(Delivery {
            recipient: body.caller.actor_id.clone(),
            result_hash,
            count: items,
        })
    };
    let settle_rounds = match (body.task_class, state.composite(task_id)) {
        (TaskClass::Train, Some(c)) => c
            .rounds
            .keys()
            .filter(|r| !c.round_settlements.contains_key(r))
            .map(|r| {
                let verified = c
                    .slices
                    .iter()
                    .filter(|((round, _), s)| round == r && s.state == SliceState::Verified)
                    .count() as u32;
                (*r, verified)
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Takeover::Complete(Completion {
        finalize_settlement,
        settle_rounds,
        advance_to_completed: rec.state != TaskState::Completed,
        delivery,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use symphony_core::budget::Epsilon;
    use symphony_core::consent::UsageScope;
    use symphony_core::envelope::*;
    use symphony_core::ids::*;
    use symphony_core::lifecycle::{SliceState, TaskEvent};

    use super::*;
    use crate::{AggregateRecord, Command, CompositeResultRecord, SliceRecord};

    fn vault(s: &str) -> VaultId {
        VaultId::new(s).unwrap()
    }

    fn envelope(task: &TaskId, class: TaskClass) -> TaskEnvelope {
        let vaults: BTreeSet<VaultId> = [vault("v1"), vault("v2")].into_iter().collect();
        let train = class == TaskClass::Train;
        TaskEnvelope::seal(EnvelopeBody {
            task_id: task.clone(),
            task_class: class,
            caller: CallerContext {
                actor_id: ActorId::new("model-operator:x").unwrap(),
                public_key: [1; 32],
                request_hash: Digest([2; 32]),
                nonce: 1,
                admitted_at_ms: 1000,
            },
            authorization: Authorization {
                granted_by: "test".into(),
                vault_permits: vaults.clone(),
            },
            consent_refs: vec![],
            semantic_version: SemanticVersion(1),
            policy_version: PolicyVersion(1),
            epoch_id: EpochId(0),
            budget_reservation: BudgetReservation {
                usage_scope: if train {
                    UsageScope::Training
                } else {
                    UsageScope::Marketing
                },
                epsilon_per_subject: Epsilon::from_milli(100),
                subjects_reserved: 5,
            },
            coordination_envelope: CoordinationEnvelope {
                participating_vault_ids: vaults,
                minimum_vault_quorum: 2,
                aggregation_method: if train {
                    AggregationMethod::FederatedAverage
                } else {
                    AggregationMethod::UnionWithCardinalityCap
                },
            },
            budget_lock_ref: Some(BudgetLockRef {
                ledger: "test".into(),
                escrow_id: "e1".into(),
                amount_base_units: 1000,
            }),
            iteration_policy: train.then_some(IterationPolicy {
                max_rounds: 3,
                convergence_threshold_micro: 1,
                early_stop_patience: 1,
                stop_on_budget_exhaustion: true,
            }),
            resolved_plan_hash: Digest([3; 32]),
            constraints: BTreeMap::new(),
            deadline_ms: 10_000,
        })
        .unwrap()
    }

    fn apply(s: &mut MasterState, c: Command) {
        s.apply(&c).unwrap();
    }

    fn advance(s: &mut MasterState, t: &TaskId, event: TaskEvent) {
        apply(
            s,
            Command::Advance {
                task_id: t.clone(),
                event,
                reason: None,
            },
        );
    }

    fn settle_to(s: &mut MasterState, t: &TaskId, last: SettlementState) {
        let mut state = SettlementState::Collecting;
        loop {
            apply(
                s,
                Command::RecordSettlement {
                    task_id: t.clone(),
                    record: SettlementRecord {
                        state,
                        epoch_id: EpochId(0),
                        fee_total: 600,
                        fee_shares: [("treasury".to_string(), 600)].into_iter().collect(),
                        refund: 400,
                    },
                },
            );
            if state == last {
                return;
            }
            state = state.advance().unwrap();
        }
    }

    /// A query task dispatched, two slices and the aggregate recorded, verified:
    /// `awaiting_settlement`.
    fn query_awaiting(s: &mut MasterState, t: &TaskId) {
        apply(
            s,
            Command::AdmitTask {
                envelope: Box::new(envelope(t, TaskClass::Query)),
            },
        );
        advance(s, t, TaskEvent::BeginResolution);
        advance(s, t, TaskEvent::Dispatch);
        for v in ["v1", "v2"] {
            apply(
                s,
                Command::RecordSlice {
                    task_id: t.clone(),
                    vault_id: vault(v),
                    record: SliceRecord {
                        state: SliceState::Verified,
                        commitment: Digest([9; 32]),
                        subjects_evaluated: 3,
                        epsilon_committed_micro: 100_000,
                        enclave_kind: Some(symphony_core::EnclaveKind::Software),
                    },
                },
            );
        }
        apply(
            s,
            Command::RecordAggregate {
                task_id: t.clone(),
                record: AggregateRecord {
                    commitment: Digest([4; 32]),
                    eligible_count: 6,
                    delivered_count: 5,
                    result_hash: Digest([5; 32]),
                    enclave_kind: symphony_core::EnclaveKind::Software,
                },
            },
        );
        advance(s, t, TaskEvent::ExecutionFinished);
        advance(s, t, TaskEvent::VerificationAccepted);
    }

    /// A train task with one round and an accepted composite result, verified.
    fn train_awaiting(s: &mut MasterState, t: &TaskId) {
        apply(
            s,
            Command::AdmitTask {
                envelope: Box::new(envelope(t, TaskClass::Train)),
            },
        );
        advance(s, t, TaskEvent::BeginResolution);
        advance(s, t, TaskEvent::Dispatch);
        apply(
            s,
            Command::OpenRound {
                task_id: t.clone(),
                round: 0,
                epoch_id: EpochId(0),
            },
        );
        for v in ["v1", "v2"] {
            apply(
                s,
                Command::RecordRoundSlice {
                    task_id: t.clone(),
                    round: 0,
                    vault_id: vault(v),
                    record: crate::RoundSliceRecord {
                        state: SliceState::Verified,
                        commitment: Digest([9; 32]),
                        epsilon_committed_micro: 100_000,
                        enclave_kind: Some(symphony_core::EnclaveKind::Software),
                    },
                },
            );
        }
        apply(
            s,
            Command::CloseRound {
                task_id: t.clone(),
                round: 0,
                record: crate::RoundRecord {
                    aggregate_commitment: Digest([4; 32]),
                    model_hash: Digest([6; 32]),
                    examples: 20,
                    epsilon_micro: 100_000,
                    loss_micro: 600_000,
                    enclave_kind: symphony_core::EnclaveKind::Software,
                },
                fee_shares: [("treasury".to_string(), 100)].into(),
            },
        );
        advance(s, t, TaskEvent::ExecutionFinished);
        apply(
            s,
            Command::RecordCompositeResult {
                task_id: t.clone(),
                record: CompositeResultRecord {
                    rounds_run: 1,
                    stop_reason: "convergence_not_reached".into(),
                    epsilon_spent_micro: 100_000,
                    model_hash: Digest([7; 32]),
                    accepted: true,
                },
            },
        );
        advance(s, t, TaskEvent::VerificationAccepted);
    }

    fn tid(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    #[test]
    fn an_unknown_or_unpaid_attempt_is_aborted() {
        let mut s = MasterState::new();
        let t = tid("task-1");
        assert_eq!(
            decide(&s, &t, false, None).unwrap(),
            Takeover::Abort { reject: false }
        );
        query_awaiting(&mut s, &t);
        // Staged but not paid: abort (nothing moved yet), reject (not terminal).
        assert_eq!(
            decide(&s, &t, false, Some(5)).unwrap(),
            Takeover::Abort { reject: true }
        );
        // Paid but the settlement never reached finalizing: abort.
        settle_to(&mut s, &t, SettlementState::Collecting);
        assert_eq!(
            decide(&s, &t, true, Some(5)).unwrap(),
            Takeover::Abort { reject: true }
        );
    }

    #[test]
    fn a_paid_query_attempt_is_completed_and_its_staged_result_delivered() {
        let mut s = MasterState::new();
        let t = tid("task-2");
        query_awaiting(&mut s, &t);
        let mut last = SettlementState::Collecting;
        while last != SettlementState::Finalizing {
            last = last.advance().unwrap();
        }
        settle_to(&mut s, &t, last);
        let Takeover::Complete(c) = decide(&s, &t, true, Some(5)).unwrap() else {
            panic!("a paid attempt must complete");
        };
        assert_eq!(
            c.finalize_settlement.as_ref().map(|r| r.state),
            Some(SettlementState::Finalized)
        );
        assert!(c.advance_to_completed);
        let d = c.delivery.unwrap();
        assert_eq!(d.result_hash, Digest([5; 32]));
        assert_eq!(d.count, 5);
        // Nothing staged: paid but nothing to deliver → abort is not allowed to
        // repeat the payout; the rule says abort (reject), the adapter refunds only
        // unpaid escrows.
        assert_eq!(
            decide(&s, &t, true, None).unwrap(),
            Takeover::Abort { reject: true }
        );
    }

    #[test]
    fn a_train_attempt_aborts_before_payout_and_completes_after_it() {
        let mut s = MasterState::new();
        let t = tid("train-abc-1");
        train_awaiting(&mut s, &t);
        // Interrupted before the payout: abort (release every round, refund).
        assert_eq!(
            decide(&s, &t, false, Some(1)).unwrap(),
            Takeover::Abort { reject: true }
        );
        settle_to(&mut s, &t, SettlementState::Finalized);
        let Takeover::Complete(c) = decide(&s, &t, true, Some(1)).unwrap() else {
            panic!("a paid train attempt must complete");
        };
        assert_eq!(c.finalize_settlement, None);
        assert!(c.advance_to_completed);
        // Round 0 (two verified slices) still settles in its epoch.
        assert_eq!(c.settle_rounds, vec![(0, 2)]);
        // The model artifact, not an aggregate, is what is delivered.
        assert_eq!(c.delivery.unwrap().result_hash, Digest([7; 32]));
        apply(
            &mut s,
            Command::SettleRound {
                task_id: t.clone(),
                round: 0,
                fee_micro_sym: 100,
            },
        );
        // Completed and delivered: nothing left but to report it.
        advance(&mut s, &t, TaskEvent::SettlementFinalized);
        apply(
            &mut s,
            Command::RecordDelivery {
                task_id: t.clone(),
                recipient: ActorId::new("model-operator:x").unwrap(),
                result_hash: Digest([7; 32]),
                count: 1,
                at_ms: 5,
            },
        );
        assert_eq!(
            decide(&s, &t, true, Some(1)).unwrap(),
            Takeover::Complete(Completion {
                finalize_settlement: None,
                settle_rounds: vec![],
                advance_to_completed: false,
                delivery: None,
            })
        );
        assert_eq!(
            decide(&s, &t, true, None).unwrap(),
            Takeover::CompletedWithoutResult
        );
    }
}
