//! Random sequences of admissions, proposals, votes and epoch closes: epochs are
//! sealed once each and in order, a policy version only takes effect at a boundary,
//! a refused command changes nothing, and replaying the accepted log reproduces the
//! state root.

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::*;
use symphony_master::*;

#[allow(dead_code)]
mod common;

#[derive(Clone, Debug)]
enum Op {
    Admit,
    Propose { by: u8, kind: u8 },
    Vote { id: u8, by: u8, approve: bool },
    CloseByTime { late_ms: u64 },
    CloseByCapacity,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Admit),
        2 => (0..3u8, 0..3u8).prop_map(|(by, kind)| Op::Propose { by, kind }),
        4 => (0..8u8, 0..3u8, any::<bool>()).prop_map(|(id, by, approve)| Op::Vote { id, by, approve }),
        1 => (0..2_000u64).prop_map(|late_ms| Op::CloseByTime { late_ms }),
        1 => Just(Op::CloseByCapacity),
    ]
}

fn keys() -> Vec<SigningKey> {
    (11..=13u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect()
}

fn command(state: &MasterState, keys: &[SigningKey], op: &Op, n: usize) -> Command {
    let g = state.governance();
    let now = g.epoch_opened_at_ms + 10;
    match op {
        Op::Admit => {
            let mut body = common::envelope(&format!("t{n}"), n as u64).body().clone();
            body.epoch_id = g.epoch;
            body.policy_version = g.policy_version;
            Command::AdmitTask {
                envelope: Box::new(TaskEnvelope::seal(body).unwrap()),
            }
        }
        Op::Propose { by, kind } => {
            let kind = match kind {
                0 => ProposalKind::CloseEpoch,
                1 => {
                    let mut params = symphony_economics::PolicyParams::default_v1();
                    params.epochs.epoch_length_ms = [500, 1_000, 2_000][n % 3];
                    ProposalKind::PolicyChange {
                        version: PolicyVersion(g.policy_version.0 + 1),
                        params: Box::new(params),
                        max_tasks_per_epoch: Some(1 + (n as u64 % 4)),
                    }
                }
                _ => ProposalKind::EnterpriseMembership {
                    vault: VaultId::new(format!("vault-{}", n % 5)).unwrap(),
                    operator: ActorId::new(format!("operator:vault-{}", n % 5)).unwrap(),
                    stake_micro_sym: 1_000,
                },
            };
            let signature = keys[usize::from(*by)]
                .sign(&proposal_message(&kind, now).unwrap().0)
                .to_bytes()
                .to_vec();
            Command::Propose {
                kind,
                by: *by,
                at_ms: now,
                signature,
            }
        }
        Op::Vote { id, by, approve } => {
            let proposal = ProposalId(u64::from(*id));
            let signature = keys[usize::from(*by)]
                .sign(&vote_message(proposal, *approve).unwrap().0)
                .to_bytes()
                .to_vec();
            Command::Vote {
                proposal,
                by: *by,
                approve: *approve,
                at_ms: now,
                signature,
            }
        }
        Op::CloseByTime { late_ms } => Command::CloseEpoch {
            trigger: CloseTrigger::Time,
            at_ms: g.epoch_opened_at_ms + g.epoch_length_ms.saturating_sub(500) + late_ms,
        },
        Op::CloseByCapacity => Command::CloseEpoch {
            trigger: CloseTrigger::Capacity,
            at_ms: now,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn governance_sequences_seal_each_epoch_once_and_replay(ops in proptest::collection::vec(op(), 1..60)) {
        let keys = keys();
        let mut state = MasterState::new();
        let master_keys: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let mut log = vec![Command::ConfigureGovernance {
            master_keys,
            epoch_length_ms: 1_000,
            max_tasks_per_epoch: Some(3),
        }];
        state.apply(&log[0]).unwrap();
        for (n, op) in ops.iter().enumerate() {
            let before = state.state_root().unwrap();
            let policy_before = state.governance().policy_version;
            let epoch_before = state.governance().epoch;
            let c = command(&state, &keys, op, n);
            match state.apply(&c) {
                Ok(events) => {
                    log.push(c);
                    let closed = events.iter().filter(|e| matches!(e, Event::EpochClosed { .. })).count();
                    let g = state.governance();
                    prop_assert_eq!(g.epoch.0, epoch_before.0 + closed as u64);
                    if closed == 0 {
                        prop_assert_eq!(g.policy_version, policy_before, "policy moved inside an epoch");
                    }
                }
                Err(_) => prop_assert_eq!(state.state_root().unwrap(), before, "a refused command changed the state"),
            }
            let g = state.governance();
            if let Some(max) = g.max_tasks_per_epoch {
                prop_assert!(g.tasks_in_epoch <= max, "admitted beyond the epoch's capacity");
            }
            // Every closed epoch is sealed once, in order, and the current one follows.
            for (i, rec) in g.history.iter().enumerate() {
                prop_assert_eq!(rec.epoch, EpochId(i as u64));
                prop_assert!(rec.closed_at_ms >= rec.opened_at_ms);
            }
            prop_assert_eq!(g.epoch, EpochId(g.history.len() as u64));
            for w in g.history.windows(2) {
                prop_assert!(w[0].policy_version <= w[1].policy_version);
                prop_assert_eq!(w[0].closed_at_ms, w[1].opened_at_ms);
            }
        }
        let mut replay = MasterState::new();
        for c in &log {
            replay.apply(c).unwrap();
        }
        prop_assert_eq!(replay.state_root().unwrap(), state.state_root().unwrap());
    }
}
