//! Commit certificates: 2-of-3 ed25519 signatures over `(cluster_id, log_index, state_root)`.
//!
//! Every master, after applying the log entry at index `i` (one entry carries a batch of
//! client commands), signs the statement `(cluster_id, i, state_root_after_i)` and
//! broadcasts it to its peers (the `Signatures` RPC of the internal `network` module).
//! Each node runs a [`CertificateCollector`]; a certificate is *final* once a quorum (2 of 3) of distinct
//! known masters signed the same root for the same index. Because any two quorums of 3
//! intersect, two final certificates with different roots for one index imply that the
//! shared master signed both: that pair of statements is [`EquivocationEvidence`].
//!
//! Finality of index `j` covers every earlier index: a master signs `j` only after it
//! applied the committed log prefix `..=j`.
//!
//! Exchange is a best-effort push: a statement that cannot reach a peer (peer down, queue
//! full) is dropped, since that peer signs the same index itself when it applies it, and
//! the leader returns the certificate with a forwarded write. Certificates live in memory
//! (the last 65,536 indices); they are not persisted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::state_machine::StateRoot;
use crate::NodeId;

/// Domain separation tag: a signature over a commit statement is never valid elsewhere.
const STATEMENT_DOMAIN: &[u8] = b"symphony-consensus/commit-statement/v1";

/// How many indices below the final index keep their individual signatures.
const RETAINED_INDICES: u64 = 65_536;

/// The exact bytes a master signs for `(cluster_id, log_index, state_root)`.
pub fn statement_bytes(cluster_id: &str, log_index: u64, state_root: &StateRoot) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STATEMENT_DOMAIN.len() + cluster_id.len() + 48);
    bytes.extend_from_slice(STATEMENT_DOMAIN);
    // Length prefix: no two (cluster_id, index) pairs encode to the same bytes.
    bytes.extend_from_slice(&(cluster_id.len() as u64).to_be_bytes());
    bytes.extend_from_slice(cluster_id.as_bytes());
    bytes.extend_from_slice(&log_index.to_be_bytes());
    bytes.extend_from_slice(state_root);
    bytes
}

/// One master's signature over one commit statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatement {
    /// Cluster the statement belongs to.
    pub cluster_id: String,
    /// Log index after whose application the root was taken.
    pub log_index: u64,
    /// State root after applying the log prefix `..=log_index`.
    pub state_root: StateRoot,
    /// The signing master.
    pub signer: NodeId,
    /// ed25519 signature over [`statement_bytes`].
    pub signature: Signature,
}

impl SignedStatement {
    /// Signs a statement with a master's key.
    pub fn sign(
        cluster_id: &str,
        log_index: u64,
        state_root: StateRoot,
        signer: NodeId,
        key: &SigningKey,
    ) -> Self {
        let signature = key.sign(&statement_bytes(cluster_id, log_index, &state_root));
        Self {
            cluster_id: cluster_id.to_owned(),
            log_index,
            state_root,
            signer,
            signature,
        }
    }

    /// Checks the signature against the signer's registered key.
    pub fn verify(&self, keys: &MasterKeys) -> Result<(), CertificateError> {
        if self.cluster_id != keys.cluster_id {
            return Err(CertificateError::WrongCluster {
                expected: keys.cluster_id.clone(),
                found: self.cluster_id.clone(),
            });
        }
        keys.verify(
            self.signer,
            self.log_index,
            &self.state_root,
            &self.signature,
        )
    }
}

/// The masters' public keys for one cluster, and the finality quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeys {
    cluster_id: String,
    keys: BTreeMap<NodeId, VerifyingKey>,
}

impl MasterKeys {
    /// Registers the verifying key of every master.
    pub fn new(cluster_id: impl Into<String>, keys: BTreeMap<NodeId, VerifyingKey>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            keys,
        }
    }

    /// The cluster these keys belong to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Signatures needed for finality: a strict majority (2 of 3).
    pub fn quorum(&self) -> usize {
        self.keys.len() / 2 + 1
    }

    /// The verifying key of one master, if known.
    pub fn key(&self, node: NodeId) -> Option<&VerifyingKey> {
        self.keys.get(&node)
    }

    fn verify(
        &self,
        signer: NodeId,
        log_index: u64,
        state_root: &StateRoot,
        signature: &Signature,
    ) -> Result<(), CertificateError> {
        let key = self
            .keys
            .get(&signer)
            .ok_or(CertificateError::UnknownSigner { signer })?;
        key.verify(
            &statement_bytes(&self.cluster_id, log_index, state_root),
            signature,
        )
        .map_err(|_| CertificateError::BadSignature { signer, log_index })
    }
}

/// Signatures of several masters over one `(cluster_id, log_index, state_root)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// Cluster the certificate belongs to.
    pub cluster_id: String,
    /// Certified log index.
    pub log_index: u64,
    /// Certified state root after applying `..=log_index`.
    pub state_root: StateRoot,
    /// Signatures by master id.
    pub signatures: BTreeMap<NodeId, Signature>,
}

impl CommitCertificate {
    /// Masters whose signature in this certificate verifies.
    pub fn valid_signers(&self, keys: &MasterKeys) -> BTreeSet<NodeId> {
        if self.cluster_id != keys.cluster_id {
            return BTreeSet::new();
        }
        self.signatures
            .iter()
            .filter(|(signer, sig)| {
                keys.verify(**signer, self.log_index, &self.state_root, sig)
                    .is_ok()
            })
            .map(|(signer, _)| *signer)
            .collect()
    }

    /// Final: at least a quorum of valid signatures from distinct known masters.
    pub fn is_final(&self, keys: &MasterKeys) -> bool {
        self.verify(keys).is_ok()
    }

    /// Like [`is_final`](Self::is_final), but says why not. Every signature present must
    /// verify: a certificate carrying a forged signature is refused as a whole.
    pub fn verify(&self, keys: &MasterKeys) -> Result<(), CertificateError> {
        if self.cluster_id != keys.cluster_id {
            return Err(CertificateError::WrongCluster {
                expected: keys.cluster_id.clone(),
                found: self.cluster_id.clone(),
            });
        }
        for (signer, sig) in &self.signatures {
            keys.verify(*signer, self.log_index, &self.state_root, sig)?;
        }
        let valid_count = self.signatures.len();
        if valid_count < keys.quorum() {
            return Err(CertificateError::NotFinal {
                log_index: self.log_index,
                valid_count,
                quorum: keys.quorum(),
            });
        }
        Ok(())
    }
}

/// Proof that one master signed two different state roots for the same log index.
/// Slashable: anyone holding the master keys can check it with [`verify`](Self::verify).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivocationEvidence {
    /// The first statement seen.
    pub first: SignedStatement,
    /// The conflicting statement.
    pub second: SignedStatement,
}

impl EquivocationEvidence {
    /// The equivocating master.
    pub fn signer(&self) -> NodeId {
        self.first.signer
    }

    /// Checks both signatures, same signer, same cluster and index, different roots.
    pub fn verify(&self, keys: &MasterKeys) -> Result<(), CertificateError> {
        self.first.verify(keys)?;
        self.second.verify(keys)?;
        let conflicting = self.first.signer == self.second.signer
            && self.first.log_index == self.second.log_index
            && self.first.state_root != self.second.state_root;
        if conflicting {
            Ok(())
        } else {
            Err(CertificateError::NotEquivocation)
        }
    }
}

/// Why a statement, certificate or piece of evidence is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The signer is not a registered master.
    #[error("signer {signer} is not a known master")]
    UnknownSigner {
        /// Claimed signer.
        signer: NodeId,
    },
    /// The signature does not verify under the signer's key.
    #[error("signature of master {signer} over index {log_index} does not verify")]
    BadSignature {
        /// Claimed signer.
        signer: NodeId,
        /// Statement index.
        log_index: u64,
    },
    /// Statement or certificate of another cluster.
    #[error("statement for cluster {found:?}, expected {expected:?}")]
    WrongCluster {
        /// This cluster.
        expected: String,
        /// The statement's cluster.
        found: String,
    },
    /// Fewer valid signatures than the quorum.
    #[error(
        "certificate for index {log_index} has {valid_count} valid signatures, needs {quorum}"
    )]
    NotFinal {
        /// Certificate index.
        log_index: u64,
        /// Valid signatures found.
        valid_count: usize,
        /// Signatures needed.
        quorum: usize,
    },
    /// The two statements do not conflict (different signer, index, or same root).
    #[error("statements are not an equivocation")]
    NotEquivocation,
}

/// What [`CertificateCollector::add`] did with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddOutcome {
    /// Recorded; the index is not final yet (or was already final).
    Recorded,
    /// Same statement seen before.
    Duplicate,
    /// This statement made the index final.
    Finalized(CommitCertificate),
    /// The signer had signed another root for this index; evidence kept.
    Equivocation(Box<EquivocationEvidence>),
}

#[derive(Debug, Default)]
struct CollectorState {
    /// Per index, per signer: the first statement seen.
    statements: BTreeMap<u64, BTreeMap<NodeId, SignedStatement>>,
    finals: BTreeMap<u64, CommitCertificate>,
    evidence: Vec<EquivocationEvidence>,
    final_index: Option<u64>,
    /// `await_final` callers, woken only when their own index becomes final.
    waiters: BTreeMap<u64, Vec<oneshot::Sender<CommitCertificate>>>,
}

/// Gathers signed statements from all masters and builds final certificates.
#[derive(Debug)]
pub struct CertificateCollector {
    keys: MasterKeys,
    state: Mutex<CollectorState>,
}

impl CertificateCollector {
    /// An empty collector for the given master keys.
    pub fn new(keys: MasterKeys) -> Self {
        Self {
            keys,
            state: Mutex::new(CollectorState::default()),
        }
    }

    /// The master keys certificates are checked against.
    pub fn keys(&self) -> &MasterKeys {
        &self.keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CollectorState> {
        // A poisoned lock only means another thread panicked mid-update of plain maps;
        // the maps stay structurally valid, so keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Verifies and records one statement. Forged or foreign statements are refused.
    pub fn add(&self, statement: SignedStatement) -> Result<AddOutcome, CertificateError> {
        if self.is_known(&statement) {
            return Ok(AddOutcome::Duplicate);
        }
        statement.verify(&self.keys)?;
        Ok(self.record(statement))
    }

    /// Whether this exact statement (same signer, root and signature bytes) was
    /// recorded already, or is for an index long final: then it needs no check.
    fn is_known(&self, statement: &SignedStatement) -> bool {
        let state = self.lock();
        let index = statement.log_index;
        if state
            .final_index
            .is_some_and(|f| index.saturating_add(RETAINED_INDICES) < f)
        {
            return true;
        }
        state
            .statements
            .get(&index)
            .and_then(|m| m.get(&statement.signer))
            .is_some_and(|known| known == statement)
    }

    /// Records a statement this master has just signed with the key whose public half
    /// is `own_key`: no signature check, only that `own_key` is the key registered for
    /// the signer (a master signs each applied root; checking its own fresh signature
    /// again would cost a verification per log entry for nothing).
    pub fn add_own(
        &self,
        statement: SignedStatement,
        own_key: &VerifyingKey,
    ) -> Result<AddOutcome, CertificateError> {
        if statement.cluster_id != self.keys.cluster_id {
            return Err(CertificateError::WrongCluster {
                expected: self.keys.cluster_id.clone(),
                found: statement.cluster_id,
            });
        }
        match self.keys.key(statement.signer) {
            Some(k) if k == own_key => Ok(self.record(statement)),
            Some(_) => Err(CertificateError::BadSignature {
                signer: statement.signer,
                log_index: statement.log_index,
            }),
            None => Err(CertificateError::UnknownSigner {
                signer: statement.signer,
            }),
        }
    }

    /// Records a statement whose signature is known to be good.
    fn record(&self, statement: SignedStatement) -> AddOutcome {
        let quorum = self.keys.quorum();
        let mut state = self.lock();
        let index = statement.log_index;
        if let Some(final_index) = state.final_index {
            if index.saturating_add(RETAINED_INDICES) < final_index {
                return AddOutcome::Duplicate;
            }
        }
        let by_signer = state.statements.entry(index).or_default();
        if let Some(previous) = by_signer.get(&statement.signer) {
            if previous.state_root == statement.state_root {
                return AddOutcome::Duplicate;
            }
            let evidence = EquivocationEvidence {
                first: previous.clone(),
                second: statement,
            };
            tracing::warn!(signer = evidence.signer(), index, "master equivocated");
            state.evidence.push(evidence.clone());
            return AddOutcome::Equivocation(Box::new(evidence));
        }
        let root = statement.state_root;
        by_signer.insert(statement.signer, statement);
        let signatures: BTreeMap<NodeId, Signature> = by_signer
            .values()
            .filter(|s| s.state_root == root)
            .map(|s| (s.signer, s.signature))
            .collect();
        if let Some(existing) = state.finals.get_mut(&index) {
            // Late signatures over the final root strengthen the stored certificate.
            if existing.state_root == root {
                existing.signatures = signatures;
            }
            return AddOutcome::Recorded;
        }
        if signatures.len() < quorum {
            return AddOutcome::Recorded;
        }
        let certificate = CommitCertificate {
            cluster_id: self.keys.cluster_id.clone(),
            log_index: index,
            state_root: root,
            signatures,
        };
        state.finals.insert(index, certificate.clone());
        let new_final = state.final_index.map_or(index, |f| f.max(index));
        state.final_index = Some(new_final);
        let waiters = state.waiters.remove(&index).unwrap_or_default();
        Self::prune(&mut state, new_final);
        drop(state);
        for waiter in waiters {
            // A waiter that timed out has dropped its receiver; nothing to do.
            let _ = waiter.send(certificate.clone());
        }
        AddOutcome::Finalized(certificate)
    }

    /// Records every signature of a certificate (e.g. one returned by the leader for a
    /// forwarded write). Returns the first refusal, after recording the valid ones.
    pub fn add_certificate(&self, certificate: &CommitCertificate) -> Result<(), CertificateError> {
        let statements: Vec<SignedStatement> = certificate
            .signatures
            .iter()
            .map(|(signer, signature)| SignedStatement {
                cluster_id: certificate.cluster_id.clone(),
                log_index: certificate.log_index,
                state_root: certificate.state_root,
                signer: *signer,
                signature: *signature,
            })
            .collect();
        let mut first_error = None;
        for statement in statements {
            // Each signature is checked on its own (batch verification may accept
            // what single verification refuses: not for finality), and only once.
            if let Err(e) = self.add(statement) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn prune(state: &mut CollectorState, final_index: u64) {
        let keep_from = final_index.saturating_sub(RETAINED_INDICES);
        state.statements = state.statements.split_off(&keep_from);
        state.finals = state.finals.split_off(&keep_from);
        state.waiters.retain(|_, waiting| {
            waiting.retain(|w| !w.is_closed());
            !waiting.is_empty()
        });
    }

    /// Highest log index with a final certificate. Only state up to here is delivered.
    pub fn final_index(&self) -> Option<u64> {
        self.lock().final_index
    }

    /// The final certificate for exactly this index, if any.
    pub fn certificate(&self, log_index: u64) -> Option<CommitCertificate> {
        self.lock().finals.get(&log_index).cloned()
    }

    /// All equivocation evidence seen so far.
    pub fn evidence(&self) -> Vec<EquivocationEvidence> {
        self.lock().evidence.clone()
    }

    /// Waits until `log_index` has a final certificate, at most `timeout`.
    pub async fn await_final(
        &self,
        log_index: u64,
        timeout: Duration,
    ) -> Result<CommitCertificate, AwaitFinalError> {
        let final_rx = {
            let mut state = self.lock();
            if let Some(certificate) = state.finals.get(&log_index) {
                return Ok(certificate.clone());
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.entry(log_index).or_default().push(tx);
            rx
        };
        match tokio::time::timeout(timeout, final_rx).await {
            Ok(Ok(certificate)) => Ok(certificate),
            Ok(Err(_)) => Err(AwaitFinalError::Closed),
            Err(_) => Err(AwaitFinalError::Timeout { log_index }),
        }
    }
}

/// Why [`CertificateCollector::await_final`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AwaitFinalError {
    /// No quorum of signatures arrived in time.
    #[error("index {log_index} not final before the timeout")]
    Timeout {
        /// The awaited index.
        log_index: u64,
    },
    /// The collector was dropped.
    #[error("certificate collector closed")]
    Closed,
}
