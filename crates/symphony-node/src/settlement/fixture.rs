//! A deterministic, fully attested single-round task ready for settlement, without
//! Vaults: used by the settlement and challenge tests and by the crash-test child
//! process (`symphony-settlement-crash`). Not used by the protocol path.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;

use symphony_core::consent::UsageScope;
use symphony_core::encoding::{tagged_hash, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_core::lifecycle::{SliceState, TaskEvent};
use symphony_economics::pricing::QueryUsage;
use symphony_economics::{estimate_fee, PolicyParams, TaskUsage};
use symphony_enclave::{run_commitment, SoftwareAttestationVerifier, SoftwareEnclave, Tee};
use symphony_ledger::{AccountId, EscrowId, Genesis, LedgerConfig, SettlementLedger};
use symphony_master::{link_commitment, AggregateRecord, Command, SliceRecord};

use super::embedded::genesis_stakes;
use super::{AggregateEvidence, SettlementInputs, SliceOutcome, StoredEvidence};
use crate::bundle::{aggregation_code_identity, inputs_commitment, slice_code_identity};
use crate::replication::{LocalReplicator, Replicator};
use crate::verify::SliceEvidence;
use crate::NodeError;

/// The submitter of fixture tasks.
pub const SUBMITTER: &str = "advertiser:fixture";
/// "Now" of fixture tasks, ms.
pub const NOW_MS: u64 = 1_795_219_200_000;

/// A task at `awaiting_settlement` with real attestations.
pub struct Fixture {
    /// Masters with the task admitted, executed and verified.
    pub masters: LocalReplicator,
    /// Verifier trusting the fixture's platforms.
    pub verifier: SoftwareAttestationVerifier,
    /// Policy v1.
    pub params: PolicyParams,
    /// What settlement gets.
    pub inputs: SettlementInputs,
    /// The slice enclaves, by Vault (a test can attest a conflicting run).
    pub slice_enclaves: Vec<(VaultId, SoftwareEnclave)>,
    /// The aggregation enclave.
    pub aggregator: SoftwareEnclave,
}

fn key(seed: u64, label: &str) -> SigningKey {
    SigningKey::from_bytes(&tagged_hash(label, &seed.to_le_bytes()).0)
}

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

/// The vault ids of a fixture with `n` Vaults.
pub fn vault_ids(n: usize) -> Result<Vec<VaultId>, NodeError> {
    (0..n)
        .map(|i| VaultId::new(format!("vault-{i:02}")).map_err(err))
        .collect()
}

/// Ledger genesis: the submitter's funds and the stakes of operators and masters.
pub fn genesis(params: &PolicyParams, n_vaults: usize) -> Result<Genesis, NodeError> {
    let mut allocations = vec![(
        AccountId::new(format!("actor:{SUBMITTER}")).map_err(err)?,
        1_000_000_000_000, // 1,000,000 SYM: enough to stake every producer a property test creates
    )];
    for (a, _, amount) in genesis_stakes(params, &vault_ids(n_vaults)?)? {
        allocations.push((a, amount));
    }
    Ok(Genesis {
        config: LedgerConfig {
            unbonding_period_epochs: 2,
            min_stake_master: params.staking.s_master_micro_sym,
            min_stake_enterprise: params.staking.s_enterprise_micro_sym,
            min_stake_producer: params.staking.s_producer_micro_sym,
        },
        allocations,
    })
}

/// Bonds the genesis stakes and locks the fixture's escrow (both idempotent only on
/// a fresh ledger for bonding; the lock is idempotent).
pub fn fund(
    ledger: &mut dyn SettlementLedger,
    fixture: &Fixture,
    n_vaults: usize,
    bond: bool,
) -> Result<(), NodeError> {
    if bond {
        for (a, tier, amount) in genesis_stakes(&fixture.params, &vault_ids(n_vaults)?)? {
            ledger.bond(&a, tier, amount).map_err(err)?;
        }
    }
    let body = fixture.inputs.evidence.envelope.body();
    let amount = body
        .budget_lock_ref
        .as_ref()
        .map_or(0, |l| l.amount_base_units);
    ledger
        .lock(
            &fixture.inputs.escrow_id,
            &AccountId::new(format!("actor:{SUBMITTER}")).map_err(err)?,
            amount,
        )
        .map_err(err)?;
    Ok(())
}

/// Builds the fixture: `n_vaults` Vaults of which the first `timed_out` time out,
/// `subjects[i]` subjects evaluated in Vault `i`, dispatched in `epoch`.
pub fn build(
    seed: u64,
    subjects: &[u64],
    timed_out: usize,
    delivered: u64,
    epoch: EpochId,
) -> Result<Fixture, NodeError> {
    let params = PolicyParams::default_v1();
    let vaults = vault_ids(subjects.len())?;
    let task_id = TaskId::new(format!("task-fixture-{seed}")).map_err(err)?;
    let epsilon = params.privacy.epsilon_per_query;
    let estimate = estimate_fee(
        &params.prices,
        &TaskUsage::Query(QueryUsage {
            n_vaults: subjects.len() as u32,
            n_records: delivered.max(1) * 2,
            epsilon,
        }),
    )
    .map_err(err)?;
    let escrow_id = format!("escrow-{task_id}");
    let set: BTreeSet<VaultId> = vaults.iter().cloned().collect();
    let envelope = TaskEnvelope::seal(EnvelopeBody {
        task_id: task_id.clone(),
        task_class: TaskClass::Query,
        caller: CallerContext {
            actor_id: ActorId::new(SUBMITTER).map_err(err)?,
            public_key: [1; 32],
            request_hash: tagged_hash("fixture/request", &seed.to_le_bytes()),
            nonce: seed,
            admitted_at_ms: NOW_MS,
        },
        authorization: Authorization {
            granted_by: "fixture".into(),
            vault_permits: set.clone(),
        },
        consent_refs: vec![],
        semantic_version: SemanticVersion(1),
        policy_version: PolicyVersion::GENESIS,
        epoch_id: epoch,
        budget_reservation: BudgetReservation {
            usage_scope: UsageScope::Marketing,
            epsilon_per_subject: epsilon,
            subjects_reserved: subjects.iter().sum(),
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: set,
            minimum_vault_quorum: 1,
            aggregation_method: AggregationMethod::UnionWithCardinalityCap,
        },
        budget_lock_ref: Some(BudgetLockRef {
            ledger: "fixture".into(),
            escrow_id: escrow_id.clone(),
            amount_base_units: estimate,
        }),
        iteration_policy: None,
        resolved_plan_hash: tagged_hash("fixture/plan", &seed.to_le_bytes()),
        constraints: BTreeMap::new(),
        deadline_ms: NOW_MS + 600_000,
    })
    .map_err(err)?;
    let nonce = envelope.hash().0;
    let mut masters = LocalReplicator::new(seed);
    let submit =
        |m: &mut LocalReplicator, c: Command| m.submit(c).map(|_| ()).map_err(NodeError::from);
    // Time-triggered closes up to `epoch` (the default epoch length apart).
    while masters.state().current_epoch() < epoch {
        let g = masters.state().governance();
        let at_ms = g.epoch_opened_at_ms + g.epoch_length_ms;
        submit(
            &mut masters,
            Command::CloseEpoch {
                trigger: symphony_master::CloseTrigger::Time,
                at_ms,
            },
        )?;
    }
    submit(
        &mut masters,
        Command::AdmitTask {
            envelope: Box::new(envelope.clone()),
        },
    )?;
    for ev in [TaskEvent::BeginResolution, TaskEvent::Dispatch] {
        submit(
            &mut masters,
            Command::Advance {
                task_id: task_id.clone(),
                event: ev,
                reason: None,
            },
        )?;
    }
    let mut platform_keys = Vec::new();
    let mut slice_enclaves = Vec::new();
    let mut slices = Vec::new();
    for (i, (vault, n)) in vaults.iter().zip(subjects).enumerate() {
        let enclave = SoftwareEnclave::new(
            key(seed, &format!("fixture/platform/{i}")),
            &slice_code_identity(),
        );
        platform_keys.push(enclave.platform_public_key());
        let outcome = if i < timed_out {
            SliceOutcome {
                vault_id: vault.clone(),
                state: SliceState::TimedOut,
                evidence: None,
                subjects_evaluated: 0,
                epsilon_committed_micro: 0,
            }
        } else {
            let inputs = inputs_commitment(&envelope, vault);
            let commitment = tagged_hash(
                "fixture/bundle",
                &[&seed.to_le_bytes()[..], vault.as_str().as_bytes()].concat(),
            );
            let attestation = enclave
                .attest(run_commitment(&inputs.0, &commitment.0), nonce, NOW_MS)
                .map_err(err)?;
            SliceOutcome {
                vault_id: vault.clone(),
                state: SliceState::Verified,
                evidence: Some(SliceEvidence {
                    commitment,
                    inputs_commitment: inputs,
                    attestation,
                }),
                subjects_evaluated: *n,
                epsilon_committed_micro: epsilon.micro,
            }
        };
        submit(
            &mut masters,
            Command::RecordSlice {
                task_id: task_id.clone(),
                vault_id: vault.clone(),
                record: SliceRecord {
                    state: outcome.state,
                    commitment: outcome
                        .evidence
                        .as_ref()
                        .map_or(Digest::default(), |e| e.commitment),
                    subjects_evaluated: outcome.subjects_evaluated,
                    epsilon_committed_micro: outcome.epsilon_committed_micro,
                    enclave_kind: outcome.evidence.as_ref().map(|e| e.attestation.kind()),
                },
            },
        )?;
        slices.push(outcome);
        slice_enclaves.push((vault.clone(), enclave));
    }
    let aggregator = SoftwareEnclave::new(
        key(seed, "fixture/master-platform"),
        &aggregation_code_identity(),
    );
    platform_keys.push(aggregator.platform_public_key());
    let mut input_commitments: Vec<Digest> = slices
        .iter()
        .filter_map(|s| s.evidence.as_ref().map(|e| e.commitment))
        .collect();
    input_commitments.sort();
    let link = link_commitment("scp/aggregation-inputs/v1", &input_commitments);
    let result_hash = tagged_hash("fixture/result", &seed.to_le_bytes());
    let commitment = link_commitment("scp/aggregate/v1", &[link, result_hash]);
    let attestation = aggregator
        .attest(run_commitment(&link.0, &result_hash.0), nonce, NOW_MS)
        .map_err(err)?;
    submit(
        &mut masters,
        Command::RecordAggregate {
            task_id: task_id.clone(),
            record: AggregateRecord {
                commitment,
                eligible_count: delivered,
                delivered_count: delivered,
                result_hash,
                enclave_kind: attestation.kind(),
            },
        },
    )?;
    for ev in [
        TaskEvent::ExecutionFinished,
        TaskEvent::VerificationAccepted,
    ] {
        submit(
            &mut masters,
            Command::Advance {
                task_id: task_id.clone(),
                event: ev,
                reason: None,
            },
        )?;
    }
    let verifier = SoftwareAttestationVerifier::new(
        [
            slice_code_identity().measurement(),
            aggregation_code_identity().measurement(),
        ],
        platform_keys,
    );
    let verified = (subjects.len() - timed_out.min(subjects.len())) as u32;
    let inputs = SettlementInputs {
        task_id,
        escrow_id: EscrowId::new(escrow_id).map_err(err)?,
        usage: TaskUsage::Query(QueryUsage {
            n_vaults: verified,
            n_records: delivered,
            epsilon,
        }),
        evidence: StoredEvidence {
            envelope,
            slices,
            aggregate: AggregateEvidence {
                input_commitments,
                result_hash,
                commitment,
                attestation,
                executor: ActorId::new("master-0").map_err(err)?,
                compute_units: delivered,
            },
        },
        verifiers: (0..3)
            .map(|i| ActorId::new(format!("master-{i}")).map_err(err))
            .collect::<Result<_, _>>()?,
    };
    Ok(Fixture {
        masters,
        verifier,
        params,
        inputs,
        slice_enclaves,
        aggregator,
    })
}
