//! The Vault side of a training run as the master-side coordinator reaches it: the
//! narrow [`TrainingEndpoint`] interface.
//!
//! The embedded network calls an [`EnterpriseNode`] directly; a deployed master calls
//! the same operations over the enterprise RPC (`symphony-deploy`'s
//! `RemoteEnterprise`). Either way the per-run secrets — the Vault's local datasets,
//! its secure-aggregation key pair and the Shamir shares it holds — stay inside the
//! enterprise node (its [`TrainerSessions`], keyed by task id); what crosses the
//! interface is what the protocol lets leave a Vault: task-scoped person tokens
//! (for one account per person across Vaults), reservation counts and commitments,
//! the round's public key, shares dealt to other Vaults, masked updates and attested
//! evaluation outputs.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use symphony_core::budget::Epsilon;
use symphony_core::encoding::Digest;
use symphony_core::envelope::TaskEnvelope;
use symphony_core::ids::{ActorId, SliceId, TaskId, VaultId};
use symphony_semantic::{FeatureIntent, SemanticRegistry};
use symphony_train::dpsgd::{LogisticRegression, Mlp};
use symphony_train::secagg::{ParticipantId, Roster, SecretShare, ShareFor};

use super::model::{train_err, GlobalModel};
use super::persons::{PersonCandidate, PersonSelection};
use super::spec::TrainingSpec;
use super::vault::{
    EvaluationBundle, Prepared, RoundAssignment, TrainSliceBundle, TrainerState, VaultTrainer,
};
use crate::enterprise::EnterpriseNode;
use crate::NodeError;

/// The Vault-side training operations the coordinator calls, in run order:
/// admission reservation, then per round prepare → participant id → deal/hold
/// shares → train (or release the round) → recovery shares of dropped Vaults, then
/// the final evaluation and the release of unused reservations (which ends the
/// Vault's session of the task).
/// `Sync`: the coordinator calls the Vaults of a round from parallel threads.
pub trait TrainingEndpoint: Sync {
    /// The Vault served.
    fn vault_id(&self) -> &VaultId;

    /// Authorization for `train`, then one candidate per person with `training`
    /// consent in the market scope: its task-scoped token and whether its account
    /// can afford the whole run's `total` ε.
    fn train_admission_persons(
        &self,
        task: &TaskId,
        actor: &ActorId,
        total: Epsilon,
        countries: &[String],
        at_ms: u64,
    ) -> Result<Vec<PersonCandidate>, NodeError>;

    /// Reserves every scheduled round's ε, all rounds or none per subject, for the
    /// persons `selection` assigns to this Vault. Returns the count of subjects to
    /// train on per round and a commitment to that set.
    fn train_admission_reserve(
        &self,
        task: &TaskId,
        actor: &ActorId,
        schedule: &[Epsilon],
        selection: &PersonSelection,
    ) -> Result<(Vec<u64>, Digest), NodeError>;

    /// Feature construction for a round; returns the train-split size and this
    /// round's secagg public key.
    fn train_prepare_round(&self, a: &RoundAssignment) -> Result<Prepared, NodeError>;

    /// Sets this Vault's participant id in the round's roster.
    fn train_set_participant_id(
        &self,
        id: ParticipantId,
        a: &RoundAssignment,
    ) -> Result<(), NodeError>;

    /// Deals Shamir shares of this round's secagg secret to the roster.
    fn train_deal_shares(
        &self,
        roster: &RosterKeys,
        threshold: u8,
        a: &RoundAssignment,
    ) -> Result<Vec<ShareFor>, NodeError>;

    /// Keeps a share another Vault dealt to this one.
    fn train_hold_share(&self, task: &TaskId, share: ShareFor) -> Result<(), NodeError>;

    /// Hands over the share this Vault holds of a dropped participant.
    fn train_recovery_share(
        &self,
        task: &TaskId,
        dropped: ParticipantId,
    ) -> Result<Option<ShareFor>, NodeError>;

    /// Local DP-SGD, quantization and masking in the enclave. `audit` receives the
    /// Vault's quantized update before masking — the Vault's own audit sink, called
    /// only where the Vault runs in the caller's process (a remote Vault keeps it).
    #[allow(clippy::too_many_arguments)]
    fn train_round(
        &self,
        a: &RoundAssignment,
        global: &GlobalModel,
        model_hash: &Digest,
        roster: &RosterKeys,
        audit: &mut dyn FnMut(&[u32]),
    ) -> Result<TrainSliceBundle, NodeError>;

    /// Releases this Vault's reservations from `round` on (dropped before executing;
    /// its subjects are out of the run).
    fn train_release_round(&self, task: &TaskId, round: u32) -> Result<u64, NodeError>;

    /// Ends the session after `rounds_run` rounds: persons only charged here
    /// commit those rounds, every other reservation left is released.
    fn train_release_unused(&self, task: &TaskId, rounds_run: u32) -> Result<u64, NodeError>;

    /// Held-out scores and member losses of the final model, attested.
    fn train_evaluate(
        &self,
        a: &RoundAssignment,
        model: &GlobalModel,
        model_hash: &Digest,
    ) -> Result<EvaluationBundle, NodeError>;
}

/// A round's slice assignment as it travels: everything but the feature plan,
/// which the Vault resolves itself from the spec with its own semantic registry
/// (the plan's hash must then match the envelope's `resolved_plan_hash`, so a
/// Vault never trains on a plan the masters did not admit).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssignmentWire {
    /// The slice.
    pub slice_id: SliceId,
    /// The admitted envelope.
    pub envelope: TaskEnvelope,
    /// The spec.
    pub spec: TrainingSpec,
    /// Consent evaluation time, ms.
    pub evaluate_at_ms: u64,
    /// Feature cutoff, ms.
    pub cutoff_ms: u64,
    /// ε of the round per used subject.
    pub epsilon: Epsilon,
    /// Run seed.
    pub run_seed: u64,
}

impl From<&RoundAssignment> for AssignmentWire {
    fn from(a: &RoundAssignment) -> Self {
        AssignmentWire {
            slice_id: a.slice_id.clone(),
            envelope: a.envelope.clone(),
            spec: a.spec.clone(),
            evaluate_at_ms: a.evaluate_at_ms,
            cutoff_ms: a.cutoff_ms,
            epsilon: a.epsilon,
            run_seed: a.run_seed,
        }
    }
}

impl AssignmentWire {
    /// The assignment, with the feature plan resolved by `registry`.
    pub fn assignment(self, registry: &SemanticRegistry) -> Result<RoundAssignment, NodeError> {
        let plan = registry
            .resolve_features(&FeatureIntent {
                brand: self.spec.brand.clone(),
                feature_names: self.spec.feature_families.clone(),
                window_days: self.spec.window_days,
            })
            .map_err(|e| NodeError::Refused(format!("feature plan: {e}")))?;
        if plan.plan_hash() != self.envelope.body().resolved_plan_hash {
            return Err(NodeError::Refused(
                "feature plan resolved here does not match the envelope's resolved_plan_hash"
                    .into(),
            ));
        }
        Ok(RoundAssignment {
            slice_id: self.slice_id,
            envelope: self.envelope,
            plan,
            spec: self.spec,
            evaluate_at_ms: self.evaluate_at_ms,
            cutoff_ms: self.cutoff_ms,
            epsilon: self.epsilon,
            run_seed: self.run_seed,
        })
    }
}

/// A round's roster as it travels: participant id and X25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterKeys(pub Vec<(u32, [u8; 32])>);

impl RosterKeys {
    /// The secagg roster.
    pub fn roster(&self) -> Result<Roster, NodeError> {
        Roster::new(
            self.0
                .iter()
                .map(|(id, pk)| (ParticipantId(*id), x25519_dalek::PublicKey::from(*pk))),
        )
        .map_err(train_err)
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the roster is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A share as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareWire {
    /// Whose secret.
    pub owner: u32,
    /// Who keeps it.
    pub holder: u32,
    /// The share's bytes.
    pub share: Vec<u8>,
}

impl From<&ShareFor> for ShareWire {
    fn from(s: &ShareFor) -> Self {
        ShareWire {
            owner: s.owner.0,
            holder: s.holder.0,
            share: s.share.as_bytes().to_vec(),
        }
    }
}

impl ShareWire {
    /// The share, checked.
    pub fn share(&self) -> Result<ShareFor, NodeError> {
        Ok(ShareFor {
            owner: ParticipantId(self.owner),
            holder: ParticipantId(self.holder),
            share: SecretShare::from_bytes(&self.share).map_err(train_err)?,
        })
    }
}

/// A global model as it travels: its architecture and its exact parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModelWire {
    /// Logistic regression: weights then bias.
    Logistic(Vec<f64>),
    /// One-hidden-layer MLP.
    Mlp {
        /// Input features.
        n_features: usize,
        /// Hidden units.
        hidden: usize,
        /// Parameters in [`GlobalModel::parameters`] layout.
        params: Vec<f64>,
    },
}

impl From<&GlobalModel> for ModelWire {
    fn from(m: &GlobalModel) -> Self {
        match m {
            GlobalModel::Logistic(_) => ModelWire::Logistic(m.parameters()),
            GlobalModel::Mlp(x) => ModelWire::Mlp {
                n_features: symphony_train::dpsgd::Model::n_features(x),
                hidden: x.hidden(),
                params: m.parameters(),
            },
        }
    }
}

impl ModelWire {
    /// The model, bit for bit (refused if the parameters cannot be reproduced
    /// exactly: the model hash binds the slice's inputs).
    pub fn model(&self) -> Result<GlobalModel, NodeError> {
        let (model, params) = match self {
            ModelWire::Logistic(p) => (
                GlobalModel::Logistic(LogisticRegression::from_parameters(p).map_err(train_err)?),
                p,
            ),
            ModelWire::Mlp {
                n_features,
                hidden,
                params,
            } => {
                // An MLP has no parameter constructor: start from any initialisation,
                // subtract it (x + (−x) = +0 exactly), then add the parameters.
                let mut m =
                    GlobalModel::Mlp(Mlp::new(*n_features, *hidden, [0u8; 32]).map_err(train_err)?);
                if m.n_parameters() != params.len() {
                    return Err(NodeError::Refused(format!(
                        "model: {} parameters for an MLP of {n_features}×{hidden} (expected {})",
                        params.len(),
                        m.n_parameters()
                    )));
                }
                let neg: Vec<f64> = m.parameters().iter().map(|x| -x).collect();
                m.add(&neg)?;
                m.add(params)?;
                (m, params)
            }
        };
        let same = model
            .parameters()
            .iter()
            .zip(params)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same || model.n_parameters() != params.len() {
            return Err(NodeError::Refused(
                "model: parameters could not be reproduced exactly".into(),
            ));
        }
        Ok(model)
    }
}

/// The per-task training sessions of one enterprise node: each run's secrets live
/// here, in the Vault's process, from admission until the run releases its unused
/// reservations.
#[derive(Default)]
pub struct TrainerSessions(Mutex<BTreeMap<TaskId, TrainerState>>);

impl TrainerSessions {
    /// Tasks with an open session.
    pub fn tasks(&self) -> Vec<TaskId> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}

impl EnterpriseNode {
    /// Runs `f` on this node's trainer of `task` (a fresh session if none is open);
    /// the session is kept unless `end` says the run is over.
    fn with_trainer<R>(
        &self,
        task: &TaskId,
        end: bool,
        f: impl FnOnce(&mut VaultTrainer<'_>) -> R,
    ) -> R {
        let mut sessions = self
            .training
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let state = sessions.remove(task).unwrap_or_default();
        let mut trainer = VaultTrainer::with_state(self, state);
        let out = f(&mut trainer);
        if !end {
            sessions.insert(task.clone(), trainer.into_state());
        }
        out
    }
}

fn parent(a: &RoundAssignment) -> &TaskId {
    &a.slice_id.sub_task.parent
}

impl TrainingEndpoint for EnterpriseNode {
    fn vault_id(&self) -> &VaultId {
        EnterpriseNode::vault_id(self)
    }

    fn train_admission_persons(
        &self,
        task: &TaskId,
        actor: &ActorId,
        total: Epsilon,
        countries: &[String],
        at_ms: u64,
    ) -> Result<Vec<PersonCandidate>, NodeError> {
        self.with_trainer(task, false, |t| {
            t.admission_persons(task, actor, total, countries, at_ms)
        })
    }

    fn train_admission_reserve(
        &self,
        task: &TaskId,
        actor: &ActorId,
        schedule: &[Epsilon],
        selection: &PersonSelection,
    ) -> Result<(Vec<u64>, Digest), NodeError> {
        self.with_trainer(task, false, |t| {
            t.admission_reserve(task, actor, schedule, selection)
        })
    }

    fn train_prepare_round(&self, a: &RoundAssignment) -> Result<Prepared, NodeError> {
        self.with_trainer(parent(a), false, |t| t.prepare_round(a))
    }

    fn train_set_participant_id(
        &self,
        id: ParticipantId,
        a: &RoundAssignment,
    ) -> Result<(), NodeError> {
        self.with_trainer(parent(a), false, |t| t.set_participant_id(id, a));
        Ok(())
    }

    fn train_deal_shares(
        &self,
        roster: &RosterKeys,
        threshold: u8,
        a: &RoundAssignment,
    ) -> Result<Vec<ShareFor>, NodeError> {
        let roster = roster.roster()?;
        self.with_trainer(parent(a), false, |t| t.deal_shares(&roster, threshold, a))
    }

    fn train_hold_share(&self, task: &TaskId, share: ShareFor) -> Result<(), NodeError> {
        self.with_trainer(task, false, |t| t.hold_share(share));
        Ok(())
    }

    fn train_recovery_share(
        &self,
        task: &TaskId,
        dropped: ParticipantId,
    ) -> Result<Option<ShareFor>, NodeError> {
        Ok(self.with_trainer(task, false, |t| t.recovery_share(dropped)))
    }

    fn train_round(
        &self,
        a: &RoundAssignment,
        global: &GlobalModel,
        model_hash: &Digest,
        roster: &RosterKeys,
        audit: &mut dyn FnMut(&[u32]),
    ) -> Result<TrainSliceBundle, NodeError> {
        let roster = roster.roster()?;
        self.with_trainer(parent(a), false, |t| {
            t.train_round_audited(a, global, model_hash, &roster, audit)
        })
    }

    fn train_release_round(&self, task: &TaskId, round: u32) -> Result<u64, NodeError> {
        self.with_trainer(task, false, |t| t.release_round(task, round))
    }

    fn train_release_unused(&self, task: &TaskId, rounds_run: u32) -> Result<u64, NodeError> {
        self.with_trainer(task, true, |t| t.release_unused(task, rounds_run))
    }

    fn train_evaluate(
        &self,
        a: &RoundAssignment,
        model: &GlobalModel,
        model_hash: &Digest,
    ) -> Result<EvaluationBundle, NodeError> {
        self.with_trainer(parent(a), false, |t| t.evaluate(a, model, model_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_rosters_travel_bit_for_bit_and_bad_ones_are_refused() {
        let mut mlp = GlobalModel::Mlp(Mlp::new(5, 3, [7u8; 32]).unwrap());
        let delta: Vec<f64> = (0..mlp.n_parameters())
            .map(|i| (i as f64 * 0.37).sin() * 1e-3)
            .collect();
        mlp.add(&delta).unwrap();
        let back = ModelWire::from(&mlp).model().unwrap();
        let bits = |m: &GlobalModel| {
            m.parameters()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&back), bits(&mlp));
        let logistic = GlobalModel::Logistic(
            LogisticRegression::from_parameters(&[0.1, -0.2, 0.30000000000000004]).unwrap(),
        );
        assert_eq!(
            bits(&ModelWire::from(&logistic).model().unwrap()),
            bits(&logistic)
        );
        let wrong = ModelWire::Mlp {
            n_features: 5,
            hidden: 3,
            params: vec![0.0; 4],
        };
        let e = wrong.model().unwrap_err().to_string();
        assert!(e.contains("4 parameters for an MLP of 5×3"), "{e}");
        // A roster of one participant is refused (secure aggregation needs two).
        assert!(RosterKeys(vec![(0, [9u8; 32])]).roster().is_err());
        let bad_share = ShareWire {
            owner: 0,
            holder: 1,
            share: vec![0; 3],
        };
        assert!(bad_share.share().is_err());
    }
}
