//! The node-side adapters over the consensus cluster: [`ConsensusReplicator`]
//! (`symphony_node::replication::Replicator`) and [`ReplicatedLedger`]
//! (`SettlementLedger`), so that `MasterServices` runs unchanged on the leader.
//!
//! Both are synchronous (the campaign flow is), and are called from the leader's
//! worker thread, never from a runtime thread: they `block_on` the consensus write.
//! A command the local state refuses is refused before it is proposed (as with the
//! embedded replicator: a refused command is never appended).

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use symphony_consensus::{ConsensusError, ConsensusNode, NodeId};
use symphony_core::encoding::Digest;
use symphony_ledger::{
    AccountId, EscrowId, EscrowRecord, LedgerConfig, LedgerError, LedgerEvent, MemoryLedger,
    Outcome, ReconcileError, ReconcileReport, SettlementLedger, StakeRecord, StakeTier,
};
use symphony_master::{Command, MasterState};
use symphony_node::replication::{CommitCertificate, Committed, ReplicationError, Replicator};
use symphony_node::settlement::{ReplicatedSettlements, SettlementTables, StoreWrite};
use symphony_node::NodeError;

use crate::state::{DeployCommand, DeployResponse, DeployState};
use crate::DeployError;

/// A handle on the local master's consensus node, usable from sync and async code.
#[derive(Clone)]
pub struct Cluster {
    /// The local replica.
    pub node: Arc<ConsensusNode<DeployState>>,
    rt: tokio::runtime::Handle,
    /// Member ids in key order (index in `keys` = position here).
    ids: Vec<NodeId>,
    keys: Vec<VerifyingKey>,
}

/// How long a writer waits for its own entry to be applied locally.
const APPLY_WAIT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Wraps a started node; `members` are all masters' `(id, key)`.
    pub fn new(
        node: Arc<ConsensusNode<DeployState>>,
        rt: tokio::runtime::Handle,
        members: Vec<(NodeId, VerifyingKey)>,
    ) -> Self {
        let (ids, keys) = members.into_iter().unzip();
        Self {
            node,
            rt,
            ids,
            keys,
        }
    }

    /// Replicates one command; returns once it is final and applied locally.
    pub async fn write(
        &self,
        command: &DeployCommand,
    ) -> Result<(DeployResponse, CommitCertificate), DeployError> {
        let bytes = bcs::to_bytes(command).map_err(|e| DeployError::Encoding(e.to_string()))?;
        let (response, cert) = self.node.client_write(bytes).await?;
        self.node
            .wait_for_applied(cert.log_index, APPLY_WAIT)
            .await?;
        let response: DeployResponse =
            bcs::from_bytes(&response).map_err(|e| DeployError::Encoding(e.to_string()))?;
        let signatures = cert
            .signatures
            .iter()
            .filter_map(|(id, sig)| {
                let index = self.ids.iter().position(|i| i == id)?;
                Some((u8::try_from(index).ok()?, sig.to_bytes().to_vec()))
            })
            .collect();
        let certificate = CommitCertificate {
            log_index: cert.log_index,
            state_root: Digest(cert.state_root),
            signatures,
            cluster_id: Some(cert.cluster_id),
        };
        Ok((response, certificate))
    }

    /// [`write`](Self::write) from a non-runtime thread.
    pub fn write_blocking(
        &self,
        command: &DeployCommand,
    ) -> Result<(DeployResponse, CommitCertificate), DeployError> {
        self.rt.block_on(self.write(command))
    }

    /// Runs `f` on the local replica's state.
    pub fn with_state<R>(&self, f: impl FnOnce(&DeployState) -> R) -> R {
        self.node.with_state(f)
    }

    /// The runtime the node runs on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// The masters' commit keys, by certificate index.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }
}

fn replication_error(e: DeployError) -> ReplicationError {
    match e {
        DeployError::Consensus(ConsensusError::Unavailable { .. }) => {
            ReplicationError::NoQuorum { available: 1 }
        }
        other => ReplicationError::Encoding(other.to_string()),
    }
}

/// `Replicator` over the consensus cluster, for `MasterServices` on the leader.
pub struct ConsensusReplicator {
    cluster: Cluster,
    cache: MasterState,
}

impl ConsensusReplicator {
    /// A replicator whose view starts at the local replica's current state.
    pub fn new(cluster: Cluster) -> Self {
        let cache = cluster.with_state(|s| s.master().clone());
        Self { cluster, cache }
    }
}

impl Replicator for ConsensusReplicator {
    fn submit(&mut self, command: Command) -> Result<Committed, ReplicationError> {
        self.cache = self.cluster.with_state(|s| s.master().clone());
        // Validate first: a refused command is never appended.
        let mut probe = self.cache.clone();
        probe.apply(&command)?;
        let (response, certificate) = self
            .cluster
            .write_blocking(&DeployCommand::Master(command))
            .map_err(replication_error)?;
        self.cache = self.cluster.with_state(|s| s.master().clone());
        match response {
            DeployResponse::Master(Ok(events)) => Ok(Committed {
                events,
                certificate,
            }),
            DeployResponse::Master(Err(e)) => Err(ReplicationError::Encoding(format!(
                "refused after replication (state unchanged): {e}"
            ))),
            other => Err(ReplicationError::Encoding(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    fn state(&self) -> &MasterState {
        &self.cache
    }

    fn master_keys(&self) -> Vec<VerifyingKey> {
        self.cluster.keys().to_vec()
    }
}

/// `SettlementLedger` whose commands go through the replicated log.
pub struct ReplicatedLedger {
    cluster: Cluster,
}

impl ReplicatedLedger {
    /// A ledger over the cluster's replicated ledger.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn read<R>(&self, f: impl FnOnce(&MemoryLedger) -> R) -> R {
        self.cluster.with_state(|s| f(s.ledger()))
    }
}

impl SettlementLedger for ReplicatedLedger {
    fn execute(&mut self, command: symphony_ledger::Command) -> Result<Outcome, LedgerError> {
        // Typed refusals come from a local probe; nothing refused is proposed.
        let mut probe = self.read(|l| l.clone());
        probe.execute(command.clone())?;
        let (response, _) = self
            .cluster
            .write_blocking(&DeployCommand::Ledger(command))
            .map_err(|e| LedgerError::Storage(format!("replication: {e}")))?;
        match response {
            DeployResponse::Ledger(Ok((first_seq, events, already_applied))) => Ok(Outcome {
                first_seq,
                events,
                already_applied,
            }),
            DeployResponse::Ledger(Err(e)) => Err(LedgerError::Storage(format!(
                "refused after replication: {e}"
            ))),
            other => Err(LedgerError::Storage(format!(
                "unexpected response {other:?}"
            ))),
        }
    }
    fn config(&self) -> LedgerConfig {
        self.read(|l| l.config())
    }
    fn current_epoch(&self) -> u64 {
        self.read(|l| l.current_epoch())
    }
    fn balance(&self, account: &AccountId) -> u64 {
        self.read(|l| l.balance(account))
    }
    fn escrow(&self, escrow_id: &EscrowId) -> Option<EscrowRecord> {
        self.read(|l| l.escrow(escrow_id))
    }
    fn stake_record(&self, actor: &AccountId) -> Option<StakeRecord> {
        self.read(|l| l.stake_record(actor))
    }
    fn is_staked(&self, actor: &AccountId, tier: StakeTier) -> bool {
        self.read(|l| l.is_staked(actor, tier))
    }
    fn total_supply(&self) -> u128 {
        self.read(|l| l.total_supply())
    }
    fn distribution(
        &self,
        distribution_id: &symphony_ledger::DistributionId,
    ) -> Option<symphony_ledger::DistributionRecord> {
        self.read(|l| l.distribution(distribution_id))
    }
    fn distribution_claim(
        &self,
        distribution_id: &symphony_ledger::DistributionId,
        index: u64,
    ) -> Option<symphony_ledger::ClaimRecord> {
        self.read(|l| l.distribution_claim(distribution_id, index))
    }
    fn events(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, LedgerEvent)>, LedgerError> {
        self.read(|l| l.events(from_seq, limit))
    }
    fn reconcile(&self) -> Result<ReconcileReport, ReconcileError> {
        self.read(|l| l.reconcile())
    }
}

/// The settlement plane's store in the replicated state
/// (`symphony_node::settlement::SettlementStore::replicated`): each write is a
/// [`DeployCommand::Settlement`] committed through consensus, so rows, per-epoch
/// payout groups, credits and composite links survive the leader.
pub struct ReplicatedSettlementStore {
    cluster: Cluster,
}

impl ReplicatedSettlementStore {
    /// A store over the cluster's replicated settlement tables.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }
}

impl ReplicatedSettlements for ReplicatedSettlementStore {
    fn write(&self, write: StoreWrite) -> Result<(), NodeError> {
        // Refused locally first: a refused write is never proposed.
        self.cluster.with_state(|s| {
            let mut probe = SettlementTables::default();
            if let StoreWrite::PutRow(row) = &write {
                if let Some(old) = s.settlement().settlements.get(row.task_id.as_str()) {
                    probe
                        .settlements
                        .insert(row.task_id.to_string(), old.clone());
                }
            }
            if let StoreWrite::AppendEpochPayout(set) = &write {
                let key = (set.epoch_id, set.payout_id.to_string());
                if let Some(old) = s.settlement().epoch_payouts.get(&key) {
                    probe.epoch_payouts.insert(key, old.clone());
                }
            }
            if let StoreWrite::PutDistribution(d) = &write {
                if let Some(old) = s.settlement().distributions.get(&d.distribution_id) {
                    probe
                        .distributions
                        .insert(d.distribution_id.clone(), old.clone());
                }
            }
            if let StoreWrite::PutRowWithCredits(_, credits) = &write {
                for (a, _) in credits {
                    if let Some(c) = s.settlement().credits.get(a) {
                        probe.credits.insert(a.clone(), *c);
                    }
                }
            }
            probe.apply(&write)
        })?;
        let (response, _) = self
            .cluster
            .write_blocking(&DeployCommand::Settlement(write))
            .map_err(|e| NodeError::Replication(ReplicationError::Encoding(e.to_string())))?;
        match response {
            DeployResponse::Queue(Ok(_)) => Ok(()),
            DeployResponse::Queue(Err(e)) => Err(NodeError::Refused(format!(
                "settlement store refused after replication: {e}"
            ))),
            other => Err(NodeError::Refused(format!("unexpected response {other:?}"))),
        }
    }

    fn read(&self, f: &mut dyn FnMut(&SettlementTables)) {
        self.cluster.with_state(|s| f(s.settlement()));
    }
}
