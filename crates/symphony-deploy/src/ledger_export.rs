//! The replicated settlement ledger of a deployed cluster, exported for audits
//! (`symphony ledger reconcile --dir <devnet>`).
//!
//! Every master keeps the settlement ledger (genesis + the ledger commands applied,
//! each once) and the settlement plane's tables (rows, per-epoch payout groups,
//! credits, composite links) in its replicated state, with the Governance Service's
//! sealed epochs beside them. While it runs, each master writes a copy of that part
//! of its replica to `<data_dir>/settlement-ledger.bcs` whenever it changed (at most
//! once per [`EXPORT_EVERY`], atomically: temporary file + rename), and once more on
//! shutdown. A raft data directory is locked by its running master and holds a log
//! rather than a state, so the copy is what an auditor reads, for a running or a
//! stopped devnet alike; the reader takes the copy with the highest applied log
//! index (a killed master's copy is older than the survivors').
//!
//! [`reconcile`] checks the copy: the settlement store against the ledger
//! (`symphony_node::settlement::reconcile::reconcile_settlements`: every finalized
//! settlement paid exactly once, nothing paid before finality, every epoch payout
//! group on the ledger as recorded, balances = Σ events), each paid settlement in
//! exactly one epoch's payout set in the replicated governance state (the epoch its
//! ledger payout names), and each closed epoch's node operation rewards minted and
//! paid once, as recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use symphony_ledger::{Genesis, LedgerEvent, MemoryLedger, PayoutSource, SettlementLedger};
use symphony_master::GovernanceState;
use symphony_node::settlement::reconcile::{reconcile_settlements, SettlementReconcileReport};
use symphony_node::settlement::{PayoutPhase, SettlementStore, SettlementTables};

use crate::devnet::DevnetLayout;
use crate::replicator::Cluster;
use crate::state::DeployState;
use crate::DeployError;

/// The file each master writes in its data directory.
pub const EXPORT_FILE: &str = "settlement-ledger.bcs";

/// How often a running master refreshes its copy (when its state changed).
pub const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// A copy of the settlement part of one master's replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerExport {
    /// The master that wrote it.
    pub node_id: u64,
    /// Log entries its replica had applied.
    pub applied: u64,
    /// Its state root then (hash chain over the applied commands).
    pub state_root: [u8; 32],
    /// The ledger's genesis.
    pub genesis: Genesis,
    /// The ledger commands applied, in order.
    pub ledger_log: Vec<symphony_ledger::Command>,
    /// The settlement plane's tables.
    pub settlement: SettlementTables,
    /// The Governance Service's state (epochs with their sealed payout sets and
    /// rewards).
    pub governance: GovernanceState,
}

impl LedgerExport {
    /// The copy of `state` as master `node_id` holds it.
    pub fn of(state: &DeployState, node_id: u64) -> Self {
        LedgerExport {
            node_id,
            applied: state.applied(),
            state_root: symphony_consensus::ReplicatedStateMachine::state_root(state),
            genesis: state.genesis().clone(),
            ledger_log: state.ledger_log().to_vec(),
            settlement: state.settlement().clone(),
            governance: state.master().governance().clone(),
        }
    }

    /// Writes the copy to `dir/settlement-ledger.bcs` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), DeployError> {
        let bytes = bcs::to_bytes(self).map_err(|e| DeployError::Encoding(e.to_string()))?;
        let tmp = dir.join(format!("{EXPORT_FILE}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join(EXPORT_FILE))?;
        Ok(())
    }

    /// Reads a copy.
    pub fn read(path: &Path) -> Result<Self, DeployError> {
        let bytes = std::fs::read(path)
            .map_err(|e| DeployError::Config(format!("{}: {e}", path.display())))?;
        bcs::from_bytes(&bytes)
            .map_err(|e| DeployError::Encoding(format!("{}: {e}", path.display())))
    }

    /// The ledger rebuilt from genesis and the applied commands.
    pub fn ledger(&self) -> Result<MemoryLedger, DeployError> {
        let mut ledger =
            MemoryLedger::new(&self.genesis).map_err(|e| DeployError::Ledger(e.to_string()))?;
        for c in &self.ledger_log {
            ledger
                .execute(c.clone())
                .map_err(|e| DeployError::Ledger(format!("replaying the ledger log: {e}")))?;
        }
        Ok(ledger)
    }
}

/// Keeps `data_dir/settlement-ledger.bcs` current until `stop` (then writes a last
/// copy). Runs on its own thread; a failed write is logged and retried.
pub fn spawn_exporter(
    cluster: Cluster,
    node_id: u64,
    data_dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ledger-export".into())
        .spawn(move || {
            let mut written = None;
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                let applied = cluster.with_state(DeployState::applied);
                if written != Some(applied) || stopping {
                    let export = cluster.with_state(|s| LedgerExport::of(s, node_id));
                    match export.write(&data_dir) {
                        Ok(()) => written = Some(export.applied),
                        Err(e) => tracing::warn!(error = %e, "ledger export failed"),
                    }
                }
                if stopping {
                    return;
                }
                std::thread::sleep(EXPORT_EVERY);
            }
        })
}

/// The freshest copy among the masters of the devnet in `dir` (highest applied
/// index), with the path it came from.
pub fn read_devnet(dir: &Path) -> Result<(LedgerExport, PathBuf), DeployError> {
    let layout = DevnetLayout::load(dir)?;
    let mut best: Option<(LedgerExport, PathBuf)> = None;
    let mut missing = Vec::new();
    for m in &layout.masters {
        let config = crate::config::MasterConfig::load(&m.config)?;
        let path = config.data_dir.join(EXPORT_FILE);
        if !path.exists() {
            missing.push(path.display().to_string());
            continue;
        }
        let export = LedgerExport::read(&path)?;
        if best
            .as_ref()
            .is_none_or(|(b, _)| export.applied > b.applied)
        {
            best = Some((export, path));
        }
    }
    best.ok_or_else(|| {
        DeployError::Config(format!(
            "no master of {} has exported its settlement ledger yet ({} missing): start the devnet with `symphony devnet up`",
            dir.display(),
            missing.join(", ")
        ))
    })
}

/// What reconciling a devnet's replicated ledger proved.
#[derive(Clone, Debug, Serialize)]
pub struct DevnetReconcileReport {
    /// Every check passed (an error is returned otherwise).
    pub ok: bool,
    /// Settlements checked (rows of the replicated settlement store).
    pub settlements: usize,
    /// Of them, finalized and paid exactly once.
    pub settlements_finalized: usize,
    /// Settlements found in exactly one epoch's payout set.
    pub payouts_in_epoch_sets: usize,
    /// Closed epochs (each sealed once).
    pub epochs_closed: usize,
    /// Node operation rewards minted over the closed epochs, µSYM.
    pub rewards_minted_micro_sym: u64,
    /// The master whose copy was checked and its applied log index.
    pub source_node: u64,
    /// Its applied log index.
    pub applied: u64,
    /// The ledger and settlement-store checks.
    pub ledger: SettlementReconcileReport,
}

fn fail(m: String) -> DeployError {
    DeployError::Ledger(format!("reconcile: {m}"))
}

/// Checks a copy of the replicated ledger (see the module documentation); the error
/// names the first discrepancy.
pub fn reconcile(export: &LedgerExport) -> Result<DevnetReconcileReport, DeployError> {
    let ledger = export.ledger()?;
    let store = SettlementStore::frozen(export.settlement.clone());
    let report = reconcile_settlements(&store, &ledger)?;
    let g = &export.governance;
    // Task → the epochs whose payout set holds it (sealed or open).
    let mut sets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for h in &g.history {
        for t in &h.payouts.tasks {
            sets.entry(t.to_string()).or_default().push(h.epoch.0);
        }
    }
    for t in g.open_payouts.keys() {
        sets.entry(t.to_string()).or_default().push(g.epoch.0);
    }
    let mut in_sets = 0;
    for row in export.settlement.settlements.values() {
        if row.phase < PayoutPhase::EscrowPaid {
            continue;
        }
        let epoch = row.candidate.escrow_set.epoch_id;
        match sets.get(row.task_id.as_str()).map(Vec::as_slice) {
            Some([e]) if *e == epoch => in_sets += 1,
            other => {
                return Err(fail(format!(
                    "settlement {} was paid in epoch {epoch} but the epoch payout sets hold it in {other:?}",
                    row.task_id
                )))
            }
        }
    }
    let mut minted = 0u64;
    let mut minted_on_ledger: BTreeMap<u64, u64> = BTreeMap::new();
    let mut node_payouts: BTreeMap<String, u64> = BTreeMap::new();
    let mut mints: Vec<(u64, u64)> = Vec::new();
    for (_, e) in ledger
        .events(0, usize::MAX)
        .map_err(|e| DeployError::Ledger(e.to_string()))?
    {
        match e {
            LedgerEvent::InflationMinted { epoch, amount, .. } => mints.push((epoch, amount)),
            LedgerEvent::PayoutExecuted {
                payout_id,
                source: PayoutSource::Treasury,
                total,
                ..
            } if payout_id.as_str().starts_with("node-operation-") => {
                node_payouts.insert(payout_id.to_string(), total);
            }
            _ => {}
        }
    }
    for (epoch, amount) in mints {
        if minted_on_ledger.insert(epoch, amount).is_some() {
            return Err(fail(format!("epoch {epoch}'s inflation was minted twice")));
        }
    }
    for h in &g.history {
        let Some(r) = &h.rewards else { continue };
        minted = minted.saturating_add(r.minted_micro_sym);
        if r.minted_micro_sym == 0 {
            continue;
        }
        let e = h.epoch.0;
        let on_ledger = minted_on_ledger.get(&e).copied();
        let paid = node_payouts.get(&format!("node-operation-{e}")).copied();
        if on_ledger != Some(r.minted_micro_sym) || paid != Some(r.minted_micro_sym) {
            return Err(fail(format!(
                "epoch {e} recorded {} µSYM of node rewards; the ledger minted {on_ledger:?} and paid {paid:?}",
                r.minted_micro_sym
            )));
        }
    }
    Ok(DevnetReconcileReport {
        ok: true,
        settlements: report.settlements,
        settlements_finalized: report.settlements_finalized,
        payouts_in_epoch_sets: in_sets,
        epochs_closed: g.history.len(),
        rewards_minted_micro_sym: minted,
        source_node: export.node_id,
        applied: export.applied,
        ledger: report,
    })
}
