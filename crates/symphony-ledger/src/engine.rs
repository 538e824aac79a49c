//! Commands (one per contract entry function) and their pure execution.
//!
//! `execute(state, command)` validates the command against the committed state and
//! returns the events it emits plus the rows they change; it performs no IO. Both
//! ledgers call it, then persist and merge; so both have the same semantics.

use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::event::{LedgerEvent, PayoutSource};
use crate::state::{LedgerState, Tx, Writes};
use crate::types::{
    producer_split, AccountId, DistributionId, EscrowId, Genesis, PayoutInstructionSet, PayoutKind,
    StakeTier, MAX_PAYOUT_INSTRUCTIONS, MAX_TEXT_LEN,
};

/// A ledger operation. Each variant maps one-to-one to an entry function of the
/// on-chain modules (`escrow::lock(owner, escrow_id, amount)`, …); the signer of the
/// entry function is the first account field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `coin::transfer(from, to, amount)`.
    Transfer {
        /// Payer (signer).
        from: AccountId,
        /// Payee.
        to: AccountId,
        /// Amount.
        amount: u64,
    },
    /// `governance::advance_epoch(epoch)` (master cluster).
    AdvanceEpoch {
        /// New epoch; must be greater than the current one.
        epoch: u64,
    },
    /// `escrow::lock(owner, escrow_id, amount)`.
    EscrowLock {
        /// Escrow id (`budget_lock_ref`).
        escrow_id: EscrowId,
        /// Submitter paying (signer).
        owner: AccountId,
        /// Amount.
        amount: u64,
    },
    /// `escrow::refund(escrow_id, amount)`: unused escrow back to its owner.
    EscrowRefund {
        /// Escrow id.
        escrow_id: EscrowId,
        /// Amount.
        amount: u64,
    },
    /// `escrow::payout(escrow_id, set)` on finalization.
    EscrowPayout {
        /// Escrow id.
        escrow_id: EscrowId,
        /// Instructions.
        set: PayoutInstructionSet,
    },
    /// `reward::distribute(source, set)` from the treasury, an epoch reward pool, or
    /// (`reward::distribute_from`) a user account that signs.
    RewardDistribute {
        /// Treasury or reward pool (an escrow source is refused: use `EscrowPayout`).
        source: PayoutSource,
        /// Instructions.
        set: PayoutInstructionSet,
    },
    /// `staking::bond(actor, tier, amount)`.
    StakeBond {
        /// Actor (signer).
        actor: AccountId,
        /// Tier.
        tier: StakeTier,
        /// Amount.
        amount: u64,
    },
    /// `staking::begin_unbond(actor, amount)`.
    StakeBeginUnbond {
        /// Actor (signer).
        actor: AccountId,
        /// Amount.
        amount: u64,
    },
    /// `staking::withdraw(actor)`: all matured unbonding stake.
    StakeWithdraw {
        /// Actor (signer).
        actor: AccountId,
    },
    /// `staking::slash(actor, amount, reason)` (master cluster).
    StakeSlash {
        /// Slashed actor.
        actor: AccountId,
        /// Amount.
        amount: u64,
        /// Reason (≤ 256 bytes).
        reason: String,
    },
    /// `treasury::deposit(from, amount)`.
    TreasuryDeposit {
        /// Payer (signer).
        from: AccountId,
        /// Amount.
        amount: u64,
    },
    /// `treasury::mint_inflation(epoch, amount)` (master cluster).
    TreasuryMintInflation {
        /// Epoch (≤ current epoch, once per epoch).
        epoch: u64,
        /// Amount.
        amount: u64,
    },
    /// `distributor::commit(distribution_id, epoch, root, total, leaves)` (master
    /// cluster, or `distributor::commit_from` signed by a user account): moves
    /// `total` from `source` into the distribution's pool, claimable against `root`
    /// (built by [`crate::distributor::Distribution`]). One write, whatever the
    /// number of leaves. An identical retry is a no-op; the id with other terms is
    /// [`LedgerError::DistributionExists`].
    CommitDistribution {
        /// Treasury, an epoch reward pool, or a user account that signs (an escrow
        /// source is refused).
        source: PayoutSource,
        /// Distribution id (unique, ever).
        distribution_id: DistributionId,
        /// The epoch whose payouts it holds (hashed into every leaf).
        epoch: u64,
        /// Merkle root of the leaves.
        root: [u8; 32],
        /// Sum of the leaves' amounts.
        total: u64,
        /// Number of leaves (at least one).
        leaves: u64,
    },
    /// `distributor::claim(distribution_id, index, recipient, amount, kind, proof)`:
    /// pays leaf `index` to `recipient` from the pool if `proof` leads from the leaf
    /// to the committed root, the leaf was not claimed and the pool holds `amount`.
    ClaimDistribution {
        /// Distribution id.
        distribution_id: DistributionId,
        /// Leaf index.
        index: u64,
        /// Recipient named by the leaf.
        recipient: AccountId,
        /// Amount named by the leaf.
        amount: u64,
        /// Kind named by the leaf.
        kind: PayoutKind,
        /// Sibling hashes, leaf level first ([`crate::distributor::MerkleProof`]).
        proof: Vec<[u8; 32]>,
    },
}

/// Result of executing a command against committed state.
#[derive(Debug)]
pub(crate) struct Executed {
    pub(crate) events: Vec<LedgerEvent>,
    pub(crate) writes: Writes,
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Sequence number of the first event (meaningless when `events` is empty).
    pub first_seq: u64,
    /// Events appended (empty for an idempotent retry).
    pub events: Vec<LedgerEvent>,
    /// True when the command had already been applied and nothing changed.
    pub already_applied: bool,
}

struct Emitter<'a> {
    tx: Tx<'a>,
    events: Vec<LedgerEvent>,
}

impl Emitter<'_> {
    fn emit(&mut self, e: LedgerEvent) -> Result<(), LedgerError> {
        self.tx.apply(&e)?;
        self.events.push(e);
        Ok(())
    }
}

fn positive(amount: u64) -> Result<(), LedgerError> {
    if amount == 0 {
        Err(LedgerError::ZeroAmount)
    } else {
        Ok(())
    }
}

fn user_account(a: &AccountId) -> Result<(), LedgerError> {
    if a.is_protocol() {
        Err(LedgerError::ProtocolAccount(a.to_string()))
    } else {
        Ok(())
    }
}

/// Builds the genesis event and its writes for an empty state.
pub(crate) fn genesis(state: &LedgerState, genesis: &Genesis) -> Result<Executed, LedgerError> {
    let mut em = Emitter {
        tx: Tx::new(state),
        events: Vec::new(),
    };
    em.emit(LedgerEvent::GenesisApplied(genesis.clone()))?;
    Ok(Executed {
        events: em.events,
        writes: em.tx.writes,
    })
}

/// Validates `command` against `state` and computes its events and writes.
pub(crate) fn execute(state: &LedgerState, command: &Command) -> Result<Executed, LedgerError> {
    let mut em = Emitter {
        tx: Tx::new(state),
        events: Vec::new(),
    };
    if em.tx.meta().config.is_none() {
        return Err(LedgerError::Genesis);
    }
    run(&mut em, command)?;
    Ok(Executed {
        events: em.events,
        writes: em.tx.writes,
    })
}

/// Commits an execution whose first event gets sequence `first_seq`: `persist`
/// records the events and their writes durably (it is not called for an idempotent
/// retry, which has neither), and only once it succeeded are the writes merged into
/// the cached `state`. Both ledgers commit through here, so a failed `persist` leaves
/// the state unchanged in both.
pub(crate) fn commit(
    state: &mut LedgerState,
    first_seq: u64,
    executed: Executed,
    persist: impl FnOnce(&Executed) -> Result<(), LedgerError>,
) -> Result<Outcome, LedgerError> {
    let already_applied = executed.events.is_empty();
    if !already_applied {
        persist(&executed)?;
        state.merge(executed.writes);
    }
    Ok(Outcome {
        first_seq,
        events: executed.events,
        already_applied,
    })
}

fn run(em: &mut Emitter<'_>, command: &Command) -> Result<(), LedgerError> {
    use Command as C;
    use LedgerEvent as E;
    match command {
        C::Transfer { from, to, amount } => {
            positive(*amount)?;
            user_account(from)?;
            em.emit(E::Transferred {
                from: from.clone(),
                to: to.clone(),
                amount: *amount,
            })
        }
        C::AdvanceEpoch { epoch } => em.emit(E::EpochAdvanced { epoch: *epoch }),
        C::EscrowLock {
            escrow_id,
            owner,
            amount,
        } => {
            positive(*amount)?;
            user_account(owner)?;
            match em.tx.escrow(escrow_id) {
                // Idempotent retry of the same lock.
                Some(e) if &e.owner == owner && e.locked == *amount => Ok(()),
                Some(_) => Err(LedgerError::EscrowAlreadyExists(escrow_id.to_string())),
                None => em.emit(E::EscrowLocked {
                    escrow_id: escrow_id.clone(),
                    owner: owner.clone(),
                    amount: *amount,
                }),
            }
        }
        C::EscrowRefund { escrow_id, amount } => {
            positive(*amount)?;
            let e = em
                .tx
                .escrow(escrow_id)
                .ok_or_else(|| LedgerError::EscrowNotFound(escrow_id.to_string()))?;
            em.emit(E::EscrowRefunded {
                escrow_id: escrow_id.clone(),
                owner: e.owner,
                amount: *amount,
            })
        }
        C::EscrowPayout { escrow_id, set } => {
            if em.tx.escrow(escrow_id).is_none() {
                return Err(LedgerError::EscrowNotFound(escrow_id.to_string()));
            }
            payout(em, PayoutSource::Escrow(escrow_id.clone()), set)
        }
        C::RewardDistribute { source, set } => {
            match source {
                PayoutSource::Escrow(_) => {
                    return Err(LedgerError::InvalidPayout(
                        "escrow source: use EscrowPayout",
                    ))
                }
                PayoutSource::Account(account) => user_account(account)?,
                PayoutSource::Treasury | PayoutSource::RewardPool(_) => {}
            }
            payout(em, source.clone(), set)
        }
        C::StakeBond {
            actor,
            tier,
            amount,
        } => {
            positive(*amount)?;
            user_account(actor)?;
            em.emit(E::StakeBonded {
                actor: actor.clone(),
                tier: *tier,
                amount: *amount,
            })
        }
        C::StakeBeginUnbond { actor, amount } => {
            positive(*amount)?;
            let meta = em.tx.meta();
            let period = meta.config.map(|c| c.unbonding_period_epochs).unwrap_or(0);
            let release_epoch = meta
                .current_epoch
                .checked_add(period)
                .ok_or(LedgerError::ArithmeticOverflow)?;
            em.emit(E::UnbondBegun {
                actor: actor.clone(),
                amount: *amount,
                release_epoch,
            })
        }
        C::StakeWithdraw { actor } => {
            let epoch = em.tx.meta().current_epoch;
            let matured = em
                .tx
                .stake(actor)
                .map(|s| {
                    s.unbonding
                        .iter()
                        .filter(|u| u.release_epoch <= epoch)
                        .try_fold(0u64, |acc, u| acc.checked_add(u.amount))
                })
                .unwrap_or(Some(0))
                .ok_or(LedgerError::ArithmeticOverflow)?;
            if matured == 0 {
                return Err(LedgerError::NothingToWithdraw(actor.to_string()));
            }
            em.emit(E::StakeWithdrawn {
                actor: actor.clone(),
                amount: matured,
            })
        }
        C::StakeSlash {
            actor,
            amount,
            reason,
        } => {
            positive(*amount)?;
            if reason.len() > MAX_TEXT_LEN {
                return Err(LedgerError::TextTooLong);
            }
            em.emit(E::StakeSlashed {
                actor: actor.clone(),
                amount: *amount,
                reason: reason.clone(),
            })
        }
        C::TreasuryDeposit { from, amount } => {
            positive(*amount)?;
            user_account(from)?;
            em.emit(E::TreasuryDeposited {
                from: from.clone(),
                amount: *amount,
            })
        }
        C::TreasuryMintInflation { epoch, amount } => {
            positive(*amount)?;
            let current = em.tx.meta().current_epoch;
            if *epoch > current {
                return Err(LedgerError::InvalidEpoch {
                    current,
                    requested: *epoch,
                });
            }
            em.emit(E::InflationMinted {
                epoch: *epoch,
                amount: *amount,
            })
        }
        C::CommitDistribution {
            source,
            distribution_id,
            epoch,
            root,
            total,
            leaves,
        } => commit_distribution(em, source, distribution_id, *epoch, root, *total, *leaves),
        C::ClaimDistribution {
            distribution_id,
            index,
            recipient,
            amount,
            kind,
            proof,
        } => em.emit(E::DistributionClaimed {
            distribution_id: distribution_id.clone(),
            index: *index,
            recipient: recipient.clone(),
            amount: *amount,
            kind: *kind,
            proof: proof.clone(),
        }),
    }
}

/// `distributor::commit`: checks the terms and emits `DistributionCommitted` (an
/// identical retry emits nothing).
fn commit_distribution(
    em: &mut Emitter<'_>,
    source: &PayoutSource,
    distribution_id: &DistributionId,
    epoch: u64,
    root: &[u8; 32],
    total: u64,
    leaves: u64,
) -> Result<(), LedgerError> {
    positive(total)?;
    if leaves == 0 {
        return Err(LedgerError::InvalidDistribution("no leaves"));
    }
    match source {
        PayoutSource::Escrow(_) => {
            return Err(LedgerError::InvalidDistribution(
                "an escrow cannot fund a distribution",
            ))
        }
        PayoutSource::Account(account) => user_account(account)?,
        PayoutSource::Treasury | PayoutSource::RewardPool(_) => {}
    }
    if let Some(d) = em.tx.distribution(distribution_id) {
        let same = &d.source == source
            && d.epoch_id == epoch
            && &d.root == root
            && d.total == total
            && d.leaves == leaves;
        return if same {
            Ok(())
        } else {
            Err(LedgerError::DistributionExists(distribution_id.to_string()))
        };
    }
    em.emit(LedgerEvent::DistributionCommitted {
        distribution_id: distribution_id.clone(),
        source: source.clone(),
        epoch_id: epoch,
        root: *root,
        total,
        leaves,
    })
}

/// Executes a payout, idempotently: the same id with the same set hash and source is a
/// no-op; anything else reusing the id is a conflict.
fn payout(
    em: &mut Emitter<'_>,
    source: PayoutSource,
    set: &PayoutInstructionSet,
) -> Result<(), LedgerError> {
    let set_hash = set.hash()?;
    if let Some(existing) = em.tx.payout(&set.payout_id) {
        return if existing.set_hash == set_hash && existing.source == source {
            Ok(())
        } else {
            Err(LedgerError::PayoutConflict(set.payout_id.to_string()))
        };
    }
    validate_set(set)?;
    let total = set.total()?;
    em.emit(LedgerEvent::PayoutExecuted {
        payout_id: set.payout_id.clone(),
        source,
        set_hash,
        epoch_id: set.epoch_id,
        settlement_ref: set.settlement_ref.clone(),
        total,
    })?;
    let pool = AccountId::reward_pool(set.epoch_id);
    for instruction in &set.instructions {
        let staked = !instruction.kind.applies_staking_multiplier()
            || em.tx.is_staked(&instruction.recipient, StakeTier::Producer);
        let (net, to_pool) = producer_split(instruction.amount, staked);
        em.emit(LedgerEvent::RewardPaid {
            payout_id: set.payout_id.clone(),
            recipient: instruction.recipient.clone(),
            kind: instruction.kind,
            gross: instruction.amount,
            net,
            to_pool,
            pool: pool.clone(),
        })?;
    }
    Ok(())
}

fn validate_set(set: &PayoutInstructionSet) -> Result<(), LedgerError> {
    if set.instructions.is_empty() {
        return Err(LedgerError::InvalidPayout("no instructions"));
    }
    if set.instructions.len() > MAX_PAYOUT_INSTRUCTIONS {
        return Err(LedgerError::InvalidPayout("too many instructions"));
    }
    if set.settlement_ref.len() > MAX_TEXT_LEN {
        return Err(LedgerError::TextTooLong);
    }
    if set.instructions.iter().any(|i| i.amount == 0) {
        return Err(LedgerError::InvalidPayout("zero-amount instruction"));
    }
    Ok(())
}

/// Rebuilds state by applying `events` to an empty state, in order.
pub(crate) fn replay<'a>(
    events: impl IntoIterator<Item = &'a LedgerEvent>,
) -> Result<LedgerState, (usize, LedgerError)> {
    let mut state = LedgerState::default();
    for (index, event) in events.into_iter().enumerate() {
        let mut tx = Tx::new(&state);
        tx.apply(event).map_err(|e| (index, e))?;
        let writes = tx.writes;
        state.merge(writes);
    }
    Ok(state)
}
