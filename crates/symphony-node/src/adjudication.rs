//! The effects of the registry proposals (`symphony_master` `actors.rs`): the
//! leader registers the genesis stakes, holds a challenge for governance (files it
//! and replays its evidence, which becomes the proposed verdict), and carries out
//! what an enacted proposal owes the settlement ledger:
//!
//! - `bond`: the member's stake moves from `actor:<operator>` into the staking
//!   contract (`staking::bond`);
//! - `slash`: the slashed amount moves from the stake to the treasury
//!   (`staking::slash`, reason `gov:proposal-N`);
//! - `charge_rejection`: the rejected task's escrow pays the base fee to the
//!   treasury and refunds the rest (`settlement::rewards::charge_rejection`).
//!
//! Each duty is idempotent on the ledger (a bond is done when the stake covers it, a
//! slash when an event with its reason exists, a charge by payout id), so a leader
//! that crashed between the ledger and [`Command::RecordLedgerDuty`] finishes it
//! exactly once.

use symphony_core::ids::{ActorId, ChallengeId};
use symphony_core::lifecycle::ChallengeEvent;
use symphony_economics::{PolicyParams, StakeTier};
use symphony_ledger::{LedgerEvent, SettlementLedger};
use symphony_master::{
    proposal_message, vote_message, Command, Event, LedgerDuty, ProposalId, ProposalKind, Verdict,
};

use crate::challenge::{replay_verdict, ChallengeRequest};
use crate::replication::Replicator;
use crate::settlement::rewards::charge_rejection;
use crate::settlement::{actor_account, SettlementContext, SettlementStore};
use crate::NodeError;

fn refused(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

fn ledger_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Ledger(e.to_string())
}

fn tier(t: StakeTier) -> symphony_ledger::StakeTier {
    match t {
        StakeTier::Master => symphony_ledger::StakeTier::Master,
        StakeTier::Enterprise => symphony_ledger::StakeTier::Enterprise,
        StakeTier::Producer => symphony_ledger::StakeTier::Producer,
    }
}

fn economics_tier(t: symphony_ledger::StakeTier) -> StakeTier {
    match t {
        symphony_ledger::StakeTier::Master => StakeTier::Master,
        symphony_ledger::StakeTier::Enterprise => StakeTier::Enterprise,
        symphony_ledger::StakeTier::Producer => StakeTier::Producer,
    }
}

/// Master `by` files `kind` at `at_ms`, signed with its key (held by `masters`).
pub fn propose_signed(
    masters: &mut dyn Replicator,
    kind: ProposalKind,
    by: u8,
    at_ms: u64,
) -> Result<ProposalId, NodeError> {
    let msg = proposal_message(&kind, at_ms).map_err(refused)?;
    let signature = masters
        .sign_as(by, &msg.0)
        .ok_or_else(|| refused(format!("master-{by}'s key is not held here")))?
        .to_bytes()
        .to_vec();
    let id = ProposalId(masters.state().governance().proposals.len() as u64);
    masters.submit(Command::Propose {
        kind,
        by,
        at_ms,
        signature,
    })?;
    Ok(id)
}

/// Master `by` votes on `id` at `at_ms`.
pub fn vote_signed(
    masters: &mut dyn Replicator,
    id: ProposalId,
    by: u8,
    approve: bool,
    at_ms: u64,
) -> Result<Vec<Event>, NodeError> {
    let msg = vote_message(id, approve).map_err(refused)?;
    let signature = masters
        .sign_as(by, &msg.0)
        .ok_or_else(|| refused(format!("master-{by}'s key is not held here")))?
        .to_bytes()
        .to_vec();
    Ok(masters
        .submit(Command::Vote {
            proposal: id,
            by,
            approve,
            at_ms,
            signature,
        })?
        .events)
}

/// Registers the stakes the ledger bonded at genesis for `actors` (those with a
/// bonded stake) in the actor registry: once, before the first proposal; a no-op
/// when the registry already holds them.
pub fn register_genesis_stakes(
    masters: &mut dyn Replicator,
    ledger: &dyn SettlementLedger,
    actors: &[ActorId],
) -> Result<usize, NodeError> {
    let registry = &masters.state().governance().registry;
    let mut stakes = Vec::new();
    for a in actors {
        if registry.actors.contains_key(a) {
            continue;
        }
        if let Some(r) = ledger.stake_record(&actor_account(a)?) {
            if r.bonded > 0 {
                stakes.push((a.clone(), economics_tier(r.tier), r.bonded));
            }
        }
    }
    if stakes.is_empty() {
        return Ok(0);
    }
    let n = stakes.len();
    masters.submit(Command::RegisterStakes { stakes })?;
    Ok(n)
}

/// The proposal that adjudicates `challenge` as the replayed verdict says.
pub fn adjudication_proposal(
    challenge: &ChallengeId,
    replayed: &crate::challenge::Verdict,
) -> ProposalKind {
    let verdict = match (&replayed.responsible, replayed.confirmed) {
        (Some(responsible), true) => Verdict::Upheld {
            responsible: responsible.clone(),
            offence: replayed.offence,
        },
        _ => Verdict::Dismissed,
    };
    ProposalKind::AdjudicateChallenge {
        challenge: challenge.clone(),
        verdict,
    }
}

impl SettlementContext<'_> {
    /// Files `req` at `now_ms` and starts its review: the stored evidence is replayed
    /// and the replayed verdict returned, but the challenge stays `reviewing` until
    /// an adjudication proposal decides it (2 of 3 masters).
    pub fn hold_challenge(
        &mut self,
        req: &ChallengeRequest,
        now_ms: u64,
    ) -> Result<crate::challenge::Verdict, NodeError> {
        let row = self.file_challenge(req, now_ms)?;
        self.masters.submit(Command::ChallengeStep {
            challenge_id: req.challenge_id.clone(),
            event: ChallengeEvent::StartReview,
            verdict_hash: None,
            penalty: None,
        })?;
        replay_verdict(self.verifier, &row.evidence, &req.target, &req.evidence)
    }
}

fn slashed_with_reason(ledger: &dyn SettlementLedger, reason: &str) -> Result<bool, NodeError> {
    let mut from = 0u64;
    loop {
        let page = ledger.events(from, 1_000).map_err(ledger_err)?;
        let Some((last, _)) = page.last() else {
            return Ok(false);
        };
        if page
            .iter()
            .any(|(_, e)| matches!(e, LedgerEvent::StakeSlashed { reason: r, .. } if r == reason))
        {
            return Ok(true);
        }
        from = last + 1;
    }
}

fn run_duty(
    id: ProposalId,
    duty: &LedgerDuty,
    ledger: &mut dyn SettlementLedger,
    store: Option<&SettlementStore>,
    params: &PolicyParams,
) -> Result<(), NodeError> {
    match duty {
        LedgerDuty::Bond {
            actor,
            tier: t,
            amount_micro_sym,
        } => {
            let account = actor_account(actor)?;
            if ledger.stake_of(&account) >= *amount_micro_sym {
                return Ok(()); // bonded before a crash
            }
            let liquid = ledger.balance(&account);
            if liquid < *amount_micro_sym {
                return Err(NodeError::Ledger(format!(
                    "{id}: {account} holds {liquid} µSYM, cannot bond the {amount_micro_sym} \
                     µSYM stake its membership was approved with"
                )));
            }
            ledger
                .bond(&account, tier(*t), *amount_micro_sym)
                .map_err(ledger_err)?;
        }
        LedgerDuty::Slash {
            actor,
            amount_micro_sym,
        } => {
            let reason = format!("gov:{id}");
            if slashed_with_reason(ledger, &reason)? {
                return Ok(());
            }
            let account = actor_account(actor)?;
            let held = ledger.stake_record(&account).map_or(0, |r| r.total());
            let amount = (*amount_micro_sym).min(held);
            if amount > 0 {
                ledger
                    .slash(&account, amount, &reason)
                    .map_err(ledger_err)?;
            }
        }
        LedgerDuty::ChargeRejection { task_id } => {
            let store = store.ok_or_else(|| {
                NodeError::Refused(format!("{id}: no settlement store for {task_id}"))
            })?;
            let row = store
                .row(task_id)?
                .ok_or_else(|| NodeError::Refused(format!("{id}: no settlement for {task_id}")))?;
            charge_rejection(
                ledger,
                store,
                &row.escrow_id,
                task_id,
                row.evidence.envelope.body().task_class,
                params,
                row.epoch_id,
            )?;
        }
    }
    Ok(())
}

/// Carries out proposal `id`'s ledger duties, each idempotent on the ledger (a
/// bond is done when the stake covers it, a slash when an event with its reason
/// exists, a charge by payout id): running them again after a crash before
/// [`Command::RecordLedgerDuty`] moves nothing twice.
pub fn carry_out_duties(
    id: ProposalId,
    duties: &[LedgerDuty],
    ledger: &mut dyn SettlementLedger,
    store: Option<&SettlementStore>,
    params: &PolicyParams,
) -> Result<(), NodeError> {
    duties
        .iter()
        .try_for_each(|duty| run_duty(id, duty, ledger, store, params))
}

/// Carries out every pending ledger duty of enacted proposals and records each
/// proposal's duties done once. Returns the proposals completed; stops at the first
/// proposal that fails (see [`run_each_ledger_duty`] for the leader's loop).
pub fn run_ledger_duties(
    masters: &mut dyn Replicator,
    ledger: &mut dyn SettlementLedger,
    store: Option<&SettlementStore>,
    params: &PolicyParams,
) -> Result<Vec<ProposalId>, NodeError> {
    let mut done = Vec::new();
    for (id, r) in run_each_ledger_duty(masters, ledger, store, params) {
        r?;
        done.push(id);
    }
    Ok(done)
}

/// Carries out the pending ledger duties proposal by proposal (oldest first),
/// recording each proposal's duties done once ([`Command::RecordLedgerDuty`]); a
/// proposal whose duty fails (e.g. an operator that cannot cover the stake it was
/// approved with) stays pending and does not hold up the others. Returns what
/// happened to each proposal attempted.
pub fn run_each_ledger_duty(
    masters: &mut dyn Replicator,
    ledger: &mut dyn SettlementLedger,
    store: Option<&SettlementStore>,
    params: &PolicyParams,
) -> Vec<(ProposalId, Result<(), NodeError>)> {
    let pending: Vec<(ProposalId, Vec<LedgerDuty>)> = masters
        .state()
        .governance()
        .pending_duties
        .iter()
        .map(|(id, d)| (*id, d.clone()))
        .collect();
    let mut out = Vec::new();
    for (id, duties) in pending {
        let r = carry_out_duties(id, &duties, ledger, store, params).and_then(|()| {
            masters
                .submit(Command::RecordLedgerDuty { proposal: id })
                .map(|_| ())
                .map_err(NodeError::from)
        });
        out.push((id, r));
    }
    out
}
