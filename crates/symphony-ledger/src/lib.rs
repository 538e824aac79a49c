//! # symphony-ledger: the settlement ledger boundary
//!
//! SCP keeps all protocol-managed SYM in four contracts on Aptos: **escrow** (task
//! fees locked at admission, refunded or paid out on finalization), **staking**
//! (`S_master`, `S_enterprise`, `S_producer`; bond, unbond after a period, slash),
//! **reward** (distribution of a [`PayoutInstructionSet`] with the producer staking
//! multiplier) and **treasury** (protocol share, slashed stake, inflation). This crate
//! puts them behind one trait, [`SettlementLedger`], with two embedded
//! implementations that share one pure engine:
//!
//! - [`MemoryLedger`]: in-process, for tests and simulations.
//! - [`RedbLedger`]: persisted in redb; an append-only event table plus materialized
//!   rows, each operation one `Durability::Immediate` write transaction.
//!
//! ## Design
//!
//! A [`Command`] is executed by a pure function (no IO, no clock: epochs advance only
//! by [`Command::AdvanceEpoch`]) that validates it against the committed state and
//! yields [`LedgerEvent`]s plus the rows they change. The implementation then persists
//! and merges them. Replaying the event log from genesis rebuilds the state exactly;
//! [`SettlementLedger::reconcile`] does that and compares.
//!
//! ## Invariants
//!
//! - Amounts are `u64` base units; every addition and subtraction is checked
//!   (overflow → [`LedgerError::ArithmeticOverflow`], underflow →
//!   [`LedgerError::InsufficientBalance`] and friends). Nothing wraps, no balance is
//!   ever negative.
//! - Total supply (balances + escrow remainders + stakes + distribution pools) =
//!   genesis + minted − burned.
//!   Tokens are created only by genesis and [`SettlementLedger::mint_inflation`] (once
//!   per epoch, never for a future epoch). No operation burns today.
//! - **Slashed stake goes to the treasury**, not burned: it keeps supply changes
//!   limited to inflation, and governance can later burn or redistribute it
//!   explicitly. Slashing takes bonded stake first, then unbonding entries oldest first
//!   (unbonding stake stays slashable until withdrawn).
//! - A payout id is executed at most once, ever; an escrow is paid out at most once.
//!   Retrying a payout with the same id, instruction-set hash and source is a no-op
//!   (`already_applied`); any other reuse is [`LedgerError::PayoutConflict`] or
//!   [`LedgerError::EscrowAlreadyPaidOut`].
//! - Staking multiplier: for [`PayoutKind::DataUsageDividend`] and
//!   [`PayoutKind::DataQualityReward`], a recipient bonded at least `min_stake_producer`
//!   in the `Producer` tier gets 100%; otherwise it gets `floor(amount / 2)` and the
//!   epoch's reward pool ([`AccountId::reward_pool`]) gets the rest, so the odd unit goes
//!   to the pool and the two parts always sum to the instruction.
//! - Accounts prefixed `protocol:` (treasury, reward pools) are ledger-owned: no
//!   command debits them except a payout whose source they are.
//! - Inflation is minted into the treasury; node operation rewards are then paid with
//!   [`SettlementLedger::distribute`] from [`PayoutSource::Treasury`].
//!
//! ## Merkle distributions
//!
//! An epoch's producer payouts need not be one account write per producer.
//! [`Command::CommitDistribution`] (`distributor::commit`) commits the root of a
//! [`distributor::Distribution`] over `(index, recipient, amount, kind)` leaves and
//! moves its total from the source (treasury, a reward pool, or a signing user
//! account; not an escrow) into a pool the ledger holds ([`DistributionRecord`]): one
//! event and one write, whatever the number of leaves. Each producer then claims its
//! leaf with [`Command::ClaimDistribution`] (`distributor::claim`) and a Merkle
//! proof, verified against the stored root with the leaf and node hashing of
//! [`distributor`]. The ledger refuses an unknown distribution, an index beyond the
//! leaves, a proof that does not lead to the root (a forged sibling, another
//! amount, recipient, kind or index, another distribution's or epoch's proof), a
//! leaf claimed before, and a claim beyond what the pool holds; a refused claim
//! changes nothing. The claim pays exactly the leaf's amount: a staking multiplier,
//! if any, is applied when the leaves are built. The claimed set is stored per leaf
//! ([`ClaimKey`] → [`ClaimRecord`]). Each `DistributionClaimed` event carries its
//! proof, so [`SettlementLedger::reconcile`] re-verifies every claim against the
//! committed root while replaying, and checks that each distribution's paid total
//! and claim count are those of its claimed set and never exceed the total.
//! Committing the same id with identical terms again is a no-op; with other terms it
//! is [`LedgerError::DistributionExists`]. Unclaimed remainders stay in the pool (no
//! expiry or sweep yet).
//!
//! ## Failure contract
//!
//! An operation either applies completely (all events appended, all rows updated,
//! durably for redb) or returns a typed [`LedgerError`] and changes nothing. Each
//! error has a stable numeric [`LedgerError::code`] shaped like a Move abort code
//! (`category << 16 | reason`), so the Aptos adapter can map aborts back to the same
//! errors. [`ReconcileError`] means corruption or a bug, never user error.
//!
//! ## Aptos mapping
//!
//! Each [`Command`] variant corresponds to one entry function and each
//! [`LedgerEvent`] to a module event. The Aptos adapter (module `aptos`, cargo feature
//! `aptos`, built on the crates.io `aptos-sdk` 0.8.0) turns commands — escrow
//! operations, [`PayoutInstructionSet`]s, distribution commits and claims — into
//! entry-function payloads and
//! `RawTransaction`s with BCS-encoded arguments; its module doc has the table of
//! functions and says what is and is not exercised without a live chain. It builds
//! transactions; it does not implement [`SettlementLedger`] against a chain (no
//! submission, no view functions) yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "aptos")]
pub mod aptos;
pub mod distributor;
mod engine;
mod error;
mod event;
mod ledger;
mod memory;
mod reconcile;
mod redb_ledger;
mod state;
mod types;

pub use engine::{Command, Outcome};
pub use error::LedgerError;
pub use event::{LedgerEvent, PayoutSource};
pub use ledger::SettlementLedger;
pub use memory::MemoryLedger;
pub use reconcile::{ReconcileError, ReconcileReport};
pub use redb_ledger::RedbLedger;
pub use state::{
    ClaimKey, ClaimRecord, DistributionRecord, EscrowRecord, LedgerState, Meta, PayoutRecord,
    StakeRecord, Unbonding, MAX_PROOF_HASHES,
};
pub use types::{
    producer_split, AccountId, DistributionId, EscrowId, Genesis, LedgerConfig, PayoutId,
    PayoutInstruction, PayoutInstructionSet, PayoutKind, StakeTier, MAX_ID_LEN,
    MAX_PAYOUT_INSTRUCTIONS, MAX_TEXT_LEN, MAX_UNBONDING_ENTRIES, PROTOCOL_ACCOUNT_PREFIX,
};
