//! The master process: consensus node, API gateway, and the leader's task worker.
//!
//! Task flow: the gateway replicates `Submit` (the acknowledgement: the request is in
//! the log, final with 2 of 3 signatures). The worker of the current leader takes the
//! oldest non-final request, replicates `Start` with the attempt's task id, runs the
//! task's class flow against the enterprise nodes over mutual TLS — `query`: the
//! unchanged `MasterServices::run_campaign`; `compute`: `MasterServices::run_compute`;
//! `train`: the training coordinator (`run_training_with`) over the Vaults' training
//! endpoints — and replicates `Finish` (accepted once per request: exactly-once
//! completion). A `train` run stages its verified model artifacts in the replicated
//! state before the payout; any master serves them after completion.
//!
//! Leader change mid-task: the new leader finds the request `running` with an attempt
//! that did not finish and applies the takeover rule (`symphony_master::takeover`):
//! an attempt whose escrow was paid is completed from the replicated state and its
//! staged result delivered; any other is aborted (the Vault reservations released —
//! every round's, for `train` — the task rejected if its lifecycle still allows it,
//! what is left in its escrow refunded; a payout already made is never repeated: one
//! payout per escrow) and the next attempt starts with the caller's next pre-signed
//! nonce. A master that was merely stalled (not crashed) resumes inside the attempt
//! it was running: the Vaults, which released that attempt, refuse to reserve or
//! execute for it, and the master leaves the request to the current leader
//! (`still_current_attempt`) rather than finishing it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use symphony_consensus::transport::{MutualTls, TransportSecurity};
use symphony_consensus::{ConsensusConfig, ConsensusError, ConsensusNode, MemberConfig, Tuning};
use symphony_core::encoding::{canonical_bytes, tagged_hash};
use symphony_core::ids::{ActorId, TaskId, VaultId};
use symphony_core::lifecycle::TaskEvent;
use symphony_economics::{PolicyParams, PolicyRegistry};
use symphony_enclave::{SoftwareAttestationVerifier, SoftwareEnclave};
use symphony_ledger::{AccountId, EscrowId, Genesis, LedgerConfig};
use symphony_master::takeover::{self, Takeover};
use symphony_master::Command;
use symphony_node::bundle::{aggregation_code_identity, slice_code_identity};
use symphony_node::enterprise::EnterpriseEndpoint;
use symphony_node::network::{
    recovered_outcome, CampaignSpec, MasterServices, Observer, ResultStage, SignedRequest,
};
use symphony_node::replication::ReplicationError;
use symphony_node::task::{SignedTask, TaskOutcome, TaskSpec};
use symphony_node::training::{
    recovered_train_outcome, run_training_with, train_task_id, ArtifactStage, NoTap, RoundSummary,
    TrainObserver, TrainingEndpoint, TrainingRequest,
};
use symphony_node::NodeError;
use symphony_semantic::SemanticRegistry;

use crate::config::{parse_addr, parse_public_key, read_signing_key, MasterConfig};
use crate::replicator::{
    Cluster, ConsensusReplicator, ReplicatedLedger, ReplicatedSettlementStore,
};
use crate::rpc::RemoteEnterprise;
use crate::state::{
    DeployCommand, DeployResponse, ModelArtifacts, RequestRecord, RequestStatus, StagedResult,
    MAX_ATTEMPTS,
};
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

/// The genesis of the replicated ledger: every caller's balance and each
/// enterprise operator's stake (S_enterprise, liquid until bonded).
pub fn genesis(config: &MasterConfig) -> Result<Genesis, DeployError> {
    let params = PolicyParams::default_v1();
    let mut allocations = Vec::new();
    for (i, c) in config.callers.iter().enumerate() {
        let account = AccountId::new(format!("actor:{}", c.actor))
            .map_err(|e| DeployError::Config(format!("callers[{i}].actor: {e}")))?;
        allocations.push((account, c.balance_micro_sym));
    }
    // Each enterprise operator holds S_enterprise: a genesis member bonds it when
    // governance starts (`governance::Duty::GenesisStakes`), a candidate when its
    // `enterprise_membership` proposal is enacted (the leader's ledger duty).
    for (i, e) in config.enterprises.iter().enumerate() {
        let account = AccountId::new(format!("actor:operator:{}", e.vault_id))
            .map_err(|err| DeployError::Config(format!("enterprises[{i}].vault_id: {err}")))?;
        allocations.push((account, params.staking.s_enterprise_micro_sym));
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
    let exporter = crate::ledger_export::spawn_exporter(
        cluster.clone(),
        config.node_id,
        config.data_dir.clone(),
        stop.clone(),
    )?;
    let gateway_addr: SocketAddr = parse_addr("masters[].gateway", &config.me()?.gateway)?;
    let gateway = crate::gateway::Gateway::new(&config, cluster.clone())?;
    let listener = symphony_consensus::bind_retrying(gateway_addr).await?;
    tracing::info!(node_id = config.node_id, %gateway_addr, "master running");
    tokio::select! {
        r = gateway.serve(listener) => r?,
        () = shutdown => {}
    }
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    let _ = tokio::task::spawn_blocking(move || exporter.join()).await;
    node.shutdown().await?;
    tracing::info!(node_id = config.node_id, "master stopped");
    Ok(())
}

/// Fault injection for the crash tests: with `SYMPHONY_FAULT_EXIT_AT=<step>` a
/// master exits abruptly (no shutdown, exit code 137 as after SIGKILL) right after
/// the campaign step `<step>` (e.g. `payout`, `settlement:finalized`, `delivered`),
/// once per data directory. Unset in normal operation.
pub const FAULT_EXIT_AT: &str = "SYMPHONY_FAULT_EXIT_AT";

/// Fault injection for the stall tests: with `SYMPHONY_FAULT_STOP_AT=<step>` a master
/// stops its whole process (SIGSTOP, as a paused VM or a long pause would) right
/// after the step `<step>` of an attempt (e.g. `semantics`: after `Start`, before
/// any Vault reservation), until something sends it SIGCONT. It fires only while the
/// file named by [`FAULT_ARM_FILE`] exists, and removes it: the test arms it when it
/// wants the next attempt stalled, and of several masters exactly one stops. Without
/// that variable, once per data directory. Unset in normal operation.
pub const FAULT_STOP_AT: &str = "SYMPHONY_FAULT_STOP_AT";

/// The file that arms [`FAULT_STOP_AT`] (consumed when it fires).
pub const FAULT_ARM_FILE: &str = "SYMPHONY_FAULT_ARM_FILE";

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
        if std::env::var(FAULT_STOP_AT).is_ok_and(|s| s == name) {
            self.stop_if_armed(name);
        }
    }
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
}

impl LogObserver {
    /// [`FAULT_STOP_AT`]: SIGSTOP to this process if armed.
    fn stop_if_armed(&self, step: &str) {
        let armed = match std::env::var_os(FAULT_ARM_FILE) {
            // Removing the file is atomic: one master wins it.
            Some(arm) => std::fs::remove_file(arm).is_ok(),
            None => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.fault_marker.with_file_name("fault-stopped"))
                .is_ok(),
        };
        if !armed {
            return;
        }
        tracing::error!(request = %self.request, step, "fault injection: stopping (SIGSTOP) until SIGCONT");
        // `kill` rather than a signal call: the workspace forbids unsafe code.
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        tracing::warn!(request = %self.request, step, ?stopped, "fault injection: resumed");
    }
}

impl TrainObserver for LogObserver {
    fn round(&mut self, s: &RoundSummary, max_rounds: u32) {
        tracing::info!(
            request = %self.request,
            round = s.round,
            max_rounds,
            vaults = s.vaults,
            examples = s.examples,
            train_loss = s.train_loss,
            holdout_loss = s.holdout_loss,
            epsilon = s.epsilon_cumulative,
            "training round"
        );
    }
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
    // Which kinds of evidence are accepted is the governed attestation policy of
    // each task's policy version (`MasterServices::verifier_for`), not a local setting.
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
    let policy = PolicyRegistry::genesis(config.genesis_policy()?)
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
    svc.settlements = Some(symphony_node::settlement::SettlementStore::replicated(
        Box::new(ReplicatedSettlementStore::new(cluster.clone())),
    ));
    // Every policy version governance enacted, with the epoch it activated in:
    // admission and settlement resolve a task by the version of its admission.
    symphony_node::governance::sync_policy(&mut svc)?;
    // The semantic registry with every enacted attribute promotion.
    symphony_node::governance::sync_semantic(&mut svc)?;
    Ok(svc)
}

/// Runs a producer's `parse` task (free) through this master's services: admission
/// against the registered producer key, the slice on the enterprise node hosting
/// its Personal Vault (`endpoint`), task states replicated through consensus.
/// Blocking: call it off the async runtime.
pub fn run_producer_parse(
    cluster: &Cluster,
    config: &MasterConfig,
    endpoint: &RemoteEnterprise,
    req: &symphony_node::classes::parse::ParseRequest,
) -> Result<symphony_node::classes::parse::ParseOutcome, DeployError> {
    let mut svc = services(cluster, config)?;
    svc.now_ms = config.fixed_now_ms.unwrap_or_else(now_ms);
    let mut obs = symphony_node::network::Quiet;
    Ok(symphony_node::classes::parse::run_parse(
        &mut svc,
        &[endpoint as &dyn EnterpriseEndpoint],
        req,
        &mut obs,
    )?)
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
        stage_result(&self.0, task_id, StagedResult::Audience(audience.to_vec()))
    }

    fn stage_table(
        &mut self,
        task_id: &TaskId,
        _result_hash: &symphony_core::encoding::Digest,
        groups: &[symphony_node::task::GroupValue],
        suppressed_groups: &[String],
    ) -> Result<(), NodeError> {
        // The state machine checks the table against the recorded aggregate.
        stage_result(
            &self.0,
            task_id,
            StagedResult::Table(crate::state::StagedTable {
                groups: groups.to_vec(),
                suppressed_groups: suppressed_groups.to_vec(),
            }),
        )
    }
}

/// Stages a `train` task's verified model artifacts in the replicated state.
struct ReplicatedArtifactStage(Cluster);

impl ArtifactStage for ReplicatedArtifactStage {
    fn stage(
        &mut self,
        task: &TaskId,
        _model_hash: &symphony_core::encoding::Digest,
        model: &[u8],
        card: &[u8],
    ) -> Result<(), NodeError> {
        // The state machine checks the model against the composite result's hash.
        stage_result(
            &self.0,
            task,
            StagedResult::Model(ModelArtifacts {
                model: model.to_vec(),
                card: card.to_vec(),
            }),
        )
    }
}

fn stage_result(
    cluster: &Cluster,
    task_id: &TaskId,
    result: StagedResult,
) -> Result<(), NodeError> {
    let (response, _) = cluster
        .write_blocking(&DeployCommand::StageResult {
            task_id: task_id.to_string(),
            result,
        })
        .map_err(|e| NodeError::Replication(ReplicationError::Encoding(e.to_string())))?;
    match response {
        DeployResponse::Queue(Ok(_)) => Ok(()),
        DeployResponse::Queue(Err(e)) => Err(NodeError::Refused(e)),
        other => Err(NodeError::Refused(format!("unexpected response {other:?}"))),
    }
}

pub use crate::state::attempt_nonce;

/// The task id the class flow gives an attempt signed for `nonce` after
/// `set_task_counter(counter)`: `query` and `compute` as `MasterServices` numbers
/// them (`task-<request hash>-<counter + 1>`), `train` as its admission names it
/// (`train-<request hash>-<nonce>`).
pub fn attempt_task_id(spec: &TaskSpec, nonce: u64, counter: u64) -> Result<String, DeployError> {
    if let TaskSpec::Train(s) = spec {
        return Ok(train_task_id(s, nonce)?.to_string());
    }
    let hash = spec.request_hash(nonce)?.to_hex();
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
    let mut epochs = crate::governance::EpochDuties::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        if !cluster.node.metrics().is_leader {
            continue;
        }
        // The Vaults that receive slices: genesis members and every candidate an
        // approved `enterprise_membership` proposal admitted (replicated state).
        let members = cluster.with_state(|s| s.master().governance().members.clone());
        let admitted: Vec<&RemoteEnterprise> = endpoints
            .iter()
            .zip(&config.enterprises)
            .filter(|(r, e)| {
                e.genesis_member || members.contains_key(EnterpriseEndpoint::vault_id(*r))
            })
            .map(|(r, _)| r)
            .collect();
        let vaults = Vaults {
            enterprise: admitted
                .iter()
                .map(|e| *e as &dyn EnterpriseEndpoint)
                .collect(),
            training: admitted
                .iter()
                .map(|e| *e as &dyn TrainingEndpoint)
                .collect(),
        };
        // Governance first: configure at genesis, close the epoch by time or
        // capacity, apply a newly opened epoch to the Vaults (each a no-op unless due).
        if let Err(e) = epochs.run(cluster, config, &vaults.enterprise, || {
            services(cluster, config)
        }) {
            tracing::warn!(error = %e, "epoch duty failed; retrying");
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
        if let Err(e) = process(cluster, config, &mut svc, &vaults, &request_id, &record) {
            tracing::warn!(request = %request_id, error = %e, "attempt interrupted; will retry");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// The enterprise nodes as each class flow reaches them (one client per node).
struct Vaults<'a> {
    enterprise: Vec<&'a dyn EnterpriseEndpoint>,
    training: Vec<&'a dyn TrainingEndpoint>,
}

fn finish(
    cluster: &Cluster,
    request_id: &str,
    status: RequestStatus,
    outcome: Option<TaskOutcome>,
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

/// What this master did with the attempt a failed leader left.
enum TakenOver {
    /// The result was paid for and is delivered now (from the staged copy).
    Delivered(Box<TaskOutcome>),
    /// Completed, but no staged result exists (a leader of an older version).
    CompletedWithoutResult,
    /// Nothing was paid: the attempt is aborted and the request retried.
    Aborted,
}

/// Takes over an attempt a previous leader left unfinished, executing the takeover
/// rule (`symphony_master::takeover::decide`): if the escrow was already paid out
/// (or the task completed), the attempt is completed instead of aborted —
/// settlement `finalized`, task `completed`, delivery recorded, and the outcome
/// rebuilt from the replicated state and the staged result — so a leader crash
/// between payout and `Finish` neither loses the result nor charges twice.
fn take_over(
    cluster: &Cluster,
    svc: &mut MasterServices,
    vaults: &Vaults<'_>,
    spec: &TaskSpec,
    task_id: &str,
    now_ms: u64,
) -> Result<TakenOver, DeployError> {
    let tid = TaskId::new(task_id.to_owned()).map_err(|e| DeployError::Encoding(e.to_string()))?;
    let escrow = EscrowId::new(format!("escrow-{task_id}"))
        .map_err(|e| DeployError::Ledger(e.to_string()))?;
    resume_payout(svc, &tid)?;
    let paid = svc
        .ledger
        .escrow(&escrow)
        .is_some_and(|e| e.payout_id.is_some());
    let staged = cluster.with_state(|s| s.staged_items(task_id));
    let decision = takeover::decide(svc.masters.state(), &tid, paid, staged)
        .map_err(|e| DeployError::Node(NodeError::Refused(e.to_string())))?;
    let completion = match decision {
        Takeover::Abort { reject } => {
            abort_attempt(svc, vaults, spec, task_id, reject)?;
            return Ok(TakenOver::Aborted);
        }
        Takeover::CompletedWithoutResult => return Ok(TakenOver::CompletedWithoutResult),
        Takeover::Complete(c) => c,
    };
    // The payout of the escrow set was made; its remainder goes back to the
    // submitter (the ledger pays and refunds an escrow at most once).
    if let Some(rec) = svc.ledger.escrow(&escrow) {
        if rec.remaining() > 0 {
            svc.ledger
                .refund(&escrow, rec.remaining())
                .map_err(|e| DeployError::Ledger(e.to_string()))?;
        }
    }
    if let Some(finalized) = completion.finalize_settlement {
        svc.masters
            .submit(Command::RecordSettlement {
                task_id: tid.clone(),
                record: finalized,
            })
            .map_err(NodeError::from)?;
    }
    mark_finalized(svc, &tid)?;
    if !completion.settle_rounds.is_empty() {
        // Each round settles in its dispatch epoch for its compute and aggregation
        // fee, priced as the training flow prices it.
        let body = svc
            .masters
            .state()
            .task(&tid)
            .map(|r| r.envelope.body().clone())
            .ok_or_else(|| DeployError::Node(NodeError::Refused(format!("{task_id} unknown"))))?;
        let prices = svc
            .policy
            .resolve(body.epoch_id, body.semantic_version, body.policy_version)
            .map_err(|e| DeployError::Node(NodeError::Refused(e.to_string())))?
            .params
            .prices
            .train;
        for (round, vaults) in &completion.settle_rounds {
            let fee = prices
                .per_round_vault_compute_fee_micro_sym
                .saturating_mul(u64::from(*vaults))
                .saturating_add(prices.per_round_aggregation_fee_micro_sym);
            svc.masters
                .submit(Command::SettleRound {
                    task_id: tid.clone(),
                    round: *round,
                    fee_micro_sym: fee,
                })
                .map_err(NodeError::from)?;
        }
    }
    if completion.advance_to_completed {
        svc.masters
            .submit(Command::Advance {
                task_id: tid.clone(),
                event: TaskEvent::SettlementFinalized,
                reason: None,
            })
            .map_err(NodeError::from)?;
    }
    if let Some(d) = completion.delivery {
        svc.masters
            .submit(Command::RecordDelivery {
                task_id: tid.clone(),
                recipient: d.recipient,
                result_hash: d.result_hash,
                count: d.count,
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
    let state = svc.masters.state();
    let not_completed = || {
        DeployError::Node(NodeError::Refused(format!(
            "{task_id} did not reach completed with a finalized settlement"
        )))
    };
    let outcome = if let Some(a) = cluster.with_state(|s| s.artifacts(task_id).cloned()) {
        let card: serde_json::Value =
            serde_json::from_slice(&a.card).map_err(|e| DeployError::Encoding(e.to_string()))?;
        let outcome = recovered_train_outcome(state, &tid, &card).ok_or_else(not_completed)?;
        // The staged card predates the settlement: fill it in from the state.
        let mut card = card;
        if let Some(s) = card.get_mut("settlement").and_then(|v| v.as_object_mut()) {
            s.insert("state".into(), serde_json::json!(outcome.settlement_state));
            s.insert(
                "fee_total_micro_sym".into(),
                serde_json::json!(outcome.fee_total),
            );
            s.insert(
                "round_settlements".into(),
                serde_json::json!(outcome.round_settlements),
            );
        }
        let card =
            serde_json::to_vec_pretty(&card).map_err(|e| DeployError::Encoding(e.to_string()))?;
        stage_result(
            cluster,
            &tid,
            StagedResult::Model(ModelArtifacts {
                model: a.model,
                card,
            }),
        )?;
        TaskOutcome::Train(Box::new(outcome))
    } else if let Some(table) = cluster.with_state(|s| s.table(task_id).cloned()) {
        TaskOutcome::Compute(
            symphony_node::classes::compute::recovered_compute_outcome(
                state,
                &tid,
                table.groups,
                table.suppressed_groups,
                signatures,
            )
            .ok_or_else(not_completed)?,
        )
    } else {
        let audience = cluster
            .with_state(|s| s.staged(task_id).cloned())
            .ok_or_else(not_completed)?;
        TaskOutcome::Query(
            recovered_outcome(state, &tid, audience, signatures).ok_or_else(not_completed)?,
        )
    };
    tracing::info!(task = %task_id, "completed and delivered the attempt of a failed leader");
    Ok(TakenOver::Delivered(Box::new(outcome)))
}

/// Completes, exactly once, a payout the failed leader started: its `finalizing`
/// certificate is in the replicated settlement store, so the escrow set (paid once
/// by payout id), the epoch payout group, the refund and the credits are finished
/// from there (`complete_payout`, idempotent at every step).
fn resume_payout(svc: &mut MasterServices, tid: &TaskId) -> Result<(), DeployError> {
    let Some(store) = svc.settlements.as_ref() else {
        return Ok(());
    };
    let pending = store
        .row(tid)?
        .is_some_and(|r| r.state == symphony_core::lifecycle::SettlementState::Finalizing);
    if pending {
        let keys = svc.masters.master_keys();
        symphony_node::settlement::complete_payout(
            store,
            &mut *svc.ledger,
            tid,
            &keys,
            &mut |_| {},
        )?;
        tracing::info!(task = %tid, "completed the payout of a failed leader");
    }
    Ok(())
}

/// The replicated settlement row follows the master state to `finalized` once its
/// payout is complete.
fn mark_finalized(svc: &MasterServices, tid: &TaskId) -> Result<(), DeployError> {
    use symphony_core::lifecycle::SettlementState;
    let final_in_state = svc
        .masters
        .state()
        .task(tid)
        .and_then(|t| t.settlement.as_ref())
        .is_some_and(|s| s.state == SettlementState::Finalized);
    let Some(store) = svc.settlements.as_ref() else {
        return Ok(());
    };
    if let Some(mut row) = store.row(tid)? {
        let paid = row.phase == symphony_node::settlement::PayoutPhase::Paid;
        if final_in_state && paid && row.state == SettlementState::Finalizing {
            row.state = SettlementState::Finalized;
            store.put_row(&row)?;
        }
    }
    Ok(())
}

/// Aborts an attempt that did not complete: releases the Vault reservations (a
/// `train` attempt: its session in every Vault and every round's reservation),
/// rejects the task if `reject` (its lifecycle allows it) and refunds what is left
/// in its escrow (a payout already made is never repeated).
fn abort_attempt(
    svc: &mut MasterServices,
    vaults: &Vaults<'_>,
    spec: &TaskSpec,
    task_id: &str,
    reject: bool,
) -> Result<(), DeployError> {
    let tid = TaskId::new(task_id.to_owned()).map_err(|e| DeployError::Encoding(e.to_string()))?;
    let train_rounds = match spec {
        TaskSpec::Train(s) => Some(s.iteration_policy.max_rounds),
        _ => None,
    };
    match train_rounds {
        Some(rounds) => {
            let opened = svc
                .masters
                .state()
                .composite(&tid)
                .map_or(0, |c| c.tree.rounds.len() as u32);
            for e in &vaults.training {
                let _ = e.train_release_unused(&tid, opened);
            }
            // A Vault that restarted lost its session: release each round's
            // reservation by its budget task id (a no-op where none is held).
            for e in &vaults.enterprise {
                for r in 0..rounds {
                    if let Ok(id) = symphony_node::training::vault::round_task_id(&tid, r) {
                        let _ = e.release(&id);
                    }
                }
            }
        }
        None => {
            for e in &vaults.enterprise {
                let _ = e.release(&tid);
            }
        }
    }
    if reject {
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
    if svc.ledger.escrow(&escrow).is_some() {
        // What the closed rounds of a `train` attempt scheduled in their epochs'
        // payout sets is paid (unless the escrow paid out already), the rest refunded.
        let epoch = svc.masters.state().current_epoch();
        symphony_node::settlement::rewards::release_escrow(
            &mut *svc.ledger,
            svc.settlements.as_ref(),
            svc.masters.state(),
            &escrow,
            &tid,
            epoch,
        )
        .map_err(|e| DeployError::Ledger(e.to_string()))?;
    }
    tracing::info!(task = %task_id, "aborted attempt");
    Ok(())
}

/// A 64-bit run seed for a `train` attempt: a function of its task id, so every
/// leader running the attempt uses the same one.
fn run_seed(task_id: &str) -> u64 {
    let d = tagged_hash("scp/deploy/train-run-seed/v1", task_id.as_bytes());
    u64::from_le_bytes([
        d.0[0], d.0[1], d.0[2], d.0[3], d.0[4], d.0[5], d.0[6], d.0[7],
    ])
}

fn status_of(states: &[String]) -> RequestStatus {
    if states.last().map(String::as_str) == Some("completed") {
        RequestStatus::Completed
    } else {
        RequestStatus::Rejected
    }
}

/// The gateway acknowledges a request on its header signature alone; every attempt
/// signature is checked here, once, before the first attempt admits anything.
fn check_attempt_signatures(
    record: &RequestRecord,
    caller_key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<(), String> {
    match caller_key {
        Some(key) => record
            .submission
            .verify_attempts(key, &record.caller)
            .map_err(|e| e.to_string()),
        None => Err(format!("unknown caller {:?}", record.caller)),
    }
}

fn process(
    cluster: &Cluster,
    config: &MasterConfig,
    svc: &mut MasterServices,
    vaults: &Vaults<'_>,
    request_id: &str,
    record: &RequestRecord,
) -> Result<(), DeployError> {
    if let Some(previous) = record.attempts.last() {
        let now = config.fixed_now_ms.unwrap_or_else(now_ms);
        match take_over(cluster, svc, vaults, &record.submission.spec, previous, now)? {
            TakenOver::Delivered(outcome) => {
                return finish(
                    cluster,
                    request_id,
                    RequestStatus::Completed,
                    Some(*outcome),
                    None,
                )
            }
            TakenOver::CompletedWithoutResult => {
                return finish(
                    cluster,
                    request_id,
                    RequestStatus::Completed,
                    None,
                    Some("completed before a leader change; no staged result to deliver".into()),
                )
            }
            TakenOver::Aborted => {}
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
    let caller_key = config
        .callers
        .iter()
        .find(|c| c.actor == record.caller)
        .and_then(|c| parse_public_key("callers[].public_key", &c.public_key).ok());
    if attempt == 0 {
        if let Err(e) = check_attempt_signatures(record, caller_key.as_ref()) {
            tracing::info!(request = %request_id, error = %e, "submission refused before admission");
            return finish(
                cluster,
                request_id,
                RequestStatus::Rejected,
                None,
                Some(format!("admission refused, nothing charged: {e}")),
            );
        }
    }
    let public_key = caller_key.map(|k| k.to_bytes()).unwrap_or_default();
    let nonce = attempt_nonce(record.submission.nonce, attempt);
    let counter = record.seq * MAX_ATTEMPTS as u64 + attempt as u64;
    let spec = &record.submission.spec;
    let task_id = attempt_task_id(spec, nonce, counter)?;
    let (response, _) = cluster.write_blocking(&DeployCommand::Start {
        request_id: request_id.to_owned(),
        task_id: task_id.clone(),
    })?;
    if let DeployResponse::Queue(Err(e)) = response {
        return Err(DeployError::Node(NodeError::Refused(e)));
    }
    let signature = hex::decode(sig_hex).unwrap_or_default();
    svc.set_task_counter(counter);
    svc.now_ms = config.fixed_now_ms.unwrap_or_else(now_ms);
    let mut obs = LogObserver {
        request: request_id.to_owned(),
        fault_marker: config.data_dir.join("fault-injected"),
    };
    let result: Result<TaskOutcome, NodeError> = match spec {
        TaskSpec::Query(campaign) => {
            let request = SignedRequest {
                spec: campaign.clone(),
                nonce,
                public_key,
                signature,
            };
            svc.run_campaign(&vaults.enterprise, &request, &mut obs)
                .map(TaskOutcome::Query)
        }
        TaskSpec::Compute(_) => {
            let request = SignedTask {
                spec: spec.clone(),
                nonce,
                public_key,
                signature,
            };
            svc.run_compute(&vaults.enterprise, &request, &mut obs)
                .map(TaskOutcome::Compute)
        }
        TaskSpec::Train(train) => {
            let request = TrainingRequest {
                spec: train.clone(),
                nonce,
                public_key,
                signature,
            };
            let registry = config.data_dir.join("registry");
            let mut stage = ReplicatedArtifactStage(cluster.clone());
            run_training_with(
                svc,
                &vaults.training,
                &request,
                &registry,
                run_seed(&task_id),
                &mut obs,
                &mut NoTap,
                Some(&mut stage),
            )
            .and_then(|outcome| {
                restage_final_card(cluster, &outcome)?;
                Ok(TaskOutcome::Train(Box::new(outcome)))
            })
        }
    };
    match result {
        Ok(outcome) => {
            let (states, produced) = match &outcome {
                TaskOutcome::Query(o) => (o.states.clone(), o.task_id.clone()),
                TaskOutcome::Compute(o) => (o.states.clone(), o.task_id.clone()),
                TaskOutcome::Train(o) => (o.states.clone(), o.task_id.clone()),
            };
            if produced != task_id {
                tracing::warn!(request = %request_id, started = %task_id, produced = %produced,
                    "the class flow named the task differently from its Start record");
            }
            let status = status_of(&states);
            tracing::info!(request = %request_id, task = %produced, ?status, "task finished");
            finish(cluster, request_id, status, Some(outcome), None)
        }
        // Lost quorum or leadership mid-flow: the next leader (or this one) aborts
        // the attempt and retries.
        Err(e @ NodeError::Replication(_)) => Err(e.into()),
        Err(NodeError::Ledger(msg)) if msg.contains("replication") => Err(DeployError::Ledger(msg)),
        Err(e) => {
            // A master that stalled mid-attempt (or lost leadership) and carries on
            // must not decide for an attempt another leader already took over: the
            // Vaults refuse it, and rejecting the request here would end the
            // request while the new leader's attempt runs.
            if !still_current_attempt(cluster, request_id, &task_id) {
                return Err(DeployError::Node(NodeError::Refused(format!(
                    "attempt {task_id} was superseded ({e}); leaving it to the leader"
                ))));
            }
            let reject = svc
                .masters
                .state()
                .task(
                    &TaskId::new(task_id.clone())
                        .map_err(|e| DeployError::Encoding(e.to_string()))?,
                )
                .is_some_and(|r| !r.state.is_terminal());
            abort_attempt(svc, vaults, spec, &task_id, reject)?;
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

/// Whether this master still leads (a linearizable read barrier) and `task_id` is
/// still the request's latest attempt, not yet final.
fn still_current_attempt(cluster: &Cluster, request_id: &str, task_id: &str) -> bool {
    let barrier = cluster
        .runtime()
        .block_on(cluster.node.read_barrier(Duration::from_secs(5)));
    barrier.is_ok()
        && cluster.with_state(|s| {
            s.request(request_id).is_some_and(|r| {
                !r.status.is_final() && r.attempts.last().map(String::as_str) == Some(task_id)
            })
        })
}

/// After delivery, replaces the staged model card (written before settlement) with
/// the delivered one, which carries the settlement.
fn restage_final_card(
    cluster: &Cluster,
    outcome: &symphony_node::training::TrainOutcome,
) -> Result<(), NodeError> {
    let (Some(model), Some(card)) = (&outcome.model_path, &outcome.model_card_path) else {
        return Ok(()); // not accepted: nothing was delivered
    };
    let io = |e: std::io::Error| NodeError::Io(e.to_string());
    let task =
        TaskId::new(outcome.task_id.clone()).map_err(|e| NodeError::Refused(e.to_string()))?;
    stage_result(
        cluster,
        &task,
        StagedResult::Model(ModelArtifacts {
            model: std::fs::read(model).map_err(io)?,
            card: std::fs::read(card).map_err(io)?,
        }),
    )
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
