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
use symphony_core::ids::{ActorId, TaskId, VaultId};
use symphony_node::bundle::{ComputeBody, SliceAssignment, SliceResultBundle};
use symphony_node::enterprise::{AdmissionReply, EnterpriseEndpoint, EnterpriseNode};
use symphony_node::NodeError;
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
    /// Health and identity.
    Ping,
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
    /// Refused (message says why).
    Refused(String),
}

fn handle(node: &EnterpriseNode, request: EnterpriseRequest) -> EnterpriseReply {
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
        EnterpriseRequest::Ping => EnterpriseReply::Pong(node.vault_id().clone()),
    }
}

async fn serve_connection(mut stream: BoxStream, node: Arc<EnterpriseNode>) {
    loop {
        let Ok(frame) = read_frame(&mut stream).await else {
            return;
        };
        let reply = match bcs::from_bytes::<EnterpriseRequest>(&frame) {
            Ok(request) => {
                let node = node.clone();
                tokio::task::spawn_blocking(move || handle(&node, request))
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
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let security = security.clone();
        let node = node.clone();
        tokio::spawn(async move {
            match security.accept(tcp).await {
                Ok(stream) => serve_connection(stream, node).await,
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

    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        match self.call(&EnterpriseRequest::Release(task_id.clone()))? {
            EnterpriseReply::Released(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}
