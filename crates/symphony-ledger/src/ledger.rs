//! The `SettlementLedger` trait.

use crate::distributor::{DistributionCommitment, DistributionLeaf, MerkleProof};
use crate::engine::{Command, Outcome};
use crate::error::LedgerError;
use crate::event::{LedgerEvent, PayoutSource};
use crate::reconcile::{ReconcileError, ReconcileReport};
use crate::state::{ClaimRecord, DistributionRecord, EscrowRecord, StakeRecord};
use crate::types::{
    AccountId, DistributionId, EscrowId, LedgerConfig, PayoutInstructionSet, StakeTier,
};

/// The four settlement contracts (escrow, staking, reward, treasury) behind one trait.
///
/// **Failure contract.** [`SettlementLedger::execute`] is atomic: it either appends all
/// of a command's events and applies all of their effects durably, or returns an
/// error and changes nothing. Retrying a command that succeeded is safe where the
/// command is idempotent (`escrow::lock` with identical terms, payouts by id); the
/// retry returns `already_applied = true` and appends nothing.
pub trait SettlementLedger {
    /// Executes one command atomically.
    fn execute(&mut self, command: Command) -> Result<Outcome, LedgerError>;

    /// Genesis configuration.
    fn config(&self) -> LedgerConfig;
    /// Current epoch.
    fn current_epoch(&self) -> u64;
    /// Liquid balance of `account`.
    fn balance(&self, account: &AccountId) -> u64;
    /// Escrow record, if it exists.
    fn escrow(&self, escrow_id: &EscrowId) -> Option<EscrowRecord>;
    /// Stake record of `actor`, if any.
    fn stake_record(&self, actor: &AccountId) -> Option<StakeRecord>;
    /// Whether `actor` has at least the minimum bonded stake of `tier`.
    fn is_staked(&self, actor: &AccountId, tier: StakeTier) -> bool;
    /// A committed Merkle distribution and what was claimed against it, if any.
    fn distribution(&self, distribution_id: &DistributionId) -> Option<DistributionRecord>;
    /// What leaf `index` of distribution `distribution_id` paid, if it was claimed.
    fn distribution_claim(
        &self,
        distribution_id: &DistributionId,
        index: u64,
    ) -> Option<ClaimRecord>;
    /// Balances + escrows + stakes.
    fn total_supply(&self) -> u128;
    /// Up to `limit` events starting at sequence `from_seq`.
    fn events(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, LedgerEvent)>, LedgerError>;
    /// Recomputes every balance from the event log and checks it against the stored
    /// state, that each payout id was executed exactly once, and the supply identity.
    fn reconcile(&self) -> Result<ReconcileReport, ReconcileError>;

    /// Bonded stake of `actor` (0 if none).
    fn stake_of(&self, actor: &AccountId) -> u64 {
        self.stake_record(actor).map(|s| s.bonded).unwrap_or(0)
    }
    /// Treasury balance.
    fn treasury_balance(&self) -> u64 {
        self.balance(&AccountId::treasury())
    }
    /// Moves `amount` from `from` to `to`.
    fn transfer(
        &mut self,
        from: &AccountId,
        to: &AccountId,
        amount: u64,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::Transfer {
            from: from.clone(),
            to: to.clone(),
            amount,
        })
    }
    /// Advances the epoch (must increase).
    fn advance_epoch(&mut self, epoch: u64) -> Result<Outcome, LedgerError> {
        self.execute(Command::AdvanceEpoch { epoch })
    }
    /// `escrow::lock`: the owner pays `amount` into a new escrow.
    fn lock(
        &mut self,
        escrow_id: &EscrowId,
        owner: &AccountId,
        amount: u64,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::EscrowLock {
            escrow_id: escrow_id.clone(),
            owner: owner.clone(),
            amount,
        })
    }
    /// `escrow::refund`: `amount` of what remains goes back to the owner.
    fn refund(&mut self, escrow_id: &EscrowId, amount: u64) -> Result<Outcome, LedgerError> {
        self.execute(Command::EscrowRefund {
            escrow_id: escrow_id.clone(),
            amount,
        })
    }
    /// `escrow::payout`: pays `set` from the escrow, at most once per escrow.
    fn payout(
        &mut self,
        escrow_id: &EscrowId,
        set: &PayoutInstructionSet,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::EscrowPayout {
            escrow_id: escrow_id.clone(),
            set: set.clone(),
        })
    }
    /// `reward::distribute` from the treasury or an epoch reward pool.
    fn distribute(
        &mut self,
        source: PayoutSource,
        set: &PayoutInstructionSet,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::RewardDistribute {
            source,
            set: set.clone(),
        })
    }
    /// `staking::bond`.
    fn bond(
        &mut self,
        actor: &AccountId,
        tier: StakeTier,
        amount: u64,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::StakeBond {
            actor: actor.clone(),
            tier,
            amount,
        })
    }
    /// `staking::begin_unbond`.
    fn begin_unbond(&mut self, actor: &AccountId, amount: u64) -> Result<Outcome, LedgerError> {
        self.execute(Command::StakeBeginUnbond {
            actor: actor.clone(),
            amount,
        })
    }
    /// `staking::withdraw`: all matured unbonding stake.
    fn withdraw_unbonded(&mut self, actor: &AccountId) -> Result<Outcome, LedgerError> {
        self.execute(Command::StakeWithdraw {
            actor: actor.clone(),
        })
    }
    /// `staking::slash`: moves `amount` of stake to the treasury.
    fn slash(
        &mut self,
        actor: &AccountId,
        amount: u64,
        reason: &str,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::StakeSlash {
            actor: actor.clone(),
            amount,
            reason: reason.to_owned(),
        })
    }
    /// `treasury::deposit`.
    fn deposit_treasury(&mut self, from: &AccountId, amount: u64) -> Result<Outcome, LedgerError> {
        self.execute(Command::TreasuryDeposit {
            from: from.clone(),
            amount,
        })
    }
    /// `treasury::mint_inflation`: the only way to create tokens after genesis.
    fn mint_inflation(&mut self, epoch: u64, amount: u64) -> Result<Outcome, LedgerError> {
        self.execute(Command::TreasuryMintInflation { epoch, amount })
    }
    /// `distributor::commit`: moves `commitment.total` from `source` into a pool
    /// claimable against `commitment.root` (see [`crate::distributor`]).
    fn commit_distribution(
        &mut self,
        source: PayoutSource,
        commitment: &DistributionCommitment,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::CommitDistribution {
            source,
            distribution_id: DistributionId::new(commitment.distribution_id.as_str())?,
            epoch: commitment.epoch_id,
            root: commitment.root,
            total: commitment.total,
            leaves: commitment.count,
        })
    }
    /// `distributor::claim`: pays `leaf` from distribution `distribution_id` if
    /// `proof` leads to its root and the leaf was not claimed.
    fn claim_distribution(
        &mut self,
        distribution_id: &DistributionId,
        leaf: &DistributionLeaf,
        proof: &MerkleProof,
    ) -> Result<Outcome, LedgerError> {
        self.execute(Command::ClaimDistribution {
            distribution_id: distribution_id.clone(),
            index: leaf.index,
            recipient: leaf.recipient.clone(),
            amount: leaf.amount,
            kind: leaf.kind,
            proof: proof.siblings.clone(),
        })
    }
}

/// The read methods of [`SettlementLedger`] for a ledger that caches its genesis
/// configuration in `self.config` and its committed state in `self.state`
/// ([`MemoryLedger`](crate::MemoryLedger) and [`RedbLedger`](crate::RedbLedger)).
macro_rules! cached_state_reads {
    () => {
        fn config(&self) -> $crate::types::LedgerConfig {
            self.config.clone()
        }
        fn current_epoch(&self) -> u64 {
            self.state.meta.current_epoch
        }
        fn balance(&self, account: &$crate::types::AccountId) -> u64 {
            self.state.balance(account)
        }
        fn escrow(
            &self,
            escrow_id: &$crate::types::EscrowId,
        ) -> Option<$crate::state::EscrowRecord> {
            self.state.escrows.get(escrow_id).cloned()
        }
        fn stake_record(
            &self,
            actor: &$crate::types::AccountId,
        ) -> Option<$crate::state::StakeRecord> {
            self.state.stakes.get(actor).cloned()
        }
        fn is_staked(
            &self,
            actor: &$crate::types::AccountId,
            tier: $crate::types::StakeTier,
        ) -> bool {
            self.state.is_staked(actor, tier)
        }
        fn total_supply(&self) -> u128 {
            self.state.total_supply()
        }
        fn distribution(
            &self,
            distribution_id: &$crate::types::DistributionId,
        ) -> Option<$crate::state::DistributionRecord> {
            self.state.distributions.get(distribution_id).cloned()
        }
        fn distribution_claim(
            &self,
            distribution_id: &$crate::types::DistributionId,
            index: u64,
        ) -> Option<$crate::state::ClaimRecord> {
            self.state
                .claims
                .get(&$crate::state::ClaimKey {
                    distribution_id: distribution_id.clone(),
                    index,
                })
                .cloned()
        }
    };
}
pub(crate) use cached_state_reads;
