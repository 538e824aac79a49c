//! Composite (`train`) tasks in the master state: parent → round (sub-task) →
//! slice per Vault per round, 1 + N + N×M objects with their own lifecycles (seed 003,
//! section 4), and the rules the masters enforce on them:
//! - rounds open in order, only while the parent is `dispatched`, never past
//!   `iteration_policy.max_rounds`, in non-decreasing epochs (a round settles in the
//!   epoch it was dispatched in);
//! - a round closes only when no slice is open, at least `minimum_vault_quorum` slices
//!   verified, its example count is the sum of the verified slices', every verified
//!   slice committed the round's ε, and the cumulative ε stays within the allocation
//!   declared at admission (`budget_reservation.epsilon_per_subject`);
//! - the composite result's ε equals the sum of the per-round records;
//! - a closing round's compute + aggregation fee joins the payout set of its
//!   dispatch epoch (the open one if that epoch closed while the round ran); the
//!   rounds' fees never exceed the escrow lock, and the parent's own payout is its
//!   settlement minus the rounds' payouts;
//! - rounds settle only under a finalized composite settlement of an accepted result,
//!   for the fee scheduled at their close, never exceeding the composite fee.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::composite::{CompositeError, CompositeTask, Slice, SubTask};
use symphony_core::encoding::Digest;
use symphony_core::ids::{EpochId, SliceId, SubTaskId, TaskId, VaultId};
use symphony_core::lifecycle::{SettlementState, SliceEvent, SliceState, TaskEvent, TaskState};

use crate::{refused, Event, MasterError, MasterState, ScheduledPayout};

/// What one Vault's slice of one training round ended as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSliceRecord {
    /// The slice's final state (`verified`, `failed` or `timed_out`).
    pub state: SliceState,
    /// Commitment of the slice's result bundle (zero if none).
    pub commitment: Digest,
    /// ε committed per used subject in this round, micro-units.
    pub epsilon_committed_micro: u64,
    /// What produced the slice's evidence (none when no bundle was returned).
    pub enclave_kind: Option<symphony_core::EnclaveKind>,
}

/// The secure aggregate of one training round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Commitment linking the aggregate to the round's slice commitments.
    pub aggregate_commitment: Digest,
    /// Hash of the global model after the round.
    pub model_hash: Digest,
    /// Noisy count of training examples across the Vaults (the aggregation
    /// enclave's release; no per-Vault count is recorded).
    pub examples: u64,
    /// ε this round added to the run's cumulative ε (accountant), micro-units.
    pub epsilon_micro: u64,
    /// Example-weighted mean training loss, micro-units.
    pub loss_micro: u64,
    /// What produced the round aggregation's evidence.
    pub enclave_kind: symphony_core::EnclaveKind,
}

/// The result of a whole composite (`train`) run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeResultRecord {
    /// Rounds run.
    pub rounds_run: u32,
    /// Why the run stopped (`converged`, `convergence_not_reached`,
    /// `budget_exhausted`, `no_improvement`).
    pub stop_reason: String,
    /// Total ε spent, micro-units; must equal the sum of the rounds' records.
    pub epsilon_spent_micro: u64,
    /// Hash of the final model artifact.
    pub model_hash: Digest,
    /// Verdict of composite verification.
    pub accepted: bool,
}

/// The composite hierarchy of a `train` task and its per-level records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeRecord {
    /// Parent → rounds → slices with their lifecycles.
    pub tree: CompositeTask,
    /// Slice outcomes by (round, Vault).
    pub slices: BTreeMap<(u32, VaultId), RoundSliceRecord>,
    /// Round aggregates.
    pub rounds: BTreeMap<u32, RoundRecord>,
    /// The run's result, once recorded.
    pub result: Option<CompositeResultRecord>,
    /// Per-round settlement: round → (dispatch epoch, fee).
    pub round_settlements: BTreeMap<u32, (EpochId, u64)>,
    /// Per-round payouts, scheduled when each round closed: round → payout.
    pub round_payouts: BTreeMap<u32, RoundPayout>,
}

/// A round's payout, scheduled in an epoch's payout set when the round closed (its
/// compute and aggregation fee; paid out of the task's escrow together with the
/// parent's settlement).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundPayout {
    /// The epoch whose payout set holds it: the round's dispatch epoch, or, if that
    /// epoch closed while the round ran, the epoch open at the round's close.
    pub payout_epoch: EpochId,
    /// Σ of the shares, µSYM.
    pub fee_micro_sym: u64,
    /// Recipient → µSYM.
    pub fee_shares: BTreeMap<String, u64>,
}

/// The id a round's payout carries in an epoch's payout set: the sub-task's id
/// (`<task>/r<round>`).
pub fn round_payout_id(task_id: &TaskId, round: u32) -> Result<TaskId, MasterError> {
    let sub = SubTaskId {
        parent: task_id.clone(),
        round,
    };
    TaskId::new(sub.to_string())
        .map_err(|e| refused(task_id, format!("round {round} payout id: {e}")))
}

impl CompositeRecord {
    /// What produced the run's evidence: each Vault's slices (by Vault id, the kind
    /// of its latest round) and the rounds' aggregation (`"aggregation"`).
    pub fn enclave_kinds(&self) -> BTreeMap<String, symphony_core::EnclaveKind> {
        let mut kinds: BTreeMap<String, symphony_core::EnclaveKind> = self
            .slices
            .iter()
            .filter_map(|((_, v), s)| s.enclave_kind.map(|k| (v.to_string(), k)))
            .collect();
        if let Some(r) = self.rounds.values().next_back() {
            kinds.insert("aggregation".into(), r.enclave_kind);
        }
        kinds
    }
}

impl MasterState {
    fn composite_mut(&mut self, task_id: &TaskId) -> Result<&mut CompositeRecord, MasterError> {
        self.composites
            .get_mut(task_id)
            .ok_or_else(|| refused(task_id, "no round was opened for this task"))
    }

    pub(crate) fn open_round(
        &mut self,
        task_id: &TaskId,
        round: u32,
        epoch_id: EpochId,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self
            .tasks
            .get(task_id)
            .ok_or_else(|| MasterError::UnknownTask(task_id.clone()))?;
        let body = rec.envelope.body();
        let Some(policy) = body.iteration_policy.as_ref() else {
            return Err(refused(task_id, "rounds exist only for composite tasks"));
        };
        let state = rec.state;
        let vaults: Vec<VaultId> = body
            .coordination_envelope
            .participating_vault_ids
            .iter()
            .cloned()
            .collect();
        let max_rounds = policy.max_rounds;
        // A round is dispatched in the epoch open now (the replicated governance
        // epoch), never one the caller computed: it settles in that epoch.
        if epoch_id != self.governance.epoch {
            return Err(refused(
                task_id,
                format!(
                    "round {round} names {epoch_id}, but {} is open: a round is \
                     dispatched in the current epoch",
                    self.governance.epoch
                ),
            ));
        }
        let composite = self
            .composites
            .entry(task_id.clone())
            .or_insert_with(|| CompositeRecord {
                tree: CompositeTask::new(task_id.clone(), max_rounds, vaults),
                slices: BTreeMap::new(),
                rounds: BTreeMap::new(),
                result: None,
                round_settlements: BTreeMap::new(),
                round_payouts: BTreeMap::new(),
            });
        if composite.tree.rounds.len() as u32 != round {
            return Err(refused(
                task_id,
                format!(
                    "round {round} is not the next round ({})",
                    composite.tree.rounds.len()
                ),
            ));
        }
        if composite
            .tree
            .rounds
            .last()
            .is_some_and(|r| r.epoch_id > epoch_id)
        {
            return Err(refused(
                task_id,
                "a round's epoch precedes its predecessor's",
            ));
        }
        // The parent's lifecycle lives in the task record; the tree mirrors it.
        composite.tree.state = state;
        // A closed round waits in `awaiting_settlement` until the composite settles
        // (seed 003, section 6), so the next round may open once the previous one is
        // closed (the core's `open_round` wants a terminal predecessor).
        if let Some(p) = composite.tree.rounds.last() {
            if p.state != TaskState::AwaitingSettlement && !p.state.is_terminal() {
                return Err(refused(
                    task_id,
                    format!("round {} is still open", p.id.round),
                ));
            }
        }
        if state != TaskState::Dispatched || round >= composite.tree.max_rounds {
            return Err(refused(
                task_id,
                format!(
                    "round {round} cannot open: parent {state}, max_rounds {}",
                    composite.tree.max_rounds
                ),
            ));
        }
        let id = SubTaskId {
            parent: task_id.clone(),
            round,
        };
        let sub_state = TaskState::Accepted
            .next(TaskEvent::BeginResolution)
            .and_then(|s| s.next(TaskEvent::Dispatch))?;
        let slices = composite
            .tree
            .vaults
            .iter()
            .map(|v| {
                let slice = Slice {
                    id: SliceId {
                        sub_task: id.clone(),
                        vault: v.clone(),
                    },
                    state: SliceState::Assigned,
                };
                (v.clone(), slice)
            })
            .collect();
        composite.tree.rounds.push(SubTask {
            id,
            epoch_id,
            state: sub_state,
            slices,
        });
        Ok(vec![Event::TaskStateChanged {
            task_id: task_id.clone(),
            from: TaskState::Accepted,
            to: TaskState::Dispatched,
        }])
    }

    pub(crate) fn record_round_slice(
        &mut self,
        task_id: &TaskId,
        round: u32,
        vault_id: &VaultId,
        record: &RoundSliceRecord,
    ) -> Result<Vec<Event>, MasterError> {
        let composite = self.composite_mut(task_id)?;
        let sub = composite
            .tree
            .round(round)
            .map_err(|e| composite_refused(task_id, e))?;
        if sub.state != TaskState::Dispatched {
            return Err(refused(task_id, format!("round {round} is {}", sub.state)));
        }
        let events: &[SliceEvent] = match record.state {
            SliceState::Verified => &[SliceEvent::Return, SliceEvent::Verify],
            SliceState::Returned => &[SliceEvent::Return],
            SliceState::Failed => &[SliceEvent::Fail],
            SliceState::TimedOut => &[SliceEvent::Timeout],
            SliceState::Assigned => {
                return Err(refused(task_id, "a recorded slice cannot be `assigned`"))
            }
        };
        for e in events {
            composite
                .tree
                .advance_slice(round, vault_id, *e)
                .map_err(|e| composite_refused(task_id, e))?;
        }
        composite
            .slices
            .insert((round, vault_id.clone()), record.clone());
        Ok(vec![Event::SliceRecorded {
            task_id: task_id.clone(),
            vault_id: vault_id.clone(),
            state: record.state,
        }])
    }

    pub(crate) fn close_round(
        &mut self,
        task_id: &TaskId,
        round: u32,
        record: &RoundRecord,
        fee_shares: &BTreeMap<String, u64>,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self
            .tasks
            .get(task_id)
            .ok_or_else(|| MasterError::UnknownTask(task_id.clone()))?;
        let body = rec.envelope.body();
        let quorum = u64::from(body.coordination_envelope.minimum_vault_quorum);
        let allocation = body.budget_reservation.epsilon_per_subject.micro;
        let locked = body
            .budget_lock_ref
            .as_ref()
            .map_or(0, |l| l.amount_base_units);
        let payout_id = round_payout_id(task_id, round)?;
        let fee = fee_shares
            .values()
            .try_fold(0u64, |acc, v| acc.checked_add(*v))
            .ok_or_else(|| refused(task_id, format!("round {round}: fee shares overflow")))?;
        let composite = self.composite_mut(task_id)?;
        // The rounds' payouts never exceed what the escrow locked.
        let accrued = composite
            .round_payouts
            .values()
            .try_fold(fee, |acc, p| acc.checked_add(p.fee_micro_sym));
        if accrued.is_none_or(|a| a > locked) {
            return Err(refused(
                task_id,
                format!(
                    "round {round}: round fees {accrued:?} µSYM would exceed the escrow lock \
                     {locked} µSYM"
                ),
            ));
        }
        let sub = composite
            .tree
            .round(round)
            .map_err(|e| composite_refused(task_id, e))?;
        if sub.count_in(SliceState::Assigned) > 0 || sub.count_in(SliceState::Returned) > 0 {
            return Err(refused(
                task_id,
                format!("round {round} has slices still open"),
            ));
        }
        let verified: Vec<&RoundSliceRecord> = composite
            .slices
            .iter()
            .filter(|((r, _), s)| *r == round && s.state == SliceState::Verified)
            .map(|(_, s)| s)
            .collect();
        if (verified.len() as u64) < quorum {
            return Err(refused(
                task_id,
                format!(
                    "round {round}: {} slices verified, below minimum_vault_quorum {quorum}",
                    verified.len()
                ),
            ));
        }
        if verified
            .iter()
            .any(|s| s.epsilon_committed_micro != record.epsilon_micro)
        {
            return Err(refused(
                task_id,
                format!("round {round}: a slice committed a different ε than the round's"),
            ));
        }
        // Cumulative consumption never exceeds the allocation declared at admission.
        let spent = composite
            .rounds
            .values()
            .try_fold(record.epsilon_micro, |acc, r| {
                acc.checked_add(r.epsilon_micro)
            });
        if spent.is_none_or(|s| s > allocation) {
            return Err(refused(
                task_id,
                format!("round {round} would exceed the run's ε allocation of {allocation} µε"),
            ));
        }
        composite
            .tree
            .advance_round(round, TaskEvent::ExecutionFinished)
            .and_then(|_| {
                composite
                    .tree
                    .advance_round(round, TaskEvent::VerificationAccepted)
            })
            .map_err(|e| composite_refused(task_id, e))?;
        composite.rounds.insert(round, record.clone());
        let dispatch_epoch = composite
            .tree
            .round(round)
            .map_err(|e| composite_refused(task_id, e))?
            .epoch_id;
        // The round's payout joins the open epoch's payout set: its dispatch epoch,
        // unless that epoch closed while the round ran (seed 003: the round keeps its
        // assigned epoch, recorded as the payout's `dispatch_epoch`).
        let payout_epoch = self.governance.schedule_payout(
            &payout_id,
            ScheduledPayout {
                dispatch_epoch,
                fee_total_micro_sym: fee,
                fee_shares: fee_shares.clone(),
            },
        )?;
        self.composite_mut(task_id)?.round_payouts.insert(
            round,
            RoundPayout {
                payout_epoch,
                fee_micro_sym: fee,
                fee_shares: fee_shares.clone(),
            },
        );
        Ok(vec![
            Event::AggregateRecorded {
                task_id: task_id.clone(),
                commitment: record.aggregate_commitment,
            },
            Event::PayoutScheduled {
                task_id: payout_id,
                epoch: payout_epoch,
            },
        ])
    }

    pub(crate) fn record_composite_result(
        &mut self,
        task_id: &TaskId,
        record: &CompositeResultRecord,
    ) -> Result<Vec<Event>, MasterError> {
        let state = self
            .tasks
            .get(task_id)
            .ok_or_else(|| MasterError::UnknownTask(task_id.clone()))?
            .state;
        if state != TaskState::Verifying {
            return Err(refused(
                task_id,
                format!("the composite result is recorded while verifying, not {state}"),
            ));
        }
        let composite = self.composite_mut(task_id)?;
        if composite.result.is_some() {
            return Err(refused(task_id, "the composite result is recorded once"));
        }
        if record.rounds_run as usize != composite.tree.rounds.len()
            || composite.rounds.len() != composite.tree.rounds.len()
        {
            return Err(refused(
                task_id,
                "rounds_run does not match the closed rounds",
            ));
        }
        let sum = composite
            .rounds
            .values()
            .try_fold(0u64, |acc, r| acc.checked_add(r.epsilon_micro));
        if sum != Some(record.epsilon_spent_micro) {
            return Err(refused(
                task_id,
                format!(
                    "ε spent {} µε is not the sum of the per-round records {sum:?}",
                    record.epsilon_spent_micro
                ),
            ));
        }
        composite.result = Some(record.clone());
        Ok(vec![Event::AggregateRecorded {
            task_id: task_id.clone(),
            commitment: record.model_hash,
        }])
    }

    pub(crate) fn settle_round(
        &mut self,
        task_id: &TaskId,
        round: u32,
        fee_micro_sym: u64,
    ) -> Result<Vec<Event>, MasterError> {
        let rec = self
            .tasks
            .get(task_id)
            .ok_or_else(|| MasterError::UnknownTask(task_id.clone()))?;
        let fee_total = match &rec.settlement {
            Some(s) if s.state == SettlementState::Finalized => s.fee_total,
            _ => {
                return Err(refused(
                    task_id,
                    "rounds settle only under a finalized composite settlement",
                ))
            }
        };
        let composite = self.composite_mut(task_id)?;
        if !composite.result.as_ref().is_some_and(|r| r.accepted) {
            return Err(refused(task_id, "only an accepted training result settles"));
        }
        match composite.round_payouts.get(&round) {
            Some(p) if p.fee_micro_sym == fee_micro_sym => {}
            Some(p) => {
                return Err(refused(
                    task_id,
                    format!(
                        "round {round} settles for {fee_micro_sym} µSYM, but its payout \
                         scheduled at its close is {} µSYM",
                        p.fee_micro_sym
                    ),
                ))
            }
            None => {
                return Err(refused(
                    task_id,
                    format!("round {round} has no payout: it never closed"),
                ))
            }
        }
        let settled = composite
            .round_settlements
            .values()
            .try_fold(fee_micro_sym, |acc, (_, f)| acc.checked_add(*f));
        if settled.is_none_or(|s| s > fee_total) {
            return Err(refused(
                task_id,
                "round fees would exceed the composite fee total",
            ));
        }
        let epoch = composite
            .tree
            .round(round)
            .map_err(|e| composite_refused(task_id, e))?
            .epoch_id;
        composite
            .tree
            .advance_round(round, TaskEvent::SettlementFinalized)
            .map_err(|e| composite_refused(task_id, e))?;
        composite
            .round_settlements
            .insert(round, (epoch, fee_micro_sym));
        Ok(vec![Event::SettlementChanged {
            task_id: task_id.clone(),
            state: SettlementState::Finalized,
        }])
    }
}

fn composite_refused(task_id: &TaskId, e: CompositeError) -> MasterError {
    refused(task_id, e.to_string())
}
