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
