//! Typed errors with stable numeric codes mirroring Aptos Move abort codes.
//!
//! A Move abort code is `(category << 16) | reason`, with the categories of
//! `std::error` (1 invalid_argument, 2 out_of_range, 3 invalid_state, 6 not_found,
//! 8 already_exists). The reasons below are the `E*` constants the on-chain modules
//! will declare; the numbers are frozen.

use crate::types::StakeTier;

/// `std::error::invalid_argument`.
const INVALID_ARGUMENT: u64 = 0x1;
/// `std::error::out_of_range`.
const OUT_OF_RANGE: u64 = 0x2;
/// `std::error::invalid_state`.
const INVALID_STATE: u64 = 0x3;
/// `std::error::not_found`.
const NOT_FOUND: u64 = 0x6;
/// `std::error::already_exists`.
const ALREADY_EXISTS: u64 = 0x8;
/// Not a Move category: failures of the embedded implementation itself.
const EMBEDDED: u64 = 0xFF;

/// Why a ledger operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// `EINSUFFICIENT_BALANCE` (1): the account cannot pay.
    #[error("insufficient balance in {account}: needed {needed}, available {available}")]
    InsufficientBalance {
        /// Debited account.
        account: String,
        /// Amount needed.
        needed: u64,
        /// Amount available.
        available: u64,
    },
    /// `EARITHMETIC_OVERFLOW` (2): an amount would exceed `u64::MAX`.
    #[error("arithmetic overflow")]
    ArithmeticOverflow,
    /// `EESCROW_NOT_FOUND` (3).
    #[error("escrow {0} not found")]
    EscrowNotFound(String),
    /// `EESCROW_ALREADY_EXISTS` (4): the id is taken with different terms.
    #[error("escrow {0} already exists with different terms")]
    EscrowAlreadyExists(String),
    /// `EESCROW_INSUFFICIENT` (5): refund or payout exceeds what remains locked.
    #[error("escrow {escrow_id} holds {remaining}, requested {requested}")]
    EscrowInsufficient {
        /// Escrow id.
        escrow_id: String,
        /// Remaining locked amount.
        remaining: u64,
        /// Requested amount.
        requested: u64,
    },
    /// `EESCROW_ALREADY_PAID_OUT` (6): the escrow was paid out by another payout.
    #[error("escrow {escrow_id} already paid out by {payout_id}")]
    EscrowAlreadyPaidOut {
        /// Escrow id.
        escrow_id: String,
        /// The payout that paid it.
        payout_id: String,
    },
    /// `EPAYOUT_CONFLICT` (7): the payout id was used with a different instruction set
    /// or source.
    #[error("payout {0} already executed with a different instruction set or source")]
    PayoutConflict(String),
    /// `EINVALID_PAYOUT` (8): empty, too large, or a zero-amount instruction.
    #[error("invalid payout instruction set: {0}")]
    InvalidPayout(&'static str),
    /// `ESTAKE_TIER_MISMATCH` (9): the actor already stakes in another tier.
    #[error("actor {actor} stakes as {existing:?}, not {requested:?}")]
    StakeTierMismatch {
        /// Actor.
        actor: String,
        /// Tier of the existing stake.
        existing: StakeTier,
        /// Tier requested.
        requested: StakeTier,
    },
    /// `EINSUFFICIENT_STAKE` (10): unbond or slash exceeds the stake.
    #[error("actor {actor} has stake {available}, requested {requested}")]
    InsufficientStake {
        /// Actor.
        actor: String,
        /// Stake available for the operation.
        available: u64,
        /// Requested amount.
        requested: u64,
    },
    /// `ENOTHING_TO_WITHDRAW` (11): no unbonding entry has matured.
    #[error("actor {0} has no matured unbonding stake")]
    NothingToWithdraw(String),
    /// `EZERO_AMOUNT` (12).
    #[error("amount must be positive")]
    ZeroAmount,
    /// `EINFLATION_ALREADY_MINTED` (13): one mint per epoch.
    #[error("inflation for epoch {0} already minted")]
    InflationAlreadyMinted(u64),
    /// `EEPOCH_NOT_CURRENT` (14): epoch not increasing, or minting for a future epoch.
    #[error("epoch {requested} invalid; current epoch is {current}")]
    InvalidEpoch {
        /// Current epoch.
        current: u64,
        /// Requested epoch.
        requested: u64,
    },
    /// `EINVALID_IDENTIFIER` (15).
    #[error("invalid {kind} identifier {value:?}")]
    InvalidIdentifier {
        /// Which identifier.
        kind: &'static str,
        /// The (truncated) value.
        value: String,
    },
    /// `EPROTOCOL_ACCOUNT` (16): commands cannot debit ledger-owned accounts directly.
    #[error("account {0} is protocol-owned and cannot be debited by this operation")]
    ProtocolAccount(String),
    /// `ETEXT_TOO_LONG` (17).
    #[error("text field longer than {max} bytes", max = crate::types::MAX_TEXT_LEN)]
    TextTooLong,
    /// `ETOO_MANY_UNBONDING` (18).
    #[error("actor {0} has too many pending unbonding entries")]
    TooManyUnbonding(String),
    /// `ENOT_INITIALIZED` (19) / genesis applied twice.
    #[error("ledger genesis missing or applied twice")]
    Genesis,
    /// `EDISTRIBUTION_EXISTS` (20): the distribution id was committed with other terms.
    #[error("distribution {0} already committed with different terms")]
    DistributionExists(String),
    /// `EDISTRIBUTION_NOT_FOUND` (21).
    #[error("distribution {0} not found")]
    DistributionNotFound(String),
    /// `EINVALID_DISTRIBUTION` (22): no leaves, an escrow source, or a proof longer
    /// than any tree of `u64` leaves.
    #[error("invalid distribution: {0}")]
    InvalidDistribution(&'static str),
    /// `ECLAIM_INDEX_OUT_OF_RANGE` (23): the claimed index is not a leaf.
    #[error("distribution {distribution_id} has {leaves} leaves; no leaf {index}")]
    ClaimIndexOutOfRange {
        /// Distribution id.
        distribution_id: String,
        /// Claimed index.
        index: u64,
        /// Leaves committed.
        leaves: u64,
    },
    /// `EBAD_PROOF` (24): the proof does not lead from the claimed leaf to the root.
    #[error("distribution {distribution_id}: the proof for leaf {index} does not lead to the committed root")]
    BadProof {
        /// Distribution id.
        distribution_id: String,
        /// Claimed index.
        index: u64,
    },
    /// `EALREADY_CLAIMED` (25).
    #[error("distribution {distribution_id}: leaf {index} was already claimed")]
    AlreadyClaimed {
        /// Distribution id.
        distribution_id: String,
        /// Claimed index.
        index: u64,
    },
    /// `ECLAIM_EXCEEDS_TOTAL` (26): paying the claim would exceed the committed total.
    #[error("distribution {distribution_id}: claim of {amount} exceeds the remaining {remaining}")]
    ClaimExceedsTotal {
        /// Distribution id.
        distribution_id: String,
        /// What remains unclaimed.
        remaining: u64,
        /// The claim.
        amount: u64,
    },
    /// Embedded only: the storage engine failed; nothing was applied.
    #[error("storage error: {0}")]
    Storage(String),
    /// Embedded only: encoding or decoding a stored value failed.
    #[error("encoding error: {0}")]
    Encoding(String),
}

impl LedgerError {
    /// Stable numeric code: `(category << 16) | reason`, as a Move abort code.
    pub fn code(&self) -> u64 {
        let (category, reason) = match self {
            Self::InsufficientBalance { .. } => (INVALID_ARGUMENT, 1),
            Self::ArithmeticOverflow => (OUT_OF_RANGE, 2),
            Self::EscrowNotFound(_) => (NOT_FOUND, 3),
            Self::EscrowAlreadyExists(_) => (ALREADY_EXISTS, 4),
            Self::EscrowInsufficient { .. } => (INVALID_ARGUMENT, 5),
            Self::EscrowAlreadyPaidOut { .. } => (INVALID_STATE, 6),
            Self::PayoutConflict(_) => (INVALID_STATE, 7),
            Self::InvalidPayout(_) => (INVALID_ARGUMENT, 8),
            Self::StakeTierMismatch { .. } => (INVALID_STATE, 9),
            Self::InsufficientStake { .. } => (INVALID_ARGUMENT, 10),
            Self::NothingToWithdraw(_) => (INVALID_STATE, 11),
            Self::ZeroAmount => (INVALID_ARGUMENT, 12),
            Self::InflationAlreadyMinted(_) => (ALREADY_EXISTS, 13),
            Self::InvalidEpoch { .. } => (INVALID_ARGUMENT, 14),
            Self::InvalidIdentifier { .. } => (INVALID_ARGUMENT, 15),
            Self::ProtocolAccount(_) => (INVALID_ARGUMENT, 16),
            Self::TextTooLong => (INVALID_ARGUMENT, 17),
            Self::TooManyUnbonding(_) => (INVALID_STATE, 18),
            Self::Genesis => (INVALID_STATE, 19),
            Self::DistributionExists(_) => (ALREADY_EXISTS, 20),
            Self::DistributionNotFound(_) => (NOT_FOUND, 21),
            Self::InvalidDistribution(_) => (INVALID_ARGUMENT, 22),
            Self::ClaimIndexOutOfRange { .. } => (OUT_OF_RANGE, 23),
            Self::BadProof { .. } => (INVALID_ARGUMENT, 24),
            Self::AlreadyClaimed { .. } => (ALREADY_EXISTS, 25),
            Self::ClaimExceedsTotal { .. } => (INVALID_STATE, 26),
            Self::Storage(_) => (EMBEDDED, 1),
            Self::Encoding(_) => (EMBEDDED, 2),
        };
        (category << 16) | reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are part of the on-chain interface: this table freezes them.
    #[test]
    fn error_codes_are_frozen() {
        let s = String::new;
        let table: Vec<(LedgerError, u64)> = vec![
            (
                LedgerError::InsufficientBalance {
                    account: s(),
                    needed: 1,
                    available: 0,
                },
                0x1_0001,
            ),
            (LedgerError::ArithmeticOverflow, 0x2_0002),
            (LedgerError::EscrowNotFound(s()), 0x6_0003),
            (LedgerError::EscrowAlreadyExists(s()), 0x8_0004),
            (
                LedgerError::EscrowInsufficient {
                    escrow_id: s(),
                    remaining: 0,
                    requested: 1,
                },
                0x1_0005,
            ),
            (
                LedgerError::EscrowAlreadyPaidOut {
                    escrow_id: s(),
                    payout_id: s(),
                },
                0x3_0006,
            ),
            (LedgerError::PayoutConflict(s()), 0x3_0007),
            (LedgerError::InvalidPayout("x"), 0x1_0008),
            (
                LedgerError::StakeTierMismatch {
                    actor: s(),
                    existing: StakeTier::Master,
                    requested: StakeTier::Producer,
                },
                0x3_0009,
            ),
            (
                LedgerError::InsufficientStake {
                    actor: s(),
                    available: 0,
                    requested: 1,
                },
                0x1_000a,
            ),
            (LedgerError::NothingToWithdraw(s()), 0x3_000b),
            (LedgerError::ZeroAmount, 0x1_000c),
            (LedgerError::InflationAlreadyMinted(0), 0x8_000d),
            (
                LedgerError::InvalidEpoch {
                    current: 0,
                    requested: 0,
                },
                0x1_000e,
            ),
            (
                LedgerError::InvalidIdentifier {
                    kind: "account",
                    value: s(),
                },
                0x1_000f,
            ),
            (LedgerError::ProtocolAccount(s()), 0x1_0010),
            (LedgerError::TextTooLong, 0x1_0011),
            (LedgerError::TooManyUnbonding(s()), 0x3_0012),
            (LedgerError::Genesis, 0x3_0013),
            (LedgerError::DistributionExists(s()), 0x8_0014),
            (LedgerError::DistributionNotFound(s()), 0x6_0015),
            (LedgerError::InvalidDistribution("x"), 0x1_0016),
            (
                LedgerError::ClaimIndexOutOfRange {
                    distribution_id: s(),
                    index: 1,
                    leaves: 1,
                },
                0x2_0017,
            ),
            (
                LedgerError::BadProof {
                    distribution_id: s(),
                    index: 0,
                },
                0x1_0018,
            ),
            (
                LedgerError::AlreadyClaimed {
                    distribution_id: s(),
                    index: 0,
                },
                0x8_0019,
            ),
            (
                LedgerError::ClaimExceedsTotal {
                    distribution_id: s(),
                    remaining: 0,
                    amount: 1,
                },
                0x3_001a,
            ),
            (LedgerError::Storage(s()), 0xFF_0001),
            (LedgerError::Encoding(s()), 0xFF_0002),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (error, code) in table {
            assert_eq!(error.code(), code, "{error:?}");
            assert!(seen.insert(code), "duplicate code {code:#x}");
        }
    }
}
