//! `MemoryLedger`: the in-process ledger (no persistence).

use crate::engine::{commit, execute, genesis, Command, Outcome};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ledger::{cached_state_reads, SettlementLedger};
use crate::reconcile::{reconcile, ReconcileError, ReconcileReport};
use crate::state::LedgerState;
use crate::types::{Genesis, LedgerConfig};

/// In-memory ledger: a state plus its event log.
#[derive(Clone, Debug)]
pub struct MemoryLedger {
    config: LedgerConfig,
    state: LedgerState,
    events: Vec<LedgerEvent>,
}

impl MemoryLedger {
    /// A ledger initialized with `genesis`.
    pub fn new(genesis_spec: &Genesis) -> Result<Self, LedgerError> {
        let state = LedgerState::default();
        let executed = genesis(&state, genesis_spec)?;
        let mut ledger = Self {
            config: genesis_spec.config.clone(),
            state,
            events: Vec::new(),
        };
        ledger.state.merge(executed.writes);
        ledger.events = executed.events;
        Ok(ledger)
    }

    /// The materialized state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }
}

impl SettlementLedger for MemoryLedger {
    fn execute(&mut self, command: Command) -> Result<Outcome, LedgerError> {
        let executed = execute(&self.state, &command)?;
        let log = &mut self.events;
        commit(&mut self.state, log.len() as u64, executed, |executed| {
            log.extend(executed.events.iter().cloned());
            Ok(())
        })
    }
    cached_state_reads!();
    fn events(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, LedgerEvent)>, LedgerError> {
        Ok(self
            .events
            .iter()
            .enumerate()
            .skip(usize::try_from(from_seq).unwrap_or(usize::MAX))
            .take(limit)
            .map(|(i, e)| (i as u64, e.clone()))
            .collect())
    }
    fn reconcile(&self) -> Result<ReconcileReport, ReconcileError> {
        reconcile(&self.events, &self.state)
    }
}
