//! Producer staking through the actor registry: a producer's bonded `S_producer`
//! enters the registry at any time (also after proposals exist), once; only
//! producer actors register in that tier; a slash below `S_producer` takes the
//! producer out of the full-reward rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::{Signer, SigningKey};
use symphony_core::ids::ActorId;
use symphony_economics::{Offence, PolicyParams, StakeTier};
use symphony_master::*;

const T0: u64 = 5_000;

fn keys() -> Vec<SigningKey> {
    (31..=33u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect()
}

fn actor(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn signed(k: &SigningKey, msg: symphony_core::encoding::Digest) -> Vec<u8> {
    k.sign(&msg.0).to_bytes().to_vec()
}

#[test]
fn a_producer_stake_is_registered_once_any_time_and_a_slash_below_s_producer_ends_full_rewards() {
    let k = keys();
    let s_producer = PolicyParams::default_v1().staking.s_producer_micro_sym;
    let mut s = MasterState::new();
    s.apply(&Command::ConfigureGovernance {
        master_keys: k.iter().map(|k| k.verifying_key().to_bytes()).collect(),
        epoch_length_ms: 100_000,
        max_tasks_per_epoch: None,
    })
    .unwrap();
    let alice = actor("producer:alice");
    // A proposal already exists: genesis registration is closed, producers still join.
    let kind = ProposalKind::EnterpriseMembership {
        vault: symphony_core::ids::VaultId::new("v9").unwrap(),
        operator: actor("operator:v9"),
        stake_micro_sym: 250_000,
    };
    s.apply(&Command::Propose {
        signature: signed(&k[0], proposal_message(&kind, T0).unwrap()),
        kind,
        by: 0,
        at_ms: T0,
    })
    .unwrap();
    assert!(s
        .apply(&Command::RegisterStakes {
            stakes: vec![(alice.clone(), StakeTier::Producer, s_producer)],
        })
        .is_err());
    assert!(!s
        .governance()
        .registry
        .holds_producer_stake(&alice, s_producer));
    let events = s
        .apply(&Command::RegisterProducerStake {
            actor: alice.clone(),
            bonded_micro_sym: s_producer,
        })
        .unwrap();
    assert_eq!(
        events,
        vec![Event::StakeRegistered {
            actor: alice.clone(),
            bonded_micro_sym: s_producer
        }]
    );
    let registry = &s.governance().registry;
    assert_eq!(registry.actors[&alice].tier, StakeTier::Producer);
    assert!(registry.holds_producer_stake(&alice, s_producer));
    assert!(!registry.holds_producer_stake(&alice, s_producer + 1));
    // Once.
    let e = s
        .apply(&Command::RegisterProducerStake {
            actor: alice.clone(),
            bonded_micro_sym: s_producer,
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("already in the actor registry"),
        "{e}"
    );
    // Only producers, only positive stakes.
    let e = s
        .apply(&Command::RegisterProducerStake {
            actor: actor("operator:v1"),
            bonded_micro_sym: s_producer,
        })
        .unwrap_err();
    assert!(e.to_string().contains("only a data producer"), "{e}");
    assert!(s
        .apply(&Command::RegisterProducerStake {
            actor: actor("producer:carol"),
            bonded_micro_sym: 0,
        })
        .is_err());
    // Slashed by an approved proposal: below S_producer, no longer "staked".
    let kind = ProposalKind::Slash {
        actor: alice.clone(),
        offence: Offence::InvalidResult,
        reason: "submitted forged receipts".into(),
    };
    let id = ProposalId(s.governance().proposals.len() as u64);
    s.apply(&Command::Propose {
        signature: signed(&k[1], proposal_message(&kind, T0 + 1).unwrap()),
        kind,
        by: 1,
        at_ms: T0 + 1,
    })
    .unwrap();
    s.apply(&Command::Vote {
        proposal: id,
        by: 2,
        approve: true,
        at_ms: T0 + 2,
        signature: signed(&k[2], vote_message(id, true).unwrap()),
    })
    .unwrap();
    let entry = &s.governance().registry.actors[&alice];
    assert!(entry.slashed_micro_sym > 0, "{entry:?}");
    assert_eq!(entry.bonded_micro_sym + entry.slashed_micro_sym, s_producer);
    assert!(!s
        .governance()
        .registry
        .holds_producer_stake(&alice, s_producer));
}
