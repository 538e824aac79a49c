//! Node-to-node RPC: openraft's `RaftNetwork` plus write forwarding and signature
//! exchange, as bincode request/response frames over [`crate::transport`].
//!
//! One connection carries one request at a time (request, then response). Raft
//! replication keeps one connection per peer; forwarded client writes use a small pool.

// openraft's own error types are large; its traits fix the signatures.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::certificate::{CommitCertificate, SignedStatement};
use crate::transport::{read_frame, write_frame, BoxStream, TransportSecurity, MAX_FRAME_BYTES};
use crate::types::{NodeId, TypeConfig};

/// Requests between masters.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client command handed by a follower to the leader; answered once final.
    ForwardWrite {
        command: Vec<u8>,
    },
    /// Signed commit statements pushed to a peer's certificate collector.
    Signatures(Vec<SignedStatement>),
}

type RaftResult<T, E = openraft::error::Infallible> = Result<T, RaftError<NodeId, E>>;

/// Responses, one per request kind.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcResponse {
    AppendEntries(RaftResult<AppendEntriesResponse<NodeId>>),
    Vote(RaftResult<VoteResponse<NodeId>>),
    InstallSnapshot(RaftResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError>),
    ForwardWrite(Result<(Vec<u8>, CommitCertificate), ForwardRefusal>),
    Ack,
    BadRequest(String),
}

/// Why a leader did not take a forwarded write.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum ForwardRefusal {
    /// Not proposed: the receiver is not the leader. Safe to retry elsewhere.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Proposed or failed in a way whose outcome is unknown. Not retried.
    #[error("{0}")]
    Failed(String),
}

/// Transport-level failure of one call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// Could not connect: the request was not sent.
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// Sent (maybe) but no answer: outcome unknown.
    #[error("io with {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("rpc to {addr} timed out")]
    Timeout { addr: String },
    #[error("bad frame from {addr}: {source}")]
    Codec {
        addr: String,
        source: bincode::Error,
    },
    #[error("unexpected response from {addr}")]
    Unexpected { addr: String },
    /// The encoded request exceeds the frame limit; it was not sent.
    #[error("request of {bytes} bytes exceeds the frame limit")]
    TooLarge { bytes: usize },
}

/// A client connection to one peer, reconnecting lazily after any failure.
pub(crate) struct RpcClient {
    addr: String,
    security: TransportSecurity,
    conn: Option<BoxStream>,
}

impl RpcClient {
    pub(crate) fn new(addr: String, security: TransportSecurity) -> Self {
        Self {
            addr,
            security,
            conn: None,
        }
    }

    pub(crate) async fn call(
        &mut self,
        request: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, CallError> {
        let result = tokio::time::timeout(timeout, self.call_inner(request)).await;
        let result = result.unwrap_or_else(|_| {
            Err(CallError::Timeout {
                addr: self.addr.clone(),
            })
        });
        if result.is_err() {
            // The stream may hold half a frame; never reuse it.
            self.conn = None;
        }
        result
    }

    async fn call_inner(&mut self, request: &RpcRequest) -> Result<RpcResponse, CallError> {
        let addr = self.addr.clone();
        let payload = bincode::serialize(request).map_err(|source| CallError::Codec {
            addr: addr.clone(),
            source,
        })?;
        if payload.len() > MAX_FRAME_BYTES {
            return Err(CallError::TooLarge {
                bytes: payload.len(),
            });
        }
        let conn =
            match &mut self.conn {
                Some(conn) => conn,
                None => {
                    let conn = self.security.connect(&addr).await.map_err(|source| {
                        CallError::Connect {
                            addr: addr.clone(),
                            source,
                        }
                    })?;
                    self.conn.insert(conn)
                }
            };
        let io_err = |source| CallError::Io {
            addr: addr.clone(),
            source,
        };
        write_frame(conn, &payload).await.map_err(io_err)?;
        let bytes = read_frame(conn).await.map_err(io_err)?;
        bincode::deserialize(&bytes).map_err(|source| CallError::Codec { addr, source })
    }
}

fn to_rpc_error<E: std::error::Error>(err: CallError) -> RPCError<NodeId, BasicNode, E> {
    match err {
        CallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&err)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

/// Builds one [`PeerNetwork`] per replication target.
pub(crate) struct NetworkFactory {
    pub(crate) security: TransportSecurity,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerNetwork {
            target,
            client: RpcClient::new(node.addr.clone(), self.security.clone()),
        }
    }
}

/// openraft's view of one peer.
pub(crate) struct PeerNetwork {
    target: NodeId,
    client: RpcClient,
}

impl PeerNetwork {
    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        to_rpc_error(CallError::Unexpected {
            addr: self.client.addr.clone(),
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entry_count = rpc.entries.len() as u64;
        let request = RpcRequest::AppendEntries(rpc);
        match self.client.call(&request, option.hard_ttl()).await {
            Ok(RpcResponse::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            // openraft retries with at most this many entries.
            Err(CallError::TooLarge { .. }) if entry_count > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entry_count / 2),
            )),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let request = RpcRequest::InstallSnapshot(rpc);
        match self.client.call(&request, option.hard_ttl()).await {
            Ok(RpcResponse::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let request = RpcRequest::Vote(rpc);
        match self.client.call(&request, option.hard_ttl()).await {
            Ok(RpcResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }
}

/// Server side: what a node does with each request.
pub(crate) trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, request: RpcRequest) -> impl Future<Output = RpcResponse> + Send;
}

/// Accepts connections until the returned future is dropped (aborting every connection).
pub(crate) async fn serve<H: RpcHandler>(
    listener: TcpListener,
    security: TransportSecurity,
    handler: Arc<H>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handler = handler.clone();
                let security = security.clone();
                connections.spawn(async move {
                    if let Ok(stream) = security.accept(stream).await {
                        serve_connection(stream, handler).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<H: RpcHandler>(mut stream: BoxStream, handler: Arc<H>) {
    while let Ok(bytes) = read_frame(&mut stream).await {
        let response = match bincode::deserialize::<RpcRequest>(&bytes) {
            Ok(request) => handler.handle(request).await,
            Err(e) => RpcResponse::BadRequest(e.to_string()),
        };
        let Ok(payload) = bincode::serialize(&response) else {
            return;
        };
        if write_frame(&mut stream, &payload).await.is_err() {
            return;
        }
    }
}
