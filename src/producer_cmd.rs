//! Data producers on the command line: `symphony demo parse`, `symphony bench
//! parse`, and `symphony producer upload|consent|budget|earnings|stake|claim`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use symphony_core::consent::UsageScope;
use symphony_core::ids::{ActorId, SubjectId};
use symphony_economics::PolicyParams;
use symphony_node::network::{NetworkParams, Quiet};
use symphony_node::producer::bench::bench_parse;
use symphony_node::producer::corpus::Level;
use symphony_node::producer::demo::{
    add_producer, producer_upload, run_parse_demo, ParseDemoParams, PRODUCER_SUBJECT, SUBMITTERS,
};
use symphony_node::producer::ocr::TesseractCli;
use symphony_node::producer::personal::{
    budget_view, consent_view, earnings, producer_actor_of, set_consent,
};

use crate::{Story, DEMO_NOW_MS};

/// Options of `symphony demo parse`.
#[derive(clap::Args)]
pub struct ParseDemoArgs {
    /// People in the synthetic population (the enterprise Vaults).
    #[arg(long, default_value_t = 2_000)]
    subjects: u64,
    /// Purchase records in total.
    #[arg(long, default_value_t = 20_000)]
    records: u64,
    /// Enterprise nodes (one Vault each); the Personal Vault is hosted by the first.
    #[arg(long, default_value_t = 2)]
    vaults: u32,
    /// Seed of data, keys, receipts and rendering.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Receipts the producer uploads.
    #[arg(long, default_value_t = 6)]
    receipts: usize,
    /// Keep the network's files here (then `symphony producer … --dir DIR`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of the story.
    #[arg(long)]
    json: bool,
}

/// Runs `symphony demo parse`.
pub fn demo_parse(args: ParseDemoArgs) -> Result<()> {
    if !args.json {
        println!(
            "Symphony embedded network — Receipt Upload to Personal Vault ({} receipts, OCR in the Vault enclave)",
            args.receipts
        );
    }
    let mut story = Story::new(args.json);
    // The masters run on the in-process replicator (2-of-3 certificates), not the
    // loopback openraft cluster: closing the epoch by proposal signs with the master
    // keys, which the loopback cluster keeps to itself.
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let params = ParseDemoParams {
        network: NetworkParams {
            subjects: args.subjects,
            vaults: args.vaults,
            records: args.records,
            seed: args.seed,
            now_ms: DEMO_NOW_MS,
        },
        receipts: args.receipts,
    };
    let report = run_parse_demo(&dir, &params, &mut story)?;
    if args.json {
        crate::output::print_json(&report)?;
    } else {
        println!("  receipts uploaded       {}", report.receipts);
        println!(
            "  parse tasks completed   {} (fee {} µSYM: parse is free)",
            report.parsed, report.fee_total
        );
        println!(
            "  fields correct          {:.4} (stored purchases against the rendered records)",
            report.fields_correct
        );
        println!(
            "  records stored          {} (Personal Vault pv-{PRODUCER_SUBJECT}, encrypted)",
            report.stored_records
        );
        println!("  quality scores (bp)     {:?}", report.quality_scores);
        println!(
            "  quality reward          {} µSYM of {} µSYM gross (unstaked: 50%)",
            report.reward_micro_sym, report.reward_gross_micro_sym
        );
        if let Some(r) = &report.duplicate_refused {
            println!("  second photo of receipt 1: {r}");
        }
        println!(
            "  Luckin campaign         {}: {} eligible, {} delivered, producer found: {}",
            report.luckin.state,
            report.luckin.eligible,
            report.luckin.delivered,
            report.luckin.producer_found
        );
        println!(
            "  producer earnings       {} µSYM in {} payments",
            report.earnings.total_net_micro_sym,
            report.earnings.payments.len()
        );
    }
    Ok(())
}

/// Options of `symphony bench parse`.
#[derive(clap::Args)]
pub struct BenchParseArgs {
    /// Receipts per level.
    #[arg(long, default_value_t = 25)]
    receipts: usize,
    /// Seed of the receipts and their rendering.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// One JSON line.
    #[arg(long)]
    json: bool,
}

/// Runs `symphony bench parse`.
pub fn bench(args: BenchParseArgs) -> Result<()> {
    let reports = bench_parse(
        &TesseractCli::default(),
        args.seed,
        args.receipts,
        DEMO_NOW_MS,
        &Level::ALL,
    )?;
    if args.json {
        let levels: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "level": r.level.as_str(),
                    "receipts": r.receipts,
                    "parsed": r.parsed,
                    "field_accuracy": r.field_accuracy,
                    "exact": r.exact,
                    "receipts_per_s": r.receipts_per_s,
                })
            })
            .collect();
        return crate::output::print_bench_json(
            "parse",
            &serde_json::json!({ "seed": args.seed, "levels": levels }),
        );
    }
    println!("bench parse: {} seeded receipts per level, tesseract CLI after deskew, one process per receipt", args.receipts);
    println!(
        "  {:<14} {:>8} {:>7} {:>15} {:>6} {:>11}",
        "level", "receipts", "parsed", "field accuracy", "exact", "receipts/s"
    );
    for r in &reports {
        println!(
            "  {:<14} {:>8} {:>7} {:>15.4} {:>6} {:>11.2}",
            r.level.as_str(),
            r.receipts,
            r.parsed,
            r.field_accuracy,
            r.exact,
            r.receipts_per_s
        );
        for e in &r.errors {
            println!("      refused: {e}");
        }
    }
    Ok(())
}

/// `symphony producer …`.
#[derive(clap::Subcommand)]
pub enum ProducerCmd {
    /// Upload a receipt (PNG, JPEG, PDF or `field: value` text) to the producer's
    /// Personal Vault: a free parse task on a new embedded network in --dir, or on
    /// a devnet (`devnet up --producer-vault`) through the gateway.
    Upload {
        /// The receipt.
        file: PathBuf,
        /// Where to build the network (must not hold one; default: temporary), or
        /// a devnet's directory (then through the gateway, as `producer:alice`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Seed of the network and keys.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Consent per scope with its history; `--grant SCOPE` / `--revoke SCOPE` changes it.
    Consent {
        /// A network directory kept by `demo parse --dir`, or a devnet's directory
        /// (`devnet up --producer-vault`: the gateway's signed consent routes).
        #[arg(long)]
        dir: PathBuf,
        /// personal, marketing, analytics or training.
        #[arg(long, conflicts_with = "revoke")]
        grant: Option<String>,
        /// personal, marketing, analytics or training.
        #[arg(long)]
        revoke: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remaining ε per scope and when it replenishes.
    Budget {
        /// A network directory kept by `demo parse --dir`, or a devnet's directory
        /// (`devnet up --producer-vault`: the gateway's signed budget route).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Sign in to the producer portal (`/explorer/portal/sign-in`): signs the
    /// page's challenge with the producer's key of a devnet; paste the signature
    /// into the page's form.
    SignIn {
        /// The challenge the sign-in page shows (64 hex digits).
        #[arg(long)]
        challenge: String,
        /// A devnet's directory (`devnet up --producer-vault`): the key of `producer:alice`.
        #[arg(long)]
        dir: PathBuf,
        /// The gateway (`host:port`) whose page shows the challenge (default: the
        /// devnet's first gateway).
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Quality rewards and data usage dividends by epoch, balance and stake.
    Earnings {
        /// A network directory kept by `demo parse --dir`, or a devnet's directory
        /// (then the gateway's signed producer routes, as `producer:alice`).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The producer's stake; `--bond` bonds S_producer and registers it in the
    /// masters' actor registry (rewards become 100%; on a devnet only).
    Stake {
        /// A network directory kept by `demo parse --dir`, or a devnet's directory
        /// (then the gateway's signed producer routes, as `producer:alice`).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        bond: bool,
        #[arg(long)]
        json: bool,
    },
    /// Claim the producer's data usage dividends that a Vault committed as one
    /// Merkle distribution (a task with more producers than the direct payout
    /// limit): proves each unclaimed leaf from the kept leaves and submits the
    /// claim to the ledger.
    Claim {
        /// A network directory (holds ledger.redb and settlement.redb).
        #[arg(long)]
        dir: PathBuf,
        /// The producer: a data subject (`s-…`), `producer:<subject>` or its
        /// account `actor:producer:<subject>`.
        #[arg(long)]
        producer: String,
        #[arg(long)]
        json: bool,
    },
}

/// `producer claim --dir DIR --producer P`: claims every unclaimed dividend leaf
/// of `P` in the distributions kept in DIR's settlement store.
fn claim(dir: &Path, producer: &str, json: bool) -> Result<()> {
    use symphony_node::settlement::dividends::{claim_dividends, producer_account};
    let account = producer_account(producer)?;
    let (mut ledger, store) = symphony_node::settlement::reconcile::open_dir(dir)
        .with_context(|| format!("--dir {}", dir.display()))?;
    let report = claim_dividends(&mut ledger, &store, &account)
        .with_context(|| format!("claiming the dividends of {account} in {}", dir.display()))?;
    if json {
        return crate::output::print_json(&report);
    }
    println!(
        "{}: claimed {} µSYM in {} leaf/leaves ({} claimed before), balance {} µSYM",
        report.producer,
        report.total_micro_sym,
        report.claimed.len(),
        report.claimed_before,
        report.balance_micro_sym
    );
    for c in &report.claimed {
        println!(
            "  epoch {:<4} {}  leaf {:<8} {:>12} µSYM  (task {}, {})",
            c.epoch, c.distribution_id, c.index, c.amount_micro_sym, c.task_id, c.vault
        );
    }
    Ok(())
}

fn open_personal_vault(dir: &Path) -> Result<symphony_vault::Vault> {
    let path = dir
        .join("vaults")
        .join(format!("pv-{PRODUCER_SUBJECT}.redb"));
    if !path.exists() {
        bail!(
            "--dir {}: no Personal Vault at {} (keep one with `symphony demo parse --dir DIR`)",
            dir.display(),
            path.display()
        );
    }
    let key = symphony_vault::VaultKey::load(&path.with_extension("key"))
        .with_context(|| format!("{}: the producer's Vault key", path.display()))?;
    let mut entropy = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut entropy))
        .context("OS randomness")?;
    symphony_vault::Vault::open(&path, &key, entropy)
        .with_context(|| format!("opening {}", path.display()))
}

/// The devnet in `dir`, if it holds one (`devnet.json`).
fn devnet_of(dir: &Path) -> Result<Option<symphony_deploy::devnet::DevnetLayout>> {
    if dir.join("devnet.json").exists() {
        Ok(Some(symphony_deploy::devnet::DevnetLayout::load(dir)?))
    } else {
        Ok(None)
    }
}

/// One signed producer route of a devnet, as its producer; the JSON reply.
fn producer_route(
    layout: &symphony_deploy::devnet::DevnetLayout,
    method: &str,
    path: &str,
) -> Result<serde_json::Value> {
    producer_route_with(layout, method, path, Vec::new())
}

/// [`producer_route`] with a request body.
fn producer_route_with(
    layout: &symphony_deploy::devnet::DevnetLayout,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<serde_json::Value> {
    let caller = format!("producer:{}", symphony_deploy::devnet::DEVNET_PRODUCER);
    let client = crate::deploy_cmd::caller_client(layout, &caller)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(client.signed(method, path, body))?;
    if r.status != 200 {
        bail!(
            "{method} {path}: the gateway answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(r.json())
}

/// `producer upload FILE --dir <devnet>`: seals the receipt to the upload key of
/// the enclave hosting the producer's Personal Vault, signs the parse request with
/// the producer's key and posts it; the parse task's JSON.
fn devnet_upload(
    layout: &symphony_deploy::devnet::DevnetLayout,
    bytes: &[u8],
) -> Result<serde_json::Value> {
    use symphony_node::classes::parse::{seal_upload, ParseRequest};
    let key = producer_route(layout, "GET", "/v1/producer/upload-key")?;
    let upload_key: [u8; 32] = hex::decode(key["upload_key"].as_str().unwrap_or_default())
        .ok()
        .and_then(|k| k.try_into().ok())
        .context("the gateway's upload_key is not 32 bytes of hex")?;
    let vault = symphony_core::ids::VaultId::new(key["vault"].as_str().unwrap_or_default())?;
    let mut entropy = [0u8; 44];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut entropy))
        .context("OS randomness")?;
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&entropy[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&entropy[32..]);
    let sealed = seal_upload(&upload_key, bytes, secret, nonce)?;
    let caller = format!("producer:{}", symphony_deploy::devnet::DEVNET_PRODUCER);
    let path = layout
        .caller_key(&caller)
        .with_context(|| format!("the devnet has no key for {caller}"))?;
    let signing = symphony_deploy::config::read_signing_key("producer key", path)?;
    let req = ParseRequest::sign(
        &caller,
        vault,
        SubjectId::new(symphony_deploy::devnet::DEVNET_PRODUCER)?,
        sealed,
        now_ms(),
        &signing,
    )?;
    let body = serde_json::to_vec(&serde_json::json!({
        "parse_request_hex": hex::encode(bcs::to_bytes(&req)?),
    }))?;
    producer_route_with(layout, "POST", "/v1/producer/upload", body)
}

fn print_devnet_earnings(v: &serde_json::Value, json: bool) -> Result<()> {
    if json {
        return crate::output::print_json(v);
    }
    println!(
        "earnings of {}: {} µSYM received, balance {} µSYM, stake {} µSYM ({})",
        v["producer"].as_str().unwrap_or_default(),
        v["total_net_micro_sym"],
        v["balance_micro_sym"],
        v["stake_micro_sym"],
        if v["staked"] == true {
            "staked: 100% of rewards"
        } else {
            "unstaked: 50% of rewards"
        }
    );
    for p in v["payments"].as_array().into_iter().flatten() {
        println!(
            "  epoch {:<4} {:<20} {:>12} µSYM of {:>12} gross  {}",
            p["epoch"],
            p["kind"].as_str().unwrap_or_default(),
            p["net_micro_sym"],
            p["gross_micro_sym"],
            p["reference"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

fn open_ledger(dir: &Path) -> Result<symphony_ledger::RedbLedger> {
    let path = dir.join("ledger.redb");
    if !path.exists() {
        bail!(
            "--dir {}: no ledger.redb (keep one with `symphony demo parse --dir DIR`)",
            dir.display()
        );
    }
    symphony_ledger::RedbLedger::open(&path).with_context(|| format!("opening {}", path.display()))
}

fn scope(name: &str, flag: &str) -> Result<UsageScope> {
    UsageScope::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .with_context(|| {
            format!("{flag} {name:?}: expected personal, marketing, analytics or training")
        })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `symphony producer …`.
/// `producer sign-in --challenge HEX --dir <devnet>`: the producer's signature of
/// the portal's challenge for the gateway's host.
fn sign_in(challenge: &str, dir: &Path, host: Option<String>, json: bool) -> Result<()> {
    let bytes = hex::decode(challenge.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| {
            format!("--challenge {challenge:?}: expected the 64 hex digits the sign-in page shows")
        })?;
    let Some(layout) = devnet_of(dir)? else {
        bail!(
            "--dir {}: not a devnet directory (no devnet.json): the portal signs in with a devnet's producer key",
            dir.display()
        );
    };
    let host = match host {
        Some(h) => h,
        None => layout
            .gateways()
            .first()
            .map(ToString::to_string)
            .context("the devnet has no gateway")?,
    };
    let caller = format!("producer:{}", symphony_deploy::devnet::DEVNET_PRODUCER);
    let path = layout
        .caller_key(&caller)
        .with_context(|| format!("the devnet has no key for {caller}"))?;
    let key = symphony_deploy::config::read_signing_key("producer key", path)?;
    let signature = hex::encode(symphony_deploy::gateway::explorer::sign_in_signature(
        &key, &bytes, &host,
    ));
    if json {
        return crate::output::print_json(&serde_json::json!({
            "caller": caller,
            "host": host.to_ascii_lowercase(),
            "challenge": hex::encode(bytes),
            "signature": signature,
        }));
    }
    println!("caller    {caller}");
    println!("host      {}", host.to_ascii_lowercase());
    println!("signature {signature}");
    Ok(())
}

pub fn run(cmd: ProducerCmd) -> Result<()> {
    let subject = SubjectId::new(PRODUCER_SUBJECT)?;
    let producer = producer_actor_of(PRODUCER_SUBJECT)?;
    match cmd {
        ProducerCmd::Claim {
            dir,
            producer,
            json,
        } => claim(&dir, &producer, json),
        ProducerCmd::SignIn {
            challenge,
            dir,
            host,
            json,
        } => sign_in(&challenge, &dir, host, json),
        ProducerCmd::Upload {
            file,
            dir,
            seed,
            json,
        } => upload(file, dir, seed, json),
        ProducerCmd::Consent {
            dir,
            grant,
            revoke,
            json,
        } => consent(dir, grant, revoke, json, &subject, &producer),
        ProducerCmd::Budget { dir, json } => budget(dir, json, &subject, &producer),
        ProducerCmd::Earnings { dir, json } => earnings_cmd(dir, json, &producer),
        ProducerCmd::Stake { dir, bond, json } => stake(dir, bond, json, &producer),
    }
}

/// `symphony producer upload`.
fn upload(file: PathBuf, dir: Option<PathBuf>, seed: u64, json: bool) -> Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    if let Some(layout) = dir.as_deref().map(devnet_of).transpose()?.flatten() {
        let v = devnet_upload(&layout, &bytes)?;
        if json {
            crate::output::print_json(&v)?;
        } else {
            let states: Vec<&str> = v["states"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            println!(
                "parse task {} on {}: {}",
                v["task_id"].as_str().unwrap_or_default(),
                v["vault"].as_str().unwrap_or_default(),
                states.join(" → ")
            );
            match v["reason"].as_str() {
                Some(r) => println!("  refused: {r} (nothing stored)"),
                None => println!(
                    "  stored: fields {}; quality {} bp; fee {}",
                    v["fields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    v["quality_score_bp"],
                    v["fee_total"]
                ),
            }
        }
        if v["states"].as_array().and_then(|a| a.last()) != Some(&"completed".into()) {
            std::process::exit(3);
        }
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    if dir.join("ledger.redb").exists() {
        bail!(
            "--dir {}: already holds a network; upload builds a new one",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir)?;
    let params = NetworkParams {
        subjects: 400,
        vaults: 2,
        records: 4_000,
        seed,
        now_ms: DEMO_NOW_MS,
    };
    let mut net =
        symphony_node::network::EmbeddedNetwork::build(&dir, &params, &SUBMITTERS, &mut Quiet)?;
    let pv = add_producer(&mut net, &dir, DEMO_NOW_MS, &mut Quiet)?;
    let req = producer_upload(&net, pv, &bytes, 1, seed)?;
    let out = net.run_parse(&req, &mut Quiet)?;
    if json {
        crate::output::print_json(&out)?;
    } else {
        println!("parse task {}: {}", out.task_id, out.states.join(" → "));
        match (&out.reason, &out.quality) {
            (Some(r), _) => println!("  refused: {r} (nothing stored)"),
            (None, Some(q)) => println!(
                "  stored in pv-{PRODUCER_SUBJECT}: fields {}; quality {} bp (parsability {}, completeness {}, freshness {}, non-duplication {}, domain demand {}); fee {}",
                out.fields.join(", "), q.score_bp, q.parsability_bp, q.completeness_bp, q.freshness_bp, q.non_duplication_bp, q.domain_demand_bp, out.fee_total
            ),
            _ => {}
        }
    }
    if out.states.last().map(String::as_str) != Some("completed") {
        std::process::exit(3);
    }
    Ok(())
}

/// `symphony producer consent`.
fn consent(
    dir: PathBuf,
    grant: Option<String>,
    revoke: Option<String>,
    json: bool,
    subject: &SubjectId,
    producer: &ActorId,
) -> Result<()> {
    if let Some(layout) = devnet_of(&dir)? {
        let change = match (&grant, &revoke) {
            (Some(s), _) => Some((scope(s, "--grant")?, "grant")),
            (_, Some(s)) => Some((scope(s, "--revoke")?, "revoke")),
            _ => None,
        };
        let v = match change {
            Some((s, action)) => producer_route_with(
                &layout,
                "POST",
                "/v1/producer/consent",
                serde_json::to_vec(&serde_json::json!({"scope": s.as_str(), "action": action}))?,
            )?,
            None => producer_route(&layout, "GET", "/v1/producer/consent")?,
        };
        if json {
            return crate::output::print_json(&v);
        }
        println!(
            "consent of {} in {} at {} ms (revocation blocks new tasks, not settled work)",
            v["producer"].as_str().unwrap_or_default(),
            v["vault"].as_str().unwrap_or_default(),
            v["at_ms"]
        );
        for c in v["scopes"].as_array().into_iter().flatten() {
            let hist: Vec<String> = c["history"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    format!(
                        "{} at {} ms",
                        h["change"].as_str().unwrap_or_default(),
                        h["at_ms"]
                    )
                })
                .collect();
            println!(
                "  {:<10} {:<8} {}",
                c["scope"].as_str().unwrap_or_default(),
                if c["granted"] == true {
                    "granted"
                } else {
                    "no"
                },
                hist.join(", ")
            );
        }
        return Ok(());
    }
    let vault = open_personal_vault(&dir)?;
    let at = now_ms();
    if let Some(s) = &grant {
        set_consent(&vault, subject, scope(s, "--grant")?, true, at)?;
    }
    if let Some(s) = &revoke {
        set_consent(&vault, subject, scope(s, "--revoke")?, false, at)?;
    }
    let view = consent_view(&vault, subject, at)?;
    if json {
        crate::output::print_json(&view)?;
    } else {
        println!("consent of {producer} in pv-{PRODUCER_SUBJECT} (revocation blocks new tasks, not settled work)");
        for c in &view {
            let hist: Vec<String> = c
                .history
                .iter()
                .map(|h| format!("{} at {} ms", h.change, h.at_ms))
                .collect();
            println!(
                "  {:<10} {:<8} {}",
                c.scope,
                if c.granted { "granted" } else { "no" },
                hist.join(", ")
            );
        }
    }
    Ok(())
}

/// `symphony producer budget`.
fn budget(dir: PathBuf, json: bool, subject: &SubjectId, producer: &ActorId) -> Result<()> {
    if let Some(layout) = devnet_of(&dir)? {
        let v = producer_route(&layout, "GET", "/v1/producer/budget")?;
        if json {
            return crate::output::print_json(&v);
        }
        println!(
            "privacy budget of {} in {} (ε per scope; epoch {} in force, replenished when epoch {} opens, at the latest at {} ms)",
            v["producer"].as_str().unwrap_or_default(),
            v["vault"].as_str().unwrap_or_default(),
            v["epoch"],
            v["replenishes_at_epoch"],
            v["epoch_closes_at_ms"]
        );
        println!(
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "scope", "capacity", "reserved", "committed", "remaining", "+ per epoch"
        );
        for b in v["scopes"].as_array().into_iter().flatten() {
            let f = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            println!(
                "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>12}",
                f("scope"),
                f("capacity"),
                f("reserved"),
                f("committed"),
                f("remaining"),
                f("replenishes_per_epoch")
            );
        }
        return Ok(());
    }
    let vault = open_personal_vault(&dir)?;
    let view = budget_view(&vault, subject, &PolicyParams::default_v1())?;
    if json {
        crate::output::print_json(&view)?;
    } else {
        let epoch_ms = PolicyParams::default_v1().epochs.epoch_length_ms;
        println!(
            "privacy budget of {producer} (ε per scope; replenished once at the close of the current epoch, every {} min under policy v1)",
            epoch_ms / 60_000
        );
        println!(
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "scope", "capacity", "reserved", "committed", "remaining", "+ per epoch"
        );
        for b in &view {
            println!(
                "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>12}",
                b.scope, b.capacity, b.reserved, b.committed, b.remaining, b.replenishes_per_epoch
            );
        }
    }
    Ok(())
}

/// `symphony producer earnings`.
fn earnings_cmd(dir: PathBuf, json: bool, producer: &ActorId) -> Result<()> {
    if let Some(layout) = devnet_of(&dir)? {
        let v = producer_route(&layout, "GET", "/v1/producer/earnings")?;
        return print_devnet_earnings(&v, json);
    }
    let ledger = open_ledger(&dir)?;
    // A kept embedded directory has a ledger but no masters: no actor
    // registry entry (stakes are registered through running masters).
    let e = earnings(
        &ledger,
        &symphony_node::producer::personal::ActorRegistry::default(),
        &PolicyParams::default_v1(),
        producer,
    )?;
    if json {
        crate::output::print_json(&e)?;
    } else {
        println!(
            "earnings of {producer}: {} µSYM received, balance {} µSYM, stake {} µSYM ({})",
            e.total_net_micro_sym,
            e.balance_micro_sym,
            e.stake_micro_sym,
            if e.staked {
                "staked: 100% of rewards"
            } else {
                "unstaked: 50% of rewards"
            }
        );
        for p in &e.payments {
            println!(
                "  epoch {:<4} {:<20} {:>12} µSYM of {:>12} gross  {}",
                p.epoch, p.kind, p.net_micro_sym, p.gross_micro_sym, p.reference
            );
        }
    }
    Ok(())
}

/// `symphony producer stake`.
fn stake(dir: PathBuf, bond: bool, json: bool, producer: &ActorId) -> Result<()> {
    if let Some(layout) = devnet_of(&dir)? {
        let method = if bond { "POST" } else { "GET" };
        let v = producer_route(&layout, method, "/v1/producer/stake")?;
        if json {
            crate::output::print_json(&v)?;
        } else {
            println!(
                "{}: stake {} µSYM in the actor registry ({}), {} µSYM on the staking contract, balance {} µSYM",
                v["producer"].as_str().unwrap_or_default(),
                v["stake_micro_sym"],
                if v["staked"] == true {
                    "S_producer held: rewards 100%"
                } else {
                    "no S_producer: rewards 50%"
                },
                v["ledger_bonded_micro_sym"],
                v["balance_micro_sym"]
            );
        }
        return Ok(());
    }
    let ledger = open_ledger(&dir)?;
    if bond {
        bail!(
            "--bond: S_producer is bonded on the staking contract and registered in the \
             masters' actor registry (the quality reward rule reads it); {} is a kept \
             embedded network with no masters running",
            dir.display()
        );
    }
    let e = earnings(
        &ledger,
        &symphony_node::producer::personal::ActorRegistry::default(),
        &PolicyParams::default_v1(),
        producer,
    )?;
    let v = serde_json::json!({
        "producer": producer.to_string(),
        "stake_micro_sym": e.stake_micro_sym,
        "staked": e.staked,
        "s_producer_micro_sym": PolicyParams::default_v1().staking.s_producer_micro_sym,
        "balance_micro_sym": e.balance_micro_sym,
        "ledger_bonded_micro_sym": e.ledger_bonded_micro_sym,
    });
    if json {
        crate::output::print_json(&v)?;
    } else {
        println!(
            "{producer}: stake {} µSYM ({}), balance {} µSYM",
            e.stake_micro_sym,
            if e.staked {
                "S_producer held: rewards 100%"
            } else {
                "no S_producer: rewards 50%"
            },
            e.balance_micro_sym
        );
    }
    Ok(())
}
