//! A Vault whose dividend for one task has more producers than the direct payout
//! limit commits it as one Merkle distribution (issue #14): the distribution's
//! total is the share net of the unstaked halves (which go to the epoch's reward
//! pool), every producer claims exactly once and the claims add up to the total, a
//! forged claim is refused and changes nothing, and reconcile checks the kept
//! leaves against the committed root (failing when one is tampered). The limit is
//! a parameter, so a handful of producers and a limit of 3 exercise it.

mod common;

use common::{luckin, ADVERTISER};

use symphony_core::ids::TaskId;
use symphony_ledger::distributor::DistributionLeaf;
use symphony_ledger::{AccountId, DistributionId, LedgerError, SettlementLedger};
use symphony_node::enterprise::EnterpriseEndpoint;
use symphony_node::network::{advertiser_key, EmbeddedNetwork, Quiet, SignedRequest};
use symphony_node::settlement::dividends::{
    claim_dividends, dividend_distribution_id, producer_account, ClaimReport, DividendDistribution,
};
use symphony_node::settlement::embedded::pay_embedded_vault_dividends_with_limit;
use symphony_node::settlement::reconcile::{reconcile_dir, reconcile_settlements};
use symphony_node::settlement::{vault_dividend_account, SettlementStore};

const SEED: u64 = 31;

/// Runs the Luckin campaign through the masters only: settled and finalized, its
/// Vault dividends not paid yet.
fn settle_unpaid(net: &mut EmbeddedNetwork, nonce: u64) -> TaskId {
    let req = SignedRequest::sign(luckin(), nonce, &advertiser_key(SEED, ADVERTISER)).unwrap();
    let endpoints: Vec<&dyn EnterpriseEndpoint> = net
        .enterprises
        .iter()
        .map(|e| e as &dyn EnterpriseEndpoint)
        .collect();
    let out = net
        .master
        .run_campaign(&endpoints, &req, &mut Quiet)
        .unwrap();
    assert_eq!(
        out.settlement_state.as_deref(),
        Some("finalized"),
        "{out:?}"
    );
    TaskId::new(out.task_id).unwrap()
}

fn store(net: &EmbeddedNetwork) -> &SettlementStore {
    net.master.settlements.as_ref().unwrap()
}

fn claim(
    net: &mut EmbeddedNetwork,
    producer: &AccountId,
) -> Result<ClaimReport, symphony_node::NodeError> {
    let m = &mut net.master;
    let store = m.settlements.as_ref().expect("a settlement store");
    claim_dividends(&mut *m.ledger, store, producer)
}

fn event_count(ledger: &dyn SettlementLedger) -> usize {
    ledger.events(0, usize::MAX).unwrap().len()
}

fn pay(net: &mut EmbeddedNetwork, task: &TaskId, limit: usize) -> u64 {
    let at = net.master.now_ms;
    pay_embedded_vault_dividends_with_limit(&mut net.master, &net.enterprises, task, at, limit)
        .unwrap()
}

#[test]
fn a_vault_beyond_the_limit_commits_one_distribution_that_every_producer_claims_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = common::network(dir.path(), SEED, 400, 2);
    let task = settle_unpaid(&mut net, 1);
    let row = store(&net).row(&task).unwrap().unwrap();
    let vaults: Vec<_> = net
        .enterprises
        .iter()
        .map(|e| e.vault_id().clone())
        .collect();
    let before: Vec<u64> = vaults
        .iter()
        .map(|v| {
            net.master
                .ledger
                .balance(&vault_dividend_account(v).unwrap())
        })
        .collect();

    let paid = pay(&mut net, &task, 3);

    // One distribution per Vault, kept with its leaves; the share left the Vault's
    // dividend account once: Σ net into the pool, the unstaked halves to the
    // epoch's reward pool.
    let mut kept: Vec<DividendDistribution> = Vec::new();
    let mut shares = 0;
    for (v, b) in vaults.iter().zip(&before) {
        let share = row.candidate.fee_shares[&format!("contributors:{v}")];
        shares += share;
        let id = dividend_distribution_id(&task, v, row.epoch_id);
        let d = store(&net).distribution(&id).unwrap().expect("kept");
        assert!(d.leaves.len() > 3, "{} producers", d.leaves.len());
        // The leaves are the subjects the slice recorded with its ε commit, each
        // with the ε its budget account finished the task with.
        let node = net.enterprises.iter().find(|e| e.vault_id() == v).unwrap();
        let (scope, used) = node.vault().task_usage(&task).unwrap().expect("recorded");
        assert_eq!(used.len(), d.leaves.len());
        for (subject, eps) in &used {
            let account = node.vault().budget_account(subject, scope).unwrap();
            assert_eq!(account.finished_of(&task), Some(*eps));
        }
        assert_eq!(d.share_micro_sym, share);
        assert_eq!(d.total, d.leaves.iter().map(|l| l.amount).sum::<u64>());
        assert_eq!(d.total + d.pool_total(), share);
        let rec = net
            .master
            .ledger
            .distribution(&DistributionId::new(id.as_str()).unwrap())
            .expect("committed");
        assert_eq!(
            (rec.total, rec.leaves, rec.paid),
            (d.total, d.leaves.len() as u64, 0)
        );
        let after = net
            .master
            .ledger
            .balance(&vault_dividend_account(v).unwrap());
        assert_eq!(b - after, share, "the Vault's share moved once");
        // No producer was written to: they claim.
        for l in &d.leaves {
            assert_eq!(net.master.ledger.balance(&l.recipient), 0);
        }
        kept.push(d);
    }
    assert_eq!(paid, shares);
    let epoch_sets = store(&net).epoch_payouts(row.epoch_id.0).unwrap();
    assert!(
        !epoch_sets
            .iter()
            .any(|s| s.payout_id.as_str().starts_with("dividends-")
                && !s.payout_id.as_str().ends_with("-pool")),
        "no per-account dividend set"
    );

    // Idempotent: a second call commits nothing more.
    let events = event_count(&*net.master.ledger);
    assert_eq!(pay(&mut net, &task, 3), paid);
    assert_eq!(event_count(&*net.master.ledger), events);
    // Nor does the default limit pay it again as payout sets.
    pay(&mut net, &task, usize::MAX);
    assert_eq!(event_count(&*net.master.ledger), events);

    // A forged claim (another amount, another producer) is refused and changes no
    // balance.
    let d = &kept[0];
    let id = DistributionId::new(d.distribution_id.as_str()).unwrap();
    let tree = d.rebuild().unwrap();
    let leaf = &d.leaves[0];
    let other = &d.leaves[1];
    let proof = tree.proof(leaf.index).unwrap();
    let forged = [
        DistributionLeaf {
            amount: leaf.amount + 1,
            ..leaf.clone()
        },
        DistributionLeaf {
            recipient: other.recipient.clone(),
            ..leaf.clone()
        },
    ];
    for f in &forged {
        let err = net
            .master
            .ledger
            .claim_distribution(&id, f, &proof)
            .unwrap_err();
        assert!(matches!(err, LedgerError::BadProof { .. }), "{err}");
    }
    assert_eq!(net.master.ledger.balance(&leaf.recipient), 0);
    assert_eq!(net.master.ledger.balance(&other.recipient), 0);
    assert_eq!(net.master.ledger.distribution(&id).unwrap().paid, 0);
    assert_eq!(event_count(&*net.master.ledger), events);

    // Unknown producer: named, nothing paid.
    let nobody = producer_account("s-nobody").unwrap();
    let err = claim(&mut net, &nobody).unwrap_err().to_string();
    assert!(
        err.contains("actor:producer:s-nobody") && err.contains("no leaf"),
        "{err}"
    );

    // Every producer claims exactly once; the claims add up to the totals.
    let mut claimed_total = 0;
    let mut producers: Vec<&AccountId> = kept
        .iter()
        .flat_map(|d| d.leaves.iter().map(|l| &l.recipient))
        .collect();
    producers.sort();
    producers.dedup();
    for p in &producers {
        let owed: u64 = kept
            .iter()
            .flat_map(|d| &d.leaves)
            .filter(|l| &l.recipient == *p)
            .map(|l| l.amount)
            .sum();
        let r = claim(&mut net, p).unwrap();
        assert_eq!(r.total_micro_sym, owed);
        assert_eq!(r.balance_micro_sym, owed);
        claimed_total += r.total_micro_sym;
        let again = claim(&mut net, p).unwrap_err().to_string();
        assert!(again.contains("already claimed"), "{again}");
        assert_eq!(
            net.master.ledger.balance(p),
            owed,
            "a refused claim pays nothing"
        );
    }
    assert_eq!(
        claimed_total,
        kept.iter().map(|d| d.total).sum::<u64>(),
        "the claims add up to the committed totals"
    );
    for d in &kept {
        let rec = net
            .master
            .ledger
            .distribution(&DistributionId::new(d.distribution_id.as_str()).unwrap())
            .unwrap();
        assert_eq!((rec.paid, rec.claimed), (d.total, d.leaves.len() as u64));
    }

    // Reconcile: the kept leaves rebuild the committed roots, the claims are theirs.
    let r = reconcile_settlements(store(&net), &*net.master.ledger).unwrap();
    assert_eq!(r.distributions.distributions, 2);
    assert_eq!(r.distributions.claimed, r.distributions.leaves);
    assert_eq!(r.distributions.claimed_micro_sym, claimed_total);

    // A tampered leaf in the store: reconcile fails, naming the distribution.
    drop(net);
    let path = dir.path().join("settlement.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("distributions");
        let mut d = kept[1].clone();
        d.leaves[2].amount += 1;
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(table).unwrap();
            let bytes = bcs::to_bytes(&d).unwrap();
            t.insert(d.distribution_id.as_str(), bytes.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    assert!(reconcile_dir(dir.path()).is_err());
    let err = reconcile_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(&kept[1].distribution_id) && err.contains("rebuild"),
        "{err}"
    );
}

#[test]
fn a_vault_within_the_limit_pays_producer_accounts_and_is_never_paid_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = common::network(dir.path(), SEED, 400, 2);
    let req = SignedRequest::sign(luckin(), 1, &advertiser_key(SEED, ADVERTISER)).unwrap();
    // The network pays with the default limit (10,000): per producer account.
    let out = net.run_campaign(&req, &mut Quiet).unwrap();
    let task = TaskId::new(out.task_id).unwrap();
    assert!(store(&net).distributions().unwrap().is_empty());
    let row = store(&net).row(&task).unwrap().unwrap();
    let sets = store(&net).epoch_payouts(row.epoch_id.0).unwrap();
    assert!(sets.iter().any(|s| s
        .payout_id
        .as_str()
        .starts_with(&format!("dividends-{task}-"))));
    // Paid as sets already: a lower limit later commits no distribution.
    let events = event_count(&*net.master.ledger);
    pay(&mut net, &task, 3);
    assert_eq!(event_count(&*net.master.ledger), events);
    assert!(store(&net).distributions().unwrap().is_empty());
    let r = reconcile_settlements(store(&net), &*net.master.ledger).unwrap();
    assert_eq!(r.distributions.distributions, 0);
    let err = claim(&mut net, &producer_account("producer:s-x").unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to claim"), "{err}");
}
