//! The Admission Plane (seed 002): the caller's identity, semantic resolution,
//! epoch and policy from the Governance Service's state, authorization + consent +
//! budget reservation in every Vault, escrow, and the immutable `TaskEnvelope`
//! committed by the masters. Each step is a function; [`admit`] runs them in order.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_economics::{estimate_fee, PolicyParams};
use symphony_ledger::{AccountId, EscrowId};
use symphony_master::Command;
use symphony_semantic::ResolvedAudiencePlan;

use super::{ClassAdmission, ClassModule, Report, Request};
use crate::enterprise::EnterpriseEndpoint;
use crate::network::{MasterServices, Observer};
use crate::NodeError;

/// A task that passed admission.
pub struct Admitted {
    /// Task id.
    pub task_id: TaskId,
    /// The submitter.
    pub actor: ActorId,
    /// The committed envelope.
    pub envelope: TaskEnvelope,
    /// The resolved plan.
    pub plan: ResolvedAudiencePlan,
    /// What the class decided.
    pub class: ClassAdmission,
    /// The policy's parameters (of the envelope's policy version).
    pub params: PolicyParams,
    /// Escrow id.
    pub escrow_id: String,
    /// Escrow amount.
    pub estimate: u64,
    /// Minimum Vaults.
    pub quorum: u32,
    /// Vaults that reserved budget at admission.
    pub vaults_reserved: usize,
}

impl Admitted {
    /// The report as admission leaves it.
    pub fn report(&self) -> Report {
        Report {
            task_id: self.task_id.to_string(),
            envelope_hash: self.envelope.hash().to_hex(),
            minimum_vault_quorum: self.quorum,
            fee_locked: self.estimate,
            epsilon_committed: self.class.epsilon.to_string(),
            epoch_id: self.envelope.body().epoch_id.0,
            ..Report::default()
        }
    }
}

fn refused(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

fn account(s: impl Into<String>) -> Result<AccountId, NodeError> {
    AccountId::new(s).map_err(|e| NodeError::Ledger(e.to_string()))
}

/// Identity: the submitter is registered with this key and signed the request.
pub fn authenticate<C: ClassModule>(
    master: &MasterServices,
    req: &Request<'_, C>,
    request_hash: &symphony_core::encoding::Digest,
) -> Result<ActorId, NodeError> {
    authenticate_parts(
        master,
        req.class.submitter(),
        &req.public_key,
        req.signature,
        request_hash,
    )
}

/// [`authenticate`] from the parts of any signed request.
pub fn authenticate_parts(
    master: &MasterServices,
    submitter: &str,
    public_key: &[u8; 32],
    signature: &[u8],
    request_hash: &symphony_core::encoding::Digest,
) -> Result<ActorId, NodeError> {
    let actor = ActorId::new(submitter).map_err(refused)?;
    let known = master
        .advertisers
        .get(&actor)
        .ok_or_else(|| refused(format!("unknown caller {actor}")))?;
    if known != public_key {
        return Err(refused(format!("public key is not registered for {actor}")));
    }
    let vk = VerifyingKey::from_bytes(public_key).map_err(|_| refused("malformed public key"))?;
    let sig = Signature::from_slice(signature).map_err(|_| refused("malformed signature"))?;
    vk.verify(&request_hash.0, &sig)
        .map_err(|_| refused("request signature does not verify"))?;
    Ok(actor)
}

/// The epoch and policy version in force (Governance Service state) and the
/// parameters they resolve to with the plan's semantic version.
pub fn policy_in_force(
    master: &MasterServices,
    semantic_version: SemanticVersion,
) -> Result<(EpochId, PolicyVersion, PolicyParams), NodeError> {
    let state = master.masters.state();
    let (epoch, version) = (state.current_epoch(), state.active_policy_version());
    let resolved = master
        .policy
        .resolve(epoch, semantic_version, version)
        .map_err(refused)?;
    Ok((epoch, resolved.policy_version, resolved.params.clone()))
}

/// Authorization, consent and budget reservation in every reachable Vault. A Vault
/// that does not answer is skipped (it counts against the quorum); any other
/// refusal releases what was reserved and refuses the task.
pub fn reserve(
    master: &MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    task_id: &TaskId,
    actor: &ActorId,
    class: TaskClass,
    c: &ClassAdmission,
    obs: &mut dyn Observer,
) -> Result<Reserved, NodeError> {
    let mut consent_refs = Vec::new();
    let mut reserved_total = 0u64;
    let mut excluded_total = 0u64;
    // Every Vault reserves in parallel; the replies are then taken in Vault order,
    // all of them in before any refusal releases what the others reserved.
    let mut replies = Vec::with_capacity(endpoints.len());
    let (scope, epsilon, now_ms) = (c.usage_scope, c.epsilon, master.now_ms);
    super::for_each_vault(
        endpoints,
        |e| e.admission_reserve(task_id, actor, class, scope, epsilon, now_ms),
        |_, reply| {
            replies.push(reply);
            Ok(())
        },
    )?;
    for reply in replies {
        let r = match reply {
            Ok(r) => r,
            Err(NodeError::Unavailable(v)) => {
                obs.step("unreachable", &format!("{v} did not answer at admission"));
                continue;
            }
            Err(err) => {
                release_all(endpoints, task_id);
                return Err(err);
            }
        };
        reserved_total += r.subjects_reserved;
        excluded_total += r.subjects_excluded;
        consent_refs.push(ConsentRef {
            vault_id: r.vault_id,
            usage_scope: c.usage_scope,
            snapshot_commitment: r.snapshot_commitment,
            eligible_subjects: r.subjects_reserved,
        });
    }
    obs.step(
        "budget",
        &format!(
            "reserved ε={} for {reserved_total} consenting subjects in {} Vaults",
            c.epsilon,
            consent_refs.len()
        ),
    );
    Ok(Reserved {
        consent_refs,
        subjects_reserved: reserved_total,
        subjects_without_budget: excluded_total,
    })
}

/// What the Vaults reserved at admission.
pub struct Reserved {
    /// One consent reference per Vault that answered.
    pub consent_refs: Vec<ConsentRef>,
    /// Subjects with consent and budget, now holding a reservation.
    pub subjects_reserved: u64,
    /// Subjects with consent whose budget for the scope is exhausted.
    pub subjects_without_budget: u64,
}

/// A task that cannot reach its composition's `minimum_result_cardinality` with the
/// subjects the Vaults could reserve is refused at admission — before any escrow is
/// locked, so it costs nothing — and says why and when budgets replenish.
pub fn refuse_if_too_few(
    master: &MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    task_id: &TaskId,
    c: &ClassAdmission,
    r: &Reserved,
    minimum_result_cardinality: u64,
    params: &PolicyParams,
) -> Result<(), NodeError> {
    if r.subjects_reserved >= minimum_result_cardinality {
        return Ok(());
    }
    release_all(endpoints, task_id);
    Err(refused(too_few_message(
        master,
        c.usage_scope,
        &format!("ε {} of budget left", c.epsilon),
        r.subjects_reserved,
        r.consent_refs.len(),
        Some(r.subjects_without_budget),
        minimum_result_cardinality,
        params,
    )))
}

/// Why a task is refused at admission for too few subjects with consent and budget,
/// and when budgets replenish (every class says it the same way).
#[allow(clippy::too_many_arguments)]
pub fn too_few_message(
    master: &MasterServices,
    scope: symphony_core::consent::UsageScope,
    budget: &str,
    reserved: u64,
    vaults: usize,
    without_budget: Option<u64>,
    minimum_result_cardinality: u64,
    params: &PolicyParams,
) -> String {
    let g = master.masters.state().governance();
    let exhausted = without_budget
        .map(|n| format!(" ({n} more consented but their {scope} budget is exhausted)"))
        .unwrap_or_default();
    format!(
        "admission refused, nothing charged: {reserved} subjects have {scope} consent and \
         {budget} across {vaults} Vaults{exhausted}, below the composition's \
         minimum_result_cardinality {minimum_result_cardinality}; budgets replenish at the \
         next epoch boundary ({} is current; epochs last {} under {}; each subject then \
         regains up to ε {} of {scope} budget)",
        g.epoch,
        human_duration(g.epoch_length_ms),
        g.policy_version,
        params.privacy.epsilon_replenish_per_epoch.get(scope),
    )
}

/// A duration for people: `500 ms`, `4 s`, `90 min`, `1 h`, `1 h 30 min`.
pub fn human_duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        _ if ms.is_multiple_of(3_600_000) => format!("{} h", ms / 3_600_000),
        _ if ms >= 3_600_000 && ms.is_multiple_of(60_000) => {
            format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000)
        }
        _ if ms.is_multiple_of(60_000) => format!("{} min", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{} s", ms / 1_000),
        _ => format!("{:.1} s", ms as f64 / 1_000.0),
    }
}

/// Releases every Vault's reservation of the task (failure before execution).
pub fn release_all(endpoints: &[&dyn EnterpriseEndpoint], task_id: &TaskId) {
    for e in endpoints {
        let _ = e.release(task_id);
    }
}

/// Locks the fee estimate in escrow; a free class (`parse`) locks nothing.
pub fn lock_escrow(
    master: &mut MasterServices,
    task_id: &TaskId,
    actor: &ActorId,
    estimate: u64,
    obs: &mut dyn Observer,
) -> Result<Option<BudgetLockRef>, NodeError> {
    if estimate == 0 {
        obs.step("escrow", "free class: nothing locked");
        return Ok(None);
    }
    let escrow_id = format!("escrow-{task_id}");
    let owner = account(format!("actor:{actor}"))?;
    master
        .ledger
        .lock(
            &EscrowId::new(escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))?,
            &owner,
            estimate,
        )
        .map_err(|e| NodeError::Ledger(e.to_string()))?;
    obs.step(
        "escrow",
        &format!(
            "{} locked in {escrow_id}",
            symphony_economics::format_sym(estimate)
        ),
    );
    Ok(Some(BudgetLockRef {
        ledger: "embedded-redb".into(),
        escrow_id,
        amount_base_units: estimate,
    }))
}

/// Runs the Admission Plane: on success the envelope is committed (`accepted`).
pub fn admit<C: ClassModule>(
    master: &mut MasterServices,
    endpoints: &[&dyn EnterpriseEndpoint],
    req: &Request<'_, C>,
    obs: &mut dyn Observer,
) -> Result<Admitted, NodeError> {
    let class = req.class;
    let request_hash = class.request_hash(req.nonce)?;
    let actor = authenticate(master, req, &request_hash)?;
    obs.step(
        "admission",
        &format!("caller {actor} authenticated (ed25519)"),
    );
    let plan = class.resolve(&master.semantic)?;
    let (epoch, policy_version, params) = policy_in_force(master, plan.semantic_version())?;
    let n = endpoints.len() as u32;
    let c = class.admission(&params, n)?;
    obs.step(
        "semantics",
        &format!(
            "plan {} under {} (minimum_result_cardinality {})",
            &plan.plan_hash().to_hex()[..12],
            plan.semantic_version(),
            plan.minimum_result_cardinality()
        ),
    );
    let quorum = vault_quorum(&c, n)?;
    let task_id = master.next_task_id(&request_hash)?;
    let reserve_started = std::time::Instant::now();
    let reserved = reserve(master, endpoints, &task_id, &actor, class.class(), &c, obs)?;
    obs.phase("admission_reserve", reserve_started.elapsed());
    refuse_if_too_few(
        master,
        endpoints,
        &task_id,
        &c,
        &reserved,
        plan.minimum_result_cardinality(),
        &params,
    )?;
    let Reserved {
        consent_refs,
        subjects_reserved: reserved_total,
        ..
    } = reserved;
    let usage = class.estimate(&c, n, reserved_total);
    let estimate = estimate_fee(&params.prices, &usage).map_err(refused)?;
    let lock = lock_escrow(master, &task_id, &actor, estimate, obs)?;
    let participating: BTreeSet<VaultId> = endpoints.iter().map(|e| e.vault_id().clone()).collect();
    let body = EnvelopeBody {
        task_id: task_id.clone(),
        task_class: class.class(),
        caller: CallerContext {
            actor_id: actor.clone(),
            public_key: req.public_key,
            request_hash,
            nonce: req.nonce,
            admitted_at_ms: master.now_ms,
        },
        authorization: Authorization {
            granted_by: format!("vault-permits:{}", class.class()),
            vault_permits: consent_refs.iter().map(|c| c.vault_id.clone()).collect(),
        },
        consent_refs: consent_refs.clone(),
        semantic_version: plan.semantic_version(),
        policy_version,
        epoch_id: epoch,
        budget_reservation: BudgetReservation {
            usage_scope: c.usage_scope,
            epsilon_per_subject: c.epsilon,
            subjects_reserved: reserved_total,
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: participating,
            minimum_vault_quorum: quorum,
            aggregation_method: c.aggregation_method,
        },
        budget_lock_ref: lock.clone(),
        iteration_policy: None,
        resolved_plan_hash: plan.plan_hash(),
        constraints: c.constraints.clone(),
        deadline_ms: master.now_ms + 600_000,
    };
    let envelope = match TaskEnvelope::seal(body) {
        Ok(e) => e,
        Err(e) => {
            release_all(endpoints, &task_id);
            refund_unadmitted(master, lock.as_ref());
            return Err(e.into());
        }
    };
    if let Err(e) = master.masters.submit(Command::AdmitTask {
        envelope: Box::new(envelope.clone()),
    }) {
        // Refused by the state machine (e.g. the epoch the envelope names closed
        // while it was being sealed): nothing stays reserved or locked.
        release_all(endpoints, &task_id);
        refund_unadmitted(master, lock.as_ref());
        return Err(e.into());
    }
    obs.step(
        "accepted",
        &format!("TaskEnvelope {}", &envelope.hash().to_hex()[..16]),
    );
    Ok(Admitted {
        task_id,
        actor,
        envelope,
        plan,
        class: c,
        params,
        escrow_id: lock.map(|l| l.escrow_id).unwrap_or_default(),
        estimate,
        quorum,
        vaults_reserved: consent_refs.len(),
    })
}

/// The minimum Vault quorum of a task over `n` Vaults: the submitter's, if it lies
/// between a majority and all of them, or a majority.
pub fn vault_quorum(c: &ClassAdmission, n: u32) -> Result<u32, NodeError> {
    let majority = n / 2 + 1;
    match c.minimum_vault_quorum {
        None => Ok(majority.min(n.max(1))),
        Some(q) if (majority..=n).contains(&q) => Ok(q),
        Some(q) => Err(NodeError::Refused(format!(
            "invalid spec, nothing reserved or charged: minimum_vault_quorum {q} is outside \
             {majority}..={n} (a majority of the network's {n} Vaults up to all of them)"
        ))),
    }
}

/// An envelope that could not be sealed was never admitted: its escrow goes back.
fn refund_unadmitted(master: &mut MasterServices, lock: Option<&BudgetLockRef>) {
    if let Some(l) = lock {
        if let Ok(id) = EscrowId::new(l.escrow_id.clone()) {
            let _ = master.ledger.refund(&id, l.amount_base_units);
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use super::human_duration;

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            (500, "500 ms"),
            (4_000, "4 s"),
            (1_500, "1.5 s"),
            (5_400_000, "1 h 30 min"),
            (3_600_000, "1 h"),
            (90_000, "90 s"),
            (120_000, "2 min"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration(ms), want, "{ms}");
        }
    }
}
