//! A readable, filterable view of a settlement ledger (`symphony ledger show`):
//! accounts with their role, balance and stake; escrows; settlements; per-epoch
//! payout sets; committed Merkle distributions; and, for one account, what it
//! received in which epoch. Every field is labelled; amounts are µSYM integers.

use serde::Serialize;
use symphony_ledger::{AccountId, LedgerState, PayoutInstructionSet, PayoutKind};

use super::SettlementStore;
use crate::NodeError;

/// What `ledger show` keeps.
#[derive(Clone, Debug, Default)]
pub struct LedgerFilter {
    /// Only accounts whose id contains this text (e.g. `luckin`, `operator:vault-01`);
    /// also lists what they received, payout by payout.
    pub account: Option<String>,
    /// Only settlements and payout sets of this epoch.
    pub epoch: Option<u64>,
}

impl LedgerFilter {
    fn keeps_account(&self, account: &str) -> bool {
        self.account.as_deref().is_none_or(|a| account.contains(a))
    }
    fn keeps_epoch(&self, epoch: u64) -> bool {
        self.epoch.is_none_or(|e| e == epoch)
    }
}

/// The role an account plays, read from its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRole {
    /// A data producer (`actor:producer:…`).
    Producer,
    /// A Vault operator (`actor:operator:…`).
    VaultOperator,
    /// A Vault's dividend account, which pays its producers.
    VaultDividends,
    /// A master node.
    Master,
    /// Protocol-owned (treasury, reward pools).
    Protocol,
    /// Any other actor: advertisers, model operators, enterprises.
    Actor,
}

impl AccountRole {
    /// The role of `account`.
    pub fn of(account: &str) -> Self {
        let name = account.strip_prefix("actor:").unwrap_or(account);
        if account.starts_with("protocol:") {
            Self::Protocol
        } else if name.starts_with("producer:") {
            Self::Producer
        } else if name.starts_with("operator:") {
            Self::VaultOperator
        } else if name.starts_with("vault:") || name.contains("dividend") {
            Self::VaultDividends
        } else if name.starts_with("master") {
            Self::Master
        } else {
            Self::Actor
        }
    }
    /// A label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::VaultOperator => "vault operator",
            Self::VaultDividends => "vault dividends",
            Self::Master => "master",
            Self::Protocol => "protocol",
            Self::Actor => "actor",
        }
    }
}

/// One account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    /// The account id.
    pub account: String,
    /// Its role.
    pub role: AccountRole,
    /// Liquid balance, µSYM.
    pub balance_micro_sym: u64,
    /// Bonded stake, µSYM.
    pub bonded_micro_sym: u64,
    /// Stake waiting for its unbonding period, µSYM.
    pub unbonding_micro_sym: u64,
    /// The stake tier, when staked.
    pub stake_tier: Option<String>,
}

/// One escrow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EscrowRow {
    /// The escrow id (the task's budget lock).
    pub escrow: String,
    /// Who locked it (and receives refunds).
    pub owner: String,
    /// Locked, µSYM.
    pub locked_micro_sym: u64,
    /// Paid out to the fee split, µSYM.
    pub paid_out_micro_sym: u64,
    /// Refunded, µSYM.
    pub refunded_micro_sym: u64,
    /// Still locked, µSYM.
    pub remaining_micro_sym: u64,
}

/// One task's settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementView {
    /// The task.
    pub task_id: String,
    /// The epoch it settles in.
    pub epoch: u64,
    /// Its settlement state.
    pub state: String,
    /// The fee split's total, µSYM.
    pub fee_total_micro_sym: u64,
    /// The refund to the submitter, µSYM.
    pub refund_micro_sym: u64,
}

/// One payout of an epoch's payout sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EpochPayoutRow {
    /// The epoch.
    pub epoch: u64,
    /// The payout id.
    pub payout_id: String,
    /// How many recipients.
    pub recipients: usize,
    /// The payout's total, µSYM.
    pub total_micro_sym: u64,
}

/// One payment an account received (with `--account`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceivedRow {
    /// The recipient.
    pub account: String,
    /// The epoch of the payout.
    pub epoch: u64,
    /// The payout id.
    pub payout_id: String,
    /// What for (`data_usage_dividend`, `vault_operator`, …).
    pub kind: String,
    /// Gross amount, µSYM (before the staking multiplier for producers).
    pub amount_micro_sym: u64,
}

/// One committed Merkle distribution (a Vault's dividend for a task beyond the
/// direct payout limit, or any other `distributor::commit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DistributionRow {
    /// The distribution id.
    pub distribution_id: String,
    /// Its epoch.
    pub epoch: u64,
    /// Leaves committed.
    pub leaves: u64,
    /// Committed total, µSYM.
    pub total_micro_sym: u64,
    /// Leaves claimed.
    pub claimed: u64,
    /// Paid to claimants, µSYM.
    pub claimed_micro_sym: u64,
}

/// Totals over all accounts of one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleTotal {
    /// The role.
    pub role: AccountRole,
    /// How many accounts.
    pub accounts: usize,
    /// Their balances, µSYM.
    pub balance_micro_sym: u64,
}

/// `symphony ledger show`.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerSummary {
    /// The ledger's current epoch.
    pub epoch: u64,
    /// Balances + escrow remainders + stakes, µSYM (a decimal string: it may exceed u64).
    pub total_supply_micro_sym: String,
    /// Created at genesis, µSYM.
    pub genesis_supply_micro_sym: u64,
    /// Created by inflation, µSYM.
    pub minted_micro_sym: u64,
    /// The filter applied (`null` when none).
    pub filter_account: Option<String>,
    /// The epoch filter applied.
    pub filter_epoch: Option<u64>,
    /// Accounts by role (all accounts, before the account filter).
    pub roles: Vec<RoleTotal>,
    /// Accounts kept by the filter.
    pub accounts: Vec<AccountRow>,
    /// Escrows whose owner is kept by the account filter.
    pub escrows: Vec<EscrowRow>,
    /// Settlements kept by the epoch filter.
    pub settlements: Vec<SettlementView>,
    /// Payouts of the epoch payout sets kept by the epoch filter.
    pub epoch_payouts: Vec<EpochPayoutRow>,
    /// With `--account`: each payment to a kept account.
    pub received: Vec<ReceivedRow>,
    /// Committed Merkle distributions kept by the epoch filter.
    pub distributions: Vec<DistributionRow>,
}

/// A payout kind's snake-case name (`data_usage_dividend`, …).
pub(crate) fn kind_name(kind: PayoutKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(snake))
        .unwrap_or_else(|| format!("{kind:?}"))
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Summarizes `state` and `store` under `filter`.
pub fn summarize(
    state: &LedgerState,
    store: &SettlementStore,
    filter: &LedgerFilter,
) -> Result<LedgerSummary, NodeError> {
    let mut names: Vec<&AccountId> = state.balances.keys().chain(state.stakes.keys()).collect();
    names.sort();
    names.dedup();
    let mut roles: Vec<RoleTotal> = Vec::new();
    let mut accounts = Vec::new();
    for a in names {
        let role = AccountRole::of(a.as_str());
        let balance = state.balance(a);
        match roles.iter_mut().find(|r| r.role == role) {
            Some(r) => {
                r.accounts += 1;
                r.balance_micro_sym = r.balance_micro_sym.saturating_add(balance);
            }
            None => roles.push(RoleTotal {
                role,
                accounts: 1,
                balance_micro_sym: balance,
            }),
        }
        if !filter.keeps_account(a.as_str()) {
            continue;
        }
        let stake = state.stakes.get(a);
        accounts.push(AccountRow {
            account: a.to_string(),
            role,
            balance_micro_sym: balance,
            bonded_micro_sym: stake.map_or(0, |s| s.bonded),
            unbonding_micro_sym: stake.map_or(0, |s| s.total().saturating_sub(s.bonded)),
            stake_tier: stake.map(|s| snake(&format!("{:?}", s.tier))),
        });
    }
    roles.sort_by_key(|r| r.role);
    let escrows = state
        .escrows
        .iter()
        .filter(|(_, e)| filter.keeps_account(e.owner.as_str()))
        .map(|(id, e)| EscrowRow {
            escrow: id.to_string(),
            owner: e.owner.to_string(),
            locked_micro_sym: e.locked,
            paid_out_micro_sym: e.paid_out,
            refunded_micro_sym: e.refunded,
            remaining_micro_sym: e.remaining(),
        })
        .collect();
    let settlements = store
        .rows()?
        .into_iter()
        .filter(|r| filter.keeps_epoch(r.epoch_id.0))
        .map(|r| SettlementView {
            task_id: r.task_id.to_string(),
            epoch: r.epoch_id.0,
            state: r.state.to_string(),
            fee_total_micro_sym: r.candidate.fee_total,
            refund_micro_sym: r.candidate.refund,
        })
        .collect();
    let sets: Vec<PayoutInstructionSet> = store
        .all_epoch_payouts()?
        .into_iter()
        .filter(|s| filter.keeps_epoch(s.epoch_id))
        .collect();
    let mut epoch_payouts = Vec::new();
    let mut received = Vec::new();
    for set in &sets {
        epoch_payouts.push(EpochPayoutRow {
            epoch: set.epoch_id,
            payout_id: set.payout_id.to_string(),
            recipients: set.instructions.len(),
            total_micro_sym: set.total().map_err(|e| NodeError::Ledger(e.to_string()))?,
        });
        if filter.account.is_none() {
            continue;
        }
        for i in &set.instructions {
            if filter.keeps_account(i.recipient.as_str()) {
                received.push(ReceivedRow {
                    account: i.recipient.to_string(),
                    epoch: set.epoch_id,
                    payout_id: set.payout_id.to_string(),
                    kind: kind_name(i.kind),
                    amount_micro_sym: i.amount,
                });
            }
        }
    }
    epoch_payouts.sort_by(|a, b| (a.epoch, &a.payout_id).cmp(&(b.epoch, &b.payout_id)));
    received.sort_by(|a, b| (a.epoch, &a.payout_id).cmp(&(b.epoch, &b.payout_id)));
    let distributions = state
        .distributions
        .iter()
        .filter(|(_, d)| filter.keeps_epoch(d.epoch_id))
        .map(|(id, d)| DistributionRow {
            distribution_id: id.to_string(),
            epoch: d.epoch_id,
            leaves: d.leaves,
            total_micro_sym: d.total,
            claimed: d.claimed,
            claimed_micro_sym: d.paid,
        })
        .collect();
    Ok(LedgerSummary {
        epoch: state.meta.current_epoch,
        total_supply_micro_sym: state.total_supply().to_string(),
        genesis_supply_micro_sym: state.meta.genesis_supply,
        minted_micro_sym: state.meta.minted_total,
        filter_account: filter.account.clone(),
        filter_epoch: filter.epoch,
        roles,
        accounts,
        escrows,
        settlements,
        epoch_payouts,
        received,
        distributions,
    })
}

/// Summarizes a ledger directory (`DIR/ledger.redb` + `DIR/settlement.redb`).
pub fn summarize_dir(
    dir: &std::path::Path,
    filter: &LedgerFilter,
) -> Result<LedgerSummary, NodeError> {
    let (ledger, store) = super::reconcile::open_dir(dir)?;
    summarize(ledger.state(), &store, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_account_ids() {
        assert_eq!(
            AccountRole::of("actor:producer:v1-s0001"),
            AccountRole::Producer
        );
        assert_eq!(
            AccountRole::of("actor:operator:vault-01"),
            AccountRole::VaultOperator
        );
        assert_eq!(AccountRole::of("protocol:treasury"), AccountRole::Protocol);
        assert_eq!(AccountRole::of("actor:master-1"), AccountRole::Master);
        assert_eq!(AccountRole::of("actor:luckin"), AccountRole::Actor);
        assert_eq!(snake("DataUsageDividend"), "data_usage_dividend");
    }

    #[test]
    fn filters_keep_by_substring_and_epoch() {
        let f = LedgerFilter {
            account: Some("luckin".into()),
            epoch: Some(2),
        };
        assert!(f.keeps_account("actor:luckin"));
        assert!(!f.keeps_account("actor:producer:x"));
        assert!(f.keeps_epoch(2) && !f.keeps_epoch(1));
        let all = LedgerFilter::default();
        assert!(all.keeps_account("anything") && all.keeps_epoch(7));
    }
}
