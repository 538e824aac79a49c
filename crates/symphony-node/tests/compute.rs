//! `compute` end to end on the embedded network: the noise-free aggregate checked
//! against an independent plaintext computation from the generated files, the
//! released table's noise, the fee split, the lifecycle, and refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use symphony_core::consent::UsageScope;
use symphony_node::classes::compute::ExactGroup;
use symphony_node::network::{advertiser_key, EmbeddedNetwork, NetworkParams, Quiet};
use symphony_node::task::{ComputeSpec, GroupBy, SignedTask, Statistic, TaskSpec};
use symphony_node::NodeError;

const NOW_MS: u64 = 1_795_219_200_000;
const DAY_MS: u64 = 86_400_000;
const SUBMITTER: &str = "analyst:luckin-insights";
const BOUND: u64 = 4_000;

fn spec(epsilon: &str) -> ComputeSpec {
    ComputeSpec {
        submitter: SUBMITTER.into(),
        brand: "Luckin Coffee".into(),
        country: "CN".into(),
        city: None,
        window_days: 30,
        group_by: GroupBy::HomeCity,
        statistic: Statistic::MeanBasketValue,
        contribution_bound_minor: BOUND,
        epsilon: epsilon.into(),
        usage_scope: UsageScope::Analytics,
        minimum_vault_quorum: None,
    }
}

fn build(dir: &Path, seed: u64, subjects: u64) -> EmbeddedNetwork {
    let params = NetworkParams {
        subjects,
        vaults: 3,
        records: subjects * 10,
        seed,
        now_ms: NOW_MS,
    };
    EmbeddedNetwork::build(dir, &params, &[SUBMITTER], &mut Quiet).unwrap()
}

fn signed(seed: u64, spec: ComputeSpec, nonce: u64) -> SignedTask {
    SignedTask::sign(
        TaskSpec::Compute(spec),
        nonce,
        &advertiser_key(seed, SUBMITTER),
    )
    .unwrap()
}

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The same statistic computed straight from the plaintext import files: people
/// with analytics consent in a Vault, home country CN, at least one Luckin Coffee
/// purchase in the last 30 days; merged across Vaults by normalized contact; mean
/// basket = total / purchases (integer), clipped to the bound; per home city.
fn plaintext_table(net: &EmbeddedNetwork) -> BTreeMap<String, ExactGroup> {
    let (vault_files, consent_file) = net.data_files();
    let mut consent: BTreeMap<(String, String), (u64, bool)> = BTreeMap::new();
    for r in rows(consent_file) {
        if r["kind"] != "consent" || r["scope"] != "analytics" {
            continue;
        }
        let key = (
            r["vault"].as_str().unwrap().to_owned(),
            r["subject"].as_str().unwrap().to_owned(),
        );
        let at = r["at_ms"].as_u64().unwrap();
        let granted = r["granted"].as_bool().unwrap();
        let e = consent.entry(key).or_insert((0, false));
        if at <= NOW_MS && at >= e.0 {
            *e = (at, granted);
        }
    }
    // contact → (home city, sum, n)
    let mut people: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    for file in vault_files {
        let vault = file.file_stem().unwrap().to_str().unwrap().to_owned();
        let mut contact: BTreeMap<String, String> = BTreeMap::new();
        let mut home: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut spend: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in rows(file) {
            let subject = r["subject"].as_str().unwrap().to_owned();
            match r["kind"].as_str().unwrap() {
                "identity" => {
                    contact.insert(subject, r["contact"].as_str().unwrap().to_owned());
                }
                "geography" => {
                    home.insert(
                        subject,
                        (
                            r["home_city"].as_str().unwrap().to_owned(),
                            r["home_country"].as_str().unwrap().to_owned(),
                        ),
                    );
                }
                "purchase" => {
                    let ts = r["ts_ms"].as_u64().unwrap();
                    let brand = r["brand"].as_str().unwrap();
                    if brand.trim().eq_ignore_ascii_case("Luckin Coffee")
                        && ts <= NOW_MS
                        && NOW_MS - ts <= 30 * DAY_MS
                    {
                        let e = spend.entry(subject).or_insert((0, 0));
                        e.0 += r["amount_minor"].as_u64().unwrap();
                        e.1 += 1;
                    }
                }
                _ => {}
            }
        }
        for (subject, (sum, n)) in spend {
            if consent.get(&(vault.clone(), subject.clone())).map(|c| c.1) != Some(true) {
                continue;
            }
            let Some((city, country)) = home.get(&subject) else {
                continue;
            };
            if !country.trim().eq_ignore_ascii_case("CN") {
                continue;
            }
            let Some(handle) = contact.get(&subject) else {
                continue;
            };
            let e =
                people
                    .entry(handle.trim().to_ascii_lowercase())
                    .or_insert((city.clone(), 0, 0));
            if *city < e.0 {
                e.0 = city.clone();
            }
            e.1 += sum;
            e.2 += n;
        }
    }
    let mut table: BTreeMap<String, ExactGroup> = BTreeMap::new();
    for (city, sum, n) in people.into_values() {
        let g = table.entry(city).or_default();
        g.count += 1;
        g.clipped_sum += (sum / n).min(BOUND);
    }
    table
}

#[test]
fn compute_releases_a_noisy_table_whose_noise_free_aggregate_matches_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 11;
    let mut net = build(dir.path(), seed, 3_000);
    let expected = plaintext_table(&net);
    assert!(expected.len() >= 2, "the data must have several CN cities");
    let run = net
        .run_compute_audited(&signed(seed, spec("0.5"), 1), &mut Quiet)
        .unwrap();
    let agg = run.aggregate.as_ref().unwrap();
    assert_eq!(agg.exact, expected, "noise-free aggregate vs plaintext");
    let r = &run.report;
    assert_eq!(
        r.states,
        [
            "accepted",
            "resolving",
            "dispatched",
            "verifying",
            "awaiting_settlement",
            "completed"
        ]
    );
    assert_eq!(r.attestations_verified, 3 + 1);
    assert_eq!(r.fee_shares.values().sum::<u64>(), r.fee_total);
    assert!(r.fee_total > 0 && r.fee_total <= r.fee_locked);
    assert_eq!(r.fee_total + r.refund, r.fee_locked);
    assert_eq!(r.epsilon_committed, "0.5");
    // Released groups: noisy, above the threshold; every group is either released
    // or suppressed; values within the bound.
    let released: BTreeSet<&str> = agg.groups.iter().map(|g| g.group.as_str()).collect();
    let suppressed: BTreeSet<&str> = agg.suppressed_groups.iter().map(String::as_str).collect();
    assert!(released.is_disjoint(&suppressed));
    assert_eq!(
        released
            .union(&suppressed)
            .copied()
            .collect::<BTreeSet<_>>(),
        expected.keys().map(String::as_str).collect::<BTreeSet<_>>()
    );
    for g in &agg.groups {
        assert!(g.count >= 20, "{g:?} released below the threshold");
        assert!((0..=BOUND as i64).contains(&g.value));
        let exact = &expected[&g.group];
        // Noise is there but bounded: scale 2/ε = 4 for counts.
        assert!(
            (g.count - exact.count as i64).abs() < 80,
            "{g:?} vs {exact:?}"
        );
    }
    let noisy = agg
        .groups
        .iter()
        .filter(|g| g.count != expected[&g.group].count as i64)
        .count();
    assert!(noisy > 0, "released counts carry noise");
    // Replay: the same network and request give the same bytes.
    let dir2 = tempfile::tempdir().unwrap();
    let mut net2 = build(dir2.path(), seed, 3_000);
    let run2 = net2
        .run_compute_audited(&signed(seed, spec("0.5"), 1), &mut Quiet)
        .unwrap();
    assert_eq!(run2.aggregate.unwrap().groups, agg.groups);
}

#[test]
fn compute_refusals_name_the_problem_and_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 5;
    let mut net = build(dir.path(), seed, 400);
    let e = net
        .run_compute(&signed(seed, spec("0"), 1), &mut Quiet)
        .unwrap_err();
    assert!(matches!(e, NodeError::Refused(_)));
    assert!(e.to_string().contains("epsilon must be positive"), "{e}");
    let e = net
        .run_compute(&signed(seed, spec("7"), 2), &mut Quiet)
        .unwrap_err();
    assert!(
        e.to_string().contains("exceeds the analytics budget"),
        "{e}"
    );
    let mut marketing = spec("0.5");
    marketing.usage_scope = UsageScope::Marketing;
    let e = net
        .run_compute(&signed(seed, marketing, 3), &mut Quiet)
        .unwrap_err();
    assert!(e.to_string().contains("semantic resolution blocked"), "{e}");
    // A forged signature is refused before anything is reserved or locked.
    let mut forged = signed(seed, spec("0.5"), 4);
    forged.nonce = 5;
    let e = net.run_compute(&forged, &mut Quiet).unwrap_err();
    assert!(e.to_string().contains("signature does not verify"), "{e}");
    assert_eq!(net.master.masters.state().tasks().count(), 0);
}

#[test]
fn a_small_population_is_suppressed_rejected_and_charged_only_the_base_fee() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 3;
    let mut net = build(dir.path(), seed, 60);
    let out = net
        .run_compute(&signed(seed, spec("0.5"), 1), &mut Quiet)
        .unwrap();
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    assert!(out.groups.is_empty(), "nothing released: {:?}", out.groups);
    assert!(
        out.reason.as_deref().unwrap_or("").contains("suppressed"),
        "{:?}",
        out.reason
    );
    assert_eq!(out.fee_total + out.refund, out.fee_locked);
    assert_eq!(out.fee_shares.get("treasury"), Some(&out.fee_total));
}
