//! Registry proposals with their ledger effects (issue #13): a challenge held for
//! governance is decided by an adjudication proposal (upheld: the responsible stake
//! is slashed by the graduated table to the treasury, the task rejected, its escrow
//! charged the base fee and the rest refunded; dismissed: the settlement pays out
//! as usual); a slashing proposal moves stake to the treasury; an approved
//! membership bonds the enterprise's stake, a rejected one bonds nothing. Every
//! ledger move happens exactly once, the supply is conserved and the registry
//! agrees with the ledger.

use symphony_core::encoding::Digest;
use symphony_core::ids::{ActorId, ChallengeId, EpochId, VaultId};
use symphony_core::lifecycle::{ChallengeState, TaskState};
use symphony_economics::Offence;
use symphony_enclave::{run_commitment, Tee};
use symphony_ledger::{AccountId, MemoryLedger, SettlementLedger};
use symphony_master::{
    ChallengeTarget, Command, LedgerDuty, ProposalKind, ProposalStatus, Verdict,
};
use symphony_node::adjudication::{
    adjudication_proposal, propose_signed, register_genesis_stakes, run_ledger_duties, vote_signed,
};
use symphony_node::challenge::{ChallengeEvidence, ChallengeRequest};
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

fn actor(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

/// The settlement fixture (3 Vaults) with governance configured and the genesis
/// stakes of the operators and masters in the actor registry.
fn world(seed: u64) -> World {
    let fx = fixture::build(seed, &[120, 80, 60], 0, 40, EpochId(1)).unwrap();
    let mut ledger = MemoryLedger::new(&fixture::genesis(&fx.params, 3).unwrap()).unwrap();
    fixture::fund(&mut ledger, &fx, 3, true).unwrap();
    let mut w = World {
        fx,
        ledger,
        store: SettlementStore::in_memory().unwrap(),
    };
    let keys =
        w.fx.masters
            .master_keys()
            .iter()
            .map(|k| k.to_bytes())
            .collect();
    w.fx.masters
        .submit(Command::ConfigureGovernance {
            master_keys: keys,
            epoch_length_ms: 3_600_000,
            max_tasks_per_epoch: None,
        })
        .unwrap();
    let actors: Vec<ActorId> = [
        "operator:vault-00",
        "operator:vault-01",
        "operator:vault-02",
    ]
    .into_iter()
    .chain(["master-0", "master-1", "master-2"])
    .map(actor)
    .collect();
    assert_eq!(
        register_genesis_stakes(&mut w.fx.masters, &w.ledger, &actors).unwrap(),
        6
    );
    w
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

fn duties(w: &mut World) -> Vec<symphony_master::ProposalId> {
    run_ledger_duties(
        &mut w.fx.masters,
        &mut w.ledger,
        Some(&w.store),
        &w.fx.params,
    )
    .unwrap()
}

fn registered(w: &World, a: &str) -> u64 {
    w.fx.masters.state().governance().registry.actors[&actor(a)].bonded_micro_sym
}

/// A second attested run of Vault 1's slice over the same inputs with `commitment`.
fn conflicting_run(w: &World, commitment: Digest) -> ChallengeEvidence {
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
    ChallengeEvidence::ConflictingRun {
        evidence: Box::new(SliceEvidence {
            commitment,
            inputs_commitment: stored.inputs_commitment,
            attestation,
        }),
    }
}

fn request(w: &World, evidence: ChallengeEvidence) -> ChallengeRequest {
    ChallengeRequest {
        challenge_id: ChallengeId::new("c1").unwrap(),
        task_id: w.fx.inputs.task_id.clone(),
        target: ChallengeTarget::Slice {
            round: 0,
            vault_id: VaultId::new("vault-01").unwrap(),
        },
        challenger: actor("operator:vault-02"),
        evidence,
    }
}

#[test]
fn an_upheld_adjudication_slashes_rejects_and_refunds_exactly_once() {
    let mut w = world(31);
    let inputs = w.fx.inputs.clone();
    let (row, _) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    let operator = acct("actor:operator:vault-01");
    let stake = w.ledger.stake_of(&operator);
    let supply = w.ledger.total_supply();
    let submitter = acct(&format!("actor:{}", fixture::SUBMITTER));
    let submitter_before = w.ledger.balance(&submitter);
    let req = request(&w, conflicting_run(&w, Digest([0xAB; 32])));
    let replayed = ctx(&mut w)
        .hold_challenge(&req, row.closes_at_ms.unwrap() - 1)
        .unwrap();
    assert!(replayed.confirmed);
    // Held: the challenge waits in review, nothing is slashed yet.
    let c =
        w.fx.masters
            .state()
            .challenge(&req.challenge_id)
            .unwrap()
            .clone();
    assert_eq!(c.state, ChallengeState::Reviewing);
    assert_eq!(w.ledger.stake_of(&operator), stake);
    let kind = adjudication_proposal(&req.challenge_id, &replayed);
    assert!(matches!(
        &kind,
        ProposalKind::AdjudicateChallenge { verdict: Verdict::Upheld { responsible, offence: Offence::InvalidResult }, .. }
            if responsible == &actor("operator:vault-01")
    ));
    let id = propose_signed(&mut w.fx.masters, kind, 0, fixture::NOW_MS + 20).unwrap();
    assert!(duties(&mut w).is_empty(), "nothing owed before approval");
    vote_signed(&mut w.fx.masters, id, 2, true, fixture::NOW_MS + 21).unwrap();
    let state = w.fx.masters.state();
    assert_eq!(
        state.task(&inputs.task_id).unwrap().state,
        TaskState::Rejected
    );
    let c = state.challenge(&req.challenge_id).unwrap();
    assert_eq!(c.state, ChallengeState::PenaltyRecorded);
    let slashed = c.penalty.as_ref().unwrap().slashed;
    // Major, first offence: 10 % of the registered (= bonded) stake.
    assert_eq!(slashed, stake / 10);
    assert_eq!(registered(&w, "operator:vault-01"), stake - slashed);
    assert_eq!(
        w.ledger.stake_of(&operator),
        stake,
        "the ledger moves with the duty"
    );

    assert_eq!(duties(&mut w), vec![id]);
    assert_eq!(w.ledger.stake_of(&operator), stake - slashed);
    assert_eq!(
        w.ledger.stake_of(&operator),
        registered(&w, "operator:vault-01")
    );
    let base = w.fx.params.prices.query.base_fee_micro_sym;
    assert_eq!(w.ledger.treasury_balance(), slashed + base);
    let escrow = w.ledger.escrow(&inputs.escrow_id).unwrap();
    assert_eq!((escrow.paid_out, escrow.remaining()), (base, 0));
    assert_eq!(
        w.ledger.balance(&submitter),
        submitter_before + escrow.refunded
    );
    assert_eq!(
        w.ledger.total_supply(),
        supply,
        "slashing and refunds conserve the supply"
    );
    // Exactly once: nothing pending, a second run moves nothing.
    let treasury = w.ledger.treasury_balance();
    assert!(duties(&mut w).is_empty());
    assert_eq!(w.ledger.treasury_balance(), treasury);
    assert!(w.fx.masters.state().governance().pending_duties.is_empty());
    assert!(ctx(&mut w)
        .finalize(&inputs.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .is_err());
    reconcile_settlements(&w.store, &w.ledger).unwrap();
    w.ledger.reconcile().unwrap();
}

#[test]
fn a_dismissed_adjudication_lets_the_settlement_pay_as_usual() {
    // Reference: the same task settled without a challenge.
    let mut reference = world(33);
    let inputs = reference.fx.inputs.clone();
    let (row, _) = ctx(&mut reference).open(&inputs, fixture::NOW_MS).unwrap();
    let expected = ctx(&mut reference)
        .finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .unwrap();

    let mut w = world(33);
    let (row, _) = ctx(&mut w).open(&inputs, fixture::NOW_MS).unwrap();
    let stake = w.ledger.stake_of(&acct("actor:operator:vault-01"));
    let same = w.fx.inputs.evidence.slices[1]
        .evidence
        .clone()
        .unwrap()
        .commitment;
    let req = request(&w, conflicting_run(&w, same));
    let replayed = ctx(&mut w)
        .hold_challenge(&req, fixture::NOW_MS + 10)
        .unwrap();
    assert!(!replayed.confirmed);
    let id = propose_signed(
        &mut w.fx.masters,
        adjudication_proposal(&req.challenge_id, &replayed),
        1,
        fixture::NOW_MS + 20,
    )
    .unwrap();
    // While it is voted on, the settlement cannot finalize.
    assert!(ctx(&mut w)
        .finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .is_err());
    vote_signed(&mut w.fx.masters, id, 0, true, fixture::NOW_MS + 21).unwrap();
    let state = w.fx.masters.state();
    assert_eq!(
        state.governance().proposals[&id].status,
        ProposalStatus::Enacted
    );
    assert_eq!(
        state.challenge(&req.challenge_id).unwrap().state,
        ChallengeState::ClosedWithoutPenalty
    );
    assert!(duties(&mut w).is_empty());
    let got = ctx(&mut w)
        .finalize(&row.task_id, row.closes_at_ms.unwrap(), &mut |_| {})
        .unwrap();
    // Released: paid exactly as without the challenge (only the certificate over
    // the longer log differs).
    assert_eq!(
        (got.state, got.phase, &got.candidate),
        (expected.state, expected.phase, &expected.candidate)
    );
    assert_eq!(
        w.ledger.balance(&acct("actor:operator:vault-01")),
        reference.ledger.balance(&acct("actor:operator:vault-01"))
    );
    assert_eq!(w.ledger.stake_of(&acct("actor:operator:vault-01")), stake);
    reconcile_settlements(&w.store, &w.ledger).unwrap();
}

#[test]
fn a_slashing_proposal_moves_stake_to_the_treasury_once_even_after_a_crash() {
    let mut w = world(35);
    let operator = acct("actor:operator:vault-02");
    let stake = w.ledger.stake_of(&operator);
    let supply = w.ledger.total_supply();
    let treasury = w.ledger.treasury_balance();
    let kind = |reason: &str| ProposalKind::Slash {
        actor: actor("operator:vault-02"),
        offence: Offence::Unavailability,
        reason: reason.into(),
    };
    let id = propose_signed(
        &mut w.fx.masters,
        kind("missed three slice deadlines"),
        1,
        10,
    )
    .unwrap();
    vote_signed(&mut w.fx.masters, id, 2, true, 11).unwrap();
    let table = w.fx.params.slashing.clone();
    let first = stake * u64::from(table.minor_bp) / 10_000;
    assert_eq!(
        w.fx.masters.state().governance().pending_duties[&id],
        vec![LedgerDuty::Slash {
            actor: actor("operator:vault-02"),
            amount_micro_sym: first
        }]
    );
    // A leader slashed on the ledger and crashed before recording the duty: the
    // next run finds the slash by its reason and does not slash again.
    w.ledger
        .slash(&operator, first, &format!("gov:{id}"))
        .unwrap();
    assert_eq!(duties(&mut w), vec![id]);
    assert_eq!(w.ledger.stake_of(&operator), stake - first);
    // A repeat inside the window doubles the fraction.
    let id2 = propose_signed(&mut w.fx.masters, kind("again"), 0, 12).unwrap();
    vote_signed(&mut w.fx.masters, id2, 1, true, 13).unwrap();
    assert_eq!(duties(&mut w), vec![id2]);
    let second = (stake - first) * u64::from(table.minor_bp) * 2 / 10_000;
    assert_eq!(w.ledger.stake_of(&operator), stake - first - second);
    assert_eq!(
        w.ledger.stake_of(&operator),
        registered(&w, "operator:vault-02")
    );
    assert_eq!(w.ledger.treasury_balance(), treasury + first + second);
    assert_eq!(w.ledger.total_supply(), supply);
    w.ledger.reconcile().unwrap();
}

#[test]
fn an_approved_membership_bonds_its_stake_and_a_rejected_one_bonds_nothing() {
    let mut w = world(37);
    let stake = w.fx.params.staking.s_enterprise_micro_sym;
    let submitter = acct(&format!("actor:{}", fixture::SUBMITTER));
    for v in ["vault-07", "vault-08"] {
        w.ledger
            .transfer(&submitter, &acct(&format!("actor:operator:{v}")), stake + 5)
            .unwrap();
    }
    let supply = w.ledger.total_supply();
    let member = |v: &str| ProposalKind::EnterpriseMembership {
        vault: VaultId::new(v).unwrap(),
        operator: actor(&format!("operator:{v}")),
        stake_micro_sym: stake,
    };
    let yes = propose_signed(&mut w.fx.masters, member("vault-07"), 0, 10).unwrap();
    let no = propose_signed(&mut w.fx.masters, member("vault-08"), 1, 10).unwrap();
    vote_signed(&mut w.fx.masters, yes, 2, true, 11).unwrap();
    vote_signed(&mut w.fx.masters, no, 0, false, 11).unwrap();
    vote_signed(&mut w.fx.masters, no, 2, false, 11).unwrap();
    assert_eq!(duties(&mut w), vec![yes]);
    let seven = acct("actor:operator:vault-07");
    let eight = acct("actor:operator:vault-08");
    assert_eq!(
        (w.ledger.stake_of(&seven), w.ledger.balance(&seven)),
        (stake, 5)
    );
    assert_eq!(
        (w.ledger.stake_of(&eight), w.ledger.balance(&eight)),
        (0, stake + 5)
    );
    assert_eq!(registered(&w, "operator:vault-07"), stake);
    assert!(!w
        .fx
        .masters
        .state()
        .governance()
        .registry
        .actors
        .contains_key(&actor("operator:vault-08")));
    assert_eq!(
        w.ledger.total_supply(),
        supply,
        "bonding moves, never mints"
    );
    // A retry after the duty (or after a crash before its record) bonds nothing more.
    assert!(duties(&mut w).is_empty());
    assert_eq!(w.ledger.stake_of(&seven), stake);
    w.ledger.reconcile().unwrap();
}

#[test]
fn a_membership_whose_operator_cannot_pay_its_stake_stays_owed_and_says_why() {
    let mut w = world(39);
    let id = propose_signed(
        &mut w.fx.masters,
        ProposalKind::EnterpriseMembership {
            vault: VaultId::new("vault-09").unwrap(),
            operator: actor("operator:vault-09"),
            stake_micro_sym: 1_000,
        },
        0,
        10,
    )
    .unwrap();
    vote_signed(&mut w.fx.masters, id, 1, true, 11).unwrap();
    let e = run_ledger_duties(
        &mut w.fx.masters,
        &mut w.ledger,
        Some(&w.store),
        &w.fx.params,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot bond the 1000"), "{e}");
    assert!(w
        .fx
        .masters
        .state()
        .governance()
        .pending_duties
        .contains_key(&id));
    // Once funded, the duty completes.
    let submitter = acct(&format!("actor:{}", fixture::SUBMITTER));
    w.ledger
        .transfer(&submitter, &acct("actor:operator:vault-09"), 1_000)
        .unwrap();
    assert_eq!(duties(&mut w), vec![id]);
    assert_eq!(w.ledger.stake_of(&acct("actor:operator:vault-09")), 1_000);
}
