//! Rewards around a settlement: the Vault-side dividend payout, node operation
//! rewards from inflation, enterprise data contribution credits, and the fee of a
//! rejected task. The rules are `symphony-economics` functions; this module applies
//! them to the ledger and the store, idempotently.

use std::collections::BTreeMap;

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, EpochId, SubjectId, TaskId, VaultId};
use symphony_economics::pricing::rejection_fee;
use symphony_economics::rewards::{
    node_operation_rewards, vault_dividend_parts, ProducerUsage, VaultUsageTotals,
};
use symphony_economics::{
    inflation_mint_for_epoch, CreditBalance, EconomicsError, PolicyParams, SettledFee,
};
use symphony_ledger::{
    producer_split, AccountId, EscrowId, LedgerError, PayoutId, PayoutInstruction,
    PayoutInstructionSet, PayoutKind, PayoutSource, SettlementLedger, StakeTier,
    MAX_PAYOUT_INSTRUCTIONS,
};

use super::{
    actor_account, vault_dividend_account, vault_operator, SettlementRow, SettlementStore,
};
use crate::NodeError;

fn ledger_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Ledger(e.to_string())
}

fn econ(e: EconomicsError) -> NodeError {
    NodeError::Refused(e.to_string())
}

fn payout_id(s: String) -> Result<PayoutId, NodeError> {
    PayoutId::new(s).map_err(ledger_err)
}

/// The credits each enterprise earns from a fee split: its Vault's operator and
/// contributor lines × `enterprise_credit_rate_bp` (rule in `CreditBalance::earn`).
pub fn credits_for(
    params: &PolicyParams,
    fee_shares: &BTreeMap<String, u64>,
    vault_usage: &[VaultUsageTotals],
) -> Result<Vec<(String, u64)>, EconomicsError> {
    let mut out = Vec::new();
    for t in vault_usage {
        let operator = format!("operator:{}", t.vault);
        let earned = [
            format!("actor:{operator}"),
            format!("contributors:{}", t.vault),
        ]
        .iter()
        .map(|k| fee_shares.get(k).copied().unwrap_or(0))
        .try_fold(0u64, u64::checked_add)
        .ok_or(EconomicsError::Overflow {
            what: "vault earnings",
        })?;
        let credit =
            CreditBalance::default().earn(earned, params.rewards.enterprise_credit_rate_bp)?;
        if credit > 0 {
            out.push((operator, credit));
        }
    }
    Ok(out)
}

/// Marks a payout complete and adds its credits, atomically.
pub(crate) fn earn_credits_and_store(
    store: &SettlementStore,
    row: &SettlementRow,
) -> Result<(), NodeError> {
    store.put_row_with_credits(row, &row.candidate.enterprise_credits)
}

/// An enterprise pays part of its own task's fee from its credit (at most
/// `enterprise_credit_max_offset_bp`); persisted. The credited part is funded by the
/// treasury (`treasury_funded` of the result is what the treasury must add to escrow).
pub fn apply_credit(
    store: &SettlementStore,
    enterprise: &ActorId,
    fee_micro_sym: u64,
    params: &PolicyParams,
) -> Result<symphony_economics::rewards::CreditApplication, NodeError> {
    let mut balance = CreditBalance {
        balance_micro_sym: store.credit(enterprise.as_str())?,
    };
    let applied = balance.apply_to_fee(
        fee_micro_sym,
        params.rewards.enterprise_credit_max_offset_bp,
    );
    store.set_credit(enterprise.as_str(), balance.balance_micro_sym)?;
    Ok(applied)
}

/// Run **inside the Vault**: which of its producers' records task `task` used, from
/// its own budget ledger (subjects that committed ε for the task). Producer accounts
/// are `producer:<subject>`; `staked` is read from the ledger. Never leaves the Vault
/// except as payout instructions to the producers themselves.
pub fn vault_producer_usage(
    vault: &symphony_vault::Vault,
    ledger: &dyn SettlementLedger,
    task: &TaskId,
    scope: UsageScope,
    at_ms: u64,
) -> Result<Vec<ProducerUsage>, NodeError> {
    producer_usage(vault_subject_usage(vault, task, scope, at_ms)?, ledger)
}

/// The Vault's part of [`vault_producer_usage`] (no ledger: it runs for every
/// Vault at once): the subjects whose ε the task's slice committed, as the Vault
/// recorded them with the commit ([`symphony_vault::Vault::task_usage`]: one read);
/// for a task committed otherwise, each consenting subject whose budget account
/// finished `task` with ε > 0, read in one snapshot.
pub fn vault_subject_usage(
    vault: &symphony_vault::Vault,
    task: &TaskId,
    scope: UsageScope,
    at_ms: u64,
) -> Result<Vec<(SubjectId, Epsilon)>, NodeError> {
    if let Some((recorded, used)) = vault.task_usage(task)? {
        if recorded == scope {
            return Ok(used.into_iter().filter(|(_, e)| e.micro > 0).collect());
        }
    }
    let consented = vault.consented_subjects(scope, at_ms)?;
    let accounts = vault.budget_accounts(&consented, scope)?;
    Ok(consented
        .into_iter()
        .zip(accounts)
        .filter_map(|(subject, account)| {
            let eps = account.finished_of(task).filter(|e| e.micro > 0)?;
            Some((subject, eps))
        })
        .collect())
}

/// [`vault_producer_usage`] from a Vault's subject usage: each subject's producer
/// and whether it is staked.
pub fn producer_usage(
    used: Vec<(SubjectId, Epsilon)>,
    ledger: &dyn SettlementLedger,
) -> Result<Vec<ProducerUsage>, NodeError> {
    let (mut producers, accounts) = unstaked_producer_usage(used)?;
    mark_staked(&mut producers, &accounts, ledger);
    Ok(producers)
}

/// The ledger-free part of [`producer_usage`] (it runs for every Vault at once):
/// each subject's producer, not yet marked staked, and the producer's account.
pub(crate) fn unstaked_producer_usage(
    used: Vec<(SubjectId, Epsilon)>,
) -> Result<(Vec<ProducerUsage>, Vec<AccountId>), NodeError> {
    let mut producers = Vec::with_capacity(used.len());
    let mut accounts = Vec::with_capacity(used.len());
    for (subject, eps) in used {
        let producer = producer_actor(&subject)?;
        accounts.push(actor_account(&producer)?);
        producers.push(ProducerUsage {
            producer,
            records_used: 1,
            epsilon_consumed: eps,
            staked: false,
        });
    }
    Ok((producers, accounts))
}

/// Marks each producer staked or not from the ledger (`accounts[i]` is the
/// account of `producers[i]`).
pub(crate) fn mark_staked(
    producers: &mut [ProducerUsage],
    accounts: &[AccountId],
    ledger: &dyn SettlementLedger,
) {
    for (p, account) in producers.iter_mut().zip(accounts) {
        p.staked = ledger.is_staked(account, StakeTier::Producer);
    }
}

/// The producer actor of a data subject.
pub fn producer_actor(subject: &SubjectId) -> Result<ActorId, NodeError> {
    ActorId::new(format!("producer:{subject}")).map_err(|e| NodeError::Refused(e.to_string()))
}

/// Run **inside the Vault**: each producer's `(index in producers, gross, net)` dividend of a
/// contributor share, by `vault_dividend_parts` (one split by usage weight, then the
/// policy's multiplier), in the policy's order (by producer); checks that the reward
/// contract's multiplier (`producer_split`) gives exactly the policy's net amounts.
pub(crate) fn vault_dividend_lines(
    vault: &VaultId,
    share_micro_sym: u64,
    producers: &[ProducerUsage],
    params: &PolicyParams,
) -> Result<Vec<(usize, u64, u64)>, NodeError> {
    let multiplier = params.staking.unstaked_producer_multiplier_bp;
    let parts = vault_dividend_parts(share_micro_sym, producers, multiplier).map_err(econ)?;
    let mut lines = Vec::with_capacity(parts.len());
    for part in parts {
        let p = &producers[part.index];
        if producer_split(part.gross, p.staked).0 != part.net {
            return Err(NodeError::Refused(format!(
                "vault {vault}: the reward contract's multiplier disagrees with the policy for {}",
                p.producer
            )));
        }
        lines.push((part.index, part.gross, part.net));
    }
    Ok(lines)
}

/// Run **inside the Vault**: splits its contributor share among its producers with
/// `vault_dividends` and turns it into payout sets from the Vault's dividend account
/// (≤ `MAX_PAYOUT_INSTRUCTIONS` each). Instructions carry the gross dividend; the
/// reward contract applies the staking multiplier, and this function checks that the
/// contract's multiplier gives exactly the policy's net amounts, and that Σ = share.
#[allow(clippy::too_many_arguments)]
pub fn vault_dividend_sets(
    vault: &VaultId,
    task: &TaskId,
    share_micro_sym: u64,
    producers: &[ProducerUsage],
    params: &PolicyParams,
    epoch: EpochId,
) -> Result<Vec<PayoutInstructionSet>, NodeError> {
    if share_micro_sym == 0 || producers.is_empty() {
        return Ok(Vec::new());
    }
    let mut instructions = Vec::new();
    for (i, g, _) in vault_dividend_lines(vault, share_micro_sym, producers, params)? {
        if g > 0 {
            instructions.push(PayoutInstruction {
                recipient: actor_account(&producers[i].producer)?,
                amount: g,
                kind: PayoutKind::DataUsageDividend,
            });
        }
    }
    instructions
        .chunks(MAX_PAYOUT_INSTRUCTIONS)
        .enumerate()
        .map(|(i, chunk)| {
            Ok(PayoutInstructionSet {
                payout_id: payout_id(format!("dividends-{task}-{vault}-{i}"))?,
                epoch_id: epoch.0,
                settlement_ref: task.to_string(),
                instructions: chunk.to_vec(),
            })
        })
        .collect()
}

/// Executes a Vault's dividend sets from its dividend account (idempotent by payout
/// id) and appends them to the epoch's group.
pub fn pay_vault_dividends(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    vault: &VaultId,
    sets: &[PayoutInstructionSet],
) -> Result<u64, NodeError> {
    let source = PayoutSource::Account(vault_dividend_account(vault)?);
    let mut total = 0u64;
    for set in sets {
        ledger.distribute(source.clone(), set).map_err(ledger_err)?;
        store.append_epoch_payout(set)?;
        total = total.saturating_add(set.total().map_err(ledger_err)?);
    }
    Ok(total)
}

/// Node operation rewards of `epoch` during bootstrap: mints the epoch's inflation
/// (`inflation_mint_for_epoch` of the supply at the start of the epoch's year, kept
/// in the store) into the treasury and pays it to the nodes by weight. Idempotent:
/// a second call for the same epoch mints and pays nothing more. Returns the amount.
pub fn mint_node_operation_rewards(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    params: &PolicyParams,
    epoch: EpochId,
    node_weights: &[(ActorId, u64)],
) -> Result<u64, NodeError> {
    let epochs_per_year = params.epochs.epochs_per_year().map_err(econ)?;
    let year = epoch.0 / epochs_per_year.max(1);
    let key = format!("year-start-supply:{year}");
    let supply = match store.meta(&key)? {
        Some(s) => s,
        None => {
            let s = u64::try_from(ledger.total_supply())
                .map_err(|_| NodeError::Ledger("supply exceeds u64".into()))?;
            store.set_meta(&key, s)?;
            s
        }
    };
    let mint = inflation_mint_for_epoch(params, epoch, supply).map_err(econ)?;
    if mint == 0 || node_weights.is_empty() {
        return Ok(0);
    }
    match ledger.mint_inflation(epoch.0, mint) {
        Ok(_) | Err(LedgerError::InflationAlreadyMinted(_)) => {}
        Err(e) => return Err(ledger_err(e)),
    }
    let shares = node_operation_rewards(mint, node_weights).map_err(econ)?;
    let instructions = shares
        .into_iter()
        .filter(|(_, a)| *a > 0)
        .map(|(actor, amount)| {
            Ok(PayoutInstruction {
                recipient: actor_account(&actor)?,
                amount,
                kind: PayoutKind::NodeOperation,
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let set = PayoutInstructionSet {
        payout_id: payout_id(format!("node-operation-{}", epoch.0))?,
        epoch_id: epoch.0,
        settlement_ref: format!("inflation:{}", epoch.0),
        instructions,
    };
    ledger
        .distribute(PayoutSource::Treasury, &set)
        .map_err(ledger_err)?;
    store.append_epoch_payout(&set)?;
    Ok(mint)
}

/// A rejected task: the policy's base fee of its class (`rejection_fee`) goes from
/// the escrow to the treasury (payout `rejection-<task>`), the rest of the escrow is
/// refunded. Idempotent (payout by id; refund of exactly what remains).
pub fn charge_rejection(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    escrow_id: &EscrowId,
    task: &TaskId,
    class: TaskClass,
    params: &PolicyParams,
    epoch: EpochId,
) -> Result<SettledFee, NodeError> {
    charge_rejection_owing(
        ledger,
        store,
        escrow_id,
        task,
        class,
        params,
        epoch,
        Vec::new(),
    )
}

/// [`charge_rejection`] of a task that already owes `owed` out of its escrow (the
/// payouts its closed training rounds scheduled in their epochs' payout sets): they
/// are paid with the base fee (capped at what the escrow has left after them), in
/// the escrow's one payout; the rest is refunded.
#[allow(clippy::too_many_arguments)]
pub fn charge_rejection_owing(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    escrow_id: &EscrowId,
    task: &TaskId,
    class: TaskClass,
    params: &PolicyParams,
    epoch: EpochId,
    owed: Vec<PayoutInstruction>,
) -> Result<SettledFee, NodeError> {
    let locked = ledger
        .escrow(escrow_id)
        .map(|e| e.locked)
        .ok_or_else(|| NodeError::Ledger(format!("no escrow {escrow_id}")))?;
    let owed_total = owed
        .iter()
        .try_fold(0u64, |acc, i| acc.checked_add(i.amount))
        .ok_or_else(|| NodeError::Ledger(format!("{task}: owed payouts overflow")))?;
    let available = locked.checked_sub(owed_total).ok_or_else(|| {
        NodeError::Ledger(format!(
            "{task}: the rounds' payouts ({owed_total} µSYM) exceed escrow {escrow_id} \
             ({locked} µSYM)"
        ))
    })?;
    let base = rejection_fee(&params.prices, class, available);
    let mut instructions = owed;
    if base.charged_micro_sym > 0 {
        instructions.push(PayoutInstruction {
            recipient: AccountId::treasury(),
            amount: base.charged_micro_sym,
            kind: PayoutKind::Treasury,
        });
    }
    if !instructions.is_empty() {
        let set = PayoutInstructionSet {
            payout_id: payout_id(format!("rejection-{task}"))?,
            epoch_id: epoch.0,
            settlement_ref: format!("rejected:{task}"),
            instructions,
        };
        ledger.payout(escrow_id, &set).map_err(ledger_err)?;
        store.append_epoch_payout(&set)?;
    }
    let remaining = ledger.escrow(escrow_id).map_or(0, |e| e.remaining());
    if remaining > 0 {
        ledger.refund(escrow_id, remaining).map_err(ledger_err)?;
    }
    let charged = base.charged_micro_sym + owed_total;
    Ok(SettledFee {
        estimate_micro_sym: locked,
        actual_micro_sym: base.actual_micro_sym.saturating_add(owed_total),
        charged_micro_sym: charged,
        refund_micro_sym: locked - charged,
        clamped: base.clamped,
    })
}

/// The ledger kind of a payout to a fee-share recipient name (`treasury`,
/// `contributors:<vault>`, `actor:operator:<vault>`, `actor:master-<i>` and other
/// actors).
pub fn payout_kind_of(name: &str) -> PayoutKind {
    if name == "treasury" {
        PayoutKind::Treasury
    } else if name.starts_with("contributors:") {
        PayoutKind::DataUsageDividend
    } else if name.starts_with("actor:operator:") {
        PayoutKind::VaultOperator
    } else {
        PayoutKind::Executor
    }
}

/// The ledger account of a fee-share recipient name: the protocol treasury for
/// `treasury`, else the account of that name.
pub fn share_account(name: &str) -> Result<AccountId, NodeError> {
    if name == "treasury" {
        Ok(AccountId::treasury())
    } else {
        AccountId::new(name.to_owned()).map_err(ledger_err)
    }
}

/// The payout instructions of what a composite task's closed rounds scheduled in
/// their epochs' payout sets (each round's compute and aggregation fee), from the
/// replicated state; empty for any other task.
pub fn scheduled_round_payouts(
    state: &symphony_master::MasterState,
    task: &TaskId,
) -> Result<Vec<PayoutInstruction>, NodeError> {
    let mut out = Vec::new();
    let Some(c) = state.composite(task) else {
        return Ok(out);
    };
    for p in c.round_payouts.values() {
        for (name, amount) in &p.fee_shares {
            out.push(PayoutInstruction {
                recipient: share_account(name)?,
                amount: *amount,
                kind: payout_kind_of(name),
            });
        }
    }
    Ok(out)
}

/// Releases the escrow of a task that will not settle (a `train` run refused or
/// aborted): pays what its closed rounds scheduled, if anything, in the escrow's
/// one payout (`rounds-<task>`, in `epoch`), and refunds the rest. An escrow
/// already paid out is only refunded what it has left. Returns (paid, refunded).
pub fn release_escrow(
    ledger: &mut dyn SettlementLedger,
    store: Option<&SettlementStore>,
    state: &symphony_master::MasterState,
    escrow_id: &EscrowId,
    task: &TaskId,
    epoch: EpochId,
) -> Result<(u64, u64), NodeError> {
    let Some(rec) = ledger.escrow(escrow_id) else {
        return Err(NodeError::Ledger(format!("no escrow {escrow_id}")));
    };
    let mut paid = 0;
    if rec.payout_id.is_none() {
        let owed = scheduled_round_payouts(state, task)?;
        if !owed.is_empty() {
            let set = PayoutInstructionSet {
                payout_id: payout_id(format!("rounds-{task}"))?,
                epoch_id: epoch.0,
                settlement_ref: format!("rounds:{task}"),
                instructions: owed,
            };
            paid = set.total().map_err(ledger_err)?;
            ledger.payout(escrow_id, &set).map_err(ledger_err)?;
            if let Some(store) = store {
                store.append_epoch_payout(&set)?;
            }
        }
    }
    let remaining = ledger.escrow(escrow_id).map_or(0, |e| e.remaining());
    if remaining > 0 {
        ledger.refund(escrow_id, remaining).map_err(ledger_err)?;
    }
    Ok((paid, remaining))
}

/// The Vault operator accounts of `vaults` (for stake bonding and slashing).
pub fn operator_accounts(vaults: &[VaultId]) -> Result<Vec<AccountId>, NodeError> {
    vaults
        .iter()
        .map(|v| vault_operator(v).and_then(|a| actor_account(&a)))
        .collect()
}
