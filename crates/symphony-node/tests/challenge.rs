//! Challenges against a settlement in its window: a confirmed challenge records the
//! penalty, slashes the responsible stake (to the treasury) and pays nothing for the
//! bad work; a challenge that is not confirmed closes without penalty and the
//! settlement pays out normally. Verdicts replay identically.

use symphony_core::encoding::Digest;
use symphony_core::ids::{ActorId, ChallengeId, EpochId, VaultId};
use symphony_core::lifecycle::{ChallengeState, SettlementState, TaskState};
use symphony_enclave::{run_commitment, Tee};
use symphony_ledger::{AccountId, MemoryLedger, SettlementLedger};
use symphony_master::ChallengeTarget;
use symphony_node::challenge::{replay_verdict, ChallengeEvidence, ChallengeRequest};
use symphony_node::replication::Replicator;
use symphony_node::settlement::fixture::{self, Fixture};
use symphony_node::settlement::reconcile::reconcile_settlements;
use symphony_node::settlement::*;
use symphony_node::verify::SliceEvidence;

struct World {
    fx: Fixture,
    ledger: MemoryLedger,
    store: SettlementStore,
}

fn world(seed: u64) -> World {
    let fx = fixture::build(seed, &[120, 80, 60], 0, 40, EpochId(1)).unwrap();
    let mut ledger = MemoryLedger::new(&fixture::genesis(&fx.params, 3).unwrap()).unwrap();
    fixture::fund(&mut ledger, &fx, 3, true).unwrap();
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

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

/// A second attested run of Vault 1's slice over the same inputs.
fn conflicting_run(w: &World, commitment: Digest) -> SliceEvidence {
    let stored = w.fx.inputs.evidence.slices[1].evidence.clone().unwrap();
    let (_, enclave) = &w.fx.slice_enclaves[1];
    let nonce = w.fx.inputs.evidence.envelope.hash().0;
    let attestation = enclave
        .attest(
            run_commitment(&stored.inputs_commitment.0, &commitment.0),
            nonce,
            fixture::NOW_MS + 1,
        )
        .unwrap();
    SliceEvidence {
        commitment,
        inputs_commitment: stored.inputs_commitment,
        attestation,
    }
}

fn conflicting(e: SliceEvidence) -> ChallengeEvidence {
    ChallengeEvidence::ConflictingRun {
        evidence: Box::new(e),
    }
}

fn request(w: &World, id: &str, who: &str, evidence: ChallengeEvidence) -> ChallengeRequest {
    ChallengeRequest {
        challenge_id: ChallengeId::new(id).unwrap(),
        task_id: w.fx.inputs.task_id.clone(),
        target: ChallengeTarget::Slice {
            round: 0,
            vault_id: VaultId::new("vault-01").unwrap(),
        },
        challenger: ActorId::new(who).unwrap(),
        evidence,
    }
}

#[test]
fn confirmed_challenge_slashes_and_pays_nothing_for_the_bad_work() {
    let mut w = world(11);
    let inputs = w.fx.inputs.clone();
    let (row, _) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    let operator = acct("actor:operator:vault-01");
    let stake = w.ledger.stake_of(&operator);
    let supply = w.ledger.total_supply();
    let submitter = acct(&format!("actor:{}", fixture::SUBMITTER));
    let submitter_before = w.ledger.balance(&submitter);
    let evidence = conflicting(conflicting_run(&w, Digest([0xAB; 32])));
    // The verdict is a replay: same evidence, same verdict, every time.
    let stored = w.store.row(&inputs.task_id).unwrap().unwrap().evidence;
    let target = request(&w, "c1", "master-1", evidence.clone()).target;
    let v1 = replay_verdict(&w.fx.verifier, &stored, &target, &evidence).unwrap();
    let v2 = replay_verdict(&w.fx.verifier, &stored, &target, &evidence).unwrap();
    assert_eq!(v1, v2);
    assert!(v1.confirmed);
    let req = request(&w, "c1", "master-1", evidence);
    let out = ctx(&mut w)
        .run_challenge(&req, row.closes_at_ms.unwrap() - 1)
        .unwrap();
    assert_eq!(out.state, ChallengeState::PenaltyRecorded);
    assert_eq!(out.verdict, v1);
    // staking::slash, major offence, first time: 10% of the stake.
    assert_eq!(out.slashed, stake / 10);
    assert_eq!(w.ledger.stake_of(&operator), stake - stake / 10);
    let base = w.fx.params.prices.query.base_fee_micro_sym;
    assert_eq!(
        w.ledger.balance(&AccountId::treasury()),
        out.slashed + base,
        "slashed stake and the base fee go to the treasury"
    );
    assert_eq!(
        w.ledger.total_supply(),
        supply,
        "slashing moves stake, supply unchanged"
    );
    // No payout for the bad work: nobody but the treasury was paid from escrow.
    assert_eq!(w.ledger.balance(&operator), 0);
    assert_eq!(w.ledger.balance(&acct("vault-dividends:vault-01")), 0);
    let escrow = w.ledger.escrow(&inputs.escrow_id).unwrap();
    assert_eq!((escrow.paid_out, escrow.remaining()), (base, 0));
    assert_eq!(
        w.ledger.balance(&submitter),
        submitter_before + escrow.refunded
    );
    let state = w.fx.masters.state();
    assert_eq!(
        state.task(&inputs.task_id).unwrap().state,
        TaskState::Rejected
    );
    let c = state.challenge(&req.challenge_id).unwrap();
    assert_eq!(c.penalty.as_ref().unwrap().slashed, out.slashed);
    assert_eq!(c.verdict_hash, Some(out.verdict_hash));
    // The settlement can never finalize now.
    assert!(ctx(&mut w)
        .finalize(&inputs.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .is_err());
    reconcile_settlements(&w.store, &w.ledger).unwrap();
}

#[test]
fn unconfirmed_challenge_closes_without_penalty_and_pays_normally() {
    // Reference: the same task settled without a challenge.
    let mut reference = world(13);
    let inputs = reference.fx.inputs.clone();
    let (row, _) = ctx(&mut reference).open(&inputs, fixture::NOW_MS).unwrap();
    let expected = ctx(&mut reference)
        .finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .unwrap();

    let mut w = world(13);
    let (row, _) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    let operator = acct("actor:operator:vault-01");
    let stake = w.ledger.stake_of(&operator);
    let same_output = w.fx.inputs.evidence.slices[1]
        .evidence
        .clone()
        .unwrap()
        .commitment;
    let cases = [
        // the "conflicting" run has the stored output
        conflicting(conflicting_run(&w, same_output)),
        // a forged attestation
        conflicting({
            let mut e = conflicting_run(&w, Digest([3; 32]));
            e.attestation.signature = [0x42; 64];
            e
        }),
        // the stored evidence replays fine
        ChallengeEvidence::StoredEvidenceFails,
    ];
    for (i, evidence) in cases.into_iter().enumerate() {
        let req = request(&w, &format!("c{i}"), "operator:vault-02", evidence);
        let out = ctx(&mut w)
            .run_challenge(&req, fixture::NOW_MS + 10)
            .unwrap();
        assert_eq!(out.state, ChallengeState::ClosedWithoutPenalty, "case {i}");
        assert_eq!(out.slashed, 0);
        let task = w.fx.masters.state().task(&inputs.task_id).unwrap();
        assert_eq!(task.state, TaskState::AwaitingSettlement);
    }
    assert_eq!(w.ledger.stake_of(&operator), stake);
    // No standing, or outside the window: refused, nothing changes.
    let late = request(
        &w,
        "late",
        "master-2",
        ChallengeEvidence::StoredEvidenceFails,
    );
    assert!(ctx(&mut w)
        .run_challenge(&late, row.closes_at_ms.unwrap())
        .is_err());
    let stranger = request(&w, "x", "someone", ChallengeEvidence::StoredEvidenceFails);
    assert!(ctx(&mut w)
        .run_challenge(&stranger, fixture::NOW_MS + 11)
        .is_err());
    let done = ctx(&mut w)
        .finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .unwrap();
    assert_eq!(done.state, SettlementState::Finalized);
    assert_eq!(done.candidate, expected.candidate, "normal payout");
    for a in [
        "actor:operator:vault-01",
        "vault-dividends:vault-01",
        "protocol:treasury",
    ] {
        assert_eq!(
            w.ledger.balance(&acct(a)),
            reference.ledger.balance(&acct(a)),
            "{a}"
        );
    }
    reconcile_settlements(&w.store, &w.ledger).unwrap();
}

#[test]
fn aggregation_and_composite_targets_replay() {
    let w = world(14);
    let stored = &w.fx.inputs.evidence;
    let agg = ChallengeTarget::Aggregation { round: 0 };
    let v = replay_verdict(
        &w.fx.verifier,
        stored,
        &agg,
        &ChallengeEvidence::StoredEvidenceFails,
    )
    .unwrap();
    assert!(!v.confirmed);
    let mut broken = stored.clone();
    broken.aggregate.result_hash = Digest([5; 32]);
    let v = replay_verdict(
        &w.fx.verifier,
        &broken,
        &agg,
        &ChallengeEvidence::StoredEvidenceFails,
    )
    .unwrap();
    assert!(v.confirmed);
    assert_eq!(v.responsible.unwrap().as_str(), "master-0");
    let parent = w.fx.inputs.task_id.clone();
    let composite = link_composite(
        &parent,
        vec![SubTaskSettlementRef {
            sub_task: symphony_core::ids::SubTaskId {
                parent: parent.clone(),
                round: 0,
            },
            epoch_id: EpochId(1),
            fee_total: 10,
            settlement_hash: Digest([1; 32]),
        }],
    )
    .unwrap();
    let ok = ChallengeEvidence::CompositeLink {
        composite: Box::new(composite.clone()),
    };
    let v = replay_verdict(&w.fx.verifier, stored, &ChallengeTarget::Composite, &ok).unwrap();
    assert!(!v.confirmed);
    let mut bad = composite;
    bad.fee_total = 11;
    let v = replay_verdict(
        &w.fx.verifier,
        stored,
        &ChallengeTarget::Composite,
        &ChallengeEvidence::CompositeLink {
            composite: Box::new(bad),
        },
    )
    .unwrap();
    assert!(v.confirmed);
}
