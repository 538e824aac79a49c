//! Background tasks of a node: signing applied roots, pushing signatures to peers,
//! batching client commands into log entries.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::certificate::{CertificateCollector, SignedStatement};
use crate::config::ConsensusConfig;
use crate::network::{RpcClient, RpcRequest};
use crate::sm_store::AppliedRoot;
use crate::types::{CommandBatch, NodeId, TypeConfig};

/// Why the local batcher did not get a write committed.
#[derive(Debug, Clone)]
pub(crate) enum LocalWriteFailure {
    /// Not proposed (or truncated before commit): safe to retry.
    NotLeader(Option<NodeId>),
    /// Outcome unknown (shutdown, fatal storage error).
    Failed(String),
}

pub(crate) struct PendingWrite {
    pub(crate) command: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<(Vec<u8>, u64), LocalWriteFailure>>,
}

/// Signs each applied root, records it locally and queues it for every peer.
pub(crate) async fn sign_applied(
    config: ConsensusConfig,
    collector: Arc<CertificateCollector>,
    mut applied_rx: mpsc::UnboundedReceiver<AppliedRoot>,
    peer_queues: Vec<mpsc::Sender<SignedStatement>>,
) {
    let own_key = config.signing_key.verifying_key();
    while let Some((log_index, root)) = applied_rx.recv().await {
        let statement = SignedStatement::sign(
            &config.cluster_id,
            log_index,
            root,
            config.node_id,
            &config.signing_key,
        );
        for queue in &peer_queues {
            // A full queue means the peer is unreachable; it catches up by signing itself.
            let _ = queue.try_send(statement.clone());
        }
        if let Err(e) = collector.add_own(statement, &own_key) {
            tracing::error!("own commit statement refused: {e}");
        }
    }
}

/// Pushes queued statements to one peer, batching whatever is queued.
pub(crate) async fn push_signatures(
    mut client: RpcClient,
    mut rx: mpsc::Receiver<SignedStatement>,
) {
    const MAX_PER_FRAME: usize = 1_024;
    const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
    while let Some(first) = rx.recv().await {
        let mut statements = vec![first];
        while statements.len() < MAX_PER_FRAME {
            match rx.try_recv() {
                Ok(s) => statements.push(s),
                Err(_) => break,
            }
        }
        let request = RpcRequest::Signatures(statements);
        if let Err(e) = client.call(&request, PUSH_TIMEOUT).await {
            // Dropped: certificates for these indices form from the other peer's
            // statement or not at all; later indices finalize independently.
            tracing::debug!("signature push failed: {e}");
        }
    }
}

/// Groups queued client commands into log entries, keeping several entries in flight.
pub(crate) async fn run_batcher(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::Receiver<PendingWrite>,
    max_batch_commands: usize,
    max_batch_bytes: usize,
    max_batches_in_flight: usize,
) {
    let in_flight = Arc::new(Semaphore::new(max_batches_in_flight));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch_bytes = first.command.len();
        let mut batch = vec![first];
        while batch.len() < max_batch_commands && batch_bytes < max_batch_bytes {
            match rx.try_recv() {
                Ok(w) => {
                    batch_bytes += w.command.len();
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|w| (w.command, w.reply)).unzip();
            let result = raft.client_write(CommandBatch { commands }).await;
            drop(permit);
            match result {
                Ok(written) => {
                    let index = written.log_id.index;
                    for (reply, response) in replies.into_iter().zip(written.data.responses) {
                        let _ = reply.send(Ok((response, index)));
                    }
                }
                Err(e) => {
                    let failure = match e {
                        // Not in the log (or truncated before commit): retry is safe.
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            LocalWriteFailure::NotLeader(f.leader_id)
                        }
                        other => LocalWriteFailure::Failed(other.to_string()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(failure.clone()));
                    }
                }
            }
        });
    }
}
