//! Accounts, identifiers, configuration and payout instructions.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::LedgerError;

/// Longest account / escrow / payout id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most instructions in one [`PayoutInstructionSet`].
pub const MAX_PAYOUT_INSTRUCTIONS: usize = 4096;
/// Longest slash reason or settlement reference, in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// Most pending unbonding entries per actor.
pub const MAX_UNBONDING_ENTRIES: usize = 16;
/// Prefix of ledger-owned accounts; no command can debit them directly.
pub const PROTOCOL_ACCOUNT_PREFIX: &str = "protocol:";

fn validate_id(kind: &'static str, s: &str) -> Result<(), LedgerError> {
    let ok = !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidIdentifier {
            kind,
            value: s.chars().take(MAX_ID_LEN).collect(),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        // As the string it wraps (what `into = "String"` wrote), without copying it.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Validates and wraps: 1..=128 printable ASCII bytes, no spaces.
            pub fn new(value: impl Into<String>) -> Result<Self, LedgerError> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok(Self(value))
            }
            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = LedgerError;
            fn try_from(value: String) -> Result<Self, LedgerError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An account, e.g. `"actor:luckin"`, `"vault:v1"`, `"protocol:treasury"`.
    AccountId,
    "account"
);
id_type!(
    /// An escrow id (the task's `budget_lock_ref`).
    EscrowId,
    "escrow"
);
id_type!(
    /// A payout id; each is paid at most once, ever.
    PayoutId,
    "payout"
);
id_type!(
    /// A Merkle distribution id (e.g. `epoch-7/producers`); each is committed once.
    DistributionId,
    "distribution"
);

impl AccountId {
    /// The protocol treasury account.
    pub fn treasury() -> Self {
        Self(format!("{PROTOCOL_ACCOUNT_PREFIX}treasury"))
    }
    /// The reward pool account of `epoch` (receives the unstaked producers' other half).
    pub fn reward_pool(epoch: u64) -> Self {
        Self(format!("{PROTOCOL_ACCOUNT_PREFIX}reward-pool:{epoch}"))
    }
    /// Whether this is a ledger-owned account.
    pub fn is_protocol(&self) -> bool {
        self.0.starts_with(PROTOCOL_ACCOUNT_PREFIX)
    }
}

/// The three staking tiers of the actor registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StakeTier {
    /// `S_master`: master nodes.
    Master,
    /// `S_enterprise`: enterprise nodes.
    Enterprise,
    /// `S_producer`: data producers (unlocks 100% rewards).
    Producer,
}

/// Ledger parameters fixed at genesis (recorded in the genesis event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// Epochs between `begin_unbond` and the earliest `withdraw_unbonded`.
    pub unbonding_period_epochs: u64,
    /// Minimum bonded stake for `S_master`.
    pub min_stake_master: u64,
    /// Minimum bonded stake for `S_enterprise`.
    pub min_stake_enterprise: u64,
    /// Minimum bonded stake for `S_producer`.
    pub min_stake_producer: u64,
}

impl LedgerConfig {
    /// Minimum bonded stake for `tier`.
    pub fn min_stake(&self, tier: StakeTier) -> u64 {
        match tier {
            StakeTier::Master => self.min_stake_master,
            StakeTier::Enterprise => self.min_stake_enterprise,
            StakeTier::Producer => self.min_stake_producer,
        }
    }
}

/// The initial state: configuration and token allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Ledger parameters.
    pub config: LedgerConfig,
    /// Initial balances (accounts may repeat; amounts add up).
    pub allocations: Vec<(AccountId, u64)>,
}

/// What a payout instruction pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PayoutKind {
    /// Data usage dividend to a data producer (staking multiplier applies).
    DataUsageDividend,
    /// Data quality reward to a data producer (staking multiplier applies).
    DataQualityReward,
    /// Vault operator fee share.
    VaultOperator,
    /// Executor fee share (verified slices, aggregation).
    Executor,
    /// Verifier fee share.
    Verifier,
    /// Protocol treasury share.
    Treasury,
    /// Node operation reward (bootstrap inflation).
    NodeOperation,
    /// A Vault's Data Contributor share, paid to the Vault's dividend account; the
    /// Vault then pays its producers ([`PayoutKind::DataUsageDividend`]) itself, so
    /// the coordination layer never learns which producers' records were used. No
    /// multiplier here: it applies once, per producer.
    VaultDividendPool,
}

impl PayoutKind {
    /// Whether the producer staking multiplier (100% staked / 50% unstaked) applies.
    pub fn applies_staking_multiplier(self) -> bool {
        matches!(self, Self::DataUsageDividend | Self::DataQualityReward)
    }
}

/// One payment of a payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutInstruction {
    /// Who is paid.
    pub recipient: AccountId,
    /// Gross amount in base units (before the staking multiplier).
    pub amount: u64,
    /// What for.
    pub kind: PayoutKind,
}

/// A settlement's payout: what the Payout Service submits to the reward contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutInstructionSet {
    /// Unique id; paid at most once.
    pub payout_id: PayoutId,
    /// Epoch the settlement belongs to (selects the reward pool).
    pub epoch_id: u64,
    /// Reference to the finalized settlement (e.g. its hash, hex).
    pub settlement_ref: String,
    /// The payments.
    pub instructions: Vec<PayoutInstruction>,
}

const PAYOUT_SET_DOMAIN: &[u8] = b"symphony/payout-instruction-set/v1";

impl PayoutInstructionSet {
    /// `SHA-256("symphony/payout-instruction-set/v1" || bcs(self))`.
    pub fn hash(&self) -> Result<[u8; 32], LedgerError> {
        let bytes = bcs::to_bytes(self).map_err(|e| LedgerError::Encoding(e.to_string()))?;
        let mut h = Sha256::new();
        h.update(PAYOUT_SET_DOMAIN);
        h.update(bytes);
        Ok(h.finalize().into())
    }

    /// Sum of the gross amounts, checked.
    pub fn total(&self) -> Result<u64, LedgerError> {
        self.instructions
            .iter()
            .try_fold(0u64, |acc, i| acc.checked_add(i.amount))
            .ok_or(LedgerError::ArithmeticOverflow)
    }
}

/// Splits a gross producer reward: staked → `(gross, 0)`; unstaked → recipient gets
/// `floor(gross / 2)`, the pool gets the rest (the odd unit goes to the pool).
/// The two parts always sum to `gross`.
pub fn producer_split(gross: u64, staked: bool) -> (u64, u64) {
    if staked {
        (gross, 0)
    } else {
        let net = gross / 2;
        (net, gross - net)
    }
}
