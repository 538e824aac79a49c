//! Three masters in one process, talking openraft over mutual TLS on 127.0.0.1: the
//! consensus the embedded demo (`symphony demo luckin`) and the admission benchmark
//! run on. Same `ConsensusNode`, same redb log with fsync, same [`DeployState`] and
//! [`ConsensusReplicator`] as a deployed master; only the processes are merged.
//!
//! Listeners are bound before the nodes start (port 0, then handed to the node), so
//! there is no window in which another process can take a chosen port.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use symphony_consensus::transport::{MutualTls, TransportSecurity};
use symphony_consensus::{ConsensusConfig, ConsensusNode, MemberConfig, NodeId, Tuning};
use symphony_core::encoding::tagged_hash;
use symphony_ledger::{Genesis, LedgerConfig};

use crate::replicator::{Cluster, ConsensusReplicator};
use crate::state::DeployState;
use crate::tls::{generate_ca, issue_node_cert, TlsMaterial};
use crate::DeployError;

/// A started node.
pub type Node = Arc<ConsensusNode<DeployState>>;

/// How a loopback cluster is built.
#[derive(Clone, Debug)]
pub struct LoopbackOptions {
    /// Cluster id in every commit statement.
    pub cluster_id: String,
    /// Master signing keys are derived from this seed (`None`: fresh random keys).
    pub key_seed: Option<u64>,
    /// Mutual TLS between the masters (`false`: plaintext TCP, for measurements).
    pub mutual_tls: bool,
    /// Consensus tuning.
    pub tuning: Tuning,
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        Self {
            cluster_id: "loopback".into(),
            key_seed: None,
            mutual_tls: true,
            tuning: Tuning::default(),
        }
    }
}

/// The genesis the loopback masters start from: an empty replicated ledger (the
/// embedded network keeps its own settlement ledger).
pub fn empty_genesis() -> Genesis {
    Genesis {
        config: LedgerConfig {
            unbonding_period_epochs: 2,
            min_stake_master: 1,
            min_stake_enterprise: 1,
            min_stake_producer: 1,
        },
        allocations: Vec::new(),
    }
}

/// The signing key of master `id` for `seed` (deterministic, so a replayed demo
/// signs the same certificates).
pub fn master_key(seed: u64, id: NodeId) -> SigningKey {
    let d = tagged_hash(
        "scp/loopback-master-key",
        &[&seed.to_le_bytes()[..], &id.to_le_bytes()[..]].concat(),
    );
    SigningKey::from_bytes(&d.0)
}

/// A node's `(last applied log index, state root)`.
pub type AppliedRoot = (Option<u64>, [u8; 32]);

/// Started masters and their commit keys, by node id.
pub type Started = (Vec<Node>, Vec<(NodeId, VerifyingKey)>);

/// Starts masters 1..=3 under `dir`, initializes the cluster and waits for a leader.
/// Must run inside a multi-thread tokio runtime.
pub async fn start_nodes(
    dir: &Path,
    genesis: &Genesis,
    options: &LoopbackOptions,
) -> Result<Started, DeployError> {
    std::fs::create_dir_all(dir)?;
    let (ca_cert, ca_key) = generate_ca()?;
    std::fs::write(dir.join("ca.pem"), ca_cert)?;
    let mut members = BTreeMap::new();
    let mut keys = Vec::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let key = match options.key_seed {
            Some(seed) => master_key(seed, id),
            None => SigningKey::generate(&mut rand::rngs::OsRng),
        };
        members.insert(
            id,
            MemberConfig {
                addr: listener.local_addr()?,
                verifying_key: key.verifying_key(),
            },
        );
        keys.push((id, key));
        listeners.push(listener);
    }
    let commit_keys = members
        .iter()
        .map(|(id, m)| (*id, m.verifying_key))
        .collect();
    let mut nodes = Vec::new();
    for ((id, key), listener) in keys.into_iter().zip(listeners) {
        let transport = if options.mutual_tls {
            let (cert, pkey) = issue_node_cert(&ca_key, &format!("master-{id}"))?;
            std::fs::write(dir.join(format!("m{id}.pem")), cert)?;
            std::fs::write(dir.join(format!("m{id}.key")), pkey)?;
            let tls = TlsMaterial::load(
                &dir.join("ca.pem"),
                &dir.join(format!("m{id}.pem")),
                &dir.join(format!("m{id}.key")),
            )?;
            TransportSecurity::MutualTls(MutualTls {
                client: tls.mutual_client()?,
                server: tls.mutual_server()?,
            })
        } else {
            TransportSecurity::Plaintext
        };
        let config = ConsensusConfig {
            cluster_id: options.cluster_id.clone(),
            node_id: id,
            listen_addr: listener.local_addr()?,
            members: members.clone(),
            data_dir: dir.join(format!("m{id}")),
            signing_key: key,
            transport,
            tuning: options.tuning.clone(),
        };
        let state =
            DeployState::new(genesis.clone()).map_err(|e| DeployError::Ledger(e.to_string()))?;
        nodes.push(Arc::new(
            ConsensusNode::start_with_listener(config, listener, state).await?,
        ));
    }
    nodes[0].initialize_cluster().await?;
    nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
    Ok((nodes, commit_keys))
}

/// The current leader's id, as any node knows it.
pub fn leader_of(nodes: &[Node]) -> Option<NodeId> {
    nodes.iter().find_map(|n| n.metrics().leader)
}

/// A loopback cluster with its own runtime, for synchronous callers (the embedded
/// network's `MasterServices` is synchronous).
pub struct LoopbackCluster {
    nodes: Vec<Node>,
    members: Vec<(NodeId, VerifyingKey)>,
    runtime: tokio::runtime::Runtime,
}

impl LoopbackCluster {
    /// Starts three masters under `dir`.
    pub fn start(dir: &Path, options: &LoopbackOptions) -> Result<Self, DeployError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loopback-masters")
            .enable_all()
            .build()?;
        let (nodes, members) = runtime.block_on(start_nodes(dir, &empty_genesis(), options))?;
        Ok(Self {
            nodes,
            members,
            runtime,
        })
    }

    /// The nodes, master 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A handle on the current leader (waits up to 10 s for one).
    pub fn leader(&self) -> Result<Cluster, DeployError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            if let Some(id) = leader_of(&self.nodes) {
                break id;
            }
            if Instant::now() > deadline {
                return Err(DeployError::Consensus(
                    symphony_consensus::ConsensusError::Unavailable {
                        timeout_ms: 10_000,
                        leader: None,
                    },
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let node = self
            .nodes
            .iter()
            .find(|n| n.metrics().node_id == id)
            .cloned()
            .unwrap_or_else(|| self.nodes[0].clone());
        Ok(Cluster::new(
            node,
            self.runtime.handle().clone(),
            self.members.clone(),
        ))
    }

    /// A `Replicator` for `MasterServices`, writing through the leader.
    pub fn replicator(&self) -> Result<ConsensusReplicator, DeployError> {
        Ok(ConsensusReplicator::new(self.leader()?))
    }

    /// Waits until every node applied the leader's last entry, then returns each
    /// node's `(applied log index, state root)`.
    pub fn converged_roots(&self, timeout: Duration) -> Result<Vec<AppliedRoot>, DeployError> {
        let deadline = Instant::now() + timeout;
        loop {
            let roots: Vec<_> = self.nodes.iter().map(|n| n.state_root()).collect();
            if roots.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
                return Ok(roots);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops every node.
    pub fn shutdown(self) -> Result<(), DeployError> {
        self.runtime.block_on(async {
            for n in &self.nodes {
                n.shutdown().await?;
            }
            Ok::<_, DeployError>(())
        })
    }
}
