//! [`ConsensusNode`]: one master's replica, its RPC server, write batching, forwarding,
//! signing and certificate collection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::certificate::{CertificateCollector, CertificateError, CommitCertificate};
use crate::config::{ConsensusConfig, MemberConfig};
use crate::error::{ConsensusError, StoreError};
use crate::latency::{WriteLatency, WriteTimes};
use crate::network::{
    serve, CallError, ForwardRefusal, NetworkFactory, RpcClient, RpcHandler, RpcRequest,
    RpcResponse,
};
use crate::sm_store::SmStore;
use crate::state_machine::{ReplicatedStateMachine, StateRoot};
use crate::store::{self, LogStore, Writer};
use crate::tasks::{push_signatures, run_batcher, sign_applied, LocalWriteFailure, PendingWrite};
use crate::transport::TransportSecurity;
use crate::types::{NodeId, TypeConfig};

/// A snapshot of a node's Raft view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetrics {
    /// This node.
    pub node_id: NodeId,
    /// Leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Whether this node is leader, follower, candidate or learner.
    pub is_leader: bool,
    /// Last log index applied to the local state machine.
    pub last_applied_index: Option<u64>,
    /// Last log index in the local log.
    pub last_log_index: Option<u64>,
    /// Last index covered by a local snapshot.
    pub snapshot_index: Option<u64>,
    /// Highest index with a final certificate known here.
    pub final_index: Option<u64>,
}

struct NodeInner<S> {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    collector: Arc<CertificateCollector>,
    sm: SmStore<S>,
    batch_tx: mpsc::Sender<PendingWrite>,
    members: BTreeMap<NodeId, MemberConfig>,
    security: TransportSecurity,
    write_timeout: Duration,
    max_command_bytes: usize,
    /// Idle connections for forwarding writes, by leader id.
    forward_pool: Mutex<BTreeMap<NodeId, Vec<RpcClient>>>,
    /// How long this node's own proposals took to commit and to become final.
    write_times: WriteTimes,
}

/// Handle to a running master replica.
pub struct ConsensusNode<S: ReplicatedStateMachine> {
    inner: Arc<NodeInner<S>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    writer: Writer,
    local_addr: SocketAddr,
}

/// Retry pacing while no leader is known or the leader moved.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Pending outbound signature statements per peer; beyond this they are dropped.
const SIGNATURE_QUEUE_LEN: usize = 65_536;
/// Binds `addr`, retrying "address in use" for up to 10 s: a process restarted
/// right after a crash may find its old socket not yet released. Used for the Raft
/// listener here and for the gateway and enterprise listeners of `symphony-deploy`.
pub async fn bind_retrying(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tracing::warn!(%addr, "address in use; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r,
        }
    }
}

/// How long `start` waits for a previous instance to release the redb file.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

impl<S: ReplicatedStateMachine> ConsensusNode<S> {
    /// Binds `config.listen_addr` and starts the node (see [`start_with_listener`]).
    ///
    /// [`start_with_listener`]: Self::start_with_listener
    pub async fn start(config: ConsensusConfig, state_machine: S) -> Result<Self, ConsensusError> {
        let listener =
            bind_retrying(config.listen_addr)
                .await
                .map_err(|source| ConsensusError::Listen {
                    addr: config.listen_addr,
                    source,
                })?;
        Self::start_with_listener(config, listener, state_machine).await
    }

    /// Starts the node on an already bound listener: opens (or recovers) the redb file,
    /// restores the state machine from the last snapshot, starts Raft and the RPC server.
    pub async fn start_with_listener(
        config: ConsensusConfig,
        listener: TcpListener,
        state_machine: S,
    ) -> Result<Self, ConsensusError> {
        config.validate()?;
        let raft_config = config.raft_config()?;
        std::fs::create_dir_all(&config.data_dir).map_err(StoreError::Io)?;
        let (writer, mut recovered) = open_store(config.data_dir.join("raft.redb")).await?;
        let (applied_tx, applied_rx) = mpsc::unbounded_channel();
        let snapshot = recovered.snapshot.take();
        let log_store = LogStore::new(writer.clone(), &mut recovered);
        let sm = SmStore::new(state_machine, snapshot, writer.clone(), applied_tx)?;
        let network = NetworkFactory {
            security: config.transport.clone(),
        };
        let raft = Raft::new(config.node_id, raft_config, network, log_store, sm.clone())
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ConsensusError::Listen {
                addr: config.listen_addr,
                source,
            })?;

        let collector = Arc::new(CertificateCollector::new(config.master_keys()));
        let (batch_tx, batch_rx) = mpsc::channel(config.tuning.max_batch_commands * 4);
        let inner = Arc::new(NodeInner {
            node_id: config.node_id,
            raft: raft.clone(),
            collector: collector.clone(),
            sm,
            batch_tx,
            members: config.members.clone(),
            security: config.transport.clone(),
            write_timeout: Duration::from_millis(config.tuning.write_timeout_ms),
            max_command_bytes: config.tuning.max_command_bytes,
            forward_pool: Mutex::new(BTreeMap::new()),
            write_times: WriteTimes::default(),
        });

        let mut tasks = Vec::new();
        let mut peer_queues = Vec::new();
        for (peer, member) in config
            .members
            .iter()
            .filter(|(id, _)| **id != config.node_id)
        {
            let (tx, rx) = mpsc::channel(SIGNATURE_QUEUE_LEN);
            peer_queues.push(tx);
            let client = RpcClient::new(member.addr.to_string(), config.transport.clone());
            tracing::debug!(peer, "starting signature pusher");
            tasks.push(tokio::spawn(push_signatures(client, rx)));
        }
        tasks.push(tokio::spawn(sign_applied(
            config.clone(),
            collector,
            applied_rx,
            peer_queues,
        )));
        tasks.push(tokio::spawn(run_batcher(
            raft,
            batch_rx,
            config.tuning.max_batch_commands,
            config.tuning.max_command_bytes * 4,
            config.tuning.max_batches_in_flight,
        )));
        tasks.push(tokio::spawn(serve(
            listener,
            config.transport.clone(),
            inner.clone(),
        )));
        Ok(Self {
            inner,
            tasks: Mutex::new(tasks),
            writer,
            local_addr,
        })
    }

    /// Address the RPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes all configured members voters of a new cluster. Call on one node, once.
    pub async fn initialize_cluster(&self) -> Result<(), ConsensusError> {
        let members: BTreeMap<NodeId, BasicNode> = self
            .inner
            .members
            .iter()
            .map(|(id, m)| (*id, BasicNode::new(m.addr.to_string())))
            .collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(ConsensusError::AlreadyInitialized)
            }
            Err(e) => Err(ConsensusError::Raft(e.to_string())),
        }
    }

    /// Replicates `command`, waits until its log index is final (2 of 3 signatures), and
    /// returns the state machine's response with the certificate. Any node accepts
    /// writes; a follower forwards to the leader. Bounded by `tuning.write_timeout_ms`.
    pub async fn client_write(
        &self,
        command: Vec<u8>,
    ) -> Result<(Vec<u8>, CommitCertificate), ConsensusError> {
        if command.len() > self.inner.max_command_bytes {
            return Err(ConsensusError::CommandTooLarge {
                bytes: command.len(),
                max_bytes: self.inner.max_command_bytes,
            });
        }
        let deadline = Instant::now() + self.inner.write_timeout;
        match tokio::time::timeout_at(deadline, self.inner.write_until_final(command, deadline))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(ConsensusError::Unavailable {
                timeout_ms: self.inner.write_timeout.as_millis() as u64,
                leader: self.inner.current_leader(),
            }),
        }
    }

    /// Waits until some leader is known, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ConsensusError> {
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        metrics
            .current_leader
            .ok_or_else(|| ConsensusError::Raft("leader vanished".into()))
    }

    /// Waits until the local state machine applied `index`, at most `timeout`.
    pub async fn wait_for_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied index")
            .await
            .map(|_| ())
            .map_err(|e| ConsensusError::Raft(e.to_string()))
    }

    /// A linearizable read barrier: confirms this node is the leader (heartbeats to a
    /// quorum) and waits until its state machine applied everything committed so far,
    /// including entries of earlier terms a newly elected leader has not applied yet.
    /// Read the state after this returns to see every committed command.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ConsensusError> {
        match tokio::time::timeout(timeout, self.inner.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ConsensusError::Raft(e.to_string())),
            Err(_) => Err(ConsensusError::Unavailable {
                timeout_ms: timeout.as_millis() as u64,
                leader: self.metrics().leader,
            }),
        }
    }

    /// Commit and certificate latency of the writes this node proposed (its own
    /// clients' and those forwarded to it while it led) since start or the last
    /// [`reset_write_latency`](Self::reset_write_latency).
    pub fn write_latency(&self) -> WriteLatency {
        self.inner.write_times.report()
    }

    /// Starts [`write_latency`](Self::write_latency) afresh.
    pub fn reset_write_latency(&self) {
        self.inner.write_times.reset();
    }

    /// Current Raft view of this node.
    pub fn metrics(&self) -> NodeMetrics {
        let m = self.inner.raft.metrics().borrow().clone();
        NodeMetrics {
            node_id: self.inner.node_id,
            leader: m.current_leader,
            term: m.current_term,
            is_leader: m.state == ServerState::Leader,
            last_applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            final_index: self.inner.collector.final_index(),
        }
    }

    /// Root of the local state machine and the log index it reflects.
    pub fn state_root(&self) -> (Option<u64>, StateRoot) {
        let shared = self.inner.sm.lock();
        (
            shared.last_applied.map(|l| l.index),
            shared.machine.state_root(),
        )
    }

    /// Runs `f` on the local state machine (read-only), e.g. for queries on applied state.
    pub fn with_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.inner.sm.lock().machine)
    }

    /// Highest log index with a final certificate known to this node.
    pub fn final_index(&self) -> Option<u64> {
        self.inner.collector.final_index()
    }

    /// This node's certificate collector (certificates, evidence, `await_final`).
    pub fn collector(&self) -> &Arc<CertificateCollector> {
        &self.inner.collector
    }

    /// Triggers a snapshot now (also taken automatically per `snapshot_every_entries`).
    pub async fn trigger_snapshot(&self) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))
    }

    /// Stops Raft, the RPC server and all tasks, and closes the redb file. Peers see
    /// this node as crashed; pending and later calls on this handle fail. Restart with
    /// [`start`](Self::start) on the same `data_dir`. Idempotent.
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        let raft_result = self.inner.raft.shutdown().await;
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        self.writer.shutdown().await;
        raft_result.map_err(|e| ConsensusError::Raft(e.to_string()))
    }
}

impl<S: ReplicatedStateMachine> Drop for ConsensusNode<S> {
    fn drop(&mut self) {
        // Without `shutdown`, at least stop serving peers and batching; Raft itself stops
        // once its last handle (held by these tasks) is gone.
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

async fn open_store(path: PathBuf) -> Result<(Writer, crate::store::Recovered), ConsensusError> {
    let started = Instant::now();
    loop {
        match store::open(&path) {
            Err(StoreError::Redb(e))
                if matches!(*e, redb::Error::DatabaseAlreadyOpen)
                    && started.elapsed() < REOPEN_WAIT =>
            {
                // A previous instance in this process is still closing its file.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other.map_err(ConsensusError::from),
        }
    }
}

impl<S: ReplicatedStateMachine> NodeInner<S> {
    fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Retries only when the command was certainly not proposed.
    async fn write_until_final(
        &self,
        command: Vec<u8>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, CommitCertificate), ConsensusError> {
        loop {
            match self.current_leader() {
                Some(leader) if leader == self.node_id => {
                    match self.write_local(command.clone(), deadline).await {
                        Ok(done) => return Ok(done),
                        Err(ForwardRefusal::NotLeader { .. }) => {}
                        Err(ForwardRefusal::Failed(reason)) => {
                            return Err(ConsensusError::OutcomeUnknown(reason))
                        }
                    }
                }
                Some(leader) => match self.forward(leader, &command, deadline).await {
                    Ok(done) => return Ok(done),
                    Err(ForwardOutcome::NotProposed) => {}
                    Err(ForwardOutcome::Failed(e)) => return Err(e),
                },
                None => {}
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Proposes through the local batcher (this node believes it leads) and waits for
    /// the certificate.
    async fn write_local(
        &self,
        command: Vec<u8>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, CommitCertificate), ForwardRefusal> {
        let proposed = Instant::now();
        let (reply, reply_rx) = oneshot::channel();
        self.batch_tx
            .send(PendingWrite { command, reply })
            .await
            .map_err(|_| ForwardRefusal::Failed("node is shutting down".into()))?;
        let (response, log_index) = match reply_rx.await {
            Ok(Ok(done)) => done,
            Ok(Err(LocalWriteFailure::NotLeader(leader))) => {
                return Err(ForwardRefusal::NotLeader { leader })
            }
            Ok(Err(LocalWriteFailure::Failed(reason))) => {
                return Err(ForwardRefusal::Failed(reason))
            }
            Err(_) => return Err(ForwardRefusal::Failed("node is shutting down".into())),
        };
        let applied = Instant::now();
        self.write_times.commit.record(applied - proposed);
        let remaining = deadline.saturating_duration_since(applied);
        let certificate = self
            .collector
            .await_final(log_index, remaining)
            .await
            .map_err(|e| ForwardRefusal::Failed(format!("committed at index {log_index}, {e}")))?;
        self.write_times.certificate.record(applied.elapsed());
        Ok((response, certificate))
    }

    async fn forward(
        &self,
        leader: NodeId,
        command: &[u8],
        deadline: Instant,
    ) -> Result<(Vec<u8>, CommitCertificate), ForwardOutcome> {
        let Some(member) = self.members.get(&leader) else {
            return Err(ForwardOutcome::NotProposed);
        };
        let mut client = self
            .forward_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&leader)
            .and_then(Vec::pop)
            .unwrap_or_else(|| RpcClient::new(member.addr.to_string(), self.security.clone()));
        let request = RpcRequest::ForwardWrite {
            command: command.to_vec(),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = client.call(&request, remaining).await;
        if result.is_ok() {
            self.forward_pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(leader)
                .or_default()
                .push(client);
        }
        match result {
            Ok(RpcResponse::ForwardWrite(Ok((response, certificate)))) => {
                let certificate = self
                    .adopt_certificate(&certificate)
                    .map_err(|e| ForwardOutcome::Failed(e.into()))?;
                Ok((response, certificate))
            }
            Ok(RpcResponse::ForwardWrite(Err(ForwardRefusal::NotLeader { .. }))) => {
                Err(ForwardOutcome::NotProposed)
            }
            Ok(RpcResponse::ForwardWrite(Err(ForwardRefusal::Failed(reason)))) => Err(
                ForwardOutcome::Failed(ConsensusError::OutcomeUnknown(reason)),
            ),
            Ok(_) => Err(ForwardOutcome::Failed(ConsensusError::OutcomeUnknown(
                format!("unexpected answer from leader {leader}"),
            ))),
            // Never sent: safe to retry (the leader may have moved or restarted).
            Err(CallError::Connect { .. }) => Err(ForwardOutcome::NotProposed),
            Err(e) => Err(ForwardOutcome::Failed(ConsensusError::OutcomeUnknown(
                e.to_string(),
            ))),
        }
    }
}

impl<S> NodeInner<S> {
    /// Accepts a certificate from the leader only if it is final under our own keys.
    /// Usually the local collector already holds it (peers push their statements), and
    /// no signature is verified twice: ed25519 verification dominates per-write CPU.
    fn adopt_certificate(
        &self,
        certificate: &CommitCertificate,
    ) -> Result<CommitCertificate, CertificateError> {
        let local = |c: &CommitCertificate| {
            self.collector
                .certificate(c.log_index)
                .filter(|l| l.state_root == c.state_root && l.cluster_id == c.cluster_id)
        };
        if let Some(known) = local(certificate) {
            return Ok(known);
        }
        // Verifies each signature once while recording it.
        self.collector.add_certificate(certificate)?;
        local(certificate).ok_or(CertificateError::NotFinal {
            log_index: certificate.log_index,
            valid_count: certificate.signatures.len(),
            quorum: self.collector.keys().quorum(),
        })
    }
}

enum ForwardOutcome {
    NotProposed,
    Failed(ConsensusError),
}

impl<S: ReplicatedStateMachine> RpcHandler for NodeInner<S> {
    async fn handle(&self, request: RpcRequest) -> RpcResponse {
        match request {
            RpcRequest::AppendEntries(rpc) => {
                RpcResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            RpcRequest::Vote(rpc) => RpcResponse::Vote(self.raft.vote(rpc).await),
            RpcRequest::InstallSnapshot(rpc) => {
                RpcResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            RpcRequest::ForwardWrite { command } => {
                if command.len() > self.max_command_bytes {
                    return RpcResponse::ForwardWrite(Err(ForwardRefusal::Failed(format!(
                        "command of {} bytes exceeds {}",
                        command.len(),
                        self.max_command_bytes
                    ))));
                }
                if self.current_leader() != Some(self.node_id) {
                    return RpcResponse::ForwardWrite(Err(ForwardRefusal::NotLeader {
                        leader: self.current_leader(),
                    }));
                }
                let deadline = Instant::now() + self.write_timeout;
                RpcResponse::ForwardWrite(self.write_local(command, deadline).await)
            }
            RpcRequest::Signatures(statements) => {
                for statement in statements {
                    if let Err(e) = self.collector.add(statement) {
                        tracing::warn!("refused commit statement: {e}");
                    }
                }
                RpcResponse::Ack
            }
        }
    }
}
