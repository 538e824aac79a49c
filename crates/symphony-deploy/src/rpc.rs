//! Enterprise RPC: the [`EnterpriseEndpoint`] operations over mutual TLS.
//!
//! Framing and TLS are the consensus transport's (`u32` length prefix, bounded frames,
//! `TransportSecurity::MutualTls`); payloads are BCS. One request per frame, one reply
//! per frame, connections kept by the server until the client closes them.
//! [`RemoteEnterprise`] is the master-side client: a node that cannot be reached or
//! does not answer in time is `NodeError::Unavailable`, which the campaign flow
//! counts against the Vault quorum.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use symphony_consensus::transport::{read_frame, write_frame, BoxStream, TransportSecurity};
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::Digest;
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, EpochId, SubjectId, TaskId, VaultId};
use symphony_economics::PolicyParams;
use symphony_node::bundle::{ComputeBody, SliceAssignment, SliceResultBundle};
use symphony_node::classes::parse::{ParseAssignment, ParseBundle};
use symphony_node::enterprise::{AdmissionReply, EnterpriseEndpoint, EnterpriseNode};
use symphony_node::producer::personal::{
    budget_view, consent_view, personal_vault_id, set_consent, ScopeBudget, ScopeConsent,
};
use symphony_node::training::model::GlobalModel;
use symphony_node::training::persons::{PersonCandidate, PersonSelection};
use symphony_node::training::vault::{
    EvaluationBundle, Prepared, RoundAssignment, TrainSliceBundle,
};
use symphony_node::training::{AssignmentWire, ModelWire, RosterKeys, ShareWire, TrainingEndpoint};
use symphony_node::NodeError;
use symphony_semantic::SemanticRegistry;
use symphony_train::secagg::{ParticipantId, ShareFor};
use tokio::net::TcpListener;

/// A request to an enterprise node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum EnterpriseRequest {
    /// Admission: authorization check and budget reservation.
    AdmissionReserve {
        /// Task.
        task_id: TaskId,
        /// Caller.
        actor: ActorId,
        /// Class.
        class: TaskClass,
        /// Scope.
        scope: UsageScope,
        /// ε per subject.
        epsilon: Epsilon,
        /// Evaluation time.
        at_ms: u64,
    },
    /// Execute one slice in the enclave.
    ExecuteSlice(Box<SliceAssignment>),
    /// Execute one `compute` slice in the enclave.
    ExecuteComputeSlice(Box<SliceAssignment>),
    /// Release a task's reservations.
    Release(TaskId),
    /// The replicated epoch event: replenish every account of each scope once.
    OpenEpoch {
        /// The epoch that opened.
        epoch: EpochId,
        /// Scope → ε added to each subject's budget.
        replenish: Vec<(UsageScope, Epsilon)>,
    },
    /// Health and identity.
    Ping,
    /// Training admission, first step: authorization and the person candidates.
    TrainAdmissionPersons {
        /// Task.
        task_id: TaskId,
        /// Model operator.
        actor: ActorId,
        /// ε of the whole run.
        total: Epsilon,
        /// The spec's market scope.
        countries: Vec<String>,
        /// Consent evaluation time.
        at_ms: u64,
    },
    /// Training admission, second step: per-round reservations of the assigned
    /// persons.
    TrainAdmissionReserve {
        /// Task.
        task_id: TaskId,
        /// Model operator.
        actor: ActorId,
        /// ε of each scheduled round.
        schedule: Vec<Epsilon>,
        /// The persons assigned to this Vault.
        selection: PersonSelection,
    },
    /// Feature construction for a round.
    TrainPrepareRound(#[serde(with = "crate::wire")] Box<AssignmentWire>),
    /// This Vault's participant id in the round's roster.
    TrainSetParticipantId {
        /// Roster index.
        id: u32,
        /// The round's slice.
        #[serde(with = "crate::wire")]
        assignment: Box<AssignmentWire>,
    },
    /// Deal Shamir shares of the round's secagg secret.
    TrainDealShares {
        /// Roster.
        roster: RosterKeys,
        /// Recovery threshold.
        threshold: u8,
        /// The round's slice.
        #[serde(with = "crate::wire")]
        assignment: Box<AssignmentWire>,
    },
    /// Keep a share another Vault dealt.
    TrainHoldShare {
        /// Task.
        task_id: TaskId,
        /// The share.
        share: ShareWire,
    },
    /// Hand over the share of a dropped participant.
    TrainRecoveryShare {
        /// Task.
        task_id: TaskId,
        /// The dropped participant.
        dropped: u32,
    },
    /// Local DP-SGD, masking, in the enclave.
    TrainRound {
        /// The round's slice.
        #[serde(with = "crate::wire")]
        assignment: Box<AssignmentWire>,
        /// The global model.
        #[serde(with = "crate::wire")]
        model: ModelWire,
        /// Its hash.
        model_hash: Digest,
        /// Roster.
        roster: RosterKeys,
    },
    /// Release one round's reservation.
    TrainReleaseRound {
        /// Task.
        task_id: TaskId,
        /// Round.
        round: u32,
    },
    /// Ends the Vault's session of the run: charged persons commit the rounds
    /// opened, every other reservation left is released.
    TrainReleaseUnused {
        /// Task.
        task_id: TaskId,
        /// Rounds the run opened.
        rounds_run: u32,
    },
    /// A data producer's consent in the Personal Vault this node hosts (the
    /// gateway authenticated the producer): per scope with its history, after
    /// applying `change` (scope, granted) at `at_ms` if given.
    ProducerConsent {
        /// The producer's subject.
        subject: SubjectId,
        /// Grant (`true`) or revoke (`false`) one scope first.
        change: Option<(UsageScope, bool)>,
        /// Protocol time of the change and of the view.
        at_ms: u64,
    },
    /// A data producer's remaining privacy budget per scope.
    ProducerBudget {
        /// The producer's subject.
        subject: SubjectId,
    },
    /// The enclave's upload key (producers seal `parse` uploads to it).
    UploadKey,
    /// Admission of a `parse` task (permit and `personal` consent).
    ParseAdmit {
        /// Task.
        task_id: TaskId,
        /// The producer.
        actor: ActorId,
        /// Its subject.
        subject: SubjectId,
        /// Consent evaluation time.
        at_ms: u64,
    },
    /// Execute one `parse` slice in the enclave.
    ExecuteParseSlice(Box<ParseAssignment>),
    /// Final evaluation of the model.
    TrainEvaluate {
        /// The slice.
        #[serde(with = "crate::wire")]
        assignment: Box<AssignmentWire>,
        /// The final model.
        #[serde(with = "crate::wire")]
        model: ModelWire,
        /// Its hash.
        model_hash: Digest,
    },
}

/// A reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum EnterpriseReply {
    /// Admission result.
    Admission {
        /// Vault.
        vault_id: VaultId,
        /// Reserved subjects.
        subjects_reserved: u64,
        /// Excluded subjects.
        subjects_excluded: u64,
        /// Commitment to the reserved set.
        snapshot_commitment: Digest,
    },
    /// A slice bundle.
    Bundle(Box<SliceResultBundle>),
    /// A `compute` slice bundle.
    ComputeBundle(Box<SliceResultBundle<ComputeBody>>),
    /// Reservations released.
    Released(u64),
    /// The hosted Vault.
    Pong(VaultId),
    /// Training admission candidates.
    TrainPersons(Vec<PersonCandidate>),
    /// Training reservations: count per round and round-0 commitment.
    TrainReserved {
        /// Reserved subjects per round.
        counts: Vec<u64>,
        /// Commitment to the round-0 set.
        commitment: Digest,
    },
    /// A prepared round.
    TrainPrepared {
        /// Round secagg public key.
        public_key: [u8; 32],
    },
    /// Shares dealt.
    TrainShares(Vec<ShareWire>),
    /// A recovery share, if held.
    TrainShare(Option<ShareWire>),
    /// A round slice's bundle.
    TrainSlice(Box<TrainSliceBundle>),
    /// An evaluation bundle.
    TrainEvaluation(#[serde(with = "crate::wire")] Box<EvaluationBundle>),
    /// A producer's consent per scope.
    ProducerConsent(Vec<ScopeConsent>),
    /// A producer's budget per scope.
    ProducerBudget(Vec<ScopeBudget>),
    /// The enclave's upload key.
    UploadKey([u8; 32]),
    /// A `parse` slice bundle.
    ParseBundle(Box<ParseBundle>),
    /// Done.
    Done,
    /// Refused (message says why).
    Refused(String),
}

fn handle(
    node: &EnterpriseNode,
    registry: &SemanticRegistry,
    request: EnterpriseRequest,
) -> EnterpriseReply {
    let refused = |e: NodeError| EnterpriseReply::Refused(e.to_string());
    match request {
        EnterpriseRequest::AdmissionReserve {
            task_id,
            actor,
            class,
            scope,
            epsilon,
            at_ms,
        } => match node.admission_reserve(&task_id, &actor, class, scope, epsilon, at_ms) {
            Ok(r) => EnterpriseReply::Admission {
                vault_id: r.vault_id,
                subjects_reserved: r.subjects_reserved,
                subjects_excluded: r.subjects_excluded,
                snapshot_commitment: r.snapshot_commitment,
            },
            Err(e) => refused(e),
        },
        EnterpriseRequest::ExecuteSlice(a) => match node.execute_slice(&a) {
            Ok(b) => EnterpriseReply::Bundle(Box::new(b)),
            Err(e) => refused(e),
        },
        EnterpriseRequest::ExecuteComputeSlice(a) => match node.execute_compute_slice(&a) {
            Ok(b) => EnterpriseReply::ComputeBundle(Box::new(b)),
            Err(e) => refused(e),
        },
        EnterpriseRequest::Release(task) => match node.release(&task) {
            Ok(n) => EnterpriseReply::Released(n),
            Err(e) => refused(e),
        },
        EnterpriseRequest::OpenEpoch { epoch, replenish } => {
            match node.open_epoch(epoch, &replenish) {
                Ok(n) => EnterpriseReply::Released(n),
                Err(e) => refused(e),
            }
        }
        EnterpriseRequest::Ping => EnterpriseReply::Pong(node.vault_id().clone()),
        EnterpriseRequest::ProducerConsent {
            subject,
            change,
            at_ms,
        } => match producer_consent(node, &subject, change, at_ms) {
            Ok(v) => EnterpriseReply::ProducerConsent(v),
            Err(e) => refused(e),
        },
        EnterpriseRequest::UploadKey => EnterpriseReply::UploadKey(node.upload_key()),
        EnterpriseRequest::ParseAdmit {
            task_id,
            actor,
            subject,
            at_ms,
        } => match node.parse_admit(&task_id, &actor, &subject, at_ms) {
            Ok(r) => EnterpriseReply::Admission {
                vault_id: r.vault_id,
                subjects_reserved: r.subjects_reserved,
                subjects_excluded: r.subjects_excluded,
                snapshot_commitment: r.snapshot_commitment,
            },
            Err(e) => refused(e),
        },
        EnterpriseRequest::ExecuteParseSlice(a) => match node.execute_parse_slice(&a) {
            Ok(b) => EnterpriseReply::ParseBundle(Box::new(b)),
            Err(e) => refused(e),
        },
        EnterpriseRequest::ProducerBudget { subject } => {
            match producer_vault(node, &subject)
                .and_then(|()| budget_view(node.vault(), &subject, &PolicyParams::default_v1()))
            {
                Ok(v) => EnterpriseReply::ProducerBudget(v),
                Err(e) => refused(e),
            }
        }
        training => match handle_training(node, registry, training) {
            Ok(reply) => reply,
            Err(e) => refused(e),
        },
    }
}

/// Refuses a producer request for a subject this node's Vault is not the
/// Personal Vault of (`pv-<subject>`).
fn producer_vault(node: &EnterpriseNode, subject: &SubjectId) -> Result<(), NodeError> {
    let expected = personal_vault_id(subject.as_str())?;
    if node.vault_id() != &expected {
        return Err(NodeError::Refused(format!(
            "{} is not the Personal Vault of {subject} (that is {expected})",
            node.vault_id()
        )));
    }
    Ok(())
}

fn producer_consent(
    node: &EnterpriseNode,
    subject: &SubjectId,
    change: Option<(UsageScope, bool)>,
    at_ms: u64,
) -> Result<Vec<ScopeConsent>, NodeError> {
    producer_vault(node, subject)?;
    if let Some((scope, granted)) = change {
        set_consent(node.vault(), subject, scope, granted, at_ms)?;
    }
    consent_view(node.vault(), subject, at_ms)
}

fn handle_training(
    node: &EnterpriseNode,
    registry: &SemanticRegistry,
    request: EnterpriseRequest,
) -> Result<EnterpriseReply, NodeError> {
    let t: &dyn TrainingEndpoint = node;
    let slice = |a: Box<AssignmentWire>| a.assignment(registry);
    Ok(match request {
        EnterpriseRequest::TrainAdmissionPersons {
            task_id,
            actor,
            total,
            countries,
            at_ms,
        } => EnterpriseReply::TrainPersons(
            t.train_admission_persons(&task_id, &actor, total, &countries, at_ms)?,
        ),
        EnterpriseRequest::TrainAdmissionReserve {
            task_id,
            actor,
            schedule,
            selection,
        } => {
            let (counts, commitment) =
                t.train_admission_reserve(&task_id, &actor, &schedule, &selection)?;
            EnterpriseReply::TrainReserved { counts, commitment }
        }
        EnterpriseRequest::TrainPrepareRound(a) => {
            let p = t.train_prepare_round(&slice(a)?)?;
            EnterpriseReply::TrainPrepared {
                public_key: p.public_key,
            }
        }
        EnterpriseRequest::TrainSetParticipantId { id, assignment } => {
            t.train_set_participant_id(ParticipantId(id), &slice(assignment)?)?;
            EnterpriseReply::Done
        }
        EnterpriseRequest::TrainDealShares {
            roster,
            threshold,
            assignment,
        } => EnterpriseReply::TrainShares(
            t.train_deal_shares(&roster, threshold, &slice(assignment)?)?
                .iter()
                .map(ShareWire::from)
                .collect(),
        ),
        EnterpriseRequest::TrainHoldShare { task_id, share } => {
            t.train_hold_share(&task_id, share.share()?)?;
            EnterpriseReply::Done
        }
        EnterpriseRequest::TrainRecoveryShare { task_id, dropped } => EnterpriseReply::TrainShare(
            t.train_recovery_share(&task_id, ParticipantId(dropped))?
                .as_ref()
                .map(ShareWire::from),
        ),
        EnterpriseRequest::TrainRound {
            assignment,
            model,
            model_hash,
            roster,
        } => {
            let model = model.model()?;
            // The quantized update before masking stays in this process.
            let b = t.train_round(
                &slice(assignment)?,
                &model,
                &model_hash,
                &roster,
                &mut |_| {},
            )?;
            EnterpriseReply::TrainSlice(Box::new(b))
        }
        EnterpriseRequest::TrainReleaseRound { task_id, round } => {
            EnterpriseReply::Released(t.train_release_round(&task_id, round)?)
        }
        EnterpriseRequest::TrainReleaseUnused {
            task_id,
            rounds_run,
        } => EnterpriseReply::Released(t.train_release_unused(&task_id, rounds_run)?),
        EnterpriseRequest::TrainEvaluate {
            assignment,
            model,
            model_hash,
        } => {
            let model = model.model()?;
            EnterpriseReply::TrainEvaluation(Box::new(t.train_evaluate(
                &slice(assignment)?,
                &model,
                &model_hash,
            )?))
        }
        other => {
            return Err(NodeError::Refused(format!(
                "not a training request: {other:?}"
            )))
        }
    })
}

async fn serve_connection(
    mut stream: BoxStream,
    node: Arc<EnterpriseNode>,
    registry: Arc<SemanticRegistry>,
) {
    loop {
        let Ok(frame) = read_frame(&mut stream).await else {
            return;
        };
        let reply = match bcs::from_bytes::<EnterpriseRequest>(&frame) {
            Ok(request) => {
                let (node, registry) = (node.clone(), registry.clone());
                tokio::task::spawn_blocking(move || handle(&node, &registry, request))
                    .await
                    .unwrap_or_else(|e| EnterpriseReply::Refused(format!("handler failed: {e}")))
            }
            Err(e) => EnterpriseReply::Refused(format!("malformed request: {e}")),
        };
        let Ok(bytes) = bcs::to_bytes(&reply) else {
            return;
        };
        if write_frame(&mut stream, &bytes).await.is_err() {
            return;
        }
    }
}

/// Serves `node` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, security: TransportSecurity, node: Arc<EnterpriseNode>) {
    // The Vault resolves training feature plans with its own registry copy.
    let registry = Arc::new(SemanticRegistry::catalog_v1());
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let security = security.clone();
        let (node, registry) = (node.clone(), registry.clone());
        tokio::spawn(async move {
            match security.accept(tcp).await {
                Ok(stream) => serve_connection(stream, node, registry).await,
                Err(e) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
            }
        });
    }
}

/// Master-side client of one enterprise node.
pub struct RemoteEnterprise {
    vault_id: VaultId,
    addr: String,
    security: TransportSecurity,
    rt: tokio::runtime::Handle,
    timeout: Duration,
}

impl RemoteEnterprise {
    /// A client for the node hosting `vault_id` at `addr`.
    pub fn new(
        vault_id: VaultId,
        addr: String,
        security: TransportSecurity,
        rt: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        Self {
            vault_id,
            addr,
            security,
            rt,
            timeout,
        }
    }

    /// The Vault this client reaches.
    pub fn vault(&self) -> &VaultId {
        &self.vault_id
    }

    /// One call from async code (the gateway), bounded by the timeout; a refusal
    /// is `NodeError::Refused` naming the Vault.
    pub async fn request(&self, request: &EnterpriseRequest) -> Result<EnterpriseReply, NodeError> {
        match tokio::time::timeout(self.timeout, self.call_async(request)).await {
            Ok(Ok(EnterpriseReply::Refused(msg))) => {
                Err(NodeError::Refused(format!("{}: {msg}", self.vault_id)))
            }
            Ok(r) => r,
            Err(_) => Err(NodeError::Unavailable(self.vault_id.to_string())),
        }
    }

    async fn call_async(&self, request: &EnterpriseRequest) -> Result<EnterpriseReply, NodeError> {
        let bytes = bcs::to_bytes(request).map_err(|e| NodeError::Encoding(e.to_string()))?;
        let unavailable = |_| NodeError::Unavailable(self.vault_id.to_string());
        let mut stream = self
            .security
            .connect(&self.addr)
            .await
            .map_err(unavailable)?;
        write_frame(&mut stream, &bytes)
            .await
            .map_err(unavailable)?;
        let reply = read_frame(&mut stream).await.map_err(unavailable)?;
        bcs::from_bytes(&reply).map_err(|e| NodeError::Encoding(e.to_string()))
    }

    /// One blocking call (from a non-runtime thread), bounded by the timeout.
    pub fn call(&self, request: &EnterpriseRequest) -> Result<EnterpriseReply, NodeError> {
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, self.call_async(request)).await });
        match result {
            Ok(Ok(EnterpriseReply::Refused(msg))) => {
                Err(NodeError::Refused(format!("{}: {msg}", self.vault_id)))
            }
            Ok(r) => r,
            Err(_) => Err(NodeError::Unavailable(self.vault_id.to_string())),
        }
    }
}

fn unexpected(reply: EnterpriseReply) -> NodeError {
    NodeError::Encoding(format!("unexpected enterprise reply {reply:?}"))
}

impl EnterpriseEndpoint for RemoteEnterprise {
    fn vault_id(&self) -> &VaultId {
        &self.vault_id
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
        match self.call(&EnterpriseRequest::AdmissionReserve {
            task_id: task_id.clone(),
            actor: actor.clone(),
            class,
            scope,
            epsilon,
            at_ms,
        })? {
            EnterpriseReply::Admission {
                vault_id,
                subjects_reserved,
                subjects_excluded,
                snapshot_commitment,
            } => Ok(AdmissionReply {
                vault_id,
                subjects_reserved,
                subjects_excluded,
                snapshot_commitment,
            }),
            other => Err(unexpected(other)),
        }
    }

    fn execute_slice(&self, assignment: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        match self.call(&EnterpriseRequest::ExecuteSlice(Box::new(
            assignment.clone(),
        )))? {
            EnterpriseReply::Bundle(b) => Ok(*b),
            other => Err(unexpected(other)),
        }
    }

    fn execute_compute_slice(
        &self,
        assignment: &SliceAssignment,
    ) -> Result<SliceResultBundle<ComputeBody>, NodeError> {
        match self.call(&EnterpriseRequest::ExecuteComputeSlice(Box::new(
            assignment.clone(),
        )))? {
            EnterpriseReply::ComputeBundle(b) => Ok(*b),
            other => Err(unexpected(other)),
        }
    }

    fn parse_admit(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        subject: &SubjectId,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        match self.call(&EnterpriseRequest::ParseAdmit {
            task_id: task_id.clone(),
            actor: actor.clone(),
            subject: subject.clone(),
            at_ms,
        })? {
            EnterpriseReply::Admission {
                vault_id,
                subjects_reserved,
                subjects_excluded,
                snapshot_commitment,
            } => Ok(AdmissionReply {
                vault_id,
                subjects_reserved,
                subjects_excluded,
                snapshot_commitment,
            }),
            other => Err(unexpected(other)),
        }
    }

    fn execute_parse_slice(&self, assignment: &ParseAssignment) -> Result<ParseBundle, NodeError> {
        match self.call(&EnterpriseRequest::ExecuteParseSlice(Box::new(
            assignment.clone(),
        )))? {
            EnterpriseReply::ParseBundle(b) => Ok(*b),
            other => Err(unexpected(other)),
        }
    }

    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        match self.call(&EnterpriseRequest::Release(task_id.clone()))? {
            EnterpriseReply::Released(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    fn open_epoch(
        &self,
        epoch: EpochId,
        replenish: &[(UsageScope, Epsilon)],
    ) -> Result<u64, NodeError> {
        match self.call(&EnterpriseRequest::OpenEpoch {
            epoch,
            replenish: replenish.to_vec(),
        })? {
            EnterpriseReply::Released(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

impl TrainingEndpoint for RemoteEnterprise {
    fn vault_id(&self) -> &VaultId {
        &self.vault_id
    }

    fn train_admission_persons(
        &self,
        task: &TaskId,
        actor: &ActorId,
        total: Epsilon,
        countries: &[String],
        at_ms: u64,
    ) -> Result<Vec<PersonCandidate>, NodeError> {
        match self.call(&EnterpriseRequest::TrainAdmissionPersons {
            task_id: task.clone(),
            actor: actor.clone(),
            total,
            countries: countries.to_vec(),
            at_ms,
        })? {
            EnterpriseReply::TrainPersons(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    fn train_admission_reserve(
        &self,
        task: &TaskId,
        actor: &ActorId,
        schedule: &[Epsilon],
        selection: &PersonSelection,
    ) -> Result<(Vec<u64>, Digest), NodeError> {
        match self.call(&EnterpriseRequest::TrainAdmissionReserve {
            task_id: task.clone(),
            actor: actor.clone(),
            schedule: schedule.to_vec(),
            selection: selection.clone(),
        })? {
            EnterpriseReply::TrainReserved { counts, commitment } => Ok((counts, commitment)),
            other => Err(unexpected(other)),
        }
    }

    fn train_prepare_round(&self, a: &RoundAssignment) -> Result<Prepared, NodeError> {
        match self.call(&EnterpriseRequest::TrainPrepareRound(Box::new(
            AssignmentWire::from(a),
        )))? {
            EnterpriseReply::TrainPrepared { public_key } => Ok(Prepared { public_key }),
            other => Err(unexpected(other)),
        }
    }

    fn train_set_participant_id(
        &self,
        id: ParticipantId,
        a: &RoundAssignment,
    ) -> Result<(), NodeError> {
        match self.call(&EnterpriseRequest::TrainSetParticipantId {
            id: id.0,
            assignment: Box::new(AssignmentWire::from(a)),
        })? {
            EnterpriseReply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn train_deal_shares(
        &self,
        roster: &RosterKeys,
        threshold: u8,
        a: &RoundAssignment,
    ) -> Result<Vec<ShareFor>, NodeError> {
        match self.call(&EnterpriseRequest::TrainDealShares {
            roster: roster.clone(),
            threshold,
            assignment: Box::new(AssignmentWire::from(a)),
        })? {
            EnterpriseReply::TrainShares(shares) => shares.iter().map(ShareWire::share).collect(),
            other => Err(unexpected(other)),
        }
    }

    fn train_hold_share(&self, task: &TaskId, share: ShareFor) -> Result<(), NodeError> {
        match self.call(&EnterpriseRequest::TrainHoldShare {
            task_id: task.clone(),
            share: ShareWire::from(&share),
        })? {
            EnterpriseReply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn train_recovery_share(
        &self,
        task: &TaskId,
        dropped: ParticipantId,
    ) -> Result<Option<ShareFor>, NodeError> {
        match self.call(&EnterpriseRequest::TrainRecoveryShare {
            task_id: task.clone(),
            dropped: dropped.0,
        })? {
            EnterpriseReply::TrainShare(s) => s.as_ref().map(ShareWire::share).transpose(),
            other => Err(unexpected(other)),
        }
    }

    fn train_round(
        &self,
        a: &RoundAssignment,
        global: &GlobalModel,
        model_hash: &Digest,
        roster: &RosterKeys,
        _audit: &mut dyn FnMut(&[u32]),
    ) -> Result<TrainSliceBundle, NodeError> {
        // The unmasked update never leaves the Vault's process: `_audit` is the
        // in-process Vault's sink and is not called for a remote one.
        match self.call(&EnterpriseRequest::TrainRound {
            assignment: Box::new(AssignmentWire::from(a)),
            model: ModelWire::from(global),
            model_hash: *model_hash,
            roster: roster.clone(),
        })? {
            EnterpriseReply::TrainSlice(b) => Ok(*b),
            other => Err(unexpected(other)),
        }
    }

    fn train_release_round(&self, task: &TaskId, round: u32) -> Result<u64, NodeError> {
        match self.call(&EnterpriseRequest::TrainReleaseRound {
            task_id: task.clone(),
            round,
        })? {
            EnterpriseReply::Released(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    fn train_release_unused(&self, task: &TaskId, rounds_run: u32) -> Result<u64, NodeError> {
        match self.call(&EnterpriseRequest::TrainReleaseUnused {
            task_id: task.clone(),
            rounds_run,
        })? {
            EnterpriseReply::Released(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    fn train_evaluate(
        &self,
        a: &RoundAssignment,
        model: &GlobalModel,
        model_hash: &Digest,
    ) -> Result<EvaluationBundle, NodeError> {
        match self.call(&EnterpriseRequest::TrainEvaluate {
            assignment: Box::new(AssignmentWire::from(a)),
            model: ModelWire::from(model),
            model_hash: *model_hash,
        })? {
            EnterpriseReply::TrainEvaluation(b) => Ok(*b),
            other => Err(unexpected(other)),
        }
    }
}
