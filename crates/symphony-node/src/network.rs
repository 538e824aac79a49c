//! The embedded network: three masters (replicated state machine with commit
//! certificates), several enterprise nodes with seeded Vaults, the settlement
//! ledger — all in one process, running the same service code a deployment runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{canonical_bytes, tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SliceState, TaskEvent};
use symphony_economics::pricing::QueryUsage;
use symphony_economics::{estimate_fee, PolicyParams, PolicyRegistry, TaskUsage};
use symphony_enclave::{SoftwareAttestationVerifier, SoftwareEnclave};
use symphony_ledger::{AccountId, EscrowId, Genesis, LedgerConfig, RedbLedger, SettlementLedger};
use symphony_master::{AggregateRecord, Command, SliceRecord};
use symphony_semantic::{AudienceIntent, SemanticRegistry};
use symphony_vault::{
    GenerateParams, GenerateSummary, ImportOptions, Vault, VaultConfig, VaultKey,
};

use crate::aggregation::{aggregate, AggregationParams, SelectionPolicy};
use crate::bundle::SliceResultBundle;
use crate::bundle::{aggregation_code_identity, slice_code_identity, SliceAssignment};
use crate::enterprise::{AdmissionReply, EnterpriseEndpoint, EnterpriseNode};
use crate::replication::{LocalReplicator, Replicator};
use crate::settlement::embedded::{
    evidence_of, genesis_stakes, pay_embedded_vault_dividends, Settled,
};
use crate::settlement::{SettlementInputs, SettlementStore};
use crate::verify::{verify_aggregate, verify_slice};
use crate::NodeError;

/// Reports progress to whoever drives the network (the CLI draws it).
pub trait Observer {
    /// A protocol step happened.
    fn step(&mut self, name: &str, detail: &str);
    /// Progress of a long step.
    fn progress(&mut self, label: &str, done: u64, total: u64);
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {
    fn step(&mut self, _: &str, _: &str) {}
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
}

/// How to build the network.
#[derive(Clone, Debug)]
pub struct NetworkParams {
    /// People in the synthetic population.
    pub subjects: u64,
    /// Enterprise nodes (one Vault each).
    pub vaults: u32,
    /// Purchase records in total.
    pub records: u64,
    /// Seed of everything.
    pub seed: u64,
    /// "Now", ms since the Unix epoch (injected, never read from a clock).
    pub now_ms: u64,
}

/// An advertiser's campaign, as written in `examples/luckin.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// Advertiser identity.
    pub advertiser: String,
    /// Brand bought.
    pub brand: String,
    /// Country (ISO code as in the Vault data, e.g. `SG`).
    pub country: String,
    /// Optional city.
    #[serde(default)]
    pub city: Option<String>,
    /// Eligibility window.
    pub window_days: u32,
    /// Audience cap.
    pub audience_cap: u64,
    /// Selection when more are eligible than the cap.
    pub selection: SelectionPolicy,
    /// Usage scope (marketing).
    pub usage_scope: UsageScope,
    /// Seed of the selection.
    #[serde(default)]
    pub selection_seed: u64,
    /// Minimum Vaults that must respond (default: a majority).
    #[serde(default)]
    pub minimum_vault_quorum: Option<u32>,
}

/// A signed submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The campaign.
    pub spec: CampaignSpec,
    /// Replay protection.
    pub nonce: u64,
    /// Submitter's public key.
    pub public_key: [u8; 32],
    /// Signature over the canonical bytes of `(spec, nonce)`.
    pub signature: Vec<u8>,
}

impl SignedRequest {
    /// Signs a campaign.
    pub fn sign(spec: CampaignSpec, nonce: u64, key: &SigningKey) -> Result<Self, NodeError> {
        let msg = request_hash(&spec, nonce)?;
        Ok(SignedRequest {
            spec,
            nonce,
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&msg.0).to_bytes().to_vec(),
        })
    }
}

/// The hash a submitter signs for a campaign `(spec, nonce)`.
pub fn request_hash(spec: &CampaignSpec, nonce: u64) -> Result<Digest, NodeError> {
    let bytes = canonical_bytes(&(spec, nonce)).map_err(|e| NodeError::Encoding(e.to_string()))?;
    Ok(tagged_hash("scp/request/v1", &bytes))
}

/// What a campaign run produced (the `--json` of `symphony demo luckin`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CampaignOutcome {
    /// Task id.
    pub task_id: String,
    /// Envelope hash.
    pub envelope_hash: String,
    /// Lifecycle states in order.
    pub states: Vec<String>,
    /// Why it was rejected, if it was.
    pub reason: Option<String>,
    /// Distinct eligible subjects before the cap.
    pub eligible_count: u64,
    /// Delivered handles.
    pub delivered_count: u64,
    /// The cap.
    pub audience_cap: u64,
    /// Slices verified.
    pub vaults_responded: u32,
    /// Quorum.
    pub minimum_vault_quorum: u32,
    /// Escrow locked at admission.
    pub fee_locked: u64,
    /// Fee charged.
    pub fee_total: u64,
    /// Recipient → amount.
    pub fee_shares: BTreeMap<String, u64>,
    /// Refund to the submitter.
    pub refund: u64,
    /// Attestation reports verified.
    pub attestations_verified: u32,
    /// ε committed per evaluated subject.
    pub epsilon_committed: String,
    /// Subjects evaluated across Vaults.
    pub subjects_evaluated: u64,
    /// Settlement state.
    pub settlement_state: Option<String>,
    /// Epoch.
    pub epoch_id: u64,
    /// Commit certificate signatures on the final state.
    pub certificate_signatures: usize,
    /// The delivered contact handles (only on completion).
    pub audience: Vec<String>,
}

/// A way to corrupt a slice bundle in transit (tests of verification).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one byte of the result body (a contact handle).
    FlipByte,
    /// Re-attest the run from an enclave whose code is not allow-listed.
    WrongMeasurement,
    /// Replace the attestation signature with garbage.
    ForgedSignature,
}

fn apply_tamper(
    mut bundle: crate::bundle::SliceResultBundle,
    tamper: Option<Tamper>,
    seed: u64,
) -> crate::bundle::SliceResultBundle {
    use symphony_enclave::Tee;
    match tamper {
        None => {}
        Some(Tamper::FlipByte) => {
            if let Some(sig) = bundle.body.signals.first_mut() {
                let mut bytes = sig.contact_handle.clone().into_bytes();
                if let Some(b) = bytes.first_mut() {
                    *b ^= 0x01;
                }
                sig.contact_handle = String::from_utf8_lossy(&bytes).into_owned();
            } else {
                bundle.body.subjects_evaluated ^= 1;
            }
        }
        Some(Tamper::WrongMeasurement) => {
            let rogue = SoftwareEnclave::new(
                key_from(seed, "scp/enterprise-platform/0"),
                &symphony_enclave::CodeIdentity::new("rogue-eligibility", "1", [9u8; 32]),
            );
            let a = &bundle.attestation;
            if let Ok(r) = rogue.attest(a.report_data, a.nonce, a.issued_at_ms) {
                bundle.attestation = r;
            }
        }
        Some(Tamper::ForgedSignature) => {
            bundle.attestation.signature = [0x42; 64];
        }
    }
    bundle
}

/// The embedded network.
/// The master-side services every master runs: the replicated state machine,
/// the aggregation enclave, the attestation verifier, the settlement ledger, the
/// policy and semantic registries and the registered callers. The embedded network
/// and a deployed master use this same code.
pub struct MasterServices {
    /// The replicated master state machine.
    pub masters: Box<dyn Replicator + Send>,
    /// The aggregation runtime's enclave.
    pub aggregator: SoftwareEnclave,
    /// Verifier of attestation evidence.
    pub verifier: SoftwareAttestationVerifier,
    /// Settlement ledger.
    pub ledger: Box<dyn SettlementLedger + Send>,
    /// Policy versions.
    pub policy: PolicyRegistry,
    /// Semantic registry.
    pub semantic: SemanticRegistry,
    /// Registered task submitters and their public keys.
    pub advertisers: BTreeMap<ActorId, [u8; 32]>,
    /// "Now", ms (the leader's injected time).
    pub now_ms: u64,
    /// Persisted settlement state (`settlement.redb`); in memory when `None` at the
    /// first settlement.
    pub settlements: Option<SettlementStore>,
    /// Where a verified result is staged before settlement pays anyone (a deployed
    /// master replicates it, so a master taking over after a crash can deliver it).
    pub result_stage: Option<Box<dyn ResultStage + Send>>,
    next_task: u64,
}

/// Keeps a verified result where the other masters can reach it, before the
/// settlement plane moves money. Without it a leader that crashes between the payout
/// and the delivery takes the only copy of what the submitter paid for with it.
pub trait ResultStage {
    /// Stages `audience` (hashing to `result_hash`, the aggregate recorded for
    /// `task_id`). Called once per task, after verification, before settlement.
    fn stage(
        &mut self,
        task_id: &TaskId,
        result_hash: &Digest,
        audience: &[String],
    ) -> Result<(), NodeError>;
}

/// The outcome of a completed task, rebuilt from the replicated master state and
/// the staged result: what a master that takes over after the leader crashed
/// between payout and delivery returns to the submitter. `None` unless the task is
/// completed with a finalized settlement and an aggregate.
pub fn recovered_outcome(
    state: &symphony_master::MasterState,
    task_id: &TaskId,
    audience: Vec<String>,
    certificate_signatures: usize,
) -> Option<CampaignOutcome> {
    use symphony_core::lifecycle::{SettlementState, TaskState};
    let rec = state.task(task_id)?;
    let settlement = rec.settlement.as_ref()?;
    let aggregate = rec.aggregate.as_ref()?;
    if rec.state != TaskState::Completed || settlement.state != SettlementState::Finalized {
        return None;
    }
    let body = rec.envelope.body();
    let verified = rec
        .slices
        .values()
        .filter(|s| s.state == SliceState::Verified)
        .count() as u32;
    Some(CampaignOutcome {
        task_id: task_id.to_string(),
        envelope_hash: rec.envelope.hash().to_hex(),
        states: rec.history.iter().map(|s| s.to_string()).collect(),
        reason: rec.reason.clone(),
        eligible_count: aggregate.eligible_count,
        delivered_count: audience.len() as u64,
        audience_cap: body
            .constraints
            .get("audience_cap")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        vaults_responded: verified,
        minimum_vault_quorum: body.coordination_envelope.minimum_vault_quorum,
        fee_locked: body
            .budget_lock_ref
            .as_ref()
            .map_or(0, |b| b.amount_base_units),
        fee_total: settlement.fee_total,
        fee_shares: settlement.fee_shares.clone(),
        refund: settlement.refund,
        // The slices' attestations and the aggregation enclave's.
        attestations_verified: verified + 1,
        epsilon_committed: body.budget_reservation.epsilon_per_subject.to_string(),
        subjects_evaluated: rec.slices.values().map(|s| s.subjects_evaluated).sum(),
        settlement_state: Some(settlement.state.to_string()),
        epoch_id: settlement.epoch_id.0,
        certificate_signatures,
        audience,
    })
}

/// The embedded network.
pub struct EmbeddedNetwork {
    /// The masters' services.
    pub master: MasterServices,
    /// Enterprise nodes.
    pub enterprises: Vec<EnterpriseNode>,
    /// Enterprise nodes that are down (fault injection).
    pub down: BTreeSet<VaultId>,
    /// Tamper with the first Vault's bundle before verification (fault injection).
    pub tamper: Option<Tamper>,
    seed: u64,
    /// The generated data set.
    pub generated: GenerateSummary,
}

/// An enterprise endpoint that is down: every call fails as unreachable.
struct Unreachable<'a>(&'a VaultId);

impl EnterpriseEndpoint for Unreachable<'_> {
    fn vault_id(&self) -> &VaultId {
        self.0
    }
    fn admission_reserve(
        &self,
        _: &TaskId,
        _: &ActorId,
        _: TaskClass,
        _: UsageScope,
        _: Epsilon,
        _: u64,
    ) -> Result<AdmissionReply, NodeError> {
        Err(NodeError::Unavailable(self.0.to_string()))
    }
    fn execute_slice(&self, _: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        Err(NodeError::Unavailable(self.0.to_string()))
    }
    fn release(&self, _: &TaskId) -> Result<u64, NodeError> {
        Err(NodeError::Unavailable(self.0.to_string()))
    }
}

/// An endpoint whose bundles are corrupted in transit.
struct Tampering<'a> {
    inner: &'a EnterpriseNode,
    tamper: Tamper,
    seed: u64,
}

impl EnterpriseEndpoint for Tampering<'_> {
    fn vault_id(&self) -> &VaultId {
        self.inner.vault_id()
    }
    fn admission_reserve(
        &self,
        task: &TaskId,
        actor: &ActorId,
        class: TaskClass,
        scope: UsageScope,
        epsilon: Epsilon,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        self.inner
            .admission_reserve(task, actor, class, scope, epsilon, at_ms)
    }
    fn execute_slice(&self, a: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        self.inner
            .execute_slice(a)
            .map(|b| apply_tamper(b, Some(self.tamper), self.seed))
    }
    fn release(&self, task: &TaskId) -> Result<u64, NodeError> {
        EnterpriseEndpoint::release(self.inner, task)
    }
}

fn key_from(seed: u64, label: &str) -> SigningKey {
    let d = tagged_hash(label, &seed.to_le_bytes());
    SigningKey::from_bytes(&d.0)
}

/// The advertiser key the embedded network registers for `advertiser` under `seed`.
pub fn advertiser_key(seed: u64, advertiser: &str) -> SigningKey {
    key_from(seed, &format!("scp/advertiser/{advertiser}"))
}

fn account(s: impl Into<String>) -> Result<AccountId, NodeError> {
    AccountId::new(s).map_err(|e| NodeError::Ledger(e.to_string()))
}

impl EmbeddedNetwork {
    /// Generates data, creates and imports the Vaults, sets up masters and ledger.
    pub fn build(
        dir: &Path,
        params: &NetworkParams,
        advertisers: &[&str],
        obs: &mut dyn Observer,
    ) -> Result<Self, NodeError> {
        let data_dir = dir.join("data");
        obs.step(
            "generate",
            &format!(
                "{} people, {} purchase records, {} Vaults",
                params.subjects, params.records, params.vaults
            ),
        );
        let generated = symphony_vault::generate(
            &GenerateParams {
                subjects: params.subjects,
                vaults: params.vaults,
                records: params.records,
                seed: params.seed,
                now_ms: params.now_ms,
            },
            &data_dir,
        )?;
        let policy_params = PolicyParams::default_v1();
        let advertiser_ids: Vec<ActorId> = advertisers
            .iter()
            .map(|a| ActorId::new(*a))
            .collect::<Result<_, _>>()
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let mut enterprises = Vec::new();
        let mut platform_keys = Vec::new();
        std::fs::create_dir_all(dir.join("vaults")).map_err(|e| NodeError::Io(e.to_string()))?;
        let total_rows = generated.record_rows.max(1);
        let mut rows_done = 0u64;
        for (i, (vid, file)) in generated
            .vault_ids
            .iter()
            .zip(&generated.vault_files)
            .enumerate()
        {
            let vault_id =
                VaultId::new(vid.clone()).map_err(|e| NodeError::Refused(e.to_string()))?;
            let key = VaultKey::from_bytes(
                key_from(params.seed, &format!("scp/vault-key/{vid}")).to_bytes(),
            );
            let path = dir.join("vaults").join(format!("{vid}.redb"));
            let vault = Vault::create(
                &path,
                VaultConfig {
                    vault_id: vault_id.clone(),
                    default_budget: Epsilon::from_micro(
                        symphony_vault::generate::BUDGET_CAPACITY_MICRO,
                    ),
                    initial_epoch: EpochId::GENESIS,
                },
                &key,
                tagged_hash("scp/vault-entropy", vid.as_bytes()).0,
            )?;
            let base = rows_done;
            let summary =
                symphony_vault::import_file(&vault, file, &ImportOptions::default(), &mut |p| {
                    if p.phase == symphony_vault::ImportPhase::Writing {
                        obs.progress("import", base + p.lines_done, total_rows);
                    }
                })?;
            rows_done += summary.rows;
            symphony_vault::import_file(
                &vault,
                &generated.consent_file,
                &ImportOptions::default(),
                &mut |_| {},
            )?;
            for a in &advertiser_ids {
                vault.permit(a, TaskClass::Query)?;
            }
            let platform = key_from(params.seed, &format!("scp/enterprise-platform/{i}"));
            let enclave = SoftwareEnclave::new(platform, &slice_code_identity());
            platform_keys.push(enclave.platform_public_key());
            enterprises.push(EnterpriseNode::new(vault, enclave));
        }
        obs.progress("import", total_rows, total_rows);
        let aggregator = SoftwareEnclave::new(
            key_from(params.seed, "scp/master-platform/0"),
            &aggregation_code_identity(),
        );
        platform_keys.push(aggregator.platform_public_key());
        let verifier = SoftwareAttestationVerifier::new(
            [
                slice_code_identity().measurement(),
                aggregation_code_identity().measurement(),
            ],
            platform_keys,
        );
        let mut allocations = Vec::new();
        let mut adv_keys = BTreeMap::new();
        for a in &advertiser_ids {
            allocations.push((
                account(format!("actor:{a}"))?,
                1_000_000 * symphony_economics::MICRO_SYM_PER_SYM,
            ));
            adv_keys.insert(
                a.clone(),
                advertiser_key(params.seed, a.as_str())
                    .verifying_key()
                    .to_bytes(),
            );
        }
        let vault_ids: Vec<VaultId> = enterprises.iter().map(|e| e.vault_id().clone()).collect();
        let stakes = genesis_stakes(&policy_params, &vault_ids)?;
        allocations.extend(stakes.iter().map(|(a, _, amount)| (a.clone(), *amount)));
        let mut ledger = RedbLedger::create(
            dir.join("ledger.redb"),
            &Genesis {
                config: LedgerConfig {
                    unbonding_period_epochs: 2,
                    min_stake_master: policy_params.staking.s_master_micro_sym,
                    min_stake_enterprise: policy_params.staking.s_enterprise_micro_sym,
                    min_stake_producer: policy_params.staking.s_producer_micro_sym,
                },
                allocations,
            },
        )
        .map_err(|e| NodeError::Ledger(e.to_string()))?;
        for (actor, tier, amount) in &stakes {
            ledger
                .bond(actor, *tier, *amount)
                .map_err(|e| NodeError::Ledger(e.to_string()))?;
        }
        let policy = PolicyRegistry::genesis(policy_params)
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        obs.step(
            "network",
            &format!(
                "3 masters, {} enterprise nodes, ledger ready",
                enterprises.len()
            ),
        );
        Ok(EmbeddedNetwork {
            master: MasterServices {
                masters: Box::new(LocalReplicator::new(params.seed)),
                aggregator,
                verifier,
                ledger: Box::new(ledger),
                policy,
                semantic: SemanticRegistry::catalog_v1(),
                advertisers: adv_keys,
                now_ms: params.now_ms,
                settlements: Some(SettlementStore::open(dir.join("settlement.redb"))?),
                result_stage: None,
                next_task: 0,
            },
            enterprises,
            down: BTreeSet::new(),
            tamper: None,
            seed: params.seed,
            generated,
        })
    }

    /// The data directory of the generated plaintext files.
    pub fn data_files(&self) -> (&[PathBuf], &Path) {
        (&self.generated.vault_files, &self.generated.consent_file)
    }

    /// Runs a campaign through the masters over this network's enterprise nodes,
    /// with the configured faults.
    pub fn run_campaign(
        &mut self,
        req: &SignedRequest,
        obs: &mut dyn Observer,
    ) -> Result<CampaignOutcome, NodeError> {
        let unreachable: Vec<Unreachable<'_>> = self
            .enterprises
            .iter()
            .map(|e| Unreachable(e.vault_id()))
            .collect();
        let tampering = self
            .tamper
            .zip(self.enterprises.first())
            .map(|(t, e)| Tampering {
                inner: e,
                tamper: t,
                seed: self.seed,
            });
        let mut endpoints: Vec<&dyn EnterpriseEndpoint> = Vec::new();
        for (i, e) in self.enterprises.iter().enumerate() {
            if self.down.contains(e.vault_id()) {
                endpoints.push(&unreachable[i]);
            } else if let (0, Some(t)) = (i, &tampering) {
                endpoints.push(t);
            } else {
                endpoints.push(e);
            }
        }
        let outcome = self.master.run_campaign(&endpoints, req, obs)?;
        if outcome.settlement_state.as_deref() == Some("finalized") {
            // Data usage dividends are paid by each Vault, which alone knows whose
            // records were used.
            let task = TaskId::new(outcome.task_id.clone())
                .map_err(|e| NodeError::Refused(e.to_string()))?;
            let at_ms = self.master.now_ms;
            let paid =
                pay_embedded_vault_dividends(&mut self.master, &self.enterprises, &task, at_ms)?;
            obs.step(
                "dividends",
                &format!("{paid} µSYM paid to data producers by their Vaults"),
            );
        }
        Ok(outcome)
    }
}

impl MasterServices {
    /// Master services over the given adapters (a deployed master builds them from
    /// its configuration). Task ids start after `task_counter`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        masters: Box<dyn Replicator + Send>,
        aggregator: SoftwareEnclave,
        verifier: SoftwareAttestationVerifier,
        ledger: Box<dyn SettlementLedger + Send>,
        policy: PolicyRegistry,
        semantic: SemanticRegistry,
        advertisers: BTreeMap<ActorId, [u8; 32]>,
        now_ms: u64,
    ) -> Self {
        MasterServices {
            masters,
            aggregator,
            verifier,
            ledger,
            policy,
            semantic,
            advertisers,
            now_ms,
            settlements: None,
            result_stage: None,
            next_task: 0,
        }
    }

    /// Sets the task counter: the next task id ends in `next + 1`. A deployed
    /// leader derives it from the replicated request sequence, so task ids stay
    /// unique across leader changes.
    pub fn set_task_counter(&mut self, next: u64) {
        self.next_task = next;
    }

    fn submit(&mut self, c: Command) -> Result<crate::replication::Committed, NodeError> {
        Ok(self.masters.submit(c)?)
    }

    fn advance(
        &mut self,
        task: &TaskId,
        event: TaskEvent,
        reason: Option<String>,
        obs: &mut dyn Observer,
    ) -> Result<(), NodeError> {
        let committed = self.submit(Command::Advance {
            task_id: task.clone(),
            event,
            reason,
        })?;
        if let Some(symphony_master::Event::TaskStateChanged { to, .. }) = committed.events.first()
        {
            obs.step(
                to.as_str(),
                &format!(
                    "certificate {}/3 signatures at log index {}",
                    committed.certificate.signatures.len(),
                    committed.certificate.log_index
                ),
            );
        }
        Ok(())
    }

    /// Runs one `compute` task end to end (admission → execution → verification →
    /// settlement → delivery of the noisy table).
    pub fn run_compute(
        &mut self,
        _enterprises: &[&dyn EnterpriseEndpoint],
        _req: &crate::task::SignedTask,
        _obs: &mut dyn Observer,
    ) -> Result<crate::task::ComputeOutcome, NodeError> {
        Err(NodeError::Refused("compute is being wired into the pipeline".into()))
    }

    /// Runs one campaign end to end: admission → execution → verification →
    /// settlement → delivery.
    pub fn run_campaign(
        &mut self,
        enterprises: &[&dyn EnterpriseEndpoint],
        req: &SignedRequest,
        obs: &mut dyn Observer,
    ) -> Result<CampaignOutcome, NodeError> {
        let spec = &req.spec;
        // --- Admission: identity, authorization
        let actor =
            ActorId::new(spec.advertiser.clone()).map_err(|e| NodeError::Refused(e.to_string()))?;
        let known = self
            .advertisers
            .get(&actor)
            .ok_or_else(|| NodeError::Refused(format!("unknown caller {actor}")))?;
        if *known != req.public_key {
            return Err(NodeError::Refused(format!(
                "public key is not registered for {actor}"
            )));
        }
        let request_hash = request_hash(spec, req.nonce)?;
        let vk = VerifyingKey::from_bytes(&req.public_key)
            .map_err(|_| NodeError::Refused("malformed public key".into()))?;
        let sig = Signature::from_slice(&req.signature)
            .map_err(|_| NodeError::Refused("malformed signature".into()))?;
        vk.verify(&request_hash.0, &sig)
            .map_err(|_| NodeError::Refused("request signature does not verify".into()))?;
        obs.step(
            "admission",
            &format!("caller {actor} authenticated (ed25519)"),
        );
        // --- Semantic resolution
        let plan = self
            .semantic
            .resolve_audience(&AudienceIntent {
                brand: spec.brand.clone(),
                country: spec.country.clone(),
                city: spec.city.clone(),
                window_days: spec.window_days,
                usage_scope: spec.usage_scope,
            })
            .map_err(|e| {
                NodeError::Refused(format!("semantic resolution blocked the task: {e}"))
            })?;
        let epoch = self.masters.state().current_epoch();
        let resolved = self
            .policy
            .resolve(
                epoch,
                plan.semantic_version(),
                self.masters.state().active_policy_version(),
            )
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let params = &resolved.params;
        let epsilon = params.privacy.epsilon_per_query;
        obs.step(
            "semantics",
            &format!(
                "plan {} under {} (minimum_result_cardinality {})",
                &plan.plan_hash().to_hex()[..12],
                plan.semantic_version(),
                plan.minimum_result_cardinality()
            ),
        );
        // --- Consent and budget reservation in each Vault
        self.next_task += 1;
        let task_id = TaskId::new(format!(
            "task-{}-{:04}",
            &request_hash.to_hex()[..12],
            self.next_task
        ))
        .map_err(|e| NodeError::Refused(e.to_string()))?;
        let n = enterprises.len() as u32;
        let quorum = spec
            .minimum_vault_quorum
            .unwrap_or(n / 2 + 1)
            .clamp(1, n.max(1));
        let mut consent_refs = Vec::new();
        let mut reserved_total = 0u64;
        for e in enterprises {
            let r = match e.admission_reserve(
                &task_id,
                &actor,
                TaskClass::Query,
                spec.usage_scope,
                epsilon,
                self.now_ms,
            ) {
                Ok(r) => r,
                Err(NodeError::Unavailable(v)) => {
                    obs.step("unreachable", &format!("{v} did not answer at admission"));
                    continue;
                }
                Err(err) => {
                    self.release_all(enterprises, &task_id);
                    return Err(err);
                }
            };
            reserved_total += r.subjects_reserved;
            consent_refs.push(ConsentRef {
                vault_id: r.vault_id,
                usage_scope: spec.usage_scope,
                snapshot_commitment: r.snapshot_commitment,
                eligible_subjects: r.subjects_reserved,
            });
        }
        obs.step(
            "budget",
            &format!(
                "reserved ε={epsilon} for {reserved_total} consenting subjects in {} Vaults",
                consent_refs.len()
            ),
        );
        // --- Escrow lock
        let estimate = estimate_fee(
            &params.prices,
            &TaskUsage::Query(QueryUsage {
                n_vaults: n,
                n_records: spec.audience_cap,
                epsilon,
            }),
        )
        .map_err(|e| NodeError::Refused(e.to_string()))?;
        let escrow_id = format!("escrow-{task_id}");
        let owner = account(format!("actor:{actor}"))?;
        self.ledger
            .lock(
                &EscrowId::new(escrow_id.clone()).map_err(|e| NodeError::Ledger(e.to_string()))?,
                &owner,
                estimate,
            )
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        obs.step("escrow", &format!("{estimate} µSYM locked in {escrow_id}"));
        let participating: BTreeSet<VaultId> =
            enterprises.iter().map(|e| e.vault_id().clone()).collect();
        let envelope = TaskEnvelope::seal(EnvelopeBody {
            task_id: task_id.clone(),
            task_class: TaskClass::Query,
            caller: CallerContext {
                actor_id: actor.clone(),
                public_key: req.public_key,
                request_hash,
                nonce: req.nonce,
                admitted_at_ms: self.now_ms,
            },
            authorization: Authorization {
                granted_by: "vault-permits:query".into(),
                vault_permits: consent_refs.iter().map(|c| c.vault_id.clone()).collect(),
            },
            consent_refs: consent_refs.clone(),
            semantic_version: plan.semantic_version(),
            policy_version: resolved.policy_version,
            epoch_id: epoch,
            budget_reservation: BudgetReservation {
                usage_scope: spec.usage_scope,
                epsilon_per_subject: epsilon,
                subjects_reserved: reserved_total,
            },
            coordination_envelope: CoordinationEnvelope {
                participating_vault_ids: participating,
                minimum_vault_quorum: quorum,
                aggregation_method: AggregationMethod::UnionWithCardinalityCap,
            },
            budget_lock_ref: Some(BudgetLockRef {
                ledger: "embedded-redb".into(),
                escrow_id: escrow_id.clone(),
                amount_base_units: estimate,
            }),
            iteration_policy: None,
            resolved_plan_hash: plan.plan_hash(),
            constraints: [
                ("audience_cap".to_string(), spec.audience_cap.to_string()),
                ("brand".to_string(), spec.brand.clone()),
                ("country".to_string(), spec.country.clone()),
                ("selection".to_string(), format!("{:?}", spec.selection)),
                (
                    "selection_seed".to_string(),
                    spec.selection_seed.to_string(),
                ),
                ("window_days".to_string(), spec.window_days.to_string()),
            ]
            .into_iter()
            .collect(),
            deadline_ms: self.now_ms + 600_000,
        })?;
        let admitted = self.masters.submit(Command::AdmitTask {
            envelope: Box::new(envelope.clone()),
        });
        if let Err(e) = admitted {
            self.release_all(enterprises, &task_id);
            return Err(e.into());
        }
        obs.step(
            "accepted",
            &format!("TaskEnvelope {}", &envelope.hash().to_hex()[..16]),
        );
        let mut outcome = CampaignOutcome {
            task_id: task_id.to_string(),
            envelope_hash: envelope.hash().to_hex(),
            states: vec![],
            reason: None,
            eligible_count: 0,
            delivered_count: 0,
            audience_cap: spec.audience_cap,
            vaults_responded: 0,
            minimum_vault_quorum: quorum,
            fee_locked: estimate,
            fee_total: 0,
            fee_shares: BTreeMap::new(),
            refund: 0,
            attestations_verified: 0,
            epsilon_committed: epsilon.to_string(),
            subjects_evaluated: 0,
            settlement_state: None,
            epoch_id: epoch.0,
            certificate_signatures: 0,
            audience: vec![],
        };
        self.advance(&task_id, TaskEvent::BeginResolution, None, obs)?;
        if consent_refs.len() < quorum as usize {
            let reason = format!(
                "{} Vaults reachable at admission, below minimum_vault_quorum {quorum}",
                consent_refs.len()
            );
            return self.reject(
                enterprises,
                &task_id,
                &escrow_id,
                estimate,
                reason,
                outcome,
                obs,
            );
        }
        self.advance(&task_id, TaskEvent::Dispatch, None, obs)?;
        // --- Execution: fan out slices
        let mut evidence = Vec::new();
        let mut bundles = Vec::new();
        let total = enterprises.len() as u64;
        for (i, e) in enterprises.iter().enumerate() {
            let vault_id = e.vault_id().clone();
            let slice_id = SliceId {
                sub_task: SubTaskId {
                    parent: task_id.clone(),
                    round: 0,
                },
                vault: vault_id.clone(),
            };
            let record = {
                let assignment = SliceAssignment {
                    slice_id,
                    envelope: envelope.clone(),
                    plan: plan.clone(),
                    evaluate_at_ms: self.now_ms,
                };
                match e.execute_slice(&assignment).and_then(|b| {
                    verify_slice(&self.verifier, &envelope, &b)
                        .map(|ev| (b, ev))
                        .map_err(|err| NodeError::Refused(err.to_string()))
                }) {
                    Ok((bundle, ev)) => {
                        let r = SliceRecord {
                            state: SliceState::Verified,
                            commitment: bundle.commitment,
                            subjects_evaluated: bundle.body.subjects_evaluated,
                            epsilon_committed_micro: bundle.body.epsilon_committed_micro,
                        };
                        outcome.subjects_evaluated += bundle.body.subjects_evaluated;
                        evidence.push(ev);
                        bundles.push(bundle);
                        r
                    }
                    Err(err) => {
                        obs.step("slice_failed", &format!("{vault_id}: {err}"));
                        let state = match err {
                            NodeError::Unavailable(_) => SliceState::TimedOut,
                            _ => SliceState::Failed,
                        };
                        SliceRecord {
                            state,
                            commitment: Digest::default(),
                            subjects_evaluated: 0,
                            epsilon_committed_micro: 0,
                        }
                    }
                }
            };
            obs.progress("slices", i as u64 + 1, total);
            self.masters.submit(Command::RecordSlice {
                task_id: task_id.clone(),
                vault_id,
                record,
            })?;
        }
        outcome.vaults_responded = evidence.len() as u32;
        outcome.attestations_verified = evidence.len() as u32;
        obs.step(
            "slices",
            &format!(
                "{}/{} slices verified (attestation + commitment)",
                evidence.len(),
                total
            ),
        );
        if evidence.len() < quorum as usize {
            let reason = format!(
                "{} slices verified, below minimum_vault_quorum {quorum}",
                evidence.len()
            );
            return self.reject(
                enterprises,
                &task_id,
                &escrow_id,
                estimate,
                reason,
                outcome,
                obs,
            );
        }
        // --- Aggregation in the master enclave (bundles are moved in and purged)
        let agg = aggregate(
            &self.aggregator,
            &envelope,
            bundles,
            AggregationParams {
                audience_cap: spec.audience_cap,
                selection: spec.selection,
                selection_seed: spec.selection_seed,
                minimum_result_cardinality: plan.minimum_result_cardinality(),
                now_ms: self.now_ms,
            },
        )?;
        outcome.eligible_count = agg.eligible_count;
        if agg.suppressed {
            let reason = format!(
                "result of {} subjects is below minimum_result_cardinality {}: suppressed",
                agg.eligible_count,
                plan.minimum_result_cardinality()
            );
            return self.reject(
                enterprises,
                &task_id,
                &escrow_id,
                estimate,
                reason,
                outcome,
                obs,
            );
        }
        obs.step(
            "aggregate",
            &format!(
                "{} distinct eligible, {} selected (cap {})",
                agg.eligible_count,
                agg.audience.len(),
                spec.audience_cap
            ),
        );
        self.masters.submit(Command::RecordAggregate {
            task_id: task_id.clone(),
            record: AggregateRecord {
                commitment: agg.commitment,
                eligible_count: agg.eligible_count,
                delivered_count: agg.audience.len() as u64,
                result_hash: agg.result_hash,
            },
        })?;
        self.advance(&task_id, TaskEvent::ExecutionFinished, None, obs)?;
        // --- Verification
        verify_aggregate(&self.verifier, &envelope, &evidence, &agg)
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        outcome.attestations_verified += 1;
        self.advance(&task_id, TaskEvent::VerificationAccepted, None, obs)?;
        if let Some(stage) = self.result_stage.as_mut() {
            stage.stage(&task_id, &agg.result_hash, &agg.audience)?;
            obs.step(
                "staged",
                &format!("{} handles staged with the masters", agg.audience.len()),
            );
        }
        // --- Settlement (the Settlement Plane: crate::settlement)
        let delivered = agg.audience.len() as u64;
        let inputs = SettlementInputs {
            task_id: task_id.clone(),
            escrow_id: EscrowId::new(escrow_id.clone())
                .map_err(|e| NodeError::Ledger(e.to_string()))?,
            usage: TaskUsage::Query(QueryUsage {
                n_vaults: outcome.vaults_responded,
                n_records: delivered,
                epsilon,
            }),
            evidence: evidence_of(&*self.masters, &task_id, &evidence, &agg)?,
            verifiers: (0..3)
                .map(|i| ActorId::new(format!("master-{i}")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| NodeError::Refused(e.to_string()))?,
        };
        let row = match self.settle(&inputs, params, obs)? {
            Settled::Finalized(row) => row,
            Settled::Rejected {
                reason,
                fee,
                refund,
            } => {
                outcome.fee_total = fee;
                outcome.refund = refund;
                if fee > 0 {
                    outcome.fee_shares.insert("treasury".to_owned(), fee);
                }
                obs.step("rejected", &reason);
                self.fill_states(&task_id, &mut outcome);
                return Ok(outcome);
            }
        };
        outcome.certificate_signatures = row
            .certificate
            .as_ref()
            .map_or(0, |c| c.valid_signatures(&self.masters.master_keys()));
        outcome.fee_total = row.candidate.fee_total;
        outcome.refund = row.candidate.refund;
        outcome.fee_shares = row.candidate.fee_shares.clone();
        outcome.epoch_id = row.epoch_id.0;
        outcome.settlement_state = Some(row.state.to_string());
        // --- Delivery
        self.masters.submit(Command::RecordDelivery {
            task_id: task_id.clone(),
            recipient: actor.clone(),
            result_hash: agg.result_hash,
            count: delivered,
            at_ms: self.now_ms,
        })?;
        obs.step(
            "delivered",
            &format!("{delivered} contact handles to {actor} (audit event recorded)"),
        );
        outcome.delivered_count = delivered;
        outcome.audience = agg.audience;
        self.fill_states(&task_id, &mut outcome);
        Ok(outcome)
    }

    fn release_all(&self, enterprises: &[&dyn EnterpriseEndpoint], task_id: &TaskId) {
        for e in enterprises {
            let _ = e.release(task_id);
        }
    }

    fn fill_states(&self, task_id: &TaskId, outcome: &mut CampaignOutcome) {
        if let Some(rec) = self.masters.state().task(task_id) {
            outcome.states = rec.history.iter().map(|s| s.to_string()).collect();
            outcome.reason.clone_from(&rec.reason);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        enterprises: &[&dyn EnterpriseEndpoint],
        task_id: &TaskId,
        escrow_id: &str,
        locked: u64,
        reason: String,
        mut outcome: CampaignOutcome,
        obs: &mut dyn Observer,
    ) -> Result<CampaignOutcome, NodeError> {
        // Reservations not yet executed are released; executed slices already
        // committed (failure after execution commits at the estimate).
        self.release_all(enterprises, task_id);
        obs.step("rejected", &reason);
        self.advance(task_id, TaskEvent::Reject, Some(reason), obs)?;
        // Once the rejection is committed: the policy's base fee of the class goes to
        // the treasury, the rest of the escrow back to the submitter
        // (`settlement::rewards::charge_rejection`; documented in ARCHITECTURE.md).
        let escrow = EscrowId::new(escrow_id).map_err(|e| NodeError::Ledger(e.to_string()))?;
        let fee = self.charge_rejected(task_id, &escrow)?;
        if fee.estimate_micro_sym != locked {
            return Err(NodeError::Ledger(format!(
                "escrow {escrow} holds {}, expected {locked}",
                fee.estimate_micro_sym
            )));
        }
        outcome.fee_total = fee.charged_micro_sym;
        outcome.refund = fee.refund_micro_sym;
        if fee.charged_micro_sym > 0 {
            outcome
                .fee_shares
                .insert("treasury".to_owned(), fee.charged_micro_sym);
        }
        self.fill_states(task_id, &mut outcome);
        Ok(outcome)
    }
}
