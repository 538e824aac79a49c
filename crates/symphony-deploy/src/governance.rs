//! The Governance Service on the deployed network (seed 002, "Governance",
//! "Epoch"): the replicated rules are `symphony_master`'s (proposals, 2-of-3 votes
//! signed by the master keys, epoch close triggers); here
//!
//! - the **leader's epoch duties** ([`EpochDuties`], run by the worker of
//!   [`crate::master`] between tasks): configure governance at genesis (the three
//!   commit keys, the genesis policy's epoch length and capacity, and the time the
//!   genesis epoch opened), close the epoch by time (its clock passed the opening +
//!   the epoch length) or by capacity (the policy's bound on tasks per epoch), and
//!   apply each newly opened epoch to every Vault over the enterprise RPC
//!   (`symphony_node::governance::apply_epoch`: each subject's budget replenished
//!   by the policy in force, once per epoch). What each Vault applied is recorded
//!   in the replicated state ([`crate::state::DeployCommand::EpochApplied`]), so a
//!   new leader continues where the old one stopped; re-applying is a no-op.
//! - the **wire types and views** of the gateway's governance routes
//!   (`GET /v1/epoch`, `GET|POST /v1/governance/proposals`,
//!   `POST /v1/governance/votes`): a proposal or vote carries a master's ed25519
//!   signature over `symphony_master::proposal_message` / `vote_message`, which the
//!   state machine verifies, so the gateway only checks the request and proposes
//!   the command through consensus.
//! - a **client** ([`GovClient`]) for the CLI and the tests.
//!
//! Masters are numbered by their governance index: `master-0`, `master-1`,
//! `master-2` are the masters in node-id order (in a devnet, nodes 1, 2, 3).
//!
//! Clock: the epoch times are the leader's wall clock (ms since the Unix epoch),
//! not the injected protocol time of tasks (`fixed_now_ms`), so a devnet with a
//! fixed task clock still closes epochs by time. A Vault that missed several epoch
//! openings (unreachable meanwhile) replenishes once, for the latest: never more
//! than the policy allows, possibly less.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use symphony_core::ids::{ActorId, EpochId};
use symphony_economics::PolicyParams;
use symphony_ledger::{AccountId, SettlementLedger};
pub use symphony_master::{parse_offence, ProposalKind, Verdict, MAX_REASON_BYTES};
use symphony_master::{proposal_message, vote_message, CloseTrigger, Command};
use symphony_node::enterprise::EnterpriseEndpoint;
use symphony_node::network::MasterServices;
pub use symphony_semantic::{AttributePromotion, PromotionTarget};

use crate::client::GatewayClient;
use crate::config::{read_signing_key, MasterConfig};
use crate::devnet::DevnetLayout;
use crate::master::now_ms;
use crate::replicator::Cluster;
use crate::state::{DeployCommand, DeployResponse, DeployState};
use crate::DeployError;

/// The gateway caller name of the master with governance index `index`.
pub fn master_caller(index: u8) -> String {
    format!("master-{index}")
}

/// Parses `master-N` (or `N`) into a governance index 0..=2; the error names the
/// flag.
pub fn parse_master(flag: &str, value: &str) -> Result<u8, String> {
    let n = value.strip_prefix("master-").unwrap_or(value);
    match n.parse::<u8>() {
        Ok(i) if i < 3 => Ok(i),
        _ => Err(format!(
            "{flag}: expected master-0, master-1 or master-2 (governance index = node id - 1), got {value:?}"
        )),
    }
}

/// Parses a proposal id: `7` or `proposal-7`.
pub fn parse_proposal_id(value: &str) -> Result<u64, String> {
    value
        .strip_prefix("proposal-")
        .unwrap_or(value)
        .parse()
        .map_err(|_| {
            format!("proposal id: expected a number such as 3 or proposal-3, got {value:?}")
        })
}

/// Body of `POST /v1/governance/proposals`: a proposal signed by master `by`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalSubmission {
    /// What is proposed (`"close_epoch"`, `{"policy_change": {…}}`,
    /// `{"enterprise_membership": {…}}`).
    pub kind: ProposalKind,
    /// The proposing master's governance index.
    pub by: u8,
    /// When it was signed, ms since the Unix epoch (must be within the gateway's
    /// request window).
    pub at_ms: u64,
    /// Hex ed25519 signature of master `by` over `proposal_message(kind, at_ms)`.
    pub signature: String,
}

/// Body of `POST /v1/governance/votes`: a vote signed by master `by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteSubmission {
    /// The proposal id.
    pub proposal: u64,
    /// The voting master's governance index.
    pub by: u8,
    /// Approve (or reject).
    pub approve: bool,
    /// Hex ed25519 signature of master `by` over `vote_message(proposal, approve)`.
    pub signature: String,
}

/// Signs a proposal as master `by` with its commit key.
pub fn sign_proposal(
    kind: ProposalKind,
    by: u8,
    at_ms: u64,
    key: &SigningKey,
) -> Result<ProposalSubmission, DeployError> {
    let msg = proposal_message(&kind, at_ms).map_err(|e| DeployError::Encoding(e.to_string()))?;
    Ok(ProposalSubmission {
        signature: hex::encode(key.sign(&msg.0).to_bytes()),
        kind,
        by,
        at_ms,
    })
}

/// Signs a vote as master `by` with its commit key.
pub fn sign_vote(
    proposal: u64,
    by: u8,
    approve: bool,
    key: &SigningKey,
) -> Result<VoteSubmission, DeployError> {
    let msg = vote_message(symphony_master::ProposalId(proposal), approve)
        .map_err(|e| DeployError::Encoding(e.to_string()))?;
    Ok(VoteSubmission {
        proposal,
        by,
        approve,
        signature: hex::encode(key.sign(&msg.0).to_bytes()),
    })
}

/// The view of `GET /v1/epoch` at `now_ms`.
pub fn epoch_view(s: &DeployState, now_ms: u64) -> Value {
    let g = s.master().governance();
    let opened = s.epoch_opened_at_ms();
    let due = s.epoch_due_at_ms();
    let pending_policy = g.proposals.values().find_map(|p| match &p.kind {
        ProposalKind::PolicyChange { version, .. }
            if matches!(
                p.status,
                symphony_master::ProposalStatus::Voting | symphony_master::ProposalStatus::Approved
            ) =>
        {
            Some(
                json!({"proposal_id": p.id.0, "version": version.0, "status": p.status,
                        "activates": "at the next epoch boundary once approved"}),
            )
        }
        _ => None,
    });
    let close_proposals: Vec<u64> = g
        .proposals
        .values()
        .filter(|p| {
            p.kind == ProposalKind::CloseEpoch
                && p.status == symphony_master::ProposalStatus::Voting
        })
        .map(|p| p.id.0)
        .collect();
    // The genesis epoch's record says it opened at 0; it opened when governance
    // was configured.
    let mut history = serde_json::to_value(&g.history).unwrap_or(Value::Null);
    if let (Some(first), Some(genesis)) = (history.get_mut(0), s.genesis_opened_at_ms()) {
        if first["opened_at_ms"] == 0 {
            first["opened_at_ms"] = genesis.into();
        }
    }
    // Another master's clock may read a little behind the leader's that stamped the
    // opening: what remains is never more than the epoch's length.
    let remaining = due.saturating_sub(now_ms).min(g.epoch_length_ms);
    json!({
        "configured": s.governance_configured(),
        "epoch_id": g.epoch.0,
        "policy_version": g.policy_version.0,
        "opened_at_ms": opened,
        "epoch_length_ms": g.epoch_length_ms,
        "tasks_in_epoch": g.tasks_in_epoch,
        "max_tasks_per_epoch": g.max_tasks_per_epoch,
        "time_close_at_ms": due,
        "ms_until_time_close": remaining,
        "now_ms": now_ms,
        "triggers": {
            "time": {"closes_at_ms": due, "ms_remaining": remaining},
            "capacity": {
                "tasks_in_epoch": g.tasks_in_epoch,
                "max_tasks_per_epoch": g.max_tasks_per_epoch,
                "tasks_remaining": g.max_tasks_per_epoch.map(|m| m.saturating_sub(g.tasks_in_epoch)),
            },
            "proposal": {"close_epoch_proposals_voting": close_proposals},
        },
        "pending_policy_change": pending_policy,
        "vaults": s.vault_epochs().iter().map(|(v, e)| {
            (v.clone(), json!({"epoch_applied": e.epoch, "accounts_replenished": e.accounts}))
        }).collect::<serde_json::Map<_, _>>(),
        "history": history,
    })
}

/// The view of `GET /v1/governance/proposals`.
pub fn proposals_view(s: &DeployState) -> Value {
    let g = s.master().governance();
    json!({
        "epoch_id": g.epoch.0,
        "policy_version": g.policy_version.0,
        "proposals": g.proposals.values().collect::<Vec<_>>(),
        // What enacted proposals still owe the settlement ledger (the leader
        // carries it out and records it once; empty when all is done).
        "pending_ledger_duties": g.pending_duties.iter().map(|(id, duties)| {
            json!({"proposal_id": id.0, "duties": duties})
        }).collect::<Vec<_>>(),
        "registry": g.registry.actors.iter().map(|(actor, a)| {
            json!({"actor": actor, "tier": a.tier, "bonded_micro_sym": a.bonded_micro_sym,
                   "slashed_micro_sym": a.slashed_micro_sym, "offences": a.offences.len()})
        }).collect::<Vec<_>>(),
    })
}

/// One thing the leader has to do for governance now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Governance is not configured yet (genesis).
    Configure,
    /// The epoch's time is up.
    CloseByTime,
    /// The epoch holds its capacity of tasks.
    CloseByCapacity,
    /// A closed epoch's node operation rewards are not minted yet.
    Reward {
        /// The closed epoch.
        epoch: u64,
    },
    /// Governance is configured and no proposal filed yet, but a genesis
    /// member's operator holds its S_enterprise unbonded or unregistered: bond it
    /// on the ledger and register it in the actor registry.
    GenesisStakes,
    /// Enacted proposals still owe the settlement ledger something (a member's
    /// bond, a slash, a rejected task's charge): carry it out, then record it
    /// (`Command::RecordLedgerDuty`), exactly once.
    Ledger,
    /// `vault` has not applied the opening of the current epoch.
    Apply {
        /// The Vault.
        vault: String,
        /// The current epoch.
        epoch: u64,
    },
}

/// What the leader has to do at `now_ms` for the Vaults `vaults`, read from `s`.
pub fn duties(s: &DeployState, vaults: &[String], now_ms: u64) -> Vec<Duty> {
    if !s.governance_configured() {
        return vec![Duty::Configure];
    }
    let g = s.master().governance();
    if now_ms >= s.epoch_due_at_ms() {
        return vec![Duty::CloseByTime];
    }
    if g.max_tasks_per_epoch.is_some_and(|m| g.tasks_in_epoch >= m) {
        return vec![Duty::CloseByCapacity];
    }
    if let Some(h) = g.history.iter().find(|h| h.rewards.is_none()) {
        return vec![Duty::Reward { epoch: h.epoch.0 }];
    }
    if !genesis_stakes_due(s, vaults).is_empty() {
        return vec![Duty::GenesisStakes];
    }
    let mut due = Vec::new();
    if !g.pending_duties.is_empty() {
        due.push(Duty::Ledger);
    }
    let epoch = g.epoch.0;
    if epoch == EpochId::GENESIS.0 {
        return due; // every Vault starts in the genesis epoch
    }
    due.extend(
        vaults
            .iter()
            .filter(|v| s.vault_epochs().get(*v).is_none_or(|e| e.epoch < epoch))
            .map(|v| Duty::Apply {
                vault: v.clone(),
                epoch,
            }),
    );
    due
}

/// The operators of the genesis members `vaults` whose stake is still to be bonded
/// or registered: only before the first proposal (later stakes join through
/// governance), and only an operator whose account holds S_enterprise liquid or
/// already bonded something (the genesis funds each operator).
fn genesis_stakes_due(s: &DeployState, vaults: &[String]) -> Vec<(ActorId, u64)> {
    let g = s.master().governance();
    if !g.proposals.is_empty() {
        return Vec::new();
    }
    let stake = PolicyParams::default_v1().staking.s_enterprise_micro_sym;
    let mut due = Vec::new();
    for v in vaults {
        let Ok(operator) = ActorId::new(format!("operator:{v}")) else {
            continue;
        };
        if g.registry.actors.contains_key(&operator) {
            continue;
        }
        let Ok(account) = AccountId::new(format!("actor:{operator}")) else {
            continue;
        };
        let bonded = s.ledger().stake_of(&account);
        if bonded > 0 || s.ledger().balance(&account) >= stake {
            due.push((operator, stake));
        }
    }
    due
}

/// How long a Vault that could not be reached waits before the next attempt.
const VAULT_RETRY: Duration = Duration::from_secs(2);
/// How long the duties pause after a failed step (lost quorum or leadership).
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// The leader's epoch duties (see the module documentation). Call
/// [`EpochDuties::run`] often while leading: it reads the local replica and does
/// nothing (no consensus round) unless a duty is due.
#[derive(Debug, Default)]
pub struct EpochDuties {
    retry_at: BTreeMap<String, Instant>,
    ledger_retry_at: Option<Instant>,
    paused_until: Option<Instant>,
}

impl EpochDuties {
    /// No duty done yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn due(&self, cluster: &Cluster, vaults: &[String]) -> Vec<Duty> {
        let now = Instant::now();
        cluster
            .with_state(|s| duties(s, vaults, now_ms()))
            .into_iter()
            .filter(|d| match d {
                Duty::Apply { vault, .. } => self.retry_at.get(vault).is_none_or(|t| *t <= now),
                Duty::Ledger => self.ledger_retry_at.is_none_or(|t| t <= now),
                _ => true,
            })
            .collect()
    }

    /// Does what is due; `services` builds the master services (their policy
    /// registry synchronized with the replicated state).
    pub fn run(
        &mut self,
        cluster: &Cluster,
        config: &MasterConfig,
        endpoints: &[&dyn EnterpriseEndpoint],
        services: impl Fn() -> Result<MasterServices, DeployError>,
    ) -> Result<(), DeployError> {
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let vaults: Vec<String> = endpoints.iter().map(|e| e.vault_id().to_string()).collect();
        if self.due(cluster, &vaults).is_empty() {
            return Ok(());
        }
        let r = self.run_due(cluster, config, endpoints, &vaults, services);
        if r.is_err() {
            self.paused_until = Some(Instant::now() + FAILURE_PAUSE);
        }
        r
    }

    fn run_due(
        &mut self,
        cluster: &Cluster,
        config: &MasterConfig,
        endpoints: &[&dyn EnterpriseEndpoint],
        vaults: &[String],
        services: impl Fn() -> Result<MasterServices, DeployError>,
    ) -> Result<(), DeployError> {
        // Decide from an up-to-date replica: a new leader may not have applied
        // every committed entry yet.
        cluster
            .runtime()
            .block_on(cluster.node.read_barrier(Duration::from_secs(5)))?;
        let mut svc: Option<MasterServices> = None;
        // At most a configuration and the genesis stakes, one close and its
        // rewards, the ledger duties, then the Vaults.
        for _ in 0..6 {
            let due = self.due(cluster, vaults);
            let Some(first) = due.first() else {
                return Ok(());
            };
            match first {
                Duty::Configure => configure(cluster, config)?,
                Duty::CloseByTime | Duty::CloseByCapacity => {
                    let trigger = if *first == Duty::CloseByTime {
                        CloseTrigger::Time
                    } else {
                        CloseTrigger::Capacity
                    };
                    let s = match svc.as_mut() {
                        Some(s) => s,
                        None => svc.insert(services()?),
                    };
                    let c = s
                        .masters
                        .submit(Command::CloseEpoch {
                            trigger,
                            at_ms: now_ms(),
                        })
                        .map_err(symphony_node::NodeError::from)?;
                    tracing::info!(?trigger, events = ?c.events, "epoch closed");
                    svc = None; // a policy version may have activated
                }
                Duty::Reward { epoch } => {
                    let s = match svc.as_mut() {
                        Some(s) => s,
                        None => svc.insert(services()?),
                    };
                    let vault_ids = vaults
                        .iter()
                        .map(|v| symphony_core::ids::VaultId::new(v.clone()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| DeployError::Config(e.to_string()))?;
                    let nodes = symphony_node::governance::node_weights(&vault_ids)?;
                    let minted =
                        symphony_node::governance::mint_epoch_rewards(s, EpochId(*epoch), &nodes)?;
                    tracing::info!(epoch, minted, "epoch rewards minted and paid");
                }
                Duty::GenesisStakes => {
                    let s = match svc.as_mut() {
                        Some(s) => s,
                        None => svc.insert(services()?),
                    };
                    bond_genesis_stakes(cluster, s, vaults)?;
                }
                Duty::Ledger => {
                    let s = match svc.as_mut() {
                        Some(s) => s,
                        None => svc.insert(services()?),
                    };
                    let marker = config.data_dir.join("fault-injected");
                    if !self.ledger_duties(s, &marker)? {
                        continue;
                    }
                }
                Duty::Apply { .. } => {
                    let s = match svc.as_mut() {
                        Some(s) => s,
                        None => svc.insert(services()?),
                    };
                    self.apply(cluster, s, endpoints, &due)?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Carries out the pending ledger duties of enacted proposals (each proposal's
    /// duties recorded done once; a new leader finds the rest pending and finishes
    /// them: every duty is idempotent on the ledger). Returns whether every
    /// proposal's duties are done; a failed one is retried after
    /// [`VAULT_RETRY`] without holding up the others.
    fn ledger_duties(
        &mut self,
        svc: &mut MasterServices,
        fault_marker: &std::path::Path,
    ) -> Result<bool, DeployError> {
        let version = svc.masters.state().active_policy_version();
        let epoch = svc.masters.state().current_epoch();
        let params = svc
            .policy
            .resolve(epoch, svc.semantic.semantic_version(), version)
            .map_err(|e| DeployError::Node(symphony_node::NodeError::Refused(e.to_string())))?
            .params
            .clone();
        let pending: Vec<(
            symphony_master::ProposalId,
            Vec<symphony_master::LedgerDuty>,
        )> = svc
            .masters
            .state()
            .governance()
            .pending_duties
            .iter()
            .map(|(id, d)| (*id, d.clone()))
            .collect();
        let mut results = Vec::new();
        for (id, duties) in pending {
            let r = symphony_node::adjudication::carry_out_duties(
                id,
                &duties,
                &mut *svc.ledger,
                svc.settlements.as_ref(),
                &params,
            )
            .and_then(|()| {
                fault_exit_at(fault_marker, LEDGER_DUTY_STEP);
                svc.masters
                    .submit(Command::RecordLedgerDuty { proposal: id })
                    .map(|_| ())
                    .map_err(symphony_node::NodeError::from)
            });
            results.push((id, r));
        }
        let mut all = true;
        for (id, r) in results {
            match r {
                Ok(()) => tracing::info!(proposal = %id, "ledger duties done and recorded"),
                Err(e) => {
                    all = false;
                    tracing::warn!(proposal = %id, error = %e, "ledger duty failed; retrying later");
                }
            }
        }
        self.ledger_retry_at = (!all).then(|| Instant::now() + VAULT_RETRY);
        Ok(all)
    }

    /// Applies the current epoch's opening to each Vault behind, and records it.
    fn apply(
        &mut self,
        cluster: &Cluster,
        svc: &MasterServices,
        endpoints: &[&dyn EnterpriseEndpoint],
        due: &[Duty],
    ) -> Result<(), DeployError> {
        for d in due {
            let Duty::Apply { vault, epoch } = d else {
                continue;
            };
            let Some(endpoint) = endpoints.iter().find(|e| e.vault_id().as_str() == vault) else {
                continue;
            };
            let applied =
                symphony_node::governance::apply_epoch(svc, &[*endpoint], EpochId(*epoch));
            let accounts = match applied {
                Ok((done, _)) if !done.is_empty() => done.iter().map(|(_, n)| n).sum(),
                Ok(_) => {
                    tracing::warn!(
                        vault,
                        epoch,
                        "Vault unreachable; its epoch is applied later"
                    );
                    self.retry_at
                        .insert(vault.clone(), Instant::now() + VAULT_RETRY);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(vault, epoch, error = %e, "applying the epoch failed; retrying later");
                    self.retry_at
                        .insert(vault.clone(), Instant::now() + VAULT_RETRY);
                    continue;
                }
            };
            self.retry_at.remove(vault);
            let (response, _) = cluster.write_blocking(&DeployCommand::EpochApplied {
                vault_id: vault.clone(),
                epoch: *epoch,
                accounts,
            })?;
            if let DeployResponse::Queue(Err(e)) = response {
                tracing::warn!(vault, epoch, error = %e, "epoch application not recorded");
            } else {
                tracing::info!(vault, epoch, accounts, "epoch applied: budgets replenished");
            }
        }
        Ok(())
    }
}

/// The step [`crate::master::FAULT_EXIT_AT`] names to crash a leader after it
/// carried out an enacted proposal's ledger duties and before it recorded them.
pub const LEDGER_DUTY_STEP: &str = "ledger-duty";

/// [`crate::master::FAULT_EXIT_AT`] at `step`: exits as if killed, once per data
/// directory (`marker`). Unset in normal operation.
fn fault_exit_at(marker: &std::path::Path, step: &str) {
    if std::env::var(crate::master::FAULT_EXIT_AT).is_ok_and(|s| s == step) && !marker.exists() {
        let _ = std::fs::write(marker, step);
        tracing::error!(step, "fault injection: exiting as if killed");
        std::process::exit(137);
    }
}

/// The genesis members' operators bond their S_enterprise on the replicated
/// ledger (skipped when bonded already: a leader that crashed halfway) and enter
/// the actor registry (`Command::RegisterStakes`, once, before the first proposal).
fn bond_genesis_stakes(
    cluster: &Cluster,
    svc: &mut MasterServices,
    vaults: &[String],
) -> Result<(), DeployError> {
    let due = cluster.with_state(|s| genesis_stakes_due(s, vaults));
    let mut actors = Vec::new();
    for (operator, stake) in due {
        let account = AccountId::new(format!("actor:{operator}"))
            .map_err(|e| DeployError::Ledger(e.to_string()))?;
        if svc.ledger.stake_of(&account) == 0 {
            svc.ledger
                .bond(&account, symphony_ledger::StakeTier::Enterprise, stake)
                .map_err(|e| DeployError::Ledger(format!("bonding {account}: {e}")))?;
        }
        actors.push(operator);
    }
    let n = symphony_node::adjudication::register_genesis_stakes(
        &mut *svc.masters,
        &*svc.ledger,
        &actors,
    )?;
    tracing::info!(
        registered = n,
        "genesis enterprise stakes bonded and registered"
    );
    Ok(())
}

/// Genesis: the three commit keys (index = node-id order), the genesis policy's
/// epoch length and capacity, and the genesis epoch opening now.
fn configure(cluster: &Cluster, config: &MasterConfig) -> Result<(), DeployError> {
    let params = config.genesis_policy()?;
    let command = Command::ConfigureGovernance {
        master_keys: cluster.keys().iter().map(|k| k.to_bytes()).collect(),
        epoch_length_ms: params.epochs.epoch_length_ms,
        max_tasks_per_epoch: config.max_tasks_per_epoch,
    };
    // A refused command is never proposed.
    let mut probe = cluster.with_state(|s| s.master().clone());
    if let Err(e) = probe.apply(&command) {
        return Err(DeployError::Node(symphony_node::NodeError::Refused(
            e.to_string(),
        )));
    }
    let (response, _) = cluster.write_blocking(&DeployCommand::GovernanceGenesis {
        command,
        opened_at_ms: now_ms(),
    })?;
    match response {
        DeployResponse::Master(Ok(_)) => {
            tracing::info!(
                epoch_length_ms = params.epochs.epoch_length_ms,
                max_tasks_per_epoch = config.max_tasks_per_epoch,
                "governance configured; genesis epoch opened"
            );
            Ok(())
        }
        other => Err(DeployError::Node(symphony_node::NodeError::Refused(
            format!("governance genesis refused: {other:?}"),
        ))),
    }
}

/// A client of the governance routes of a devnet: reads as the devnet's
/// advertiser, proposes and votes as a master with its key from the devnet
/// directory.
pub struct GovClient {
    layout: DevnetLayout,
    reader: GatewayClient,
}

fn reply_json(r: &crate::client::HttpReply, what: &str) -> Result<Value, DeployError> {
    let v = r.json();
    if r.status >= 400 {
        let msg = v["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
        return Err(DeployError::Http(format!(
            "{what}: gateway refused ({}): {msg}",
            r.status
        )));
    }
    Ok(v)
}

impl GovClient {
    /// A client of the devnet in `layout`.
    pub fn new(layout: DevnetLayout) -> Result<Self, DeployError> {
        let key = read_signing_key("advertiser key", &layout.advertiser_key)?;
        let reader = GatewayClient::new(
            layout.gateways(),
            Self::tls(&layout)?,
            layout.advertiser.clone(),
            key,
        );
        Ok(Self { layout, reader })
    }

    fn tls(layout: &DevnetLayout) -> Result<Arc<rustls::ClientConfig>, DeployError> {
        crate::tls::public_client(crate::tls::load_roots(&layout.ca)?)
    }

    /// The gateways, in master order.
    pub fn gateways(&self) -> Vec<SocketAddr> {
        self.layout.gateways()
    }

    /// Master `index`'s commit key from the devnet directory.
    pub fn master_key(&self, index: u8) -> Result<SigningKey, DeployError> {
        let path = self.layout.governance_key(index)?;
        read_signing_key(&format!("master-{index} key"), &path)
    }

    fn master_client(&self, index: u8) -> Result<GatewayClient, DeployError> {
        Ok(GatewayClient::new(
            self.layout.gateways(),
            Self::tls(&self.layout)?,
            master_caller(index),
            self.master_key(index)?,
        ))
    }

    /// `GET /v1/epoch`.
    pub async fn epoch(&self) -> Result<Value, DeployError> {
        let r = self.reader.signed("GET", "/v1/epoch", Vec::new()).await?;
        reply_json(&r, "GET /v1/epoch")
    }

    /// `GET /v1/governance/proposals`.
    pub async fn proposals(&self) -> Result<Value, DeployError> {
        let r = self
            .reader
            .signed("GET", "/v1/governance/proposals", Vec::new())
            .await?;
        reply_json(&r, "GET /v1/governance/proposals")
    }

    /// Master `by` files `kind` (signed now); returns the gateway's reply.
    pub async fn propose(&self, kind: ProposalKind, by: u8) -> Result<Value, DeployError> {
        let submission = sign_proposal(kind, by, now_ms(), &self.master_key(by)?)?;
        let body =
            serde_json::to_vec(&submission).map_err(|e| DeployError::Encoding(e.to_string()))?;
        let r = self
            .master_client(by)?
            .signed("POST", "/v1/governance/proposals", body)
            .await?;
        reply_json(&r, &format!("proposal by master-{by}"))
    }

    /// Master `by` votes on `proposal`.
    pub async fn vote(&self, proposal: u64, by: u8, approve: bool) -> Result<Value, DeployError> {
        let submission = sign_vote(proposal, by, approve, &self.master_key(by)?)?;
        let body =
            serde_json::to_vec(&submission).map_err(|e| DeployError::Encoding(e.to_string()))?;
        let r = self
            .master_client(by)?
            .signed("POST", "/v1/governance/votes", body)
            .await?;
        reply_json(&r, &format!("vote of master-{by} on proposal-{proposal}"))
    }

    /// Closes the epoch through governance: master 0 proposes `close_epoch`,
    /// master 1 approves (2 of 3), then waits until the next epoch is open and
    /// every Vault of the devnet applied it (budgets replenished). Returns the
    /// final `GET /v1/epoch` view.
    pub async fn close_epoch(&self, timeout: Duration) -> Result<Value, DeployError> {
        let before = self.epoch().await?;
        if before["configured"] != Value::Bool(true) {
            return Err(DeployError::Http(
                "governance is not configured yet (no leader has run its genesis); retry shortly"
                    .into(),
            ));
        }
        let from = before["epoch_id"].as_u64().unwrap_or(0);
        let proposed = self.propose(ProposalKind::CloseEpoch, 0).await?;
        let id = proposed["proposal_id"].as_u64().ok_or_else(|| {
            DeployError::Http(format!("the gateway named no proposal id: {proposed}"))
        })?;
        self.vote(id, 1, true).await?;
        let vaults: Vec<String> = self
            .layout
            .enterprises
            .iter()
            .map(|e| e.vault_id.clone())
            .collect();
        let started = Instant::now();
        loop {
            let v = self.epoch().await?;
            let epoch = v["epoch_id"].as_u64().unwrap_or(0);
            let behind: Vec<&String> = vaults
                .iter()
                .filter(|x| {
                    v["vaults"][x.as_str()]["epoch_applied"]
                        .as_u64()
                        .unwrap_or(0)
                        < epoch
                })
                .collect();
            if epoch > from && behind.is_empty() {
                return Ok(v);
            }
            if started.elapsed() > timeout {
                return Err(DeployError::Http(format!(
                    "proposal-{id} was approved, but after {timeout:?} epoch-{epoch} is open \
                     (was epoch-{from}) and these Vaults have not applied it: {behind:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DeployState {
        DeployState::new(crate::loopback::empty_genesis()).unwrap()
    }

    fn apply(s: &mut DeployState, c: &DeployCommand) -> DeployResponse {
        use symphony_consensus::ReplicatedStateMachine;
        bcs::from_bytes(&s.apply(&bcs::to_bytes(c).unwrap())).unwrap()
    }

    fn keys() -> Vec<SigningKey> {
        (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect()
    }

    fn configure(s: &mut DeployState, opened_at_ms: u64, max: Option<u64>) {
        let command = Command::ConfigureGovernance {
            master_keys: keys()
                .iter()
                .map(|k| k.verifying_key().to_bytes())
                .collect(),
            epoch_length_ms: 10_000,
            max_tasks_per_epoch: max,
        };
        let r = apply(
            s,
            &DeployCommand::GovernanceGenesis {
                command,
                opened_at_ms,
            },
        );
        assert!(matches!(r, DeployResponse::Master(Ok(_))), "{r:?}");
    }

    #[test]
    fn the_leader_configures_then_closes_by_time_then_applies_each_vault_once() {
        let vaults = vec!["vault-01".to_owned(), "vault-02".to_owned()];
        let mut s = state();
        assert_eq!(duties(&s, &vaults, 5), vec![Duty::Configure]);
        // Only ConfigureGovernance rides on the genesis command.
        let r = apply(
            &mut s,
            &DeployCommand::GovernanceGenesis {
                command: Command::CloseEpoch {
                    trigger: CloseTrigger::Time,
                    at_ms: 1,
                },
                opened_at_ms: 1,
            },
        );
        assert!(matches!(r, DeployResponse::Master(Err(_))), "{r:?}");
        configure(&mut s, 1_000_000, None);
        // The genesis epoch counts from its configuration, not from 0.
        assert_eq!(s.epoch_opened_at_ms(), 1_000_000);
        assert!(duties(&s, &vaults, 1_009_999).is_empty());
        assert_eq!(duties(&s, &vaults, 1_010_000), vec![Duty::CloseByTime]);
        let r = apply(
            &mut s,
            &DeployCommand::Master(Command::CloseEpoch {
                trigger: CloseTrigger::Time,
                at_ms: 1_010_000,
            }),
        );
        assert!(matches!(r, DeployResponse::Master(Ok(_))), "{r:?}");
        assert_eq!(s.epoch_opened_at_ms(), 1_010_000);
        // The closed epoch's node rewards first (recorded once), then the Vaults.
        assert_eq!(
            duties(&s, &vaults, 1_010_001),
            vec![Duty::Reward { epoch: 0 }]
        );
        let rewards = DeployCommand::Master(Command::RecordEpochRewards {
            epoch: symphony_core::ids::EpochId(0),
            rewards: symphony_master::EpochRewards {
                minted_micro_sym: 0,
                recipients: Vec::new(),
            },
        });
        let r = apply(&mut s, &rewards);
        assert!(matches!(r, DeployResponse::Master(Ok(_))), "{r:?}");
        let r = apply(&mut s, &rewards);
        assert!(matches!(r, DeployResponse::Master(Err(_))), "{r:?}");
        assert_eq!(
            duties(&s, &vaults, 1_010_001),
            vec![
                Duty::Apply {
                    vault: "vault-01".into(),
                    epoch: 1
                },
                Duty::Apply {
                    vault: "vault-02".into(),
                    epoch: 1
                }
            ]
        );
        // A Vault cannot have applied an epoch that is not open yet.
        let r = apply(
            &mut s,
            &DeployCommand::EpochApplied {
                vault_id: "vault-01".into(),
                epoch: 2,
                accounts: 1,
            },
        );
        assert!(matches!(r, DeployResponse::Queue(Err(_))), "{r:?}");
        for v in &vaults {
            let r = apply(
                &mut s,
                &DeployCommand::EpochApplied {
                    vault_id: v.clone(),
                    epoch: 1,
                    accounts: 7,
                },
            );
            assert!(matches!(r, DeployResponse::Queue(Ok(1))), "{r:?}");
        }
        assert!(duties(&s, &vaults, 1_010_002).is_empty());
        let view = epoch_view(&s, 1_015_000);
        assert_eq!(view["epoch_id"], 1);
        assert_eq!(view["ms_until_time_close"], 5_000);
        assert_eq!(view["vaults"]["vault-02"]["epoch_applied"], 1);
        assert_eq!(view["history"][0]["trigger"], "time");
        // Snapshots carry the genesis time and the applied epochs.
        use symphony_consensus::ReplicatedStateMachine;
        let mut restored = state();
        restored.restore(&s.snapshot()).unwrap();
        assert_eq!(restored.state_root(), s.state_root());
        assert_eq!(restored.vault_epochs(), s.vault_epochs());
        assert_eq!(restored.epoch_opened_at_ms(), 1_010_000);
    }

    #[test]
    fn capacity_closes_and_signed_bodies_verify_in_the_state_machine() {
        let mut s = state();
        configure(&mut s, 0, Some(1));
        let k = keys();
        let p = sign_proposal(ProposalKind::CloseEpoch, 2, 77, &k[2]).unwrap();
        let sig = hex::decode(&p.signature).unwrap();
        let r = apply(
            &mut s,
            &DeployCommand::Master(Command::Propose {
                kind: p.kind,
                by: p.by,
                at_ms: p.at_ms,
                signature: sig,
            }),
        );
        assert!(matches!(r, DeployResponse::Master(Ok(_))), "{r:?}");
        let v = sign_vote(0, 0, true, &k[0]).unwrap();
        let r = apply(
            &mut s,
            &DeployCommand::Master(Command::Vote {
                proposal: symphony_master::ProposalId(v.proposal),
                by: v.by,
                approve: v.approve,
                at_ms: 100,
                signature: hex::decode(&v.signature).unwrap(),
            }),
        );
        assert!(matches!(r, DeployResponse::Master(Ok(_))), "{r:?}");
        assert_eq!(s.master().current_epoch(), EpochId(1));
        assert_eq!(proposals_view(&s)["proposals"][0]["status"], "enacted");
        assert_eq!(parse_master("--as", "master-2").unwrap(), 2);
        assert_eq!(parse_master("--as", "1").unwrap(), 1);
        let e = parse_master("--as", "master-3").unwrap_err().to_string();
        assert!(
            e.contains("--as: expected master-0, master-1 or master-2"),
            "{e}"
        );
        assert_eq!(parse_proposal_id("proposal-4").unwrap(), 4);
        assert!(parse_proposal_id("four").is_err());
    }
}
