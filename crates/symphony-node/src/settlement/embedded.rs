//! The settlement plane inside `MasterServices` (embedded network and deployed
//! master), and the Vault-side dividend payout of the embedded network.

use symphony_core::ids::{ActorId, ChallengeId, EpochId, TaskId, VaultId};
use symphony_core::lifecycle::{SettlementState, SliceState};
use symphony_economics::rewards::ProducerUsage;
use symphony_economics::PolicyParams;
use symphony_ledger::{AccountId, EscrowId, StakeTier};

use super::dividends::{pay_prepared_dividend_share, vault_dividend_distribution_to, VaultShare};
use super::rewards::{
    charge_rejection_owing, mark_staked, scheduled_round_payouts, unstaked_producer_usage,
    vault_subject_usage,
};
use super::{
    vault_operator, AggregateEvidence, FinalizeStep, SettlementContext, SettlementInputs,
    SettlementRow, SettlementStore, SliceOutcome, StoredEvidence, VerificationOutcome,
};
use crate::challenge::{ChallengeEvidence, ChallengeRequest};
use crate::enterprise::EnterpriseNode;
use crate::network::{MasterServices, Observer};
use crate::verify::SliceEvidence;
use crate::NodeError;

/// How a settlement run ended.
#[derive(Debug)]
pub enum Settled {
    /// Finalized and paid.
    Finalized(Box<SettlementRow>),
    /// Stored evidence failed to replay: a master's challenge was confirmed and the
    /// task rejected (base fee charged, the rest refunded).
    Rejected {
        /// Why.
        reason: String,
        /// Fee charged.
        fee: u64,
        /// Refund.
        refund: u64,
    },
}

fn masters() -> Result<Vec<ActorId>, NodeError> {
    (0..3)
        .map(|i| ActorId::new(format!("master-{i}")).map_err(|e| NodeError::Refused(e.to_string())))
        .collect()
}

/// Stored evidence of a single-round task from what the coordinator recorded.
pub fn evidence_of(
    masters: &dyn crate::replication::Replicator,
    task_id: &TaskId,
    slice_evidence: &[SliceEvidence],
    agg: crate::verify::AggregateClaim<'_>,
    compute_units: u64,
) -> Result<StoredEvidence, NodeError> {
    let rec = masters
        .state()
        .task(task_id)
        .ok_or_else(|| NodeError::Refused(format!("unknown task {task_id}")))?;
    let slices = rec
        .slices
        .iter()
        .map(|(vault, r)| {
            let evidence = slice_evidence
                .iter()
                .find(|e| r.state == SliceState::Verified && e.commitment == r.commitment)
                .cloned();
            SliceOutcome {
                vault_id: vault.clone(),
                state: r.state,
                evidence,
                subjects_evaluated: r.subjects_evaluated,
                epsilon_committed_micro: r.epsilon_committed_micro,
            }
        })
        .collect();
    Ok(StoredEvidence {
        envelope: rec.envelope.clone(),
        slices,
        aggregate: AggregateEvidence {
            input_commitments: agg.input_commitments.to_vec(),
            result_hash: agg.result_hash,
            commitment: agg.commitment,
            attestation: agg.attestation.clone(),
            executor: ActorId::new("master-0").map_err(|e| NodeError::Refused(e.to_string()))?,
            compute_units,
        },
    })
}

impl MasterServices {
    fn settlement_store(&mut self) -> Result<&SettlementStore, NodeError> {
        if self.settlements.is_none() {
            self.settlements = Some(SettlementStore::in_memory()?);
        }
        self.settlements
            .as_ref()
            .ok_or_else(|| NodeError::Io("no settlement store".into()))
    }

    /// Runs the settlement plane for an accepted task: collecting → verifying_inputs
    /// → candidate_ready → (challenge window; the embedded network's injected clock
    /// moves past it) → finalizing → finalized.
    pub fn settle(
        &mut self,
        inputs: &SettlementInputs,
        params: &PolicyParams,
        obs: &mut dyn Observer,
    ) -> Result<Settled, NodeError> {
        self.settlement_store()?;
        let now_ms = self.now_ms;
        let Some(store) = self.settlements.as_ref() else {
            return Err(NodeError::Io("no settlement store".into()));
        };
        let mut ctx = SettlementContext {
            masters: &mut *self.masters,
            ledger: &mut *self.ledger,
            verifier: &self.verifier,
            store,
            params,
        };
        let (row, outcome) = ctx.open(inputs, now_ms)?;
        obs.step("settlement:collecting", "fee fixed, evidence stored");
        if let VerificationOutcome::Challenged { target, reason } = outcome {
            obs.step(
                "settlement:verifying_inputs",
                &format!("replay failed: {reason}"),
            );
            let out = ctx.run_challenge(
                &ChallengeRequest {
                    challenge_id: ChallengeId::new(format!("verify-{}", inputs.task_id))
                        .map_err(|e| NodeError::Refused(e.to_string()))?,
                    task_id: inputs.task_id.clone(),
                    target,
                    challenger: ActorId::new("master-0")
                        .map_err(|e| NodeError::Refused(e.to_string()))?,
                    evidence: ChallengeEvidence::StoredEvidenceFails,
                },
                now_ms,
            )?;
            obs.step(
                "challenge",
                &format!("{}: {}", out.state, out.verdict.reason),
            );
            let escrow = ctx.ledger.escrow(&row.escrow_id);
            return Ok(Settled::Rejected {
                reason: format!("settlement inputs do not replay: {reason}"),
                fee: escrow.as_ref().map_or(0, |e| e.paid_out),
                refund: escrow.map_or(0, |e| e.refunded),
            });
        }
        obs.step(
            "settlement:verifying_inputs",
            "stored evidence replayed: accepted",
        );
        let closes_at_ms = row.closes_at_ms.unwrap_or(now_ms);
        obs.step(
            "settlement:candidate_ready",
            &format!(
                "challenge window open until {}",
                symphony_core::time::iso8601(closes_at_ms)
            ),
        );
        let mut certificate_step = |s: FinalizeStep| {
            let (name, detail) = match s {
                FinalizeStep::CertificateStored => (
                    "settlement:finalizing",
                    "challenge window closed; commit certificate stored",
                ),
                FinalizeStep::EscrowPaidUnrecorded | FinalizeStep::RefundedUnrecorded => return,
                FinalizeStep::EscrowPaid => ("payout", "fee paid from escrow along the fee split"),
                FinalizeStep::Refunded => ("refund", "escrow remainder returned to the submitter"),
                FinalizeStep::Paid => ("credits", "enterprise credits for the Vaults' fee earned"),
                FinalizeStep::Finalized => (
                    "settlement:finalized",
                    "paid exactly once, final with 2 of 3 master signatures",
                ),
            };
            obs.step(name, detail);
        };
        let row = ctx.finalize(&inputs.task_id, closes_at_ms, &mut certificate_step)?;
        Ok(Settled::Finalized(Box::new(row)))
    }

    /// A rejected task: the base fee of its class goes to the treasury, the rest of
    /// the escrow back to the submitter (after the rejection is committed).
    pub fn charge_rejected(
        &mut self,
        task_id: &TaskId,
        escrow_id: &EscrowId,
    ) -> Result<symphony_economics::SettledFee, NodeError> {
        let rec = self
            .masters
            .state()
            .task(task_id)
            .ok_or_else(|| NodeError::Refused(format!("unknown task {task_id}")))?;
        let body = rec.envelope.body();
        let (class, epoch) = (body.task_class, body.epoch_id);
        let resolved = self
            .policy
            .resolve(epoch, body.semantic_version, body.policy_version)
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        self.settlement_store()?;
        let Some(store) = self.settlements.as_ref() else {
            return Err(NodeError::Io("no settlement store".into()));
        };
        // A `train` run's closed rounds scheduled their payouts: paid with the fee.
        let owed = scheduled_round_payouts(self.masters.state(), task_id)?;
        charge_rejection_owing(
            &mut *self.ledger,
            store,
            escrow_id,
            task_id,
            class,
            &resolved.params,
            epoch,
            owed,
        )
    }
}

/// The Vault side of data usage dividends in the embedded network: each enterprise
/// node reads from its own budget ledger whose records the task used and pays its
/// producers from its dividend account (one committed distribution beyond
/// [`super::DIRECT_PAYOUT_LIMIT`] producers). Returns Σ paid.
pub fn pay_embedded_vault_dividends(
    master: &mut MasterServices,
    enterprises: &[EnterpriseNode],
    task_id: &TaskId,
    evaluated_at_ms: u64,
) -> Result<u64, NodeError> {
    pay_embedded_vault_dividends_with_limit(
        master,
        enterprises,
        task_id,
        evaluated_at_ms,
        super::DIRECT_PAYOUT_LIMIT,
    )
}

/// [`pay_embedded_vault_dividends`] with another direct payout limit: a Vault with
/// more than `direct_limit` producers for the task commits one distribution.
pub fn pay_embedded_vault_dividends_with_limit(
    master: &mut MasterServices,
    enterprises: &[EnterpriseNode],
    task_id: &TaskId,
    evaluated_at_ms: u64,
    direct_limit: usize,
) -> Result<u64, NodeError> {
    let Some(row) = master
        .settlements
        .as_ref()
        .map(|s| s.row(task_id))
        .transpose()?
        .flatten()
    else {
        return Ok(0);
    };
    if row.state != SettlementState::Finalized {
        return Ok(0);
    }
    let body = row.evidence.envelope.body();
    let resolved = master
        .policy
        .resolve(body.epoch_id, body.semantic_version, body.policy_version)
        .map_err(|e| NodeError::Refused(e.to_string()))?;
    // Each Vault reads its subjects' usage and names their producers at once
    // (read-only, in parallel); the stakes are read from the ledger (which paying a
    // dividend does not change); then each Vault beyond the direct limit builds its
    // distribution (in parallel again) while the payments go through the ledger one
    // Vault after the other, in Vault order.
    let scope = body.budget_reservation.usage_scope;
    let mut usage = Vec::with_capacity(enterprises.len());
    crate::planes::for_each_vault(
        enterprises,
        |e| {
            vault_subject_usage(e.vault(), task_id, scope, evaluated_at_ms)
                .and_then(unstaked_producer_usage)
        },
        |_, used| {
            usage.push(used);
            Ok(())
        },
    )?;
    let Some(store) = master.settlements.as_ref() else {
        return Ok(0);
    };
    // The Vaults to pay, in order, up to the first that cannot be paid (its error
    // is returned once the Vaults before it are paid).
    let mut plans = Vec::with_capacity(enterprises.len());
    let mut refused = None;
    for (e, used) in enterprises.iter().zip(usage) {
        let vault = e.vault_id();
        let Some(totals) = row.candidate.vault_usage.iter().find(|t| &t.vault == vault) else {
            continue;
        };
        let share = row
            .candidate
            .fee_shares
            .get(&format!("contributors:{vault}"))
            .copied()
            .unwrap_or(0);
        let (mut producers, accounts) = match used {
            Ok(u) => u,
            Err(err) => {
                refused = Some(err);
                break;
            }
        };
        mark_staked(&mut producers, &accounts, &*master.ledger);
        let used: u64 = producers.iter().map(|p| p.records_used).sum();
        if used != totals.records_used {
            refused = Some(NodeError::Refused(format!(
                "vault {vault}: {used} producers found for {} attested subjects",
                totals.records_used
            )));
            break;
        }
        plans.push(VaultPlan {
            vault,
            share,
            producers,
            accounts,
        });
    }
    let mut paid = 0u64;
    let ledger = &mut *master.ledger;
    crate::planes::for_each_vault(
        &plans,
        |plan| {
            let s = plan.share_of(task_id, &resolved.params, row.epoch_id, direct_limit);
            s.beyond_direct_limit().then(|| {
                vault_dividend_distribution_to(
                    s.vault,
                    s.task,
                    s.share_micro_sym,
                    s.producers,
                    &plan.accounts,
                    s.params,
                    s.epoch,
                )
            })
        },
        |i, prepared| {
            let s = plans[i].share_of(task_id, &resolved.params, row.epoch_id, direct_limit);
            let p = pay_prepared_dividend_share(&mut *ledger, store, &s, prepared)?;
            paid = paid.saturating_add(p);
            Ok(())
        },
    )?;
    match refused {
        Some(err) => Err(err),
        None => Ok(paid),
    }
}

/// One Vault's dividend to pay in [`pay_embedded_vault_dividends_with_limit`].
struct VaultPlan<'a> {
    vault: &'a VaultId,
    share: u64,
    producers: Vec<ProducerUsage>,
    /// The account of each producer.
    accounts: Vec<AccountId>,
}

impl VaultPlan<'_> {
    fn share_of<'b>(
        &'b self,
        task: &'b TaskId,
        params: &'b PolicyParams,
        epoch: EpochId,
        direct_limit: usize,
    ) -> VaultShare<'b> {
        VaultShare {
            vault: self.vault,
            task,
            share_micro_sym: self.share,
            producers: &self.producers,
            params,
            epoch,
            direct_limit,
        }
    }
}

/// Genesis stakes of the embedded network: every Vault operator bonds
/// `S_enterprise`, every master `S_master` (so that penalties have stake to slash).
pub fn genesis_stakes(
    params: &PolicyParams,
    vaults: &[symphony_core::ids::VaultId],
) -> Result<Vec<(AccountId, StakeTier, u64)>, NodeError> {
    let mut out = Vec::new();
    for v in vaults {
        out.push((
            super::actor_account(&vault_operator(v)?)?,
            StakeTier::Enterprise,
            params.staking.s_enterprise_micro_sym,
        ));
    }
    for m in masters()? {
        out.push((
            super::actor_account(&m)?,
            StakeTier::Master,
            params.staking.s_master_micro_sym,
        ));
    }
    Ok(out)
}
