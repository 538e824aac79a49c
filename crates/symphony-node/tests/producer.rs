//! Data producers on the embedded network: receipt images uploaded to a Personal
//! Vault and read by OCR inside its enclave (free parse tasks), duplicates and
//! unreadable receipts refused with nothing stored, quality rewards paid at the
//! epoch's close (50% unstaked, 100% staked), the producer found by the Luckin
//! campaign while consenting and excluded after revoking marketing consent, with
//! the dividends of earlier tasks still in their earnings.

use symphony_core::consent::UsageScope;
use symphony_core::ids::SubjectId;
use symphony_economics::quality::QualityParams;
use symphony_economics::PolicyParams;
use symphony_node::network::{EmbeddedNetwork, NetworkParams, Quiet};
use symphony_node::producer::corpus::{png_bytes, render, Level};
use symphony_node::producer::demo::{
    build_network, producer_receipts, producer_upload, run_luckin, run_parse_demo,
    stored_purchases, ParseDemoParams, FOUNDATION, PRODUCER_SUBJECT,
};
use symphony_node::producer::personal::{
    budget_view, consent_view, producer_actor_of, set_consent,
};

const NOW_MS: u64 = 1_795_219_200_000;
const FORWARD: [&str; 6] = [
    "accepted",
    "resolving",
    "dispatched",
    "verifying",
    "awaiting_settlement",
    "completed",
];

fn params(seed: u64) -> NetworkParams {
    NetworkParams {
        subjects: 600,
        vaults: 2,
        records: 6_000,
        seed,
        now_ms: NOW_MS,
    }
}

fn subject() -> SubjectId {
    SubjectId::new(PRODUCER_SUBJECT).unwrap()
}

fn upload(
    net: &mut EmbeddedNetwork,
    pv: usize,
    png: &[u8],
    nonce: u64,
    seed: u64,
) -> symphony_node::classes::parse::ParseOutcome {
    let req = producer_upload(net, pv, png, nonce, seed).unwrap();
    net.run_parse(&req, &mut Quiet).unwrap()
}

#[test]
fn receipt_images_are_parsed_into_the_personal_vault_and_duplicates_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 21;
    let (mut net, pv) = build_network(dir.path(), &params(seed), &mut Quiet).unwrap();
    assert_eq!(net.enterprises[pv].vault_id().as_str(), "pv-alice");
    assert!(
        dir.path().join("vaults/pv-alice.key").exists(),
        "the producer holds the key"
    );
    let receipts = producer_receipts(seed, 2, NOW_MS);
    let png = png_bytes(&render(&receipts[0], Level::MildRotation, 1).unwrap()).unwrap();
    let out = upload(&mut net, pv, &png, 1, seed);
    assert_eq!(out.states, FORWARD, "{:?}", out.reason);
    assert_eq!(out.fee_total, 0);
    let q = out.quality.clone().unwrap();
    assert!(
        q.score_bp > 5_000 && q.non_duplication_bp == 10_000,
        "{q:?}"
    );
    let stored = stored_purchases(&net, pv).unwrap();
    assert_eq!(
        stored,
        vec![receipts[0].to_purchase()],
        "stored = ground truth"
    );
    // The Vault keeps the receipt's line items with its purchase.
    let kept: Vec<_> = net.enterprises[pv]
        .vault()
        .subject_records(&subject())
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            symphony_vault::Record::Receipt(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        kept,
        vec![receipts[0].to_receipt()],
        "line items = ground truth"
    );
    assert!(!kept[0].items.is_empty());
    // Another photo of the same receipt (other bytes): a duplicate, nothing stored.
    let again = png_bytes(&render(&receipts[0], Level::MildBlur, 2).unwrap()).unwrap();
    assert_ne!(again, png);
    let out = upload(&mut net, pv, &again, 2, seed);
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    let reason = out.reason.unwrap_or_default();
    assert!(reason.contains("duplicate upload"), "{reason}");
    assert_eq!(stored_purchases(&net, pv).unwrap().len(), 1);
    // An image without a receipt: refused naming what is missing, nothing stored.
    let blank = png_bytes(&image::GrayImage::from_pixel(400, 300, image::Luma([255]))).unwrap();
    let out = upload(&mut net, pv, &blank, 3, seed);
    assert_eq!(out.states.last().map(String::as_str), Some("rejected"));
    assert!(out.reason.unwrap_or_default().contains("receipt"));
    // A receipt whose items do not add up to its total: refused, nothing stored.
    let mut wrong = receipts[1].clone();
    wrong.total_minor += 100;
    let png = png_bytes(&render(&wrong, Level::Clean, 3).unwrap()).unwrap();
    let out = upload(&mut net, pv, &png, 4, seed);
    let reason = out.reason.unwrap_or_default();
    assert!(reason.contains("the items add up to"), "{reason}");
    assert_eq!(stored_purchases(&net, pv).unwrap().len(), 1);
    // The masters never saw the receipt.
    let snapshot = net.master.masters.state().snapshot().unwrap();
    assert!(!snapshot
        .windows(receipts[0].merchant.len())
        .any(|w| w == receipts[0].merchant.as_bytes()));
}

#[test]
fn quality_rewards_are_half_unstaked_and_whole_staked() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 22;
    let (mut net, pv) = build_network(dir.path(), &params(seed), &mut Quiet).unwrap();
    let producer = producer_actor_of(PRODUCER_SUBJECT).unwrap();
    let foundation = symphony_node::settlement::actor_account(
        &symphony_core::ids::ActorId::new(FOUNDATION).unwrap(),
    )
    .unwrap();
    net.master
        .ledger
        .deposit_treasury(&foundation, 1_000_000_000)
        .unwrap();
    let receipts = producer_receipts(seed, 4, NOW_MS);
    let pay_epoch = |net: &mut EmbeddedNetwork,
                     batch: &[symphony_node::producer::receipt::ReceiptRecord],
                     first_nonce: u64| {
        let mut scores = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            let png = png_bytes(&render(r, Level::Clean, i as u64).unwrap()).unwrap();
            let out = upload(net, pv, &png, first_nonce + i as u64, seed);
            let q = out
                .quality
                .unwrap_or_else(|| panic!("receipt {i}: {:?}", out.reason));
            scores.push(q.score_bp);
        }
        let closed = net.close_epoch().unwrap();
        let EmbeddedNetwork {
            master,
            enterprises,
            ..
        } = net;
        let paid = master
            .pay_quality_rewards(
                enterprises[pv].vault(),
                closed.closed,
                &QualityParams::default_v1(),
            )
            .unwrap();
        // Paying again is a no-op (payout id per Vault and epoch).
        master
            .pay_quality_rewards(
                enterprises[pv].vault(),
                closed.closed,
                &QualityParams::default_v1(),
            )
            .unwrap();
        let expected: u64 = scores
            .iter()
            .map(|s| {
                QualityParams::default_v1().reward_per_record_micro_sym * u64::from(*s) / 10_000
            })
            .sum();
        assert_eq!(paid.gross_micro_sym, expected);
        (closed.closed.0, expected, paid)
    };
    let (e0, gross0, paid0) = pay_epoch(&mut net, &receipts[..2], 1);
    assert_eq!(paid0.producers.len(), 1);
    assert!(!paid0.producers[0].staked, "{paid0:?}");
    assert_eq!(paid0.producers[0].net_micro_sym, gross0 / 2);
    // Bonded on the staking contract but not registered with the masters (as
    // after a crash between the two): the reward rule reads the registry, sees
    // the disagreement, names the producer and pays nothing.
    let account = symphony_node::producer::personal::producer_account(PRODUCER_SUBJECT).unwrap();
    let s_producer = PolicyParams::default_v1().staking.s_producer_micro_sym;
    net.master
        .ledger
        .bond(&account, symphony_ledger::StakeTier::Producer, s_producer)
        .unwrap();
    let balance = net.master.ledger.balance(&account);
    {
        let EmbeddedNetwork {
            master,
            enterprises,
            ..
        } = &mut net;
        let e = master
            .pay_quality_rewards(
                enterprises[pv].vault(),
                symphony_core::ids::EpochId(e0),
                &QualityParams::default_v1(),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("producer:alice") && e.contains("actor registry says not staked"),
            "{e}"
        );
    }
    assert!(!net.master.producer_earnings(&producer).unwrap().staked);
    // Registering finishes it without bonding twice.
    assert_eq!(net.master.producer_stake(&producer).unwrap(), s_producer);
    assert_eq!(net.master.ledger.balance(&account), balance);
    assert!(net
        .master
        .masters
        .state()
        .governance()
        .registry
        .holds_producer_stake(&producer, s_producer));
    let e = net
        .master
        .producer_stake(&producer)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already in the actor registry"), "{e}");
    let (e1, gross1, paid1) = pay_epoch(&mut net, &receipts[2..], 10);
    assert!(paid1.producers[0].staked);
    assert_eq!(paid1.producers[0].net_micro_sym, gross1);
    let earned = net.master.producer_earnings(&producer).unwrap();
    let quality: Vec<_> = earned
        .payments
        .iter()
        .filter(|p| p.kind == "data_quality_reward")
        .collect();
    assert_eq!(quality.len(), 2, "{earned:?}");
    assert_eq!((quality[0].epoch, quality[0].gross_micro_sym), (e0, gross0));
    assert_eq!(quality[0].net_micro_sym, gross0 / 2, "unstaked: 50%");
    assert_eq!(
        (quality[1].epoch, quality[1].net_micro_sym),
        (e1, gross1),
        "staked: 100%"
    );
    assert!(earned.staked);
    assert_eq!(
        earned.stake_micro_sym,
        PolicyParams::default_v1().staking.s_producer_micro_sym
    );
}

#[test]
fn revoking_marketing_consent_excludes_the_producer_from_the_next_campaign_and_keeps_dividends() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 23;
    let (mut net, pv) = build_network(dir.path(), &params(seed), &mut Quiet).unwrap();
    let receipts = producer_receipts(seed, 1, NOW_MS);
    let png = png_bytes(&render(&receipts[0], Level::Clean, 0).unwrap()).unwrap();
    let out = upload(&mut net, pv, &png, 1, seed);
    assert_eq!(out.states, FORWARD, "{:?}", out.reason);
    let (_, first) = run_luckin(&mut net, seed, 1, &mut Quiet).unwrap();
    assert_eq!(first.state, "completed");
    assert!(first.producer_found, "consenting and eligible: found");
    let producer = producer_actor_of(PRODUCER_SUBJECT).unwrap();
    let before = net.master.producer_earnings(&producer).unwrap();
    let dividends: Vec<_> = before
        .payments
        .iter()
        .filter(|p| p.kind == "data_usage_dividend")
        .cloned()
        .collect();
    assert_eq!(dividends.len(), 1, "{before:?}");
    assert_eq!(dividends[0].reference, first.task_id);
    assert!(dividends[0].net_micro_sym > 0);
    // The producer sees their budget charged for the campaign.
    let vault = net.enterprises[pv].vault();
    let budget = budget_view(vault, &subject(), &PolicyParams::default_v1()).unwrap();
    let marketing = budget.iter().find(|b| b.scope == "marketing").unwrap();
    assert_ne!(marketing.committed, "0", "{marketing:?}");
    // Revoke marketing consent: the next campaign excludes them.
    set_consent(vault, &subject(), UsageScope::Marketing, false, NOW_MS + 1).unwrap();
    let consent = consent_view(vault, &subject(), NOW_MS + 2).unwrap();
    let m = consent.iter().find(|c| c.scope == "marketing").unwrap();
    assert!(!m.granted);
    assert_eq!(
        m.history
            .iter()
            .map(|h| h.change.as_str())
            .collect::<Vec<_>>(),
        ["grant", "revoke"]
    );
    assert!(set_consent(vault, &subject(), UsageScope::Personal, false, NOW_MS + 3).is_err());
    net.master.now_ms = NOW_MS + 5;
    let (_, second) = run_luckin(&mut net, seed, 2, &mut Quiet).unwrap();
    assert_eq!(second.state, "completed");
    assert!(!second.producer_found, "revoked: excluded");
    // Settled work stands: the earlier dividend is still listed, no new one.
    let after = net.master.producer_earnings(&producer).unwrap();
    let later: Vec<_> = after
        .payments
        .iter()
        .filter(|p| p.kind == "data_usage_dividend")
        .cloned()
        .collect();
    assert_eq!(later, dividends);
}

#[test]
fn demo_parse_reports_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_parse_demo(
        dir.path(),
        &ParseDemoParams {
            network: params(24),
            receipts: 3,
        },
        &mut Quiet,
    )
    .unwrap();
    // The report as `symphony demo parse --json` prints it.
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.receipts, 3);
    assert_eq!(report.parsed, 3, "{:?}", report.parse_tasks);
    assert!(report.fields_correct >= 0.98, "{}", report.fields_correct);
    assert_eq!(report.stored_records, 3);
    assert_eq!(report.quality_scores.len(), 3);
    assert!(report.reward_micro_sym > 0);
    assert_eq!(report.reward_micro_sym, report.reward_gross_micro_sym / 2);
    assert_eq!(report.fee_total, 0);
    for t in &report.parse_tasks {
        assert_eq!(t.states, FORWARD);
    }
    assert!(report
        .duplicate_refused
        .as_deref()
        .is_some_and(|r| r.contains("duplicate upload")));
    assert!(report.luckin.producer_found);
}
