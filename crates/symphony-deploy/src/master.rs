//! The master process: consensus node, API gateway, and the leader's campaign worker.
//!
//! Task flow: the gateway replicates `Submit` (the acknowledgement: the request is in
//! the log, final with 2 of 3 signatures). The worker of the current leader takes the
//! oldest non-final request, replicates `Start` with the attempt's task id, runs the
//! unchanged `MasterServices::run_campaign` against the enterprise nodes over mutual
//! TLS, and replicates `Finish` (accepted once per request: exactly-once completion).
//!
//! Leader change mid-task: the new leader finds the request `running` with an attempt
//! that did not finish. It aborts that attempt (releases the Vault reservations,
//! rejects the task if its lifecycle still allows it, refunds what is left in its
//! escrow; a payout already made is never repeated: one payout per escrow) and starts
//! the next attempt with the caller's next pre-signed nonce.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use symphony_consensus::transport::{MutualTls, TransportSecurity};
use symphony_consensus::{ConsensusConfig, ConsensusError, ConsensusNode, MemberConfig, Tuning};
use symphony_core::encoding::{canonical_bytes, tagged_hash};
use symphony_core::ids::{ActorId, TaskId, VaultId};
use symphony_core::lifecycle::{SettlementState, TaskEvent, TaskState};
use symphony_economics::{PolicyParams, PolicyRegistry};
use symphony_enclave::{SoftwareAttestationVerifier, SoftwareEnclave};
use symphony_ledger::{AccountId, EscrowId, Genesis, LedgerConfig};
use symphony_master::Command;
use symphony_node::bundle::{aggregation_code_identity, slice_code_identity};
use symphony_node::enterprise::EnterpriseEndpoint;
use symphony_node::network::{
    recovered_outcome, CampaignOutcome, CampaignSpec, MasterServices, Observer, ResultStage,
    SignedRequest,
};
use symphony_node::replication::ReplicationError;
use symphony_node::NodeError;
use symphony_semantic::SemanticRegistry;

use crate::config::{parse_addr, parse_public_key, read_signing_key, MasterConfig};
use crate::replicator::{Cluster, ConsensusReplicator, ReplicatedLedger};
use crate::rpc::RemoteEnterprise;
use crate::state::{DeployCommand, DeployResponse, RequestRecord, RequestStatus, MAX_ATTEMPTS};
use crate::tls::TlsMaterial;
use crate::DeployError;

/// Wall clock in ms (the gateway's replay window and, without `fixed_now_ms`, the
/// leader's injected time).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The genesis of the replicated ledger: every caller's balance.
pub fn genesis(config: &MasterConfig) -> Result<Genesis, DeployError> {
    let params = PolicyParams::default_v1();
    let mut allocations = Vec::new();
    for (i, c) in config.callers.iter().enumerate() {
        let account = AccountId::new(format!("actor:{}", c.actor))
            .map_err(|e| DeployError::Config(format!("callers[{i}].actor: {e}")))?;
        allocations.push((account, c.balance_micro_sym));
    }
    Ok(Genesis {
        config: LedgerConfig {
            unbonding_period_epochs: 2,
            min_stake_master: params.staking.s_master_micro_sym,
            min_stake_enterprise: params.staking.s_enterprise_micro_sym,
            min_stake_producer: params.staking.s_producer_micro_sym,
        },
        allocations,
    })
}

/// The consensus configuration of this master.
pub fn consensus_config(
    config: &MasterConfig,
    transport: TransportSecurity,
) -> Result<ConsensusConfig, DeployError> {
    let mut members = BTreeMap::new();
    for (i, m) in config.masters.iter().enumerate() {
        members.insert(
            m.id,
            MemberConfig {
                addr: parse_addr(&format!("masters[{i}].addr"), &m.addr)?,
                verifying_key: parse_public_key(
                    &format!("masters[{i}].public_key"),
                    &m.public_key,
                )?,
            },
        );
    }
    let me = config.me()?;
    Ok(ConsensusConfig {
        cluster_id: config.cluster_id.clone(),
        node_id: config.node_id,
        listen_addr: parse_addr("masters[].addr", &me.addr)?,
        members,
        data_dir: config.data_dir.join("raft"),
        signing_key: read_signing_key("signing_key_file", &config.signing_key_file)?,
        transport,
        tuning: Tuning::default(),
    })
}

/// Node-to-node transport security from the configured TLS files.
pub fn transport(config: &MasterConfig) -> Result<TransportSecurity, DeployError> {
    let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    Ok(TransportSecurity::MutualTls(MutualTls {
        client: tls.mutual_client()?,
        server: tls.mutual_server()?,
    }))
}

/// Runs a master until `shutdown` resolves.
pub async fn run(
    config: MasterConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DeployError> {
    let security = transport(&config)?;
    let cc = consensus_config(&config, security.clone())?;
    let members: Vec<_> = cc
        .members
        .iter()
        .map(|(id, m)| (*id, m.verifying_key))
        .collect();
    let state = crate::state::DeployState::new(genesis(&config)?)
        .map_err(|e| DeployError::Ledger(e.to_string()))?;
    let node = Arc::new(ConsensusNode::start(cc, state).await?);
    let first = config.masters.iter().map(|m| m.id).min().unwrap_or(1);
    if config.node_id == first {
        match node.initialize_cluster().await {
            Ok(()) => tracing::info!("cluster initialized"),
            Err(ConsensusError::AlreadyInitialized) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cluster = Cluster::new(node.clone(), tokio::runtime::Handle::current(), members);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (cluster, config, stop, security) = (
            cluster.clone(),
            config.clone(),
            stop.clone(),
            security.clone(),
        );
        std::thread::Builder::new()
            .name("campaign-worker".into())
            .spawn(move || {
                if let Err(e) = worker_loop(&cluster, &config, security, &stop) {
                    tracing::error!(error = %e, "campaign worker stopped");
                }
            })?
    };
    let gateway_addr: SocketAddr = parse_addr("masters[].gateway", &config.me()?.gateway)?;
    let gateway = crate::gateway::Gateway::new(&config, cluster.clone())?;
    let listener = tokio::net::TcpListener::bind(gateway_addr).await?;
    tracing::info!(node_id = config.node_id, %gateway_addr, "master running");
    tokio::select! {
        r = gateway.serve(listener) => r?,
        () = shutdown => {}
    }
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    node.shutdown().await?;
    tracing::info!(node_id = config.node_id, "master stopped");
    Ok(())
}

/// Fault injection for the crash tests: with `SYMPHONY_FAULT_EXIT_AT=<step>` a
/// master exits abruptly (no shutdown, exit code 137 as after SIGKILL) right after
/// the campaign step `<step>` (e.g. `payout`, `settlement:finalized`, `delivered`),
/// once per data directory. Unset in normal operation.
pub const FAULT_EXIT_AT: &str = "SYMPHONY_FAULT_EXIT_AT";

struct LogObserver {
    request: String,
    fault_marker: std::path::PathBuf,
}

impl Observer for LogObserver {
    fn step(&mut self, name: &str, detail: &str) {
        tracing::info!(request = %self.request, step = name, detail, "campaign step");
        if std::env::var(FAULT_EXIT_AT).is_ok_and(|s| s == name) && !self.fault_marker.exists() {
            let _ = std::fs::write(&self.fault_marker, name);
            tracing::error!(step = name, "fault injection: exiting as if killed");
            std::process::exit(137);
        }
    }
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
}

fn services(cluster: &Cluster, config: &MasterConfig) -> Result<MasterServices, DeployError> {
    let aggregator = SoftwareEnclave::new(
        read_signing_key("aggregator_key_file", &config.aggregator_key_file)?,
        &aggregation_code_identity(),
    );
    let mut platform_keys = Vec::new();
    for (i, e) in config.enterprises.iter().enumerate() {
        platform_keys.push(
            parse_public_key(
                &format!("enterprises[{i}].platform_public_key"),
                &e.platform_public_key,
            )?
            .to_bytes(),
        );
    }
    platform_keys.push(aggregator.platform_public_key());
    let verifier = SoftwareAttestationVerifier::new(
        [
            slice_code_identity().measurement(),
            aggregation_code_identity().measurement(),
        ],
        platform_keys,
    );
    let mut advertisers = BTreeMap::new();
    for (i, c) in config.callers.iter().enumerate() {
        let actor = ActorId::new(c.actor.clone())
            .map_err(|e| DeployError::Config(format!("callers[{i}].actor: {e}")))?;
        advertisers.insert(
            actor,
            parse_public_key(&format!("callers[{i}].public_key"), &c.public_key)?.to_bytes(),
        );
    }
    let policy = PolicyRegistry::genesis(PolicyParams::default_v1())
        .map_err(|e| DeployError::Config(format!("policy: {e}")))?;
    let mut svc = MasterServices::new(
        Box::new(ConsensusReplicator::new(cluster.clone())),
        aggregator,
        verifier,
        Box::new(ReplicatedLedger::new(cluster.clone())),
        policy,
        SemanticRegistry::catalog_v1(),
        advertisers,
        0,
    );
    svc.result_stage = Some(Box::new(ReplicatedResultStage(cluster.clone())));
    Ok(svc)
}

/// Stages verified results in the replicated state (`DeployCommand::StageResult`).
struct ReplicatedResultStage(Cluster);

impl ResultStage for ReplicatedResultStage {
    fn stage(
        &mut self,
        task_id: &TaskId,
        _result_hash: &symphony_core::encoding::Digest,
        audience: &[String],
    ) -> Result<(), NodeError> {
        // The state machine checks the audience against the recorded aggregate.
        let (response, _) = self
            .0
            .write_blocking(&DeployCommand::StageResult {
                task_id: task_id.to_string(),
                audience: audience.to_vec(),
            })
            .map_err(|e| NodeError::Replication(ReplicationError::Encoding(e.to_string())))?;
        match response {
            DeployResponse::Queue(Ok(_)) => Ok(()),
            DeployResponse::Queue(Err(e)) => Err(NodeError::Refused(e)),
            other => Err(NodeError::Refused(format!("unexpected response {other:?}"))),
        }
    }
}

/// The nonce signed for attempt `attempt` of a submission with nonce `nonce`.
pub fn attempt_nonce(nonce: u64, attempt: usize) -> u64 {
    nonce
        .wrapping_mul(MAX_ATTEMPTS as u64)
        .wrapping_add(attempt as u64)
}

/// The task id `MasterServices::run_campaign` gives a request after
/// `set_task_counter(counter)` (same derivation as `symphony_node::network`).
pub fn attempt_task_id(
    spec: &CampaignSpec,
    nonce: u64,
    counter: u64,
) -> Result<String, DeployError> {
    let bytes =
        canonical_bytes(&(spec, nonce)).map_err(|e| DeployError::Encoding(e.to_string()))?;
    let hash = tagged_hash("scp/request/v1", &bytes).to_hex();
    Ok(format!("task-{}-{:04}", &hash[..12], counter + 1))
}

fn worker_loop(
    cluster: &Cluster,
    config: &MasterConfig,
    security: TransportSecurity,
    stop: &AtomicBool,
) -> Result<(), DeployError> {
    let rt = cluster.runtime().clone();
    let mut endpoints = Vec::new();
    for (i, e) in config.enterprises.iter().enumerate() {
        let vault_id = VaultId::new(e.vault_id.clone())
            .map_err(|err| DeployError::Config(format!("enterprises[{i}].vault_id: {err}")))?;
        endpoints.push(RemoteEnterprise::new(
            vault_id,
            e.addr.clone(),
            security.clone(),
            rt.clone(),
            Duration::from_secs(30),
        ));
    }
    let endpoints: Vec<&dyn EnterpriseEndpoint> = endpoints
        .iter()
        .map(|e| e as &dyn EnterpriseEndpoint)
        .collect();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        if !cluster.node.metrics().is_leader {
            continue;
        }
        if cluster.with_state(|s| s.next_pending()).is_none() {
            continue;
        }
        // A new leader may not have applied every committed entry yet (e.g. the
        // delivery record of the attempt it is about to take over): read after a
        // linearizable barrier, never from a stale replica.
        if let Err(e) = rt.block_on(cluster.node.read_barrier(Duration::from_secs(5))) {
            tracing::warn!(error = %e, "read barrier failed; not leading this round");
            continue;
        }
        let Some((request_id, record)) = cluster.with_state(|s| s.next_pending()) else {
            continue;
        };
        let mut svc = services(cluster, config)?;
        if let Err(e) = process(cluster, config, &mut svc, &endpoints, &request_id, &record) {
            tracing::warn!(request = %request_id, error = %e, "attempt interrupted; will retry");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn finish(
    cluster: &Cluster,
    request_id: &str,
    status: RequestStatus,
    outcome: Option<CampaignOutcome>,
    error: Option<String>,
) -> Result<(), DeployError> {
    let (response, _) = cluster.write_blocking(&DeployCommand::Finish {
        request_id: request_id.to_owned(),
        status,
        outcome,
        error,
    })?;
    if let DeployResponse::Queue(Err(e)) = response {
        tracing::warn!(request = %request_id, error = %e, "finish refused");
    }
    Ok(())
}

/// What a master taking over does with the attempt a failed leader left.
enum Takeover {
    /// The result was paid for and is delivered now (from the staged copy).
    Delivered(Box<CampaignOutcome>),
    /// Completed, but no staged result exists (a leader of an older version).
    CompletedWithoutResult,
    /// Nothing was paid: the attempt is aborted and the request retried.
    Aborted,
}

/// Takes over an attempt a previous leader left unfinished. If the escrow was
/// already paid out (or the task completed), the attempt is completed instead of
/// aborted: settlement `finalized`, task `completed`, delivery recorded, and the
/// outcome rebuilt from the replicated state and the staged result — so a leader
/// crash between payout and `Finish` neither loses the result nor charges twice.
fn take_over(
    cluster: &Cluster,
    svc: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    task_id: &str,
    now_ms: u64,
) -> Result<Takeover, DeployError> {
    let tid = TaskId::new(task_id.to_owned()).map_err(|e| DeployError::Encoding(e.to_string()))?;
    let escrow = EscrowId::new(format!("escrow-{task_id}"))
        .map_err(|e| DeployError::Ledger(e.to_string()))?;
    let paid = svc
        .ledger
        .escrow(&escrow)
        .is_some_and(|e| e.payout_id.is_some());
    let record = svc.masters.state().task(&tid).cloned();
    let staged = cluster.with_state(|s| s.staged(task_id).cloned());
    let (Some(record), Some(audience)) = (record, staged) else {
        return Ok(if abort_attempt(svc, endpoints, task_id)? {
            Takeover::CompletedWithoutResult
        } else {
            Takeover::Aborted
        });
    };
    let settlement = record.settlement.as_ref().map(|s| s.state);
    let completable = record.state == TaskState::Completed
        || (paid
            && record.state == TaskState::AwaitingSettlement
            && matches!(
                settlement,
                Some(SettlementState::Finalizing | SettlementState::Finalized)
            ));
    if !completable {
        abort_attempt(svc, endpoints, task_id)?;
        return Ok(Takeover::Aborted);
    }
    // The payout of the escrow set was made; its remainder goes back to the
    // submitter (the ledger pays and refunds an escrow at most once).
    if let Some(rec) = svc.ledger.escrow(&escrow) {
        if rec.remaining() > 0 {
            svc.ledger
                .refund(&escrow, rec.remaining())
                .map_err(|e| DeployError::Ledger(e.to_string()))?;
        }
    }
    if let Some(s) = record
        .settlement
        .as_ref()
        .filter(|s| s.state == SettlementState::Finalizing)
    {
        let mut finalized = s.clone();
        finalized.state = SettlementState::Finalized;
        svc.masters
            .submit(Command::RecordSettlement {
                task_id: tid.clone(),
                record: finalized,
            })
            .map_err(NodeError::from)?;
    }
    if record.state != TaskState::Completed {
        svc.masters
            .submit(Command::Advance {
                task_id: tid.clone(),
                event: TaskEvent::SettlementFinalized,
                reason: None,
            })
            .map_err(NodeError::from)?;
    }
    let delivered = svc
        .masters
        .state()
        .audit_log()
        .iter()
        .any(|e| e.task_id == tid && e.kind == "result_delivered");
    if !delivered {
        let aggregate = record.aggregate.as_ref().ok_or_else(|| {
            DeployError::Node(NodeError::Refused(format!("{task_id} has no aggregate")))
        })?;
        svc.masters
            .submit(Command::RecordDelivery {
                task_id: tid.clone(),
                recipient: record.envelope.body().caller.actor_id.clone(),
                result_hash: aggregate.result_hash,
                count: audience.len() as u64,
                at_ms: now_ms,
            })
            .map_err(NodeError::from)?;
    }
    let signatures = cluster
        .node
        .collector()
        .final_index()
        .and_then(|i| cluster.node.collector().certificate(i))
        .map_or(0, |c| c.signatures.len());
    let outcome =
        recovered_outcome(svc.masters.state(), &tid, audience, signatures).ok_or_else(|| {
            DeployError::Node(NodeError::Refused(format!(
                "{task_id} did not reach completed with a finalized settlement"
            )))
        })?;
    tracing::info!(task = %task_id, "completed and delivered the attempt of a failed leader");
    Ok(Takeover::Delivered(Box::new(outcome)))
}

/// Aborts an attempt that did not complete: releases the Vault reservations, rejects
/// the task if its lifecycle allows it and refunds what is left in its escrow (a
/// payout already made is never repeated); true if the task had completed.
fn abort_attempt(
    svc: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    task_id: &str,
) -> Result<bool, DeployError> {
    let tid = TaskId::new(task_id.to_owned()).map_err(|e| DeployError::Encoding(e.to_string()))?;
    let state = svc.masters.state().task(&tid).map(|r| r.state);
    if state == Some(TaskState::Completed) {
        return Ok(true);
    }
    for e in endpoints {
        let _ = e.release(&tid);
    }
    if state.is_some_and(|s| !s.is_terminal()) {
        let r = svc.masters.submit(Command::Advance {
            task_id: tid.clone(),
            event: TaskEvent::Reject,
            reason: Some("attempt aborted: the leader running it failed".into()),
        });
        if let Err(e) = r {
            tracing::warn!(task = %task_id, error = %e, "abandoned task left in its state");
        }
    }
    let escrow = EscrowId::new(format!("escrow-{task_id}"))
        .map_err(|e| DeployError::Ledger(e.to_string()))?;
    if let Some(rec) = svc.ledger.escrow(&escrow) {
        if rec.payout_id.is_none() && rec.remaining() > 0 {
            svc.ledger
                .refund(&escrow, rec.remaining())
                .map_err(|e| DeployError::Ledger(e.to_string()))?;
        }
    }
    tracing::info!(task = %task_id, "aborted attempt of a failed leader");
    Ok(false)
}

fn process(
    cluster: &Cluster,
    config: &MasterConfig,
    svc: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    request_id: &str,
    record: &RequestRecord,
) -> Result<(), DeployError> {
    if let Some(previous) = record.attempts.last() {
        let now = config.fixed_now_ms.unwrap_or_else(now_ms);
        match take_over(cluster, svc, endpoints, previous, now)? {
            Takeover::Delivered(outcome) => {
                return finish(
                    cluster,
                    request_id,
                    RequestStatus::Completed,
                    Some(*outcome),
                    None,
                )
            }
            Takeover::CompletedWithoutResult => {
                return finish(
                    cluster,
                    request_id,
                    RequestStatus::Completed,
                    None,
                    Some("completed before a leader change; no staged result to deliver".into()),
                )
            }
            Takeover::Aborted => {}
        }
    }
    let attempt = record.attempts.len();
    let Some(sig_hex) = record.submission.attempt_signatures.get(attempt) else {
        return finish(
            cluster,
            request_id,
            RequestStatus::Rejected,
            None,
            Some(format!("all {attempt} attempts were interrupted")),
        );
    };
    let public_key = config
        .callers
        .iter()
        .find(|c| c.actor == record.caller)
        .and_then(|c| parse_public_key("callers[].public_key", &c.public_key).ok())
        .map(|k| k.to_bytes())
        .unwrap_or_default();
    let nonce = attempt_nonce(record.submission.nonce, attempt);
    let counter = record.seq * MAX_ATTEMPTS as u64 + attempt as u64;
    let task_id = attempt_task_id(&record.submission.spec, nonce, counter)?;
    let (response, _) = cluster.write_blocking(&DeployCommand::Start {
        request_id: request_id.to_owned(),
        task_id: task_id.clone(),
    })?;
    if let DeployResponse::Queue(Err(e)) = response {
        return Err(DeployError::Node(NodeError::Refused(e)));
    }
    let request = SignedRequest {
        spec: record.submission.spec.clone(),
        nonce,
        public_key,
        signature: hex::decode(sig_hex).unwrap_or_default(),
    };
    svc.set_task_counter(counter);
    svc.now_ms = config.fixed_now_ms.unwrap_or_else(now_ms);
    let mut obs = LogObserver {
        request: request_id.to_owned(),
        fault_marker: config.data_dir.join("fault-injected"),
    };
    match svc.run_campaign(endpoints, &request, &mut obs) {
        Ok(outcome) => {
            let status = if outcome.states.last().map(String::as_str) == Some("completed") {
                RequestStatus::Completed
            } else {
                RequestStatus::Rejected
            };
            tracing::info!(request = %request_id, task = %outcome.task_id, ?status, "campaign finished");
            finish(cluster, request_id, status, Some(outcome), None)
        }
        // Lost quorum or leadership mid-flow: the next leader (or this one) aborts
        // the attempt and retries.
        Err(e @ NodeError::Replication(_)) => Err(e.into()),
        Err(NodeError::Ledger(msg)) if msg.contains("replication") => Err(DeployError::Ledger(msg)),
        Err(e) => {
            abort_attempt(svc, endpoints, &task_id)?;
            finish(
                cluster,
                request_id,
                RequestStatus::Rejected,
                None,
                Some(e.to_string()),
            )
        }
    }
}

/// The hash a caller signs for a `SignedRequest` of `(spec, nonce)` (same as
/// `symphony_node::network::SignedRequest::sign`).
pub fn request_hash(
    spec: &CampaignSpec,
    nonce: u64,
) -> Result<symphony_core::encoding::Digest, DeployError> {
    let bytes =
        canonical_bytes(&(spec, nonce)).map_err(|e| DeployError::Encoding(e.to_string()))?;
    Ok(tagged_hash("scp/request/v1", &bytes))
}
