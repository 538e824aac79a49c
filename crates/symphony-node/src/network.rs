//! The embedded network: three masters (replicated state machine with commit
//! certificates), several enterprise nodes with seeded Vaults, the settlement
//! ledger — all in one process, running the same service code a deployment runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{canonical_bytes, tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_economics::{PolicyParams, PolicyRegistry};
use symphony_enclave::{SoftwareAttestationVerifier, SoftwareEnclave};
use symphony_ledger::{AccountId, Genesis, LedgerConfig, RedbLedger, SettlementLedger};
use symphony_semantic::SemanticRegistry;
use symphony_vault::{
    GenerateParams, GenerateSummary, ImportOptions, Vault, VaultConfig, VaultKey,
};

use crate::aggregation::SelectionPolicy;
use crate::bundle::SliceResultBundle;
use crate::bundle::{aggregation_code_identity, slice_code_identity, SliceAssignment};
use crate::enterprise::{AdmissionReply, EnterpriseEndpoint, EnterpriseNode};
use crate::replication::{LocalReplicator, Replicator};
use crate::settlement::embedded::{genesis_stakes, pay_embedded_vault_dividends};
use crate::settlement::SettlementStore;
use crate::NodeError;

/// Reports progress to whoever drives the network (the CLI draws it).
pub trait Observer {
    /// A protocol step happened.
    fn step(&mut self, name: &str, detail: &str);
    /// Progress of a long step.
    fn progress(&mut self, label: &str, done: u64, total: u64);
    /// Wall-clock time spent in one named part of a run (benchmarks add these up;
    /// nothing of the protocol depends on them).
    fn phase(&mut self, _name: &'static str, _elapsed: std::time::Duration) {}
}

/// Laps of a wall clock reported to an [`Observer`] as [`Observer::phase`]s.
pub struct PhaseClock(std::time::Instant);

impl PhaseClock {
    /// Starts the clock.
    pub fn start() -> Self {
        PhaseClock(std::time::Instant::now())
    }

    /// Reports the time since the last lap (or the start) as `name`.
    pub fn lap(&mut self, obs: &mut (impl Observer + ?Sized), name: &'static str) {
        let now = std::time::Instant::now();
        obs.phase(name, now - self.0);
        self.0 = now;
    }
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub audience_cap: u64,
    /// Selection when more are eligible than the cap.
    pub selection: SelectionPolicy,
    /// Usage scope (marketing).
    pub usage_scope: UsageScope,
    /// Seed of the selection.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(default = 0))]
    pub selection_seed: u64,
    /// Minimum Vaults that must respond (default: a majority), at most the
    /// network's Vault count.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
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
    /// What produced each piece of evidence: Vault id → `software` / `sgx` /
    /// `tdx`, and `aggregation` → the masters' aggregation enclave.
    #[serde(default)]
    pub enclave_kinds: std::collections::BTreeMap<String, symphony_enclave::EnclaveKind>,
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
        Some(t) => bundle.attestation = apply_tamper_attestation(bundle.attestation, t, seed),
    }
    bundle
}

/// Re-attests from a rogue enclave or forges the signature (other tampers: as is).
fn apply_tamper_attestation(
    mut report: symphony_enclave::AttestationReport,
    tamper: Tamper,
    seed: u64,
) -> symphony_enclave::AttestationReport {
    use symphony_enclave::Tee;
    match tamper {
        Tamper::WrongMeasurement => {
            let rogue = SoftwareEnclave::new(
                key_from(seed, "scp/enterprise-platform/0"),
                &symphony_enclave::CodeIdentity::new("rogue-eligibility", "1", [9u8; 32]),
            );
            if let Ok(r) = rogue.attest(report.report_data, report.nonce, report.issued_at_ms) {
                report = r;
            }
        }
        Tamper::ForgedSignature => report.signature = [0x42; 64],
        Tamper::FlipByte => {}
    }
    report
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

    /// Stages a `compute` task's released table (hashing to `result_hash`, the
    /// aggregate recorded for `task_id`). A stage that keeps audiences only refuses,
    /// so a compute result is never paid for without being staged.
    fn stage_table(
        &mut self,
        task_id: &TaskId,
        result_hash: &Digest,
        groups: &[crate::task::GroupValue],
        suppressed_groups: &[String],
    ) -> Result<(), NodeError> {
        let _ = (result_hash, groups, suppressed_groups);
        Err(NodeError::Refused(format!(
            "this result stage keeps audiences only; the table of {task_id} was not staged"
        )))
    }
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
    let (r, aggregate) = crate::planes::Report::recovered(state, task_id, certificate_signatures)?;
    let audience_cap = state
        .task(task_id)?
        .envelope
        .body()
        .constraints
        .get("audience_cap")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some(CampaignOutcome {
        task_id: r.task_id,
        envelope_hash: r.envelope_hash,
        states: r.states,
        reason: r.reason,
        eligible_count: aggregate.eligible_count,
        delivered_count: audience.len() as u64,
        audience_cap,
        vaults_responded: r.vaults_responded,
        minimum_vault_quorum: r.minimum_vault_quorum,
        fee_locked: r.fee_locked,
        fee_total: r.fee_total,
        fee_shares: r.fee_shares,
        refund: r.refund,
        attestations_verified: r.attestations_verified,
        enclave_kinds: r.enclave_kinds,
        epsilon_committed: r.epsilon_committed,
        subjects_evaluated: r.subjects_evaluated,
        settlement_state: r.settlement_state,
        epoch_id: r.epoch_id,
        certificate_signatures: r.certificate_signatures,
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
    pub(crate) seed: u64,
    /// The generated data set.
    pub generated: GenerateSummary,
}

/// An enterprise endpoint that is down: every call fails as unreachable.
pub(crate) struct Unreachable<'a>(pub(crate) &'a VaultId);

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
    fn execute_compute_slice(
        &self,
        _: &SliceAssignment,
    ) -> Result<SliceResultBundle<crate::bundle::ComputeBody>, NodeError> {
        Err(NodeError::Unavailable(self.0.to_string()))
    }
    fn release(&self, _: &TaskId) -> Result<u64, NodeError> {
        Err(NodeError::Unavailable(self.0.to_string()))
    }
    fn open_epoch(&self, _: EpochId, _: &[(UsageScope, Epsilon)]) -> Result<u64, NodeError> {
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
    fn execute_compute_slice(
        &self,
        a: &SliceAssignment,
    ) -> Result<SliceResultBundle<crate::bundle::ComputeBody>, NodeError> {
        let mut b = self.inner.execute_compute_slice(a)?;
        match self.tamper {
            Tamper::FlipByte => match b.body.contributions.first_mut() {
                Some(c) => c.amount_sum_minor ^= 1,
                None => b.body.subjects_evaluated ^= 1,
            },
            Tamper::WrongMeasurement | Tamper::ForgedSignature => {
                b.attestation = apply_tamper_attestation(b.attestation, self.tamper, self.seed)
            }
        }
        Ok(b)
    }
    fn open_epoch(
        &self,
        epoch: EpochId,
        replenish: &[(UsageScope, Epsilon)],
    ) -> Result<u64, NodeError> {
        self.inner.open_epoch(epoch, replenish)
    }
    fn release(&self, task: &TaskId) -> Result<u64, NodeError> {
        EnterpriseEndpoint::release(self.inner, task)
    }
    fn parse_admit(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        subject: &SubjectId,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        self.inner.parse_admit(task_id, actor, subject, at_ms)
    }
    fn execute_parse_slice(
        &self,
        a: &crate::classes::parse::ParseAssignment,
    ) -> Result<crate::classes::parse::ParseBundle, NodeError> {
        self.inner.execute_parse_slice(a)
    }
}

pub(crate) fn key_from(seed: u64, label: &str) -> SigningKey {
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

/// An empty Vault of the embedded network, keyed from the seed.
pub(crate) fn create_vault(
    dir: &Path,
    seed: u64,
    vid: &str,
    vault_id: VaultId,
) -> Result<Vault, NodeError> {
    let key = VaultKey::from_bytes(key_from(seed, &format!("scp/vault-key/{vid}")).to_bytes());
    let path = dir.join("vaults").join(format!("{vid}.redb"));
    Ok(Vault::create(
        &path,
        VaultConfig {
            vault_id,
            default_budget: Epsilon::from_micro(symphony_vault::generate::BUDGET_CAPACITY_MICRO),
            initial_epoch: EpochId::GENESIS,
        },
        &key,
        tagged_hash("scp/vault-entropy", vid.as_bytes()).0,
    )?)
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
            let vault = create_vault(dir, params.seed, vid, vault_id)?;
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
            // The operator permits the network's submitters for the single-round
            // classes (training is permitted per operator: `permit_training`).
            for a in &advertiser_ids {
                for class in [TaskClass::Query, TaskClass::Compute, TaskClass::Parse] {
                    vault.permit(a, class)?;
                }
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

    /// Deletes the generated plaintext import files once the Vaults hold the data
    /// encrypted (the demos do, unless asked to keep them). Returns the files removed.
    pub fn remove_plaintext(&self) -> std::io::Result<u64> {
        let mut removed = 0;
        let files = self
            .generated
            .vault_files
            .iter()
            .chain(std::iter::once(&self.generated.consent_file));
        for f in files {
            match std::fs::remove_file(f) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(dir) = self.generated.consent_file.parent() {
            let _ = std::fs::remove_dir(dir); // only if empty
        }
        Ok(removed)
    }

    /// The generated plaintext import files (until [`Self::remove_plaintext`]).
    pub fn data_files(&self) -> (&[PathBuf], &Path) {
        (&self.generated.vault_files, &self.generated.consent_file)
    }

    /// This network's enterprise endpoints as the masters reach them, with the
    /// configured faults (nodes down, a tampered first bundle).
    /// Closes the current epoch through governance (master 0 proposes, master 1
    /// approves) and replenishes every reachable Vault's budgets by the policy.
    pub fn close_epoch(&mut self) -> Result<crate::governance::EpochClose, NodeError> {
        self.with_endpoints(|m, vaults| crate::governance::close_epoch_by_proposal(m, vaults))
    }

    fn with_endpoints<T>(
        &mut self,
        f: impl FnOnce(&mut MasterServices, &[&dyn EnterpriseEndpoint]) -> T,
    ) -> T {
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
        f(&mut self.master, &endpoints)
    }

    /// Data usage dividends of a finalized task, paid by each Vault (which alone
    /// knows whose records were used).
    fn pay_dividends(
        &mut self,
        task_id: &str,
        settlement_state: Option<&str>,
        obs: &mut dyn Observer,
    ) -> Result<(), NodeError> {
        if settlement_state != Some("finalized") {
            return Ok(());
        }
        let task = TaskId::new(task_id).map_err(|e| NodeError::Refused(e.to_string()))?;
        let at_ms = self.master.now_ms;
        let started = std::time::Instant::now();
        let paid = pay_embedded_vault_dividends(&mut self.master, &self.enterprises, &task, at_ms)?;
        obs.phase("dividends", started.elapsed());
        obs.step(
            "dividends",
            &format!(
                "{} paid to data producers by their Vaults",
                symphony_economics::format_sym(paid)
            ),
        );
        Ok(())
    }

    /// Runs a campaign through the masters over this network's enterprise nodes,
    /// with the configured faults.
    pub fn run_campaign(
        &mut self,
        req: &SignedRequest,
        obs: &mut dyn Observer,
    ) -> Result<CampaignOutcome, NodeError> {
        let outcome = self.with_endpoints(|m, e| m.run_campaign(e, req, obs))?;
        self.pay_dividends(&outcome.task_id, outcome.settlement_state.as_deref(), obs)?;
        Ok(outcome)
    }

    /// Runs a data producer's `parse` task (free, one Vault).
    pub fn run_parse(
        &mut self,
        req: &crate::classes::parse::ParseRequest,
        obs: &mut dyn Observer,
    ) -> Result<crate::classes::parse::ParseOutcome, NodeError> {
        self.with_endpoints(|m, e| crate::classes::parse::run_parse(m, e, req, obs))
    }

    /// Runs a `compute` task; see [`MasterServices::run_compute_audited`].
    pub fn run_compute_audited(
        &mut self,
        req: &crate::task::SignedTask,
        obs: &mut dyn Observer,
    ) -> Result<crate::planes::Run<crate::classes::compute::ComputeAggregate>, NodeError> {
        let run = self.with_endpoints(|m, e| m.run_compute_audited(e, req, obs))?;
        self.pay_dividends(
            &run.report.task_id,
            run.report.settlement_state.as_deref(),
            obs,
        )?;
        Ok(run)
    }

    /// Runs a `compute` task through the masters over this network's enterprise
    /// nodes: the released (noisy) table.
    pub fn run_compute(
        &mut self,
        req: &crate::task::SignedTask,
        obs: &mut dyn Observer,
    ) -> Result<crate::task::ComputeOutcome, NodeError> {
        Ok(crate::classes::compute::outcome(
            self.run_compute_audited(req, obs)?,
        ))
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

    /// The attestation verifier under the attestation policy of the policy version
    /// `envelope` was admitted under (a task keeps the policy of its admission): a
    /// policy that does not accept `software` refuses the software enclave's reports.
    pub fn verifier_for(
        &self,
        envelope: &TaskEnvelope,
    ) -> Result<SoftwareAttestationVerifier, NodeError> {
        let version = envelope.body().policy_version;
        let record = self.policy.record(version).ok_or_else(|| {
            NodeError::Refused(format!(
                "policy version {} of the task is not registered on this master",
                version.0
            ))
        })?;
        let mut verifier = self.verifier.clone();
        verifier.refuse_software |= !record
            .params
            .attestation
            .accepts(symphony_core::EnclaveKind::Software);
        Ok(verifier)
    }

    /// Sets the task counter: the next task id ends in `next + 1`. A deployed
    /// leader derives it from the replicated request sequence, so task ids stay
    /// unique across leader changes.
    pub fn set_task_counter(&mut self, next: u64) {
        self.next_task = next;
    }

    /// Runs one `compute` task end to end (admission → execution → verification →
    /// settlement → delivery of the noisy table).
    pub fn run_compute(
        &mut self,
        enterprises: &[&dyn EnterpriseEndpoint],
        req: &crate::task::SignedTask,
        obs: &mut dyn Observer,
    ) -> Result<crate::task::ComputeOutcome, NodeError> {
        let run = self.run_compute_audited(enterprises, req, obs)?;
        Ok(crate::classes::compute::outcome(run))
    }

    /// [`Self::run_compute`], returning the pipeline's run with the aggregation
    /// enclave's noise-free table (audits and tests of the embedded network).
    pub fn run_compute_audited(
        &mut self,
        enterprises: &[&dyn EnterpriseEndpoint],
        req: &crate::task::SignedTask,
        obs: &mut dyn Observer,
    ) -> Result<crate::planes::Run<crate::classes::compute::ComputeAggregate>, NodeError> {
        let crate::task::TaskSpec::Compute(spec) = &req.spec else {
            return Err(NodeError::Refused(format!(
                "run_compute takes a compute task, not {}",
                req.spec.class()
            )));
        };
        let class = crate::classes::compute::Compute { spec };
        let request = crate::planes::Request {
            class: &class,
            nonce: req.nonce,
            public_key: req.public_key,
            signature: &req.signature,
        };
        crate::planes::run_task(self, enterprises, &request, obs)
    }

    /// The next task id of a request: unique per master services instance (a
    /// deployed leader sets the counter from the replicated request sequence).
    pub fn next_task_id(&mut self, request_hash: &Digest) -> Result<TaskId, NodeError> {
        self.next_task += 1;
        TaskId::new(format!(
            "task-{}-{:04}",
            &request_hash.to_hex()[..12],
            self.next_task
        ))
        .map_err(|e| NodeError::Refused(e.to_string()))
    }

    /// Runs one campaign end to end through the protocol pipeline: admission →
    /// execution → verification → settlement → delivery (`crate::planes`, class
    /// module `crate::classes::query`).
    pub fn run_campaign(
        &mut self,
        enterprises: &[&dyn EnterpriseEndpoint],
        req: &SignedRequest,
        obs: &mut dyn Observer,
    ) -> Result<CampaignOutcome, NodeError> {
        let class = crate::classes::query::Query { spec: &req.spec };
        let request = crate::planes::Request {
            class: &class,
            nonce: req.nonce,
            public_key: req.public_key,
            signature: &req.signature,
        };
        let run = crate::planes::run_task(self, enterprises, &request, obs)?;
        Ok(crate::classes::query::outcome(&req.spec, run))
    }
}
