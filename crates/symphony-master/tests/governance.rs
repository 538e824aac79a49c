//! Random sequences of admissions, task progress (execution, settlement, payout),
//! proposals, votes, epoch closes and reward records: epochs are sealed once each
//! and in order, every payout is in exactly one epoch's payout set (the epoch its
//! `finalizing` was committed in), each closed epoch's rewards are recorded at most
//! once, a policy version only takes effect at a boundary, a subject's budget
//! (reserved at admission, committed at payout, replenished at each boundary) never
//! exceeds its capacity, a refused command changes nothing, and replaying the
//! accepted log reproduces the state root.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use symphony_core::budget::{BudgetAccount, BudgetOp, Epsilon};
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SettlementState, SliceState, TaskEvent, TaskState};
use symphony_master::*;

#[allow(dead_code)]
mod common;

#[derive(Clone, Debug)]
enum Op {
    Admit,
    Propose {
        by: u8,
        kind: u8,
    },
    Vote {
        id: u8,
        by: u8,
        approve: bool,
    },
    CloseByTime {
        late_ms: u64,
    },
    CloseByCapacity,
    /// Moves task number `task` (mod the admitted tasks) up to `steps` commands
    /// along its path to completion.
    Progress {
        task: u8,
        steps: u8,
    },
    /// Records rewards for the closed epoch `epoch` (mod the closed epochs).
    Rewards {
        epoch: u8,
        minted: u16,
    },
    /// Moves task number `task` toward a challenge under review: opens its
    /// window at `candidate_ready`, files a challenge, starts the review.
    Challenge {
        task: u8,
        steps: u8,
    },
    /// Proposes `kind` as master `by` and has the next master approve it.
    Pass {
        by: u8,
        kind: u8,
    },
    /// Records the ledger duties of proposal `id` done.
    LedgerDuty {
        id: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Admit),
        3 => (0..3u8, 0..6u8).prop_map(|(by, kind)| Op::Propose { by, kind }),
        4 => (0..8u8, 0..3u8, any::<bool>()).prop_map(|(id, by, approve)| Op::Vote { id, by, approve }),
        1 => (0..2_000u64).prop_map(|late_ms| Op::CloseByTime { late_ms }),
        1 => Just(Op::CloseByCapacity),
        4 => (any::<u8>(), 1..8u8).prop_map(|(task, steps)| Op::Progress { task, steps }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(epoch, minted)| Op::Rewards { epoch, minted }),
        2 => (any::<u8>(), 1..16u8).prop_map(|(task, steps)| Op::Challenge { task, steps }),
        2 => (0..3u8, 2..6u8).prop_map(|(by, kind)| Op::Pass { by, kind }),
        1 => (0..8u8).prop_map(|id| Op::LedgerDuty { id }),
    ]
}

fn keys() -> Vec<SigningKey> {
    (11..=13u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect()
}

/// The next command on task `t`'s path to completion (fee 700 of the 1000 locked).
fn next_step(state: &MasterState, t: &TaskId) -> Option<Command> {
    let rec = state.task(t)?;
    let advance = |event| Command::Advance {
        task_id: t.clone(),
        event,
        reason: None,
    };
    Some(match rec.state {
        TaskState::Accepted => advance(TaskEvent::BeginResolution),
        TaskState::Resolving => advance(TaskEvent::Dispatch),
        TaskState::Dispatched => {
            let missing = ["v1", "v2"]
                .into_iter()
                .map(common::vault)
                .find(|v| !rec.slices.contains_key(v));
            match (missing, &rec.aggregate) {
                (Some(vault_id), _) => Command::RecordSlice {
                    task_id: t.clone(),
                    vault_id,
                    record: common::slice(SliceState::Verified),
                },
                (None, None) => Command::RecordAggregate {
                    task_id: t.clone(),
                    record: AggregateRecord {
                        commitment: symphony_core::encoding::Digest([4; 32]),
                        eligible_count: 6,
                        delivered_count: 5,
                        result_hash: symphony_core::encoding::Digest([5; 32]),
                        enclave_kind: symphony_core::EnclaveKind::Software,
                    },
                },
                (None, Some(_)) => advance(TaskEvent::ExecutionFinished),
            }
        }
        TaskState::Verifying => advance(TaskEvent::VerificationAccepted),
        TaskState::AwaitingSettlement if state.challenge_window(t).is_some_and(|w| !w.closed) => {
            let w = state.challenge_window(t)?;
            Command::CloseChallengeWindow {
                task_id: t.clone(),
                at_ms: w.closes_at_ms,
            }
        }
        TaskState::AwaitingSettlement => {
            let next = match &rec.settlement {
                None => SettlementState::Collecting,
                Some(s) if s.state == SettlementState::Finalized => {
                    return Some(advance(TaskEvent::SettlementFinalized))
                }
                Some(s) => s.state.advance().ok()?,
            };
            let mut record =
                common::settlement(next, 700, &[("treasury", 100), ("actor:operator:v1", 600)]);
            record.epoch_id = rec.envelope.body().epoch_id;
            Command::RecordSettlement {
                task_id: t.clone(),
                record,
            }
        }
        _ => return None,
    })
}

/// The next command toward a challenge of `t` under review, if one applies.
fn challenge_step(state: &MasterState, t: &TaskId) -> Option<Command> {
    let rec = state.task(t)?;
    let id = ChallengeId::new(format!("c-{t}")).ok()?;
    let now = state.governance().epoch_opened_at_ms + 10;
    if let Some(c) = state.challenge(&id) {
        return (c.state == symphony_core::lifecycle::ChallengeState::Opened).then_some(
            Command::ChallengeStep {
                challenge_id: id,
                event: symphony_core::lifecycle::ChallengeEvent::StartReview,
                verdict_hash: None,
                penalty: None,
            },
        );
    }
    let ready = rec
        .settlement
        .as_ref()
        .is_some_and(|s| s.state == SettlementState::CandidateReady);
    if !ready || rec.state != TaskState::AwaitingSettlement {
        // Drive the task up to `candidate_ready` first.
        let past = rec
            .settlement
            .as_ref()
            .is_some_and(|s| s.state >= SettlementState::CandidateReady);
        return if past { None } else { next_step(state, t) };
    }
    Some(match state.challenge_window(t) {
        None => Command::OpenChallengeWindow {
            task_id: t.clone(),
            closes_at_ms: now + 100,
        },
        Some(w) => Command::FileChallenge {
            filing: ChallengeFiling {
                challenge_id: id,
                task_id: t.clone(),
                target: ChallengeTarget::Aggregation { round: 0 },
                challenger: ActorId::new("master-1").ok()?,
                evidence_hash: symphony_core::encoding::Digest([6; 32]),
                at_ms: w.closes_at_ms.saturating_sub(50),
            },
        },
    })
}

/// A promotion of local attribute `oat_milk_{n % 2}` of vault-0, one step up from
/// where the registry holds it; every third one names a single Vault (refused).
fn promotion(state: &MasterState, n: usize) -> symphony_semantic::AttributePromotion {
    use symphony_semantic::*;
    let local_name = AttributeName::new(format!("oat_milk_{}", n % 2)).unwrap();
    let local = LocalAttribute {
        name: local_name.clone(),
        vault: VaultId::new("vault-0").unwrap(),
        value_type: ValueType::Boolean,
        privacy_class: PrivacyClass::Personal,
        description: "Prefers oat milk.".into(),
    };
    let registry = state.semantic_registry().unwrap();
    let commerce = DomainId::new("commerce").unwrap();
    let target = if registry.local(&local_name).is_some() {
        let rule = DerivationRule::Boolean {
            sources: vec![AttributeName::new("purchase_category").unwrap()],
        };
        let vaults = if n.is_multiple_of(3) { 1 } else { 2 };
        PromotionTarget::Canonical {
            domain: commerce,
            directly_queryable: false,
            derivations: (0..vaults)
                .map(|v| (VaultId::new(format!("vault-{v}")).unwrap(), rule.clone()))
                .collect(),
        }
    } else {
        PromotionTarget::VaultScopedQuery {
            name: AttributeName::new(format!("oat_milk_buyer_{}", n % 2)).unwrap(),
            domain: commerce,
            rule: DerivationRule::Boolean {
                sources: vec![local_name],
            },
            granularity: Default::default(),
            value_type: ValueType::Boolean,
            description: "Bought oat milk.".into(),
        }
    };
    AttributePromotion { local, target }
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
        Op::Propose { by, kind } | Op::Pass { by, kind } => {
            // A registered actor, when there is one (slashing has something to cut).
            let registered = g
                .registry
                .actors
                .keys()
                .nth(n % g.registry.actors.len().max(1))
                .cloned()
                .unwrap_or_else(|| ActorId::new(format!("operator:vault-{}", n % 5)).unwrap());
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
                2 => ProposalKind::EnterpriseMembership {
                    vault: VaultId::new(format!("vault-{}", n % 5)).unwrap(),
                    operator: ActorId::new(format!("operator:vault-{}", n % 5)).unwrap(),
                    stake_micro_sym: STAKE,
                },
                3 => ProposalKind::Slash {
                    actor: registered.clone(),
                    offence: [
                        symphony_economics::Offence::Unavailability,
                        symphony_economics::Offence::InvalidResult,
                        symphony_economics::Offence::Equivocation,
                    ][n % 3],
                    reason: "property test".into(),
                },
                // Promotes local attribute `oat_milk_{n % 2}` of vault-0 one step
                // (vault-scoped first; canonical once it is local in the registry).
                5 => ProposalKind::AttributePromotion {
                    promotion: Box::new(promotion(state, n)),
                },
                // Adjudicates the first challenge under review (or a missing one).
                _ => ProposalKind::AdjudicateChallenge {
                    challenge: state
                        .challenges()
                        .find(|(_, c)| {
                            c.state == symphony_core::lifecycle::ChallengeState::Reviewing
                        })
                        .map(|(id, _)| id.clone())
                        .unwrap_or_else(|| ChallengeId::new("c-none").unwrap()),
                    verdict: if n.is_multiple_of(2) {
                        Verdict::Dismissed
                    } else {
                        Verdict::Upheld {
                            responsible: registered,
                            offence: symphony_economics::Offence::InvalidResult,
                        }
                    },
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
        Op::Progress { .. } | Op::Challenge { .. } => {
            unreachable!("progress and challenges are expanded by the test")
        }
        Op::LedgerDuty { id } => Command::RecordLedgerDuty {
            proposal: ProposalId(u64::from(*id)),
        },
        Op::Rewards { epoch, minted } => {
            let closed = g.history.len().max(1) as u64;
            let minted = u64::from(*minted);
            Command::RecordEpochRewards {
                epoch: EpochId(u64::from(*epoch) % closed),
                rewards: EpochRewards {
                    minted_micro_sym: minted,
                    recipients: vec![
                        (ActorId::new("master-0").unwrap(), minted / 2),
                        (ActorId::new("master-1").unwrap(), minted - minted / 2),
                    ],
                },
            }
        }
    }
}

/// The subject every test task reserves budget for (capacity 1.0, ε 0.1 a task,
/// replenished by 0.3 at each epoch boundary).
struct Budget {
    account: BudgetAccount,
    seen_epoch: EpochId,
}

impl Budget {
    fn new() -> Self {
        Budget {
            account: BudgetAccount::new(Epsilon::from_milli(1_000), EpochId::GENESIS),
            seen_epoch: EpochId::GENESIS,
        }
    }

    /// Follows the master state: reserve at admission (the Vault refuses what it
    /// cannot afford, so an admission is only attempted when it can), commit when
    /// the payout is scheduled, replenish at each boundary.
    fn follow(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        for e in events {
            let op = match e {
                Event::TaskAdmitted { task_id, .. } => BudgetOp::Reserve {
                    task: task_id.clone(),
                    amount: Epsilon::from_milli(100),
                },
                Event::PayoutScheduled { task_id, .. } => BudgetOp::Commit {
                    task: task_id.clone(),
                    actual: Epsilon::from_milli(100),
                },
                Event::EpochClosed { next, .. } => {
                    prop_assert!(*next > self.seen_epoch);
                    self.seen_epoch = *next;
                    BudgetOp::Replenish {
                        epoch: *next,
                        amount: Epsilon::from_milli(300),
                    }
                }
                _ => continue,
            };
            self.account
                .apply(&op)
                .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
            let used = self
                .account
                .committed()
                .checked_add(self.account.reserved());
            prop_assert!(
                used.is_some_and(|u| u <= self.account.capacity()),
                "budget above capacity"
            );
        }
        Ok(())
    }
}

/// Every task whose payout became final is in exactly one payout set (a sealed
/// epoch's or the open one), and no other task is.
fn payouts_exactly_once(state: &MasterState) -> Result<(), TestCaseError> {
    let g = state.governance();
    let mut seen: BTreeMap<TaskId, EpochId> = BTreeMap::new();
    for h in &g.history {
        let mut total = 0u64;
        for t in &h.payouts.tasks {
            prop_assert!(
                seen.insert(t.clone(), h.epoch).is_none(),
                "{t} paid in two sets"
            );
            total += 700;
        }
        prop_assert_eq!(h.payouts.total_micro_sym, total);
        prop_assert_eq!(h.payouts.recipients.values().sum::<u64>(), total);
    }
    for t in g.open_payouts.keys() {
        prop_assert!(
            seen.insert(t.clone(), g.epoch).is_none(),
            "{t} sealed and open"
        );
    }
    let final_payouts: BTreeSet<TaskId> = state
        .tasks()
        .filter(|r| {
            r.settlement
                .as_ref()
                .is_some_and(|s| s.state >= SettlementState::Finalizing)
        })
        .map(|r| r.envelope.body().task_id.clone())
        .collect();
    prop_assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), final_payouts);
    Ok(())
}

/// Stake registered by membership in the property test, µSYM.
const STAKE: u64 = 1_000_000;

/// The registry conserves each stake (bonded + slashed = registered, slashed = Σ
/// offences), each challenge is decided by at most one enacted adjudication and an
/// enacted one leaves it decided, and only enacted proposals owe ledger duties.
fn registry_and_verdicts_hold(state: &MasterState) -> Result<(), TestCaseError> {
    let g = state.governance();
    for (a, r) in &g.registry.actors {
        prop_assert_eq!(
            r.bonded_micro_sym + r.slashed_micro_sym,
            STAKE,
            "{} stake not conserved",
            a
        );
        prop_assert_eq!(
            r.offences.iter().map(|o| o.slashed_micro_sym).sum::<u64>(),
            r.slashed_micro_sym
        );
    }
    let mut decided: BTreeSet<ChallengeId> = BTreeSet::new();
    for p in g.proposals.values() {
        if let ProposalKind::AdjudicateChallenge { challenge, verdict } = &p.kind {
            if p.status == ProposalStatus::Enacted {
                prop_assert!(
                    decided.insert(challenge.clone()),
                    "{} adjudicated twice",
                    challenge
                );
                let c = state.challenge(challenge).map(|c| c.state);
                let want = match verdict {
                    Verdict::Dismissed => {
                        symphony_core::lifecycle::ChallengeState::ClosedWithoutPenalty
                    }
                    Verdict::Upheld { .. } => {
                        symphony_core::lifecycle::ChallengeState::PenaltyRecorded
                    }
                };
                prop_assert_eq!(c, Some(want));
            }
        }
    }
    for id in g.pending_duties.keys() {
        prop_assert_eq!(g.proposals[id].status, ProposalStatus::Enacted);
    }
    Ok(())
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
        let mut budget = Budget::new();
        let mut rewarded: BTreeSet<EpochId> = BTreeSet::new();
        let mut admitted: Vec<TaskId> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let commands = match op {
                Op::Progress { task, steps } if !admitted.is_empty() => {
                    let t = &admitted[usize::from(*task) % admitted.len()];
                    vec![Some(t.clone()); usize::from(*steps)]
                }
                Op::Progress { .. } => continue,
                Op::Challenge { task, steps } if !admitted.is_empty() => {
                    let t = &admitted[usize::from(*task) % admitted.len()];
                    vec![Some(t.clone()); usize::from(*steps)]
                }
                Op::Challenge { .. } => continue,
                Op::Pass { .. } => vec![None, None],
                // Admission is attempted only when the subject can afford it (the
                // Vault's reservation precedes the envelope).
                Op::Admit if !budget.account.can_reserve(Epsilon::from_milli(100)) => continue,
                _ => vec![None],
            };
            for (k, task) in commands.into_iter().enumerate() {
            let before = state.state_root().unwrap();
            let policy_before = state.governance().policy_version;
            let epoch_before = state.governance().epoch;
            let step = match op {
                Op::Challenge { .. } => challenge_step,
                _ => next_step,
            };
            let c = match &task {
                Some(t) => match step(&state, t) {
                    Some(c) => c,
                    None => break,
                },
                None => match (op, k) {
                    // The second command of a pass: the next master approves the
                    // proposal just filed.
                    (Op::Pass { by, .. }, 1) => command(
                        &state,
                        &keys,
                        &Op::Vote {
                            id: state.governance().proposals.len().saturating_sub(1) as u8,
                            by: (by + 1) % 3,
                            approve: true,
                        },
                        n,
                    ),
                    _ => command(&state, &keys, op, n),
                },
            };
            match state.apply(&c) {
                Ok(events) => {
                    budget.follow(&events)?;
                    for e in &events {
                        match e {
                            Event::TaskAdmitted { task_id, .. } => admitted.push(task_id.clone()),
                            Event::EpochRewardsRecorded { epoch, .. } => {
                                prop_assert!(rewarded.insert(*epoch), "rewards of {} recorded twice", epoch);
                            }
                            _ => {}
                        }
                    }
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
            payouts_exactly_once(&state)?;
            registry_and_verdicts_hold(&state)?;
            // The semantic registry is the catalog plus one version per enacted
            // promotion, and it builds.
            let promoted = g.proposals.values().filter(|p| {
                p.status == ProposalStatus::Enacted
                    && matches!(p.kind, ProposalKind::AttributePromotion { .. })
            }).count() as u32;
            let catalog = symphony_semantic::SemanticRegistry::catalog_v1().semantic_version().0;
            prop_assert_eq!(state.semantic_registry().unwrap().semantic_version().0, catalog + promoted);
            }
        }
        let mut replay = MasterState::new();
        for c in &log {
            replay.apply(c).unwrap();
        }
        prop_assert_eq!(replay.state_root().unwrap(), state.state_root().unwrap());
    }
}

fn signed_propose(keys: &[SigningKey], kind: ProposalKind, by: u8) -> Command {
    let signature = keys[usize::from(by)]
        .sign(&proposal_message(&kind, 10).unwrap().0)
        .to_bytes()
        .to_vec();
    Command::Propose {
        kind,
        by,
        at_ms: 10,
        signature,
    }
}

fn signed_vote(keys: &[SigningKey], id: u64, by: u8, approve: bool) -> Command {
    let proposal = ProposalId(id);
    let signature = keys[usize::from(by)]
        .sign(&vote_message(proposal, approve).unwrap().0)
        .to_bytes()
        .to_vec();
    Command::Vote {
        proposal,
        by,
        approve,
        at_ms: 10,
        signature,
    }
}

/// Two promotions of the same local attribute race: the first enacted makes the
/// second impossible, and its approval is refused by name (vote to reject), with
/// nothing changed; a rejected promotion leaves the registry version alone.
#[test]
fn a_promotion_overtaken_by_another_is_refused_at_approval() {
    let keys = keys();
    let mut state = MasterState::new();
    state
        .apply(&Command::ConfigureGovernance {
            master_keys: keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
            epoch_length_ms: 1_000,
            max_tasks_per_epoch: None,
        })
        .unwrap();
    let catalog = state.semantic_registry().unwrap().semantic_version();
    let p = |n: usize| ProposalKind::AttributePromotion {
        promotion: Box::new(promotion(&state, n)),
    };
    // Proposals 0 and 1: the same vault-scoped promotion (n = 0 and n = 2).
    let (a, b) = (p(0), p(2));
    state.apply(&signed_propose(&keys, a, 0)).unwrap();
    state.apply(&signed_propose(&keys, b, 1)).unwrap();
    // Proposal 2: rejected by two masters.
    let c = ProposalKind::AttributePromotion {
        promotion: Box::new(promotion(&state, 1)),
    };
    state.apply(&signed_propose(&keys, c, 2)).unwrap();
    state.apply(&signed_vote(&keys, 2, 0, false)).unwrap();
    state.apply(&signed_vote(&keys, 2, 1, false)).unwrap();
    assert_eq!(
        state.semantic_registry().unwrap().semantic_version(),
        catalog
    );

    let events = state.apply(&signed_vote(&keys, 0, 1, true)).unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::SemanticVersionEnacted { semantic_version, .. } if semantic_version.0 == catalog.0 + 1
    )));
    let root = state.state_root().unwrap();
    let err = state.apply(&signed_vote(&keys, 1, 0, true)).unwrap_err();
    assert!(
        err.to_string().contains("proposal-1") && err.to_string().contains("vote to reject it"),
        "{err}"
    );
    assert_eq!(state.state_root().unwrap(), root);
    // Rejecting it is fine; the registry stays one version up.
    state.apply(&signed_vote(&keys, 1, 0, false)).unwrap();
    state.apply(&signed_vote(&keys, 1, 2, false)).unwrap();
    assert_eq!(
        state.semantic_registry().unwrap().semantic_version().0,
        catalog.0 + 1
    );
}
