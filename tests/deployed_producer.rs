//! Real processes on 127.0.0.1: the devnet's data producer (`producer:alice`, a
//! registered caller signing with its own key) reads its stake and earnings and
//! bonds `S_producer` through the gateway's producer routes, with `symphony
//! producer stake|earnings --dir <devnet>`; the stake lands in the actor registry
//! of every master, a second bond is refused, and a Luckin task runs as before.
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
