//! openraft state machine storage around a [`ReplicatedStateMachine`].
//!
//! The applied state lives in memory; snapshots are persisted in redb (see
//! [`crate::store`]). After applying each `Normal` entry the state root is handed to the
//! signer (see [`crate::node`]), which signs `(cluster_id, index, root)` for the
//! commit certificate.

// openraft's own error types are large; its traits fix the signatures.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use tokio::sync::mpsc;

use crate::state_machine::{ReplicatedStateMachine, StateRoot};
use crate::store::{StoredSnapshot, Writer};
use crate::types::{BatchOutcome, LogEntry, NodeId, RaftLogId, RaftStorageError, TypeConfig};

pub(crate) struct SmShared<S> {
    pub(crate) machine: S,
    pub(crate) last_applied: Option<RaftLogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    current_snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

/// `(log_index, state_root)` after applying a `Normal` entry.
pub(crate) type AppliedRoot = (u64, StateRoot);

pub(crate) struct SmStore<S> {
    shared: Arc<Mutex<SmShared<S>>>,
    writer: Writer,
    applied_tx: mpsc::UnboundedSender<AppliedRoot>,
}

impl<S> Clone for SmStore<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            writer: self.writer.clone(),
            applied_tx: self.applied_tx.clone(),
        }
    }
}

impl<S: ReplicatedStateMachine> SmStore<S> {
    /// Restores `machine` from the persisted snapshot, if any.
    pub(crate) fn new(
        mut machine: S,
        snapshot: Option<StoredSnapshot>,
        writer: Writer,
        applied_tx: mpsc::UnboundedSender<AppliedRoot>,
    ) -> Result<Self, crate::error::StoreError> {
        let (last_applied, membership) = match &snapshot {
            Some(snapshot) => {
                machine.restore(&snapshot.data)?;
                (
                    snapshot.meta.last_log_id,
                    snapshot.meta.last_membership.clone(),
                )
            }
            None => (None, StoredMembership::default()),
        };
        let shared = SmShared {
            machine,
            last_applied,
            membership,
            current_snapshot: snapshot,
            snapshot_seq: 0,
        };
        Ok(Self {
            shared: Arc::new(Mutex::new(shared)),
            writer,
            applied_tx,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SmShared<S>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: ReplicatedStateMachine> RaftSnapshotBuilder<TypeConfig> for SmStore<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let stored = {
            let mut shared = self.lock();
            shared.snapshot_seq += 1;
            let index = shared.last_applied.map_or(0, |l| l.index);
            let meta = SnapshotMeta {
                last_log_id: shared.last_applied,
                last_membership: shared.membership.clone(),
                snapshot_id: format!("{index}-{}", shared.snapshot_seq),
            };
            StoredSnapshot {
                meta,
                data: shared.machine.snapshot(),
            }
        };
        self.writer.put_snapshot(&stored).await?;
        let snapshot = Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        };
        let mut shared = self.lock();
        let newer = shared
            .current_snapshot
            .as_ref()
            .is_none_or(|s| s.meta.last_log_id <= stored.meta.last_log_id);
        if newer {
            shared.current_snapshot = Some(stored);
        }
        Ok(snapshot)
    }
}

impl<S: ReplicatedStateMachine> RaftStateMachine<TypeConfig> for SmStore<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<RaftLogId>, StoredMembership<NodeId, BasicNode>), RaftStorageError> {
        let shared = self.lock();
        Ok((shared.last_applied, shared.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, RaftStorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let mut roots = Vec::new();
        {
            let mut shared = self.lock();
            for entry in entries {
                shared.last_applied = Some(entry.log_id);
                let responses = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(batch) => {
                        let responses: Vec<Vec<u8>> = batch
                            .commands
                            .iter()
                            .map(|c| shared.machine.apply(c))
                            .collect();
                        roots.push((entry.log_id.index, shared.machine.state_root()));
                        responses
                    }
                    EntryPayload::Membership(membership) => {
                        shared.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                };
                outcomes.push(BatchOutcome {
                    responses,
                    state_root: shared.machine.state_root(),
                });
            }
        }
        for root in roots {
            // The signer may be gone during shutdown; nothing to sign then.
            let _ = self.applied_tx.send(root);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        {
            let mut shared = self.lock();
            shared.machine.restore(&stored.data).map_err(|e| {
                StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
            shared.last_applied = meta.last_log_id;
            shared.membership = meta.last_membership.clone();
            shared.current_snapshot = Some(stored.clone());
        }
        self.writer.put_snapshot(&stored).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let shared = self.lock();
        Ok(shared.current_snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
