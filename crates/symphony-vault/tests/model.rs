//! The store against a `BTreeMap` reference model under random operations:
//! inserts (with duplicates), erasure, consent changes (some out of order), budget
//! operations (some refused) and reopening. After every step the Vault must show
//! exactly what the model holds, and a refused operation must change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use symphony_core::budget::{BudgetAccount, BudgetOp, Epsilon};
use symphony_core::consent::{ConsentChange, ConsentHistory, UsageScope};
use symphony_core::ids::{EpochId, TaskId};
use symphony_vault::{ContactKind, Geography, Identity, Record, Vault};

const SUBJECTS: usize = 5;
const SCOPES: [UsageScope; 2] = [UsageScope::Marketing, UsageScope::Training];

#[derive(Clone, Debug)]
enum Op {
    Insert(Vec<(usize, u8)>),
    Erase(usize),
    Consent(usize, usize, u64, bool),
    Budget(Vec<(usize, u8, u8, u16)>, usize),
    Reopen,
}

fn record(r: u8) -> Record {
    match r % 8 {
        0 => Record::Identity(Identity {
            contact_kind: ContactKind::Email,
            contact: format!("u{}@x.example", r / 8),
        }),
        1 => Record::Geography(Geography {
            home_city: ["Singapore", "Penang"][usize::from(r / 8) % 2].to_owned(),
            home_country: "SG".to_owned(),
        }),
        _ => purchase(
            ["Luckin Coffee", "Starbucks"][usize::from(r) % 2],
            u64::from(r) * 10,
            u64::from(r / 3),
        ),
    }
}

fn budget_op(kind: u8, task: u8, amount: u16) -> BudgetOp {
    let task = TaskId::new(format!("t{}", task % 3)).unwrap();
    let eps = Epsilon::from_milli(u64::from(amount % 700));
    match kind % 5 {
        0 | 1 => BudgetOp::Reserve { task, amount: eps },
        2 => BudgetOp::Commit { task, actual: eps },
        3 => BudgetOp::Release { task },
        _ => BudgetOp::CommitAtEstimate { task },
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..SUBJECTS, any::<u8>()), 1..12).prop_map(Op::Insert),
        1 => (0..SUBJECTS).prop_map(Op::Erase),
        3 => (0..SUBJECTS, 0..2usize, 0..50u64, any::<bool>()).prop_map(|(s, c, t, g)| Op::Consent(s, c, t, g)),
        4 => (prop::collection::vec((0..SUBJECTS, any::<u8>(), any::<u8>(), any::<u16>()), 1..5), 0..2usize)
            .prop_map(|(ops, scope)| Op::Budget(ops, scope)),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    records: BTreeMap<String, Vec<Record>>,
    erased: BTreeSet<String>,
    consent: BTreeMap<(String, UsageScope), ConsentHistory>,
    budget: BTreeMap<(String, UsageScope), BudgetAccount>,
}

fn name(s: usize) -> String {
    format!("sub-{s}")
}

/// The view a scan gives: latest identity, latest geography, then purchases.
fn view(records: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    let last = |f: fn(&Record) -> bool| records.iter().rev().find(|r| f(r)).cloned();
    out.extend(last(|r| matches!(r, Record::Identity(_))));
    out.extend(last(|r| matches!(r, Record::Geography(_))));
    out.extend(
        records
            .iter()
            .filter(|r| matches!(r, Record::Purchase(_)))
            .cloned(),
    );
    out
}

fn step(vault: &Vault, model: &mut Model, op: &Op) {
    match op {
        Op::Insert(items) => {
            let batch: Vec<_> = items
                .iter()
                .map(|(s, r)| (sid(&name(*s)), record(*r)))
                .collect();
            vault.insert_batch(&batch).unwrap();
            for (s, r) in &batch {
                if model.erased.contains(s.as_str()) {
                    continue;
                }
                let recs = model.records.entry(s.to_string()).or_default();
                if !recs.contains(r) {
                    recs.push(r.clone());
                }
            }
        }
        Op::Erase(s) => {
            let was_live =
                model.records.contains_key(&name(*s)) && !model.erased.contains(&name(*s));
            assert_eq!(vault.erase_subject(&sid(&name(*s)), 1).unwrap(), was_live);
            model.erased.insert(name(*s));
            model.records.remove(&name(*s));
        }
        Op::Consent(s, c, at_ms, granted) => {
            let change = ConsentChange {
                at_ms: *at_ms,
                granted: *granted,
            };
            let key = (name(*s), SCOPES[*c]);
            let mut h = model.consent.get(&key).cloned().unwrap_or_default();
            let expect_ok = h.push(change).is_ok();
            let got = vault.record_consent(&[(sid(&name(*s)), SCOPES[*c], change)]);
            assert_eq!(got.is_ok(), expect_ok, "{got:?}");
            if expect_ok {
                model.consent.insert(key, h);
            }
        }
        Op::Budget(ops, c) => {
            let scope = SCOPES[*c];
            let ops: Vec<_> = ops
                .iter()
                .map(|(s, k, t, a)| (sid(&name(*s)), budget_op(*k, *t, *a)))
                .collect();
            // All or nothing in the model too: apply to copies, keep them only if all pass.
            let mut staged = model.budget.clone();
            let mut all_ok = true;
            for (s, op) in &ops {
                let acc = staged.entry((s.to_string(), scope)).or_insert_with(|| {
                    BudgetAccount::new(Epsilon::from_micro(1_000_000), EpochId(0))
                });
                if acc.apply(op).is_err() {
                    all_ok = false;
                    break;
                }
            }
            let got = vault.apply_budget_ops(scope, &ops);
            assert_eq!(got.is_ok(), all_ok, "{got:?}");
            if all_ok {
                model.budget = staged;
            }
        }
        Op::Reopen => {}
    }
}

fn check(vault: &Vault, model: &Model) {
    let expected: BTreeMap<String, Vec<Record>> = model
        .records
        .iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(s, r)| (s.clone(), view(r)))
        .collect();
    assert_eq!(dump(vault), expected);
    for s in 0..SUBJECTS {
        for scope in SCOPES {
            let key = (name(s), scope);
            assert_eq!(
                vault.consent_history(&sid(&name(s)), scope).unwrap(),
                model.consent.get(&key).cloned().unwrap_or_default()
            );
            let acc = vault.budget_account(&sid(&name(s)), scope).unwrap();
            let want =
                model.budget.get(&key).cloned().unwrap_or_else(|| {
                    BudgetAccount::new(Epsilon::from_micro(1_000_000), EpochId(0))
                });
            assert_eq!(acc, want);
            assert!(acc.committed().micro + acc.reserved().micro <= acc.capacity().micro);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_reference_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        let mut vault = create(&path, "vault-m");
        let mut model = Model::default();
        for op in &ops {
            if let Op::Reopen = op {
                drop(vault);
                vault = Vault::open(&path, &key(7), [9; 32]).unwrap();
            }
            step(&vault, &mut model, op);
            check(&vault, &model);
        }
    }
}
