//! Gateway limits end to end, over real HTTPS with signed requests against three
//! in-process masters (loopback consensus, fsync on; no campaign worker, so
//! acknowledged requests stay queued): the per-caller rate limit answers `429` to
//! the caller over its rate only, the request-queue bound answers `503`, and neither
//! refusal changes the replicated state (state root, applied index, requests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deployed::luckin;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use symphony_deploy::bench::GatewayBed;
use symphony_deploy::client::{sign_submission, GatewayClient, HttpReply};
use symphony_deploy::gateway::GatewaySettings;
use symphony_deploy::loopback::LoopbackOptions;
use symphony_deploy::state::{request_id, DeployCommand, DeployResponse, RequestStatus};

fn caller(name: &str, seed: u8) -> (String, SigningKey) {
    (name.to_owned(), SigningKey::from_bytes(&[seed; 32]))
}

fn settings(
    callers: &[(String, SigningKey)],
    per_s: u32,
    burst: u32,
    max_pending: usize,
) -> GatewaySettings {
    GatewaySettings {
        node_id: 0,
        callers: callers
            .iter()
            .map(|(n, k)| (n.clone(), k.verifying_key()))
            .collect::<BTreeMap<_, _>>(),
        request_window_ms: 60_000,
        body_limit_bytes: 64 * 1024,
        rate_limit_per_s: per_s,
        rate_limit_burst: burst,
        max_pending_requests: max_pending,
    }
}

async fn bed(settings: GatewaySettings) -> (GatewayBed, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = LoopbackOptions {
        cluster_id: "limits".into(),
        ..LoopbackOptions::default()
    };
    let bed = GatewayBed::start(dir.path(), &options, settings)
        .await
        .unwrap();
    (bed, dir)
}

fn client(bed: &GatewayBed, gateway: SocketAddr, who: &(String, SigningKey)) -> GatewayClient {
    GatewayClient::new(
        vec![gateway],
        bed.client_tls.clone(),
        who.0.clone(),
        who.1.clone(),
    )
}

/// A signed submission of the Luckin campaign by the client's caller with `nonce`.
async fn submit(client: &GatewayClient, key: &SigningKey, nonce: u64) -> HttpReply {
    let mut spec = luckin();
    spec.advertiser = client.caller.clone();
    let body = serde_json::to_vec(
        &sign_submission(symphony_node::task::TaskSpec::Query(spec), nonce, key).unwrap(),
    )
    .unwrap();
    client
        .signed_with_nonce("POST", "/v1/tasks", body, nonce)
        .await
        .unwrap()
}

/// `(state_root, last_applied_index, requests_total)` of every master, once all
/// three agree.
async fn converged(bed: &GatewayBed, probe: &GatewayClient) -> (Value, Value, u64) {
    let t = Instant::now();
    loop {
        let mut views = Vec::new();
        for g in &bed.gateways {
            let r = probe.get_plain(*g, "/v1/cluster").await.unwrap();
            assert_eq!(r.status, 200);
            let v = r.json();
            views.push((
                v["state_root"].clone(),
                v["last_applied_index"].clone(),
                v["requests_total"].as_u64().unwrap(),
            ));
        }
        if views.windows(2).all(|w| w[0] == w[1]) {
            return views.swap_remove(0);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "masters did not converge: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn error_of(r: &HttpReply) -> String {
    r.json()["error"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_gets_429_another_caller_is_unaffected_and_nothing_changes() {
    let a = caller("advertiser:limits-a", 1);
    let b = caller("advertiser:limits-b", 2);
    // One token per second and a bucket of one across the cluster (each of the
    // three gateways enforces a third of the rate, at least one token of burst):
    // after its first request, a burst of requests from A arriving at one gateway
    // within a second can take at most one more token.
    let (bed, _dir) = bed(settings(&[a.clone(), b.clone()], 1, 1, 10_000)).await;
    let gw = bed.gateways[0];
    let (ca, cb) = (client(&bed, gw, &a), client(&bed, gw, &b));

    let r = submit(&ca, &a.1, 1).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let mut baseline = converged(&bed, &ca).await;
    assert_eq!(baseline.2, 1);

    let mut accepted = 1u64;
    let mut refused = Vec::new();
    let mut unchanged_checked = false;
    for round in 0..3u64 {
        let round_started = Instant::now();
        let mut handles = Vec::new();
        for k in 0..6u64 {
            let (ca, key) = (ca.clone(), a.1.clone());
            let nonce = 100 + round * 10 + k;
            handles.push(tokio::spawn(async move {
                (nonce, submit(&ca, &key, nonce).await)
            }));
        }
        let mut round_accepted = 0u64;
        for h in handles {
            let (nonce, r) = h.await.unwrap();
            match r.status {
                202 => round_accepted += 1,
                429 => {
                    let e = error_of(&r);
                    assert_eq!(
                        e, "rate limit exceeded for caller \"advertiser:limits-a\"; retry later",
                        "429 must say who is limited"
                    );
                    refused.push(nonce);
                }
                other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
            }
        }
        // The bucket holds at most one token and gains one per second.
        let bound = 1 + round_started.elapsed().as_secs();
        assert!(
            round_accepted <= bound,
            "a bucket of one token let {round_accepted} of 6 requests through"
        );
        accepted += round_accepted;
        let now = converged(&bed, &ca).await;
        if round_accepted == 0 {
            // Six refused requests: root, applied index and request count unchanged.
            assert_eq!(
                now, baseline,
                "refused requests changed the replicated state"
            );
            unchanged_checked = true;
            break;
        }
        // A slow machine let a refilled token through; start again from here.
        assert_eq!(now.2, baseline.2 + round_accepted);
        baseline = now;
    }
    assert!(
        unchanged_checked,
        "every round let a request through: the limiter does not hold"
    );
    assert!(refused.len() >= 5);
    // No refused request reached any replica.
    for nonce in &refused {
        let id = request_id(&a.0, *nonce);
        for n in &bed.nodes {
            assert!(
                n.with_state(|s| s.request(&id).is_none()),
                "refused {id} is in a replica"
            );
        }
    }

    // B, at the same gateway, is not affected by A's empty bucket.
    let r = submit(&cb, &b.1, 1).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let after = converged(&bed, &cb).await;
    assert_eq!(after.2, accepted + 1);

    // The gateway counted every refusal.
    let metrics = String::from_utf8(cb.get_plain(gw, "/metrics").await.unwrap().body).unwrap();
    for line in [
        format!(
            "symphony_gateway_requests_total{{route=\"/v1/tasks\",method=\"POST\",code=\"429\"}} {}",
            refused.len()
        ),
        format!(
            "symphony_gateway_refusals_total{{route=\"/v1/tasks\",reason=\"rate_limited\"}} {}",
            refused.len()
        ),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    bed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_request_queue_refuses_submissions_with_503_until_a_request_is_final() {
    let a = caller("advertiser:limits-q", 3);
    let (bed, _dir) = bed(settings(std::slice::from_ref(&a), 1_000, 1_000, 3)).await;
    let c0 = client(&bed, bed.gateways[0], &a);
    let mut ids = Vec::new();
    for nonce in 1..=3 {
        let r = submit(&c0, &a.1, nonce).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        ids.push(r.json()["request_id"].as_str().unwrap().to_owned());
    }
    let before = converged(&bed, &c0).await;
    assert_eq!(before.2, 3);

    // Every gateway (each reads its own replica) refuses a fourth one.
    for (i, g) in bed.gateways.iter().enumerate() {
        let nonce = 10 + i as u64;
        let r = submit(&client(&bed, *g, &a), &a.1, nonce).await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        let e = error_of(&r);
        assert!(e.contains("request queue full"), "{e}");
        assert!(
            e.contains("3 task requests are acknowledged and not yet final"),
            "{e}"
        );
        assert!(e.contains("max_pending_requests = 3"), "{e}");
        let id = request_id(&a.0, nonce);
        assert!(bed.nodes[i].with_state(|s| s.request(&id).is_none()));
    }
    assert_eq!(
        converged(&bed, &c0).await,
        before,
        "a refused submission changed the replicated state"
    );

    // One request becomes final (as the campaign worker would record it): room for one.
    let cluster = bed.cluster(0).unwrap();
    let (response, _) = cluster
        .write(&DeployCommand::Finish {
            request_id: ids[0].clone(),
            status: RequestStatus::Rejected,
            outcome: None,
            error: Some("finished by the test".into()),
        })
        .await
        .unwrap();
    assert!(
        matches!(response, DeployResponse::Queue(Ok(_))),
        "{response:?}"
    );
    assert_eq!(bed.nodes[0].with_state(|s| s.pending_count()), 2);
    let r = submit(&c0, &a.1, 20).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let r = submit(&c0, &a.1, 21).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    bed.shutdown().await.unwrap();
}
