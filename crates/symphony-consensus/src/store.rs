//! Durable Raft storage in one redb file per node.
//!
//! Durability contract: every mutation (log append, truncate, purge, vote, snapshot) is
//! committed in a redb write transaction with `Durability::Immediate`, i.e. fsynced,
//! *before* openraft is told it is done (`LogFlushed` callback or the awaited result).
//! A vote is therefore never granted twice in one term across a crash, and an entry
//! acknowledged to the leader is on this node's disk. The committed index is written
//! without waiting and without an fsync of its own (it rides on the next durable
//! commit; openraft re-learns it from the leader anyway). The applied state itself is
//! not written per entry: on restart it is rebuilt from the last persisted snapshot plus
//! the log, which openraft re-applies.
//!
//! All writes go through one writer thread, in submission order; it groups queued
//! operations into one transaction (group commit). The log is mirrored in memory, so
//! reads never wait for disk and see entries that are submitted but not yet flushed.

// openraft's own error types are large; its traits fix the signatures.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, SnapshotMeta, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::types::{LogEntry, NodeId, RaftLogId, RaftStorageError, TypeConfig};

const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_SNAPSHOT: &str = "snapshot";

/// Upper bound of operations grouped into one redb transaction.
const MAX_OPS_PER_COMMIT: usize = 1024;

/// A persisted state machine snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    pub(crate) data: Vec<u8>,
}

type Ack = oneshot::Sender<Result<(), String>>;

enum WriteOp {
    Append {
        rows: Vec<(u64, Vec<u8>)>,
        flushed: LogFlushed<TypeConfig>,
    },
    Truncate {
        from_index: u64,
        done: Ack,
    },
    Purge {
        up_to_index: u64,
        last_purged: Vec<u8>,
        done: Ack,
    },
    PutMeta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<Ack>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Handle to the writer thread that owns the redb database.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<WriteOp>,
}

impl Writer {
    fn send(&self, op: WriteOp) -> Result<(), RaftStorageError> {
        self.tx
            .send(op)
            .map_err(|_| StorageIOError::write(AnyError::error("storage writer stopped")).into())
    }

    async fn call(
        &self,
        make: impl FnOnce(Ack) -> WriteOp,
        to_error: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> Result<(), RaftStorageError> {
        let (done, rx) = oneshot::channel();
        self.send(make(done))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(to_error(AnyError::error(message)).into()),
            Err(_) => Err(to_error(AnyError::error("storage writer stopped")).into()),
        }
    }

    pub(crate) async fn put_snapshot(
        &self,
        snapshot: &StoredSnapshot,
    ) -> Result<(), RaftStorageError> {
        let value = bincode::serialize(snapshot)
            .map_err(|e| StorageIOError::write_snapshot(Some(snapshot.meta.signature()), &e))?;
        let signature = snapshot.meta.signature();
        self.call(
            |done| WriteOp::PutMeta {
                key: KEY_SNAPSHOT,
                value,
                done: Some(done),
            },
            StorageIOError::write,
        )
        .await
        .map_err(|e| {
            tracing::error!(snapshot = %signature.snapshot_id, "persisting snapshot failed: {e}");
            e
        })
    }

    /// Stops the writer thread and waits until the database file is closed.
    pub(crate) async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(WriteOp::Shutdown { done }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Everything read back from disk at startup.
pub(crate) struct Recovered {
    pub(crate) log: BTreeMap<u64, LogEntry>,
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) committed: Option<RaftLogId>,
    pub(crate) last_purged: Option<RaftLogId>,
    pub(crate) snapshot: Option<StoredSnapshot>,
}

/// Opens (or creates) the node's redb file, reads it back, starts the writer thread.
pub(crate) fn open(path: &Path) -> Result<(Writer, Recovered), StoreError> {
    let db = Database::builder()
        .create(path)
        .map_err(redb::Error::from)?;
    {
        // Create the tables so that read transactions find them.
        let txn = db.begin_write().map_err(redb::Error::from)?;
        txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
        txn.open_table(META_TABLE).map_err(redb::Error::from)?;
        txn.commit().map_err(redb::Error::from)?;
    }
    let recovered = read_all(&db)?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("raft-redb-writer".into())
        .spawn(move || run_writer(db, rx))
        .map_err(StoreError::Io)?;
    Ok((Writer { tx }, recovered))
}

fn read_all(db: &Database) -> Result<Recovered, StoreError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let log_table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
    let mut log = BTreeMap::new();
    for row in log_table.iter().map_err(redb::Error::from)? {
        let (index, bytes) = row.map_err(redb::Error::from)?;
        let entry: LogEntry = bincode::deserialize(bytes.value())?;
        log.insert(index.value(), entry);
    }
    let meta = txn.open_table(META_TABLE).map_err(redb::Error::from)?;
    let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta
            .get(key)
            .map_err(redb::Error::from)?
            .map(|v| v.value().to_vec()))
    };
    let decode_opt = |bytes: Option<Vec<u8>>| -> Result<Option<RaftLogId>, StoreError> {
        match bytes {
            Some(b) => Ok(bincode::deserialize::<Option<RaftLogId>>(&b)?),
            None => Ok(None),
        }
    };
    let vote = match get(KEY_VOTE)? {
        Some(b) => Some(bincode::deserialize(&b)?),
        None => None,
    };
    let snapshot = match get(KEY_SNAPSHOT)? {
        Some(b) => Some(bincode::deserialize(&b)?),
        None => None,
    };
    Ok(Recovered {
        log,
        vote,
        committed: decode_opt(get(KEY_COMMITTED)?)?,
        last_purged: decode_opt(get(KEY_LAST_PURGED)?)?,
        snapshot,
    })
}

fn run_writer(db: Database, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    let mut shutdown_acks = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_OPS_PER_COMMIT {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = commit_ops(&db, &ops).map_err(|e| e.to_string());
        if let Err(message) = &result {
            tracing::error!("redb commit failed: {message}");
        }
        for op in ops {
            match op {
                WriteOp::Append { flushed, .. } => {
                    flushed.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                WriteOp::Truncate { done, .. }
                | WriteOp::Purge { done, .. }
                | WriteOp::PutMeta {
                    done: Some(done), ..
                } => {
                    let _ = done.send(result.clone());
                }
                WriteOp::PutMeta { done: None, .. } => {}
                WriteOp::Shutdown { done } => shutdown_acks.push(done),
            }
        }
        if !shutdown_acks.is_empty() {
            break;
        }
    }
    // Close the file before acknowledging, so a restart can reopen it at once.
    drop(db);
    for done in shutdown_acks {
        let _ = done.send(());
    }
}

fn commit_ops(db: &Database, ops: &[WriteOp]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    // A batch holding only committed-index updates needs no fsync of its own: it is
    // made durable by the next durable commit, and losing it is harmless.
    let needs_fsync = ops.iter().any(|op| {
        !matches!(
            op,
            WriteOp::PutMeta { done: None, .. } | WriteOp::Shutdown { .. }
        )
    });
    txn.set_durability(if needs_fsync {
        Durability::Immediate
    } else {
        Durability::None
    });
    {
        let mut log = txn.open_table(LOG_TABLE)?;
        let mut meta = txn.open_table(META_TABLE)?;
        for op in ops {
            match op {
                WriteOp::Append { rows, .. } => {
                    for (index, bytes) in rows {
                        log.insert(*index, bytes.as_slice())?;
                    }
                }
                WriteOp::Truncate { from_index, .. } => {
                    log.retain_in(*from_index.., |_, _| false)?;
                }
                WriteOp::Purge {
                    up_to_index,
                    last_purged,
                    ..
                } => {
                    meta.insert(KEY_LAST_PURGED, last_purged.as_slice())?;
                    log.retain_in(..=*up_to_index, |_, _| false)?;
                }
                WriteOp::PutMeta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
                WriteOp::Shutdown { .. } => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[derive(Debug, Default)]
struct LogMem {
    log: BTreeMap<u64, LogEntry>,
    last_purged: Option<RaftLogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<RaftLogId>,
}

/// openraft log storage: in-memory mirror, written through to redb.
#[derive(Clone)]
pub(crate) struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    writer: Writer,
}

impl LogStore {
    pub(crate) fn new(writer: Writer, recovered: &mut Recovered) -> Self {
        let mem = LogMem {
            log: std::mem::take(&mut recovered.log),
            last_purged: recovered.last_purged,
            vote: recovered.vote,
            committed: recovered.committed,
        };
        Self {
            mem: Arc::new(Mutex::new(mem)),
            writer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogMem> {
        self.mem.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, RaftStorageError> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let mem = self.lock();
        let last = mem.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last.or(mem.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        let value = bincode::serialize(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.lock().vote = Some(*vote);
        self.writer
            .call(
                |done| WriteOp::PutMeta {
                    key: KEY_VOTE,
                    value,
                    done: Some(done),
                },
                StorageIOError::write_vote,
            )
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<RaftLogId>,
    ) -> Result<(), RaftStorageError> {
        let value = bincode::serialize(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.lock().committed = committed;
        // Not awaited: a lost committed index is re-learned from the leader.
        self.writer.send(WriteOp::PutMeta {
            key: KEY_COMMITTED,
            value,
            done: None,
        })
    }

    async fn read_committed(&mut self) -> Result<Option<RaftLogId>, RaftStorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut mem = self.lock();
            for entry in entries {
                let bytes =
                    bincode::serialize(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
                rows.push((entry.log_id.index, bytes));
                mem.log.insert(entry.log_id.index, entry);
            }
        }
        // Returns at once; `callback` fires after the fsync (see `run_writer`).
        self.writer.send(WriteOp::Append {
            rows,
            flushed: callback,
        })
    }

    async fn truncate(&mut self, log_id: RaftLogId) -> Result<(), RaftStorageError> {
        drop(self.lock().log.split_off(&log_id.index));
        self.writer
            .call(
                |done| WriteOp::Truncate {
                    from_index: log_id.index,
                    done,
                },
                StorageIOError::write_logs,
            )
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        let last_purged =
            bincode::serialize(&Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        {
            let mut mem = self.lock();
            mem.last_purged = Some(log_id);
            mem.log = mem.log.split_off(&(log_id.index + 1));
        }
        self.writer
            .call(
                |done| WriteOp::Purge {
                    up_to_index: log_id.index,
                    last_purged,
                    done,
                },
                StorageIOError::write_logs,
            )
            .await
    }
}
