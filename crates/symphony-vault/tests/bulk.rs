//! Bulk reservations (one row per task) leave every budget account exactly as
//! the per-subject operations leave it, through random interleavings with
//! per-subject tasks, releases, consent-driven partial commits and epoch
//! replenishments; and they never let the two kinds together overspend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use symphony_core::budget::{BudgetError, BudgetOp, Epsilon};
use symphony_core::consent::UsageScope;
use symphony_core::ids::{EpochId, SubjectId, TaskId};
use symphony_vault::{ReserveMode, Vault, VaultError};

fn task(t: String) -> TaskId {
    TaskId::new(t).unwrap()
}

/// Same operation on both Vaults: `bulk` takes the bulk path for query-like
/// tasks, `each` the per-subject path. Results must agree.
struct Pair {
    bulk: Vault,
    each: Vault,
    _dir: tempfile::TempDir,
}

fn strip(
    r: Result<symphony_vault::ReserveReport, VaultError>,
) -> Result<(Vec<SubjectId>, u64, Vec<SubjectId>), String> {
    r.map(|r| (r.reserved, r.already_applied, r.excluded))
        .map_err(|e| e.to_string())
}

#[test]
fn bulk_reservations_leave_every_account_as_the_per_subject_ops_do() {
    for seed in 0..8u64 {
        let dir = tempfile::tempdir().unwrap();
        let pair = Pair {
            bulk: create(&dir.path().join("bulk.redb"), "vault-a"),
            each: create(&dir.path().join("each.redb"), "vault-a"),
            _dir: dir,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let subjects: Vec<SubjectId> = (0..12).map(|i| sid(&format!("s{i:02}"))).collect();
        let scopes = [UsageScope::Marketing, UsageScope::Analytics];
        // Open bulk tasks: (task, scope, subjects reserved).
        let mut open: Vec<(TaskId, UsageScope, Vec<SubjectId>)> = Vec::new();
        // Training-like runs: (scope, each round's task and ε, subjects reserved).
        type Run = (UsageScope, Vec<(TaskId, Epsilon)>, Vec<SubjectId>);
        let mut runs: Vec<Run> = Vec::new();
        let mut epoch = 0u64;
        for step in 0..150 {
            let scope = scopes[rng.gen_range(0..2)];
            let some: Vec<SubjectId> = subjects
                .iter()
                .filter(|_| rng.gen_bool(0.7))
                .cloned()
                .collect();
            match rng.gen_range(0..13) {
                // A query-like task reserves on many subjects.
                0..=2 => {
                    let t = task(format!("q-{seed}-{step}"));
                    let eps = Epsilon::from_milli(rng.gen_range(1..5) * 100);
                    let a = strip(pair.bulk.reserve_bulk(&t, scope, &some, eps));
                    let b = strip(pair.each.reserve_for_task(
                        &t,
                        scope,
                        &some,
                        eps,
                        ReserveMode::SkipInsufficient,
                    ));
                    assert_eq!(a, b, "seed {seed} step {step}: reserve");
                    if let Ok((reserved, _, _)) = a {
                        open.push((t, scope, reserved));
                    }
                }
                // Its slice ran: the consenting part commits, the rest is released.
                3..=4 if !open.is_empty() => {
                    let (t, scope, reserved) = open.remove(rng.gen_range(0..open.len()));
                    let used: Vec<SubjectId> = reserved
                        .iter()
                        .filter(|_| rng.gen_bool(0.8))
                        .cloned()
                        .collect();
                    let skipped: Vec<SubjectId> = reserved
                        .iter()
                        .filter(|s| !used.contains(s))
                        .cloned()
                        .collect();
                    let actual = Epsilon::from_milli(100);
                    let a = pair.bulk.commit_bulk(scope, &t, &used, actual).map(|_| ());
                    let b = pair
                        .each
                        .commit_task(scope, &t, &used, actual)
                        .and_then(|_| {
                            pair.each.finish_task(
                                scope,
                                &skipped,
                                &BudgetOp::Release { task: t.clone() },
                            )
                        })
                        .map(|_| ());
                    assert_eq!(
                        a.is_ok(),
                        b.is_ok(),
                        "seed {seed} step {step}: commit {a:?} {b:?}"
                    );
                    assert_eq!(
                        pair.bulk.task_usage(&t).unwrap(),
                        pair.each.task_usage(&t).unwrap()
                    );
                }
                // An aborted attempt releases everything it holds.
                5 if !open.is_empty() => {
                    let (t, _, _) = open.remove(rng.gen_range(0..open.len()));
                    assert_eq!(
                        pair.bulk.release_task(&t).unwrap(),
                        pair.each.release_task(&t).unwrap(),
                        "seed {seed} step {step}: release"
                    );
                }
                // A per-subject task (training-like) reserves all or nothing, then commits.
                6..=7 => {
                    let t = task(format!("p-{seed}-{step}"));
                    let eps = Epsilon::from_milli(rng.gen_range(1..4) * 100);
                    let a = strip(pair.bulk.reserve_for_task(
                        &t,
                        scope,
                        &some,
                        eps,
                        ReserveMode::AllOrNothing,
                    ));
                    let b = strip(pair.each.reserve_for_task(
                        &t,
                        scope,
                        &some,
                        eps,
                        ReserveMode::AllOrNothing,
                    ));
                    assert_eq!(a, b, "seed {seed} step {step}: per-subject reserve");
                    if a.is_ok() && rng.gen_bool(0.5) {
                        let op = BudgetOp::CommitAtEstimate { task: t.clone() };
                        let a = pair
                            .bulk
                            .finish_task(scope, &some, &op)
                            .map_err(|e| e.to_string());
                        let b = pair
                            .each
                            .finish_task(scope, &some, &op)
                            .map_err(|e| e.to_string());
                        assert_eq!(a, b, "seed {seed} step {step}: per-subject commit");
                    }
                }
                // Epoch boundary.
                8 => {
                    epoch += 1;
                    let amount = Epsilon::from_milli(rng.gen_range(1..6) * 100);
                    let a = pair
                        .bulk
                        .replenish_scope(scope, EpochId(epoch), amount)
                        .unwrap();
                    let b = pair
                        .each
                        .replenish_scope(scope, EpochId(epoch), amount)
                        .unwrap();
                    assert_eq!(a, b, "seed {seed} step {step}: replenish");
                }
                // A training-like run reserves every round or none per subject,
                // one bulk row per round on one side, per subject on the other.
                9 => {
                    let rounds: Vec<(TaskId, Epsilon)> = (0..rng.gen_range(1..4))
                        .map(|r| {
                            let eps = Epsilon::from_milli(rng.gen_range(1..3) * 50);
                            (task(format!("run-{seed}-{step}/r{r}")), eps)
                        })
                        .collect();
                    let a = strip(pair.bulk.reserve_bulk_all_or_none(scope, &some, &rounds));
                    let b = strip(pair.each.reserve_all_or_none(scope, &some, &rounds));
                    assert_eq!(a, b, "seed {seed} step {step}: run reserve");
                    if let Ok((reserved, _, _)) = a {
                        // A retry changes nothing and reports every subject again.
                        let again =
                            strip(pair.bulk.reserve_bulk_all_or_none(scope, &some, &rounds));
                        let each = strip(pair.each.reserve_all_or_none(scope, &some, &rounds));
                        assert_eq!(again, each, "seed {seed} step {step}: run reserve retry");
                        runs.push((scope, rounds, reserved));
                    }
                }
                // Its rounds end piecemeal: some subjects commit (at most the
                // round's ε), some release, some are ended twice or differently.
                10 | 12 if !runs.is_empty() => {
                    let at = rng.gen_range(0..runs.len());
                    let (scope, rounds, reserved) = runs[at].clone();
                    let mut groups: Vec<(Vec<SubjectId>, BudgetOp)> = Vec::new();
                    for _ in 0..rng.gen_range(1..4) {
                        let (t, eps) = rounds[rng.gen_range(0..rounds.len())].clone();
                        let who: Vec<SubjectId> = reserved
                            .iter()
                            .filter(|_| rng.gen_bool(0.4))
                            .cloned()
                            .collect();
                        let op = match rng.gen_range(0..5) {
                            0 | 1 => BudgetOp::Commit {
                                task: t,
                                actual: eps,
                            },
                            2 => BudgetOp::Commit {
                                task: t,
                                actual: Epsilon::from_micro(eps.micro + rng.gen_range(0..2) * 10),
                            },
                            3 => BudgetOp::Release { task: t },
                            _ => BudgetOp::CommitAtEstimate { task: t },
                        };
                        groups.push((who, op));
                    }
                    // Now and then a subject the run never reserved.
                    if rng.gen_bool(0.1) {
                        if let Some(out) = subjects.iter().find(|s| !reserved.contains(s)) {
                            groups[0].0.push(out.clone());
                        }
                    }
                    let a = pair
                        .bulk
                        .apply_bulk_groups(scope, &groups)
                        .map_err(|e| e.to_string());
                    let b = pair
                        .each
                        .apply_op_groups(scope, &groups)
                        .map_err(|e| e.to_string());
                    assert_eq!(
                        a.is_ok(),
                        b.is_ok(),
                        "seed {seed} step {step}: run end {a:?} {b:?} {groups:?}"
                    );
                    if a.is_ok() {
                        assert_eq!(a, b, "seed {seed} step {step}: run end count");
                    }
                    if rng.gen_bool(0.2) {
                        runs.remove(at);
                    }
                }
                // A run's rounds aborted.
                11 if !runs.is_empty() => {
                    let (_, rounds, _) = runs.remove(rng.gen_range(0..runs.len()));
                    for (t, _) in rounds {
                        assert_eq!(
                            pair.bulk.release_task(&t).unwrap(),
                            pair.each.release_task(&t).unwrap(),
                            "seed {seed} step {step}: run release"
                        );
                    }
                }
                _ => {}
            }
            for scope in scopes {
                let a = pair.bulk.budget_accounts(&subjects, scope).unwrap();
                let b = pair.each.budget_accounts(&subjects, scope).unwrap();
                assert_eq!(a, b, "seed {seed} step {step}: accounts of {scope}");
                for (s, acc) in subjects.iter().zip(&a) {
                    assert_eq!(&pair.bulk.budget_account(s, scope).unwrap(), acc);
                    assert!(acc.committed().micro + acc.reserved().micro <= acc.capacity().micro);
                }
                for needed in [100, 500] {
                    let n = Epsilon::from_milli(needed);
                    assert_eq!(
                        pair.bulk.eligible_subjects(scope, 0, n).unwrap(),
                        pair.each.eligible_subjects(scope, 0, n).unwrap()
                    );
                }
            }
        }
    }
}

#[test]
fn a_bulk_task_is_finished_only_as_a_whole_and_never_overspends() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let scope = UsageScope::Marketing;
    let subjects: Vec<SubjectId> = (0..4).map(|i| sid(&format!("s{i}"))).collect();
    let q = task("q-1".into());
    let r = vault
        .reserve_bulk(&q, scope, &subjects, Epsilon::from_milli(600))
        .unwrap();
    assert_eq!(r.reserved.len(), 4);
    assert_eq!(vault.bulk_reserved(scope, &q).unwrap(), subjects);
    // Per-subject operations on the bulk task are refused, naming it; nothing changes.
    let before = vault.budget_accounts(&subjects, scope).unwrap();
    for op in [
        BudgetOp::Release { task: q.clone() },
        BudgetOp::Commit {
            task: q.clone(),
            actual: Epsilon::from_milli(100),
        },
    ] {
        let e = vault.finish_task(scope, &subjects, &op).unwrap_err();
        assert!(matches!(e, VaultError::BulkTask { .. }), "{e}");
        assert!(e.to_string().contains("q-1"), "{e}");
    }
    assert_eq!(vault.budget_accounts(&subjects, scope).unwrap(), before);
    // Another task can not take what the bulk row holds: 0.6 + 0.5 > 1.
    let p = task("p-1".into());
    let e = vault
        .reserve_for_task(
            &p,
            scope,
            &subjects[..1],
            Epsilon::from_milli(500),
            ReserveMode::AllOrNothing,
        )
        .unwrap_err();
    assert!(
        matches!(
            &e,
            VaultError::Budget {
                source: BudgetError::Insufficient { .. },
                ..
            }
        ),
        "{e}"
    );
    let again = vault
        .reserve_bulk(
            &task("q-2".into()),
            scope,
            &subjects,
            Epsilon::from_milli(500),
        )
        .unwrap();
    assert_eq!((again.reserved.len(), again.excluded.len()), (0, 4));
    // Commit: a subject without the reservation, or more than reserved, is refused.
    assert!(vault
        .commit_bulk(scope, &q, &[sid("stranger")], Epsilon::from_milli(100))
        .is_err());
    assert!(vault
        .commit_bulk(scope, &q, &subjects, Epsilon::from_milli(700))
        .is_err());
    assert_eq!(
        vault
            .commit_bulk(scope, &q, &subjects[..3], Epsilon::from_milli(250))
            .unwrap(),
        3
    );
    // A retry with the same outcome changes nothing; another outcome is refused.
    let after = vault.budget_accounts(&subjects, scope).unwrap();
    vault
        .commit_bulk(scope, &q, &subjects[..3], Epsilon::from_milli(250))
        .unwrap();
    assert!(vault
        .commit_bulk(scope, &q, &subjects[..2], Epsilon::from_milli(250))
        .is_err());
    assert_eq!(vault.budget_accounts(&subjects, scope).unwrap(), after);
    assert_eq!(after[0].committed(), Epsilon::from_milli(250));
    assert_eq!(after[3].committed(), Epsilon::ZERO);
    assert_eq!(after[3].finished_of(&q), Some(Epsilon::ZERO));
    assert_eq!(vault.release_task(&q).unwrap(), 0, "already finished");
    assert!(vault.bulk_reserved(scope, &q).unwrap().is_empty());
    // Survives a reopen.
    drop(vault);
    let vault = Vault::open(&dir.path().join("v.redb"), &key(7), [4; 32]).unwrap();
    assert_eq!(vault.budget_accounts(&subjects, scope).unwrap(), after);
}

#[test]
fn finished_bulk_rows_fold_into_accounts_without_changing_them() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let scope = UsageScope::Analytics;
    let subjects: Vec<SubjectId> = (0..5).map(|i| sid(&format!("s{i}"))).collect();
    let mut seen = Vec::new();
    for i in 0..(symphony_vault::bulk::FOLD_FINISHED_ABOVE + 3) {
        let t = task(format!("q-{i}"));
        vault
            .reserve_bulk(&t, scope, &subjects, Epsilon::from_milli(10))
            .unwrap();
        let before = vault.budget_accounts(&subjects, scope).unwrap();
        vault
            .commit_bulk(scope, &t, &subjects[i % 5..], Epsilon::from_milli(10))
            .unwrap();
        let after = vault.budget_accounts(&subjects, scope).unwrap();
        assert_ne!(before, after);
        seen.push(after);
    }
    let last = seen.last().unwrap();
    // s4 committed in every task, s0 in one of five; rows were folded on the way.
    let n = symphony_vault::bulk::FOLD_FINISHED_ABOVE as u64 + 3;
    assert_eq!(last[4].committed(), Epsilon::from_milli(10 * n));
    assert_eq!(last[0].committed(), Epsilon::from_milli(10 * n.div_ceil(5)));
    assert_eq!(
        last[4].finished_of(&task("q-0".into())),
        Some(Epsilon::from_milli(10))
    );
}
