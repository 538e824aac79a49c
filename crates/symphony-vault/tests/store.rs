//! Store, crypto-shredding, tamper detection, authorization, consent and budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use symphony_core::budget::{BudgetError, BudgetOp, BudgetOutcome, Epsilon};
use symphony_core::consent::{ConsentChange, UsageScope};
use symphony_core::ids::{ActorId, EpochId, TaskId};
use symphony_core::TaskClass;
use symphony_vault::{ContactKind, Identity, Record, ReserveMode, Vault, VaultError};

fn task(t: &str) -> TaskId {
    TaskId::new(t).unwrap()
}

#[test]
fn records_round_trip_and_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let a = sid("alice");
    let batch = vec![
        (a.clone(), purchase("Luckin Coffee", 590, 10)),
        (a.clone(), purchase("Starbucks", 720, 11)),
        (a.clone(), purchase("Luckin Coffee", 590, 10)), // duplicate inside the batch
        (sid("bob"), purchase("Toast Box", 300, 12)),
    ];
    let s = vault.insert_batch(&batch).unwrap();
    assert_eq!((s.inserted, s.duplicates, s.blocks), (3, 1, 2));
    let again = vault.insert_batch(&batch).unwrap();
    assert_eq!((again.inserted, again.duplicates, again.blocks), (0, 4, 0));
    assert_eq!(vault.subject_records(&a).unwrap().len(), 2);
    drop(vault);
    let vault = Vault::open(&path, &key(7), [2; 32]).unwrap();
    let all = dump(&vault);
    assert_eq!(all.len(), 2);
    assert_eq!(all["alice"][0], purchase("Luckin Coffee", 590, 10));
    assert_eq!(all["bob"].len(), 1);
}

#[test]
fn erased_subject_is_crypto_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let marker = "+6580001234";
    let a = sid("alice");
    let rec = Record::Identity(Identity {
        contact_kind: ContactKind::Phone,
        contact: marker.to_owned(),
    });
    vault
        .insert_batch(&[
            (a.clone(), rec.clone()),
            (sid("bob"), purchase("Starbucks", 700, 1)),
        ])
        .unwrap();
    let sealed = vault.sealed_block(&a, 0).unwrap().unwrap();
    // Plaintext never reaches the file.
    let bytes = std::fs::read(&path).unwrap();
    assert!(!contains(&bytes, marker.as_bytes()));
    assert!(contains(&bytes, &sealed));

    assert!(vault.erase_subject(&a, 100).unwrap());
    assert!(!vault.erase_subject(&a, 101).unwrap());
    // The ciphertext is still there, but there is no key for it any more.
    assert_eq!(vault.stored_blocks(&a).unwrap(), 1);
    assert_eq!(vault.sealed_block(&a, 0).unwrap().unwrap(), sealed);
    assert!(matches!(
        vault.subject_records(&a),
        Err(VaultError::Erased(_))
    ));
    let seen = dump(&vault);
    assert!(!seen.contains_key("alice"));
    assert!(seen.contains_key("bob"));
    // Re-importing does not bring the subject back.
    let s = vault.insert_batch(&[(a.clone(), rec)]).unwrap();
    assert_eq!((s.inserted, s.skipped_erased), (0, 1));
    assert!(matches!(
        vault.subject_records(&a),
        Err(VaultError::Erased(_))
    ));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    drop(create(&path, "vault-a"));
    let err = Vault::open(&path, &key(8), [1; 32]).unwrap_err();
    assert!(matches!(err, VaultError::WrongKey { .. }), "{err}");
    assert!(Vault::open(&path, &key(7), [1; 32]).is_ok());
    assert!(matches!(
        Vault::create(&path, config("vault-a"), &key(7), [1; 32]),
        Err(VaultError::NotAVault { .. })
    ));
}

#[test]
fn flipped_ciphertext_byte_is_detected_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let a = sid("alice");
    let recs: Vec<_> = (0..20)
        .map(|i| (a.clone(), purchase("Luckin Coffee", 500 + i, i)))
        .collect();
    vault.insert_batch(&recs).unwrap();
    let sealed = vault.sealed_block(&a, 0).unwrap().unwrap();
    drop(vault);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(sealed.len())
        .position(|w| w == sealed.as_slice())
        .unwrap();
    bytes[at + sealed.len() / 2] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let vault = Vault::open(&path, &key(7), [1; 32]).unwrap();
    let err = vault.subject_records(&a).unwrap_err();
    assert!(
        matches!(err, VaultError::Tampered { block: 0, .. }),
        "{err}"
    );
    let auth = reader(&vault);
    let mut delivered = 0;
    let scan = vault.for_each_subject(&auth, |_| {
        delivered += 1;
        std::ops::ControlFlow::Continue(())
    });
    assert!(matches!(scan, Err(VaultError::Tampered { .. })));
    assert_eq!(delivered, 0);
}

#[test]
fn only_permitted_actor_and_class_may_scan() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("a.redb"), "vault-a");
    let other = create(&dir.path().join("b.redb"), "vault-b");
    let luckin = ActorId::new("luckin").unwrap();
    let err = vault.authorize(&luckin, TaskClass::Query).unwrap_err();
    assert_eq!(
        err.to_string(),
        "actor luckin is not authorized for query tasks on vault vault-a"
    );
    vault.permit(&luckin, TaskClass::Query).unwrap();
    let auth = vault.authorize(&luckin, TaskClass::Query).unwrap();
    assert!(vault.authorize(&luckin, TaskClass::Train).is_err());
    assert!(vault
        .for_each_subject(&auth, |_| std::ops::ControlFlow::Continue(()))
        .is_ok());
    // A permit for one Vault does not open another.
    assert!(matches!(
        other.for_each_subject(&auth, |_| std::ops::ControlFlow::Continue(())),
        Err(VaultError::NotAuthorized { .. })
    ));
    assert_eq!(
        vault.permits().unwrap(),
        vec![(luckin.clone(), TaskClass::Query)]
    );
    assert!(vault.revoke(&luckin, TaskClass::Query).unwrap());
    assert!(vault.authorize(&luckin, TaskClass::Query).is_err());
}

#[test]
fn consent_registry_answers_who_at_when() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let m = UsageScope::Marketing;
    let change = |s: &str, at_ms, granted| (sid(s), m, ConsentChange { at_ms, granted });
    vault
        .record_consent(&[
            change("a", 10, true),
            change("b", 10, true),
            change("b", 20, false),
        ])
        .unwrap();
    let at = |t| {
        vault
            .consented_subjects(m, t)
            .unwrap()
            .into_iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(at(5), Vec::<String>::new());
    assert_eq!(at(15), vec!["a", "b"]);
    assert_eq!(at(25), vec!["a"]);
    assert!(vault
        .consented_subjects(UsageScope::Training, 15)
        .unwrap()
        .is_empty());
    // Out of order: refused, and the whole batch is rolled back.
    let err = vault
        .record_consent(&[change("c", 30, true), change("a", 5, false)])
        .unwrap_err();
    assert!(matches!(err, VaultError::Consent { .. }));
    assert_eq!(at(40), vec!["a"]);
    assert_eq!(
        vault.consent_history(&sid("b"), m).unwrap().changes().len(),
        2
    );
}

#[test]
fn budget_batches_are_all_or_nothing_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let m = UsageScope::Marketing;
    let subjects: Vec<_> = ["a", "b", "c"].iter().map(|s| sid(s)).collect();
    let eps = Epsilon::from_milli;
    // Exhaust c.
    vault
        .reserve_for_task(
            &task("old"),
            m,
            &subjects[2..],
            eps(1000),
            ReserveMode::AllOrNothing,
        )
        .unwrap();
    vault
        .finish_task(
            m,
            &subjects[2..],
            &BudgetOp::CommitAtEstimate { task: task("old") },
        )
        .unwrap();
    let err = vault
        .reserve_for_task(
            &task("t1"),
            m,
            &subjects,
            eps(300),
            ReserveMode::AllOrNothing,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        VaultError::Budget { ref subject, source: BudgetError::Insufficient { .. }, .. } if subject == "c"
    ));
    assert_eq!(
        vault.budget_account(&subjects[0], m).unwrap().reserved(),
        Epsilon::ZERO
    );
    let r = vault
        .reserve_for_task(
            &task("t1"),
            m,
            &subjects,
            eps(300),
            ReserveMode::SkipInsufficient,
        )
        .unwrap();
    assert_eq!(r.reserved, subjects[..2].to_vec());
    assert_eq!(r.excluded, subjects[2..].to_vec());
    // A retried reservation does not double-count.
    let retry = vault
        .reserve_for_task(
            &task("t1"),
            m,
            &subjects[..2],
            eps(300),
            ReserveMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!(retry.already_applied, 2);
    assert_eq!(
        vault.budget_account(&subjects[0], m).unwrap().remaining(),
        eps(700)
    );
    let commit = BudgetOp::Commit {
        task: task("t1"),
        actual: eps(200),
    };
    assert_eq!(
        vault.finish_task(m, &subjects[..2], &commit).unwrap(),
        vec![BudgetOutcome::Applied; 2]
    );
    assert_eq!(
        vault.finish_task(m, &subjects[..2], &commit).unwrap(),
        vec![BudgetOutcome::AlreadyApplied; 2]
    );
    // Eligibility: consent and budget both.
    vault
        .record_consent(
            &subjects
                .iter()
                .map(|s| {
                    (
                        s.clone(),
                        m,
                        ConsentChange {
                            at_ms: 1,
                            granted: true,
                        },
                    )
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let eligible = vault.eligible_subjects(m, 5, eps(500)).unwrap();
    assert_eq!(
        eligible.into_iter().collect::<Vec<_>>(),
        subjects[..2].to_vec()
    );
    // Epoch replenishment, idempotent per epoch, persisted.
    let rep = vault.replenish_scope(m, EpochId(1), eps(1000)).unwrap();
    assert_eq!((rep.applied, rep.already_applied), (3, 0));
    let rep = vault.replenish_scope(m, EpochId(1), eps(1000)).unwrap();
    assert_eq!((rep.applied, rep.already_applied), (0, 3));
    drop(vault);
    let vault = Vault::open(&path, &key(7), [1; 32]).unwrap();
    assert_eq!(
        vault.budget_account(&subjects[2], m).unwrap().remaining(),
        eps(1000)
    );
    assert_eq!(vault.budget_epoch().unwrap(), EpochId(1));
    assert_eq!(
        vault
            .budget_account(&sid("new"), m)
            .unwrap()
            .last_replenished(),
        EpochId(1)
    );
}

/// An aborted attempt's release is final in the Vault: it releases what the task
/// holds in any scope from the ledger itself (whoever reserved it, even a process
/// that restarted since), leaves committed budget alone, and a task released once
/// never reserves again — also for subjects it never reserved before, which is what
/// a master resuming after a stall would ask for.
#[test]
fn a_released_task_is_released_from_the_ledger_and_never_reserves_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let vault = create(&path, "vault-a");
    let (m, a) = (UsageScope::Marketing, UsageScope::Analytics);
    let subjects: Vec<_> = ["a", "b", "c"].iter().map(|s| sid(s)).collect();
    let eps = Epsilon::from_milli;
    let reserve = |v: &Vault, t: &str, scope, who: &[_]| {
        v.reserve_for_task(
            &task(t),
            scope,
            who,
            eps(100),
            ReserveMode::SkipInsufficient,
        )
    };
    reserve(&vault, "aborted", m, &subjects[..2]).unwrap();
    reserve(&vault, "aborted", a, &subjects[2..]).unwrap();
    reserve(&vault, "done", m, &subjects).unwrap();
    let commit = BudgetOp::Commit {
        task: task("done"),
        actual: eps(100),
    };
    vault.finish_task(m, &subjects, &commit).unwrap();
    // Reopened: nothing but the ledger remembers the reservations.
    drop(vault);
    let vault = Vault::open(&path, &key(7), [1; 32]).unwrap();
    assert!(!vault.is_task_released(&task("aborted")).unwrap());
    assert_eq!(vault.release_task(&task("aborted")).unwrap(), 3);
    assert!(vault.is_task_released(&task("aborted")).unwrap());
    for s in &subjects {
        for scope in [m, a] {
            assert_eq!(
                vault.budget_account(s, scope).unwrap().reserved(),
                Epsilon::ZERO
            );
        }
        assert_eq!(vault.budget_account(s, m).unwrap().committed(), eps(100));
    }
    // Idempotent; a committed task has nothing to release.
    assert_eq!(vault.release_task(&task("aborted")).unwrap(), 0);
    assert_eq!(vault.release_task(&task("done")).unwrap(), 0);
    assert_eq!(
        vault.budget_account(&subjects[0], m).unwrap().committed(),
        eps(100)
    );
    // Never again, for any subject, and nothing is written.
    for who in [&subjects[..1], &[sid("new")][..]] {
        let err = reserve(&vault, "aborted", m, who).unwrap_err();
        assert!(
            matches!(err, VaultError::TaskReleased(ref t) if t == "aborted"),
            "{err}"
        );
    }
    assert_eq!(
        vault.budget_account(&sid("new"), m).unwrap().reserved(),
        Epsilon::ZERO
    );
    // A task released before it ever reserved here is refused too.
    assert_eq!(vault.release_task(&task("never")).unwrap(), 0);
    assert!(reserve(&vault, "never", m, &subjects).is_err());
    assert!(reserve(&vault, "fresh", m, &subjects).is_ok());
}

#[test]
fn concurrent_reserves_never_overspend() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(create(&dir.path().join("v.redb"), "vault-a"));
    let m = UsageScope::Marketing;
    let subjects: Arc<Vec<_>> = Arc::new((0..200).map(|i| sid(&format!("s{i:03}"))).collect());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let vault = Arc::clone(&vault);
            let subjects = Arc::clone(&subjects);
            std::thread::spawn(move || {
                let mut granted = 0u64;
                for i in 0..5 {
                    let id = task(&format!("t{t}-{i}"));
                    // Overlapping halves of the subjects, 0.3 ε each.
                    let part = if (t + i) % 2 == 0 {
                        &subjects[..150]
                    } else {
                        &subjects[50..]
                    };
                    match vault.reserve_for_task(
                        &id,
                        m,
                        part,
                        Epsilon::from_milli(300),
                        ReserveMode::SkipInsufficient,
                    ) {
                        Ok(r) => granted += r.reserved.len() as u64,
                        Err(e) => panic!("{e}"),
                    }
                }
                granted
            })
        })
        .collect();
    let granted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let mut total_reserved = 0u64;
    for s in subjects.iter() {
        let acc = vault.budget_account(s, m).unwrap();
        assert!(acc.reserved() <= acc.capacity(), "{s}: {:?}", acc);
        assert!(acc.reserved().micro <= 900_000); // at most 3 × 0.3 ε fit in 1 ε
        total_reserved += acc.reserved().micro / 300_000;
    }
    assert_eq!(granted, total_reserved);
    assert_eq!(granted, 200 * 3);
}

#[test]
fn vault_directory_round_trip() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let vdir = dir.path().join("v1");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let vault = Vault::create_dir(&vdir, config("vault-a"), &mut rng).unwrap();
    vault
        .insert_batch(&[(sid("a"), purchase("Starbucks", 1, 2))])
        .unwrap();
    drop(vault);
    assert!(Vault::create_dir(&vdir, config("vault-a"), &mut rng).is_err());
    let vault = Vault::open_dir(&vdir, [0; 32]).unwrap();
    assert_eq!(vault.subject_records(&sid("a")).unwrap().len(), 1);
    std::fs::write(vdir.join("vault.key"), "zz").unwrap();
    assert!(matches!(
        Vault::open_dir(&vdir, [0; 32]),
        Err(VaultError::BadKeyFile { .. })
    ));
}

#[test]
fn parallel_scan_sees_what_the_sequential_scan_sees() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let batch: Vec<_> = (0..97)
        .flat_map(|i| {
            (0..3).map(move |j| (sid(&format!("p{i}")), purchase("Starbucks", 100 + j, i)))
        })
        .collect();
    vault.insert_batch(&batch).unwrap();
    vault.erase_subject(&sid("p5"), 9).unwrap();
    let auth = reader(&vault);
    let sequential: Vec<String> = dump(&vault).into_keys().collect();
    for threads in [1, 2, 3, 8] {
        let (states, stats) = vault
            .par_for_each_subject(
                &auth,
                threads,
                Vec::new,
                |seen: &mut Vec<(String, usize)>, view| {
                    seen.push((view.subject.to_owned(), view.purchases.len()));
                    std::ops::ControlFlow::Continue(())
                },
            )
            .unwrap();
        let mut all: Vec<(String, usize)> = states.into_iter().flatten().collect();
        all.sort();
        assert_eq!(
            all.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
            sequential
        );
        assert!(all.iter().all(|(_, n)| *n == 3));
        assert_eq!(
            (stats.subjects, stats.records, stats.erased_subjects),
            (96, 288, 1)
        );
    }
    // A break stops the scan early.
    let (_, stats) = vault
        .par_for_each_subject(&auth, 2, || (), |_, _| std::ops::ControlFlow::Break(()))
        .unwrap();
    assert!(stats.subjects <= 2);
}

/// A scan restricted to some subjects visits exactly those (erased ones still
/// skipped) and decrypts only their blocks; the batch budget read equals the
/// per-subject reads.
#[test]
fn restricted_scan_decrypts_only_the_included_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let batch: Vec<_> = (0..40)
        .flat_map(|i| {
            (0..2).map(move |j| (sid(&format!("p{i}")), purchase("Starbucks", 100 + j, i)))
        })
        .collect();
    vault.insert_batch(&batch).unwrap();
    vault.erase_subject(&sid("p4"), 9).unwrap();
    let auth = reader(&vault);
    let wanted = |s: &str| ["p2", "p4", "p7", "p31"].contains(&s);
    let mut seen = Vec::new();
    let stats = vault
        .for_each_subject_in(&auth, wanted, |view| {
            seen.push((view.subject.to_owned(), view.purchases.len()));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    seen.sort();
    let expect: Vec<(String, usize)> = ["p2", "p31", "p7"]
        .iter()
        .map(|s| (s.to_string(), 2))
        .collect();
    assert_eq!(seen, expect);
    assert_eq!((stats.subjects, stats.records), (3, 6));
    let full = vault
        .for_each_subject(&auth, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(full.subjects, 39);
    assert!(
        stats.blocks < full.blocks && stats.plaintext_bytes < full.plaintext_bytes / 5,
        "restricted {stats:?} vs full {full:?}"
    );

    let scope = UsageScope::Marketing;
    let subjects: Vec<_> = ["p1", "p2", "p3"].iter().map(|s| sid(s)).collect();
    vault
        .reserve_for_task(
            &task("t-1"),
            scope,
            &subjects[..2],
            Epsilon::from_micro(250_000),
            ReserveMode::AllOrNothing,
        )
        .unwrap();
    let batch = vault.budget_accounts(&subjects, scope).unwrap();
    let one_by_one: Vec<_> = subjects
        .iter()
        .map(|s| vault.budget_account(s, scope).unwrap())
        .collect();
    assert_eq!(batch, one_by_one);
    assert_ne!(batch[0], batch[2], "p1 holds a reservation, p3 none");
}

/// A task's commit records which subjects it used, in the same transaction as the
/// budget commits: the record agrees with each account's `finished_of`, a retry
/// commits nothing more and records the same, and a task never committed has none.
#[test]
fn commit_task_records_the_usage_the_budget_ledger_holds() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let scope = UsageScope::Marketing;
    let subjects: Vec<_> = ["p3", "p1", "p2"].iter().map(|s| sid(s)).collect();
    let t = task("t-usage");
    let eps = Epsilon::from_micro(100_000);
    vault
        .reserve_for_task(&t, scope, &subjects, eps, ReserveMode::AllOrNothing)
        .unwrap();
    assert_eq!(vault.task_usage(&t).unwrap(), None);
    let used = Epsilon::from_micro(80_000);
    let first = vault.commit_task(scope, &t, &subjects[..2], used).unwrap();
    assert_eq!(first, vec![BudgetOutcome::Applied; 2]);
    let (recorded_scope, recorded) = vault.task_usage(&t).unwrap().unwrap();
    assert_eq!(recorded_scope, scope);
    assert_eq!(recorded, vec![(sid("p1"), used), (sid("p3"), used)]);
    for (s, e) in &recorded {
        assert_eq!(
            vault.budget_account(s, scope).unwrap().finished_of(&t),
            Some(*e)
        );
    }
    assert_eq!(
        vault
            .budget_account(&sid("p2"), scope)
            .unwrap()
            .finished_of(&t),
        None
    );
    let again = vault.commit_task(scope, &t, &subjects[..2], used).unwrap();
    assert_eq!(again, vec![BudgetOutcome::AlreadyApplied; 2]);
    assert_eq!(vault.task_usage(&t).unwrap().unwrap().1, recorded);
    assert_eq!(vault.task_usage(&task("t-other")).unwrap(), None);
}

/// A composite task's rounds reserve all or none per subject in one transaction:
/// a subject that can not cover the sum keeps its account unchanged; a retry is
/// idempotent; a released round task refuses the whole reservation.
#[test]
fn rounds_reserve_all_or_none_per_subject() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let t = UsageScope::Training;
    let eps = Epsilon::from_milli;
    let subjects: Vec<_> = ["a", "b", "c"].iter().map(|s| sid(s)).collect();
    // b has 500 m-ε left: it can cover two rounds of 200, not three.
    vault
        .reserve_for_task(
            &task("old"),
            t,
            &subjects[1..2],
            eps(500),
            ReserveMode::AllOrNothing,
        )
        .unwrap();
    vault
        .finish_task(
            t,
            &subjects[1..2],
            &BudgetOp::CommitAtEstimate { task: task("old") },
        )
        .unwrap();
    let rounds: Vec<_> = (0..3)
        .map(|r| (task(&format!("run/r{r}")), eps(200)))
        .collect();
    let before_b = vault.budget_account(&subjects[1], t).unwrap();
    let report = vault.reserve_all_or_none(t, &subjects, &rounds).unwrap();
    assert_eq!(
        report.reserved,
        vec![subjects[0].clone(), subjects[2].clone()]
    );
    assert_eq!(report.excluded, vec![subjects[1].clone()]);
    assert_eq!(report.already_applied, 0);
    assert_eq!(
        vault.budget_account(&subjects[0], t).unwrap().reserved(),
        eps(600)
    );
    assert_eq!(vault.budget_account(&subjects[1], t).unwrap(), before_b);
    let again = vault
        .reserve_all_or_none(t, &subjects[..1], &rounds)
        .unwrap();
    assert_eq!(again.already_applied, 1);
    assert_eq!(
        vault.budget_account(&subjects[0], t).unwrap().reserved(),
        eps(600)
    );
    // Round 1 committed, the others released, in one transaction; then a round
    // task that was released refuses a new all-or-none reservation.
    let groups = vec![
        (
            subjects[..1].to_vec(),
            BudgetOp::Commit {
                task: task("run/r0"),
                actual: eps(200),
            },
        ),
        (
            subjects[..1].to_vec(),
            BudgetOp::Release {
                task: task("run/r1"),
            },
        ),
        (
            subjects[..1].to_vec(),
            BudgetOp::Release {
                task: task("run/r2"),
            },
        ),
    ];
    assert_eq!(vault.apply_op_groups(t, &groups).unwrap(), 3);
    assert_eq!(
        vault.apply_op_groups(t, &groups).unwrap(),
        0,
        "a retry applies nothing"
    );
    let a = vault.budget_account(&subjects[0], t).unwrap();
    assert_eq!((a.committed(), a.reserved()), (eps(200), Epsilon::ZERO));
    vault.release_task(&task("run/r2")).unwrap();
    let err = vault
        .reserve_all_or_none(t, &subjects[2..], &rounds)
        .unwrap_err();
    assert!(matches!(err, VaultError::TaskReleased(ref id) if id == "run/r2"));
}

/// Groups apply all or nothing: a refused operation for one subject leaves every
/// account of the call as it was.
#[test]
fn op_groups_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let t = UsageScope::Training;
    let eps = Epsilon::from_milli;
    let subjects: Vec<_> = ["a", "b"].iter().map(|s| sid(s)).collect();
    vault
        .reserve_for_task(
            &task("x"),
            t,
            &subjects,
            eps(100),
            ReserveMode::AllOrNothing,
        )
        .unwrap();
    let before: Vec<_> = subjects
        .iter()
        .map(|s| vault.budget_account(s, t).unwrap())
        .collect();
    let groups = vec![
        (
            subjects.clone(),
            BudgetOp::Commit {
                task: task("x"),
                actual: eps(100),
            },
        ),
        // b never reserved for y: committing it is refused.
        (
            subjects[1..].to_vec(),
            BudgetOp::Commit {
                task: task("y"),
                actual: eps(100),
            },
        ),
    ];
    let err = vault.apply_op_groups(t, &groups).unwrap_err();
    assert!(matches!(err, VaultError::Budget { ref subject, .. } if subject == "b"));
    let after: Vec<_> = subjects
        .iter()
        .map(|s| vault.budget_account(s, t).unwrap())
        .collect();
    assert_eq!(before, after);
}

/// Erased and unknown subjects are unreadable; stored ones are not.
#[test]
fn unreadable_among_names_erased_and_unknown_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let vault = create(&dir.path().join("v.redb"), "vault-a");
    let batch = vec![
        (sid("alice"), purchase("Luckin Coffee", 590, 10)),
        (sid("bob"), purchase("Toast Box", 300, 12)),
    ];
    vault.insert_batch(&batch).unwrap();
    assert!(vault.erase_subject(&sid("bob"), 99).unwrap());
    let asked = [sid("alice"), sid("bob"), sid("carol")];
    let out = vault.unreadable_among(asked.iter()).unwrap();
    assert_eq!(
        out.into_iter().collect::<Vec<_>>(),
        vec![sid("bob"), sid("carol")]
    );
}
