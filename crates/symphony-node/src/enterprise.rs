//! The enterprise node: Vault services and the Computation Runtime.
//!
//! Every assignment is checked here, inside the Vault's sovereignty boundary, no
//! matter what the master says: the envelope must verify, the Vault operator must
//! permit the (actor, task class) pair, only subjects with consent for the task's
//! usage scope and a budget reservation for the task are evaluated, and the
//! evaluation runs inside the node's enclave, which attests to the run.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Mutex;

use symphony_core::budget::{BudgetOp, Epsilon};
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, SubjectId, TaskId, VaultId};
use symphony_enclave::{SoftwareEnclave, Tee};
use symphony_vault::{ReserveMode, Vault};

use crate::bundle::{
    dedup_key, dedup_token, inputs_commitment, AudienceSignal, BundleBody, SliceAssignment,
    SliceResultBundle,
};
use crate::NodeError;

/// What a Vault answers at admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionReply {
    /// The Vault.
    pub vault_id: VaultId,
    /// Subjects with consent and budget that now hold a reservation.
    pub subjects_reserved: u64,
    /// Subjects excluded for exhausted budget.
    pub subjects_excluded: u64,
    /// Commitment to the reserved set (the set itself stays in the Vault).
    pub snapshot_commitment: Digest,
}

/// What a master needs from an enterprise node: the narrow boundary between the
/// two node types (in process for the embedded network, over the network when
/// deployed).
pub trait EnterpriseEndpoint {
    /// The hosted Vault.
    fn vault_id(&self) -> &VaultId;
    /// Admission: authorization check and budget reservation for consenting subjects.
    fn admission_reserve(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        class: TaskClass,
        scope: UsageScope,
        epsilon: Epsilon,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError>;
    /// Executes one slice in the enclave.
    fn execute_slice(&self, assignment: &SliceAssignment) -> Result<SliceResultBundle, NodeError>;
    /// Releases the task's reservations (failure before execution).
    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError>;
}

impl EnterpriseEndpoint for EnterpriseNode {
    fn vault_id(&self) -> &VaultId {
        EnterpriseNode::vault_id(self)
    }
    fn admission_reserve(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        class: TaskClass,
        scope: UsageScope,
        epsilon: Epsilon,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        EnterpriseNode::admission_reserve(self, task_id, actor, class, scope, epsilon, at_ms)
    }
    fn execute_slice(&self, assignment: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        EnterpriseNode::execute_slice(self, assignment)
    }
    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        EnterpriseNode::release(self, task_id)
    }
}

/// An enterprise node hosting one Vault.
pub struct EnterpriseNode {
    pub(crate) vault: Vault,
    pub(crate) enclave: SoftwareEnclave,
    /// Reservations this node made, by task (kept to release or commit them).
    reservations: Mutex<BTreeMap<TaskId, (UsageScope, Vec<SubjectId>)>>,
    /// Training runs' Vault-side secrets, by task (`training::endpoint`).
    pub(crate) training: crate::training::TrainerSessions,
}

impl EnterpriseNode {
    /// A node over `vault`, executing in `enclave`.
    pub fn new(vault: Vault, enclave: SoftwareEnclave) -> Self {
        EnterpriseNode {
            vault,
            enclave,
            reservations: Mutex::new(BTreeMap::new()),
            training: Default::default(),
        }
    }

    /// The hosted Vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The Vault's id.
    pub fn vault_id(&self) -> &VaultId {
        self.vault.vault_id()
    }

    /// The enclave's platform key (for the verifiers' trust list).
    pub fn platform_public_key(&self) -> [u8; 32] {
        self.enclave.platform_public_key()
    }

    /// Admission: checks authorization, then reserves `epsilon` for every subject
    /// with consent for `scope` at `at_ms` and enough budget (all in one Vault
    /// transaction). Idempotent by task id.
    pub fn admission_reserve(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        class: TaskClass,
        scope: UsageScope,
        epsilon: Epsilon,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        self.vault.authorize(actor, class)?;
        let consented: Vec<SubjectId> = self
            .vault
            .consented_subjects(scope, at_ms)?
            .into_iter()
            .collect();
        let report = self.vault.reserve_for_task(
            task_id,
            scope,
            &consented,
            epsilon,
            ReserveMode::SkipInsufficient,
        )?;
        let snapshot_commitment = content_hash("scp/consent-snapshot/v1", &report.reserved)
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        let reply = AdmissionReply {
            vault_id: self.vault_id().clone(),
            subjects_reserved: report.reserved.len() as u64,
            subjects_excluded: report.excluded.len() as u64,
            snapshot_commitment,
        };
        self.lock()
            .insert(task_id.clone(), (scope, report.reserved));
        Ok(reply)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskId, (UsageScope, Vec<SubjectId>)>> {
        match self.reservations.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Failure before execution: every reservation of the task is released.
    pub fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        let Some((scope, subjects)) = self.lock().remove(task_id) else {
            return Ok(0);
        };
        self.vault.finish_task(
            scope,
            &subjects,
            &BudgetOp::Release {
                task: task_id.clone(),
            },
        )?;
        Ok(subjects.len() as u64)
    }

    /// Remaining ε of a subject for a scope (for reports and tests).
    pub fn remaining_budget(
        &self,
        subject: &SubjectId,
        scope: UsageScope,
    ) -> Result<Epsilon, NodeError> {
        Ok(self.vault.budget_account(subject, scope)?.remaining())
    }

    /// Executes one audience slice inside the enclave.
    pub fn execute_slice(&self, a: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        let envelope = &a.envelope;
        envelope
            .verify()
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let body = envelope.body();
        let vault_id = self.vault_id().clone();
        if a.slice_id.vault != vault_id
            || !body
                .coordination_envelope
                .participating_vault_ids
                .contains(&vault_id)
        {
            return Err(NodeError::Refused(format!(
                "slice {} is not for vault {vault_id}",
                a.slice_id
            )));
        }
        if a.plan.plan_hash() != body.resolved_plan_hash {
            return Err(NodeError::Refused(
                "the plan does not match the envelope's resolved_plan_hash".into(),
            ));
        }
        let auth = self
            .vault
            .authorize(&body.caller.actor_id, body.task_class)?;
        let scope = body.budget_reservation.usage_scope;
        let epsilon = body.budget_reservation.epsilon_per_subject;
        let reserved: BTreeSet<SubjectId> = match self.lock().get(&body.task_id) {
            Some((_, subjects)) => subjects.iter().cloned().collect(),
            None => BTreeSet::new(),
        };
        // Consent is checked again at evaluation: a withdrawal since admission excludes.
        let consented = self.vault.consented_subjects(scope, a.evaluate_at_ms)?;
        let evaluate: BTreeSet<&SubjectId> = reserved.intersection(&consented).collect();

        let key = dedup_key(envelope);
        let inputs = inputs_commitment(envelope, &vault_id);
        let plan = &a.plan;
        let now_ms = a.evaluate_at_ms;
        let mut scan_error = None;
        let run = self.enclave.run(&inputs.0, envelope.hash().0, now_ms, || {
            let mut signals = Vec::new();
            let mut evaluated = 0u64;
            let scan = self.vault.for_each_subject(&auth, |view| {
                let Ok(subject) = SubjectId::new(view.subject) else {
                    return ControlFlow::Continue(());
                };
                if !evaluate.contains(&subject) {
                    return ControlFlow::Continue(()); // excluded before computation
                }
                evaluated += 1;
                let facts = crate::training::vault::facts_of(view);
                if let (Some(last), Some(identity)) = (
                    plan.last_qualifying_purchase_ms(&facts, now_ms),
                    view.identity,
                ) {
                    signals.push(AudienceSignal {
                        dedup_token: dedup_token(&key, identity.contact),
                        contact_handle: identity.contact.to_owned(),
                        last_qualifying_ms: last,
                    });
                }
                ControlFlow::Continue(())
            });
            if let Err(e) = scan {
                scan_error = Some(e);
            }
            signals.sort();
            let body = BundleBody {
                slice_id: a.slice_id.clone(),
                vault_id: vault_id.clone(),
                envelope_hash: envelope.hash(),
                signals,
                subjects_evaluated: evaluated,
                epsilon_committed_micro: epsilon.micro,
            };
            let commitment = body.commitment().unwrap_or_default();
            ((body, commitment), commitment.0)
        });
        if let Some(e) = scan_error {
            return Err(e.into());
        }
        let ((bundle_body, commitment), attestation) =
            run.map_err(|e| NodeError::Enclave(e.to_string()))?;
        // Budget: evaluated subjects commit the actual ε; the rest are released.
        let evaluated: Vec<SubjectId> = evaluate.iter().map(|s| (*s).clone()).collect();
        let skipped: Vec<SubjectId> = reserved.difference(&consented).cloned().collect();
        let task = body.task_id.clone();
        self.vault.finish_task(
            scope,
            &evaluated,
            &BudgetOp::Commit {
                task: task.clone(),
                actual: epsilon,
            },
        )?;
        self.vault
            .finish_task(scope, &skipped, &BudgetOp::Release { task: task.clone() })?;
        self.lock().remove(&task);
        Ok(SliceResultBundle {
            body: bundle_body,
            commitment,
            inputs_commitment: inputs,
            attestation,
        })
    }
}
