//! The materialized ledger state, a write overlay, and the event applier.
//!
//! Every operation runs against a [`Tx`] overlay over the committed [`LedgerState`];
//! only when every event of the operation applied cleanly is the overlay's
//! [`Writes`] persisted (redb) and merged. So a refused operation changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::distributor::{self, DistributionCommitment, DistributionLeaf, MerkleProof};
use crate::error::LedgerError;
use crate::event::{LedgerEvent, PayoutSource};
use crate::types::{
    AccountId, DistributionId, EscrowId, LedgerConfig, PayoutId, PayoutKind, StakeTier,
};

/// Longest Merkle proof a claim may carry: a tree of at most `u64::MAX` leaves is
/// 64 levels deep.
pub const MAX_PROOF_HASHES: usize = 64;

/// A locked escrow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowRecord {
    /// Who locked (and receives refunds).
    pub owner: AccountId,
    /// Amount locked.
    pub locked: u64,
    /// Refunded so far.
    pub refunded: u64,
    /// Paid out.
    pub paid_out: u64,
    /// The payout that paid this escrow (at most one).
    pub payout_id: Option<PayoutId>,
}

impl EscrowRecord {
    /// What is still locked (`locked - refunded - paid_out`).
    pub fn remaining(&self) -> u64 {
        self.locked
            .saturating_sub(self.refunded)
            .saturating_sub(self.paid_out)
    }
}

/// Stake waiting for its unbonding period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbonding {
    /// Amount.
    pub amount: u64,
    /// First epoch in which it may be withdrawn.
    pub release_epoch: u64,
}

/// An actor's stake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeRecord {
    /// Tier.
    pub tier: StakeTier,
    /// Bonded (active) stake.
    pub bonded: u64,
    /// Pending unbonding entries, oldest first (still slashable).
    pub unbonding: Vec<Unbonding>,
}

impl StakeRecord {
    /// Bonded plus unbonding, saturating (stored stakes never overflow: supply is a u64).
    pub fn total(&self) -> u64 {
        self.unbonding
            .iter()
            .fold(self.bonded, |acc, u| acc.saturating_add(u.amount))
    }
    fn is_empty(&self) -> bool {
        self.bonded == 0 && self.unbonding.is_empty()
    }
}

/// An executed payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    /// Source of funds.
    pub source: PayoutSource,
    /// Hash of the instruction set.
    pub set_hash: [u8; 32],
    /// Total paid.
    pub total: u64,
    /// Settlement epoch.
    pub epoch_id: u64,
}

/// A committed Merkle distribution (`distributor::commit`) and what was claimed
/// against it. Its pool, `total - paid`, is held by the ledger and counts in the
/// total supply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionRecord {
    /// Where the total came from.
    pub source: PayoutSource,
    /// The epoch whose payouts it holds.
    pub epoch_id: u64,
    /// Merkle root of the leaves (see [`crate::distributor`]).
    pub root: [u8; 32],
    /// Amount moved into the pool at commit.
    pub total: u64,
    /// Number of leaves.
    pub leaves: u64,
    /// Paid to claimants so far (never above `total`).
    pub paid: u64,
    /// Leaves claimed so far.
    pub claimed: u64,
}

impl DistributionRecord {
    /// What the pool still holds (`total - paid`).
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.paid)
    }

    /// The commitment the claims of distribution `id` are verified against.
    pub fn commitment(&self, id: &DistributionId) -> DistributionCommitment {
        DistributionCommitment {
            distribution_id: id.to_string(),
            epoch_id: self.epoch_id,
            root: self.root,
            count: self.leaves,
            total: self.total,
        }
    }
}

/// A claimed leaf: distribution and index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimKey {
    /// Distribution id.
    pub distribution_id: DistributionId,
    /// Leaf index.
    pub index: u64,
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.distribution_id, self.index)
    }
}

/// What a claimed leaf paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// Recipient credited.
    pub recipient: AccountId,
    /// Amount credited.
    pub amount: u64,
    /// Kind of the leaf.
    pub kind: PayoutKind,
}

/// Ledger-wide scalars.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Set by genesis.
    pub config: Option<LedgerConfig>,
    /// Current epoch.
    pub current_epoch: u64,
    /// Supply created at genesis.
    pub genesis_supply: u64,
    /// Supply created by inflation.
    pub minted_total: u64,
    /// Supply destroyed (no operation burns today; kept for the invariant).
    pub burned_total: u64,
    /// Epochs whose inflation was minted.
    pub minted_epochs: BTreeSet<u64>,
}

/// The whole materialized state. Zero balances and empty stakes are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Liquid balances.
    pub balances: BTreeMap<AccountId, u64>,
    /// Escrows (kept after they empty, as history).
    pub escrows: BTreeMap<EscrowId, EscrowRecord>,
    /// Stakes.
    pub stakes: BTreeMap<AccountId, StakeRecord>,
    /// Executed payouts.
    pub payouts: BTreeMap<PayoutId, PayoutRecord>,
    /// Scalars.
    pub meta: Meta,
    /// Committed Merkle distributions.
    pub distributions: BTreeMap<DistributionId, DistributionRecord>,
    /// Claimed leaves (the claimed set of every distribution).
    pub claims: BTreeMap<ClaimKey, ClaimRecord>,
}

impl LedgerState {
    /// Liquid balance of `account`.
    pub fn balance(&self, account: &AccountId) -> u64 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// Whether `actor` has at least the tier's minimum bonded (unbonding stake does not count).
    pub fn is_staked(&self, actor: &AccountId, tier: StakeTier) -> bool {
        match (self.stakes.get(actor), &self.meta.config) {
            (Some(s), Some(cfg)) => {
                s.tier == tier && s.bonded > 0 && s.bonded >= cfg.min_stake(tier)
            }
            _ => false,
        }
    }

    /// Sum of balances, escrow remainders, stakes and distribution pools (u128:
    /// cannot overflow).
    pub fn total_supply(&self) -> u128 {
        let balances: u128 = self.balances.values().map(|&v| u128::from(v)).sum();
        let escrows: u128 = self
            .escrows
            .values()
            .map(|e| u128::from(e.remaining()))
            .sum();
        let stakes: u128 = self.stakes.values().map(|s| u128::from(s.total())).sum();
        let pools: u128 = self
            .distributions
            .values()
            .map(|d| u128::from(d.remaining()))
            .sum();
        balances + escrows + stakes + pools
    }

    /// SHA-256 of the state's BCS encoding (ordered maps: deterministic). Two
    /// ledgers with the same root hold the same balances, escrows, stakes, payouts,
    /// distributions and claimed sets.
    pub fn root(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        // BCS of maps bounded by memory cannot fail (it fails only past 2^31 items).
        Sha256::digest(bcs::to_bytes(self).unwrap_or_default()).into()
    }

    /// Rebuilds the state by applying `events` (a ledger's whole log, genesis
    /// first) to an empty state, in order.
    pub fn replay(events: &[LedgerEvent]) -> Result<Self, crate::ReconcileError> {
        if !matches!(events.first(), Some(LedgerEvent::GenesisApplied(_))) {
            return Err(crate::ReconcileError::MissingGenesis);
        }
        crate::engine::replay(events)
            .map_err(|(index, error)| crate::ReconcileError::Replay { index, error })
    }

    /// Merges committed writes.
    pub(crate) fn merge(&mut self, w: Writes) {
        for (k, v) in w.balances {
            if v == 0 {
                self.balances.remove(&k);
            } else {
                self.balances.insert(k, v);
            }
        }
        self.escrows.extend(w.escrows);
        for (k, v) in w.stakes {
            if v.is_empty() {
                self.stakes.remove(&k);
            } else {
                self.stakes.insert(k, v);
            }
        }
        self.payouts.extend(w.payouts);
        self.distributions.extend(w.distributions);
        self.claims.extend(w.claims);
        if let Some(m) = w.meta {
            self.meta = m;
        }
    }
}

/// Rows an operation changes. Zero balance / empty stake means "delete the row".
#[derive(Clone, Debug, Default)]
pub(crate) struct Writes {
    pub(crate) balances: BTreeMap<AccountId, u64>,
    pub(crate) escrows: BTreeMap<EscrowId, EscrowRecord>,
    pub(crate) stakes: BTreeMap<AccountId, StakeRecord>,
    pub(crate) payouts: BTreeMap<PayoutId, PayoutRecord>,
    pub(crate) meta: Option<Meta>,
    pub(crate) distributions: BTreeMap<DistributionId, DistributionRecord>,
    pub(crate) claims: BTreeMap<ClaimKey, ClaimRecord>,
}

impl Writes {
    pub(crate) fn stake_is_empty(s: &StakeRecord) -> bool {
        s.is_empty()
    }
}

/// A write overlay over committed state.
pub(crate) struct Tx<'a> {
    base: &'a LedgerState,
    pub(crate) writes: Writes,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(base: &'a LedgerState) -> Self {
        Self {
            base,
            writes: Writes::default(),
        }
    }

    pub(crate) fn balance(&self, a: &AccountId) -> u64 {
        match self.writes.balances.get(a) {
            Some(v) => *v,
            None => self.base.balance(a),
        }
    }
    fn credit(&mut self, a: &AccountId, amount: u64) -> Result<(), LedgerError> {
        let v = self
            .balance(a)
            .checked_add(amount)
            .ok_or(LedgerError::ArithmeticOverflow)?;
        self.writes.balances.insert(a.clone(), v);
        Ok(())
    }
    fn debit(&mut self, a: &AccountId, amount: u64) -> Result<(), LedgerError> {
        let available = self.balance(a);
        let v = available
            .checked_sub(amount)
            .ok_or_else(|| LedgerError::InsufficientBalance {
                account: a.to_string(),
                needed: amount,
                available,
            })?;
        self.writes.balances.insert(a.clone(), v);
        Ok(())
    }
    pub(crate) fn escrow(&self, id: &EscrowId) -> Option<EscrowRecord> {
        self.writes
            .escrows
            .get(id)
            .or_else(|| self.base.escrows.get(id))
            .cloned()
    }
    pub(crate) fn stake(&self, a: &AccountId) -> Option<StakeRecord> {
        self.writes
            .stakes
            .get(a)
            .or_else(|| self.base.stakes.get(a))
            .filter(|s| !s.is_empty())
            .cloned()
    }
    pub(crate) fn payout(&self, id: &PayoutId) -> Option<PayoutRecord> {
        self.writes
            .payouts
            .get(id)
            .or_else(|| self.base.payouts.get(id))
            .cloned()
    }
    pub(crate) fn distribution(&self, id: &DistributionId) -> Option<DistributionRecord> {
        self.writes
            .distributions
            .get(id)
            .or_else(|| self.base.distributions.get(id))
            .cloned()
    }
    fn is_claimed(&self, key: &ClaimKey) -> bool {
        self.writes.claims.contains_key(key) || self.base.claims.contains_key(key)
    }
    pub(crate) fn meta(&self) -> Meta {
        self.writes
            .meta
            .clone()
            .unwrap_or_else(|| self.base.meta.clone())
    }
    pub(crate) fn is_staked(&self, actor: &AccountId, tier: StakeTier) -> bool {
        match (self.stake(actor), self.meta().config) {
            (Some(s), Some(cfg)) => {
                s.tier == tier && s.bonded > 0 && s.bonded >= cfg.min_stake(tier)
            }
            _ => false,
        }
    }

    fn debit_source(
        &mut self,
        source: &PayoutSource,
        payout_id: &PayoutId,
        total: u64,
    ) -> Result<(), LedgerError> {
        match source {
            PayoutSource::Treasury => self.debit(&AccountId::treasury(), total),
            PayoutSource::RewardPool(epoch) => self.debit(&AccountId::reward_pool(*epoch), total),
            PayoutSource::Account(account) => self.debit(account, total),
            PayoutSource::Escrow(id) => {
                let mut e = self
                    .escrow(id)
                    .ok_or_else(|| LedgerError::EscrowNotFound(id.to_string()))?;
                if let Some(existing) = &e.payout_id {
                    return Err(LedgerError::EscrowAlreadyPaidOut {
                        escrow_id: id.to_string(),
                        payout_id: existing.to_string(),
                    });
                }
                let remaining = e.remaining();
                if total > remaining {
                    return Err(LedgerError::EscrowInsufficient {
                        escrow_id: id.to_string(),
                        remaining,
                        requested: total,
                    });
                }
                e.paid_out = total;
                e.payout_id = Some(payout_id.clone());
                self.writes.escrows.insert(id.clone(), e);
                Ok(())
            }
        }
    }

    /// Applies one event with checked arithmetic. Used both to execute new operations
    /// and to replay the log; an error means the operation (or the log) is invalid.
    pub(crate) fn apply(&mut self, event: &LedgerEvent) -> Result<(), LedgerError> {
        use LedgerEvent as E;
        match event {
            E::GenesisApplied(genesis) => {
                let mut meta = self.meta();
                if meta.config.is_some() {
                    return Err(LedgerError::Genesis);
                }
                let mut supply = 0u64;
                for (account, amount) in &genesis.allocations {
                    self.credit(account, *amount)?;
                    supply = supply
                        .checked_add(*amount)
                        .ok_or(LedgerError::ArithmeticOverflow)?;
                }
                meta.config = Some(genesis.config.clone());
                meta.genesis_supply = supply;
                self.writes.meta = Some(meta);
            }
            E::Transferred { from, to, amount } => {
                self.debit(from, *amount)?;
                self.credit(to, *amount)?;
            }
            E::EpochAdvanced { epoch } => {
                let mut meta = self.meta();
                if *epoch <= meta.current_epoch {
                    return Err(LedgerError::InvalidEpoch {
                        current: meta.current_epoch,
                        requested: *epoch,
                    });
                }
                meta.current_epoch = *epoch;
                self.writes.meta = Some(meta);
            }
            E::EscrowLocked {
                escrow_id,
                owner,
                amount,
            } => {
                if self.escrow(escrow_id).is_some() {
                    return Err(LedgerError::EscrowAlreadyExists(escrow_id.to_string()));
                }
                self.debit(owner, *amount)?;
                let record = EscrowRecord {
                    owner: owner.clone(),
                    locked: *amount,
                    refunded: 0,
                    paid_out: 0,
                    payout_id: None,
                };
                self.writes.escrows.insert(escrow_id.clone(), record);
            }
            E::EscrowRefunded {
                escrow_id,
                owner,
                amount,
            } => {
                let mut e = self
                    .escrow(escrow_id)
                    .ok_or_else(|| LedgerError::EscrowNotFound(escrow_id.to_string()))?;
                let remaining = e.remaining();
                if *amount > remaining || &e.owner != owner {
                    return Err(LedgerError::EscrowInsufficient {
                        escrow_id: escrow_id.to_string(),
                        remaining,
                        requested: *amount,
                    });
                }
                e.refunded = e
                    .refunded
                    .checked_add(*amount)
                    .ok_or(LedgerError::ArithmeticOverflow)?;
                self.writes.escrows.insert(escrow_id.clone(), e);
                self.credit(owner, *amount)?;
            }
            E::PayoutExecuted {
                payout_id,
                source,
                set_hash,
                epoch_id,
                total,
                ..
            } => {
                if self.payout(payout_id).is_some() {
                    return Err(LedgerError::PayoutConflict(payout_id.to_string()));
                }
                self.debit_source(source, payout_id, *total)?;
                let record = PayoutRecord {
                    source: source.clone(),
                    set_hash: *set_hash,
                    total: *total,
                    epoch_id: *epoch_id,
                };
                self.writes.payouts.insert(payout_id.clone(), record);
            }
            E::RewardPaid {
                gross,
                net,
                to_pool,
                recipient,
                pool,
                ..
            } => {
                if net.checked_add(*to_pool) != Some(*gross) {
                    return Err(LedgerError::ArithmeticOverflow);
                }
                self.credit(recipient, *net)?;
                if *to_pool > 0 {
                    self.credit(pool, *to_pool)?;
                }
            }
            E::StakeBonded {
                actor,
                tier,
                amount,
            } => {
                let mut s = self.stake(actor).unwrap_or(StakeRecord {
                    tier: *tier,
                    bonded: 0,
                    unbonding: Vec::new(),
                });
                if s.tier != *tier {
                    return Err(LedgerError::StakeTierMismatch {
                        actor: actor.to_string(),
                        existing: s.tier,
                        requested: *tier,
                    });
                }
                self.debit(actor, *amount)?;
                s.bonded = s
                    .bonded
                    .checked_add(*amount)
                    .ok_or(LedgerError::ArithmeticOverflow)?;
                self.writes.stakes.insert(actor.clone(), s);
            }
            E::UnbondBegun {
                actor,
                amount,
                release_epoch,
            } => {
                let mut s = self.stake_or_err(actor, *amount)?;
                if *amount > s.bonded {
                    return Err(insufficient_stake(actor, s.bonded, *amount));
                }
                if s.unbonding.len() >= crate::types::MAX_UNBONDING_ENTRIES {
                    return Err(LedgerError::TooManyUnbonding(actor.to_string()));
                }
                s.bonded -= *amount;
                s.unbonding.push(Unbonding {
                    amount: *amount,
                    release_epoch: *release_epoch,
                });
                self.writes.stakes.insert(actor.clone(), s);
            }
            E::StakeWithdrawn { actor, amount } => {
                let mut s = self.stake_or_err(actor, *amount)?;
                let epoch = self.meta().current_epoch;
                let (matured, pending): (Vec<_>, Vec<_>) = s
                    .unbonding
                    .into_iter()
                    .partition(|u| u.release_epoch <= epoch);
                let sum = matured
                    .iter()
                    .try_fold(0u64, |acc, u| acc.checked_add(u.amount))
                    .ok_or(LedgerError::ArithmeticOverflow)?;
                if sum != *amount || sum == 0 {
                    return Err(LedgerError::NothingToWithdraw(actor.to_string()));
                }
                s.unbonding = pending;
                self.writes.stakes.insert(actor.clone(), s);
                self.credit(actor, sum)?;
            }
            E::StakeSlashed { actor, amount, .. } => {
                let mut s = self.stake_or_err(actor, *amount)?;
                let available = s.total();
                if *amount > available {
                    return Err(insufficient_stake(actor, available, *amount));
                }
                let from_bonded = (*amount).min(s.bonded);
                s.bonded -= from_bonded;
                let mut rest = *amount - from_bonded;
                for u in &mut s.unbonding {
                    let take = rest.min(u.amount);
                    u.amount -= take;
                    rest -= take;
                }
                s.unbonding.retain(|u| u.amount > 0);
                self.writes.stakes.insert(actor.clone(), s);
                self.credit(&AccountId::treasury(), *amount)?;
            }
            E::TreasuryDeposited { from, amount } => {
                self.debit(from, *amount)?;
                self.credit(&AccountId::treasury(), *amount)?;
            }
            E::DistributionCommitted {
                distribution_id,
                source,
                epoch_id,
                root,
                total,
                leaves,
            } => {
                self.commit_distribution(distribution_id, source, *epoch_id, root, *total, *leaves)?
            }
            E::DistributionClaimed {
                distribution_id,
                index,
                recipient,
                amount,
                kind,
                proof,
            } => {
                self.claim_distribution(distribution_id, *index, recipient, *amount, *kind, proof)?
            }
            E::InflationMinted { epoch, amount } => {
                let mut meta = self.meta();
                if !meta.minted_epochs.insert(*epoch) {
                    return Err(LedgerError::InflationAlreadyMinted(*epoch));
                }
                meta.minted_total = meta
                    .minted_total
                    .checked_add(*amount)
                    .ok_or(LedgerError::ArithmeticOverflow)?;
                self.writes.meta = Some(meta);
                self.credit(&AccountId::treasury(), *amount)?;
            }
        }
        Ok(())
    }

    /// `DistributionCommitted`: the total moves from its source into the pool.
    fn commit_distribution(
        &mut self,
        distribution_id: &DistributionId,
        source: &PayoutSource,
        epoch_id: u64,
        root: &[u8; 32],
        total: u64,
        leaves: u64,
    ) -> Result<(), LedgerError> {
        if self.distribution(distribution_id).is_some() {
            return Err(LedgerError::DistributionExists(distribution_id.to_string()));
        }
        if leaves == 0 {
            return Err(LedgerError::InvalidDistribution("no leaves"));
        }
        match source {
            PayoutSource::Treasury => self.debit(&AccountId::treasury(), total)?,
            PayoutSource::RewardPool(epoch) => {
                self.debit(&AccountId::reward_pool(*epoch), total)?
            }
            PayoutSource::Account(account) => self.debit(account, total)?,
            PayoutSource::Escrow(_) => {
                return Err(LedgerError::InvalidDistribution(
                    "an escrow cannot fund a distribution",
                ))
            }
        }
        let record = DistributionRecord {
            source: source.clone(),
            epoch_id,
            root: *root,
            total,
            leaves,
            paid: 0,
            claimed: 0,
        };
        self.writes
            .distributions
            .insert(distribution_id.clone(), record);
        Ok(())
    }

    /// `DistributionClaimed`: the proof leads to the root, the leaf was not claimed
    /// and the pool holds the amount; the recipient is paid.
    fn claim_distribution(
        &mut self,
        distribution_id: &DistributionId,
        index: u64,
        recipient: &AccountId,
        amount: u64,
        kind: PayoutKind,
        proof: &[[u8; 32]],
    ) -> Result<(), LedgerError> {
        let mut d = self
            .distribution(distribution_id)
            .ok_or_else(|| LedgerError::DistributionNotFound(distribution_id.to_string()))?;
        if index >= d.leaves {
            return Err(LedgerError::ClaimIndexOutOfRange {
                distribution_id: distribution_id.to_string(),
                index,
                leaves: d.leaves,
            });
        }
        let leaf = DistributionLeaf {
            index,
            recipient: recipient.clone(),
            amount,
            kind,
        };
        let proof_ok = proof.len() <= MAX_PROOF_HASHES
            && distributor::verify(
                &d.commitment(distribution_id),
                &leaf,
                &MerkleProof {
                    siblings: proof.to_vec(),
                },
            );
        if !proof_ok {
            return Err(LedgerError::BadProof {
                distribution_id: distribution_id.to_string(),
                index,
            });
        }
        let key = ClaimKey {
            distribution_id: distribution_id.clone(),
            index,
        };
        if self.is_claimed(&key) {
            return Err(LedgerError::AlreadyClaimed {
                distribution_id: distribution_id.to_string(),
                index,
            });
        }
        d.paid = d
            .paid
            .checked_add(amount)
            .filter(|paid| *paid <= d.total)
            .ok_or_else(|| LedgerError::ClaimExceedsTotal {
                distribution_id: distribution_id.to_string(),
                remaining: d.remaining(),
                amount,
            })?;
        d.claimed = d
            .claimed
            .checked_add(1)
            .ok_or(LedgerError::ArithmeticOverflow)?;
        self.writes.distributions.insert(distribution_id.clone(), d);
        self.writes.claims.insert(
            key,
            ClaimRecord {
                recipient: recipient.clone(),
                amount,
                kind,
            },
        );
        self.credit(recipient, amount)?;
        Ok(())
    }

    fn stake_or_err(&self, actor: &AccountId, requested: u64) -> Result<StakeRecord, LedgerError> {
        self.stake(actor)
            .ok_or_else(|| insufficient_stake(actor, 0, requested))
    }
}

fn insufficient_stake(actor: &AccountId, available: u64, requested: u64) -> LedgerError {
    LedgerError::InsufficientStake {
        actor: actor.to_string(),
        available,
        requested,
    }
}
