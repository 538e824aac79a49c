//! One person, one account, one Vault per run (issue: privacy accounting per person).
//!
//! A person may be a subject of several Vaults (the same contact handle at several
//! enterprises). Per-Vault accounting would let that person's gradients enter each
//! round once per Vault, and let each Vault's account show only part of the loss.
//! Before a run reserves anything, every Vault reports, for each of its subjects, a
//! task-scoped keyed token of the contact handle (the same HMAC the audience
//! aggregation uses to de-duplicate), whether the subject is eligible there
//! (training consent, home country in the market scope) and whether its account can
//! afford the **whole run**. [`assign_persons`] then decides, per person:
//!
//! * the person takes part only if it is eligible in at least one Vault and
//!   **every** Vault that holds it can afford the run (one account per person: the
//!   most-spent account decides, whatever the consent in that Vault);
//! * it trains through exactly **one** Vault where it is eligible (chosen by a keyed
//!   hash, so no Vault is favoured and the choice replays);
//! * every other Vault that holds it **charges** the same ε without using the
//!   records, so each of the person's accounts carries the person's loss, and a later
//!   run through any of those Vaults sees it.
//!
//! Pure: no IO, no clock; the coordinator runs it on the Vaults' reports.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use symphony_core::encoding::tagged_hash;
use symphony_core::ids::{TaskId, VaultId};

/// A task-scoped person token (HMAC-SHA256 of the normalized contact handle).
pub type PersonToken = [u8; 32];

/// One candidate a Vault reports at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PersonCandidate {
    /// The person's token for this task.
    pub token: PersonToken,
    /// Training consent and home country in the market scope, in this Vault.
    pub eligible: bool,
    /// The subject's account in this Vault can afford the whole run.
    pub affordable: bool,
}

/// What one Vault does with its candidates in this run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonSelection {
    /// Persons whose records this Vault trains on.
    pub train: BTreeSet<PersonToken>,
    /// Persons who train through another Vault: charged here, records unused.
    pub charge: BTreeSet<PersonToken>,
}

/// The task-scoped key of the person tokens. Like the audience aggregation's
/// de-duplication key it is derived from public task data, so the tokens are
/// pseudonyms that do not link across tasks, not secrets from the masters.
pub fn person_key(task: &TaskId) -> [u8; 32] {
    tagged_hash("scp/train/person-key/v1", task.as_str().as_bytes()).0
}

/// The Vault a person trains through: the smallest keyed hash of (token, Vault).
fn rank(token: &PersonToken, vault: &VaultId) -> [u8; 32] {
    let mut bytes = token.to_vec();
    bytes.extend_from_slice(vault.as_str().as_bytes());
    tagged_hash("scp/train/person-vault/v1", &bytes).0
}

/// Assigns each person to one Vault (see the module docs). `reports` holds each
/// Vault's candidates; the result holds each Vault's selection, in the same order.
/// A token reported twice by one Vault (two subjects with one handle) counts as one
/// person there; it is affordable only if both subjects are.
pub fn assign_persons(reports: &[(VaultId, Vec<PersonCandidate>)]) -> Vec<PersonSelection> {
    // token → (all holders affordable, holding Vaults, Vaults where eligible)
    type Person = (bool, BTreeSet<usize>, BTreeSet<usize>);
    let mut persons: BTreeMap<PersonToken, Person> = BTreeMap::new();
    for (i, (_, candidates)) in reports.iter().enumerate() {
        for c in candidates {
            let entry = persons
                .entry(c.token)
                .or_insert((true, BTreeSet::new(), BTreeSet::new()));
            entry.0 &= c.affordable;
            entry.1.insert(i);
            if c.eligible {
                entry.2.insert(i);
            }
        }
    }
    let mut out = vec![PersonSelection::default(); reports.len()];
    for (token, (affordable, vaults, eligible)) in persons {
        if !affordable {
            continue;
        }
        let Some(trainer) = eligible
            .iter()
            .copied()
            .min_by_key(|i| rank(&token, &reports[*i].0))
        else {
            continue;
        };
        for i in vaults {
            if i == trainer {
                out[i].train.insert(token);
            } else {
                out[i].charge.insert(token);
            }
        }
    }
    out
}

/// Eligible persons refused because at least one of their accounts cannot afford
/// the run.
pub fn unaffordable_persons(reports: &[(VaultId, Vec<PersonCandidate>)]) -> u64 {
    let mut persons: BTreeMap<PersonToken, (bool, bool)> = BTreeMap::new();
    for (_, candidates) in reports {
        for c in candidates {
            let e = persons.entry(c.token).or_insert((true, false));
            e.0 &= c.affordable;
            e.1 |= c.eligible;
        }
    }
    persons.values().filter(|(a, e)| *e && !*a).count() as u64
}

/// A budget operation a Vault applies for one round of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundOp<S> {
    /// Commit the round's ε for these subjects.
    Commit {
        /// The round.
        round: u32,
        /// Subjects.
        subjects: Vec<S>,
    },
    /// Release the round's reservation of these subjects.
    Release {
        /// The round.
        round: u32,
        /// Subjects.
        subjects: Vec<S>,
    },
}

/// One Vault's participation rules for one run, over its subjects `S` (pure; the
/// Vault applies the [`RoundOp`]s it returns to its budget ledger):
///
/// * participation is a prefix of the run: a trainee takes part in round `r` only if
///   it took part in every round before; one that misses a round (not used: consent
///   withdrawn, Vault dropped out, slice failed) is out, and every later round of it
///   is released;
/// * a person only charged here commits each round as it opens (it may train in it
///   through another Vault);
/// * at the end of the run every reservation left is released.
#[derive(Clone, Debug)]
pub struct Participation<S: Ord + Clone> {
    reserved: BTreeMap<u32, BTreeSet<S>>,
    train: BTreeSet<S>,
    charge: BTreeSet<S>,
    next_round: u32,
}

impl<S: Ord + Clone> Default for Participation<S> {
    fn default() -> Self {
        Participation {
            reserved: BTreeMap::new(),
            train: BTreeSet::new(),
            charge: BTreeSet::new(),
            next_round: 0,
        }
    }
}

impl<S: Ord + Clone> Participation<S> {
    /// After admission: `reserved` hold every round of the run (`rounds`), `train`
    /// and `charge` are the persons assigned here (only reserved ones count).
    pub fn new(
        rounds: u32,
        reserved: &BTreeSet<S>,
        train: &BTreeSet<S>,
        charge: &BTreeSet<S>,
    ) -> Self {
        Participation {
            reserved: (0..rounds).map(|r| (r, reserved.clone())).collect(),
            train: train.intersection(reserved).cloned().collect(),
            charge: charge.intersection(reserved).cloned().collect(),
            next_round: 0,
        }
    }

    /// Subjects to train on in this run so far.
    pub fn trainees(&self) -> &BTreeSet<S> {
        &self.train
    }

    /// Round `round` opens here: a Vault that missed an earlier round has no
    /// trainee left; charged persons commit the round.
    pub fn open_round(&mut self, round: u32) -> Vec<RoundOp<S>> {
        let mut ops = Vec::new();
        if round != self.next_round {
            let out = std::mem::take(&mut self.train);
            ops.extend(self.drop_out(&out, round));
        }
        self.next_round = round + 1;
        if let Some(reserved) = self.reserved.get_mut(&round) {
            let charged: Vec<S> = reserved.intersection(&self.charge).cloned().collect();
            for s in &charged {
                reserved.remove(s);
            }
            if !charged.is_empty() {
                ops.push(RoundOp::Commit {
                    round,
                    subjects: charged,
                });
            }
        }
        ops
    }

    /// Trainees that may take part in `round` (still in, still reserved).
    pub fn eligible(&self, round: u32) -> BTreeSet<S> {
        self.reserved
            .get(&round)
            .map(|r| r.intersection(&self.train).cloned().collect())
            .unwrap_or_default()
    }

    /// Round `round` trained on `used`: they commit it; the other trainees are out.
    pub fn trained(&mut self, round: u32, used: &BTreeSet<S>) -> Vec<RoundOp<S>> {
        let used: BTreeSet<S> = used.intersection(&self.eligible(round)).cloned().collect();
        let mut ops = Vec::new();
        if let Some(reserved) = self.reserved.get_mut(&round) {
            reserved.retain(|s| !used.contains(s));
        }
        if !used.is_empty() {
            ops.push(RoundOp::Commit {
                round,
                subjects: used.iter().cloned().collect(),
            });
        }
        let missed: BTreeSet<S> = self.train.difference(&used).cloned().collect();
        ops.extend(self.drop_out(&missed, round));
        ops
    }

    /// This Vault leaves `round` without executing it: every trainee is out.
    pub fn dropped(&mut self, round: u32) -> Vec<RoundOp<S>> {
        let out = std::mem::take(&mut self.train);
        self.drop_out(&out, round)
    }

    /// End of the run after `rounds_run` rounds: persons only charged here commit
    /// each of those rounds they still hold (one this Vault never heard of ran
    /// elsewhere); every other reservation is released.
    pub fn finish(&mut self, rounds_run: u32) -> Vec<RoundOp<S>> {
        let charge = std::mem::take(&mut self.charge);
        self.train.clear();
        let mut ops = Vec::new();
        for (round, held) in std::mem::take(&mut self.reserved) {
            let (charged, released): (Vec<S>, Vec<S>) = held
                .into_iter()
                .partition(|s| round < rounds_run && charge.contains(s));
            if !charged.is_empty() {
                ops.push(RoundOp::Commit {
                    round,
                    subjects: charged,
                });
            }
            if !released.is_empty() {
                ops.push(RoundOp::Release {
                    round,
                    subjects: released,
                });
            }
        }
        ops
    }

    fn drop_out(&mut self, subjects: &BTreeSet<S>, round: u32) -> Vec<RoundOp<S>> {
        let mut ops = Vec::new();
        for (r, reserved) in self.reserved.range_mut(round..) {
            let gone: Vec<S> = reserved.intersection(subjects).cloned().collect();
            for s in &gone {
                reserved.remove(s);
            }
            if !gone.is_empty() {
                ops.push(RoundOp::Release {
                    round: *r,
                    subjects: gone,
                });
            }
        }
        self.train.retain(|s| !subjects.contains(s));
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use symphony_core::budget::{BudgetAccount, BudgetOp, Epsilon};
    use symphony_core::ids::EpochId;

    type Accounts = BTreeMap<(usize, usize), BudgetAccount>;

    fn round_task(t: usize, r: u32) -> TaskId {
        TaskId::new(format!("t{t}/r{r}")).unwrap()
    }

    fn apply(
        accounts: &mut Accounts,
        vault: usize,
        t: usize,
        schedule: &[u64],
        ops: Vec<RoundOp<usize>>,
    ) {
        for op in ops {
            let (round, subjects, op) = match op {
                RoundOp::Commit { round, subjects } => (
                    round,
                    subjects,
                    BudgetOp::Commit {
                        task: round_task(t, round),
                        actual: Epsilon::from_micro(schedule[round as usize]),
                    },
                ),
                RoundOp::Release { round, subjects } => (
                    round,
                    subjects,
                    BudgetOp::Release {
                        task: round_task(t, round),
                    },
                ),
            };
            for p in subjects {
                let acc = accounts.get_mut(&(p, vault)).unwrap();
                acc.apply(&op)
                    .unwrap_or_else(|e| panic!("{op:?} for person {p} round {round}: {e}"));
            }
        }
    }

    /// Persons in 1–3 Vaults, accounts spent at random, consent varying per Vault
    /// and per run, Vaults unreachable for a round, dropping out after the masks or
    /// training on a random subset (consent withdrawn mid-run), runs stopping early.
    /// After every run each of a person's accounts was charged at least the person's
    /// composed loss in it, and nothing stays reserved; over all runs no person's
    /// composed loss exceeds what its most-spent account had left.
    #[test]
    fn random_participation_never_lets_a_person_exceed_its_budget() {
        const VAULTS: usize = 3;
        const PERSONS: usize = 12;
        const CAP: u64 = 1_000_000;
        for seed in 0..400u64 {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let vaults: Vec<VaultId> = (0..VAULTS).map(|i| v(&format!("vault-{i}"))).collect();
            let mut member = [[false; VAULTS]; PERSONS];
            for m in member.iter_mut() {
                while !m.iter().any(|x| *x) {
                    for x in m.iter_mut() {
                        *x = rng.gen_bool(0.5);
                    }
                }
            }
            let mut accounts: Accounts = BTreeMap::new();
            for (p, m) in member.iter().enumerate() {
                for i in (0..VAULTS).filter(|i| m[*i]) {
                    let mut acc = BudgetAccount::new(Epsilon::from_micro(CAP), EpochId::GENESIS);
                    let spent = rng.gen_range(0..=CAP);
                    let pre = TaskId::new("spent-before").unwrap();
                    acc.apply(&BudgetOp::Reserve {
                        task: pre.clone(),
                        amount: Epsilon::from_micro(spent),
                    })
                    .unwrap();
                    acc.apply(&BudgetOp::Commit {
                        task: pre,
                        actual: Epsilon::from_micro(spent),
                    })
                    .unwrap();
                    accounts.insert((p, i), acc);
                }
            }
            let left_at_start: Vec<u64> = (0..PERSONS)
                .map(|p| {
                    (0..VAULTS)
                        .filter_map(|i| accounts.get(&(p, i)))
                        .map(|a| a.remaining().micro)
                        .min()
                        .unwrap()
                })
                .collect();
            let mut lost = [0u64; PERSONS];
            for t in 0..4 {
                let rounds: u32 = rng.gen_range(1..=6);
                // Each round adds less than the one before, as composition does.
                let schedule: Vec<u64> =
                    (0..rounds).map(|r| 120_000 / (u64::from(r) + 1)).collect();
                let composed = |k: u32| -> u64 { schedule[..k as usize].iter().sum() };
                let total = composed(rounds);
                let reports: Vec<(VaultId, Vec<PersonCandidate>)> = (0..VAULTS)
                    .map(|i| {
                        let c = (0..PERSONS)
                            .filter(|p| member[*p][i])
                            .map(|p| PersonCandidate {
                                token: [p as u8; 32],
                                eligible: rng.gen_bool(0.7),
                                affordable: accounts[&(p, i)].remaining().micro >= total,
                            })
                            .collect();
                        (vaults[i].clone(), c)
                    })
                    .collect();
                let selections = assign_persons(&reports);
                let person = |tokens: &BTreeSet<PersonToken>| -> BTreeSet<usize> {
                    tokens.iter().map(|t| usize::from(t[0])).collect()
                };
                let before: Accounts = accounts.clone();
                let mut runs = Vec::new();
                for (i, sel) in selections.iter().enumerate() {
                    let (train, charge) = (person(&sel.train), person(&sel.charge));
                    let all: BTreeSet<usize> = train.union(&charge).copied().collect();
                    for p in &all {
                        for (r, eps) in schedule.iter().enumerate() {
                            accounts
                                .get_mut(&(*p, i))
                                .unwrap()
                                .apply(&BudgetOp::Reserve {
                                    task: round_task(t, r as u32),
                                    amount: Epsilon::from_micro(*eps),
                                })
                                .expect("admission checked the whole run is affordable");
                        }
                    }
                    runs.push(Participation::new(rounds, &all, &train, &charge));
                }
                let rounds_run = rng.gen_range(1..=rounds);
                let mut took_part = [0u32; PERSONS];
                for r in 0..rounds_run {
                    let mut this_round = BTreeSet::new();
                    for (i, run) in runs.iter_mut().enumerate() {
                        match rng.gen_range(0..10) {
                            0 => {} // unreachable: never hears of the round
                            1 => {
                                let ops = run.open_round(r);
                                apply(&mut accounts, i, t, &schedule, ops);
                                let ops = run.dropped(r);
                                apply(&mut accounts, i, t, &schedule, ops);
                            }
                            _ => {
                                let ops = run.open_round(r);
                                apply(&mut accounts, i, t, &schedule, ops);
                                let used: BTreeSet<usize> = run
                                    .eligible(r)
                                    .into_iter()
                                    .filter(|_| rng.gen_bool(0.9))
                                    .collect();
                                for p in &used {
                                    assert!(this_round.insert(*p), "person {p} twice in a round");
                                    took_part[*p] += 1;
                                }
                                let ops = run.trained(r, &used);
                                apply(&mut accounts, i, t, &schedule, ops);
                            }
                        }
                    }
                }
                for (i, run) in runs.iter_mut().enumerate() {
                    let ops = run.finish(rounds_run);
                    apply(&mut accounts, i, t, &schedule, ops);
                }
                for (p, k) in took_part.iter().enumerate() {
                    let loss = composed(*k);
                    lost[p] += loss;
                    for i in (0..VAULTS).filter(|i| member[p][*i]) {
                        let acc = &accounts[&(p, i)];
                        assert_eq!(acc.reserved().micro, 0, "seed {seed}: reservation left");
                        let charged = acc.committed().micro - before[&(p, i)].committed().micro;
                        assert!(
                            charged >= loss,
                            "seed {seed} run {t}: person {p} charged {charged} in vault-{i}, lost {loss} ({k} rounds)"
                        );
                    }
                }
            }
            for p in 0..PERSONS {
                assert!(
                    lost[p] <= left_at_start[p],
                    "seed {seed}: person {p} lost {} with {} left",
                    lost[p],
                    left_at_start[p]
                );
            }
        }
    }

    fn v(s: &str) -> VaultId {
        VaultId::new(s).unwrap()
    }

    fn c(t: u8, affordable: bool) -> PersonCandidate {
        PersonCandidate {
            token: [t; 32],
            eligible: true,
            affordable,
        }
    }

    #[test]
    fn a_person_in_three_vaults_trains_in_one_and_is_charged_in_all() {
        let reports = vec![
            (v("vault-a"), vec![c(1, true), c(2, true), c(3, true)]),
            (v("vault-b"), vec![c(1, true), c(4, true)]),
            (v("vault-c"), vec![c(1, true), c(3, false)]),
        ];
        let out = assign_persons(&reports);
        let trains: usize = out.iter().filter(|s| s.train.contains(&[1; 32])).count();
        let charges: usize = out.iter().filter(|s| s.charge.contains(&[1; 32])).count();
        assert_eq!((trains, charges), (1, 2));
        // Person 3 cannot afford the run in vault-c: nobody uses or charges it.
        assert!(out.iter().all(|s| !s.train.contains(&[3; 32])));
        assert!(out.iter().all(|s| !s.charge.contains(&[3; 32])));
        assert!(out[0].train.contains(&[2; 32]) && out[1].train.contains(&[4; 32]));
        assert_eq!(unaffordable_persons(&reports), 1);
        // Replays exactly; the order of a Vault's report does not matter.
        let mut shuffled = reports.clone();
        shuffled[0].1.reverse();
        assert_eq!(assign_persons(&shuffled), out);
    }
}
