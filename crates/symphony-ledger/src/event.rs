//! Ledger events: the append-only log, shaped like the on-chain module events.

use serde::{Deserialize, Serialize};

use crate::types::{AccountId, DistributionId, EscrowId, Genesis, PayoutId, PayoutKind, StakeTier};

/// Where a payout's funds come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutSource {
    /// A locked escrow (task fee on finalization).
    Escrow(EscrowId),
    /// The treasury (e.g. inflation-funded node operation rewards).
    Treasury,
    /// An epoch's reward pool.
    RewardPool(u64),
    /// A user account distributing what it holds, e.g. a Vault's dividend account
    /// paying its producers (`reward::distribute_from(signer, set)`). Never a
    /// `protocol:` account.
    Account(AccountId),
}

/// One entry of the ledger's event log. Replaying the log from the start rebuilds
/// every balance exactly (see `reconcile`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEvent {
    /// The ledger was created (always sequence 0).
    GenesisApplied(Genesis),
    /// Tokens moved between two accounts.
    Transferred {
        /// Payer.
        from: AccountId,
        /// Payee.
        to: AccountId,
        /// Amount.
        amount: u64,
    },
    /// The current epoch advanced.
    EpochAdvanced {
        /// New epoch.
        epoch: u64,
    },
    /// `escrow::lock`.
    EscrowLocked {
        /// Escrow id.
        escrow_id: EscrowId,
        /// Owner (submitter) who paid.
        owner: AccountId,
        /// Amount locked.
        amount: u64,
    },
    /// `escrow::refund`: unused escrow back to its owner.
    EscrowRefunded {
        /// Escrow id.
        escrow_id: EscrowId,
        /// Owner credited.
        owner: AccountId,
        /// Amount.
        amount: u64,
    },
    /// A payout instruction set was executed (followed by one `RewardPaid` per instruction).
    PayoutExecuted {
        /// Payout id.
        payout_id: PayoutId,
        /// Source of funds.
        source: PayoutSource,
        /// Hash of the instruction set.
        set_hash: [u8; 32],
        /// Epoch of the settlement.
        epoch_id: u64,
        /// Settlement reference.
        settlement_ref: String,
        /// Total debited from the source.
        total: u64,
    },
    /// One instruction paid, after the staking multiplier.
    RewardPaid {
        /// Payout id.
        payout_id: PayoutId,
        /// Recipient.
        recipient: AccountId,
        /// Kind.
        kind: PayoutKind,
        /// Instructed amount.
        gross: u64,
        /// Credited to the recipient.
        net: u64,
        /// Credited to `pool` (`gross - net`).
        to_pool: u64,
        /// The epoch reward pool account.
        pool: AccountId,
    },
    /// `staking::bond`.
    StakeBonded {
        /// Actor.
        actor: AccountId,
        /// Tier.
        tier: StakeTier,
        /// Amount moved from balance to stake.
        amount: u64,
    },
    /// `staking::begin_unbond`.
    UnbondBegun {
        /// Actor.
        actor: AccountId,
        /// Amount moved from bonded to unbonding.
        amount: u64,
        /// First epoch in which it can be withdrawn.
        release_epoch: u64,
    },
    /// `staking::withdraw`: matured unbonding stake back to balance.
    StakeWithdrawn {
        /// Actor.
        actor: AccountId,
        /// Amount.
        amount: u64,
    },
    /// `staking::slash`: stake moved to the treasury.
    StakeSlashed {
        /// Actor.
        actor: AccountId,
        /// Total slashed (bonded first, then unbonding entries oldest first).
        amount: u64,
        /// Why (e.g. a confirmed challenge id).
        reason: String,
    },
    /// `treasury::deposit`.
    TreasuryDeposited {
        /// Payer.
        from: AccountId,
        /// Amount.
        amount: u64,
    },
    /// `treasury::mint_inflation`: the only event that creates tokens after genesis.
    InflationMinted {
        /// Epoch the inflation belongs to.
        epoch: u64,
        /// Amount credited to the treasury.
        amount: u64,
    },
    /// `distributor::commit`: `total` moved from `source` into the distribution's
    /// pool, claimable against `root` (one event, whatever the number of leaves).
    DistributionCommitted {
        /// Distribution id.
        distribution_id: DistributionId,
        /// Source of funds (treasury, a reward pool, or a signing user account).
        source: PayoutSource,
        /// The epoch whose payouts it holds (part of every leaf hash).
        epoch_id: u64,
        /// Merkle root of the `(index, recipient, amount, kind)` leaves.
        root: [u8; 32],
        /// Sum of the leaves' amounts, debited from the source.
        total: u64,
        /// Number of leaves.
        leaves: u64,
    },
    /// `distributor::claim`: leaf `index` paid from the distribution's pool. The
    /// proof is kept so that replaying the log re-verifies every claim against the
    /// committed root.
    DistributionClaimed {
        /// Distribution id.
        distribution_id: DistributionId,
        /// Leaf index.
        index: u64,
        /// Recipient credited.
        recipient: AccountId,
        /// Amount credited.
        amount: u64,
        /// Kind of the leaf.
        kind: PayoutKind,
        /// Sibling hashes from the leaf up to the root.
        proof: Vec<[u8; 32]>,
    },
}
