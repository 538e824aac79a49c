//! The master replicated state machine behind one narrow trait.
//!
//! [`Replicator::submit`] appends a command to the replicated log; it returns once
//! the command is applied and a **commit certificate** over the new state root is
//! final (2 of 3 master signatures). The embedded default, [`LocalReplicator`], keeps
//! three replicas in one process and applies every command to each in log order;
//! the deployed network replaces it with openraft (crate `symphony-consensus`)
//! without changing callers.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use symphony_core::encoding::{tagged_hash, Digest};
use symphony_master::{Command, Event, MasterError, MasterState};

/// Signatures needed for finality.
pub const FINALITY_THRESHOLD: usize = 2;

/// A commit certificate: masters' signatures over `(log_index, state_root)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// Position in the replicated log.
    pub log_index: u64,
    /// State root after applying the entry.
    pub state_root: Digest,
    /// Master index → ed25519 signature bytes.
    pub signatures: BTreeMap<u8, Vec<u8>>,
    /// Set when the certificate comes from the deployed consensus
    /// (`symphony-consensus`): the masters then signed that crate's statement
    /// `(cluster_id, log_index, state_root)` instead of [`CommitCertificate::message`].
    #[serde(default)]
    pub cluster_id: Option<String>,
}

impl CommitCertificate {
    /// The signed message.
    pub fn message(log_index: u64, state_root: &Digest) -> Digest {
        let mut bytes = log_index.to_le_bytes().to_vec();
        bytes.extend_from_slice(&state_root.0);
        tagged_hash("scp/commit-certificate/v1", &bytes)
    }

    /// The bytes each master signed: [`CommitCertificate::message`], or the
    /// consensus statement when `cluster_id` is set.
    pub fn signed_bytes(&self) -> Vec<u8> {
        match &self.cluster_id {
            None => Self::message(self.log_index, &self.state_root).0.to_vec(),
            Some(cluster_id) => {
                // Same encoding as `symphony_consensus::certificate::statement_bytes`.
                let mut bytes = b"symphony-consensus/commit-statement/v1".to_vec();
                bytes.extend_from_slice(&(cluster_id.len() as u64).to_be_bytes());
                bytes.extend_from_slice(cluster_id.as_bytes());
                bytes.extend_from_slice(&self.log_index.to_be_bytes());
                bytes.extend_from_slice(&self.state_root.0);
                bytes
            }
        }
    }

    /// Number of valid signatures from `masters` (index → public key).
    pub fn valid_signatures(&self, masters: &[VerifyingKey]) -> usize {
        let msg = self.signed_bytes();
        self.signatures
            .iter()
            .filter(|(i, sig)| {
                let Some(key) = masters.get(usize::from(**i)) else {
                    return false;
                };
                let Ok(sig) = Signature::from_slice(sig) else {
                    return false;
                };
                key.verify(&msg, &sig).is_ok()
            })
            .count()
    }

    /// Final: at least [`FINALITY_THRESHOLD`] valid signatures.
    pub fn is_final(&self, masters: &[VerifyingKey]) -> bool {
        self.valid_signatures(masters) >= FINALITY_THRESHOLD
    }
}

/// A committed command.
#[derive(Clone, Debug)]
pub struct Committed {
    /// Events the state machine produced.
    pub events: Vec<Event>,
    /// The final certificate.
    pub certificate: CommitCertificate,
}

/// Replication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The state machine refused the command (nothing was appended).
    #[error("master state machine refused the command: {0}")]
    Refused(#[from] MasterError),
    /// Fewer than two masters are available: no finality, nothing admitted.
    #[error("only {available} of 3 masters are available; 2 are needed for finality")]
    NoQuorum {
        /// Masters up.
        available: usize,
    },
    /// Replicas diverged (a bug, or a Byzantine master).
    #[error("replica state roots diverged at log index {0}")]
    Diverged(u64),
    /// Encoding failure.
    #[error("encoding: {0}")]
    Encoding(String),
}

/// The replicated master state machine.
pub trait Replicator {
    /// Appends, applies and certifies one command.
    fn submit(&mut self, command: Command) -> Result<Committed, ReplicationError>;
    /// The (leader's) current state.
    fn state(&self) -> &MasterState;
    /// The masters' public keys, by index.
    fn master_keys(&self) -> Vec<VerifyingKey>;
    /// Master `index` signs `msg` (governance proposals and votes), if its key is
    /// held here: a deployed master holds only its own.
    fn sign_as(&self, index: u8, msg: &[u8]) -> Option<ed25519_dalek::Signature> {
        let _ = (index, msg);
        None
    }
}

/// Three in-process replicas with their own signing keys.
pub struct LocalReplicator {
    replicas: Vec<MasterState>,
    keys: Vec<SigningKey>,
    up: Vec<bool>,
    log: Vec<Command>,
}

impl LocalReplicator {
    /// Three replicas with keys derived from `seed`.
    pub fn new(seed: u64) -> Self {
        let keys = (0..3u8)
            .map(|i| {
                let d = tagged_hash("scp/master-key", &[&seed.to_le_bytes()[..], &[i]].concat());
                SigningKey::from_bytes(&d.0)
            })
            .collect();
        LocalReplicator {
            replicas: vec![MasterState::new(); 3],
            keys,
            up: vec![true; 3],
            log: Vec::new(),
        }
    }

    /// Takes a master down or up; a master coming up catches up from the log.
    pub fn set_up(&mut self, index: usize, up: bool) -> Result<(), ReplicationError> {
        if index >= 3 {
            return Ok(());
        }
        if up && !self.up[index] {
            let mut state = MasterState::new();
            for c in &self.log {
                state.apply(c)?;
            }
            self.replicas[index] = state;
        }
        self.up[index] = up;
        Ok(())
    }

    /// The replicated log so far.
    pub fn log(&self) -> &[Command] {
        &self.log
    }

    /// State roots of the masters that are up.
    pub fn state_roots(&self) -> Result<Vec<Digest>, ReplicationError> {
        self.replicas
            .iter()
            .zip(&self.up)
            .filter(|(_, up)| **up)
            .map(|(r, _)| {
                r.state_root()
                    .map_err(|e| ReplicationError::Encoding(e.to_string()))
            })
            .collect()
    }
}

impl Replicator for LocalReplicator {
    fn submit(&mut self, command: Command) -> Result<Committed, ReplicationError> {
        let available = self.up.iter().filter(|u| **u).count();
        if available < FINALITY_THRESHOLD {
            return Err(ReplicationError::NoQuorum { available });
        }
        let leader = self.up.iter().position(|u| *u).unwrap_or(0);
        // Validate on the leader first: a refused command is never appended.
        let mut probe = self.replicas[leader].clone();
        let events = probe.apply(&command)?;
        let log_index = self.log.len() as u64;
        let mut certificate = CommitCertificate {
            log_index,
            state_root: Digest::default(),
            signatures: BTreeMap::new(),
            cluster_id: None,
        };
        let mut root: Option<Digest> = None;
        for i in 0..3 {
            if !self.up[i] {
                continue;
            }
            let replica_events = self.replicas[i].apply(&command)?;
            let r = self.replicas[i]
                .state_root()
                .map_err(|e| ReplicationError::Encoding(e.to_string()))?;
            if replica_events != events || root.is_some_and(|x| x != r) {
                return Err(ReplicationError::Diverged(log_index));
            }
            root = Some(r);
            let msg = CommitCertificate::message(log_index, &r);
            let sig = self.keys[i].sign(&msg.0);
            certificate
                .signatures
                .insert(i as u8, sig.to_bytes().to_vec());
        }
        certificate.state_root = root.unwrap_or_default();
        self.log.push(command);
        Ok(Committed {
            events,
            certificate,
        })
    }

    fn state(&self) -> &MasterState {
        let leader = self.up.iter().position(|u| *u).unwrap_or(0);
        &self.replicas[leader]
    }

    fn master_keys(&self) -> Vec<VerifyingKey> {
        self.keys.iter().map(|k| k.verifying_key()).collect()
    }

    fn sign_as(&self, index: u8, msg: &[u8]) -> Option<ed25519_dalek::Signature> {
        let i = usize::from(index);
        (i < self.keys.len() && self.up[i]).then(|| self.keys[i].sign(msg))
    }
}
