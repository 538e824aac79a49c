//! Synthetic data that looks real, deterministic for a seed.
//!
//! People live in South-East Asian and Chinese cities (Singapore the largest
//! share), buy coffee (Luckin Coffee and its competitors, each person with a
//! favourite) and other goods, mostly in their home city, over the 90 days before
//! `now_ms`. A person is a customer of one to three enterprises (Vaults) and has the
//! same contact handle in each; each Vault knows them under its own pseudonymous
//! subject id. Consent and prior budget spend are drawn per (person, Vault).
//! File formats: see the crate docs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use crate::error::GenerateError;

/// Parameters of [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateParams {
    /// Number of distinct people.
    pub subjects: u64,
    /// Number of Vaults (enterprises), 1..=99.
    pub vaults: u32,
    /// Total purchase records over all Vaults (exact).
    pub records: u64,
    /// Seed: the same parameters give byte-identical files.
    pub seed: u64,
    /// "Now": purchases fall in the 90 days before it.
    pub now_ms: u64,
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Vault ids, `vault-01`...
    pub vault_ids: Vec<String>,
    /// One record file per Vault, in the order of `vault_ids`.
    pub vault_files: Vec<PathBuf>,
    /// The consent file (consent changes and prior budget spend for every Vault).
    pub consent_file: PathBuf,
    /// People generated.
    pub people: u64,
    /// (person, Vault) pairs, i.e. subjects over all Vaults.
    pub memberships: u64,
    /// Purchase rows written.
    pub purchases: u64,
    /// Rows in all record files (identity + geography + purchases).
    pub record_rows: u64,
    /// Consent change rows.
    pub consent_rows: u64,
    /// Budget rows.
    pub budget_rows: u64,
}

/// Budget capacity every budget row carries (1 ε); configure Vaults with the same
/// default so that subjects without a budget row have the same capacity.
pub const BUDGET_CAPACITY_MICRO: u64 = 1_000_000;

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
const WINDOW_DAYS: u64 = 90;

struct City {
    name: &'static str,
    country: &'static str,
    weight: u32,
}

const CITIES: &[City] = &[
    City {
        name: "Singapore",
        country: "SG",
        weight: 34,
    },
    City {
        name: "Kuala Lumpur",
        country: "MY",
        weight: 11,
    },
    City {
        name: "Penang",
        country: "MY",
        weight: 4,
    },
    City {
        name: "Shanghai",
        country: "CN",
        weight: 11,
    },
    City {
        name: "Beijing",
        country: "CN",
        weight: 8,
    },
    City {
        name: "Xiamen",
        country: "CN",
        weight: 4,
    },
    City {
        name: "Hong Kong",
        country: "HK",
        weight: 10,
    },
    City {
        name: "Bangkok",
        country: "TH",
        weight: 10,
    },
    City {
        name: "Jakarta",
        country: "ID",
        weight: 8,
    },
];

/// Currency and price factor relative to SGD cents.
fn currency(country: &str) -> (&'static str, f64) {
    match country {
        "SG" => ("SGD", 1.0),
        "MY" => ("MYR", 3.4),
        "CN" => ("CNY", 5.3),
        "HK" => ("HKD", 5.8),
        "TH" => ("THB", 26.0),
        _ => ("IDR", 11_500.0),
    }
}

fn phone_prefix(country: &str) -> &'static str {
    match country {
        "SG" => "+658",
        "MY" => "+6012",
        "CN" => "+86138",
        "HK" => "+8529",
        "TH" => "+668",
        _ => "+62812",
    }
}

struct Brand {
    name: &'static str,
    category: &'static str,
    /// Price range in SGD cents.
    price_cents: (u64, u64),
    weight: u32,
    countries: &'static [&'static str],
}

const ALL: &[&str] = &["SG", "MY", "CN", "HK", "TH", "ID"];

/// Brand names are plain ASCII without `"` or `\`, so they are written unescaped.
static BRANDS: &[Brand] = &[
    Brand {
        name: "Luckin Coffee",
        category: "coffee",
        price_cents: (350, 650),
        weight: 12,
        countries: &["SG", "MY", "CN", "HK"],
    },
    Brand {
        name: "Starbucks",
        category: "coffee",
        price_cents: (580, 950),
        weight: 12,
        countries: ALL,
    },
    Brand {
        name: "The Coffee Bean & Tea Leaf",
        category: "coffee",
        price_cents: (550, 900),
        weight: 6,
        countries: &["SG", "MY", "TH", "ID"],
    },
    Brand {
        name: "Toast Box",
        category: "coffee",
        price_cents: (180, 600),
        weight: 8,
        countries: &["SG", "MY", "ID"],
    },
    Brand {
        name: "Ya Kun Kaya Toast",
        category: "coffee",
        price_cents: (250, 750),
        weight: 6,
        countries: &["SG", "MY"],
    },
    Brand {
        name: "Cotti Coffee",
        category: "coffee",
        price_cents: (300, 550),
        weight: 6,
        countries: &["CN", "SG", "MY"],
    },
    Brand {
        name: "Tim Hortons",
        category: "coffee",
        price_cents: (450, 800),
        weight: 4,
        countries: &["SG", "MY", "CN", "TH"],
    },
    Brand {
        name: "FairPrice",
        category: "grocery",
        price_cents: (500, 12_000),
        weight: 8,
        countries: &["SG"],
    },
    Brand {
        name: "7-Eleven",
        category: "convenience",
        price_cents: (150, 1_500),
        weight: 10,
        countries: ALL,
    },
    Brand {
        name: "Uniqlo",
        category: "apparel",
        price_cents: (1_990, 9_990),
        weight: 2,
        countries: ALL,
    },
    Brand {
        name: "McDonald's",
        category: "fast_food",
        price_cents: (550, 1_500),
        weight: 6,
        countries: ALL,
    },
    Brand {
        name: "GrabFood",
        category: "food_delivery",
        price_cents: (900, 4_500),
        weight: 6,
        countries: &["SG", "MY", "TH", "ID"],
    },
    Brand {
        name: "Meituan",
        category: "food_delivery",
        price_cents: (900, 4_000),
        weight: 8,
        countries: &["CN", "HK"],
    },
];

/// Hour-of-day weights (local time): breakfast and after-lunch coffee peaks.
const HOUR_WEIGHTS: [u32; 24] = [
    1, 0, 0, 0, 0, 1, 3, 8, 10, 8, 6, 6, 8, 7, 6, 5, 5, 6, 6, 5, 4, 3, 2, 1,
];

/// SplitMix64 finalizer: independent streams from (seed, parts).
fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for p in parts {
        x = x.wrapping_add(*p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

fn pick<T>(rng: &mut ChaCha8Rng, items: &[T], weight: impl Fn(&T) -> u32) -> usize {
    let total: u32 = items.iter().map(&weight).sum();
    let mut r = rng.gen_range(0..total.max(1));
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if r < w {
            return i;
        }
        r -= w;
    }
    items.len().saturating_sub(1)
}

/// A person: the same in every Vault they belong to.
struct Person {
    home: usize,
    contact_kind: &'static str,
    contact: String,
    favourite_coffee: usize,
    /// (vault index, activity weight)
    memberships: Vec<(u32, f64)>,
}

fn person(params: &GenerateParams, index: u64) -> Person {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(params.seed, &[index, 1]));
    let home = pick(&mut rng, CITIES, |c| c.weight);
    let country = CITIES[home].country;
    // A bijection of the index keeps handles unique and random-looking.
    let scrambled =
        index.wrapping_mul(2_654_435_761) % 10_000_000 + index / 10_000_000 * 10_000_000;
    let (contact_kind, contact) = if rng.gen_bool(0.7) {
        (
            "phone",
            format!("{}{:07}", phone_prefix(country), scrambled),
        )
    } else {
        (
            "email",
            format!(
                "user{scrambled:07}.{}@mail.example.com",
                country.to_ascii_lowercase()
            ),
        )
    };
    let coffee: Vec<usize> = (0..BRANDS.len())
        .filter(|&b| BRANDS[b].category == "coffee" && BRANDS[b].countries.contains(&country))
        .collect();
    let favourite_coffee = coffee[rng.gen_range(0..coffee.len())];
    let k = params.vaults;
    let n = match rng.gen_range(0..100u32) {
        0..=54 => 1,
        55..=84 => 2,
        _ => 3,
    }
    .min(k);
    let mut memberships: Vec<(u32, f64)> = Vec::with_capacity(n as usize);
    while memberships.len() < n as usize {
        let v = rng.gen_range(0..k);
        if memberships.iter().all(|(m, _)| *m != v) {
            // Heavy-tailed activity: a few people buy a lot.
            let u: f64 = rng.gen_range(0.02..1.0);
            memberships.push((v, u.powf(-0.8)));
        }
    }
    memberships.sort_by_key(|(v, _)| *v);
    Person {
        home,
        contact_kind,
        contact,
        favourite_coffee,
        memberships,
    }
}

fn subject_id(seed: u64, vault: u32, person: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"symphony-generate/subject\0");
    h.update(seed.to_le_bytes());
    h.update(vault.to_le_bytes());
    h.update(person.to_le_bytes());
    format!("s-{}", hex::encode(&h.finalize()[..8]))
}

/// Largest synthetic population (people).
pub const MAX_SUBJECTS: u64 = 50_000_000;
/// Largest number of synthetic purchase records.
pub const MAX_RECORDS: u64 = 2_000_000_000;

/// Writes one record file per Vault and the consent file into `out_dir`.
pub fn generate(params: &GenerateParams, out_dir: &Path) -> Result<GenerateSummary, GenerateError> {
    if params.subjects == 0 || params.vaults == 0 || params.vaults > 99 {
        return Err(GenerateError::Params(
            "need subjects ≥ 1 and 1 ≤ vaults ≤ 99".to_owned(),
        ));
    }
    // Bounded sizes: every person writes identity, geography and consent rows, so
    // an absurd population would fill the disk before anything else fails.
    if params.subjects > MAX_SUBJECTS {
        return Err(GenerateError::Params(format!(
            "subjects = {}: at most {MAX_SUBJECTS} people",
            params.subjects
        )));
    }
    if params.records > MAX_RECORDS {
        return Err(GenerateError::Params(format!(
            "records = {}: at most {MAX_RECORDS} purchase records",
            params.records
        )));
    }
    if params.now_ms < (WINDOW_DAYS + 400) * DAY_MS {
        return Err(GenerateError::Params("now_ms is too early".to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| GenerateError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let counts = purchase_counts(params);
    let mut summary = GenerateSummary::default();
    let mut writers = Vec::new();
    for v in 0..params.vaults {
        let id = format!("vault-{:02}", v + 1);
        let path = out_dir.join(format!("{id}.jsonl"));
        let file = File::create(&path).map_err(io(&path))?;
        writers.push(BufWriter::with_capacity(1 << 20, file));
        summary.vault_ids.push(id);
        summary.vault_files.push(path);
    }
    let consent_path = out_dir.join("consent.jsonl");
    let mut consent = BufWriter::new(File::create(&consent_path).map_err(io(&consent_path))?);
    let mut m = 0usize;
    for index in 0..params.subjects {
        let p = person(params, index);
        for (vault, _) in &p.memberships {
            let v = *vault as usize;
            let subject = subject_id(params.seed, *vault, index);
            let n = counts.get(m).copied().unwrap_or(0);
            m += 1;
            let path = &summary.vault_files[v];
            let rows = write_subject(&mut writers[v], params, &p, index, *vault, &subject, n)
                .map_err(io(path))?;
            summary.record_rows += rows;
            summary.purchases += n;
            summary.memberships += 1;
            let (c, b) = write_consent(
                &mut consent,
                params,
                &summary.vault_ids[v],
                &subject,
                index,
                *vault,
            )
            .map_err(io(&consent_path))?;
            summary.consent_rows += c;
            summary.budget_rows += b;
        }
    }
    for (w, path) in writers.iter_mut().zip(&summary.vault_files) {
        w.flush().map_err(io(path))?;
    }
    consent.flush().map_err(io(&consent_path))?;
    summary.people = params.subjects;
    summary.consent_file = consent_path;
    Ok(summary)
}

/// Purchases per (person, Vault) in person-major order, summing to `records`.
fn purchase_counts(params: &GenerateParams) -> Vec<u64> {
    let weights: Vec<f64> = (0..params.subjects)
        .flat_map(|i| person(params, i).memberships.into_iter().map(|(_, w)| w))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut counts: Vec<u64> = weights
        .iter()
        .map(|w| (params.records as f64 * w / total).floor() as u64)
        .collect();
    let assigned: u64 = counts.iter().sum();
    let mut rest = params.records.saturating_sub(assigned);
    let len = counts.len() as u64;
    let mut i = 0u64;
    while rest > 0 && len > 0 {
        // Spread the remainder deterministically over a scrambled order.
        let at = (mix(params.seed, &[i, 7]) % len) as usize;
        counts[at] += 1;
        rest -= 1;
        i += 1;
    }
    counts
}

fn write_subject(
    out: &mut impl Write,
    params: &GenerateParams,
    p: &Person,
    index: u64,
    vault: u32,
    subject: &str,
    purchases: u64,
) -> std::io::Result<u64> {
    let home = &CITIES[p.home];
    writeln!(
        out,
        r#"{{"kind":"identity","subject":"{subject}","contact_kind":"{}","contact":"{}"}}"#,
        p.contact_kind, p.contact
    )?;
    writeln!(
        out,
        r#"{{"kind":"geography","subject":"{subject}","home_city":"{}","home_country":"{}"}}"#,
        home.name, home.country
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(params.seed, &[index, 2, u64::from(vault)]));
    let mut rows: Vec<(u64, usize, usize, u64)> = (0..purchases)
        .map(|_| purchase(&mut rng, params, p))
        .collect();
    rows.sort_unstable();
    for (ts, city, brand, amount) in rows {
        let c = &CITIES[city];
        let b = &BRANDS[brand];
        writeln!(
            out,
            r#"{{"kind":"purchase","subject":"{subject}","brand":"{}","category":"{}","amount_minor":{amount},"currency":"{}","ts_ms":{ts},"store_city":"{}","store_country":"{}"}}"#,
            b.name,
            b.category,
            currency(c.country).0,
            c.name,
            c.country
        )?;
    }
    Ok(2 + purchases)
}

/// (timestamp, store city, brand, amount in minor units)
fn purchase(rng: &mut ChaCha8Rng, params: &GenerateParams, p: &Person) -> (u64, usize, usize, u64) {
    let city = if rng.gen_bool(0.9) {
        p.home
    } else {
        pick(rng, CITIES, |c| c.weight)
    };
    let country = CITIES[city].country;
    let brand = pick(rng, BRANDS, |b| {
        if !b.countries.contains(&country) {
            0
        } else if b.name == BRANDS[p.favourite_coffee].name {
            b.weight * 5
        } else {
            b.weight
        }
    });
    let (lo, hi) = BRANDS[brand].price_cents;
    let factor = currency(country).1;
    let amount = ((rng.gen_range(lo..=hi) as f64) * factor / 10.0).round() as u64 * 10;
    // Local day (UTC+8) and an hour of the day with realistic peaks.
    let days_ago = rng.gen_range(0..WINDOW_DAYS);
    let day_start =
        (params.now_ms - days_ago * DAY_MS + 8 * HOUR_MS) / DAY_MS * DAY_MS - 8 * HOUR_MS;
    let hour = pick(rng, &HOUR_WEIGHTS, |w| *w) as u64;
    let mut ts = day_start + hour * HOUR_MS + rng.gen_range(0..HOUR_MS);
    if ts >= params.now_ms {
        ts -= DAY_MS;
    }
    (ts, city, brand, amount.max(10))
}

fn write_consent(
    out: &mut impl Write,
    params: &GenerateParams,
    vault: &str,
    subject: &str,
    index: u64,
    vault_index: u32,
) -> std::io::Result<(u64, u64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(params.seed, &[index, 3, u64::from(vault_index)]));
    let now = params.now_ms;
    let signup = now - rng.gen_range(100 * DAY_MS..400 * DAY_MS);
    let mut rows = 0u64;
    let mut change = |out: &mut dyn Write, scope: &str, granted: bool, at: u64| {
        rows += 1;
        writeln!(
            out,
            r#"{{"kind":"consent","vault":"{vault}","subject":"{subject}","scope":"{scope}","granted":{granted},"at_ms":{at}}}"#
        )
    };
    change(out, "personal", true, signup)?;
    match rng.gen_range(0..100u32) {
        // Granted and still in force.
        0..=64 => change(out, "marketing", true, signup)?,
        // Granted, then withdrawn within the window.
        65..=76 => {
            change(out, "marketing", true, signup)?;
            change(out, "marketing", false, now - rng.gen_range(0..80 * DAY_MS))?;
        }
        // Withdrawn, then granted again recently.
        77..=80 => {
            change(out, "marketing", true, signup)?;
            let withdrawn = now - rng.gen_range(40 * DAY_MS..80 * DAY_MS);
            change(out, "marketing", false, withdrawn)?;
            change(
                out,
                "marketing",
                true,
                withdrawn + rng.gen_range(DAY_MS..30 * DAY_MS),
            )?;
        }
        // Never granted marketing.
        _ => {}
    }
    if rng.gen_bool(0.8) {
        change(out, "analytics", true, signup)?;
    }
    if rng.gen_bool(0.35) {
        change(out, "training", true, signup)?;
    }
    let spent = match rng.gen_range(0..100u32) {
        0..=4 => Some(BUDGET_CAPACITY_MICRO),
        5..=14 => Some(rng.gen_range(100_000..900_000u64)),
        _ => None,
    };
    let mut budget_rows = 0;
    if let Some(spent) = spent {
        budget_rows = 1;
        writeln!(
            out,
            r#"{{"kind":"budget","vault":"{vault}","subject":"{subject}","scope":"marketing","capacity_micro":{BUDGET_CAPACITY_MICRO},"spent_micro":{spent}}}"#
        )?;
    }
    Ok((rows, budget_rows))
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("symphony-gen-bounds-{}", std::process::id()));
        let params = |subjects, records| GenerateParams {
            subjects,
            vaults: 2,
            records,
            seed: 1,
            now_ms: 1_795_219_200_000,
        };
        let e = generate(&params(u64::MAX, 1), &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("subjects = 18446744073709551615"), "{e}");
        let e = generate(&params(10, u64::MAX), &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("records ="), "{e}");
        assert!(!dir.exists());
    }
}
