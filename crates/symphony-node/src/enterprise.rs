//! The enterprise node: Vault services and the Computation Runtime.
//!
//! Every assignment is checked here, inside the Vault's sovereignty boundary, no
//! matter what the master says: the envelope must verify, the Vault operator must
//! permit the (actor, task class) pair, only subjects with consent for the task's
//! usage scope and a budget reservation for the task are evaluated, and the
//! evaluation runs inside the node's enclave, which attests to the run.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, EpochId, SubjectId, TaskId, VaultId};
use symphony_enclave::{SoftwareEnclave, Tee};
use symphony_semantic::AudienceFacts;
use symphony_vault::{SummaryView, Vault};

use crate::bundle::{
    dedup_key, dedup_token, inputs_commitment, AudienceSignal, BundleBody, ComputeBody,
    Contribution, SliceAssignment, SliceBody, SliceResultBundle,
};

/// What a slice knows about itself when it builds its body.
struct SliceMeta {
    slice_id: symphony_core::ids::SliceId,
    vault_id: VaultId,
    envelope_hash: Digest,
    evaluated: u64,
    epsilon_micro: u64,
}
use crate::classes::parse::{open_upload, ParseAssignment, ParseBody, ParseBundle};
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
pub trait EnterpriseEndpoint: Sync {
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
    /// Executes one `query` slice in the enclave.
    fn execute_slice(&self, assignment: &SliceAssignment) -> Result<SliceResultBundle, NodeError>;
    /// Executes one `compute` slice in the enclave.
    fn execute_compute_slice(
        &self,
        assignment: &SliceAssignment,
    ) -> Result<SliceResultBundle<ComputeBody>, NodeError>;
    /// Releases the task's reservations (failure before execution).
    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError>;
    /// The replicated epoch event: `epoch` opened; every subject's budget in each
    /// scope is replenished by the policy's amount, once per epoch (a retry is a
    /// no-op). Returns the accounts replenished.
    fn open_epoch(
        &self,
        epoch: EpochId,
        replenish: &[(UsageScope, Epsilon)],
    ) -> Result<u64, NodeError>;
    /// Admission of a `parse` task: the operator permits the producer to parse, and
    /// the subject consents to `personal` use. Not served over the enterprise RPC yet.
    fn parse_admit(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        subject: &SubjectId,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        let _ = (task_id, actor, subject, at_ms);
        Err(NodeError::Refused(format!(
            "{}: parse tasks are not served over this endpoint",
            self.vault_id()
        )))
    }
    /// Executes a `parse` slice in the enclave. Not served over the enterprise RPC yet.
    fn execute_parse_slice(&self, assignment: &ParseAssignment) -> Result<ParseBundle, NodeError> {
        let _ = assignment;
        Err(NodeError::Refused(format!(
            "{}: parse tasks are not served over this endpoint",
            self.vault_id()
        )))
    }
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
    fn execute_compute_slice(
        &self,
        assignment: &SliceAssignment,
    ) -> Result<SliceResultBundle<ComputeBody>, NodeError> {
        EnterpriseNode::execute_compute_slice(self, assignment)
    }
    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        EnterpriseNode::release(self, task_id)
    }
    fn open_epoch(
        &self,
        epoch: EpochId,
        replenish: &[(UsageScope, Epsilon)],
    ) -> Result<u64, NodeError> {
        let mut applied = 0;
        for (scope, amount) in replenish {
            applied += self.vault.replenish_scope(*scope, epoch, *amount)?.applied;
        }
        Ok(applied)
    }
    fn parse_admit(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        subject: &SubjectId,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        EnterpriseNode::parse_admit(self, task_id, actor, subject, at_ms)
    }
    fn execute_parse_slice(&self, assignment: &ParseAssignment) -> Result<ParseBundle, NodeError> {
        EnterpriseNode::execute_parse_slice(self, assignment)
    }
}

/// An enterprise node hosting one Vault.
pub struct EnterpriseNode {
    pub(crate) vault: Vault,
    pub(crate) enclave: SoftwareEnclave,
    /// Training runs' Vault-side secrets, by task (`training::endpoint`).
    pub(crate) training: crate::training::TrainerSessions,
    /// The OCR engine the enclave reads receipt images with (`parse`).
    pub(crate) ocr: std::sync::Arc<dyn crate::producer::ocr::Ocr>,
}

impl EnterpriseNode {
    /// A node over `vault`, executing in `enclave`.
    pub fn new(vault: Vault, enclave: SoftwareEnclave) -> Self {
        EnterpriseNode {
            vault,
            enclave,
            training: Default::default(),
            ocr: std::sync::Arc::new(crate::producer::ocr::TesseractCli::default()),
        }
    }

    /// The node's Vault and enclave, e.g. to start a new node over them (what a
    /// restarted enterprise process does: the Vault file and the platform stay, the
    /// process's memory is gone).
    pub fn into_parts(self) -> (Vault, SoftwareEnclave) {
        (self.vault, self.enclave)
    }

    /// The same node reading receipt images with `ocr`.
    pub fn with_ocr(mut self, ocr: std::sync::Arc<dyn crate::producer::ocr::Ocr>) -> Self {
        self.ocr = ocr;
        self
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
    /// transaction). Idempotent by task id. Refused for a task this Vault already
    /// released ([`EnterpriseNode::release`]): a master that stalled mid-attempt and
    /// resumed after another master aborted the attempt reserves nothing.
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
        // One bulk row for the task, not one account write per subject. The row is
        // the only record of who was reserved: the slice reads it back from the
        // Vault, so a node restarted between admission and slice evaluates the same
        // subjects.
        let report = self
            .vault
            .reserve_bulk(task_id, scope, &consented, epsilon)?;
        let snapshot_commitment = content_hash("scp/consent-snapshot/v1", &report.reserved)
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        let reply = AdmissionReply {
            vault_id: self.vault_id().clone(),
            subjects_reserved: report.reserved.len() as u64,
            subjects_excluded: report.excluded.len() as u64,
            snapshot_commitment,
        };
        Ok(reply)
    }

    /// Failure before execution (or an aborted attempt): every reservation the task
    /// holds in the Vault is released — found in the Vault's budget ledger, so also
    /// what this process reserved before a restart — and the task can not reserve
    /// here again. Returns how many subjects' reservations were released (0 for a
    /// second call, or a task whose slice already committed).
    pub fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        Ok(self.vault.release_task(task_id)?)
    }

    /// Remaining ε of a subject for a scope (for reports and tests).
    pub fn remaining_budget(
        &self,
        subject: &SubjectId,
        scope: UsageScope,
    ) -> Result<Epsilon, NodeError> {
        Ok(self.vault.budget_account(subject, scope)?.remaining())
    }

    /// The enclave's upload key: producers seal `parse` uploads to it. Derived from
    /// the enclave key, so only this enclave can open them.
    pub fn upload_key(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.upload_secret()).to_bytes()
    }

    fn upload_secret(&self) -> x25519_dalek::StaticSecret {
        let signature = self.enclave.sign(b"scp/parse/upload-secret/v1");
        x25519_dalek::StaticSecret::from(
            symphony_core::encoding::tagged_hash(
                "scp/parse/upload-secret/v1",
                &signature.to_bytes(),
            )
            .0,
        )
    }

    /// Admission of a `parse` task (see [`EnterpriseEndpoint::parse_admit`]).
    pub fn parse_admit(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        subject: &SubjectId,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        self.vault.authorize(actor, TaskClass::Parse)?;
        let consented = self.vault.consented_subjects(UsageScope::Personal, at_ms)?;
        if !consented.contains(subject) {
            return Err(NodeError::Refused(format!(
                "subject {subject} has no personal-use consent in {} at {at_ms} ms",
                self.vault_id()
            )));
        }
        let snapshot_commitment = content_hash("scp/parse-consent/v1", &(task_id, subject))
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        Ok(AdmissionReply {
            vault_id: self.vault_id().clone(),
            subjects_reserved: 1,
            subjects_excluded: 0,
            snapshot_commitment,
        })
    }

    /// Executes a `parse` slice inside the enclave: opens the sealed upload, parses
    /// the receipt, stores the purchase encrypted for the subject (idempotent: the
    /// same record twice is stored once), and attests to the run.
    pub fn execute_parse_slice(&self, a: &ParseAssignment) -> Result<ParseBundle, NodeError> {
        let envelope = &a.envelope;
        envelope
            .verify()
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let body = envelope.body();
        let vault_id = self.vault_id().clone();
        if body.task_class != TaskClass::Parse
            || a.slice_id.vault != vault_id
            || !body
                .coordination_envelope
                .participating_vault_ids
                .contains(&vault_id)
        {
            return Err(NodeError::Refused(format!(
                "slice {} is not a parse slice for vault {vault_id}",
                a.slice_id
            )));
        }
        let upload_hash = content_hash("scp/parse-upload/v1", &a.upload)
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        if body.constraints.get("upload_hash") != Some(&upload_hash.to_hex()) {
            return Err(NodeError::Refused(
                "the upload is not the one the envelope admitted".into(),
            ));
        }
        self.vault
            .authorize(&body.caller.actor_id, TaskClass::Parse)?;
        if !self
            .vault
            .consented_subjects(UsageScope::Personal, a.evaluate_at_ms)?
            .contains(&a.subject)
        {
            return Err(NodeError::Refused(format!(
                "subject {} has no personal-use consent in {vault_id}",
                a.subject
            )));
        }
        let inputs = inputs_commitment(envelope, &vault_id);
        let secret = self.upload_secret();
        let mut failure = None;
        let run = self
            .enclave
            .run(&inputs.0, envelope.hash().0, a.evaluate_at_ms, || {
                let parsed = open_upload(&secret, &a.upload).and_then(|bytes| {
                    crate::producer::enclave::read_upload(&*self.ocr, &bytes, a.evaluate_at_ms)
                });
                let body = match parsed.and_then(|read| self.store_parsed(a, envelope, read)) {
                    Ok((record_commitment, fields, quality)) => Some(ParseBody {
                        slice_id: a.slice_id.clone(),
                        vault_id: vault_id.clone(),
                        envelope_hash: envelope.hash(),
                        record_commitment,
                        fields,
                        subjects_evaluated: 1,
                        quality,
                    }),
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                };
                let commitment = body
                    .as_ref()
                    .and_then(|b| b.commit().ok())
                    .unwrap_or_default();
                (body, commitment.0)
            });
        if let Some(e) = failure {
            return Err(e);
        }
        let (body, attestation) = run.map_err(|e| NodeError::Enclave(e.to_string()))?;
        let body = body.ok_or_else(|| NodeError::Enclave("parse produced no record".into()))?;
        let commitment = body
            .commit()
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        Ok(SliceResultBundle {
            body,
            commitment,
            inputs_commitment: inputs,
            attestation,
        })
    }

    /// Executes one audience slice (`query`) inside the enclave: eligible subjects'
    /// de-duplication tokens and contact handles, never purchases.
    pub fn execute_slice(&self, a: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        let key = dedup_key(&a.envelope);
        let plan = &a.plan;
        let now_ms = a.evaluate_at_ms;
        self.run_slice(
            a,
            |signals: &mut Vec<AudienceSignal>, view| {
                if let (Some(last), Some(identity)) = (
                    plan.last_qualifying_purchase_ms(&SummaryFacts(view), now_ms),
                    view.identity,
                ) {
                    signals.push(AudienceSignal {
                        dedup_token: dedup_token(&key, identity.contact),
                        contact_handle: identity.contact.to_owned(),
                        last_qualifying_ms: last,
                    });
                }
            },
            |meta, mut signals| {
                signals.sort();
                BundleBody {
                    slice_id: meta.slice_id,
                    vault_id: meta.vault_id,
                    envelope_hash: meta.envelope_hash,
                    signals,
                    subjects_evaluated: meta.evaluated,
                    epsilon_committed_micro: meta.epsilon_micro,
                }
            },
        )
    }

    /// Executes one `compute` slice inside the enclave: for each eligible subject, a
    /// de-duplication token, its group (home city) and the sum and count of its
    /// qualifying purchases. The per-person values stay inside enclaves: only the
    /// aggregation enclave's noisy per-group table is released.
    pub fn execute_compute_slice(
        &self,
        a: &SliceAssignment,
    ) -> Result<SliceResultBundle<ComputeBody>, NodeError> {
        if a.envelope.body().task_class != TaskClass::Compute {
            return Err(NodeError::Refused(format!(
                "slice {} is a {} task, not compute",
                a.slice_id,
                a.envelope.body().task_class
            )));
        }
        let key = dedup_key(&a.envelope);
        let plan = &a.plan;
        let now_ms = a.evaluate_at_ms;
        self.run_slice(
            a,
            |out: &mut Vec<Contribution>, view| {
                let facts = SummaryFacts(view);
                if let (Some((sum, n)), Some(identity)) = (
                    plan.qualifying_purchase_totals(&facts, now_ms),
                    view.identity,
                ) {
                    out.push(Contribution {
                        dedup_token: dedup_token(&key, identity.contact),
                        group: facts.home_city().to_owned(),
                        amount_sum_minor: sum,
                        purchases: n,
                    });
                }
            },
            |meta, mut contributions| {
                contributions.sort();
                ComputeBody {
                    slice_id: meta.slice_id,
                    vault_id: meta.vault_id,
                    envelope_hash: meta.envelope_hash,
                    contributions,
                    subjects_evaluated: meta.evaluated,
                    epsilon_committed_micro: meta.epsilon_micro,
                }
            },
        )
    }

    /// The part of every slice that does not depend on its class: the envelope and
    /// plan are checked, the operator's authorization and each subject's consent
    /// (again, at evaluation time) and reservation decide who is evaluated; inside
    /// the enclave `visit` sees only those subjects and `finish` builds the body the
    /// enclave commits to and attests; then evaluated subjects commit the envelope's
    /// ε and the rest are released.
    fn run_slice<T: Default, B: SliceBody>(
        &self,
        a: &SliceAssignment,
        mut visit: impl FnMut(&mut T, &SummaryView<'_>),
        finish: impl FnOnce(SliceMeta, T) -> B,
    ) -> Result<SliceResultBundle<B>, NodeError> {
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
        if self.vault.is_task_released(&body.task_id)? {
            // An aborted attempt (e.g. a stalled leader that resumed): nothing runs.
            return Err(NodeError::Refused(format!(
                "task {} was released in {vault_id}: its attempt was aborted",
                body.task_id
            )));
        }
        let scope = body.budget_reservation.usage_scope;
        let epsilon = body.budget_reservation.epsilon_per_subject;
        // Who was reserved at admission, read from the task's bulk row in the Vault
        // (not from this process's memory, which a restart loses).
        let reserved: BTreeSet<SubjectId> = self
            .vault
            .bulk_reserved(scope, &body.task_id)?
            .into_iter()
            .collect();
        // Consent is checked again at evaluation: a withdrawal since admission excludes.
        let consented = self.vault.consented_subjects(scope, a.evaluate_at_ms)?;
        let evaluate: BTreeSet<&SubjectId> = reserved.intersection(&consented).collect();

        let inputs = inputs_commitment(envelope, &vault_id);
        let mut scan_error = None;
        let run = self
            .enclave
            .run(&inputs.0, envelope.hash().0, a.evaluate_at_ms, || {
                let mut out = T::default();
                let mut evaluated = 0u64;
                // Subjects outside `evaluate` are excluded before computation: the
                // scan never unwraps their keys nor decrypts their data. The plan
                // reads only what each subject's summary holds (contact, home
                // place, every purchase's brand, time and amount).
                let included: HashSet<&str> = evaluate.iter().map(|s| s.as_str()).collect();
                let scan = self.vault.for_each_summary_in(
                    &auth,
                    |subject| included.contains(subject),
                    |view| {
                        evaluated += 1;
                        visit(&mut out, view);
                        ControlFlow::Continue(())
                    },
                );
                if let Err(e) = scan {
                    scan_error = Some(e);
                }
                let meta = SliceMeta {
                    slice_id: a.slice_id.clone(),
                    vault_id: vault_id.clone(),
                    envelope_hash: envelope.hash(),
                    evaluated,
                    epsilon_micro: epsilon.micro,
                };
                let body = finish(meta, out);
                let commitment = body.commit().unwrap_or_default();
                ((body, commitment), commitment.0)
            });
        if let Some(e) = scan_error {
            return Err(e.into());
        }
        let ((result_body, commitment), attestation) =
            run.map_err(|e| NodeError::Enclave(e.to_string()))?;
        // Budget: evaluated subjects commit the actual ε; the rest are released
        // (one write of the task's bulk reservation).
        let evaluated: Vec<SubjectId> = evaluate.iter().map(|s| (*s).clone()).collect();
        let task = body.task_id.clone();
        self.vault.commit_bulk(scope, &task, &evaluated, epsilon)?;
        Ok(SliceResultBundle {
            body: result_body,
            commitment,
            inputs_commitment: inputs,
            attestation,
        })
    }
}

/// A subject's summary as the facts an audience plan reads (no home place
/// imported: empty, as in [`crate::training::vault::facts_of`]).
struct SummaryFacts<'v, 'a>(&'v SummaryView<'a>);

impl AudienceFacts for SummaryFacts<'_, '_> {
    fn home_country(&self) -> &str {
        self.0.geography.map_or("", |g| g.home_country)
    }
    fn home_city(&self) -> &str {
        self.0.geography.map_or("", |g| g.home_city)
    }
    fn for_each_purchase(&self, f: &mut dyn FnMut(&str, u64, u64)) {
        self.0.for_each_purchase(f)
    }
}
