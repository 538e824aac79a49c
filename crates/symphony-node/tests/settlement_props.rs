//! Property tests of settlement accounting: for random tasks (Vaults, subjects,
//! timed-out Vaults, results, epochs), producers and stakes, every split sums
//! exactly, the ledger never goes negative (checked arithmetic + reconciliation), and
//! total supply changes only by inflation minted. Slashing moves stake to the
//! treasury, so it does not change supply (documented choice: slashed stake goes to
//! the treasury, not burned).

use proptest::prelude::*;
use symphony_core::budget::Epsilon;
use symphony_core::ids::{ActorId, EpochId};
use symphony_economics::rewards::ProducerUsage;
use symphony_ledger::{AccountId, MemoryLedger, SettlementLedger, StakeTier};
use symphony_node::settlement::fixture;
use symphony_node::settlement::reconcile::reconcile_settlements;
use symphony_node::settlement::rewards::{
    mint_node_operation_rewards, pay_vault_dividends, vault_dividend_sets,
};
use symphony_node::settlement::{SettlementContext, SettlementStore};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn splits_sum_and_supply_changes_only_by_inflation(
        subjects in prop::collection::vec(1u64..3_000, 1..6),
        timed_out_raw in 0usize..6,
        delivered in 1u64..800,
        epoch in 0u64..20,
        producers_per_vault in 1u64..60,
        staked_every in 0u64..5,
        slash_bp in 0u64..10_000,
        seed in 0u64..1_000_000,
    ) {
        let n = subjects.len();
        let timed_out = timed_out_raw % n; // at least one Vault verified
        let fx = fixture::build(seed, &subjects, timed_out, delivered, EpochId(epoch)).unwrap();
        let mut fx = fx;
        let mut ledger = MemoryLedger::new(&fixture::genesis(&fx.params, n).unwrap()).unwrap();
        fixture::fund(&mut ledger, &fx, n, true).unwrap();
        ledger.advance_epoch(epoch.max(1)).unwrap();
        let store = SettlementStore::in_memory().unwrap();
        let genesis_supply = ledger.total_supply();
        let locked = ledger.escrow(&fx.inputs.escrow_id).unwrap().locked;
        let inputs = fx.inputs.clone();
        let params = fx.params.clone();
        let row = {
            let mut ctx = SettlementContext {
                masters: &mut fx.masters,
                ledger: &mut ledger,
                verifier: &fx.verifier,
                store: &store,
                params: &params,
            };
            let (row, _) = ctx.open(&inputs, fixture::NOW_MS).unwrap();
            ctx.finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {}).unwrap()
        };
        let c = &row.candidate;
        prop_assert_eq!(c.fee_shares.values().sum::<u64>(), c.fee_total);
        prop_assert_eq!(c.escrow_set.total().unwrap(), c.fee_total);
        prop_assert_eq!(c.fee_total + c.refund, locked);
        // Timed-out Vaults earn nothing.
        for v in fixture::vault_ids(n).unwrap().iter().take(timed_out) {
            prop_assert!(!c.fee_shares.keys().any(|k| k.ends_with(v.as_str())));
        }
        // Vault-side dividends: Σ sets = share; pool gets exactly what unstaked forgo.
        for (i, v) in fixture::vault_ids(n).unwrap().iter().enumerate().skip(timed_out) {
            let share = c.fee_shares.get(&format!("contributors:{v}")).copied().unwrap_or(0);
            let producers: Vec<ProducerUsage> = (0..producers_per_vault)
                .map(|p| ProducerUsage {
                    producer: ActorId::new(format!("producer:{i}-{p}")).unwrap(),
                    records_used: 1 + p % 4,
                    epsilon_consumed: Epsilon::from_milli(100),
                    staked: staked_every > 0 && p % staked_every == 0,
                })
                .collect();
            for p in producers.iter().filter(|p| p.staked) {
                let a = acct(&format!("actor:{}", p.producer));
                let s = params.staking.s_producer_micro_sym;
                ledger.transfer(&acct(&format!("actor:{}", fixture::SUBMITTER)), &a, s).unwrap();
                ledger.bond(&a, StakeTier::Producer, s).unwrap();
            }
            let sets = vault_dividend_sets(v, &row.task_id, share, &producers, &params, row.epoch_id).unwrap();
            let paid = pay_vault_dividends(&mut ledger, &store, v, &sets).unwrap();
            prop_assert_eq!(paid, share);
            prop_assert_eq!(ledger.balance(&acct(&format!("vault-dividends:{v}"))), 0);
        }
        prop_assert_eq!(ledger.total_supply(), genesis_supply, "settlement creates nothing");
        // Slashing: stake moves to the treasury; supply unchanged.
        let op = acct("actor:operator:vault-00");
        let stake = ledger.stake_of(&op);
        let amount = stake * slash_bp / 10_000;
        let treasury = ledger.treasury_balance();
        if amount > 0 {
            ledger.slash(&op, amount, "property").unwrap();
        }
        prop_assert_eq!(ledger.treasury_balance(), treasury + amount);
        prop_assert_eq!(ledger.total_supply(), genesis_supply);
        // Inflation: the only supply change.
        let nodes: Vec<(ActorId, u64)> = (0..3)
            .map(|i| (ActorId::new(format!("master-{i}")).unwrap(), 1 + i))
            .collect();
        let minted = mint_node_operation_rewards(&mut ledger, &store, &params, EpochId(epoch), &nodes).unwrap();
        prop_assert_eq!(ledger.total_supply(), genesis_supply + u128::from(minted));
        let report = reconcile_settlements(&store, &ledger).unwrap();
        prop_assert_eq!(report.minted_total, minted);
        prop_assert_eq!(report.settlements_finalized, 1);
    }
}
