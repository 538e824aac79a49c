//! The fixture both test files of the master state machine share: a sealed two-Vault
//! `query` envelope and the commands and records the tests build around it.

use std::collections::{BTreeMap, BTreeSet};

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::Digest;
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent};
use symphony_master::{AggregateRecord, Command, SettlementRecord, SliceRecord};

pub fn vault(s: &str) -> VaultId {
    VaultId::new(s).unwrap()
}

pub fn envelope(task: &str, nonce: u64) -> TaskEnvelope {
    let vaults: BTreeSet<VaultId> = [vault("v1"), vault("v2")].into_iter().collect();
    TaskEnvelope::seal(EnvelopeBody {
        task_id: TaskId::new(task).unwrap(),
        task_class: TaskClass::Query,
        caller: CallerContext {
            actor_id: ActorId::new("advertiser:luckin").unwrap(),
            public_key: [1; 32],
            request_hash: Digest([2; 32]),
            nonce,
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
            usage_scope: UsageScope::Marketing,
            epsilon_per_subject: Epsilon::from_milli(100),
            subjects_reserved: 5,
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: vaults,
            minimum_vault_quorum: 2,
            aggregation_method: AggregationMethod::UnionWithCardinalityCap,
        },
        budget_lock_ref: Some(BudgetLockRef {
            ledger: "embedded".into(),
            escrow_id: "e1".into(),
            amount_base_units: 1000,
        }),
        iteration_policy: None,
        resolved_plan_hash: Digest([3; 32]),
        constraints: BTreeMap::new(),
        deadline_ms: 10_000,
    })
    .unwrap()
}

pub fn advance(task: &TaskId, event: TaskEvent) -> Command {
    Command::Advance {
        task_id: task.clone(),
        event,
        reason: None,
    }
}

pub fn slice(state: SliceState) -> SliceRecord {
    SliceRecord {
        state,
        commitment: Digest([9; 32]),
        subjects_evaluated: 3,
        epsilon_committed_micro: 100_000,
        enclave_kind: Some(symphony_core::EnclaveKind::Software),
    }
}

pub fn settlement(state: SettlementState, fee: u64, shares: &[(&str, u64)]) -> SettlementRecord {
    SettlementRecord {
        state,
        epoch_id: EpochId(0),
        fee_total: fee,
        fee_shares: shares.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        refund: 1000 - fee,
    }
}

/// The commands that take task `t` (`envelope(t, 1)`) from admission through two
/// verified slices and an aggregate to `awaiting_settlement`.
pub fn accepted_task(t: &TaskId) -> Vec<Command> {
    let mut cmds = vec![
        Command::AdmitTask {
            envelope: Box::new(envelope(t.as_str(), 1)),
        },
        advance(t, TaskEvent::BeginResolution),
        advance(t, TaskEvent::Dispatch),
    ];
    for v in ["v1", "v2"] {
        cmds.push(Command::RecordSlice {
            task_id: t.clone(),
            vault_id: vault(v),
            record: slice(SliceState::Verified),
        });
    }
    cmds.push(Command::RecordAggregate {
        task_id: t.clone(),
        record: AggregateRecord {
            commitment: Digest([4; 32]),
            eligible_count: 6,
            delivered_count: 5,
            result_hash: Digest([5; 32]),
            enclave_kind: symphony_core::EnclaveKind::Software,
        },
    });
    cmds.push(advance(t, TaskEvent::ExecutionFinished));
    cmds.push(advance(t, TaskEvent::VerificationAccepted));
    cmds
}
