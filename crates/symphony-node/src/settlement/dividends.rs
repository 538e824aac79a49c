//! A Vault's dividend for one task as **one committed Merkle distribution**
//! (issue #14) instead of one ledger account write per producer.
//!
//! Up to [`DIRECT_PAYOUT_LIMIT`](super::DIRECT_PAYOUT_LIMIT) producers, a Vault pays
//! its producers with payout sets ([`super::rewards::vault_dividend_sets`]), as
//! before. Beyond it, [`pay_vault_dividend_share`] builds a
//! [`Distribution`] of the producers' **net** dividends (the staking multiplier is
//! applied when the leaves are built: staked 100 %, unstaked 50 %), commits it from
//! the Vault's dividend account with `CommitDistribution` (one write moving Σ net
//! into the distribution's pool), and pays the unstaked producers' other halves to
//! the epoch's reward pool in one payout set `dividends-<task>-<vault>-pool`, where
//! the per-account path would have sent them. The leaves are kept in the settlement
//! store ([`DividendDistribution`]), so a producer's proof can be built later:
//! [`claim_dividends`] (`symphony producer claim`) finds a producer's unclaimed
//! leaves, proves them and submits `ClaimDistribution`.
//!
//! The distribution id is `epoch-<e>/dividends-<task>-<vault>`. Idempotent: the
//! store's record is written first and reused by a retry, the ledger's commit of
//! identical terms and the pool payout (by id) are no-ops the second time, so a
//! second call for the same task commits nothing more. A Vault's dividend for one
//! task is paid one way only: a kept distribution is never paid again as sets, and
//! sets already paid are never committed again as a distribution.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::ids::{EpochId, TaskId, VaultId};
use symphony_economics::rewards::ProducerUsage;
use symphony_economics::PolicyParams;
use symphony_ledger::distributor::{
    verify, Distribution, DistributionCommitment, DistributionLeaf,
};
use symphony_ledger::{
    AccountId, DistributionId, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind,
    PayoutSource, SettlementLedger,
};

use super::rewards::{pay_vault_dividends, vault_dividend_lines, vault_dividend_sets};
use super::{actor_account, vault_dividend_account, SettlementStore};
use crate::NodeError;

fn ledger_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Ledger(e.to_string())
}

/// A Vault's dividend for one task, committed as one distribution: what the
/// settlement store keeps (the leaves, so that proofs can be produced later).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DividendDistribution {
    /// `epoch-<e>/dividends-<task>-<vault>`.
    pub distribution_id: String,
    /// The task's settlement epoch (hashed into every leaf).
    pub epoch_id: u64,
    /// The task whose fee paid it.
    pub task_id: TaskId,
    /// The Vault whose producers it pays.
    pub vault: VaultId,
    /// The Vault's Data Contributor share of the task, µSYM (Σ gross).
    pub share_micro_sym: u64,
    /// The committed Merkle root.
    pub root: [u8; 32],
    /// Σ of the leaves' amounts (Σ net), moved into the pool at commit.
    pub total: u64,
    /// `(index, producer account, net amount, data_usage_dividend)`, index order.
    pub leaves: Vec<DistributionLeaf>,
    /// The unstaked producers' other halves (`share − total`), paid to the epoch's
    /// reward pool; `None` when every producer is staked.
    pub pool_set: Option<PayoutInstructionSet>,
}

impl DividendDistribution {
    /// The commitment the ledger holds.
    pub fn commitment(&self) -> DistributionCommitment {
        DistributionCommitment {
            distribution_id: self.distribution_id.clone(),
            epoch_id: self.epoch_id,
            root: self.root,
            count: self.leaves.len() as u64,
            total: self.total,
        }
    }

    /// The tree rebuilt from the kept leaves; refused unless it gives the kept
    /// root, count and total (a tampered store).
    pub fn rebuild(&self) -> Result<Distribution, NodeError> {
        let d = Distribution::build(&self.distribution_id, self.epoch_id, &self.leaves).map_err(
            |e| {
                NodeError::Refused(format!(
                    "distribution {}: the kept leaves do not build: {e}",
                    self.distribution_id
                ))
            },
        )?;
        if d.commitment() != &self.commitment() {
            return Err(NodeError::Refused(format!(
                "distribution {}: the kept leaves do not rebuild its root and total",
                self.distribution_id
            )));
        }
        Ok(d)
    }

    /// The pool payout's amount (0 without one).
    pub fn pool_total(&self) -> u64 {
        self.pool_set.as_ref().map_or(0, |s| {
            s.instructions
                .iter()
                .fold(0u64, |a, i| a.saturating_add(i.amount))
        })
    }
}

/// The distribution id of `vault`'s dividend for `task` in `epoch`.
pub fn dividend_distribution_id(task: &TaskId, vault: &VaultId, epoch: EpochId) -> String {
    format!("epoch-{}/dividends-{task}-{vault}", epoch.0)
}

/// Run **inside the Vault**: its dividend of `share_micro_sym` for `task` as one
/// distribution of net amounts (see the module). `None` when nothing is owed or no
/// producer nets anything (then the payout sets pay it).
pub fn vault_dividend_distribution(
    vault: &VaultId,
    task: &TaskId,
    share_micro_sym: u64,
    producers: &[ProducerUsage],
    params: &PolicyParams,
    epoch: EpochId,
) -> Result<Option<DividendDistribution>, NodeError> {
    let recipient = |i: usize| actor_account(&producers[i].producer);
    dividend_distribution_to(
        vault,
        task,
        share_micro_sym,
        producers,
        recipient,
        params,
        epoch,
    )
}

/// [`vault_dividend_distribution`] with the producers' accounts known
/// (`accounts[i]` is the account of `producers[i]`).
pub(crate) fn vault_dividend_distribution_to(
    vault: &VaultId,
    task: &TaskId,
    share_micro_sym: u64,
    producers: &[ProducerUsage],
    accounts: &[AccountId],
    params: &PolicyParams,
    epoch: EpochId,
) -> Result<Option<DividendDistribution>, NodeError> {
    if accounts.len() != producers.len() {
        return Err(NodeError::Refused(format!(
            "vault {vault}: {} accounts for {} producers",
            accounts.len(),
            producers.len()
        )));
    }
    let recipient = |i: usize| Ok(accounts[i].clone());
    dividend_distribution_to(
        vault,
        task,
        share_micro_sym,
        producers,
        recipient,
        params,
        epoch,
    )
}

/// [`vault_dividend_distribution`], producer `i` paid to `recipient(i)`.
fn dividend_distribution_to(
    vault: &VaultId,
    task: &TaskId,
    share_micro_sym: u64,
    producers: &[ProducerUsage],
    recipient: impl Fn(usize) -> Result<AccountId, NodeError>,
    params: &PolicyParams,
    epoch: EpochId,
) -> Result<Option<DividendDistribution>, NodeError> {
    if share_micro_sym == 0 || producers.is_empty() {
        return Ok(None);
    }
    let id = dividend_distribution_id(task, vault, epoch);
    DistributionId::new(id.as_str()).map_err(ledger_err)?;
    let lines = vault_dividend_lines(vault, share_micro_sym, producers, params)?;
    let mut leaves = Vec::with_capacity(lines.len());
    let (mut gross_total, mut to_pool) = (0u64, 0u64);
    for (i, gross, net) in lines {
        let overflow = || NodeError::Refused(format!("vault {vault}: dividends overflow"));
        gross_total = gross_total.checked_add(gross).ok_or_else(overflow)?;
        to_pool = to_pool.checked_add(gross - net).ok_or_else(overflow)?;
        if net > 0 {
            leaves.push(DistributionLeaf {
                index: leaves.len() as u64,
                recipient: recipient(i)?,
                amount: net,
                kind: PayoutKind::DataUsageDividend,
            });
        }
    }
    if gross_total != share_micro_sym {
        return Err(NodeError::Refused(format!(
            "vault {vault}: dividends add up to {gross_total} µSYM, not the share {share_micro_sym}"
        )));
    }
    if leaves.is_empty() {
        return Ok(None);
    }
    let built = Distribution::build(&id, epoch.0, &leaves).map_err(ledger_err)?;
    let c = built.commitment();
    let pool_set = if to_pool > 0 {
        Some(PayoutInstructionSet {
            payout_id: PayoutId::new(format!("dividends-{task}-{vault}-pool"))
                .map_err(ledger_err)?,
            epoch_id: epoch.0,
            settlement_ref: task.to_string(),
            instructions: vec![PayoutInstruction {
                recipient: AccountId::reward_pool(epoch.0),
                amount: to_pool,
                kind: PayoutKind::Treasury,
            }],
        })
    } else {
        None
    };
    Ok(Some(DividendDistribution {
        distribution_id: id,
        epoch_id: epoch.0,
        task_id: task.clone(),
        vault: vault.clone(),
        share_micro_sym,
        root: c.root,
        total: c.total,
        leaves,
        pool_set,
    }))
}

/// Pays a kept (or new) dividend distribution: keeps it in the store, commits it
/// from the Vault's dividend account and pays its pool set. Idempotent. Returns the
/// share it pays (Σ net + the reward pool's part).
pub fn pay_vault_distribution(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    d: &DividendDistribution,
) -> Result<u64, NodeError> {
    let stored;
    let kept = match store.distribution(&d.distribution_id)? {
        Some(k) => {
            stored = k;
            &stored
        }
        None => {
            store.put_distribution(d)?;
            d
        }
    };
    let source = PayoutSource::Account(vault_dividend_account(&kept.vault)?);
    ledger
        .commit_distribution(source.clone(), &kept.commitment())
        .map_err(ledger_err)?;
    if let Some(set) = &kept.pool_set {
        ledger.distribute(source, set).map_err(ledger_err)?;
        store.append_epoch_payout(set)?;
    }
    Ok(kept.total.saturating_add(kept.pool_total()))
}

/// Whether `vault`'s dividend for `task` was paid as payout sets (its first set is
/// in the epoch's group).
fn paid_as_sets(
    store: &SettlementStore,
    task: &TaskId,
    vault: &VaultId,
    epoch: EpochId,
) -> Result<bool, NodeError> {
    let first = format!("dividends-{task}-{vault}-0");
    Ok(store
        .epoch_payouts(epoch.0)?
        .iter()
        .any(|s| s.payout_id.as_str() == first))
}

/// Run **inside the Vault**: pays its contributor share of `task` to its
/// producers — payout sets (one account write each) up to `direct_limit`
/// producers, one committed distribution beyond (see the module). Idempotent, and
/// one way only per (task, Vault). Returns the share paid.
#[allow(clippy::too_many_arguments)]
pub fn pay_vault_dividend_share(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    vault: &VaultId,
    task: &TaskId,
    share_micro_sym: u64,
    producers: &[ProducerUsage],
    params: &PolicyParams,
    epoch: EpochId,
    direct_limit: usize,
) -> Result<u64, NodeError> {
    let share = VaultShare {
        vault,
        task,
        share_micro_sym,
        producers,
        params,
        epoch,
        direct_limit,
    };
    pay_prepared_dividend_share(ledger, store, &share, None)
}

/// What [`pay_vault_dividend_share`] pays: one Vault's contributor share of a task.
pub(crate) struct VaultShare<'a> {
    pub vault: &'a VaultId,
    pub task: &'a TaskId,
    pub share_micro_sym: u64,
    pub producers: &'a [ProducerUsage],
    pub params: &'a PolicyParams,
    pub epoch: EpochId,
    pub direct_limit: usize,
}

impl VaultShare<'_> {
    /// Whether a new payment of it would be a distribution (more producers than
    /// the direct limit).
    pub fn beyond_direct_limit(&self) -> bool {
        self.producers.len() > self.direct_limit
    }
}

/// [`pay_vault_dividend_share`], with the distribution it would build (by
/// [`vault_dividend_distribution`], the same terms) built already, e.g. while
/// another Vault paid: `prepared` is used only where that function would be called.
pub(crate) fn pay_prepared_dividend_share(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    s: &VaultShare<'_>,
    prepared: Option<Result<Option<DividendDistribution>, NodeError>>,
) -> Result<u64, NodeError> {
    let (vault, task, epoch) = (s.vault, s.task, s.epoch);
    let id = dividend_distribution_id(task, vault, epoch);
    if let Some(kept) = store.distribution(&id)? {
        return pay_vault_distribution(ledger, store, &kept);
    }
    if s.beyond_direct_limit() && !paid_as_sets(store, task, vault, epoch)? {
        let built = match prepared {
            Some(built) => built?,
            None => vault_dividend_distribution(
                vault,
                task,
                s.share_micro_sym,
                s.producers,
                s.params,
                epoch,
            )?,
        };
        if let Some(d) = built {
            return pay_vault_distribution(ledger, store, &d);
        }
    }
    let sets = vault_dividend_sets(vault, task, s.share_micro_sym, s.producers, s.params, epoch)?;
    pay_vault_dividends(ledger, store, vault, &sets)
}

/// One leaf a producer claimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClaimedLeaf {
    /// The distribution.
    pub distribution_id: String,
    /// Its epoch.
    pub epoch: u64,
    /// The task whose dividend it was.
    pub task_id: String,
    /// The paying Vault.
    pub vault: String,
    /// The leaf's index.
    pub index: u64,
    /// Paid, µSYM (net: the staking multiplier was applied in the leaf).
    pub amount_micro_sym: u64,
    /// The leaf's kind (`data_usage_dividend`).
    pub kind: String,
}

/// What `symphony producer claim` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClaimReport {
    /// The producer's account.
    pub producer: String,
    /// The leaves paid now.
    pub claimed: Vec<ClaimedLeaf>,
    /// Σ paid now, µSYM.
    pub total_micro_sym: u64,
    /// Leaves of this producer claimed before (skipped).
    pub claimed_before: usize,
    /// The producer's balance after the claims, µSYM.
    pub balance_micro_sym: u64,
}

/// The ledger account a producer is named by: an account (`actor:producer:…`), an
/// actor (`producer:…`) or a data subject (`s-…`).
pub fn producer_account(name: &str) -> Result<AccountId, NodeError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NodeError::Refused(
            "--producer: expected a data subject, producer:<subject> or actor:producer:<subject>"
                .into(),
        ));
    }
    let account = if name.starts_with("actor:") {
        name.to_owned()
    } else if name.starts_with("producer:") {
        format!("actor:{name}")
    } else {
        format!("actor:producer:{name}")
    };
    AccountId::new(account).map_err(|e| NodeError::Refused(format!("--producer {name:?}: {e}")))
}

/// Claims every unclaimed dividend leaf of `producer` in the kept distributions:
/// builds each proof from the kept leaves, checks it against the ledger's committed
/// root, then submits `ClaimDistribution`. Refused, with nothing paid, when the
/// producer has no leaf, everything was claimed before, or a kept distribution does
/// not match the ledger's commitment.
pub fn claim_dividends(
    ledger: &mut dyn SettlementLedger,
    store: &SettlementStore,
    producer: &AccountId,
) -> Result<ClaimReport, NodeError> {
    let distributions = store.distributions()?;
    if distributions.is_empty() {
        return Err(NodeError::Refused(
            "no dividend distribution was committed here: nothing to claim".into(),
        ));
    }
    let mut owned = 0usize;
    let mut claimed_before = 0usize;
    let mut pending: Vec<(&DividendDistribution, &DistributionLeaf, DistributionId)> = Vec::new();
    for d in &distributions {
        let id = DistributionId::new(d.distribution_id.as_str()).map_err(ledger_err)?;
        for leaf in d.leaves.iter().filter(|l| &l.recipient == producer) {
            owned += 1;
            if ledger.distribution_claim(&id, leaf.index).is_some() {
                claimed_before += 1;
            } else {
                pending.push((d, leaf, id.clone()));
            }
        }
    }
    if owned == 0 {
        return Err(NodeError::Refused(format!(
            "{producer} has no leaf in the {} dividend distribution(s) here: unknown producer \
             or never paid by distribution",
            distributions.len()
        )));
    }
    if pending.is_empty() {
        return Err(NodeError::Refused(format!(
            "{producer}: all {owned} dividend leaf/leaves were already claimed: nothing to claim"
        )));
    }
    // Every proof is built and checked before anything is submitted.
    let mut trees: BTreeMap<&str, Distribution> = BTreeMap::new();
    let mut proven = Vec::new();
    for (d, leaf, id) in &pending {
        let record = ledger.distribution(id).ok_or_else(|| {
            NodeError::Refused(format!(
                "distribution {id} is kept but not committed on the ledger"
            ))
        })?;
        let tree = match trees.entry(d.distribution_id.as_str()) {
            Entry::Occupied(t) => t.into_mut(),
            Entry::Vacant(slot) => slot.insert(d.rebuild()?),
        };
        let proof = tree.proof(leaf.index).ok_or_else(|| {
            NodeError::Refused(format!("distribution {id}: no leaf {}", leaf.index))
        })?;
        if !verify(&record.commitment(id), leaf, &proof) {
            return Err(NodeError::Refused(format!(
                "distribution {id}: the kept leaf {} does not prove against the committed root",
                leaf.index
            )));
        }
        proven.push((d, *leaf, id, proof));
    }
    let mut claimed = Vec::new();
    let mut total = 0u64;
    for (d, leaf, id, proof) in proven {
        ledger
            .claim_distribution(id, leaf, &proof)
            .map_err(ledger_err)?;
        total = total.saturating_add(leaf.amount);
        claimed.push(ClaimedLeaf {
            distribution_id: d.distribution_id.clone(),
            epoch: d.epoch_id,
            task_id: d.task_id.to_string(),
            vault: d.vault.to_string(),
            index: leaf.index,
            amount_micro_sym: leaf.amount,
            kind: super::summary::kind_name(leaf.kind),
        });
    }
    Ok(ClaimReport {
        producer: producer.to_string(),
        claimed,
        total_micro_sym: total,
        claimed_before,
        balance_micro_sym: ledger.balance(producer),
    })
}

/// What reconciling the kept distributions proved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DistributionCheck {
    /// Kept distributions checked.
    pub distributions: usize,
    /// Their leaves.
    pub leaves: u64,
    /// Leaves claimed.
    pub claimed: u64,
    /// Σ committed, µSYM.
    pub committed_micro_sym: u64,
    /// Σ claimed, µSYM.
    pub claimed_micro_sym: u64,
}

/// Checks every kept distribution against the ledger: its leaves rebuild its root
/// and total, the ledger committed exactly that from the Vault's dividend account,
/// every claim on the ledger is the kept leaf and the claims paid ≤ the total, and
/// its pool set completes the Vault's share. `Err` names the first discrepancy.
pub fn check_distributions(
    store: &SettlementStore,
    ledger: &dyn SettlementLedger,
) -> Result<DistributionCheck, String> {
    let mut out = DistributionCheck::default();
    for d in store.distributions().map_err(|e| e.to_string())? {
        let id = DistributionId::new(d.distribution_id.as_str()).map_err(|e| e.to_string())?;
        d.rebuild().map_err(|e| e.to_string())?;
        let record = ledger
            .distribution(&id)
            .ok_or_else(|| format!("distribution {id} is kept but not on the ledger"))?;
        let source = vault_dividend_account(&d.vault)
            .map(PayoutSource::Account)
            .map_err(|e| e.to_string())?;
        if record.commitment(&id) != d.commitment() || record.source != source {
            return Err(format!(
                "distribution {id}: the ledger committed another root, total, count or source"
            ));
        }
        if record.paid > record.total || record.claimed > record.leaves {
            return Err(format!(
                "distribution {id}: claims paid {} of a total {}",
                record.paid, record.total
            ));
        }
        let (mut paid, mut count) = (0u64, 0u64);
        for leaf in &d.leaves {
            let Some(c) = ledger.distribution_claim(&id, leaf.index) else {
                continue;
            };
            if c.recipient != leaf.recipient || c.amount != leaf.amount || c.kind != leaf.kind {
                return Err(format!(
                    "distribution {id}: claim of leaf {} is not the kept leaf",
                    leaf.index
                ));
            }
            paid = paid.saturating_add(c.amount);
            count += 1;
        }
        if paid != record.paid || count != record.claimed || paid > d.total {
            return Err(format!(
                "distribution {id}: the ledger's claims ({} leaves, {} µSYM) are not those of \
                 the kept leaves ({count}, {paid} µSYM)",
                record.claimed, record.paid
            ));
        }
        if d.total.checked_add(d.pool_total()) != Some(d.share_micro_sym) {
            return Err(format!(
                "distribution {id}: total {} + reward pool {} is not the share {}",
                d.total,
                d.pool_total(),
                d.share_micro_sym
            ));
        }
        out.distributions += 1;
        out.leaves = out.leaves.saturating_add(d.leaves.len() as u64);
        out.claimed = out.claimed.saturating_add(count);
        out.committed_micro_sym = out.committed_micro_sym.saturating_add(d.total);
        out.claimed_micro_sym = out.claimed_micro_sym.saturating_add(paid);
    }
    Ok(out)
}
