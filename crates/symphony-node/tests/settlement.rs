//! The settlement plane over a fully attested fixture task: lifecycle, finality,
//! payout exactly once, per-epoch grouping, timed-out Vaults, Vault-side dividends,
//! node operation rewards, credits, composite links, reconciliation.

use symphony_core::encoding::Digest;
use symphony_core::ids::{ActorId, EpochId, SubTaskId, TaskId, VaultId};
use symphony_core::lifecycle::{SettlementState, TaskState};
use symphony_economics::rewards::ProducerUsage;
use symphony_economics::{vault_dividends, PolicyParams};
use symphony_ledger::{AccountId, MemoryLedger, SettlementLedger, StakeTier};
use symphony_node::replication::Replicator;
use symphony_node::settlement::fixture::{self, Fixture};
use symphony_node::settlement::reconcile::reconcile_settlements;
use symphony_node::settlement::rewards::{
    apply_credit, mint_node_operation_rewards, pay_vault_dividends, vault_dividend_sets,
};
use symphony_node::settlement::*;

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

struct World {
    fx: Fixture,
    ledger: MemoryLedger,
    store: SettlementStore,
}

fn world(seed: u64, subjects: &[u64], timed_out: usize, epoch: u64) -> World {
    let fx = fixture::build(seed, subjects, timed_out, 40, EpochId(epoch)).unwrap();
    let mut ledger =
        MemoryLedger::new(&fixture::genesis(&fx.params, subjects.len()).unwrap()).unwrap();
    fixture::fund(&mut ledger, &fx, subjects.len(), true).unwrap();
    World {
        fx,
        ledger,
        store: SettlementStore::in_memory().unwrap(),
    }
}

fn ctx(w: &mut World) -> SettlementContext<'_> {
    SettlementContext {
        masters: &mut w.fx.masters,
        ledger: &mut w.ledger,
        verifier: &w.fx.verifier,
        store: &w.store,
        params: &w.fx.params,
    }
}

fn settle(w: &mut World) -> SettlementRow {
    let inputs = w.fx.inputs.clone();
    let (row, outcome) = ctx(w).open(&inputs, fixture::NOW_MS).unwrap();
    assert_eq!(outcome, VerificationOutcome::Accepted);
    ctx(w)
        .finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .unwrap()
}

#[test]
fn lifecycle_finality_and_exactly_once_payout() {
    let mut w = world(1, &[100, 200, 300], 0, 0);
    let submitter = acct(&format!("actor:{}", fixture::SUBMITTER));
    let before =
        w.ledger.balance(&submitter) + w.ledger.escrow(&w.fx.inputs.escrow_id).unwrap().locked;
    let supply = w.ledger.total_supply();
    let inputs = w.fx.inputs.clone();
    let (row, _) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    assert_eq!(row.state, SettlementState::CandidateReady);
    let closes = row.closes_at_ms.unwrap();
    assert_eq!(
        closes,
        fixture::NOW_MS + w.fx.params.epochs.challenge_window_ms
    );
    // Before the window closes nothing finalizes and nothing is paid.
    assert!(ctx(&mut w)
        .finalize(&row.task_id, closes - 1, &mut |_| {})
        .is_err());
    assert_eq!(w.ledger.escrow(&inputs.escrow_id).unwrap().paid_out, 0);
    let mut steps = Vec::new();
    let row = ctx(&mut w)
        .finalize(&row.task_id, closes, &mut |s| steps.push(s))
        .unwrap();
    assert_eq!(
        steps,
        vec![
            FinalizeStep::CertificateStored,
            FinalizeStep::EscrowPaidUnrecorded,
            FinalizeStep::EscrowPaid,
            FinalizeStep::RefundedUnrecorded,
            FinalizeStep::Refunded,
            FinalizeStep::Paid,
            FinalizeStep::Finalized
        ]
    );
    assert_eq!(row.state, SettlementState::Finalized);
    let c = &row.candidate;
    assert_eq!(c.fee_shares.values().sum::<u64>(), c.fee_total);
    assert_eq!(c.escrow_set.total().unwrap(), c.fee_total);
    let escrow = w.ledger.escrow(&inputs.escrow_id).unwrap();
    assert_eq!(
        (escrow.paid_out, escrow.refunded, escrow.remaining()),
        (c.fee_total, c.refund, 0)
    );
    assert_eq!(w.ledger.balance(&submitter), before - c.fee_total);
    assert_eq!(
        w.ledger.total_supply(),
        supply,
        "settlement moves, never creates"
    );
    let task = w.fx.masters.state().task(&row.task_id).unwrap();
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(
        task.settlement.as_ref().unwrap().state,
        SettlementState::Finalized
    );
    // Idempotent: finalizing or resuming again pays nothing more.
    let events = w.ledger.events(0, 10_000).unwrap().len();
    ctx(&mut w)
        .finalize(&row.task_id, closes + 5, &mut |_| {})
        .unwrap();
    assert!(ctx(&mut w).resume_pending().unwrap().is_empty());
    assert_eq!(w.ledger.events(0, 10_000).unwrap().len(), events);
    let report = reconcile_settlements(&w.store, &w.ledger).unwrap();
    assert_eq!(report.settlements_finalized, 1);
    // The settlement belongs to the dispatch epoch; its set is in that group.
    let group = w.store.epoch_payouts(0).unwrap();
    assert_eq!(group, vec![c.escrow_set.clone()]);
    assert!(w.store.epoch_payouts(1).unwrap().is_empty());
}

#[test]
fn timed_out_vault_earns_nothing_and_treasury_gets_its_share() {
    let mut w = world(2, &[100, 200, 300], 1, 3);
    let row = settle(&mut w);
    let c = &row.candidate;
    assert!(
        !c.fee_shares.keys().any(|k| k.contains("vault-00")),
        "{:?}",
        c.fee_shares
    );
    assert!(c.fee_shares.keys().any(|k| k.contains("vault-01")));
    let treasury_share = c.fee_shares["treasury"];
    assert_eq!(
        treasury_share,
        c.fee_total * u64::from(w.fx.params.fee_shares.treasury_bp) / 10_000
    );
    assert_eq!(w.ledger.balance(&AccountId::treasury()), treasury_share);
    assert_eq!(row.epoch_id, EpochId(3));
    assert_eq!(w.store.epoch_payouts(3).unwrap().len(), 1);
    // Verifiers are paid per decision (3 masters, equal decisions).
    let v: Vec<u64> = (0..3)
        .map(|i| c.fee_shares[&format!("actor:master-{i}")])
        .collect();
    assert!(v[0] > 0);
    // Enterprise credits were earned by the operators of verified Vaults only.
    assert_eq!(w.store.credit("operator:vault-00").unwrap(), 0);
    assert!(w.store.credit("operator:vault-01").unwrap() > 0);
}

#[test]
fn stored_evidence_that_does_not_replay_is_challenged_and_rejected() {
    let mut w = world(3, &[100, 200], 0, 0);
    let mut inputs = w.fx.inputs.clone();
    if let Some(ev) = inputs.evidence.slices[1].evidence.as_mut() {
        ev.commitment = Digest([7; 32]);
    }
    let (_, outcome) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    assert!(
        matches!(outcome, VerificationOutcome::Challenged { .. }),
        "{outcome:?}"
    );
    // Deterministic: the replay of the stored evidence gives the same outcome.
    let stored = w.store.row(&inputs.task_id).unwrap().unwrap();
    assert_eq!(verify_inputs(&w.fx.verifier, &stored.evidence), outcome);
    assert_eq!(
        verify_inputs(&w.fx.verifier, &w.fx.inputs.evidence),
        VerificationOutcome::Accepted
    );
}

fn producers(n: u64, staked_every: u64) -> Vec<ProducerUsage> {
    (0..n)
        .map(|i| ProducerUsage {
            producer: ActorId::new(format!("producer:s{i:04}")).unwrap(),
            records_used: 1 + i % 3,
            epsilon_consumed: symphony_core::budget::Epsilon::from_milli(100),
            staked: staked_every > 0 && i % staked_every == 0,
        })
        .collect()
}

#[test]
fn vault_pays_dividends_inside_the_vault_with_the_staking_multiplier() {
    let mut w = world(4, &[100, 200], 0, 2);
    let row = settle(&mut w);
    let vault = VaultId::new("vault-01").unwrap();
    let share = row.candidate.fee_shares["contributors:vault-01"];
    let dividend_account = vault_dividend_account(&vault).unwrap();
    assert_eq!(
        w.ledger.balance(&dividend_account),
        share,
        "no multiplier on the pool line"
    );
    let ps = producers(200, 4);
    for p in ps.iter().filter(|p| p.staked) {
        let a = acct(&format!("actor:{}", p.producer));
        w.ledger
            .transfer(
                &acct(&format!("actor:{}", fixture::SUBMITTER)),
                &a,
                w.fx.params.staking.s_producer_micro_sym,
            )
            .unwrap();
        w.ledger
            .bond(
                &a,
                StakeTier::Producer,
                w.fx.params.staking.s_producer_micro_sym,
            )
            .unwrap();
    }
    let sets =
        vault_dividend_sets(&vault, &row.task_id, share, &ps, &w.fx.params, row.epoch_id).unwrap();
    let paid = pay_vault_dividends(&mut w.ledger, &w.store, &vault, &sets).unwrap();
    assert_eq!(paid, share);
    assert_eq!(w.ledger.balance(&dividend_account), 0);
    let expected = vault_dividends(
        share,
        &ps,
        w.fx.params.staking.unstaked_producer_multiplier_bp,
    )
    .unwrap();
    for (producer, net) in &expected.payouts {
        assert_eq!(
            w.ledger.balance(&acct(&format!("actor:{producer}"))),
            *net,
            "{producer}"
        );
    }
    assert_eq!(
        w.ledger.balance(&AccountId::reward_pool(2)),
        expected.returned_to_pool_micro_sym
    );
    assert!(expected.returned_to_pool_micro_sym > 0);
    // Idempotent by payout id.
    pay_vault_dividends(&mut w.ledger, &w.store, &vault, &sets).unwrap();
    assert_eq!(
        w.ledger.balance(&AccountId::reward_pool(2)),
        expected.returned_to_pool_micro_sym
    );
    reconcile_settlements(&w.store, &w.ledger).unwrap();
}

#[test]
fn node_operation_rewards_mint_once_per_epoch() {
    let mut w = world(5, &[10], 0, 0);
    let supply = w.ledger.total_supply();
    let nodes: Vec<(ActorId, u64)> = ["master-0", "master-1", "master-2", "operator:vault-00"]
        .iter()
        .map(|n| (ActorId::new(*n).unwrap(), 1))
        .collect();
    let minted =
        mint_node_operation_rewards(&mut w.ledger, &w.store, &w.fx.params, EpochId(0), &nodes)
            .unwrap();
    assert!(minted > 0);
    assert_eq!(w.ledger.total_supply(), supply + u128::from(minted));
    let again =
        mint_node_operation_rewards(&mut w.ledger, &w.store, &w.fx.params, EpochId(0), &nodes)
            .unwrap();
    assert_eq!(again, minted);
    assert_eq!(
        w.ledger.total_supply(),
        supply + u128::from(minted),
        "minted once"
    );
    let paid: u64 = nodes
        .iter()
        .map(|(n, _)| w.ledger.balance(&acct(&format!("actor:{n}"))))
        .sum();
    assert_eq!(paid, minted);
    assert_eq!(w.store.epoch_payouts(0).unwrap().len(), 1);
}

#[test]
fn credits_offset_own_usage() {
    let mut w = world(6, &[100, 100], 0, 0);
    settle(&mut w);
    let op = ActorId::new("operator:vault-01").unwrap();
    let credit = w.store.credit(op.as_str()).unwrap();
    assert!(credit > 0);
    let params = PolicyParams::default_v1();
    let fee = 4 * credit;
    let applied = apply_credit(&w.store, &op, fee, &params).unwrap();
    assert_eq!(
        applied.credit_used_micro_sym + applied.payable_micro_sym,
        fee
    );
    assert_eq!(applied.credit_used_micro_sym, credit.min(fee / 2));
    assert_eq!(
        w.store.credit(op.as_str()).unwrap(),
        credit - applied.credit_used_micro_sym
    );
}

#[test]
fn composite_links_sub_task_settlements_across_epochs() {
    let parent = TaskId::new("train-1").unwrap();
    let sub = |round: u32, epoch: u64, fee: u64| SubTaskSettlementRef {
        sub_task: SubTaskId {
            parent: parent.clone(),
            round,
        },
        epoch_id: EpochId(epoch),
        fee_total: fee,
        settlement_hash: Digest([round as u8; 32]),
    };
    let c = link_composite(&parent, vec![sub(2, 6, 30), sub(0, 5, 10), sub(1, 5, 20)]).unwrap();
    assert_eq!(c.fee_total, 60);
    assert_eq!(
        c.sub_tasks
            .iter()
            .map(|s| s.sub_task.round)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(verify_composite(&c));
    let by_epoch = composite_by_epoch(&c);
    assert_eq!(by_epoch[&EpochId(5)].len(), 2);
    assert_eq!(by_epoch[&EpochId(6)].len(), 1);
    assert!(
        link_composite(&parent, vec![sub(0, 6, 1), sub(1, 5, 1)]).is_err(),
        "epochs go forward"
    );
    assert!(
        link_composite(&parent, vec![sub(0, 5, 1), sub(0, 5, 1)]).is_err(),
        "one settlement per round"
    );
    let mut other = sub(3, 7, 1);
    other.sub_task.parent = TaskId::new("train-2").unwrap();
    assert!(link_composite(&parent, vec![other]).is_err());
    let mut tampered = c.clone();
    tampered.sub_tasks[1].fee_total += 1;
    assert!(!verify_composite(&tampered));
    let store = SettlementStore::in_memory().unwrap();
    store.put_composite(&c).unwrap();
    assert_eq!(store.composite(&parent).unwrap(), Some(c));
}

#[test]
fn payout_before_finality_is_detected_by_reconcile() {
    let mut w = world(7, &[50, 50], 0, 0);
    let inputs = w.fx.inputs.clone();
    let (row, _) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    reconcile_settlements(&w.store, &w.ledger).unwrap();
    // Someone pays the candidate without a final certificate: reconcile refuses.
    w.ledger
        .payout(&row.escrow_id, &row.candidate.escrow_set)
        .unwrap();
    let err = reconcile_settlements(&w.store, &w.ledger).unwrap_err();
    assert!(err.to_string().contains("before finality"), "{err}");
}
