//! The Governance Service as the masters run it (seed 002, "Governance"): the
//! replicated rules live in `symphony_master` (proposals, 2-of-3 signed votes, epoch
//! close triggers); here the masters configure them from the genesis policy, file
//! and vote proposals with their keys, and apply a closed epoch to the Vaults
//! (each replenishes every subject's budget by the policy, once per epoch).

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::ids::{ActorId, EpochId, VaultId};
use symphony_master::{
    proposal_message, vote_message, CloseTrigger, Command, EpochRewards, Event, ProposalId,
    ProposalKind,
};

use crate::enterprise::EnterpriseEndpoint;
use crate::network::MasterServices;
use crate::NodeError;

/// What closing an epoch did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochClose {
    /// The closed epoch.
    pub closed: EpochId,
    /// The epoch now open.
    pub opened: EpochId,
    /// Why.
    pub trigger: CloseTrigger,
    /// Budget accounts replenished, per Vault.
    pub replenished: Vec<(String, u64)>,
    /// Vaults that could not be reached (they replenish when the event is
    /// re-applied: replenishment is idempotent by epoch).
    pub unreachable: Vec<String>,
    /// Node operation rewards minted for the closed epoch, µSYM.
    pub minted_micro_sym: u64,
}

fn scopes() -> [UsageScope; 4] {
    [
        UsageScope::Personal,
        UsageScope::Marketing,
        UsageScope::Analytics,
        UsageScope::Training,
    ]
}

/// Configures governance from the masters' keys and the active policy (epoch
/// length), once; a no-op when already configured.
pub fn ensure_configured(m: &mut MasterServices) -> Result<(), NodeError> {
    if !m.masters.state().governance().master_keys.is_empty() {
        return Ok(());
    }
    let params = active_params(m, m.masters.state().current_epoch())?;
    let master_keys = m
        .masters
        .master_keys()
        .iter()
        .map(|k| k.to_bytes())
        .collect();
    m.masters.submit(Command::ConfigureGovernance {
        master_keys,
        epoch_length_ms: params.epochs.epoch_length_ms,
        max_tasks_per_epoch: None,
    })?;
    // The actor registry starts with the stakes the ledger bonded at genesis.
    let bonded = genesis_bonded_actors(&*m.ledger)?;
    crate::adjudication::register_genesis_stakes(&mut *m.masters, &*m.ledger, &bonded)?;
    Ok(())
}

/// The actors whose stake the ledger bonded (`actor:<id>` accounts), in order.
fn genesis_bonded_actors(
    ledger: &dyn symphony_ledger::SettlementLedger,
) -> Result<Vec<ActorId>, NodeError> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = ledger
            .events(from, 1_000)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        for (_, e) in &page {
            if let symphony_ledger::LedgerEvent::StakeBonded { actor, .. } = e {
                if let Some(id) = actor.as_str().strip_prefix("actor:") {
                    let id = ActorId::new(id).map_err(|e| NodeError::Refused(e.to_string()))?;
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
            }
        }
        from = last + 1;
    }
}

fn active_params(
    m: &MasterServices,
    epoch: EpochId,
) -> Result<symphony_economics::PolicyParams, NodeError> {
    let version = m.masters.state().active_policy_version();
    let semantic = m.semantic.semantic_version();
    m.policy
        .resolve(epoch, semantic, version)
        .map(|r| r.params.clone())
        .map_err(|e| NodeError::Refused(format!("policy: {e}")))
}

fn gov(e: symphony_master::MasterError) -> NodeError {
    NodeError::Refused(e.to_string())
}

fn signed(m: &MasterServices, by: u8, msg: &[u8]) -> Result<Vec<u8>, NodeError> {
    m.masters
        .sign_as(by, msg)
        .map(|s| s.to_bytes().to_vec())
        .ok_or_else(|| NodeError::Refused(format!("master-{by}'s key is not held here")))
}

/// Master `by` files a proposal (its signature is its approval).
pub fn propose(
    m: &mut MasterServices,
    kind: ProposalKind,
    by: u8,
) -> Result<(ProposalId, Vec<Event>), NodeError> {
    ensure_configured(m)?;
    let at_ms = m.now_ms;
    let signature = signed(m, by, &proposal_message(&kind, at_ms).map_err(gov)?.0)?;
    let id = ProposalId(m.masters.state().governance().proposals.len() as u64);
    let c = m.masters.submit(Command::Propose {
        kind,
        by,
        at_ms,
        signature,
    })?;
    Ok((id, c.events))
}

/// Master `by` proposes the next policy version with `params`, active from the
/// epoch after its approval (tasks keep the version of their admission).
pub fn propose_policy(
    m: &mut MasterServices,
    params: symphony_economics::PolicyParams,
    max_tasks_per_epoch: Option<u64>,
    by: u8,
) -> Result<ProposalId, NodeError> {
    let version =
        symphony_core::ids::PolicyVersion(m.masters.state().active_policy_version().0 + 1);
    let (id, _) = propose(
        m,
        ProposalKind::PolicyChange {
            version,
            params: Box::new(params),
            max_tasks_per_epoch,
        },
        by,
    )?;
    Ok(id)
}

/// Brings this master's policy registry up to the replicated state: every enacted
/// policy change is registered with the epoch it activated in (the registry then
/// resolves each task by the version of its admission).
pub fn sync_policy(m: &mut MasterServices) -> Result<(), NodeError> {
    let enacted: Vec<(
        symphony_core::ids::PolicyVersion,
        symphony_economics::PolicyParams,
        EpochId,
        EpochId,
    )> = m
        .masters
        .state()
        .governance()
        .proposals
        .values()
        .filter_map(|p| match (&p.kind, p.enacted_in) {
            (
                ProposalKind::PolicyChange {
                    version, params, ..
                },
                Some(active),
            ) => Some((*version, (**params).clone(), p.proposed_in, active)),
            _ => None,
        })
        .collect();
    for (version, params, proposed_in, active) in enacted {
        if m.policy.record(version).is_some() {
            continue;
        }
        let registered = m
            .policy
            .propose(params, proposed_in, active)
            .map_err(|e| NodeError::Refused(format!("policy registry: {e}")))?;
        if registered != version {
            return Err(NodeError::Refused(format!(
                "policy registry registered {registered}, the replicated state enacted {version}"
            )));
        }
    }
    Ok(())
}

/// The semantic registry of later admissions: the masters' (the catalog with
/// every enacted `attribute_promotion`, `MasterState::semantic_registry`) once a
/// promotion was enacted; until then the registry `m` started with. A task keeps
/// the version of its admission (its plan carries it).
pub fn sync_semantic(m: &mut MasterServices) -> Result<(), NodeError> {
    let state = m.masters.state();
    let promoted = state.governance().proposals.values().any(|p| {
        p.status == symphony_master::ProposalStatus::Enacted
            && matches!(p.kind, ProposalKind::AttributePromotion { .. })
    });
    if !promoted {
        return Ok(());
    }
    let registry = state.semantic_registry().map_err(gov)?;
    if registry.semantic_version() != m.semantic.semantic_version() {
        m.semantic = registry;
    }
    Ok(())
}

/// Master `by` votes on `id`.
pub fn vote(
    m: &mut MasterServices,
    id: ProposalId,
    by: u8,
    approve: bool,
) -> Result<Vec<Event>, NodeError> {
    let signature = signed(m, by, &vote_message(id, approve).map_err(gov)?.0)?;
    let c = m.masters.submit(Command::Vote {
        proposal: id,
        by,
        approve,
        at_ms: m.now_ms,
        signature,
    })?;
    if c.events
        .iter()
        .any(|e| matches!(e, Event::SemanticVersionEnacted { .. }))
    {
        sync_semantic(m)?;
    }
    if c.events
        .iter()
        .any(|e| matches!(e, Event::ProposalEnacted { .. }))
        && !m.masters.state().governance().pending_duties.is_empty()
    {
        // What the enacted proposal owes the ledger: a member's bond, a slash, a
        // rejected task's charge.
        let params = active_params(m, m.masters.state().current_epoch())?;
        crate::adjudication::run_ledger_duties(
            &mut *m.masters,
            &mut *m.ledger,
            m.settlements.as_ref(),
            &params,
        )?;
    }
    Ok(c.events)
}

/// Closes the epoch through governance: master 0 proposes `close_epoch`, master 1
/// approves (2 of 3), and the closed epoch is applied to every Vault.
pub fn close_epoch_by_proposal(
    m: &mut MasterServices,
    vaults: &[&dyn EnterpriseEndpoint],
) -> Result<EpochClose, NodeError> {
    let (id, _) = propose(m, ProposalKind::CloseEpoch, 0)?;
    let events = vote(m, id, 1, true)?;
    applied(m, vaults, &events)
}

/// Closes the epoch by time or capacity (refused unless the trigger holds) and
/// applies it to every Vault.
pub fn close_epoch(
    m: &mut MasterServices,
    trigger: CloseTrigger,
    vaults: &[&dyn EnterpriseEndpoint],
) -> Result<EpochClose, NodeError> {
    let c = m.masters.submit(Command::CloseEpoch {
        trigger,
        at_ms: m.now_ms,
    })?;
    applied(m, vaults, &c.events)
}

fn applied(
    m: &mut MasterServices,
    vaults: &[&dyn EnterpriseEndpoint],
    events: &[Event],
) -> Result<EpochClose, NodeError> {
    let Some((closed, opened, trigger)) = events.iter().find_map(|e| match e {
        Event::EpochClosed {
            epoch,
            next,
            trigger,
            ..
        } => Some((*epoch, *next, *trigger)),
        _ => None,
    }) else {
        return Err(NodeError::Refused("the epoch did not close".into()));
    };
    sync_policy(m)?;
    let vault_ids: Vec<VaultId> = vaults.iter().map(|v| v.vault_id().clone()).collect();
    let minted_micro_sym = mint_epoch_rewards(m, closed, &node_weights(&vault_ids)?)?;
    let (replenished, unreachable) = apply_epoch(m, vaults, opened)?;
    Ok(EpochClose {
        closed,
        opened,
        trigger,
        replenished,
        unreachable,
        minted_micro_sym,
    })
}

/// The nodes that share an epoch's node operation rewards: the three masters and
/// every Vault's operator, weight 1 each (every node in operation through the
/// epoch; weighting by verified availability needs uptime evidence we do not
/// collect yet).
pub fn node_weights(vaults: &[VaultId]) -> Result<Vec<(ActorId, u64)>, NodeError> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push((
            ActorId::new(format!("master-{i}")).map_err(|e| NodeError::Refused(e.to_string()))?,
            1,
        ));
    }
    for v in vaults {
        out.push((crate::settlement::vault_operator(v)?, 1));
    }
    Ok(out)
}

/// Node operation rewards of the closed `epoch`: the ledger moves to the next
/// epoch, mints the epoch's inflation by the schedule of the policy the epoch ran
/// under and pays it to `nodes` (`settlement::rewards::mint_node_operation_rewards`,
/// idempotent by epoch), and the masters record it once in the epoch's sealed
/// record. A second call (a new leader finishing the duty) moves nothing. Returns
/// what was minted.
pub fn mint_epoch_rewards(
    m: &mut MasterServices,
    epoch: EpochId,
    nodes: &[(ActorId, u64)],
) -> Result<u64, NodeError> {
    let g = m.masters.state().governance();
    let Some(record) = g.history.iter().find(|h| h.epoch == epoch) else {
        return Err(NodeError::Refused(format!(
            "{epoch} is not closed: its rewards cannot be minted yet"
        )));
    };
    if let Some(r) = &record.rewards {
        return Ok(r.minted_micro_sym);
    }
    let params = m
        .policy
        .resolve(epoch, m.semantic.semantic_version(), record.policy_version)
        .map(|r| r.params.clone())
        .map_err(|e| NodeError::Refused(format!("policy: {e}")))?;
    let next = epoch.0.saturating_add(1);
    if m.ledger.current_epoch() < next {
        m.ledger
            .advance_epoch(next)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
    }
    if m.settlements.is_none() {
        m.settlements = Some(crate::settlement::SettlementStore::in_memory()?);
    }
    let Some(store) = m.settlements.as_ref() else {
        return Err(NodeError::Io("no settlement store".into()));
    };
    let minted = crate::settlement::rewards::mint_node_operation_rewards(
        &mut *m.ledger,
        store,
        &params,
        epoch,
        nodes,
    )?;
    let recipients = if minted == 0 {
        Vec::new()
    } else {
        symphony_economics::rewards::node_operation_rewards(minted, nodes)
            .map_err(|e| NodeError::Refused(e.to_string()))?
    };
    m.masters.submit(Command::RecordEpochRewards {
        epoch,
        rewards: EpochRewards {
            minted_micro_sym: minted,
            recipients,
        },
    })?;
    Ok(minted)
}

/// Per Vault the accounts replenished, and the Vaults that could not be reached.
pub type Replenished = (Vec<(String, u64)>, Vec<String>);

/// Applies the opening of `epoch` to every Vault: each scope is replenished by the
/// policy in force in `epoch` (`epsilon_replenish_per_epoch`), once per epoch.
pub fn apply_epoch(
    m: &MasterServices,
    vaults: &[&dyn EnterpriseEndpoint],
    epoch: EpochId,
) -> Result<Replenished, NodeError> {
    let params = active_params(m, epoch)?;
    let replenish: Vec<(UsageScope, Epsilon)> = scopes()
        .into_iter()
        .map(|s| (s, params.privacy.epsilon_replenish_per_epoch.get(s)))
        .collect();
    let mut done = Vec::new();
    let mut unreachable = Vec::new();
    for v in vaults {
        match v.open_epoch(epoch, &replenish) {
            Ok(n) => done.push((v.vault_id().to_string(), n)),
            Err(NodeError::Unavailable(_)) => unreachable.push(v.vault_id().to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok((done, unreachable))
}
