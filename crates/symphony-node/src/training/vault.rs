//! The enterprise side of a training run: the Computation Runtime's training slices.
//!
//! Everything that touches records happens here, inside the Vault's enclave run:
//! per-round feature construction from the admitted [`FeaturePlan`] (only subjects
//! with `training` consent at the round's evaluation time, a budget reservation for
//! the round and a home country in the market scope), the held-out split, local
//! DP-SGD, quantization, FedAvg pre-scaling and pairwise masking. What leaves is a
//! masked vector (indistinguishable from uniform without the other Vaults' masks)
//! and the attestation: the Vault's example counts and loss sums travel only inside
//! the masked vector, so the aggregation enclave learns their sums across Vaults and
//! releases those only with noise ([`super::control::METRICS_NOISE_MULTIPLIER`]).
//!
//! Budget, per person ([`super::persons`]): admission reports each candidate's
//! person token and whether it can afford the whole run, then reserves every round
//! for the persons the coordinator assigned here (to train on, or only to charge).
//! Participation is a prefix: a subject that misses a round (consent withdrawn, the
//! Vault dropped out or its slice failed) is out for the rest of the run and its
//! later reservations are released. Each round commits its ε for the subjects it
//! used, and for the persons charged here (they train through another Vault).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use ndarray::Array2;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use symphony_core::budget::{BudgetOp, Epsilon};
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{content_hash, tagged_hash, Digest};
use symphony_core::envelope::{TaskClass, TaskEnvelope};
use symphony_core::ids::{ActorId, SliceId, SubjectId, TaskId};
use symphony_enclave::{AttestationReport, Tee};
use symphony_semantic::{FeaturePlan, PurchaseFact, SubjectFacts};
use symphony_train::dpsgd::{Dataset, DpSgdConfig, Sampling};
use symphony_train::metrics;
use symphony_train::secagg::{
    MaskedUpdate, Participant, ParticipantId, Quantizer, Roster, ShareFor,
};
use symphony_vault::SubjectView;

use super::control::LOSS_CLIP;
use super::model::{train_err, GlobalModel};
use super::persons::{
    person_key, Participation, PersonCandidate, PersonSelection, PersonToken, RoundOp,
};
use super::spec::TrainingSpec;
use crate::bundle::dedup_token;
use crate::enterprise::EnterpriseNode;
use crate::NodeError;

/// Extra coordinates appended to the update, each divided by the run's public scale
/// (the subjects reserved at admission): train examples, clipped train loss sum,
/// held-out examples, clipped held-out loss sum.
pub const METRIC_SLOTS: usize = 4;

/// The budget task id of round `round` of `task` (each round reserves and commits
/// under its own id, so consumption is recorded per round).
pub fn round_task_id(task: &TaskId, round: u32) -> Result<TaskId, NodeError> {
    TaskId::new(format!("{task}/r{round}")).map_err(|e| NodeError::Refused(e.to_string()))
}

/// What a master sends for one round's slice.
#[derive(Clone, Debug)]
pub struct RoundAssignment {
    /// The slice.
    pub slice_id: SliceId,
    /// The admitted envelope.
    pub envelope: TaskEnvelope,
    /// The admitted feature plan (hash bound to the envelope).
    pub plan: FeaturePlan,
    /// The spec (hash bound to the envelope's `spec_hash` constraint).
    pub spec: TrainingSpec,
    /// Consent is evaluated at this time, ms.
    pub evaluate_at_ms: u64,
    /// Features read purchases up to the cutoff; labels the horizon after it.
    pub cutoff_ms: u64,
    /// ε of this round per used subject.
    pub epsilon: Epsilon,
    /// Seed of the run; the Vault mixes it with its enclave key for the DP-SGD noise
    /// and the secagg keys, so knowing it does not reveal them.
    pub run_seed: u64,
}

/// The slice's public output of the prepare phase (no count: the Vault's example
/// count travels only inside its masked update).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Prepared {
    /// The Vault's secagg public key for this round.
    pub public_key: [u8; 32],
}

/// A round slice's result bundle (privacy-safe: a masked vector).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSliceBody {
    /// The slice.
    pub slice_id: SliceId,
    /// The envelope it ran under.
    pub envelope_hash: Digest,
    /// Masked, quantized, pre-scaled update and metrics.
    pub masked: Vec<u32>,
    /// ε committed per used subject.
    pub epsilon_committed_micro: u64,
    /// Subjects whose records were used (train and held-out). Settlement only: the
    /// train formula pays each Vault's contributors by it.
    pub subjects_used: u64,
}

/// The bundle with its evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSliceBundle {
    /// The body.
    pub body: TrainSliceBody,
    /// Commitment over the body.
    pub commitment: Digest,
    /// Commitment over the inputs.
    pub inputs_commitment: Digest,
    /// Attestation of the enclave run.
    pub attestation: AttestationReport,
}

/// The final evaluation a Vault hands to the aggregation enclave (model outputs only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvaluationBundle {
    /// Held-out scores.
    pub holdout_scores: Vec<f64>,
    /// Held-out labels.
    pub holdout_labels: Vec<bool>,
    /// Per-example losses of training members.
    pub member_losses: Vec<f64>,
    /// Commitment over the above.
    pub commitment: Digest,
    /// Inputs commitment.
    pub inputs_commitment: Digest,
    /// Attestation.
    pub attestation: AttestationReport,
}

/// One subject's plaintext facts, read once per run inside the enclave.
struct CachedFacts {
    subject: SubjectId,
    held_out: bool,
    facts: SubjectFacts,
}

struct LocalData {
    train: Dataset,
    holdout: Dataset,
    used: Vec<SubjectId>,
}

/// The secrets one enterprise node holds for one training run: per-round
/// reservations, the local train/held-out datasets, the round's secagg key pair and
/// the Shamir shares dealt to it. Kept inside the node (see
/// [`super::endpoint::TrainerSessions`]); never sent anywhere.
#[derive(Default)]
pub struct TrainerState {
    /// Admission's candidates: person token → this Vault's subjects with it.
    persons: BTreeMap<PersonToken, Vec<SubjectId>>,
    /// Who trains, who is only charged, and what each round still holds.
    participation: Participation<SubjectId>,
    /// ε of each round (admission's schedule).
    schedule: Vec<Epsilon>,
    data: Option<LocalData>,
    /// The in-market subjects' facts as the first round read them, in scan order
    /// (see [`VaultTrainer::prepare_round`]).
    facts: Option<Vec<CachedFacts>>,
    participant: Option<Participant>,
    shares_held: BTreeMap<ParticipantId, ShareFor>,
}

/// One enterprise node's training runtime for one task.
pub struct VaultTrainer<'a> {
    /// The node.
    pub node: &'a EnterpriseNode,
    st: TrainerState,
}

/// Commitment over a training slice's inputs (public: the verifier recomputes it).
pub fn slice_inputs_commitment(a: &RoundAssignment, model_hash: &Digest) -> Digest {
    let mut bytes = a.envelope.hash().0.to_vec();
    bytes.extend_from_slice(&a.plan.plan_hash().0);
    bytes.extend_from_slice(a.slice_id.to_string().as_bytes());
    bytes.extend_from_slice(&model_hash.0);
    tagged_hash("scp/train-slice-inputs/v1", &bytes)
}

/// The plaintext facts of a scanned subject, as the semantic evaluators read them
/// (used inside enclaves only).
pub(crate) fn facts_of(view: &SubjectView<'_>) -> SubjectFacts {
    SubjectFacts {
        home_city: view
            .geography
            .map(|g| g.home_city.to_owned())
            .unwrap_or_default(),
        home_country: view
            .geography
            .map(|g| g.home_country.to_owned())
            .unwrap_or_default(),
        purchases: view
            .purchases
            .iter()
            .map(|p| PurchaseFact {
                brand: p.brand.to_owned(),
                category: p.category.to_owned(),
                amount_minor: p.amount_minor,
                currency: p.currency.to_owned(),
                timestamp_ms: p.ts_ms,
                store_city: p.store_city.to_owned(),
                store_country: p.store_country.to_owned(),
            })
            .collect(),
    }
}

fn held_out(task: &TaskId, subject: &SubjectId, fraction: f64) -> bool {
    let mut bytes = task.as_str().as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(subject.as_str().as_bytes());
    let d = tagged_hash("scp/train/holdout/v1", &bytes);
    let x = u64::from_le_bytes([
        d.0[0], d.0[1], d.0[2], d.0[3], d.0[4], d.0[5], d.0[6], d.0[7],
    ]);
    (x as f64 / u64::MAX as f64) < fraction
}

fn dataset(rows: Vec<Vec<f64>>, labels: Vec<bool>, d: usize) -> Result<Dataset, NodeError> {
    let n = rows.len();
    let flat: Vec<f64> = rows.into_iter().flatten().collect();
    let features = Array2::from_shape_vec((n, d), flat).map_err(train_err)?;
    Dataset::new(features, labels).map_err(train_err)
}

/// A seed derived from the run seed and a label.
pub fn derive_seed(run_seed: u64, label: &str) -> [u8; 32] {
    let mut bytes = run_seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(label.as_bytes());
    tagged_hash("scp/train/seed/v1", &bytes).0
}

/// The spec's DP-SGD configuration.
pub fn dpsgd_config(spec: &TrainingSpec) -> DpSgdConfig {
    DpSgdConfig {
        learning_rate: spec.dp_sgd.learning_rate,
        clip_norm: spec.dp_sgd.clip_norm,
        noise_multiplier: spec.dp_sgd.noise_multiplier,
        sampling: Sampling::Poisson {
            rate: spec.dp_sgd.sampling_rate,
        },
        steps: spec.dp_sgd.local_steps,
    }
}

/// The run's public scale: the subjects reserved at admission (in the envelope).
/// Each Vault divides its example-weighted update and its metric sums by it, so the
/// secure sum carries the example-weighted total without any per-Vault count.
pub fn run_scale(envelope: &TaskEnvelope) -> f64 {
    envelope.body().budget_reservation.subjects_reserved.max(1) as f64
}

/// Σ of per-example log loss, each clipped to [`LOSS_CLIP`].
fn clipped_loss_sum(model: &GlobalModel, data: &Dataset) -> Result<f64, NodeError> {
    let scores = model.predict(data)?;
    Ok(scores
        .iter()
        .zip(data.labels())
        .map(|(p, y)| {
            metrics::example_log_loss(*p, *y)
                .unwrap_or(LOSS_CLIP)
                .min(LOSS_CLIP)
        })
        .sum())
}

/// The quantizer of a run with `participants` Vaults: values clipped to ±8.
pub fn quantizer(participants: u32) -> Result<Quantizer, NodeError> {
    let clip = 8.0;
    let scale = ((f64::from(i32::MAX) / (f64::from(participants.max(1)) * clip)).floor()).max(1.0);
    Quantizer::new(scale, clip, participants).map_err(train_err)
}

/// Training examples of one Vault outside any network (benchmarks, baselines).
pub fn local_split(
    examples: Vec<(SubjectId, Vec<f64>, bool)>,
    task: &TaskId,
    holdout_fraction: f64,
    d: usize,
) -> Result<(Dataset, Dataset), NodeError> {
    let (mut tr, mut trl, mut ho, mut hol) = (vec![], vec![], vec![], vec![]);
    for (s, x, y) in examples {
        if held_out(task, &s, holdout_fraction) {
            ho.push(x);
            hol.push(y);
        } else {
            tr.push(x);
            trl.push(y);
        }
    }
    Ok((dataset(tr, trl, d)?, dataset(ho, hol, d)?))
}

impl<'a> VaultTrainer<'a> {
    /// A runtime over `node`.
    pub fn new(node: &'a EnterpriseNode) -> Self {
        Self::with_state(node, TrainerState::default())
    }

    /// A runtime over `node` resuming a run's state.
    pub fn with_state(node: &'a EnterpriseNode, state: TrainerState) -> Self {
        VaultTrainer { node, st: state }
    }

    /// The run's state, to keep until the next operation.
    pub fn into_state(self) -> TrainerState {
        self.st
    }

    /// Admission, first step: authorization for `train`, then one candidate per
    /// person of this Vault: its task-scoped token, whether it is eligible
    /// (`training` consent, a home country in `countries`) and whether its account
    /// can afford the whole run (`total`).
    pub fn admission_persons(
        &mut self,
        task: &TaskId,
        actor: &ActorId,
        total: Epsilon,
        countries: &[String],
        at_ms: u64,
    ) -> Result<Vec<PersonCandidate>, NodeError> {
        let vault = &self.node.vault;
        let auth = vault.authorize(actor, TaskClass::Train)?;
        let consented = vault.consented_subjects(UsageScope::Training, at_ms)?;
        let key = person_key(task);
        let vault_id = self.node.vault_id().clone();
        let mut persons: BTreeMap<PersonToken, Vec<SubjectId>> = BTreeMap::new();
        let mut eligible: BTreeSet<PersonToken> = BTreeSet::new();
        vault.for_each_subject(&auth, |view| {
            let Ok(subject) = SubjectId::new(view.subject) else {
                return ControlFlow::Continue(());
            };
            let in_market = view.geography.is_some_and(|g| {
                countries
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(g.home_country))
            });
            // A subject without a contact handle cannot be matched across Vaults:
            // its token is unique to this Vault.
            let token = match view.identity {
                Some(identity) => dedup_token(&key, identity.contact),
                None => {
                    tagged_hash(
                        "scp/train/person-local/v1",
                        format!("{vault_id}/{subject}").as_bytes(),
                    )
                    .0
                }
            };
            if consented.contains(&subject) && in_market {
                eligible.insert(token);
            }
            persons.entry(token).or_default().push(subject);
            ControlFlow::Continue(())
        })?;
        // One snapshot of every account (the bulk rows decoded once, not per subject).
        let accounts = vault.budget_accounts(persons.values().flatten(), UsageScope::Training)?;
        let mut remaining = accounts.iter().map(|a| a.remaining());
        let mut out = Vec::with_capacity(persons.len());
        for (token, subjects) in &persons {
            let mut affordable = true;
            for _ in subjects {
                affordable &= remaining.next().is_some_and(|r| r >= total);
            }
            out.push(PersonCandidate {
                token: *token,
                eligible: eligible.contains(token),
                affordable,
            });
        }
        self.st.persons = persons;
        Ok(out)
    }

    /// Admission, second step: reserves each scheduled round's ε for the persons
    /// `selection` assigns here (to train on or only to charge), all rounds or none
    /// per subject. Returns the subjects to train on per round and a commitment to
    /// that set.
    pub fn admission_reserve(
        &mut self,
        task: &TaskId,
        actor: &ActorId,
        schedule: &[Epsilon],
        selection: &PersonSelection,
    ) -> Result<(Vec<u64>, Digest), NodeError> {
        let vault = &self.node.vault;
        vault.authorize(actor, TaskClass::Train)?;
        let subjects_of = |tokens: &BTreeSet<PersonToken>| -> BTreeSet<SubjectId> {
            tokens
                .iter()
                .filter_map(|t| self.st.persons.get(t))
                .flatten()
                .cloned()
                .collect()
        };
        let train = subjects_of(&selection.train);
        let charge = subjects_of(&selection.charge);
        let all: Vec<SubjectId> = train.union(&charge).cloned().collect();
        // The whole run or nothing per subject: one that can not reserve every
        // round (budget spent since the candidates were reported) reserves none.
        let rounds = schedule
            .iter()
            .enumerate()
            .map(|(r, eps)| Ok((round_task_id(task, r as u32)?, *eps)))
            .collect::<Result<Vec<_>, NodeError>>()?;
        // One bulk row per round: the rounds' commits and releases then rewrite
        // a row each instead of every subject's account.
        let report = vault.reserve_bulk_all_or_none(UsageScope::Training, &all, &rounds)?;
        let full: BTreeSet<SubjectId> = report.reserved.into_iter().collect();
        self.st.participation = Participation::new(schedule.len() as u32, &full, &train, &charge);
        self.st.schedule = schedule.to_vec();
        self.st.persons.clear();
        let trained: Vec<&SubjectId> = self.st.participation.trainees().iter().collect();
        let commitment = content_hash("scp/consent-snapshot/v1", &trained)
            .map_err(|e| NodeError::Encoding(e.to_string()))?;
        Ok((vec![trained.len() as u64; schedule.len()], commitment))
    }

    /// Applies the participation rules' budget operations (a commit is of the
    /// round's scheduled ε).
    fn apply(&self, task: &TaskId, ops: Vec<RoundOp<SubjectId>>) -> Result<(), NodeError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut groups = Vec::with_capacity(ops.len());
        for op in ops {
            groups.push(match op {
                RoundOp::Commit { round, subjects } => {
                    (
                        subjects,
                        BudgetOp::Commit {
                            task: round_task_id(task, round)?,
                            actual: self.st.schedule.get(round as usize).copied().ok_or_else(
                                || {
                                    NodeError::Refused(format!(
                                        "round {round} is not in the run's schedule"
                                    ))
                                },
                            )?,
                        },
                    )
                }
                RoundOp::Release { round, subjects } => (
                    subjects,
                    BudgetOp::Release {
                        task: round_task_id(task, round)?,
                    },
                ),
            });
        }
        // One write transaction for all of them, one row rewritten per round.
        self.node
            .vault
            .apply_bulk_groups(UsageScope::Training, &groups)?;
        Ok(())
    }

    fn check(&self, a: &RoundAssignment) -> Result<(), NodeError> {
        a.envelope
            .verify()
            .map_err(|e| NodeError::Refused(e.to_string()))?;
        let body = a.envelope.body();
        let vault_id = self.node.vault_id();
        if &a.slice_id.vault != vault_id
            || !body
                .coordination_envelope
                .participating_vault_ids
                .contains(vault_id)
        {
            return Err(NodeError::Refused(format!(
                "slice {} is not for {vault_id}",
                a.slice_id
            )));
        }
        if a.plan.plan_hash() != body.resolved_plan_hash {
            return Err(NodeError::Refused(
                "plan does not match resolved_plan_hash".into(),
            ));
        }
        if body.constraints.get("spec_hash") != Some(&super::spec_hash(&a.spec)?.to_hex()) {
            return Err(NodeError::Refused(
                "training spec does not match the envelope".into(),
            ));
        }
        Ok(())
    }

    /// Per-Vault feature construction for a round (inside the enclave); returns this
    /// round's secagg public key. Only subjects still in the run (every earlier round
    /// taken part in), with consent at evaluation time, a reservation for the round
    /// and a home country in the market scope are read into features. The round is
    /// committed here for the persons only charged in this Vault.
    pub fn prepare_round(&mut self, a: &RoundAssignment) -> Result<Prepared, NodeError> {
        self.check(a)?;
        let body = a.envelope.body();
        let round = a.slice_id.sub_task.round;
        let task = body.task_id.clone();
        self.st.data = None;
        let ops = self.st.participation.open_round(round);
        self.apply(&task, ops)?;
        let auth = self
            .node
            .vault
            .authorize(&body.caller.actor_id, TaskClass::Train)?;
        let consented = self
            .node
            .vault
            .consented_subjects(UsageScope::Training, a.evaluate_at_ms)?;
        let eligible: BTreeSet<SubjectId> = self
            .st
            .participation
            .eligible(round)
            .intersection(&consented)
            .cloned()
            .collect();
        if self.st.facts.is_none() {
            self.st.facts = Some(self.read_facts(a, &auth, &eligible)?);
        }
        let cached = self.st.facts.as_deref().unwrap_or_default();
        // Consent and budget are checked every round (above); erasure too: a
        // subject erased since the first round is dropped from the cache here.
        let unreadable = self.node.vault.unreadable_among(
            cached
                .iter()
                .map(|c| &c.subject)
                .filter(|s| eligible.contains(*s)),
        )?;
        let d = a.plan.dimension();
        let (mut tr, mut trl, mut ho, mut hol, mut used) = (vec![], vec![], vec![], vec![], vec![]);
        for c in cached {
            if !eligible.contains(&c.subject) || unreadable.contains(&c.subject) {
                continue; // excluded before computation
            }
            let (x, y) = a
                .plan
                .training_example(&c.facts, a.cutoff_ms, a.spec.horizon_days);
            if c.held_out {
                ho.push(x);
                hol.push(y > 0.5);
            } else {
                tr.push(x);
                trl.push(y > 0.5);
            }
            used.push(c.subject.clone());
        }
        if !unreadable.is_empty() {
            if let Some(f) = self.st.facts.as_mut() {
                f.retain(|c| !unreadable.contains(&c.subject));
            }
        }
        if tr.is_empty() {
            let ops = self.st.participation.dropped(round);
            self.apply(&task, ops)?;
            return Err(NodeError::Refused(format!(
                "{}: no subject left to train on in round {round}",
                self.node.vault_id()
            )));
        }
        self.st.data = Some(LocalData {
            train: dataset(tr, trl, d)?,
            holdout: dataset(ho, hol, d)?,
            used,
        });
        let mut rng = ChaCha20Rng::from_seed(self.enclave_seed(a, "secagg"));
        let participant = Participant::from_rng(ParticipantId(0), &mut rng);
        let public_key = participant.public_key().to_bytes();
        self.st.participant = Some(participant);
        Ok(Prepared { public_key })
    }

    /// Decrypts this Vault's records once per run (the first round): the facts of
    /// every subject eligible then whose home country is in the market scope, in
    /// scan order. Later rounds only ever train on a subset of them (a person who
    /// missed a round is out of the run), so they read this cache instead of
    /// decrypting everything again; it never leaves the enclave's trainer state.
    fn read_facts(
        &self,
        a: &RoundAssignment,
        auth: &symphony_vault::Authorized,
        eligible: &BTreeSet<SubjectId>,
    ) -> Result<Vec<CachedFacts>, NodeError> {
        let task = &a.envelope.body().task_id;
        let countries = &a.spec.market_scope.countries;
        let mut out = Vec::new();
        self.node.vault.for_each_subject(auth, |view| {
            let Ok(subject) = SubjectId::new(view.subject) else {
                return ControlFlow::Continue(());
            };
            if !eligible.contains(&subject) {
                return ControlFlow::Continue(()); // excluded before computation
            }
            let in_market = view.geography.is_some_and(|g| {
                countries
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(g.home_country))
            });
            if in_market {
                out.push(CachedFacts {
                    held_out: held_out(task, &subject, a.spec.holdout_fraction),
                    facts: facts_of(view),
                    subject,
                });
            }
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Sets this Vault's participant id in the round's roster (its index).
    pub fn set_participant_id(&mut self, id: ParticipantId, a: &RoundAssignment) {
        let mut rng = ChaCha20Rng::from_seed(self.enclave_seed(a, "secagg"));
        self.st.participant = Some(Participant::from_rng(id, &mut rng));
    }

    /// Secret randomness of this Vault's enclave for one slice (secagg secret, Shamir
    /// dealing, DP-SGD sampling and noise): an ed25519 signature by
    /// the enclave key (deterministic) over `label`, the run seed and the slice,
    /// hashed. The same network and run seed give the same bytes, but only this
    /// enclave can derive it: the masters know the run seed, not the enclave key, so
    /// they cannot rebuild the Vault's secagg secret or its Shamir dealing.
    fn enclave_seed(&self, a: &RoundAssignment, label: &str) -> [u8; 32] {
        let mut msg = b"scp/train/enclave-seed/v1".to_vec();
        msg.extend_from_slice(&a.run_seed.to_le_bytes());
        msg.extend_from_slice(label.as_bytes());
        msg.push(0);
        msg.extend_from_slice(a.slice_id.to_string().as_bytes());
        let signature = self.node.enclave.sign(&msg);
        tagged_hash("scp/train/enclave-seed/v1", &signature.to_bytes()).0
    }

    /// Deals Shamir shares of this round's secagg secret for dropout recovery.
    pub fn deal_shares(
        &self,
        roster: &Roster,
        threshold: u8,
        a: &RoundAssignment,
    ) -> Result<Vec<ShareFor>, NodeError> {
        let p = self
            .st
            .participant
            .as_ref()
            .ok_or_else(|| NodeError::Refused("round not prepared".into()))?;
        let mut rng = ChaCha20Rng::from_seed(self.enclave_seed(a, "shares"));
        p.deal_shares(roster, threshold, &mut rng)
            .map_err(train_err)
    }

    /// Keeps a share another Vault dealt to this one.
    pub fn hold_share(&mut self, share: ShareFor) {
        self.st.shares_held.insert(share.owner, share);
    }

    /// Hands over the share of a dropped participant.
    pub fn recovery_share(&self, dropped: ParticipantId) -> Option<ShareFor> {
        self.st.shares_held.get(&dropped).cloned()
    }

    /// Local DP-SGD from `global`, pre-scaled by `examples / scale` (the run's
    /// public scale, see [`run_scale`]) with the metric sums appended, quantized and
    /// masked, inside the enclave; then the round's budget is committed for the used
    /// subjects, and the subjects that did not take part are out of the run.
    pub fn train_round(
        &mut self,
        a: &RoundAssignment,
        global: &GlobalModel,
        model_hash: &Digest,
        roster: &Roster,
    ) -> Result<TrainSliceBundle, NodeError> {
        self.train_round_audited(a, global, model_hash, roster, &mut |_| {})
    }

    /// [`Self::train_round`], handing the Vault's own `audit` sink a copy of the
    /// quantized update before it is masked (see [`super::tap`]).
    pub fn train_round_audited(
        &mut self,
        a: &RoundAssignment,
        global: &GlobalModel,
        model_hash: &Digest,
        roster: &Roster,
        audit: &mut dyn FnMut(&[u32]),
    ) -> Result<TrainSliceBundle, NodeError> {
        self.check(a)?;
        let (Some(data), Some(participant)) = (self.st.data.as_ref(), self.st.participant.as_ref())
        else {
            return Err(NodeError::Refused("round not prepared".into()));
        };
        let round = a.slice_id.sub_task.round;
        let inputs = slice_inputs_commitment(a, model_hash);
        let config = dpsgd_config(&a.spec);
        // The noise must be secret to be private: seeded by the enclave, not the run.
        let seed = self.enclave_seed(a, "dpsgd");
        let scale = run_scale(&a.envelope);
        let quant = quantizer(roster.len() as u32)?;
        let mut failure = None;
        let run = self
            .node
            .enclave
            .run(&inputs.0, a.envelope.hash().0, a.evaluate_at_ms, || {
                let out = (|| -> Result<TrainSliceBody, NodeError> {
                    let train_loss = clipped_loss_sum(global, &data.train)?;
                    let ho_loss = clipped_loss_sum(global, &data.holdout)?;
                    let (delta, _) = global.train_local(&data.train, &config, seed)?;
                    let n = data.train.len() as f64;
                    let mut vector: Vec<f64> = delta.iter().map(|x| x * n).collect();
                    vector.extend([n, train_loss, data.holdout.len() as f64, ho_loss]);
                    let scaled: Vec<f64> = vector.iter().map(|x| x / scale).collect();
                    let words = quant.encode(&scaled).map_err(train_err)?;
                    audit(&words);
                    let MaskedUpdate { masked, .. } = participant
                        .mask(roster, u64::from(round), &words)
                        .map_err(train_err)?;
                    Ok(TrainSliceBody {
                        slice_id: a.slice_id.clone(),
                        envelope_hash: a.envelope.hash(),
                        masked,
                        epsilon_committed_micro: a.epsilon.micro,
                        subjects_used: data.used.len() as u64,
                    })
                })();
                match out {
                    Ok(body) => {
                        let c = content_hash("scp/train-slice/v1", &body).unwrap_or_default();
                        (Some((body, c)), c.0)
                    }
                    Err(e) => {
                        failure = Some(e);
                        (None, [0u8; 32])
                    }
                }
            });
        let (out, attestation) = run.map_err(|e| NodeError::Enclave(e.to_string()))?;
        let Some((body, commitment)) = out else {
            return Err(failure.unwrap_or_else(|| NodeError::Enclave("slice failed".into())));
        };
        self.finish_round(&body.slice_id.sub_task.parent, round)?;
        Ok(TrainSliceBundle {
            body,
            commitment,
            inputs_commitment: inputs,
            attestation,
        })
    }

    fn finish_round(&mut self, task: &TaskId, round: u32) -> Result<(), NodeError> {
        let used: BTreeSet<SubjectId> = self
            .st
            .data
            .as_ref()
            .map(|d| d.used.iter().cloned().collect())
            .unwrap_or_default();
        let ops = self.st.participation.trained(round, &used);
        self.apply(task, ops)
    }

    /// This Vault dropped out of `round` before executing: its subjects were not
    /// used (failure before execution releases, seed 002) and are out of the run
    /// from here on. Returns the number of subjects released.
    pub fn release_round(&mut self, task: &TaskId, round: u32) -> Result<u64, NodeError> {
        let out = self.st.participation.trainees().len() as u64;
        let ops = self.st.participation.dropped(round);
        self.apply(task, ops)?;
        Ok(out)
    }

    /// End of the run after `rounds_run` rounds: persons only charged here commit
    /// the rounds that ran, every other reservation left is released.
    pub fn release_unused(&mut self, task: &TaskId, rounds_run: u32) -> Result<u64, NodeError> {
        let ops = self.st.participation.finish(rounds_run);
        let released = ops
            .iter()
            .map(|op| match op {
                RoundOp::Commit { subjects, .. } | RoundOp::Release { subjects, .. } => {
                    subjects.len() as u64
                }
            })
            .sum();
        self.apply(task, ops)?;
        Ok(released)
    }

    /// Composite verification input: the final model's held-out scores and the
    /// members' losses, attested, for the aggregation enclave only.
    pub fn evaluate(
        &self,
        a: &RoundAssignment,
        model: &GlobalModel,
        model_hash: &Digest,
    ) -> Result<EvaluationBundle, NodeError> {
        self.check(a)?;
        let Some(data) = self.st.data.as_ref() else {
            return Err(NodeError::Refused("no local data to evaluate".into()));
        };
        let holdout_scores = model.predict(&data.holdout)?;
        let member_scores = model.predict(&data.train)?;
        let member_losses: Vec<f64> = member_scores
            .iter()
            .zip(data.train.labels())
            .map(|(p, y)| metrics::example_log_loss(*p, *y).unwrap_or(f64::MAX))
            .collect();
        let holdout_labels = data.holdout.labels().to_vec();
        let inputs = slice_inputs_commitment(a, model_hash);
        let payload = (holdout_scores, holdout_labels, member_losses);
        let run = self
            .node
            .enclave
            .run(&inputs.0, a.envelope.hash().0, a.evaluate_at_ms, || {
                let labels: Vec<f64> = payload
                    .1
                    .iter()
                    .map(|l| if *l { 1.0 } else { 0.0 })
                    .collect();
                let c = super::f64_hash("scp/train-eval/v1", &[&payload.0, &labels, &payload.2]);
                (c, c.0)
            });
        let (commitment, attestation) = run.map_err(|e| NodeError::Enclave(e.to_string()))?;
        let (holdout_scores, holdout_labels, member_losses) = payload;
        Ok(EvaluationBundle {
            holdout_scores,
            holdout_labels,
            member_losses,
            commitment,
            inputs_commitment: inputs,
            attestation,
        })
    }
}
