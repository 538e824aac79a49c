//! The Aptos adapter (cargo feature `aptos`): turns ledger [`Command`]s — escrow
//! operations and [`PayoutInstructionSet`]s — into real Aptos entry-function payloads
//! and `RawTransaction`s, built with the crates.io `aptos-sdk` (0.8.0) types and
//! BCS-encoded exactly as the chain expects.
//!
//! ## The on-chain interface this targets
//!
//! Modules `escrow`, `staking`, `reward`, `treasury`, `governance`, `distributor` and `sym` published
//! at one address ([`AptosModules::address`]). Entry functions take only primitive
//! arguments (Move entry functions cannot take structs), so a payout set is passed as
//! parallel vectors:
//!
//! | command | entry function(arguments) | signer |
//! |---|---|---|
//! | `Transfer` | `sym::transfer(to: address, amount: u64)` | `from` |
//! | `AdvanceEpoch` | `governance::advance_epoch(epoch: u64)` | master cluster |
//! | `EscrowLock` | `escrow::lock(escrow_id: String, amount: u64)` | owner |
//! | `EscrowRefund` | `escrow::refund(escrow_id: String, amount: u64)` | master cluster |
//! | `EscrowPayout` | `escrow::payout(escrow_id: String, payout_id: String, epoch_id: u64, settlement_ref: String, set_hash: vector<u8>, recipients: vector<address>, amounts: vector<u64>, kinds: vector<u8>)` | master cluster |
//! | `RewardDistribute` (treasury / pool) | `reward::distribute(source: u8, pool_epoch: u64, payout_id, epoch_id, settlement_ref, set_hash, recipients, amounts, kinds)` | master cluster |
//! | `RewardDistribute` (account) | `reward::distribute_from(payout_id, epoch_id, settlement_ref, set_hash, recipients, amounts, kinds)` | the account |
//! | `StakeBond` | `staking::bond(tier: u8, amount: u64)` | actor |
//! | `StakeBeginUnbond` | `staking::begin_unbond(amount: u64)` | actor |
//! | `StakeWithdraw` | `staking::withdraw()` | actor |
//! | `StakeSlash` | `staking::slash(actor: address, amount: u64, reason: String)` | master cluster |
//! | `TreasuryDeposit` | `treasury::deposit(amount: u64)` | `from` |
//! | `TreasuryMintInflation` | `treasury::mint_inflation(epoch: u64, amount: u64)` | master cluster |
//! | `CommitDistribution` (account) | `distributor::commit(distribution_id: String, epoch: u64, root: vector<u8>, total: u64, leaves: u64)` | the account |
//! | `CommitDistribution` (treasury / pool) | `distributor::commit_protocol(source: u8, pool_epoch: u64, distribution_id, epoch, root, total, leaves)` | master cluster |
//! | `ClaimDistribution` | `distributor::claim(distribution_id: String, index: u64, recipient: address, amount: u64, kind: u8, proof: vector<vector<u8>>)` | the recipient (anyone may submit; funds go to `recipient`) |
//!
//! Codes: `tier` 0 master / 1 enterprise / 2 producer; `kind` is the declaration index
//! of [`PayoutKind`]; `source` 0 treasury / 1 reward pool. Ledger account ids map to
//! addresses by [`account_address`] (`SHA-256("symphony/aptos-account/v1" || id)`)
//! unless an [`AddressBook`] entry says otherwise; `protocol:` accounts are resources
//! of the modules and never appear as recipients' signers.
//!
//! ## Exercised offline, and not
//!
//! Exercised (tests `aptos_golden.rs`, golden vectors under `tests/golden/`): the
//! entry-function payload and the `RawTransaction` BCS bytes for every command kind,
//! the signing message (`sha3("APTOS::RawTransaction") || bcs(raw)`), and an
//! independent hand encoding of one transaction. **Not** exercised without a live
//! chain: that the Move modules exist with these signatures and semantics (they are
//! not part of this repository), sequence numbers and gas, signing with real keys and
//! submission, and mapping abort codes back to [`crate::LedgerError`] (their numbers
//! were chosen to make that a table lookup).

use aptos_sdk::transaction::{EntryFunction, RawTransaction, TransactionPayload};
use aptos_sdk::types::{AccountAddress, ChainId, Identifier, MoveModuleId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::engine::Command;
use crate::event::PayoutSource;
use crate::types::{AccountId, PayoutInstructionSet, PayoutKind, StakeTier};

/// Why a command could not be turned into a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AptosAdapterError {
    /// BCS encoding failed.
    #[error("bcs: {0}")]
    Encoding(String),
    /// The SDK refused a value (identifier, address).
    #[error("aptos-sdk: {0}")]
    Sdk(String),
    /// The command has no on-chain form (e.g. an escrow source for `distribute`).
    #[error("not representable on chain: {0}")]
    Unsupported(&'static str),
}

/// Where the Symphony modules live and who signs protocol operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptosModules {
    /// Address the modules are published at.
    pub address: AccountAddress,
    /// The master cluster's account (signs refunds, payouts, slashes, mints, epochs).
    pub master_cluster: AccountAddress,
}

/// Gas and replay parameters of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxParams {
    /// Sender's sequence number.
    pub sequence_number: u64,
    /// Maximum gas units.
    pub max_gas_amount: u64,
    /// Octas per gas unit.
    pub gas_unit_price: u64,
    /// Expiration, seconds since the Unix epoch (an input: no clock here).
    pub expiration_timestamp_secs: u64,
    /// Chain id (1 mainnet, 2 testnet, 4 local).
    pub chain_id: u8,
}

/// Explicit account → address mappings (e.g. actors that registered a wallet).
pub type AddressBook = BTreeMap<AccountId, AccountAddress>;

const ACCOUNT_ADDRESS_DOMAIN: &[u8] = b"symphony/aptos-account/v1";

/// The default on-chain address of a ledger account.
pub fn account_address(account: &AccountId) -> AccountAddress {
    let mut h = Sha256::new();
    h.update(ACCOUNT_ADDRESS_DOMAIN);
    h.update(account.as_str().as_bytes());
    AccountAddress::new(h.finalize().into())
}

fn bcs<T: serde::Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, AptosAdapterError> {
    bcs::to_bytes(v).map_err(|e| AptosAdapterError::Encoding(e.to_string()))
}

fn tier_code(t: StakeTier) -> u8 {
    match t {
        StakeTier::Master => 0,
        StakeTier::Enterprise => 1,
        StakeTier::Producer => 2,
    }
}

/// The on-chain code of a payout kind (its declaration index).
pub fn kind_code(k: PayoutKind) -> u8 {
    match k {
        PayoutKind::DataUsageDividend => 0,
        PayoutKind::DataQualityReward => 1,
        PayoutKind::VaultOperator => 2,
        PayoutKind::Executor => 3,
        PayoutKind::Verifier => 4,
        PayoutKind::Treasury => 5,
        PayoutKind::NodeOperation => 6,
        PayoutKind::VaultDividendPool => 7,
    }
}

/// Builds entry functions and transactions for one deployment.
#[derive(Clone, Debug)]
pub struct AptosAdapter {
    modules: AptosModules,
    book: AddressBook,
}

impl AptosAdapter {
    /// An adapter for `modules`, with explicit address mappings in `book`.
    pub fn new(modules: AptosModules, book: AddressBook) -> Self {
        Self { modules, book }
    }

    /// The address of a ledger account (book entry, or [`account_address`]).
    pub fn address_of(&self, account: &AccountId) -> AccountAddress {
        self.book
            .get(account)
            .copied()
            .unwrap_or_else(|| account_address(account))
    }

    fn call(
        &self,
        module: &str,
        function: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<EntryFunction, AptosAdapterError> {
        let name = Identifier::new(module).map_err(|e| AptosAdapterError::Sdk(e.to_string()))?;
        Identifier::new(function).map_err(|e| AptosAdapterError::Sdk(e.to_string()))?;
        Ok(EntryFunction::new(
            MoveModuleId::new(self.modules.address, name),
            function,
            vec![],
            args,
        ))
    }

    fn payout_args(&self, set: &PayoutInstructionSet) -> Result<Vec<Vec<u8>>, AptosAdapterError> {
        let hash = set
            .hash()
            .map_err(|e| AptosAdapterError::Encoding(e.to_string()))?;
        let recipients: Vec<AccountAddress> = set
            .instructions
            .iter()
            .map(|i| self.address_of(&i.recipient))
            .collect();
        let amounts: Vec<u64> = set.instructions.iter().map(|i| i.amount).collect();
        let kinds: Vec<u8> = set.instructions.iter().map(|i| kind_code(i.kind)).collect();
        Ok(vec![
            bcs(set.payout_id.as_str())?,
            bcs(&set.epoch_id)?,
            bcs(&set.settlement_ref)?,
            bcs(&hash.to_vec())?,
            bcs(&recipients)?,
            bcs(&amounts)?,
            bcs(&kinds)?,
        ])
    }

    /// `distributor::commit` signed by a funding account, or
    /// `distributor::commit_protocol(source, pool_epoch, …)` signed by the master
    /// cluster for the treasury (0) or an epoch's reward pool (1).
    fn distribution_commit(
        &self,
        source: &PayoutSource,
        args: Vec<Vec<u8>>,
    ) -> Result<(AccountAddress, EntryFunction), AptosAdapterError> {
        let (code, pool_epoch) = match source {
            PayoutSource::Account(a) => {
                return Ok((
                    self.address_of(a),
                    self.call("distributor", "commit", args)?,
                ))
            }
            PayoutSource::Treasury => (0u8, 0u64),
            PayoutSource::RewardPool(e) => (1u8, *e),
            PayoutSource::Escrow(_) => {
                return Err(AptosAdapterError::Unsupported(
                    "an escrow cannot fund a distribution",
                ))
            }
        };
        let mut all = vec![bcs(&code)?, bcs(&pool_epoch)?];
        all.extend(args);
        Ok((
            self.modules.master_cluster,
            self.call("distributor", "commit_protocol", all)?,
        ))
    }

    /// The entry function and the signer of `command`.
    pub fn entry_function(
        &self,
        command: &Command,
    ) -> Result<(AccountAddress, EntryFunction), AptosAdapterError> {
        let cluster = self.modules.master_cluster;
        Ok(match command {
            Command::Transfer { from, to, amount } => (
                self.address_of(from),
                self.call(
                    "sym",
                    "transfer",
                    vec![bcs(&self.address_of(to))?, bcs(amount)?],
                )?,
            ),
            Command::AdvanceEpoch { epoch } => (
                cluster,
                self.call("governance", "advance_epoch", vec![bcs(epoch)?])?,
            ),
            Command::EscrowLock {
                escrow_id,
                owner,
                amount,
            } => (
                self.address_of(owner),
                self.call(
                    "escrow",
                    "lock",
                    vec![bcs(escrow_id.as_str())?, bcs(amount)?],
                )?,
            ),
            Command::EscrowRefund { escrow_id, amount } => (
                cluster,
                self.call(
                    "escrow",
                    "refund",
                    vec![bcs(escrow_id.as_str())?, bcs(amount)?],
                )?,
            ),
            Command::EscrowPayout { escrow_id, set } => {
                let mut args = vec![bcs(escrow_id.as_str())?];
                args.extend(self.payout_args(set)?);
                (cluster, self.call("escrow", "payout", args)?)
            }
            Command::RewardDistribute { source, set } => match source {
                PayoutSource::Treasury | PayoutSource::RewardPool(_) => {
                    let (code, pool_epoch) = match source {
                        PayoutSource::RewardPool(e) => (1u8, *e),
                        _ => (0u8, 0u64),
                    };
                    let mut args = vec![bcs(&code)?, bcs(&pool_epoch)?];
                    args.extend(self.payout_args(set)?);
                    (cluster, self.call("reward", "distribute", args)?)
                }
                PayoutSource::Account(a) => (
                    self.address_of(a),
                    self.call("reward", "distribute_from", self.payout_args(set)?)?,
                ),
                PayoutSource::Escrow(_) => {
                    return Err(AptosAdapterError::Unsupported(
                        "escrow source: use escrow::payout",
                    ))
                }
            },
            Command::StakeBond {
                actor,
                tier,
                amount,
            } => (
                self.address_of(actor),
                self.call(
                    "staking",
                    "bond",
                    vec![bcs(&tier_code(*tier))?, bcs(amount)?],
                )?,
            ),
            Command::StakeBeginUnbond { actor, amount } => (
                self.address_of(actor),
                self.call("staking", "begin_unbond", vec![bcs(amount)?])?,
            ),
            Command::StakeWithdraw { actor } => (
                self.address_of(actor),
                self.call("staking", "withdraw", vec![])?,
            ),
            Command::StakeSlash {
                actor,
                amount,
                reason,
            } => (
                cluster,
                self.call(
                    "staking",
                    "slash",
                    vec![bcs(&self.address_of(actor))?, bcs(amount)?, bcs(reason)?],
                )?,
            ),
            Command::TreasuryDeposit { from, amount } => (
                self.address_of(from),
                self.call("treasury", "deposit", vec![bcs(amount)?])?,
            ),
            Command::TreasuryMintInflation { epoch, amount } => (
                cluster,
                self.call(
                    "treasury",
                    "mint_inflation",
                    vec![bcs(epoch)?, bcs(amount)?],
                )?,
            ),
            Command::CommitDistribution {
                source,
                distribution_id,
                epoch,
                root,
                total,
                leaves,
            } => {
                let args = vec![
                    bcs(distribution_id.as_str())?,
                    bcs(epoch)?,
                    bcs(&root.to_vec())?,
                    bcs(total)?,
                    bcs(leaves)?,
                ];
                self.distribution_commit(source, args)?
            }
            Command::ClaimDistribution {
                distribution_id,
                index,
                recipient,
                amount,
                kind,
                proof,
            } => {
                let proof: Vec<Vec<u8>> = proof.iter().map(|h| h.to_vec()).collect();
                let recipient = self.address_of(recipient);
                (
                    recipient,
                    self.call(
                        "distributor",
                        "claim",
                        vec![
                            bcs(distribution_id.as_str())?,
                            bcs(index)?,
                            bcs(&recipient)?,
                            bcs(amount)?,
                            bcs(&kind_code(*kind))?,
                            bcs(&proof)?,
                        ],
                    )?,
                )
            }
        })
    }

    /// The unsigned transaction of `command`.
    pub fn raw_transaction(
        &self,
        command: &Command,
        params: &TxParams,
    ) -> Result<RawTransaction, AptosAdapterError> {
        let (sender, function) = self.entry_function(command)?;
        Ok(RawTransaction::new(
            sender,
            params.sequence_number,
            TransactionPayload::EntryFunction(function),
            params.max_gas_amount,
            params.gas_unit_price,
            params.expiration_timestamp_secs,
            ChainId::new(params.chain_id),
        ))
    }

    /// BCS bytes of the unsigned transaction.
    pub fn raw_transaction_bytes(
        &self,
        command: &Command,
        params: &TxParams,
    ) -> Result<Vec<u8>, AptosAdapterError> {
        self.raw_transaction(command, params)?
            .to_bcs()
            .map_err(|e| AptosAdapterError::Sdk(e.to_string()))
    }

    /// What a signer signs for `command`.
    pub fn signing_message(
        &self,
        command: &Command,
        params: &TxParams,
    ) -> Result<Vec<u8>, AptosAdapterError> {
        self.raw_transaction(command, params)?
            .signing_message()
            .map_err(|e| AptosAdapterError::Sdk(e.to_string()))
    }
}
