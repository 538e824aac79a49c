//! The actor registry and the proposals that act on it (seed 002, "Governance":
//! "Actor registry — three-tier staking (`S_master`, `S_enterprise`, `S_producer`)
//! with graduated slashing"; "Governance proposals — … challenge adjudication").
//!
//! * **Registry** ([`ActorRegistry`]): each registered actor's tier, bonded stake,
//!   what was slashed and its offences (the repeats the graduated table counts).
//!   Entries come from genesis ([`crate::Command::RegisterStakes`], once, before the
//!   first proposal: the stakes the ledger bonded at genesis) and from approved
//!   `enterprise_membership` proposals; a data producer's `S_producer` from
//!   [`crate::Command::RegisterProducerStake`] once it is bonded (the quality reward
//!   rule reads it: [`ActorRegistry::holds_producer_stake`]).
//! * **Slashing** (`slashing` proposal): the amount is the graduated table's
//!   (`symphony_economics::slash`: the base fraction of the offence's severity,
//!   doubled per earlier offence inside the repeat window, capped at the stake) over
//!   the registered stake, computed here at enactment: the proposal names the actor
//!   and the offence, never an amount.
//! * **Challenge adjudication** (`challenge_adjudication` proposal): the verdict on
//!   a challenge under review (`reviewing`). `upheld` confirms it with the
//!   proposal's verdict hash, approves it, slashes the responsible actor by the
//!   table and records the penalty (the task is `rejected`); `dismissed` closes it
//!   without penalty (the task returns to `awaiting_settlement` and its settlement
//!   pays out as usual). The challenge lifecycle makes the verdict take effect once.
//! * **Ledger duties** ([`LedgerDuty`]): what an enacted proposal still has to move
//!   on the settlement ledger (bond a member's stake, slash a stake to the treasury,
//!   charge a rejected task its base fee and refund the rest). The leader carries
//!   them out and records each proposal's duties done once
//!   ([`crate::Command::RecordLedgerDuty`]); a new leader finds them pending here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::ids::{ActorId, ChallengeId, EpochId, TaskId};
use symphony_core::lifecycle::{ChallengeEvent, ChallengeState};
use symphony_economics::policy::SlashingSchedule;
use symphony_economics::{slash, Offence, PolicyParams, StakeTier};
use symphony_semantic::SemanticRegistry;

use crate::{
    Event, MasterError, MasterState, PenaltyRecord, ProposalId, ProposalKind, ProposalStatus,
};

/// Longest reason a slashing proposal may carry, bytes (the ledger's text bound).
pub const MAX_REASON_BYTES: usize = 256;

/// One offence recorded against an actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenceRecord {
    /// The epoch it was enacted in.
    pub epoch: EpochId,
    /// What.
    pub offence: Offence,
    /// The proposal that slashed for it.
    pub proposal: ProposalId,
    /// Slashed for it, µSYM.
    pub slashed_micro_sym: u64,
}

/// A registered actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredStake {
    /// Its tier.
    pub tier: StakeTier,
    /// Bonded stake, µSYM.
    pub bonded_micro_sym: u64,
    /// Σ slashed, µSYM.
    pub slashed_micro_sym: u64,
    /// Its offences, oldest first.
    pub offences: Vec<OffenceRecord>,
}

/// The actor registry: registered stakes and the slashing table in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRegistry {
    /// Actor → stake.
    pub actors: BTreeMap<ActorId, RegisteredStake>,
    /// The graduated table of the active policy (genesis: policy v1's; replaced
    /// when a policy change activates).
    pub slashing: SlashingSchedule,
}

impl Default for ActorRegistry {
    fn default() -> Self {
        ActorRegistry {
            actors: BTreeMap::new(),
            slashing: PolicyParams::default_v1().slashing,
        }
    }
}

/// What an enacted proposal still moves on the settlement ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerDuty {
    /// `staking::bond`: the actor's stake moves from its account into the staking
    /// contract.
    Bond {
        /// The actor.
        actor: ActorId,
        /// Tier.
        tier: StakeTier,
        /// µSYM.
        amount_micro_sym: u64,
    },
    /// `staking::slash`: the amount moves from the actor's stake to the treasury.
    Slash {
        /// The actor.
        actor: ActorId,
        /// µSYM.
        amount_micro_sym: u64,
    },
    /// A task rejected by an upheld challenge: its escrow pays the policy's base
    /// fee to the treasury and refunds the rest to the submitter.
    ChargeRejection {
        /// The task.
        task_id: TaskId,
    },
}

/// The verdict of a `challenge_adjudication` proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The fault is confirmed: `responsible` is slashed for `offence`.
    Upheld {
        /// Who is slashed.
        responsible: ActorId,
        /// For what.
        offence: Offence,
    },
    /// The fault is not confirmed: closed without penalty.
    Dismissed,
}

/// The protocol name of an offence.
pub fn offence_name(o: Offence) -> &'static str {
    match o {
        Offence::Unavailability => "unavailability",
        Offence::InvalidResult => "invalid_result",
        Offence::FaultyVerification => "faulty_verification",
        Offence::SovereigntyViolation => "sovereignty_violation",
        Offence::Equivocation => "equivocation",
    }
}

/// The offence named `name` (its protocol name).
pub fn parse_offence(name: &str) -> Result<Offence, String> {
    [
        Offence::Unavailability,
        Offence::InvalidResult,
        Offence::FaultyVerification,
        Offence::SovereigntyViolation,
        Offence::Equivocation,
    ]
    .into_iter()
    .find(|o| offence_name(*o) == name)
    .ok_or_else(|| {
        format!(
            "unknown offence {name:?}: expected unavailability, invalid_result, \
             faulty_verification, sovereignty_violation or equivocation"
        )
    })
}

/// The hash recorded as a challenge's verdict when proposal `id` decides it.
pub fn adjudication_hash(
    id: ProposalId,
    challenge: &ChallengeId,
    verdict: &Verdict,
) -> Result<Digest, MasterError> {
    content_hash("scp/gov/adjudication/v1", &(id.0, challenge, verdict))
        .map_err(|e| MasterError::Governance(format!("adjudication encoding: {e}")))
}

fn gov(msg: impl Into<String>) -> MasterError {
    MasterError::Governance(msg.into())
}

impl ActorRegistry {
    /// Registers `actor` with `amount` bonded in `tier` (refused when it is
    /// registered already or the amount is zero).
    pub(crate) fn register(
        &mut self,
        actor: &ActorId,
        tier: StakeTier,
        amount_micro_sym: u64,
    ) -> Result<(), MasterError> {
        if amount_micro_sym == 0 {
            return Err(gov(format!("{actor}: a registered stake must be positive")));
        }
        if self.actors.contains_key(actor) {
            return Err(gov(format!("{actor} is already in the actor registry")));
        }
        self.actors.insert(
            actor.clone(),
            RegisteredStake {
                tier,
                bonded_micro_sym: amount_micro_sym,
                slashed_micro_sym: 0,
                offences: Vec::new(),
            },
        );
        Ok(())
    }

    /// Whether `actor` is registered in the producer tier with at least
    /// `s_producer_micro_sym` bonded (after slashing): its data rewards are paid in
    /// full, else at the unstaked share.
    pub fn holds_producer_stake(&self, actor: &ActorId, s_producer_micro_sym: u64) -> bool {
        self.actors.get(actor).is_some_and(|r| {
            r.tier == StakeTier::Producer
                && r.bonded_micro_sym > 0
                && r.bonded_micro_sym >= s_producer_micro_sym
        })
    }

    /// Slashes `actor` for `offence` in `epoch` by the graduated table; records the
    /// offence (an unregistered actor has nothing to slash: 0). Returns the amount.
    pub(crate) fn slash(
        &mut self,
        actor: &ActorId,
        offence: Offence,
        epoch: EpochId,
        proposal: ProposalId,
    ) -> u64 {
        let Some(entry) = self.actors.get_mut(actor) else {
            return 0;
        };
        let prior: Vec<EpochId> = entry.offences.iter().map(|o| o.epoch).collect();
        let outcome = slash(
            entry.bonded_micro_sym,
            offence,
            &prior,
            epoch,
            &self.slashing,
        );
        entry.bonded_micro_sym = outcome.remaining_micro_sym;
        entry.slashed_micro_sym = entry
            .slashed_micro_sym
            .saturating_add(outcome.slashed_micro_sym);
        entry.offences.push(OffenceRecord {
            epoch,
            offence,
            proposal,
            slashed_micro_sym: outcome.slashed_micro_sym,
        });
        outcome.slashed_micro_sym
    }
}

impl MasterState {
    /// Genesis stakes (bonded on the ledger at genesis) enter the registry: once,
    /// before the first proposal.
    pub(crate) fn register_stakes(
        &mut self,
        stakes: &[(ActorId, StakeTier, u64)],
    ) -> Result<Vec<Event>, MasterError> {
        let g = &mut self.governance;
        if !g.proposals.is_empty() {
            return Err(gov(
                "genesis stakes are registered before the first proposal; \
                 later stakes join through governance",
            ));
        }
        let mut events = Vec::new();
        for (actor, tier, amount) in stakes {
            g.registry.register(actor, *tier, *amount)?;
            events.push(Event::StakeRegistered {
                actor: actor.clone(),
                bonded_micro_sym: *amount,
            });
        }
        Ok(events)
    }

    /// A producer's bonded `S_producer` enters the registry (any time; once).
    pub(crate) fn register_producer_stake(
        &mut self,
        actor: &ActorId,
        bonded_micro_sym: u64,
    ) -> Result<Vec<Event>, MasterError> {
        if !actor.as_str().starts_with("producer:") {
            return Err(gov(format!(
                "{actor}: only a data producer (producer:<subject>) registers a producer stake"
            )));
        }
        self.governance
            .registry
            .register(actor, StakeTier::Producer, bonded_micro_sym)?;
        Ok(vec![Event::StakeRegistered {
            actor: actor.clone(),
            bonded_micro_sym,
        }])
    }

    /// Checks what only the whole state can check about a new proposal, then files it.
    pub(crate) fn propose(
        &mut self,
        kind: &ProposalKind,
        by: u8,
        at_ms: u64,
        signature: &[u8],
    ) -> Result<Vec<Event>, MasterError> {
        match kind {
            ProposalKind::AdjudicateChallenge { challenge, verdict } => {
                let c = self
                    .challenges
                    .get(challenge)
                    .ok_or_else(|| gov(format!("challenge {challenge} does not exist")))?;
                if c.state != ChallengeState::Reviewing {
                    return Err(gov(format!(
                        "challenge {challenge} is {}: only a challenge under review \
                         (reviewing) is adjudicated",
                        c.state
                    )));
                }
                if let Verdict::Upheld { responsible, .. } = verdict {
                    if responsible == &c.challenger {
                        return Err(gov(format!(
                            "challenge {challenge}: the challenger {responsible} cannot be \
                             the responsible actor"
                        )));
                    }
                }
                let open = self.governance.proposals.values().any(|p| {
                    p.status == ProposalStatus::Voting
                        && matches!(&p.kind, ProposalKind::AdjudicateChallenge { challenge: o, .. } if o == challenge)
                });
                if open {
                    return Err(gov(format!(
                        "challenge {challenge} already has an adjudication being voted on"
                    )));
                }
            }
            ProposalKind::Slash { actor, reason, .. } => {
                let bonded = self
                    .governance
                    .registry
                    .actors
                    .get(actor)
                    .map_or(0, |a| a.bonded_micro_sym);
                if bonded == 0 {
                    return Err(gov(format!(
                        "{actor} has no bonded stake in the actor registry"
                    )));
                }
                if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
                    return Err(gov(format!(
                        "a slashing reason is 1..={MAX_REASON_BYTES} bytes, got {}",
                        reason.len()
                    )));
                }
            }
            ProposalKind::EnterpriseMembership {
                operator,
                stake_micro_sym,
                ..
            } => {
                if *stake_micro_sym == 0 {
                    return Err(gov("a membership stake must be positive"));
                }
                if self.governance.registry.actors.contains_key(operator) {
                    return Err(gov(format!("{operator} is already in the actor registry")));
                }
                let applying = self.governance.proposals.values().any(|p| {
                    p.status == ProposalStatus::Voting
                        && matches!(&p.kind, ProposalKind::EnterpriseMembership { operator: o, .. } if o == operator)
                });
                if applying {
                    return Err(gov(format!(
                        "{operator} already has a membership application being voted on"
                    )));
                }
            }
            ProposalKind::AttributePromotion { promotion } => {
                let id = ProposalId(self.governance.proposals.len() as u64);
                promotion
                    .changes(&self.semantic_registry()?, &id.to_string())
                    .map_err(|e| gov(e.to_string()))?;
            }
            ProposalKind::CloseEpoch | ProposalKind::PolicyChange { .. } => {}
        }
        self.governance.propose(kind, by, at_ms, signature)
    }

    /// A vote; when it approves an adjudication or a slashing, the verdict is
    /// enacted in the same replicated step.
    pub(crate) fn vote(
        &mut self,
        id: ProposalId,
        by: u8,
        approve: bool,
        at_ms: u64,
        signature: &[u8],
    ) -> Result<Vec<Event>, MasterError> {
        // An adjudication whose challenge was decided meanwhile (by the plane's own
        // replay) can no longer take effect: say so instead of a lifecycle error.
        if let Some(ProposalKind::AdjudicateChallenge { challenge, .. }) =
            self.governance.proposals.get(&id).map(|p| &p.kind)
        {
            let state = self.challenges.get(challenge).map(|c| c.state);
            if approve && state != Some(ChallengeState::Reviewing) {
                return Err(gov(format!(
                    "{id}: challenge {challenge} is no longer under review ({}); \
                     vote to reject the adjudication",
                    state.map_or("missing".to_owned(), |s| s.to_string())
                )));
            }
        }
        // A promotion that another enacted promotion made impossible meanwhile
        // (the same name taken, the local attribute promoted) cannot be approved.
        if let Some(ProposalKind::AttributePromotion { promotion }) =
            self.governance.proposals.get(&id).map(|p| &p.kind)
        {
            if approve {
                promotion
                    .changes(&self.semantic_registry()?, &id.to_string())
                    .map_err(|e| gov(format!("{id}: {e}; vote to reject it")))?;
            }
        }
        let mut events = self.governance.vote(id, by, approve, at_ms, signature)?;
        let approved = events
            .iter()
            .any(|e| matches!(e, Event::ProposalDecided { id: d, approved: true } if *d == id));
        if !approved {
            return Ok(events);
        }
        let kind = self
            .governance
            .proposals
            .get(&id)
            .map(|p| p.kind.clone())
            .ok_or_else(|| gov(format!("{id} does not exist")))?;
        match kind {
            ProposalKind::AdjudicateChallenge { challenge, verdict } => {
                events.extend(self.adjudicate(id, &challenge, &verdict)?);
            }
            ProposalKind::AttributePromotion { .. } => {
                // The registry is rebuilt from the enacted promotions
                // (`semantic_registry`): enacting is recording it, with the
                // version it creates.
                events.extend(self.governance.enact_now(id));
                let version = self.semantic_registry()?.semantic_version();
                events.push(Event::SemanticVersionEnacted {
                    proposal: id,
                    semantic_version: version,
                });
            }
            ProposalKind::Slash { actor, offence, .. } => {
                let epoch = self.governance.epoch;
                let amount = self.governance.registry.slash(&actor, offence, epoch, id);
                events.push(Event::StakeSlashed {
                    actor: actor.clone(),
                    amount_micro_sym: amount,
                    proposal: id,
                });
                if amount > 0 {
                    self.governance.queue_duties(
                        id,
                        vec![LedgerDuty::Slash {
                            actor,
                            amount_micro_sym: amount,
                        }],
                    );
                }
                events.extend(self.governance.enact_now(id));
            }
            _ => {}
        }
        Ok(events)
    }

    fn adjudicate(
        &mut self,
        id: ProposalId,
        challenge: &ChallengeId,
        verdict: &Verdict,
    ) -> Result<Vec<Event>, MasterError> {
        let hash = adjudication_hash(id, challenge, verdict)?;
        let mut events = Vec::new();
        match verdict {
            Verdict::Dismissed => {
                events.extend(self.challenge_step(
                    challenge,
                    ChallengeEvent::Dismiss,
                    Some(hash),
                    None,
                )?);
                events.extend(self.challenge_step(challenge, ChallengeEvent::Close, None, None)?);
            }
            Verdict::Upheld {
                responsible,
                offence,
            } => {
                events.extend(self.challenge_step(
                    challenge,
                    ChallengeEvent::Confirm,
                    Some(hash),
                    None,
                )?);
                events.extend(self.challenge_step(
                    challenge,
                    ChallengeEvent::Approve,
                    None,
                    None,
                )?);
                let epoch = self.governance.epoch;
                let slashed = self
                    .governance
                    .registry
                    .slash(responsible, *offence, epoch, id);
                let penalty = PenaltyRecord {
                    actor: responsible.clone(),
                    slashed,
                    offence: offence_name(*offence).to_owned(),
                };
                events.extend(self.challenge_step(
                    challenge,
                    ChallengeEvent::RecordPenalty,
                    None,
                    Some(&penalty),
                )?);
                events.push(Event::StakeSlashed {
                    actor: responsible.clone(),
                    amount_micro_sym: slashed,
                    proposal: id,
                });
                let task_id = self
                    .challenges
                    .get(challenge)
                    .map(|c| c.task_id.clone())
                    .ok_or_else(|| MasterError::UnknownChallenge(challenge.clone()))?;
                let mut duties = Vec::new();
                if slashed > 0 {
                    duties.push(LedgerDuty::Slash {
                        actor: responsible.clone(),
                        amount_micro_sym: slashed,
                    });
                }
                duties.push(LedgerDuty::ChargeRejection { task_id });
                self.governance.queue_duties(id, duties);
            }
        }
        events.extend(self.governance.enact_now(id));
        Ok(events)
    }

    /// The semantic registry in force: the built-in catalog with every enacted
    /// `attribute_promotion` applied in proposal order, one version each. Later
    /// admissions resolve against it; a task keeps the version of its admission.
    pub fn semantic_registry(&self) -> Result<SemanticRegistry, MasterError> {
        let mut registry = SemanticRegistry::try_catalog_v1()
            .map_err(|e| gov(format!("semantic catalog: {e}")))?;
        for p in self.governance.proposals.values() {
            if let (ProposalKind::AttributePromotion { promotion }, ProposalStatus::Enacted) =
                (&p.kind, p.status)
            {
                promotion
                    .enact(&mut registry, &p.id.to_string())
                    .map_err(|e| gov(format!("{}: {e}", p.id)))?;
            }
        }
        Ok(registry)
    }

    /// The leader carried out proposal `id`'s ledger duties: recorded once.
    pub(crate) fn ledger_duty_done(&mut self, id: ProposalId) -> Result<Vec<Event>, MasterError> {
        if self.governance.pending_duties.remove(&id).is_none() {
            return Err(gov(format!("{id} has no pending ledger duties")));
        }
        Ok(vec![Event::LedgerDutyDone { proposal: id }])
    }
}
