//! The one error type of the crate.
//!
//! Every failure is typed and names the field or quantity at fault; bad input never
//! panics (STYLE.md, "Errors").

use symphony_core::{EpochId, PolicyVersion};

/// Everything that can go wrong in economics computations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EconomicsError {
    /// A fee share lies outside the range the seeds allow for its recipient class.
    #[error("fee share `{field}` is {value_bp} bp; the seeds allow {min_bp}..={max_bp} bp")]
    ShareOutOfRange {
        /// The `FeeShares` field.
        field: &'static str,
        /// The configured value.
        value_bp: u16,
        /// Lower bound (inclusive).
        min_bp: u16,
        /// Upper bound (inclusive).
        max_bp: u16,
    },
    /// The five fee shares do not add up to 10 000 bp.
    #[error(
        "fee shares sum to {sum_bp} bp; they must sum to exactly 10000 bp (100% of the locked fee)"
    )]
    SharesDoNotSumToWhole {
        /// The actual sum.
        sum_bp: u32,
    },
    /// A parameter has a value that makes no sense.
    #[error("policy parameter `{field}` is invalid: {reason}")]
    InvalidParam {
        /// The parameter.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Checked arithmetic overflowed.
    #[error("arithmetic overflow computing {what}")]
    Overflow {
        /// The quantity being computed.
        what: &'static str,
    },
    /// An amount was to be split among recipients whose weights are all zero.
    #[error("cannot split {amount} base units: the total weight is zero")]
    ZeroTotalWeight {
        /// The amount that had nobody to go to.
        amount: u64,
    },
    /// A recipient appears twice in one split.
    #[error("recipient {recipient} appears more than once in {what}")]
    DuplicateRecipient {
        /// The split.
        what: &'static str,
        /// The recipient, as text.
        recipient: String,
    },
    /// A distribution does not add up to its total.
    #[error("{what}: parts sum to {actual} base units but must sum to {expected}")]
    SumMismatch {
        /// The distribution.
        what: &'static str,
        /// The total it must reach.
        expected: u64,
        /// What the parts add up to.
        actual: u128,
    },
    /// No policy version with this number is registered.
    #[error("{version} is not registered")]
    UnknownPolicyVersion {
        /// The version asked for.
        version: PolicyVersion,
    },
    /// The policy version exists but has not activated at this epoch.
    #[error("{version} activates at {activation_epoch}; it cannot be used at {epoch}")]
    PolicyNotYetActive {
        /// The version asked for.
        version: PolicyVersion,
        /// When it activates.
        activation_epoch: EpochId,
        /// The epoch asked about.
        epoch: EpochId,
    },
    /// A policy change was proposed to activate inside the current epoch or earlier.
    #[error("a policy proposed in {proposed_in} can activate at the next epoch boundary at the earliest, not at {activation_epoch}")]
    ActivationNotAtFutureBoundary {
        /// Epoch of the proposal.
        proposed_in: EpochId,
        /// Requested activation.
        activation_epoch: EpochId,
    },
    /// A policy change would activate no later than an already registered one.
    #[error("activation at {activation_epoch} must come after the latest registered activation at {latest_activation}")]
    ActivationNotMonotonic {
        /// Requested activation.
        activation_epoch: EpochId,
        /// The latest activation already registered.
        latest_activation: EpochId,
    },
    /// The registry holds the maximum number of versions.
    #[error("no further policy version number is available")]
    VersionSpaceExhausted,
}
