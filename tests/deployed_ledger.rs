//! The replicated settlement ledger on real processes (issue #19, item 3; issue #13,
//! epoch payout sets and rewards): 20 tasks with epochs closing by capacity, the
//! leader killed while tasks are in flight, and `symphony ledger reconcile --dir
//! <devnet> --json` proves on the running devnet — and again once it is stopped —
//! that every payout was made exactly once, that each paid settlement is in exactly
//! one epoch's sealed payout set, and that each closed epoch's node rewards were
//! minted once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deployed::{cli, luckin, Net};

const TASKS: usize = 20;

fn reconcile(net: &Net) -> serde_json::Value {
    let (ok, out, err) = cli(net, &["ledger", "reconcile", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert!(ok, "reconcile failed: {err}\n{out}");
    v
}

#[test]
fn twenty_tasks_and_a_leader_kill_reconcile_every_payout_once() {
    let t = Instant::now();
    // Small data, epochs closing every 6 admissions: budgets replenish, rewards mint.
    let mut net = Net::start_governed(3, 600, 6_000, BTreeMap::new(), None, Some(6));
    let leader = net.wait_leader(None, Duration::from_secs(30));
    let mut ids: Vec<String> = (0..TASKS / 2).map(|_| net.submit_ok(luckin())).collect();
    std::thread::sleep(Duration::from_millis(1_500));
    net.kill(&format!("master-{leader}"));
    let new_leader = net.wait_leader(Some(leader), Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    ids.extend((0..TASKS / 2).map(|_| net.submit_ok(luckin())));
    let mut completed = 0u64;
    for id in &ids {
        let s = net.wait_final(id, Duration::from_secs(180));
        if s["status"] == "completed" {
            completed += 1;
        }
    }
    eprintln!("{completed} of {TASKS} completed in {:?}", t.elapsed());
    assert!(completed >= 10, "only {completed} tasks completed");

    // The copy every master exports is refreshed within a second: wait until the
    // reconciled ledger shows every completed task's settlement.
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let v = reconcile(&net);
        if v["settlements_finalized"].as_u64().unwrap() >= completed || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("running: {running}");
    assert_eq!(running["ok"], true, "{running}");
    let settlements = running["settlements"].as_u64().unwrap();
    assert!(settlements >= completed, "{running}");
    assert_eq!(running["settlements_finalized"].as_u64(), Some(completed));
    assert!(
        running["payouts_in_epoch_sets"].as_u64().unwrap() >= completed,
        "{running}"
    );
    assert!(running["epochs_closed"].as_u64().unwrap() >= 1, "{running}");
    assert!(
        running["rewards_minted_micro_sym"].as_u64().unwrap() > 0,
        "{running}"
    );
    let payouts = running["ledger"]["ledger_payouts"].as_u64().unwrap();
    assert!(payouts >= completed, "{running}");

    // Stopped: every process gone, the same ledger reconciles from the copies.
    let names: Vec<String> = net.children.keys().cloned().collect();
    for n in &names {
        net.kill(n);
    }
    let stopped = reconcile(&net);
    assert_eq!(stopped["ok"], true, "{stopped}");
    assert!(stopped["settlements"].as_u64().unwrap() >= settlements);
    assert_eq!(
        stopped["settlements_finalized"],
        running["settlements_finalized"]
    );
    // `ledger show` reads the same replica: one labelled row per settlement, each
    // epoch's payouts, and the advertiser's escrows.
    let (ok, out, err) = cli(&net, &["ledger", "show", "--json", "--account", "luckin"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["schema_version"], 1);
    let rows = shown["settlements"].as_array().unwrap();
    assert_eq!(rows.len() as u64, stopped["settlements"].as_u64().unwrap());
    let finalized = rows.iter().filter(|r| r["state"] == "finalized").count() as u64;
    assert_eq!(finalized, completed, "{shown}");
    assert!(shown["epoch_payouts"].as_array().unwrap().len() as u64 >= completed);
    let escrows = shown["escrows"].as_array().unwrap();
    assert!(
        !escrows.is_empty()
            && escrows
                .iter()
                .all(|e| e["owner"].as_str().unwrap().contains("luckin"))
    );

    // A tampered copy does not reconcile: a settlement whose paid set differs from
    // the ledger's is named, `ok: false`, non-zero exit.
    for m in &net.layout.masters {
        let cfg = symphony_deploy::config::MasterConfig::load(&m.config).unwrap();
        let path = cfg
            .data_dir
            .join(symphony_deploy::ledger_export::EXPORT_FILE);
        let Ok(mut export) = symphony_deploy::ledger_export::LedgerExport::read(&path) else {
            continue;
        };
        for row in export.settlement.settlements.values_mut() {
            row.candidate.escrow_set.instructions[0].amount += 1;
        }
        export.write(&cfg.data_dir).unwrap();
    }
    let (ok, out, err) = cli(&net, &["ledger", "reconcile", "--json"]);
    assert!(!ok, "a tampered ledger reconciled: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(err.contains("paid with a different set"), "{err}");
    eprintln!("deployed ledger test: {:?}", t.elapsed());
}
