//! Enterprise membership through governance on real processes (issue #13): of two
//! candidate enterprises running beside two genesis members, the one an approved
//! `enterprise_membership` proposal admits receives slices of the next task; the
//! one whose proposal two masters reject never does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deployed::{envelope_of, luckin, Net};
use symphony_core::ids::{ActorId, VaultId};
use symphony_deploy::governance::{GovClient, ProposalKind};

fn participants(net: &Net) -> Vec<String> {
    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(90));
    assert_eq!(s["status"], "completed", "{s}");
    let env = envelope_of(net, &id);
    env["coordination_envelope"]["participating_vault_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no participants in {env}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn membership(vault: &str) -> ProposalKind {
    ProposalKind::EnterpriseMembership {
        vault: VaultId::new(vault).unwrap(),
        operator: ActorId::new(format!("operator:{vault}")).unwrap(),
        stake_micro_sym: 5_000_000_000,
    }
}

#[test]
fn an_approved_enterprise_receives_slices_and_a_rejected_one_never_does() {
    let t = Instant::now();
    // Enterprises 2 and 3 run as candidates beside the genesis members 0 and 1.
    let net = Net::start_with_candidates(4, 600, 6_000, BTreeMap::new(), (None, None), &[2, 3]);
    let vaults: Vec<String> = net
        .layout
        .enterprises
        .iter()
        .map(|e| e.vault_id.clone())
        .collect();
    let (approved, rejected) = (vaults[2].clone(), vaults[3].clone());

    // Genesis members only.
    let first = participants(&net);
    assert_eq!(first, vaults[..2].to_vec());

    let gov = GovClient::new(net.layout.clone()).unwrap();
    // master-0 proposes the first candidate; master-1 approves.
    let p = net
        .rt
        .block_on(gov.propose(membership(&approved), 0))
        .unwrap();
    let id = p["proposal_id"].as_u64().unwrap();
    net.rt.block_on(gov.vote(id, 1, true)).unwrap();
    // master-2 proposes the second; master-0 and master-1 reject it.
    let p = net
        .rt
        .block_on(gov.propose(membership(&rejected), 2))
        .unwrap();
    let id = p["proposal_id"].as_u64().unwrap();
    net.rt.block_on(gov.vote(id, 0, false)).unwrap();
    net.rt.block_on(gov.vote(id, 1, false)).unwrap();
    let listed = net.get("/v1/governance/proposals").json();
    let statuses: Vec<&str> = listed["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["enacted", "rejected"], "{listed}");

    // The next task's slices go to the approved enterprise too, never the other.
    let second = participants(&net);
    assert_eq!(second, vaults[..3].to_vec(), "{second:?}");
    let third = participants(&net);
    assert!(!third.contains(&rejected), "{third:?}");
    eprintln!("membership test: {:?}", t.elapsed());
}

/// The account row of `account` in `symphony ledger show --json --dir <devnet>`.
fn account_row(net: &Net, account: &str) -> serde_json::Value {
    let v = deployed::cli_json(net, &["ledger", "show", "--account", account]);
    v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .cloned()
        .unwrap_or_else(|| panic!("no {account} in {v}"))
}

/// Waits until `gov list --json` shows no pending ledger duty and
/// `ledger show --json` (the masters' exported replica) shows `account` bonded
/// `bonded`; respawns any master that exited meanwhile (the injected fault).
fn wait_duties_done(net: &mut Net, account: &str, bonded: u64) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let exited: Vec<String> = net
            .children
            .iter_mut()
            .filter(|(n, _)| n.starts_with("master-"))
            .filter_map(|(n, c)| c.try_wait().unwrap().map(|_| n.clone()))
            .collect();
        for name in exited {
            net.children.remove(&name);
            net.spawn(&name);
        }
        let (ok, out, _) = deployed::cli(net, &["gov", "list", "--json"]);
        if ok {
            let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
            if listed["pending_ledger_duties"]
                .as_array()
                .is_some_and(|d| d.is_empty())
            {
                let (ok, out, _) =
                    deployed::cli(net, &["ledger", "show", "--account", account, "--json"]);
                let row = ok.then(|| serde_json::from_str::<serde_json::Value>(&out).unwrap());
                if row.is_some_and(|v| {
                    v["accounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a["account"] == account && a["bonded_micro_sym"] == bonded)
                }) {
                    return listed;
                }
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "ledger duties not done: {}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn enacted_bond_and_slash_move_the_ledger_once_even_when_a_leader_dies_in_between() {
    use symphony_economics::{slash, Offence, PolicyParams};
    let t = Instant::now();
    // Each master exits (as if killed) the first time it has carried out an enacted
    // proposal's ledger duties and before it records them; the test restarts it.
    let env: BTreeMap<String, Vec<(String, String)>> = (1..=3)
        .map(|m| {
            (
                format!("master-{m}"),
                vec![(
                    symphony_deploy::master::FAULT_EXIT_AT.to_owned(),
                    symphony_deploy::governance::LEDGER_DUTY_STEP.to_owned(),
                )],
            )
        })
        .collect();
    let mut net = Net::start_with_candidates(3, 600, 6_000, env, (None, None), &[2]);
    let candidate = net.layout.enterprises[2].vault_id.clone();
    let genesis_member = net.layout.enterprises[0].vault_id.clone();
    let s_enterprise = PolicyParams::default_v1().staking.s_enterprise_micro_sym;

    // The genesis members' operators are bonded and registered when governance starts.
    let member_account = format!("actor:operator:{genesis_member}");
    let listed = wait_duties_done(&mut net, &member_account, s_enterprise);
    let registered: Vec<&str> = listed["registry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        registered,
        [
            format!("operator:{genesis_member}"),
            format!("operator:{}", net.layout.enterprises[1].vault_id)
        ],
        "{listed}"
    );

    // Membership: the candidate's stake is bonded once on approval.
    let stake: u64 = 40_000_000_000;
    let account = format!("actor:operator:{candidate}");
    let before = account_row(&net, &account);
    assert_eq!(before["bonded_micro_sym"], 0, "{before}");
    let filed = deployed::cli_json(
        &net,
        &[
            "gov",
            "propose",
            "membership",
            "--vault",
            &candidate,
            "--stake",
            &stake.to_string(),
            "--as",
            "master-0",
        ],
    );
    let id = filed["proposal_id"].as_u64().unwrap().to_string();
    deployed::cli_json(&net, &["gov", "vote", &id, "--as", "master-1"]);
    wait_duties_done(&mut net, &account, stake);
    let bonded = account_row(&net, &account);
    assert_eq!(
        bonded["balance_micro_sym"].as_u64(),
        Some(s_enterprise - stake),
        "bonded once: {bonded}"
    );

    // Slashing by the graduated table: the stake drops by the table's amount, once.
    let filed = deployed::cli_json(
        &net,
        &[
            "gov",
            "propose",
            "slash",
            "--actor",
            &format!("operator:{candidate}"),
            "--offence",
            "invalid_result",
            "--reason",
            "replayed evidence disagrees",
            "--as",
            "master-2",
        ],
    );
    let id = filed["proposal_id"].as_u64().unwrap().to_string();
    deployed::cli_json(&net, &["gov", "vote", &id, "--as", "master-0"]);
    let expected = slash(
        stake,
        Offence::InvalidResult,
        &[],
        symphony_core::ids::EpochId(0),
        &PolicyParams::default_v1().slashing,
    )
    .slashed_micro_sym;
    assert!(expected > 0);
    let listed = wait_duties_done(&mut net, &account, stake - expected);
    let entry = listed["registry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == format!("operator:{candidate}"))
        .cloned()
        .unwrap();
    assert_eq!(
        entry["slashed_micro_sym"].as_u64(),
        Some(expected),
        "{entry}"
    );
    assert_eq!(entry["bonded_micro_sym"].as_u64(), Some(stake - expected));
    let statuses: Vec<&str> = listed["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["enacted", "enacted"], "{listed}");
    let after = account_row(&net, &account);
    assert_eq!(
        after["balance_micro_sym"].as_u64(),
        Some(s_enterprise - stake)
    );
    // The fault fired: a leader died between the ledger and the record at least once.
    let logs: String = (1..=3)
        .map(|m| {
            std::fs::read_to_string(net.layout.dir.join(format!("master-{m}.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        logs.contains("fault injection: exiting as if killed"),
        "the fault never fired"
    );
    // The books still balance: every µSYM is accounted for.
    let (ok, out, err) = deployed::cli(&net, &["ledger", "reconcile"]);
    assert!(ok, "reconcile: {out}{err}");
    eprintln!("ledger duties test: {:?}", t.elapsed());
}

/// Attribute promotion on real processes through the CLI: a vault-scoped
/// promotion filed with `gov propose promote` and approved with `gov vote` is one
/// semantic registry version; the next task is admitted under it, the one before
/// keeps its own; a canonical promotion derivable in one Vault only is refused
/// with the reason, before anything is proposed.
#[test]
fn a_promotion_through_the_cli_raises_the_semantic_version_of_later_tasks_only() {
    let t = Instant::now();
    let net = Net::start_with_candidates(2, 600, 6_000, BTreeMap::new(), (None, None), &[]);
    let semantic = |id: &str| envelope_of(&net, id)["semantic_version"].as_u64().unwrap();
    let first = net.submit_ok(luckin());
    assert_eq!(
        net.wait_final(&first, Duration::from_secs(90))["status"],
        "completed"
    );
    let v0 = semantic(&first);

    let vault = net.layout.enterprises[0].vault_id.clone();
    let local = serde_json::json!({
        "name": "oat_milk_preference", "vault": vault, "value_type": "boolean",
        "privacy_class": "personal", "description": "Prefers oat milk."
    });
    let scoped = serde_json::json!({
        "local": local,
        "target": {"vault_scoped_query": {
            "name": "oat_milk_buyer", "domain": "commerce",
            "rule": {"boolean": {"sources": ["oat_milk_preference"]}},
            "granularity": {"spatial": null, "temporal": null, "numeric_bucket_width": null,
                            "cardinality_floor": 0},
            "value_type": "boolean", "description": "Bought oat milk drinks."
        }}
    });
    let file = net.layout.dir.join("promote.json");
    std::fs::write(&file, scoped.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let filed = deployed::cli_json(
        &net,
        &[
            "gov", "propose", "promote", "--file", file, "--as", "master-0",
        ],
    );
    let id = filed["proposal_id"].as_u64().unwrap().to_string();
    deployed::cli_json(&net, &["gov", "vote", &id, "--as", "master-1"]);
    let listed = deployed::cli_json(&net, &["gov", "list"]);
    assert_eq!(listed["proposals"][0]["status"], "enacted", "{listed}");

    // Canonical in the origin Vault only: refused by the CLI with the reason.
    let canonical = serde_json::json!({
        "local": local,
        "target": {"canonical": {"domain": "commerce", "directly_queryable": true,
            "derivations": {vault.clone(): {"boolean": {"sources": ["purchase_category"]}}}}}
    });
    let bad = net.layout.dir.join("canonical.json");
    std::fs::write(&bad, canonical.to_string()).unwrap();
    let (ok, _, err) = deployed::cli(
        &net,
        &[
            "gov",
            "propose",
            "promote",
            "--file",
            bad.to_str().unwrap(),
            "--as",
            "master-2",
        ],
    );
    assert!(
        !ok && err.contains("derivable in 1 Vault(s), 0 besides its origin"),
        "{err}"
    );

    let second = net.submit_ok(luckin());
    assert_eq!(
        net.wait_final(&second, Duration::from_secs(90))["status"],
        "completed"
    );
    assert_eq!(semantic(&second), v0 + 1);
    assert_eq!(semantic(&first), v0, "no retroactivity");
    eprintln!("promotion test: {:?}", t.elapsed());
}
