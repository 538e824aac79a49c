//! Real processes on 127.0.0.1: the devnet's data producer (`producer:alice`, a
//! registered caller signing with its own key) reads its stake and earnings and
//! bonds `S_producer` through the gateway's producer routes, with `symphony
//! producer stake|earnings --dir <devnet>`; the stake lands in the actor registry
//! of every master, a second bond is refused, and a Luckin task runs as before.
//! With her Personal Vault hosted on an enterprise process, she revokes marketing
//! consent through the gateway (`symphony producer consent --revoke`): the next
//! Luckin campaign leaves her out, the earlier one's delivery stands.
//! She uploads a receipt (`symphony producer upload FILE --dir <devnet>`): a free
//! `parse` task through the masters on the enterprise hosting her Personal Vault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::time::Duration;

use deployed::{cli, cli_json, luckin, Net};

#[test]
fn a_producer_stakes_through_the_registry_and_reads_its_earnings_on_a_devnet() {
    let net = Net::start(2);
    let s_producer = symphony_economics::PolicyParams::default_v1()
        .staking
        .s_producer_micro_sym;
    let fund = 1_000 * symphony_economics::MICRO_SYM_PER_SYM;
    let before = cli_json(&net, &["producer", "stake"]);
    assert_eq!(before["producer"], "producer:alice", "{before}");
    assert_eq!(before["staked"], false, "{before}");
    assert_eq!(before["stake_micro_sym"], 0);
    assert_eq!(before["balance_micro_sym"], fund);

    let bonded = cli_json(&net, &["producer", "stake", "--bond"]);
    assert_eq!(bonded["staked"], true, "{bonded}");
    assert_eq!(bonded["stake_micro_sym"], s_producer);
    assert_eq!(bonded["ledger_bonded_micro_sym"], s_producer);
    assert_eq!(bonded["balance_micro_sym"], fund - s_producer);
    // Replicated: every master's gateway reports the registered stake.
    for m in &net.layout.masters {
        let client = symphony_deploy::client::GatewayClient::new(
            vec![m.gateway],
            symphony_deploy::tls::public_client(
                symphony_deploy::tls::load_roots(&net.layout.ca).unwrap(),
            )
            .unwrap(),
            "producer:alice".into(),
            symphony_deploy::config::read_signing_key(
                "producer key",
                net.layout.caller_key("producer:alice").unwrap(),
            )
            .unwrap(),
        );
        let mut staked = false;
        for _ in 0..100 {
            let r = net
                .rt
                .block_on(client.signed("GET", "/v1/producer/stake", Vec::new()))
                .unwrap();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            if r.json()["staked"] == true {
                staked = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(staked, "master {} never showed the stake", m.id);
    }
    // Twice: refused, naming why.
    let (ok, out, err) = cli(&net, &["producer", "stake", "--bond", "--json"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("409") && err.contains("already in the actor registry"),
        "{err}"
    );

    // A Luckin task still completes; the producer's earnings are read through the
    // gateway (its Vault is not on this devnet: no dividends).
    let id = net.submit_ok(luckin());
    let status = net.wait_final(&id, Duration::from_secs(120));
    assert_eq!(status["status"], "completed", "{status}");
    let e = cli_json(&net, &["producer", "earnings"]);
    assert_eq!(e["producer"], "producer:alice");
    assert_eq!(e["staked"], true);
    assert_eq!(e["stake_micro_sym"], s_producer);
    assert_eq!(e["payments"], serde_json::json!([]));
    assert_eq!(e["balance_micro_sym"], fund - s_producer);
}

/// The delivered audience of a completed task.
fn audience(net: &Net, id: &str) -> Vec<String> {
    let result = net.result(id);
    result["outcome"]["audience"]
        .as_array()
        .unwrap_or_else(|| panic!("no audience: {result}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn scope<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == name)
        .unwrap_or_else(|| panic!("no scope {name}: {v}"))
}

#[test]
fn a_producer_revokes_marketing_through_the_gateway_and_the_next_campaign_leaves_her_out() {
    let contact = symphony_node::producer::demo::PRODUCER_CONTACT;
    // 2 enterprise nodes with the population, and a third hosting pv-alice.
    let net = Net::start_with_personal_vault(2);
    assert_eq!(net.layout.enterprises.len(), 3);
    assert_eq!(net.layout.enterprises[2].vault_id, "pv-alice");

    let consent = cli_json(&net, &["producer", "consent"]);
    assert_eq!(consent["producer"], "producer:alice", "{consent}");
    assert_eq!(consent["vault"], "pv-alice");
    assert_eq!(scope(&consent, "marketing")["granted"], true, "{consent}");
    assert_eq!(scope(&consent, "training")["granted"], false, "{consent}");
    let budget = cli_json(&net, &["producer", "budget"]);
    assert_eq!(budget["vault"], "pv-alice", "{budget}");
    assert_eq!(
        budget["replenishes_at_epoch"].as_u64().unwrap(),
        budget["epoch"].as_u64().unwrap() + 1
    );
    let remaining_before = scope(&budget, "marketing")["remaining"].clone();
    assert_eq!(scope(&budget, "marketing")["committed"], "0", "{budget}");

    // Before the revocation: her Luckin receipt puts her in the audience and the
    // task commits marketing ε of her budget.
    let first = net.submit_ok(luckin());
    let status = net.wait_final(&first, Duration::from_secs(180));
    assert_eq!(status["status"], "completed", "{status}");
    assert!(
        audience(&net, &first).iter().any(|h| h == contact),
        "the first campaign should deliver {contact}"
    );
    let budget = cli_json(&net, &["producer", "budget"]);
    assert_ne!(scope(&budget, "marketing")["committed"], "0", "{budget}");
    assert_ne!(
        scope(&budget, "marketing")["remaining"],
        remaining_before,
        "{budget}"
    );
    // The devnet pays the contributors' share into each Vault's dividend pool
    // (its split among producers runs in the embedded network only): her earnings
    // are read, and must not change with the revocation.
    let earned = cli_json(&net, &["producer", "earnings"]);

    // Revoke marketing through the gateway.
    let revoked = cli_json(&net, &["producer", "consent", "--revoke", "marketing"]);
    let m = scope(&revoked, "marketing");
    assert_eq!(m["granted"], false, "{revoked}");
    assert_eq!(
        m["history"].as_array().unwrap().last().unwrap()["change"],
        "revoke"
    );
    // Read back: the Vault holds it.
    let again = cli_json(&net, &["producer", "consent"]);
    assert_eq!(scope(&again, "marketing")["granted"], false, "{again}");

    // Bad input: named, nothing changed.
    let client = net.client_of("producer:alice");
    let r = net
        .rt
        .block_on(client.signed(
            "POST",
            "/v1/producer/consent",
            br#"{"scope": "weather", "action": "revoke"}"#.to_vec(),
        ))
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("weather"));
    let (ok, _, err) = cli(&net, &["producer", "consent", "--revoke", "personal"]);
    assert!(!ok);
    assert!(err.contains("personal"), "{err}");
    // Not a producer: refused.
    let r = net
        .rt
        .block_on(net.client.signed("GET", "/v1/producer/consent", Vec::new()))
        .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));

    // After: the next campaign leaves her out.
    let second = net.submit_ok(luckin());
    let status = net.wait_final(&second, Duration::from_secs(180));
    assert_eq!(status["status"], "completed", "{status}");
    let delivered = audience(&net, &second);
    assert!(!delivered.is_empty());
    assert!(
        !delivered.iter().any(|h| h == contact),
        "the campaign after the revocation delivered {contact}"
    );
    // Settled work stands: the first campaign's delivered audience still names
    // her, and her earnings are unchanged.
    assert!(audience(&net, &first).iter().any(|h| h == contact));
    let after = cli_json(&net, &["producer", "earnings"]);
    assert_eq!(after["payments"], earned["payments"], "{after}");
    assert_eq!(after["balance_micro_sym"], earned["balance_micro_sym"]);
}

#[test]
fn a_producer_uploads_a_receipt_through_the_gateway_as_a_parse_task_on_her_personal_vault() {
    let net = Net::start_with_personal_vault(2);
    let receipt = net.layout.dir.join("receipt.txt");
    std::fs::write(
        &receipt,
        "merchant: Luckin Coffee\ncategory: coffee\ntotal: 5.90\ncurrency: SGD\n\
         time: 2026-11-12 09:15\nstore_city: Singapore\nstore_country: SG\n",
    )
    .unwrap();
    let file = receipt.to_str().unwrap();
    let out = cli_json(&net, &["producer", "upload", file]);
    assert_eq!(out["producer"], "producer:alice", "{out}");
    assert_eq!(out["vault"], "pv-alice", "{out}");
    let states: Vec<&str> = out["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"completed"), "{out}");
    assert!(states.len() > 2, "{out}");
    assert_eq!(out["reason"], serde_json::Value::Null, "{out}");
    assert!(!out["fields"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(out["fee_total"], 0, "{out}");
    assert!(out["quality_score_bp"].as_u64().unwrap() > 0, "{out}");

    // The same receipt again: a duplicate, refused with a reason, nothing stored.
    let (ok, stdout, _) = cli(&net, &["producer", "upload", file, "--json"]);
    assert!(!ok, "{stdout}");
    let again: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_ne!(again["task_id"], out["task_id"]);
    assert_ne!(
        again["states"].as_array().unwrap().last().unwrap(),
        "completed",
        "{again}"
    );
    assert!(again["reason"].is_string(), "{again}");

    // Malformed: named.
    let client = net.client_of("producer:alice");
    let r = net
        .rt
        .block_on(client.signed(
            "POST",
            "/v1/producer/upload",
            br#"{"parse_request_hex": "zz"}"#.to_vec(),
        ))
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("parse_request_hex"));
    // Another caller cannot upload.
    let r = net
        .rt
        .block_on(
            net.client
                .signed("GET", "/v1/producer/upload-key", Vec::new()),
        )
        .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
}
