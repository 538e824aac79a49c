//! The Governance Service's part of the replicated master state (seed 002,
//! "Governance", "Epoch", "Policy Version"): the current epoch and when it opened,
//! the active policy version, the epoch close triggers, proposals with 2-of-3 votes
//! signed by the master keys, the approved enterprise members and the history of
//! closed epochs.
//!
//! * **Epoch close** ([`CloseTrigger`]): by time (the epoch length of the active
//!   policy has passed; the clock is the leader's injected time), by capacity (the
//!   policy's bound on tasks admitted per epoch is reached) or by an approved
//!   `close_epoch` proposal. Closing is one replicated step: the epoch is sealed in
//!   the history, the next opens, and a policy version approved during the closed
//!   epoch activates — so a task keeps the policy of its admission.
//!   [`Event::EpochClosed`] is the event each Vault applies once (replenishment,
//!   idempotent by epoch) and settlement groups payouts by.
//! * **Proposals**: submitted by a master (its signature is its approval), voted by
//!   the others; two approvals approve, two rejections reject. A `close_epoch`
//!   proposal closes the epoch when approved; a `policy_change` waits for the epoch
//!   boundary; an `enterprise_membership` admits the Vault at once.
//!
//! Admission reads the epoch and policy version from here (never a literal); the
//! state machine refuses an envelope naming another epoch or policy version.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::ids::{ActorId, ChallengeId, EpochId, PolicyVersion, TaskId, VaultId};
use symphony_economics::{Offence, PolicyParams, StakeTier};
use symphony_semantic::AttributePromotion;

use crate::actors::{ActorRegistry, LedgerDuty, Verdict};
use crate::{Event, MasterError};

/// The epoch length at genesis when none is configured (policy v1: one hour).
pub const DEFAULT_EPOCH_LENGTH_MS: u64 = 3_600_000;

/// A proposal's id (its position in the log of proposals).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ProposalId(pub u64);

impl std::fmt::Display for ProposalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal-{}", self.0)
    }
}

/// What a proposal asks for. Externally tagged (`"close_epoch"`,
/// `{"policy_change": {…}}`): the replicated log and snapshots are BCS, which
/// cannot decode internally or adjacently tagged enums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Close the current epoch now.
    CloseEpoch,
    /// A new policy version (the next number), active from the epoch after the
    /// approval; every master builds its policy registry from these.
    PolicyChange {
        /// The new version: the active one + 1.
        version: PolicyVersion,
        /// Every parameter of the version (validated when proposed).
        params: Box<PolicyParams>,
        /// Tasks admitted per epoch before the capacity trigger closes it.
        max_tasks_per_epoch: Option<u64>,
    },
    /// An enterprise joins with its Vault and stake.
    EnterpriseMembership {
        /// The Vault.
        vault: VaultId,
        /// Its operator.
        operator: ActorId,
        /// Stake, µSYM.
        stake_micro_sym: u64,
    },
    /// The verdict on a challenge under review (see `actors.rs`).
    #[serde(rename = "challenge_adjudication")]
    AdjudicateChallenge {
        /// The challenge.
        challenge: ChallengeId,
        /// Upheld (slash the responsible actor, reject the task) or dismissed.
        verdict: Verdict,
    },
    /// Slash a registered actor's stake by the graduated table.
    #[serde(rename = "slashing")]
    Slash {
        /// The actor.
        actor: ActorId,
        /// The offence (its severity and the actor's repeats fix the fraction).
        offence: Offence,
        /// Why, for the record and the ledger (1..=256 bytes).
        reason: String,
    },
    /// Promote a local attribute one step (local → vault-scoped query attribute
    /// → canonical; `symphony_semantic::promotion`): enacted on approval as one
    /// semantic registry version, which later admissions resolve against.
    AttributePromotion {
        /// What is promoted, where to, with the cross-Vault validation.
        promotion: Box<AttributePromotion>,
    },
}

impl ProposalKind {
    /// The protocol name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProposalKind::CloseEpoch => "close_epoch",
            ProposalKind::PolicyChange { .. } => "policy_change",
            ProposalKind::EnterpriseMembership { .. } => "enterprise_membership",
            ProposalKind::AdjudicateChallenge { .. } => "challenge_adjudication",
            ProposalKind::Slash { .. } => "slashing",
            ProposalKind::AttributePromotion { .. } => "attribute_promotion",
        }
    }
}

/// Where a proposal is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Collecting votes.
    Voting,
    /// Approved by 2 of 3; waiting for its effect (a policy change: the boundary).
    Approved,
    /// Rejected by 2 of 3.
    Rejected,
    /// In effect.
    Enacted,
}

/// A proposal and its votes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Id.
    pub id: ProposalId,
    /// What it asks for.
    pub kind: ProposalKind,
    /// The proposing master (index in the master keys).
    pub proposed_by: u8,
    /// The epoch it was submitted in.
    pub proposed_in: EpochId,
    /// When, ms.
    pub at_ms: u64,
    /// Master index → approve.
    pub votes: BTreeMap<u8, bool>,
    /// Lifecycle.
    pub status: ProposalStatus,
    /// The epoch its effect began in.
    pub enacted_in: Option<EpochId>,
}

/// Why an epoch closed (externally tagged for BCS: `"time"`, `"capacity"`,
/// `{"proposal": 3}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseTrigger {
    /// The active policy's epoch length has passed.
    Time,
    /// The policy's bound on tasks admitted per epoch is reached.
    Capacity,
    /// An approved `close_epoch` proposal.
    Proposal(ProposalId),
}

impl std::fmt::Display for CloseTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseTrigger::Time => f.write_str("time"),
            CloseTrigger::Capacity => f.write_str("capacity"),
            CloseTrigger::Proposal(p) => write!(f, "{p}"),
        }
    }
}

/// A settlement whose payout became final in the open epoch (its `finalizing`
/// certificate authorizes the payout): an entry of the epoch's payout set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledPayout {
    /// The epoch the task was dispatched in (its pricing and policy epoch).
    pub dispatch_epoch: EpochId,
    /// The fee paid out of escrow, µSYM.
    pub fee_total_micro_sym: u64,
    /// Recipient → amount, µSYM (sums to the fee).
    pub fee_shares: BTreeMap<String, u64>,
}

/// The sealed payout set of a closed epoch: every settlement whose payout became
/// final while the epoch was open, committed to by a hash over its
/// `(recipient, amount)` totals and its task ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPayouts {
    /// The settled tasks, sorted.
    pub tasks: Vec<TaskId>,
    /// Σ fees, µSYM.
    pub total_micro_sym: u64,
    /// Recipient → Σ amount over the set, µSYM.
    pub recipients: BTreeMap<String, u64>,
    /// `content_hash("scp/epoch-payouts/v1", (epoch, tasks, recipients))`.
    pub commitment: Digest,
}

/// The node operation rewards minted for a closed epoch by the inflation
/// schedule (recorded once per epoch, after the ledger minted and paid them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRewards {
    /// Minted, µSYM.
    pub minted_micro_sym: u64,
    /// Node actor → reward, µSYM (sums to `minted_micro_sym`).
    pub recipients: Vec<(ActorId, u64)>,
}

/// A closed epoch (sealed once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: EpochId,
    /// The policy version it ran under.
    pub policy_version: PolicyVersion,
    /// Opened at, ms.
    pub opened_at_ms: u64,
    /// Closed at, ms.
    pub closed_at_ms: u64,
    /// Why.
    pub trigger: CloseTrigger,
    /// Tasks admitted in it.
    pub tasks_admitted: u64,
    /// Its payout set, sealed at the close.
    pub payouts: SealedPayouts,
    /// Node operation rewards minted for it (`None` until recorded, then never
    /// changed).
    pub rewards: Option<EpochRewards>,
}

/// An enterprise admitted by governance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its operator.
    pub operator: ActorId,
    /// Stake, µSYM.
    pub stake_micro_sym: u64,
    /// Admitted in.
    pub since: EpochId,
}

/// Current epoch, active policy version, proposals, members, epoch history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceState {
    /// The epoch tasks are admitted in now.
    pub epoch: EpochId,
    /// The policy version tasks are admitted under now.
    pub policy_version: PolicyVersion,
    /// When the current epoch opened, ms (0 at genesis).
    pub epoch_opened_at_ms: u64,
    /// Epoch length of the active policy, ms.
    pub epoch_length_ms: u64,
    /// Tasks admitted per epoch before the capacity trigger closes it.
    pub max_tasks_per_epoch: Option<u64>,
    /// Tasks admitted in the current epoch.
    pub tasks_in_epoch: u64,
    /// The masters' ed25519 keys (index = master number); set once at genesis.
    pub master_keys: Vec<[u8; 32]>,
    /// Every proposal.
    pub proposals: BTreeMap<ProposalId, Proposal>,
    /// Enterprises admitted by governance.
    pub members: BTreeMap<VaultId, Member>,
    /// Closed epochs, oldest first.
    pub history: Vec<EpochRecord>,
    /// The payout set of the open epoch, by task (sealed into the history at the
    /// close).
    pub open_payouts: BTreeMap<TaskId, ScheduledPayout>,
    /// The actor registry: registered stakes, offences, the slashing table.
    pub registry: ActorRegistry,
    /// Ledger moves enacted proposals still owe, by proposal (removed once done).
    pub pending_duties: BTreeMap<ProposalId, Vec<LedgerDuty>>,
}

impl Default for GovernanceState {
    fn default() -> Self {
        GovernanceState::genesis()
    }
}

/// The message a master signs to propose `kind` at `at_ms`.
pub fn proposal_message(kind: &ProposalKind, at_ms: u64) -> Result<Digest, MasterError> {
    content_hash("scp/gov/propose/v1", &(kind, at_ms))
        .map_err(|e| MasterError::Governance(format!("proposal encoding: {e}")))
}

/// The message a master signs to vote on `id`.
pub fn vote_message(id: ProposalId, approve: bool) -> Result<Digest, MasterError> {
    content_hash("scp/gov/vote/v1", &(id.0, approve))
        .map_err(|e| MasterError::Governance(format!("vote encoding: {e}")))
}

fn gov(msg: impl Into<String>) -> MasterError {
    MasterError::Governance(msg.into())
}

impl GovernanceState {
    /// The state at genesis: the first epoch under the genesis policy version.
    pub fn genesis() -> Self {
        GovernanceState {
            epoch: EpochId::GENESIS,
            policy_version: PolicyVersion::GENESIS,
            epoch_opened_at_ms: 0,
            epoch_length_ms: DEFAULT_EPOCH_LENGTH_MS,
            max_tasks_per_epoch: None,
            tasks_in_epoch: 0,
            master_keys: Vec::new(),
            proposals: BTreeMap::new(),
            members: BTreeMap::new(),
            history: Vec::new(),
            open_payouts: BTreeMap::new(),
            registry: ActorRegistry::default(),
            pending_duties: BTreeMap::new(),
        }
    }

    /// Configuration: the master keys, the epoch length and the capacity bound of
    /// the genesis policy. Accepted once (before the first proposal).
    pub(crate) fn configure(
        &mut self,
        master_keys: &[[u8; 32]],
        epoch_length_ms: u64,
        max_tasks_per_epoch: Option<u64>,
    ) -> Result<Vec<Event>, MasterError> {
        if !self.master_keys.is_empty() {
            return Err(gov("governance is configured once"));
        }
        if master_keys.len() != 3 {
            return Err(gov(format!(
                "governance needs 3 master keys, got {}",
                master_keys.len()
            )));
        }
        for (i, k) in master_keys.iter().enumerate() {
            VerifyingKey::from_bytes(k)
                .map_err(|e| gov(format!("master key {i} is not an ed25519 key: {e}")))?;
        }
        if epoch_length_ms == 0 || max_tasks_per_epoch == Some(0) {
            return Err(gov("epoch length and capacity must be positive"));
        }
        self.master_keys = master_keys.to_vec();
        self.epoch_length_ms = epoch_length_ms;
        self.max_tasks_per_epoch = max_tasks_per_epoch;
        Ok(vec![Event::GovernanceConfigured {
            epoch_length_ms,
            max_tasks_per_epoch,
        }])
    }

    fn check_signature(&self, master: u8, msg: &Digest, sig: &[u8]) -> Result<(), MasterError> {
        let key = self
            .master_keys
            .get(usize::from(master))
            .ok_or_else(|| gov(format!("master-{master} is not a master of this network")))?;
        let key = VerifyingKey::from_bytes(key)
            .map_err(|e| gov(format!("master-{master}'s key: {e}")))?;
        let sig = Signature::from_slice(sig)
            .map_err(|_| gov(format!("master-{master}'s signature is malformed")))?;
        key.verify_strict(&msg.0, &sig)
            .map_err(|_| gov(format!("master-{master}'s signature does not verify")))
    }

    /// A master proposes `kind` (its signature counts as its approval).
    pub(crate) fn propose(
        &mut self,
        kind: &ProposalKind,
        master: u8,
        at_ms: u64,
        signature: &[u8],
    ) -> Result<Vec<Event>, MasterError> {
        self.check_signature(master, &proposal_message(kind, at_ms)?, signature)?;
        match kind {
            ProposalKind::CloseEpoch => {}
            ProposalKind::PolicyChange {
                version,
                params,
                max_tasks_per_epoch,
            } => {
                if version.0 != self.policy_version.0 + 1 {
                    return Err(gov(format!(
                        "{version} is not the next version after the active {}",
                        self.policy_version
                    )));
                }
                params
                    .validate()
                    .map_err(|e| gov(format!("{version}: {e}")))?;
                if *max_tasks_per_epoch == Some(0) {
                    return Err(gov("epoch capacity must be positive"));
                }
                let open = self.proposals.values().any(|p| {
                    matches!(p.kind, ProposalKind::PolicyChange { .. })
                        && matches!(p.status, ProposalStatus::Voting | ProposalStatus::Approved)
                });
                if open {
                    return Err(gov(
                        "another policy change is being voted on or waits for the epoch boundary",
                    ));
                }
            }
            ProposalKind::EnterpriseMembership { vault, .. } => {
                if self.members.contains_key(vault) {
                    return Err(gov(format!("{vault} is already a member")));
                }
            }
            // Checked against the whole state by `MasterState::propose`.
            ProposalKind::AdjudicateChallenge { .. }
            | ProposalKind::Slash { .. }
            | ProposalKind::AttributePromotion { .. } => {}
        }
        let id = ProposalId(self.proposals.len() as u64);
        self.proposals.insert(
            id,
            Proposal {
                id,
                kind: kind.clone(),
                proposed_by: master,
                proposed_in: self.epoch,
                at_ms,
                votes: [(master, true)].into(),
                status: ProposalStatus::Voting,
                enacted_in: None,
            },
        );
        Ok(vec![Event::ProposalSubmitted {
            id,
            kind: kind.as_str().to_string(),
            by: master,
        }])
    }

    /// A master votes; the second approval (or rejection) decides.
    pub(crate) fn vote(
        &mut self,
        id: ProposalId,
        master: u8,
        approve: bool,
        at_ms: u64,
        signature: &[u8],
    ) -> Result<Vec<Event>, MasterError> {
        self.check_signature(master, &vote_message(id, approve)?, signature)?;
        let p = self
            .proposals
            .get_mut(&id)
            .ok_or_else(|| gov(format!("{id} does not exist")))?;
        if p.status != ProposalStatus::Voting {
            return Err(gov(format!("{id} is already decided ({:?})", p.status)));
        }
        if p.votes.contains_key(&master) {
            return Err(gov(format!("master-{master} already voted on {id}")));
        }
        p.votes.insert(master, approve);
        let mut events = vec![Event::ProposalVoted {
            id,
            by: master,
            approve,
        }];
        let yes = p.votes.values().filter(|v| **v).count();
        let no = p.votes.len() - yes;
        if no >= 2 {
            p.status = ProposalStatus::Rejected;
            events.push(Event::ProposalDecided {
                id,
                approved: false,
            });
        } else if yes >= 2 {
            p.status = ProposalStatus::Approved;
            events.push(Event::ProposalDecided { id, approved: true });
            let kind = p.kind.clone();
            match kind {
                ProposalKind::CloseEpoch => {
                    events.extend(self.close(CloseTrigger::Proposal(id), at_ms)?);
                }
                ProposalKind::EnterpriseMembership {
                    vault,
                    operator,
                    stake_micro_sym,
                } => {
                    // The operator's stake enters the registry and is bonded on
                    // the ledger (a leader duty); a rejected application bonds
                    // nothing.
                    self.registry
                        .register(&operator, StakeTier::Enterprise, stake_micro_sym)?;
                    self.queue_duties(
                        id,
                        vec![LedgerDuty::Bond {
                            actor: operator.clone(),
                            tier: StakeTier::Enterprise,
                            amount_micro_sym: stake_micro_sym,
                        }],
                    );
                    self.members.insert(
                        vault.clone(),
                        Member {
                            operator,
                            stake_micro_sym,
                            since: self.epoch,
                        },
                    );
                    events.extend(self.enact_now(id));
                }
                ProposalKind::PolicyChange { .. } => {} // at the epoch boundary
                // Enacted by `MasterState::vote`, which sees the challenges and
                // the semantic registry.
                ProposalKind::AdjudicateChallenge { .. }
                | ProposalKind::Slash { .. }
                | ProposalKind::AttributePromotion { .. } => {}
            }
        }
        Ok(events)
    }

    /// Enacts `id` in the current epoch and says so.
    pub(crate) fn enact_now(&mut self, id: ProposalId) -> Vec<Event> {
        self.enact(id);
        vec![Event::ProposalEnacted {
            id,
            epoch: self.epoch,
        }]
    }

    /// Records what `id` still has to move on the ledger.
    pub(crate) fn queue_duties(&mut self, id: ProposalId, duties: Vec<LedgerDuty>) {
        if !duties.is_empty() {
            self.pending_duties.insert(id, duties);
        }
    }

    fn enact(&mut self, id: ProposalId) {
        if let Some(p) = self.proposals.get_mut(&id) {
            p.status = ProposalStatus::Enacted;
            p.enacted_in = Some(self.epoch);
        }
    }

    /// Closes the current epoch by `trigger` at `at_ms` (refused unless the trigger
    /// holds) and opens the next, activating an approved policy change.
    pub(crate) fn close(
        &mut self,
        trigger: CloseTrigger,
        at_ms: u64,
    ) -> Result<Vec<Event>, MasterError> {
        if at_ms < self.epoch_opened_at_ms {
            return Err(gov(format!(
                "{} cannot close at {at_ms} ms, before it opened ({} ms)",
                self.epoch, self.epoch_opened_at_ms
            )));
        }
        match trigger {
            CloseTrigger::Time => {
                let due = self.epoch_opened_at_ms.saturating_add(self.epoch_length_ms);
                if at_ms < due {
                    return Err(gov(format!(
                        "{} closes by time at {due} ms, not {at_ms} ms",
                        self.epoch
                    )));
                }
            }
            CloseTrigger::Capacity => match self.max_tasks_per_epoch {
                Some(max) if self.tasks_in_epoch >= max => {}
                Some(max) => {
                    return Err(gov(format!(
                        "{} has {} of {max} tasks: not at capacity",
                        self.epoch, self.tasks_in_epoch
                    )))
                }
                None => return Err(gov("the active policy sets no epoch capacity")),
            },
            CloseTrigger::Proposal(id) => {
                let approved = self.proposals.get(&id).is_some_and(|p| {
                    p.kind == ProposalKind::CloseEpoch && p.status == ProposalStatus::Approved
                });
                if !approved {
                    return Err(gov(format!("{id} is not an approved close_epoch proposal")));
                }
                self.enact(id);
            }
        }
        let closed = self.epoch;
        let payouts = self.seal_payouts(closed)?;
        let sealed = payouts.tasks.len() as u64;
        let payout_commitment = payouts.commitment;
        self.history.push(EpochRecord {
            epoch: closed,
            policy_version: self.policy_version,
            opened_at_ms: self.epoch_opened_at_ms,
            closed_at_ms: at_ms,
            trigger,
            tasks_admitted: self.tasks_in_epoch,
            payouts,
            rewards: None,
        });
        self.epoch = EpochId(closed.0 + 1);
        self.epoch_opened_at_ms = at_ms;
        self.tasks_in_epoch = 0;
        let mut events = vec![
            Event::EpochPayoutsSealed {
                epoch: closed,
                payouts: sealed,
                commitment: payout_commitment,
            },
            Event::EpochClosed {
                epoch: closed,
                next: self.epoch,
                at_ms,
                trigger,
            },
        ];
        let pending = self.proposals.values().find_map(|p| match &p.kind {
            ProposalKind::PolicyChange {
                version,
                params,
                max_tasks_per_epoch,
            } if p.status == ProposalStatus::Approved => Some((
                p.id,
                *version,
                params.epochs.epoch_length_ms,
                *max_tasks_per_epoch,
                params.slashing.clone(),
            )),
            _ => None,
        });
        if let Some((id, version, length, max, slashing)) = pending {
            self.registry.slashing = slashing;
            self.policy_version = version;
            self.epoch_length_ms = length;
            self.max_tasks_per_epoch = max;
            self.enact(id);
            events.push(Event::ProposalEnacted {
                id,
                epoch: self.epoch,
            });
        }
        Ok(events)
    }

    /// Seals the open payout set as `epoch`'s (and empties it).
    fn seal_payouts(&mut self, epoch: EpochId) -> Result<SealedPayouts, MasterError> {
        let open = std::mem::take(&mut self.open_payouts);
        let mut sealed = SealedPayouts::default();
        for (task, p) in open {
            sealed.total_micro_sym = sealed
                .total_micro_sym
                .checked_add(p.fee_total_micro_sym)
                .ok_or_else(|| gov(format!("{epoch}: payout total overflows")))?;
            for (who, amount) in p.fee_shares {
                let slot = sealed.recipients.entry(who).or_default();
                *slot = slot
                    .checked_add(amount)
                    .ok_or_else(|| gov(format!("{epoch}: payout to a recipient overflows")))?;
            }
            sealed.tasks.push(task);
        }
        sealed.commitment = content_hash(
            "scp/epoch-payouts/v1",
            &(epoch, &sealed.tasks, &sealed.recipients),
        )
        .map_err(|e| gov(format!("payout set encoding: {e}")))?;
        Ok(sealed)
    }

    /// The payout of `task_id` became final (`finalizing` committed): it joins the
    /// open epoch's payout set. Returns the epoch the payout belongs to.
    pub(crate) fn schedule_payout(
        &mut self,
        task_id: &TaskId,
        payout: ScheduledPayout,
    ) -> Result<EpochId, MasterError> {
        let sealed_before = self
            .history
            .iter()
            .any(|h| h.payouts.tasks.binary_search(task_id).is_ok());
        if sealed_before || self.open_payouts.contains_key(task_id) {
            return Err(MasterError::Refused {
                task_id: task_id.clone(),
                reason: "its payout is already in an epoch's payout set".into(),
            });
        }
        self.open_payouts.insert(task_id.clone(), payout);
        Ok(self.epoch)
    }

    /// Records the node operation rewards minted for the closed `epoch` (once).
    pub(crate) fn record_rewards(
        &mut self,
        epoch: EpochId,
        rewards: &EpochRewards,
    ) -> Result<Vec<Event>, MasterError> {
        let sum = rewards
            .recipients
            .iter()
            .try_fold(0u64, |acc, (_, a)| acc.checked_add(*a));
        if sum != Some(rewards.minted_micro_sym) {
            return Err(gov(format!(
                "{epoch}: node rewards sum to {sum:?}, not the {} minted",
                rewards.minted_micro_sym
            )));
        }
        let rec = self
            .history
            .iter_mut()
            .find(|h| h.epoch == epoch)
            .ok_or_else(|| gov(format!("{epoch} is not closed: no rewards yet")))?;
        if rec.rewards.is_some() {
            return Err(gov(format!("{epoch}'s rewards were already recorded")));
        }
        rec.rewards = Some(rewards.clone());
        Ok(vec![Event::EpochRewardsRecorded {
            epoch,
            minted_micro_sym: rewards.minted_micro_sym,
        }])
    }

    /// A task was admitted in the current epoch.
    pub(crate) fn count_admission(&mut self) {
        self.tasks_in_epoch += 1;
    }

    /// An envelope is admitted only in the current epoch under the active policy,
    /// and not beyond the epoch's capacity.
    pub(crate) fn check_admission(
        &self,
        task_id: &TaskId,
        epoch: EpochId,
        policy: PolicyVersion,
    ) -> Result<(), MasterError> {
        if epoch != self.epoch {
            return Err(MasterError::Refused {
                task_id: task_id.clone(),
                reason: format!(
                    "envelope names {epoch}, but admission is in {} now",
                    self.epoch
                ),
            });
        }
        if policy != self.policy_version {
            return Err(MasterError::Refused {
                task_id: task_id.clone(),
                reason: format!(
                    "envelope names {policy}, but {} is active",
                    self.policy_version
                ),
            });
        }
        if let Some(max) = self.max_tasks_per_epoch {
            if self.tasks_in_epoch >= max {
                return Err(MasterError::Refused {
                    task_id: task_id.clone(),
                    reason: format!(
                        "{} is at its capacity of {max} tasks; admission resumes when it closes",
                        self.epoch
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn keys() -> Vec<SigningKey> {
        (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect()
    }

    fn configured(keys: &[SigningKey], max: Option<u64>) -> GovernanceState {
        let mut g = GovernanceState::genesis();
        let pks: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        g.configure(&pks, 1_000, max).unwrap();
        g
    }

    fn propose(
        g: &mut GovernanceState,
        k: &[SigningKey],
        by: u8,
        kind: ProposalKind,
        at: u64,
    ) -> Result<Vec<Event>, MasterError> {
        let sig = k[usize::from(by)].sign(&proposal_message(&kind, at).unwrap().0);
        g.propose(&kind, by, at, &sig.to_bytes())
    }

    fn vote(
        g: &mut GovernanceState,
        k: &[SigningKey],
        id: u64,
        by: u8,
        yes: bool,
        at: u64,
    ) -> Result<Vec<Event>, MasterError> {
        let sig = k[usize::from(by)].sign(&vote_message(ProposalId(id), yes).unwrap().0);
        g.vote(ProposalId(id), by, yes, at, &sig.to_bytes())
    }

    #[test]
    fn admission_outside_the_current_epoch_or_policy_is_refused() {
        let g = GovernanceState::genesis();
        let t = TaskId::new("t-1").unwrap();
        assert!(g
            .check_admission(&t, EpochId::GENESIS, PolicyVersion::GENESIS)
            .is_ok());
        let e = g
            .check_admission(&t, EpochId(1), PolicyVersion::GENESIS)
            .unwrap_err();
        assert!(e.to_string().contains("epoch-1"), "{e}");
        let e = g
            .check_admission(&t, EpochId::GENESIS, PolicyVersion(2))
            .unwrap_err();
        assert!(e.to_string().contains("policy-v2"), "{e}");
    }

    #[test]
    fn epochs_close_by_time_capacity_or_approved_proposal_only() {
        let k = keys();
        let mut g = configured(&k, Some(2));
        let e = g.close(CloseTrigger::Time, 999).unwrap_err();
        assert!(e.to_string().contains("closes by time at 1000 ms"), "{e}");
        assert!(g.close(CloseTrigger::Capacity, 5).is_err());
        g.count_admission();
        g.count_admission();
        let t = TaskId::new("t-3").unwrap();
        let e = g
            .check_admission(&t, g.epoch, g.policy_version)
            .unwrap_err();
        assert!(e.to_string().contains("capacity of 2 tasks"), "{e}");
        g.close(CloseTrigger::Capacity, 5).unwrap();
        assert_eq!(
            (g.epoch, g.epoch_opened_at_ms, g.tasks_in_epoch),
            (EpochId(1), 5, 0)
        );
        g.close(CloseTrigger::Time, 1_005).unwrap();
        assert_eq!(g.epoch, EpochId(2));
        // A close proposal closes the epoch when the second master approves.
        propose(&mut g, &k, 0, ProposalKind::CloseEpoch, 1_010).unwrap();
        assert!(g
            .close(CloseTrigger::Proposal(ProposalId(0)), 1_011)
            .is_err());
        let ev = vote(&mut g, &k, 0, 2, true, 1_020).unwrap();
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::EpochClosed {
                epoch: EpochId(2),
                ..
            }
        )));
        assert_eq!(g.epoch, EpochId(3));
        assert_eq!(g.proposals[&ProposalId(0)].status, ProposalStatus::Enacted);
        let triggers: Vec<CloseTrigger> = g.history.iter().map(|h| h.trigger).collect();
        assert_eq!(
            triggers,
            [
                CloseTrigger::Capacity,
                CloseTrigger::Time,
                CloseTrigger::Proposal(ProposalId(0))
            ]
        );
        // A decided proposal cannot be voted again, nor enacted twice.
        assert!(vote(&mut g, &k, 0, 1, true, 1_030).is_err());
        assert!(g
            .close(CloseTrigger::Proposal(ProposalId(0)), 1_040)
            .is_err());
    }

    #[test]
    fn votes_must_be_signed_by_a_master_once() {
        let k = keys();
        let mut g = configured(&k, None);
        propose(&mut g, &k, 1, ProposalKind::CloseEpoch, 10).unwrap();
        // Signed by another key than the voter's.
        let sig = k[0].sign(&vote_message(ProposalId(0), true).unwrap().0);
        let e = g
            .vote(ProposalId(0), 2, true, 11, &sig.to_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // Signed for "no", presented as "yes".
        let sig = k[2].sign(&vote_message(ProposalId(0), false).unwrap().0);
        assert!(g.vote(ProposalId(0), 2, true, 11, &sig.to_bytes()).is_err());
        assert!(vote(&mut g, &k, 0, 1, true, 11)
            .unwrap_err()
            .to_string()
            .contains("already voted"));
        let sig = k[0].sign(&vote_message(ProposalId(0), true).unwrap().0);
        let e = g
            .vote(ProposalId(0), 7, true, 11, &sig.to_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("not a master"), "{e}");
        assert_eq!(g.epoch, EpochId::GENESIS);
        // Two rejections reject.
        vote(&mut g, &k, 0, 0, false, 12).unwrap();
        vote(&mut g, &k, 0, 2, false, 12).unwrap();
        assert_eq!(g.proposals[&ProposalId(0)].status, ProposalStatus::Rejected);
        assert_eq!(g.epoch, EpochId::GENESIS);
    }

    #[test]
    fn a_policy_change_applies_from_the_next_epoch() {
        let k = keys();
        let mut g = configured(&k, None);
        let mut params = PolicyParams::default_v1();
        params.epochs.epoch_length_ms = 500;
        let change = ProposalKind::PolicyChange {
            version: PolicyVersion(2),
            params: Box::new(params),
            max_tasks_per_epoch: Some(9),
        };
        propose(&mut g, &k, 0, change.clone(), 10).unwrap();
        assert!(
            propose(&mut g, &k, 1, change, 11).is_err(),
            "one policy change at a time"
        );
        vote(&mut g, &k, 0, 1, true, 12).unwrap();
        assert_eq!(
            g.policy_version,
            PolicyVersion::GENESIS,
            "not before the boundary"
        );
        let t = TaskId::new("t").unwrap();
        assert!(g
            .check_admission(&t, EpochId::GENESIS, PolicyVersion::GENESIS)
            .is_ok());
        let ev = g.close(CloseTrigger::Time, 1_000).unwrap();
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::ProposalEnacted { .. })));
        assert_eq!(
            (g.policy_version, g.epoch_length_ms),
            (PolicyVersion(2), 500)
        );
        assert_eq!(g.history[0].policy_version, PolicyVersion::GENESIS);
        assert!(g
            .check_admission(&t, EpochId(1), PolicyVersion::GENESIS)
            .is_err());
        assert!(g.close(CloseTrigger::Time, 1_499).is_err());
        assert!(g.close(CloseTrigger::Time, 1_500).is_ok());
    }

    #[test]
    fn proposals_and_closed_epochs_survive_the_canonical_encoding() {
        // The deployed log and snapshots are BCS: every governance type must
        // decode from its canonical bytes.
        let k = keys();
        let mut g = configured(&k, None);
        let change = ProposalKind::PolicyChange {
            version: PolicyVersion(2),
            params: Box::new(PolicyParams::default_v1()),
            max_tasks_per_epoch: Some(3),
        };
        propose(&mut g, &k, 0, change, 10).unwrap();
        propose(&mut g, &k, 1, ProposalKind::CloseEpoch, 11).unwrap();
        vote(&mut g, &k, 1, 2, true, 12).unwrap();
        g.close(CloseTrigger::Time, 2_000).unwrap();
        let bytes = symphony_core::encoding::canonical_bytes(&g).unwrap();
        let back: GovernanceState = symphony_core::encoding::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, g);
        for t in [
            CloseTrigger::Time,
            CloseTrigger::Capacity,
            CloseTrigger::Proposal(ProposalId(4)),
        ] {
            let b = symphony_core::encoding::canonical_bytes(&t).unwrap();
            assert_eq!(
                symphony_core::encoding::from_canonical_bytes::<CloseTrigger>(&b).unwrap(),
                t
            );
        }
    }

    #[test]
    fn membership_is_admitted_on_approval_and_genesis_configures_once() {
        let k = keys();
        let mut g = configured(&k, None);
        let vault = VaultId::new("vault-09").unwrap();
        let kind = ProposalKind::EnterpriseMembership {
            vault: vault.clone(),
            operator: ActorId::new("operator:vault-09").unwrap(),
            stake_micro_sym: 5_000_000,
        };
        propose(&mut g, &k, 2, kind.clone(), 1).unwrap();
        assert!(!g.members.contains_key(&vault));
        vote(&mut g, &k, 0, 0, true, 2).unwrap();
        assert!(g.members.contains_key(&vault));
        assert!(propose(&mut g, &k, 1, kind, 3).is_err());
        let pks: Vec<[u8; 32]> = k.iter().map(|k| k.verifying_key().to_bytes()).collect();
        assert!(g.configure(&pks, 10, None).is_err());
    }
}
