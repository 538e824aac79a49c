//! `MemoryLedger`: the in-process ledger (no persistence).

use crate::engine::{execute, genesis, Command, Outcome};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ledger::SettlementLedger;
use crate::reconcile::{reconcile, ReconcileError, ReconcileReport};
use crate::state::{EscrowRecord, LedgerState, StakeRecord};
use crate::types::{AccountId, EscrowId, Genesis, LedgerConfig, StakeTier};

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
        let first_seq = self.events.len() as u64;
        let already_applied = executed.events.is_empty();
        self.state.merge(executed.writes);
        self.events.extend(executed.events.iter().cloned());
        Ok(Outcome {
            first_seq,
            events: executed.events,
            already_applied,
        })
    }
    fn config(&self) -> LedgerConfig {
        self.config.clone()
    }
    fn current_epoch(&self) -> u64 {
        self.state.meta.current_epoch
    }
    fn balance(&self, account: &AccountId) -> u64 {
        self.state.balance(account)
    }
    fn escrow(&self, escrow_id: &EscrowId) -> Option<EscrowRecord> {
        self.state.escrows.get(escrow_id).cloned()
    }
    fn stake_record(&self, actor: &AccountId) -> Option<StakeRecord> {
        self.state.stakes.get(actor).cloned()
    }
    fn is_staked(&self, actor: &AccountId, tier: StakeTier) -> bool {
        self.state.is_staked(actor, tier)
    }
    fn total_supply(&self) -> u128 {
        self.state.total_supply()
    }
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
