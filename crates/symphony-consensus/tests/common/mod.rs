//! Test harness: a counting state machine and a 3-master cluster on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use symphony_consensus::{
    ConsensusConfig, ConsensusNode, MasterKeys, MemberConfig, NodeId, ReplicatedStateMachine,
    RestoreError, StateRoot, Tuning,
};
use tempfile::TempDir;

/// Counts how many times each 8-byte id was applied; the root is a hash chain over all
/// applied commands, so equal roots mean equal histories.
#[derive(Debug, Default, Clone)]
pub struct CounterSet {
    pub counts: BTreeMap<u64, u32>,
    pub root: StateRoot,
}

pub fn command(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

impl ReplicatedStateMachine for CounterSet {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(self.root);
        hasher.update(command);
        self.root = hasher.finalize().into();
        let Ok(id) = <[u8; 8]>::try_from(command) else {
            return b"bad command".to_vec();
        };
        let count = self.counts.entry(u64::from_be_bytes(id)).or_default();
        *count += 1;
        count.to_be_bytes().to_vec()
    }

    fn state_root(&self) -> StateRoot {
        self.root
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = self.root.to_vec();
        for (id, count) in &self.counts {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if snapshot.len() < 32 || !(snapshot.len() - 32).is_multiple_of(12) {
            return Err(RestoreError::new("bad snapshot length"));
        }
        let mut counts = BTreeMap::new();
        for row in snapshot[32..].chunks_exact(12) {
            let id = u64::from_be_bytes(row[..8].try_into().unwrap());
            let count = u32::from_be_bytes(row[8..].try_into().unwrap());
            counts.insert(id, count);
        }
        self.root.copy_from_slice(&snapshot[..32]);
        self.counts = counts;
        Ok(())
    }
}

pub type Node = Arc<ConsensusNode<CounterSet>>;

pub struct Cluster {
    pub dir: TempDir,
    pub configs: BTreeMap<NodeId, ConsensusConfig>,
    pub nodes: BTreeMap<NodeId, Option<Node>>,
    pub keys: MasterKeys,
    pub signing_keys: BTreeMap<NodeId, SigningKey>,
}

pub const CLUSTER_ID: &str = "symphony-test";

impl Cluster {
    /// Three masters on 127.0.0.1 (ports from binding port 0), initialized, with a leader.
    pub async fn start(tuning: Tuning) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        let mut signing_keys = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let key = SigningKey::generate(&mut OsRng);
            members.insert(
                id,
                MemberConfig {
                    addr,
                    verifying_key: key.verifying_key(),
                },
            );
            listeners.insert(id, listener);
            signing_keys.insert(id, key);
        }
        let keys = MasterKeys::new(
            CLUSTER_ID,
            members
                .iter()
                .map(|(id, m)| (*id, m.verifying_key))
                .collect(),
        );
        let mut configs = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for (id, listener) in listeners {
            let config = ConsensusConfig {
                cluster_id: CLUSTER_ID.into(),
                node_id: id,
                listen_addr: members[&id].addr,
                members: members.clone(),
                data_dir: dir.path().join(format!("node-{id}")),
                signing_key: signing_keys[&id].clone(),
                transport: Default::default(),
                tuning: tuning.clone(),
            };
            let node =
                ConsensusNode::start_with_listener(config.clone(), listener, CounterSet::default())
                    .await
                    .unwrap();
            configs.insert(id, config);
            nodes.insert(id, Some(Arc::new(node)));
        }
        let cluster = Self {
            dir,
            configs,
            nodes,
            keys,
            signing_keys,
        };
        cluster.node(1).initialize_cluster().await.unwrap();
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    pub fn node(&self, id: NodeId) -> Node {
        self.nodes[&id].clone().expect("node is running")
    }

    pub fn running(&self) -> Vec<Node> {
        self.nodes.values().flatten().cloned().collect()
    }

    /// A leader agreed on by every running node.
    pub async fn wait_leader(&self, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<NodeId>> =
                self.running().iter().map(|n| n.metrics().leader).collect();
            if let Some(Some(leader)) = leaders.first() {
                let alive = self.nodes.get(leader).is_some_and(|n| n.is_some());
                if alive && leaders.iter().all(|l| *l == Some(*leader)) {
                    return *leader;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap().take().expect("running");
        node.shutdown().await.unwrap();
    }

    pub async fn restart(&mut self, id: NodeId) {
        let node = ConsensusNode::start(self.configs[&id].clone(), CounterSet::default())
            .await
            .unwrap();
        self.nodes.insert(id, Some(Arc::new(node)));
    }

    /// Waits until all running nodes applied the same index with the same root.
    pub async fn wait_converged(&self, timeout: Duration) -> (u64, StateRoot) {
        let deadline = Instant::now() + timeout;
        loop {
            let roots: Vec<(Option<u64>, StateRoot)> =
                self.running().iter().map(|n| n.state_root()).collect();
            let first = roots[0];
            if let Some(index) = first.0 {
                if roots.iter().all(|r| *r == first) {
                    return (index, first.1);
                }
            }
            assert!(
                Instant::now() < deadline,
                "state roots did not converge: {roots:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            if self.nodes[&id].is_some() {
                self.stop(id).await;
            }
        }
    }
}
