//! A producer's Personal Vault (seed 002, "Receipt Upload to Personal Vault"): a
//! Vault owned by one producer — its key file is theirs, its one subject is them —
//! with the storage and encryption of an enterprise Vault, hosted by an enterprise
//! node (the host's enclave platform: the same attestation verifier accepts it).
//! It takes part in `query`/`compute`/`train` tasks like any Vault, under the
//! producer's own consent and privacy budget.
//!
//! Also here: the data quality rewards a Vault pays its producers at an epoch's
//! close ([`pay_quality_rewards`]), and the producer's view of consent, budget,
//! earnings and stake ([`consent_view`], [`budget_view`], [`earnings`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::consent::{ConsentChange, UsageScope};
use symphony_core::ids::{ActorId, EpochId, SubjectId, VaultId};
use symphony_core::TaskClass;
use symphony_economics::quality::{epoch_quality_rewards, producer_net, QualityParams};
use symphony_economics::PolicyParams;
use symphony_enclave::SoftwareEnclave;
use symphony_ledger::{
    AccountId, LedgerEvent, PayoutId, PayoutInstruction, PayoutInstructionSet, PayoutKind,
    PayoutSource, SettlementLedger, StakeTier,
};
pub use symphony_master::ActorRegistry;
use symphony_master::Command;
use symphony_vault::record::{ContactKind, Geography, Identity, Record};
use symphony_vault::Vault;

use crate::bundle::slice_code_identity;
use crate::enterprise::EnterpriseNode;
use crate::network::{create_vault, key_from, EmbeddedNetwork};
use crate::replication::Replicator;
use crate::settlement::actor_account;
use crate::settlement::store::SettlementStore;
use crate::NodeError;

/// Who a Personal Vault belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProducerProfile {
    /// The producer's subject id (their actor is `producer:<subject>`).
    pub subject: String,
    /// Contact handle (E.164 phone), delivered to an advertiser only through a
    /// campaign the producer consented to.
    pub contact: String,
    /// Home city and country (ISO 3166-1 alpha-2).
    pub home_city: String,
    /// Home country.
    pub home_country: String,
    /// Scopes consented to at creation (`personal` is always granted: uploads need it).
    pub consents: Vec<UsageScope>,
}

/// The producer actor of a subject id (`producer:<subject>`, as dividends name it).
pub fn producer_actor_of(subject: &str) -> Result<ActorId, NodeError> {
    ActorId::new(format!("producer:{subject}")).map_err(|e| NodeError::Refused(e.to_string()))
}

/// The Personal Vault id of a producer (`pv-<subject>`).
pub fn personal_vault_id(subject: &str) -> Result<VaultId, NodeError> {
    VaultId::new(format!("pv-{subject}")).map_err(|e| NodeError::Refused(e.to_string()))
}

fn refused(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

impl EmbeddedNetwork {
    /// Creates `profile`'s Personal Vault, hosted by enterprise node `host`, and
    /// adds it to the network. Its key is written beside it
    /// (`vaults/pv-<subject>.key`): the producer holds it. The producer is
    /// permitted to `parse`; the network's submitters to `query` and `compute`
    /// (the producer's consent and budget still decide, inside the Vault).
    pub fn add_personal_vault(
        &mut self,
        dir: &std::path::Path,
        profile: &ProducerProfile,
        host: usize,
        at_ms: u64,
    ) -> Result<VaultId, NodeError> {
        if host >= self.enterprises.len() {
            return Err(NodeError::Refused(format!(
                "host: enterprise node {host} does not exist ({} nodes)",
                self.enterprises.len()
            )));
        }
        let vault_id = personal_vault_id(&profile.subject)?;
        if self.enterprises.iter().any(|e| e.vault_id() == &vault_id) {
            return Err(NodeError::Refused(format!("{vault_id} already exists")));
        }
        let subject = SubjectId::new(profile.subject.clone()).map_err(refused)?;
        let vid = vault_id.to_string();
        let vault = create_vault(dir, self.seed, &vid, vault_id.clone())?;
        let key = symphony_vault::VaultKey::from_bytes(
            key_from(self.seed, &format!("scp/vault-key/{vid}")).to_bytes(),
        );
        key.save(&dir.join("vaults").join(format!("{vid}.key")))?;
        vault.insert_batch(&[
            (
                subject.clone(),
                Record::Identity(Identity {
                    contact_kind: ContactKind::Phone,
                    contact: profile.contact.clone(),
                }),
            ),
            (
                subject.clone(),
                Record::Geography(Geography {
                    home_city: profile.home_city.clone(),
                    home_country: profile.home_country.clone(),
                }),
            ),
        ])?;
        let mut scopes = vec![UsageScope::Personal];
        scopes.extend(
            profile
                .consents
                .iter()
                .filter(|s| **s != UsageScope::Personal),
        );
        let grants: Vec<_> = scopes
            .iter()
            .map(|s| {
                (
                    subject.clone(),
                    *s,
                    ConsentChange {
                        at_ms,
                        granted: true,
                    },
                )
            })
            .collect();
        vault.record_consent(&grants)?;
        vault.permit(&producer_actor_of(&profile.subject)?, TaskClass::Parse)?;
        for submitter in self.master.advertisers.keys() {
            for class in [TaskClass::Query, TaskClass::Compute] {
                vault.permit(submitter, class)?;
            }
        }
        // Hosted by `host`: the enclave runs on the host's platform.
        let platform = key_from(self.seed, &format!("scp/enterprise-platform/{host}"));
        let enclave = SoftwareEnclave::new(platform, &slice_code_identity());
        self.enterprises.push(EnterpriseNode::new(vault, enclave));
        Ok(vault_id)
    }
}

/// What [`pay_quality_rewards`] paid.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QualityPayout {
    /// Records scored in the epoch.
    pub records: u64,
    /// Gross rewards instructed, µSYM.
    pub gross_micro_sym: u64,
    /// Per producer.
    pub producers: Vec<ProducerReward>,
}

/// One producer's quality reward of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerReward {
    /// The producer actor.
    pub producer: String,
    /// Gross, µSYM.
    pub gross_micro_sym: u64,
    /// Whether the actor registry holds its `S_producer`.
    pub staked: bool,
    /// What it receives: all when staked, the unstaked share when not.
    pub net_micro_sym: u64,
}

/// Run by the Vault at the close of `epoch`: its producers' data quality rewards
/// from the scores of the receipts parsed in that epoch, paid from the treasury
/// through the reward contract (`PayoutKind::DataQualityReward`: 100% to a staked
/// producer, 50% to an unstaked one, the rest to the epoch reward pool). Idempotent
/// by payout id (`quality-<vault>-<epoch>`).
///
/// "Staked" is the actor registry's entry ([`ActorRegistry::holds_producer_stake`]
/// under `policy`'s `S_producer`); the reward contract applies the multiplier from
/// its staking contract, so the two must agree: a producer they disagree on is
/// named and nothing is paid.
pub fn pay_quality_rewards(
    ledger: &mut dyn SettlementLedger,
    store: Option<&SettlementStore>,
    registry: &ActorRegistry,
    policy: &PolicyParams,
    vault: &Vault,
    epoch: EpochId,
    params: &QualityParams,
) -> Result<QualityPayout, NodeError> {
    let mut scores = Vec::new();
    for row in vault.parsed_records()? {
        if row.epoch == epoch {
            scores.push((producer_actor_of(row.subject.as_str())?, row.score_bp));
        }
    }
    let rewards = epoch_quality_rewards(params, &scores).map_err(refused)?;
    let s_producer = policy.staking.s_producer_micro_sym;
    let mut staked = Vec::with_capacity(rewards.len());
    for r in &rewards {
        let registered = registry.holds_producer_stake(&r.producer, s_producer);
        let bonded = ledger.is_staked(&actor_account(&r.producer)?, StakeTier::Producer);
        if registered != bonded {
            return Err(NodeError::Refused(format!(
                "quality rewards of {} for epoch {}: {}: the actor registry says {} but the \
                 staking contract says {}; nothing was paid (register the bonded stake through \
                 the masters first)",
                vault.vault_id(),
                epoch.0,
                r.producer,
                if registered { "staked" } else { "not staked" },
                if bonded { "bonded" } else { "not bonded" },
            )));
        }
        staked.push(registered);
    }
    let instructions = rewards
        .iter()
        .filter(|r| r.gross_micro_sym > 0)
        .map(|r| {
            Ok(PayoutInstruction {
                recipient: actor_account(&r.producer)?,
                amount: r.gross_micro_sym,
                kind: PayoutKind::DataQualityReward,
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let gross: u64 = instructions.iter().map(|i| i.amount).sum();
    let out = QualityPayout {
        records: scores.len() as u64,
        gross_micro_sym: gross,
        producers: rewards
            .iter()
            .zip(&staked)
            .map(|(r, staked)| ProducerReward {
                producer: r.producer.to_string(),
                gross_micro_sym: r.gross_micro_sym,
                staked: *staked,
                net_micro_sym: producer_net(
                    r.gross_micro_sym,
                    *staked,
                    policy.staking.unstaked_producer_multiplier_bp,
                ),
            })
            .collect(),
    };
    if instructions.is_empty() {
        return Ok(out);
    }
    let treasury = ledger.treasury_balance();
    let set = PayoutInstructionSet {
        payout_id: PayoutId::new(format!("quality-{}-{}", vault.vault_id(), epoch.0))
            .map_err(refused)?,
        epoch_id: epoch.0,
        settlement_ref: format!("quality:{}:{}", vault.vault_id(), epoch.0),
        instructions,
    };
    match ledger.distribute(PayoutSource::Treasury, &set) {
        Ok(_) => {}
        Err(e) => {
            return Err(NodeError::Ledger(format!(
                "quality rewards of {} for epoch {}: {gross} µSYM from the treasury \
                 (balance {treasury} µSYM): {e}",
                vault.vault_id(),
                epoch.0
            )))
        }
    }
    if let Some(store) = store {
        store.append_epoch_payout(&set)?;
    }
    Ok(out)
}

/// One consent change, for the producer's view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsentEntry {
    /// `grant` or `revoke`.
    pub change: String,
    /// When, ms.
    pub at_ms: u64,
}

/// Consent per scope: in force now, and its history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScopeConsent {
    /// The scope.
    pub scope: String,
    /// In force at the time asked.
    pub granted: bool,
    /// Every change, oldest first.
    pub history: Vec<ConsentEntry>,
}

/// The producer's consent per scope at `at_ms`.
pub fn consent_view(
    vault: &Vault,
    subject: &SubjectId,
    at_ms: u64,
) -> Result<Vec<ScopeConsent>, NodeError> {
    UsageScope::ALL
        .iter()
        .map(|scope| {
            let h = vault.consent_history(subject, *scope)?;
            Ok(ScopeConsent {
                scope: scope.to_string(),
                granted: h.is_granted_at(at_ms),
                history: h
                    .changes()
                    .iter()
                    .map(|c| ConsentEntry {
                        change: if c.granted { "grant" } else { "revoke" }.into(),
                        at_ms: c.at_ms,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Grants or revokes the producer's consent for `scope` at `at_ms` (append-only:
/// a change dated before the last one is refused). A revocation blocks new tasks;
/// settled work stands.
pub fn set_consent(
    vault: &Vault,
    subject: &SubjectId,
    scope: UsageScope,
    granted: bool,
    at_ms: u64,
) -> Result<(), NodeError> {
    if scope == UsageScope::Personal && !granted {
        return Err(NodeError::Refused(
            "personal: the producer's own scope (uploads to their Personal Vault) cannot be revoked here; erase the Vault instead".into(),
        ));
    }
    vault.record_consent(&[(subject.clone(), scope, ConsentChange { at_ms, granted })])?;
    Ok(())
}

/// Remaining privacy budget per scope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScopeBudget {
    /// The scope.
    pub scope: String,
    /// Capacity per epoch, ε.
    pub capacity: String,
    /// Reserved by running tasks.
    pub reserved: String,
    /// Committed (spent).
    pub committed: String,
    /// Remaining.
    pub remaining: String,
    /// Replenished at each epoch boundary by this much (capped at capacity).
    pub replenishes_per_epoch: String,
    /// The epoch of the last replenishment; the next is at the close of the current one.
    pub last_replenished_epoch: u64,
}

/// The producer's budget per scope.
pub fn budget_view(
    vault: &Vault,
    subject: &SubjectId,
    policy: &PolicyParams,
) -> Result<Vec<ScopeBudget>, NodeError> {
    UsageScope::ALL
        .iter()
        .map(|scope| {
            let a = vault.budget_account(subject, *scope)?;
            Ok(ScopeBudget {
                scope: scope.to_string(),
                capacity: a.capacity().to_string(),
                reserved: a.reserved().to_string(),
                committed: a.committed().to_string(),
                remaining: a.remaining().to_string(),
                replenishes_per_epoch: policy
                    .privacy
                    .epsilon_replenish_per_epoch
                    .get(*scope)
                    .to_string(),
                last_replenished_epoch: a.last_replenished().0,
            })
        })
        .collect()
}

/// One payment to the producer, as the ledger executed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earning {
    /// Epoch of the payout.
    pub epoch: u64,
    /// `data_quality_reward` or `data_usage_dividend`.
    pub kind: String,
    /// The task (dividends) or `quality:<vault>:<epoch>`.
    pub reference: String,
    /// Instructed amount, µSYM.
    pub gross_micro_sym: u64,
    /// Received (after the staking multiplier), µSYM.
    pub net_micro_sym: u64,
}

/// Earnings of `producer`, by epoch, from the ledger's events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Earnings {
    /// Every payment, oldest first.
    pub payments: Vec<Earning>,
    /// Σ net per epoch and kind.
    pub by_epoch: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Σ net, µSYM.
    pub total_net_micro_sym: u64,
    /// Current balance, µSYM.
    pub balance_micro_sym: u64,
    /// Bonded stake registered in the actor registry, µSYM.
    pub stake_micro_sym: u64,
    /// Bonded on the ledger's staking contract, µSYM (equal to the registered
    /// stake once the masters registered it).
    pub ledger_bonded_micro_sym: u64,
    /// Whether the actor registry holds the producer's `S_producer` (100% of
    /// rewards, else 50%).
    pub staked: bool,
}

/// The producer's earnings, read from the settlement ledger's events, and its
/// stake as the actor registry holds it (`S_producer` under `policy`).
pub fn earnings(
    ledger: &dyn SettlementLedger,
    registry: &ActorRegistry,
    policy: &PolicyParams,
    producer: &ActorId,
) -> Result<Earnings, NodeError> {
    let account = actor_account(producer)?;
    let mut refs: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut out = Earnings::default();
    let mut from = 0u64;
    loop {
        let batch = ledger
            .events(from, 1_000)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        let Some((last, _)) = batch.last() else { break };
        from = last + 1;
        for (_, event) in batch {
            match event {
                LedgerEvent::PayoutExecuted {
                    payout_id,
                    epoch_id,
                    settlement_ref,
                    ..
                } => {
                    refs.insert(payout_id.to_string(), (epoch_id, settlement_ref));
                }
                LedgerEvent::RewardPaid {
                    payout_id,
                    recipient,
                    kind,
                    gross,
                    net,
                    ..
                } if recipient == account
                    && matches!(
                        kind,
                        PayoutKind::DataQualityReward | PayoutKind::DataUsageDividend
                    ) =>
                {
                    let (epoch, reference) = refs
                        .get(&payout_id.to_string())
                        .cloned()
                        .unwrap_or_default();
                    let kind = match kind {
                        PayoutKind::DataQualityReward => "data_quality_reward",
                        _ => "data_usage_dividend",
                    };
                    *out.by_epoch
                        .entry(epoch)
                        .or_default()
                        .entry(kind.into())
                        .or_default() += net;
                    out.total_net_micro_sym = out.total_net_micro_sym.saturating_add(net);
                    out.payments.push(Earning {
                        epoch,
                        kind: kind.into(),
                        reference,
                        gross_micro_sym: gross,
                        net_micro_sym: net,
                    });
                }
                _ => {}
            }
        }
    }
    out.balance_micro_sym = ledger.balance(&account);
    out.ledger_bonded_micro_sym = ledger.stake_of(&account);
    out.stake_micro_sym = registry
        .actors
        .get(producer)
        .map_or(0, |r| r.bonded_micro_sym);
    out.staked = registry.holds_producer_stake(producer, policy.staking.s_producer_micro_sym);
    Ok(out)
}

/// Bonds `S_producer` of the producer's balance on the staking contract and
/// registers it in the masters' actor registry
/// ([`Command::RegisterProducerStake`]): from then on its rewards are 100%. A
/// bond left unregistered by an earlier crash is registered without bonding again.
/// Returns the registered stake.
pub fn stake(
    ledger: &mut dyn SettlementLedger,
    masters: &mut dyn Replicator,
    producer: &ActorId,
    policy: &PolicyParams,
) -> Result<u64, NodeError> {
    let account = actor_account(producer)?;
    let amount = policy.staking.s_producer_micro_sym;
    if let Some(r) = masters.state().governance().registry.actors.get(producer) {
        return Err(NodeError::Refused(format!(
            "{producer} is already in the actor registry ({} µSYM bonded)",
            r.bonded_micro_sym
        )));
    }
    let bonded = if ledger.is_staked(&account, StakeTier::Producer) {
        ledger.stake_of(&account)
    } else {
        ledger
            .bond(&account, StakeTier::Producer, amount)
            .map_err(|e| {
                NodeError::Ledger(format!(
                    "{producer}: bonding S_producer = {amount} µSYM (balance {} µSYM): {e}",
                    ledger.balance(&account)
                ))
            })?;
        amount
    };
    masters.submit(Command::RegisterProducerStake {
        actor: producer.clone(),
        bonded_micro_sym: bonded,
    })?;
    Ok(bonded)
}

impl crate::network::MasterServices {
    /// The policy parameters in force.
    fn params_in_force(&self) -> Result<PolicyParams, NodeError> {
        let v = self.semantic.semantic_version();
        Ok(crate::planes::admission::policy_in_force(self, v)?.2)
    }

    /// [`earnings`] of `producer` on these masters' ledger and actor registry.
    pub fn producer_earnings(&self, producer: &ActorId) -> Result<Earnings, NodeError> {
        earnings(
            &*self.ledger,
            &self.masters.state().governance().registry,
            &self.params_in_force()?,
            producer,
        )
    }

    /// [`stake`]: bonds `producer`'s `S_producer` and registers it with the masters.
    pub fn producer_stake(&mut self, producer: &ActorId) -> Result<u64, NodeError> {
        let params = self.params_in_force()?;
        stake(&mut *self.ledger, &mut *self.masters, producer, &params)
    }

    /// [`pay_quality_rewards`] of `vault` for `epoch` under the registry and policy
    /// in force.
    pub fn pay_quality_rewards(
        &mut self,
        vault: &Vault,
        epoch: EpochId,
        params: &QualityParams,
    ) -> Result<QualityPayout, NodeError> {
        let policy = self.params_in_force()?;
        pay_quality_rewards(
            &mut *self.ledger,
            self.settlements.as_ref(),
            &self.masters.state().governance().registry,
            &policy,
            vault,
            epoch,
            params,
        )
    }
}

/// Convenience for tests and demos: the account of a producer.
pub fn producer_account(subject: &str) -> Result<AccountId, NodeError> {
    actor_account(&producer_actor_of(subject)?)
}
