//! Real processes on 127.0.0.1: the Luckin campaign through the API gateway of a
//! devnet (3 masters, 4 enterprise nodes) selects the same audience as the embedded
//! demo for the same seed; bad requests are refused with a 4xx and change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::time::Duration;

use deployed::{cli_json, embedded_audience, luckin, Net, SEED};
use ed25519_dalek::SigningKey;
use symphony_deploy::auth::{sign_headers, RequestTarget};
use symphony_deploy::client::{https_request, sign_submission};
use symphony_deploy::master::now_ms;
use symphony_node::network::advertiser_key;

#[test]
fn luckin_through_the_gateway_matches_the_embedded_demo_and_bad_requests_change_nothing() {
    let net = Net::start(4);
    let id = net.submit_ok(luckin());
    let status = net.wait_final(&id, Duration::from_secs(120));
    assert_eq!(status["status"], "completed", "{status}");
    let lifecycle: Vec<&str> = status["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(lifecycle.first(), Some(&"accepted"));
    assert_eq!(lifecycle.last(), Some(&"completed"));
    let result = net.result(&id);
    let outcome = &result["outcome"];
    let mut audience: Vec<String> = outcome["audience"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    audience.sort();
    assert!(!audience.is_empty());
    assert!(outcome["certificate_signatures"].as_u64().unwrap() >= 2);
    assert_eq!(
        audience,
        embedded_audience(),
        "deployed and embedded audiences differ"
    );

    let evidence = net.get(&format!("/v1/tasks/{id}/evidence"));
    assert_eq!(evidence.status, 200);
    let ev = evidence.json();
    assert!(
        ev["final_certificate"]["signatures"]
            .as_object()
            .unwrap()
            .len()
            >= 2
    );
    assert_eq!(
        ev["attestations_verified"].as_u64(),
        outcome["attestations_verified"].as_u64()
    );

    // Refusals: each a 4xx with a message, and the replicated state does not move.
    let before = net.wait_converged(Duration::from_secs(10));
    let gw = net.layout.masters[0].gateway;
    let tls = symphony_deploy::tls::public_client(
        symphony_deploy::tls::load_roots(&net.layout.ca).unwrap(),
    )
    .unwrap();
    let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        net.rt
            .block_on(https_request(
                gw,
                tls.clone(),
                "POST",
                "/v1/tasks",
                &headers,
                body,
            ))
            .unwrap()
    };
    let owner = advertiser_key(SEED, "advertiser:luckin");
    let submission = |nonce| {
        serde_json::to_vec(
            &sign_submission(
                symphony_node::task::TaskSpec::Query(luckin()),
                nonce,
                &owner,
            )
            .unwrap(),
        )
        .unwrap()
    };
    let expect = |r: symphony_deploy::client::HttpReply, status: u16, needle: &str| {
        let msg = r.json()["error"].as_str().unwrap_or("").to_owned();
        assert_eq!(r.status, status, "{msg}");
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    };
    // Headers of a POST /v1/tasks to `gw` signed by `key` as `caller`.
    let host = gw.to_string();
    let post = RequestTarget {
        method: "POST",
        host: &host,
        path: "/v1/tasks",
    };
    let headers = |key: &SigningKey, caller: &str, body: &[u8], nonce: u64, at_ms: u64| {
        sign_headers(key, caller, post, body, nonce, at_ms)
    };
    // Forged signature: signed by another key under the advertiser's name.
    let body = submission(1001);
    let forger = SigningKey::from_bytes(&[9u8; 32]);
    let h = headers(&forger, "advertiser:luckin", &body, 1001, now_ms());
    expect(send(h, body), 401, "signature does not verify");
    // Unknown caller.
    let body = submission(1002);
    let h = headers(&forger, "advertiser:nobody", &body, 1002, now_ms());
    expect(send(h, body), 401, "unknown caller");
    // Stale timestamp.
    let body = submission(1003);
    let h = headers(
        &owner,
        "advertiser:luckin",
        &body,
        1003,
        now_ms() - 3_600_000,
    );
    expect(send(h, body), 401, "outside the accepted window");
    // Oversized body (limit 64 KiB).
    let body = vec![b' '; 100 * 1024];
    let h = headers(&owner, "advertiser:luckin", &body, 1004, now_ms());
    expect(send(h, body), 413, "exceeds the limit");
    // Malformed JSON.
    let body = b"{\"spec\": not json".to_vec();
    let h = headers(&owner, "advertiser:luckin", &body, 1005, now_ms());
    expect(send(h, body), 400, "malformed JSON");
    // Replayed nonce: the same headers twice at one master (the first is refused for
    // its body; the nonce is spent all the same).
    let body = b"[]".to_vec();
    let h = headers(&owner, "advertiser:luckin", &body, 1006, now_ms());
    assert_eq!(send(h.clone(), body.clone()).status, 400);
    expect(send(h, body), 409, "replayed");
    let r = net.get("/v1/tasks/req-unknown");
    assert_eq!(r.status, 404);
    // A dry run prints the figures and sends nothing.
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/luckin.toml");
    let quote = cli_json(&net, &["task", "submit", spec, "--dry-run"]);
    assert_eq!(quote["dry_run"], true, "{quote}");
    assert_eq!(quote["vaults"], 4, "{quote}");
    assert!(
        quote["fee_estimate_micro_sym"].as_u64().unwrap() > 0,
        "{quote}"
    );
    let after = net.wait_converged(Duration::from_secs(10));
    assert_eq!(
        before[0]["state_root"], after[0]["state_root"],
        "a refused request changed the state"
    );
    assert_eq!(
        before[0]["last_applied_index"],
        after[0]["last_applied_index"]
    );

    // A submission's nonce replayed at another master (fresh headers, same body):
    // refused by the replicated request id.
    let body = submission(2001);
    let h = headers(&owner, "advertiser:luckin", &body, 2001, now_ms());
    assert_eq!(send(h, body.clone()).status, 202);
    let gw2 = net.layout.masters[1].gateway;
    let host2 = gw2.to_string();
    let post2 = RequestTarget {
        host: &host2,
        ..post
    };
    let h = sign_headers(
        &owner,
        "advertiser:luckin",
        post2,
        &body,
        2001,
        now_ms() + 1,
    );
    let r = net
        .rt
        .block_on(https_request(
            gw2,
            tls.clone(),
            "POST",
            "/v1/tasks",
            &h,
            body,
        ))
        .unwrap();
    expect(r, 409, "already used");

    // The gateway checks one signature per request (the header's, over the body);
    // the attempt signatures are checked by the leader before the first attempt. An
    // attempt signed for another nonce is acknowledged, then refused before
    // admission, naming the attempt, and nothing is locked or charged.
    let mut forged: serde_json::Value = serde_json::from_slice(&submission(2002)).unwrap();
    let other: serde_json::Value = serde_json::from_slice(&submission(2003)).unwrap();
    forged["attempt_signatures"][1] = other["attempt_signatures"][1].clone();
    let body = serde_json::to_vec(&forged).unwrap();
    let h = headers(&owner, "advertiser:luckin", &body, 2002, now_ms());
    let r = send(h, body);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let refused = r.json()["request_id"].as_str().unwrap().to_owned();
    let s = net.wait_final(&refused, Duration::from_secs(120));
    assert_eq!(s["status"], "rejected", "{s}");
    assert_eq!(s["attempts"], 0, "{s}");
    assert_eq!(s["fee_charged_micro_sym"], 0, "{s}");
    assert_eq!(s["escrow_locked_micro_sym"], 0, "{s}");
    let e = s["error"].as_str().unwrap();
    assert!(e.contains("admission refused, nothing charged"), "{e}");
    assert!(
        e.contains("attempt_signatures[1] does not verify for \"advertiser:luckin\""),
        "{e}"
    );

    // OpenAPI and metrics.
    let doc = net
        .rt
        .block_on(net.client.get_plain(gw, "/openapi.json"))
        .unwrap();
    assert_eq!(doc.json()["openapi"], "3.1.0");
    let metrics = net
        .rt
        .block_on(net.client.get_plain(gw, "/metrics"))
        .unwrap();
    assert!(String::from_utf8_lossy(&metrics.body).contains("symphony_raft_term"));
}

/// Budgets exhausted on a devnet: every Luckin task spends ε 0.1 of each consenting
/// subject's 1 ε marketing budget, so after ten tasks the Vaults can reserve nobody.
/// The next task is refused at admission — status `rejected`, with the refusal in
/// `error` naming the scope, how many subjects consented but lack budget, and when
/// budgets replenish — and costs nothing: no escrow locked, fee 0, no reservation
/// left in any Vault. Then `symphony epoch close` (a close_epoch proposal of
/// master-0 approved by master-1) raises `epoch show --json`'s epoch_id by one, the
/// leader replenishes every Vault, and the next submission completes.
#[test]
fn an_exhausted_budget_is_refused_at_admission_for_free() {
    let net = Net::start(4);
    let t = std::time::Instant::now();
    let ids: Vec<String> = (0..10).map(|_| net.submit_ok(luckin())).collect();
    for id in &ids {
        let s = net.wait_final(id, Duration::from_secs(120));
        assert_eq!(s["status"], "completed", "{s}");
        assert!(s["fee_charged_micro_sym"].as_u64().unwrap() > 0, "{s}");
    }
    eprintln!("{} tasks completed in {:?}", ids.len(), t.elapsed());
    let before = net.wait_converged(Duration::from_secs(20))[0].clone();

    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(60));
    assert_eq!(s["status"], "rejected", "{s}");
    assert_eq!(s["attempts"], 1, "{s}");
    // Never admitted: no envelope, no lifecycle, nothing locked or charged.
    assert_eq!(s["lifecycle"].as_array().map(Vec::len), Some(0), "{s}");
    assert_eq!(s["fee_charged_micro_sym"], 0, "{s}");
    assert_eq!(s["escrow_locked_micro_sym"], 0, "{s}");
    let error = s["error"].as_str().unwrap();
    eprintln!("refused: {error}");
    for needle in [
        "admission refused, nothing charged",
        "0 subjects have marketing consent",
        "marketing budget is exhausted",
        "minimum_result_cardinality 20",
        "budgets replenish",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {error:?}");
    }
    let exhausted: u64 = error
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(" more consented"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of exhausted subjects in {error:?}"));
    assert!(exhausted > 1_000, "{error}");
    let after = net.wait_converged(Duration::from_secs(20))[0].clone();
    assert_eq!(after["escrows"], before["escrows"], "an escrow was locked");
    assert_eq!(after["escrow_remaining_micro_sym"], 0);
    let task = s["task_id"].as_str().unwrap();
    assert_eq!(net.release_on_vaults(task), vec![0, 0, 0, 0]);

    // The epoch closes through governance; budgets replenish in every Vault.
    let t = std::time::Instant::now();
    let before = cli_json(&net, &["epoch", "show"]);
    assert_eq!(before["configured"], true, "{before}");
    let e = before["epoch_id"].as_u64().unwrap();
    assert_eq!(before["tasks_in_epoch"], 10, "{before}");
    let closed = cli_json(&net, &["epoch", "close"]);
    let shown = cli_json(&net, &["epoch", "show"]);
    assert_eq!(shown["epoch_id"].as_u64(), Some(e + 1), "{shown}");
    assert_eq!(closed["epoch_id"], shown["epoch_id"]);
    assert_eq!(shown["tasks_in_epoch"], 0, "{shown}");
    let last = &shown["history"][e as usize];
    assert_eq!(last["epoch"].as_u64(), Some(e), "{shown}");
    assert!(last["trigger"]["proposal"].is_u64(), "{shown}");
    for v in &net.layout.enterprises {
        let applied = &shown["vaults"][v.vault_id.as_str()];
        assert_eq!(applied["epoch_applied"].as_u64(), Some(e + 1), "{shown}");
        assert!(
            applied["accounts_replenished"].as_u64().unwrap() > 0,
            "{shown}"
        );
    }
    eprintln!("epoch closed and Vaults replenished in {:?}", t.elapsed());
    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(60));
    assert_eq!(s["status"], "completed", "{s}");
    let outcome = &net.result(&id)["outcome"];
    assert!(outcome["eligible_count"].as_u64().unwrap() > 0, "{outcome}");
    assert_eq!(outcome["epoch_id"].as_u64(), Some(e + 1), "{outcome}");
}

/// The attestation policy is governed: task status names the enclave kind of every
/// slice and of the aggregation; after masters approve a policy version that refuses
/// the software enclave and the epoch closes, a task is rejected at verification and
/// its status names the reason.
#[test]
fn a_governed_production_attestation_policy_rejects_software_evidence() {
    let net = Net::start(4);
    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(90));
    assert_eq!(s["status"], "completed", "{s}");
    let kinds = s["enclave_kinds"].as_object().unwrap();
    assert_eq!(kinds.len(), 5, "four slices and the aggregation: {s}");
    assert!(kinds.values().all(|k| k == "software"), "{s}");
    assert_eq!(kinds["aggregation"], "software", "{s}");

    let mut params = symphony_economics::PolicyParams::default_v1();
    params.attestation = symphony_economics::AttestationPolicy::production();
    let file = net.layout.dir.join("policy-production.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&params).unwrap()).unwrap();
    let filed = cli_json(
        &net,
        &[
            "gov",
            "propose",
            "policy",
            "--file",
            file.to_str().unwrap(),
            "--as",
            "master-0",
        ],
    );
    let proposal = filed["proposal_id"].as_u64().unwrap().to_string();
    let voted = cli_json(&net, &["gov", "vote", &proposal, "--as", "master-1"]);
    assert_eq!(voted["status"], "approved", "{voted}");
    let closed = cli_json(&net, &["epoch", "close"]);
    assert_eq!(closed["policy_version"].as_u64(), Some(2), "{closed}");

    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(90));
    assert_eq!(s["status"], "rejected", "{s}");
    let text = s.to_string();
    assert!(
        text.contains("software evidence is not accepted by the attestation policy"),
        "{text}"
    );
    assert!(s["enclave_kinds"].as_object().unwrap().is_empty(), "{s}");
}
