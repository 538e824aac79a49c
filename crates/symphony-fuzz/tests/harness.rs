//! The fuzz harnesses on stable: proptest over random bytes, over mutations of valid
//! inputs and over `arbitrary`-built specs, plus a replay of the saved corpus
//! (`fuzz/corpus/<target>/*`). Each harness must return (no panic) and every refusal
//! must carry a message.
use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::encoding::{canonical_bytes, Digest};
use symphony_core::envelope::*;
use symphony_core::ids::*;
use symphony_fuzz::{
    campaign_spec, envelope, gateway, gateway_request, jsonl_import, structured_spec, task_spec,
    training_spec, Outcome, TARGETS,
};

/// Cases per property: `default`, or `SYMPHONY_FUZZ_CASES` for a long local run
/// (`SYMPHONY_FUZZ_CASES=1000000 cargo test --release -p symphony-fuzz`).
fn cases(default: u32) -> u32 {
    std::env::var("SYMPHONY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> Vec<u8> {
    std::fs::read(root().join("examples").join(name)).unwrap()
}

fn valid_envelope() -> Vec<u8> {
    let vaults: std::collections::BTreeSet<VaultId> = ["v1", "v2"]
        .iter()
        .map(|v| VaultId::new(*v).unwrap())
        .collect();
    let env = TaskEnvelope::seal(EnvelopeBody {
        task_id: TaskId::new("fuzz-1").unwrap(),
        task_class: TaskClass::Query,
        caller: CallerContext {
            actor_id: ActorId::new("advertiser:luckin").unwrap(),
            public_key: [1; 32],
            request_hash: Digest([2; 32]),
            nonce: 1,
            admitted_at_ms: 1000,
        },
        authorization: Authorization {
            granted_by: "test".into(),
            vault_permits: vaults.clone(),
        },
        consent_refs: vec![],
        semantic_version: SemanticVersion(1),
        policy_version: PolicyVersion(1),
        epoch_id: EpochId(0),
        budget_reservation: BudgetReservation {
            usage_scope: UsageScope::Marketing,
            epsilon_per_subject: Epsilon::from_milli(100),
            subjects_reserved: 5,
        },
        coordination_envelope: CoordinationEnvelope {
            participating_vault_ids: vaults,
            minimum_vault_quorum: 2,
            aggregation_method: AggregationMethod::UnionWithCardinalityCap,
        },
        budget_lock_ref: Some(BudgetLockRef {
            ledger: "embedded".into(),
            escrow_id: "e1".into(),
            amount_base_units: 1000,
        }),
        iteration_policy: None,
        resolved_plan_hash: Digest([3; 32]),
        constraints: BTreeMap::new(),
        deadline_ms: 10_000,
    })
    .unwrap();
    canonical_bytes(&env).unwrap()
}

/// A few valid record lines, from the Vault data generator.
fn valid_jsonl() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    symphony_vault::generate(
        &symphony_vault::GenerateParams {
            subjects: 4,
            vaults: 1,
            records: 6,
            seed: 1,
            now_ms: 1_795_219_200_000,
        },
        dir.path(),
    )
    .unwrap();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && !p.file_name().unwrap().to_string_lossy().contains("consent")
        })
        .unwrap();
    std::fs::read(file).unwrap()
}

fn clear(name: &str, outcome: &Outcome) {
    assert!(outcome.is_clear(), "{name}: refusal without a message");
}

#[test]
fn valid_inputs_are_accepted() {
    assert_eq!(campaign_spec(&example("luckin.toml")), Outcome::Accepted);
    assert_eq!(task_spec(&example("compute.toml")), Outcome::Accepted);
    assert_eq!(task_spec(&example("train.toml")), Outcome::Accepted);
    assert_eq!(envelope(&valid_envelope()), Outcome::Accepted);
    assert_eq!(jsonl_import(&valid_jsonl()), Outcome::Accepted);
    // No input left: every choice takes its first option, a validly signed query.
    assert_eq!(gateway_request(&[]), Outcome::Accepted);
    assert_eq!(gateway::example_bodies().len(), 3, "query, compute, train");
}

#[test]
fn refusals_say_what_is_wrong() {
    let Outcome::Refused(m) = campaign_spec(b"advertiser = 7") else {
        panic!("accepted")
    };
    assert!(
        m.contains("advertiser") || m.contains("invalid type"),
        "{m}"
    );
    let Outcome::Refused(m) = jsonl_import(b"{\"subject_id\": 1}\n") else {
        panic!("accepted")
    };
    assert!(m.contains(":1:") && m.contains("field"), "{m}");
    let mut env = valid_envelope();
    let last = env.len() - 1;
    env[last] ^= 1; // the hash no longer matches the body
    assert!(matches!(envelope(&env), Outcome::Refused(_)));
    // A request with a missing signature header says which.
    let mut input = vec![0u8; 64];
    let refused = (0..64 * 4).find_map(|k| {
        let (i, byte) = (k / 4, [0x40, 0x80, 0xc0, 0xff][k % 4]);
        input[i] = byte;
        let outcome = gateway_request(&input);
        input[i] = 0;
        match outcome {
            Outcome::Refused(m) if m.contains("x-scp-") => Some(m),
            _ => None,
        }
    });
    assert!(refused.is_some(), "no header refusal near the valid input");
}

/// Replays every saved input in `fuzz/corpus/<target>/` (what libFuzzer keeps).
#[test]
fn saved_corpus_replays() {
    let mut replayed = 0;
    for (name, harness) in TARGETS {
        let dir = root().join("fuzz/corpus").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            clear(name, &harness(&data));
            replayed += 1;
        }
    }
    assert!(replayed >= 10, "only {replayed} corpus inputs found");
}

/// One mutation of a valid input: flip, insert, delete or truncate at a position.
fn mutate(mut data: Vec<u8>, edits: &[(u8, u16, u8)]) -> Vec<u8> {
    for (kind, pos, byte) in edits {
        let at = if data.is_empty() {
            0
        } else {
            usize::from(*pos) % data.len()
        };
        match kind % 4 {
            0 if !data.is_empty() => data[at] ^= byte | 1,
            1 => data.insert(at, *byte),
            2 if !data.is_empty() => {
                data.remove(at);
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<(u8, u16, u8)>> {
    prop::collection::vec(any::<(u8, u16, u8)>(), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn gateway_requests_never_panic(data in prop::collection::vec(any::<u8>(), 0..768)) {
        clear("gateway_request", &gateway_request(&data));
    }

    #[test]
    fn gateway_requests_near_valid_never_panic(
        data in prop::collection::vec(0u8..4, 0..96),
    ) {
        // Small choice bytes keep most choices on their first, valid options, so
        // one or two fields differ from a validly signed request.
        clear("gateway_request", &gateway_request(&data));
    }

    #[test]
    fn specs_never_panic_on_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        clear("campaign_spec", &campaign_spec(&data));
        clear("training_spec", &training_spec(&data));
        clear("task_spec", &task_spec(&data));
    }

    #[test]
    fn specs_never_panic_on_mutated_examples(which in 0usize..3, e in edits()) {
        let name = ["luckin.toml", "compute.toml", "train.toml"][which];
        let data = mutate(example(name), &e);
        clear("campaign_spec", &campaign_spec(&data));
        clear("training_spec", &training_spec(&data));
        clear("task_spec", &task_spec(&data));
    }

    #[test]
    fn structured_specs_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Some(outcomes) = structured_spec(&data) {
            for o in &outcomes {
                clear("structured_spec", o);
            }
        }
    }

    #[test]
    fn envelopes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        clear("envelope", &envelope(&data));
    }

    #[test]
    fn mutated_envelopes_are_refused_or_canonical(e in edits()) {
        let data = mutate(valid_envelope(), &e);
        let outcome = envelope(&data);
        clear("envelope", &outcome);
        // The harness itself checks that an accepted envelope re-encodes to its bytes.
        prop_assert!(!matches!(&outcome, Outcome::Refused(m) if m.starts_with("harness:")));
    }
}

proptest! {
    // Each case writes a temp file: fewer cases.
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn jsonl_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        clear("jsonl_import", &jsonl_import(&data));
    }

    #[test]
    fn mutated_jsonl_never_panics(e in edits()) {
        let data = mutate(valid_jsonl(), &e);
        clear("jsonl_import", &jsonl_import(&data));
    }
}
