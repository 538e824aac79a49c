//! `symphony demo parse`: the "Receipt Upload to Personal Vault" scenario on the
//! embedded network. A producer's Personal Vault is created on an enterprise node;
//! receipts are rendered from seeded records (the ground truth), uploaded as
//! images sealed to the Vault enclave, read by OCR inside it and stored encrypted
//! (free `parse` tasks); the epoch closes and the Vault pays the producer's data
//! quality rewards; then the Luckin campaign runs and finds the producer when they
//! are eligible, and pays their data usage dividend.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use symphony_core::consent::UsageScope;
use symphony_core::ids::SubjectId;
use symphony_economics::quality::QualityParams;
use symphony_vault::record::{Purchase, Record};

use super::corpus::{generate_receipts, png_bytes, render, Level};
use super::personal::{producer_actor_of, Earnings, ProducerProfile};
use super::receipt::ReceiptRecord;
use crate::aggregation::SelectionPolicy;
use crate::classes::parse::{seal_upload, ParseRequest};
use crate::network::{
    advertiser_key, CampaignOutcome, CampaignSpec, EmbeddedNetwork, NetworkParams, Observer,
    SignedRequest,
};
use crate::NodeError;

/// The advertiser of the demo's campaign.
pub const ADVERTISER: &str = "advertiser:luckin";
/// The foundation account that funds the treasury's quality-reward budget.
pub const FOUNDATION: &str = "foundation:rewards";
/// The demo's producer (subject id; actor `producer:alice`).
pub const PRODUCER_SUBJECT: &str = "alice";
/// The producer's contact handle.
pub const PRODUCER_CONTACT: &str = "+6581234567";
/// What the foundation deposits into the treasury for quality rewards, µSYM.
pub const QUALITY_FUND_MICRO_SYM: u64 = 10_000 * 1_000_000;

/// Parameters of the demo.
#[derive(Clone, Debug)]
pub struct ParseDemoParams {
    /// The network (people, Vaults, records, seed, now).
    pub network: NetworkParams,
    /// Receipts the producer uploads (the first is a recent Luckin Coffee purchase
    /// in Singapore, so the campaign can find them).
    pub receipts: usize,
}

/// One parse task of the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParseTaskReport {
    /// The task.
    pub task_id: String,
    /// Its lifecycle states.
    pub states: Vec<String>,
    /// Why it was rejected, if it was.
    pub reason: Option<String>,
    /// The degradation level of the uploaded image.
    pub level: Level,
    /// Quality score, bp.
    pub quality_score_bp: Option<u16>,
    /// Fee (parse is free).
    pub fee_total: u64,
}

/// What the demo printed (`--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParseDemoReport {
    /// Receipts rendered and uploaded.
    pub receipts: usize,
    /// Parse tasks that completed.
    pub parsed: usize,
    /// Fields of the stored purchases equal to the ground truth / fields uploaded
    /// (brand, category, amount, currency, time, city, country per receipt; a
    /// receipt not stored counts all its fields wrong).
    pub fields_correct: f64,
    /// Purchases in the Personal Vault after the uploads.
    pub stored_records: usize,
    /// Quality score of each stored record, bp.
    pub quality_scores: Vec<u16>,
    /// Data quality reward the producer received for the epoch, µSYM (after the
    /// staking multiplier: the demo's producer is unstaked, so 50%).
    pub reward_micro_sym: u64,
    /// Gross quality reward, µSYM.
    pub reward_gross_micro_sym: u64,
    /// Each parse task.
    pub parse_tasks: Vec<ParseTaskReport>,
    /// Σ fees of the parse tasks (0: parse is free).
    pub fee_total: u64,
    /// A duplicate upload of the first receipt (another photo of it): refused.
    pub duplicate_refused: Option<String>,
    /// The Luckin campaign after the uploads.
    pub luckin: LuckinReport,
    /// The producer's earnings (quality rewards and dividends, by epoch).
    pub earnings: Earnings,
}

/// The Luckin campaign's view in the demo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LuckinReport {
    /// The task.
    pub task_id: String,
    /// Final state.
    pub state: String,
    /// Eligible across Vaults.
    pub eligible: u64,
    /// Delivered.
    pub delivered: u64,
    /// Whether the producer's handle was delivered.
    pub producer_found: bool,
    /// Fee.
    pub fee_total: u64,
}

/// The Luckin campaign in Singapore of the demo.
pub fn luckin_spec() -> CampaignSpec {
    CampaignSpec {
        advertiser: ADVERTISER.into(),
        brand: "Luckin Coffee".into(),
        country: "SG".into(),
        city: None,
        window_days: 30,
        audience_cap: 5_000,
        selection: SelectionPolicy::RandomSampling,
        usage_scope: UsageScope::Marketing,
        selection_seed: 7,
        minimum_vault_quorum: None,
    }
}

/// `n` receipts of the producer: the first a Luckin Coffee purchase in Singapore
/// within the last 20 days, the rest drawn from the corpus.
pub fn producer_receipts(seed: u64, n: usize, now_ms: u64) -> Vec<ReceiptRecord> {
    let pool = generate_receipts(seed, 400, now_ms);
    let window_ms = 20 * 86_400_000;
    let luckin = pool.iter().find(|r| {
        r.merchant == "Luckin Coffee"
            && r.store_country == "SG"
            && now_ms.saturating_sub(r.time_ms) < window_ms
    });
    let mut out: Vec<ReceiptRecord> = luckin.into_iter().cloned().collect();
    let first = out.first().cloned();
    out.extend(pool.into_iter().filter(|r| Some(r) != first.as_ref()));
    out.truncate(n);
    out
}

fn purchase_fields_matching(stored: &Purchase, truth: &Purchase) -> usize {
    [
        stored.brand == truth.brand,
        stored.category == truth.category,
        stored.amount_minor == truth.amount_minor,
        stored.currency == truth.currency,
        stored.ts_ms == truth.ts_ms,
        stored.store_city == truth.store_city,
        stored.store_country == truth.store_country,
    ]
    .iter()
    .filter(|b| **b)
    .count()
}

/// Signs and seals one upload of the producer to their Personal Vault.
pub fn producer_upload(
    net: &EmbeddedNetwork,
    vault_index: usize,
    bytes: &[u8],
    nonce: u64,
    seed: u64,
) -> Result<ParseRequest, NodeError> {
    let pv = net
        .enterprises
        .get(vault_index)
        .ok_or_else(|| NodeError::Refused(format!("no Vault at index {vault_index}")))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ nonce.rotate_left(17));
    let sealed = seal_upload(&pv.upload_key(), bytes, rng.gen(), rng.gen())?;
    let actor = producer_actor_of(PRODUCER_SUBJECT)?;
    ParseRequest::sign(
        actor.as_str(),
        pv.vault_id().clone(),
        SubjectId::new(PRODUCER_SUBJECT).map_err(|e| NodeError::Refused(e.to_string()))?,
        sealed,
        nonce,
        &advertiser_key(seed, actor.as_str()),
    )
}

/// Builds the network with the producer's Personal Vault on enterprise node 0.
pub fn build_network(
    dir: &Path,
    network: &NetworkParams,
    obs: &mut dyn Observer,
) -> Result<(EmbeddedNetwork, usize), NodeError> {
    let mut net = EmbeddedNetwork::build(dir, network, &SUBMITTERS, obs)?;
    let pv = add_producer(&mut net, dir, network.now_ms, obs)?;
    Ok((net, pv))
}

/// The submitters the demo's network registers: the advertiser, the producer and
/// the foundation (which funds the quality-reward budget).
pub const SUBMITTERS: [&str; 3] = [ADVERTISER, "producer:alice", FOUNDATION];

/// Adds the demo producer's Personal Vault (in `dir/vaults`) on enterprise node 0;
/// returns its index among the network's enterprise nodes.
pub fn add_producer(
    net: &mut EmbeddedNetwork,
    dir: &Path,
    now_ms: u64,
    obs: &mut dyn Observer,
) -> Result<usize, NodeError> {
    let producer = producer_actor_of(PRODUCER_SUBJECT)?;
    std::fs::create_dir_all(dir.join("vaults")).map_err(|e| NodeError::Io(e.to_string()))?;
    net.add_personal_vault(
        dir,
        &ProducerProfile {
            subject: PRODUCER_SUBJECT.into(),
            contact: PRODUCER_CONTACT.into(),
            home_city: "Singapore".into(),
            home_country: "SG".into(),
            consents: vec![UsageScope::Marketing, UsageScope::Analytics],
        },
        0,
        now_ms,
    )?;
    obs.step(
        "personal-vault",
        &format!(
            "pv-{PRODUCER_SUBJECT} created for {producer}, hosted by {}",
            net.enterprises[0].vault_id()
        ),
    );
    Ok(net.enterprises.len() - 1)
}

/// Runs the Luckin campaign (nonce `nonce`) and reports whether the producer was found.
pub fn run_luckin(
    net: &mut EmbeddedNetwork,
    seed: u64,
    nonce: u64,
    obs: &mut dyn Observer,
) -> Result<(CampaignOutcome, LuckinReport), NodeError> {
    let req = SignedRequest::sign(luckin_spec(), nonce, &advertiser_key(seed, ADVERTISER))?;
    let out = net.run_campaign(&req, obs)?;
    let report = LuckinReport {
        task_id: out.task_id.clone(),
        state: out.states.last().cloned().unwrap_or_default(),
        eligible: out.eligible_count,
        delivered: out.delivered_count,
        producer_found: out.audience.iter().any(|h| h == PRODUCER_CONTACT),
        fee_total: out.fee_total,
    };
    Ok((out, report))
}

/// The purchases stored in the producer's Personal Vault (read with their key).
pub fn stored_purchases(net: &EmbeddedNetwork, pv: usize) -> Result<Vec<Purchase>, NodeError> {
    let subject =
        SubjectId::new(PRODUCER_SUBJECT).map_err(|e| NodeError::Refused(e.to_string()))?;
    Ok(net.enterprises[pv]
        .vault()
        .subject_records(&subject)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Purchase(p) => Some(p),
            Record::Receipt(r) => Some(r.purchase),
            _ => None,
        })
        .collect())
}

/// Runs the whole scenario.
pub fn run_parse_demo(
    dir: &Path,
    params: &ParseDemoParams,
    obs: &mut dyn Observer,
) -> Result<ParseDemoReport, NodeError> {
    let (mut net, pv) = build_network(dir, &params.network, obs)?;
    run_scenario(&mut net, pv, params, obs)
}

/// The scenario on a network that has the producer's Personal Vault at `pv`.
pub fn run_scenario(
    net: &mut EmbeddedNetwork,
    pv: usize,
    params: &ParseDemoParams,
    obs: &mut dyn Observer,
) -> Result<ParseDemoReport, NodeError> {
    let seed = params.network.seed;
    let now_ms = params.network.now_ms;
    let receipts = producer_receipts(seed, params.receipts, now_ms);
    let levels = [Level::Clean, Level::MildRotation, Level::MildBlur];
    let mut tasks = Vec::new();
    let mut matched = 0usize;
    let mut fields = 0usize;
    let mut scores = Vec::new();
    let mut epoch = 0u64;
    for (i, truth) in receipts.iter().enumerate() {
        let level = levels[i % levels.len()];
        let png = png_bytes(&render(truth, level, seed.wrapping_add(i as u64))?)?;
        let before = stored_purchases(net, pv)?;
        let req = producer_upload(net, pv, &png, i as u64 + 1, seed)?;
        let out = net.run_parse(&req, obs)?;
        let after = stored_purchases(net, pv)?;
        let stored = after.iter().find(|p| !before.contains(p));
        fields += 7;
        if let Some(p) = stored {
            matched += purchase_fields_matching(p, &truth.to_purchase());
        }
        if let Some(q) = &out.quality {
            scores.push(q.score_bp);
        }
        epoch = out.epoch_id;
        obs.step(
            "parse",
            &format!(
                "receipt {} ({}, {}): {}{}",
                i + 1,
                truth.merchant,
                level.as_str(),
                out.states.last().map(String::as_str).unwrap_or("?"),
                out.quality
                    .as_ref()
                    .map(|q| format!(", quality {} bp", q.score_bp))
                    .unwrap_or_default()
            ),
        );
        tasks.push(ParseTaskReport {
            task_id: out.task_id,
            states: out.states,
            reason: out.reason,
            level,
            quality_score_bp: out.quality.map(|q| q.score_bp),
            fee_total: out.fee_total,
        });
    }
    // Another photo of the first receipt: recognised as a duplicate.
    let duplicate_refused = match receipts.first() {
        Some(first) => {
            let png = png_bytes(&render(first, Level::MildRotation, seed ^ 0xd0d0)?)?;
            let req = producer_upload(net, pv, &png, receipts.len() as u64 + 1, seed)?;
            let out = net.run_parse(&req, obs)?;
            out.reason
        }
        None => None,
    };
    let stored_records = stored_purchases(net, pv)?.len();
    // The epoch closes; the Vault pays its producers' quality rewards from the
    // treasury, which the foundation funded.
    let foundation = crate::settlement::actor_account(
        &symphony_core::ids::ActorId::new(FOUNDATION)
            .map_err(|e| NodeError::Refused(e.to_string()))?,
    )?;
    net.master
        .ledger
        .deposit_treasury(&foundation, QUALITY_FUND_MICRO_SYM)
        .map_err(|e| NodeError::Ledger(e.to_string()))?;
    let closed = net.close_epoch()?;
    let payout = {
        let EmbeddedNetwork {
            master,
            enterprises,
            ..
        } = net;
        master.pay_quality_rewards(
            enterprises[pv].vault(),
            closed.closed,
            &QualityParams::default_v1(),
        )?
    };
    let _ = epoch;
    let producer = producer_actor_of(PRODUCER_SUBJECT)?;
    let reward_micro_sym = net
        .master
        .producer_earnings(&producer)?
        .payments
        .iter()
        .filter(|p| p.kind == "data_quality_reward")
        .map(|p| p.net_micro_sym)
        .sum();
    obs.step(
        "quality-rewards",
        &format!(
            "epoch {}: {} records scored, {} µSYM gross, {} µSYM to {producer} (unstaked: 50%)",
            closed.closed.0, payout.records, payout.gross_micro_sym, reward_micro_sym
        ),
    );
    let (_, luckin) = run_luckin(net, seed, 1, obs)?;
    obs.step(
        "luckin",
        &format!(
            "{}: {} eligible, {} delivered, producer found: {}",
            luckin.state, luckin.eligible, luckin.delivered, luckin.producer_found
        ),
    );
    let earnings = net.master.producer_earnings(&producer)?;
    Ok(ParseDemoReport {
        receipts: receipts.len(),
        parsed: tasks
            .iter()
            .filter(|t| t.states.last().map(String::as_str) == Some("completed"))
            .count(),
        fields_correct: matched as f64 / fields.max(1) as f64,
        stored_records,
        quality_scores: scores,
        reward_micro_sym,
        reward_gross_micro_sym: payout.gross_micro_sym,
        fee_total: tasks.iter().map(|t| t.fee_total).sum(),
        parse_tasks: tasks,
        duplicate_refused,
        luckin,
        earnings,
    })
}
