//! Every task class on the deployed network (issue #11): the example specs are
//! submitted as they are — with the `symphony task` CLI, as a user would — to a
//! devnet of real processes (3 masters, 4 enterprise nodes, mutual TLS), and followed
//! with `task status --json` to their final status; the trained model is fetched
//! with `task result --out`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use deployed::Net;
use serde_json::Value;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// Rounds of the training run in this test (the example's own: `max_rounds = 12`).
const TEST_MAX_ROUNDS: u32 = 12;

/// The devnet's size: the default devnet (2,000 people) is too small for the
/// example's acceptance criteria (held-out AUC ≥ 0.6 under its DP noise: 0.41
/// measured), so this test runs on the demo's data size.
const SUBJECTS: u64 = 20_000;
const RECORDS: u64 = 200_000;

fn cli(net: &Net, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(args)
        .arg("--dir")
        .arg(&net.layout.dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_json_result(net: &Net, id: &str) -> Value {
    let (ok, stdout, stderr) = cli(net, &["task", "result", id, "--json"]);
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn submit(net: &Net, spec: &Path) -> String {
    let (ok, stdout, stderr) = cli(net, &["task", "submit", spec.to_str().unwrap(), "--json"]);
    assert!(ok, "task submit {}: {stderr}{stdout}", spec.display());
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "queued", "{v}");
    v["request_id"].as_str().unwrap().to_owned()
}

fn status(net: &Net, id: &str) -> Value {
    let (ok, stdout, stderr) = cli(net, &["task", "status", id, "--json"]);
    assert!(ok, "task status {id}: {stderr}{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

/// Polls `task status --json` until the request is final.
fn wait_final(net: &Net, id: &str, timeout: Duration) -> Value {
    let t = Instant::now();
    loop {
        let v = status(net, id);
        if matches!(v["status"].as_str(), Some("completed" | "rejected")) {
            return v;
        }
        assert!(
            t.elapsed() < timeout,
            "{id} not final after {timeout:?}: {v}\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The compute task completes with a noisy groups table (one row per released home
/// city, each with a count at or above the composition's threshold) and fee shares
/// that add up to the fee.
fn assert_compute_completed_with_a_table(v: &Value) {
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["task_class"], "compute", "{v}");
}

#[test]
fn every_example_class_runs_on_the_devnet_and_the_model_is_delivered() {
    let started = Instant::now();
    let net = Net::start_sized(4, SUBJECTS, RECORDS, Default::default());
    let dir = tempfile::tempdir().unwrap();
    // examples/train.toml as is, with fewer rounds.
    let train_text = std::fs::read_to_string(format!("{EXAMPLES}/train.toml"))
        .unwrap()
        .replace(
            "max_rounds = 12",
            &format!("max_rounds = {TEST_MAX_ROUNDS}"),
        );
    assert!(train_text.contains(&format!("max_rounds = {TEST_MAX_ROUNDS}")));
    let train_file = dir.path().join("train.toml");
    std::fs::write(&train_file, &train_text).unwrap();

    // A spec whose fields do not belong to its class: 400 naming the field.
    let train_spec = symphony_node::task::TaskSpec::from_toml(&train_text).unwrap();
    let mut body = serde_json::json!({
        "spec": {"query": serde_json::to_value(&train_spec).unwrap()["train"]},
        "nonce": 5,
        "attempt_signatures": ["00"],
    });
    body["spec"]["query"]["advertiser"] = "advertiser:luckin".into();
    let r = net
        .rt
        .block_on(net.client.signed_with_nonce(
            "POST",
            "/v1/tasks",
            serde_json::to_vec(&body).unwrap(),
            5,
        ))
        .unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        e.starts_with("spec.query: unknown field `acceptance`"),
        "{e}"
    );

    let query = submit(&net, Path::new(&format!("{EXAMPLES}/luckin.toml")));
    let train = submit(&net, &train_file);
    let compute = submit(&net, Path::new(&format!("{EXAMPLES}/compute.toml")));

    let q = wait_final(&net, &query, Duration::from_secs(120));
    assert_eq!(q["status"], "completed", "{q}");
    assert_eq!(q["task_class"], "query");
    let t = wait_final(&net, &train, Duration::from_secs(240));
    assert_eq!(t["status"], "completed", "{t}\n{}", net.logs());
    assert_eq!(t["task_class"], "train");
    let task_id = t["task_id"].as_str().unwrap().to_owned();
    assert!(task_id.starts_with("train-"), "{t}");
    let c = wait_final(&net, &compute, Duration::from_secs(120));
    assert_compute_completed_with_a_table(&c);
    let (ok, stdout, stderr) = cli(&net, &["task", "result", &compute, "--json"]);
    assert!(ok, "task result {compute}: {stderr}{stdout}");
    let reply: Value = serde_json::from_str(&stdout).unwrap();
    let r = &reply["outcome"];
    let groups = r["groups"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert!(!groups.is_empty(), "{r}");
    for g in groups {
        assert!(g["count"].as_i64().unwrap() >= 20, "{g}");
    }
    let fee: u64 = r["fee_total"].as_u64().unwrap();
    let shares: u64 = r["fee_shares"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(shares, fee, "{r}");

    // The model, from the replicated state through the CLI.
    let out = dir.path().join("model-out");
    let (ok, stdout, stderr) = cli(
        &net,
        &["task", "result", &train, "--out", out.to_str().unwrap()],
    );
    assert!(ok, "task result: {stderr}{stdout}");
    eprintln!("{stdout}");
    assert!(stdout.contains("model.safetensors"), "{stdout}");
    assert!(stdout.contains("model_card.json"), "{stdout}");
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(model[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&model[8..8 + header_len]).unwrap();
    assert_eq!(header["__metadata__"]["task_id"], task_id.as_str());
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model_card.json")).unwrap())
            .unwrap();
    assert_eq!(card["task_id"], task_id.as_str(), "{card}");
    assert_eq!(card["task_class"], "train");
    assert_eq!(card["settlement"]["state"], "finalized", "{card}");
    // The curve is drawn from the card's rounds, one CSV row per round.
    assert!(
        std::fs::metadata(out.join("training_curve.png"))
            .unwrap()
            .len()
            > 10_000
    );
    let csv = std::fs::read_to_string(out.join("training_curve.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + card["rounds"].as_array().unwrap().len(),
        "{csv}"
    );
    // The query result is still the audience.
    let (ok, stdout, stderr) = cli(&net, &["task", "result", &query]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("delivered"), "{stdout}");
    // The audience itself: the first handles in the text, all of them in a CSV.
    assert!(stdout.contains("audience ("), "{stdout}");
    let csv = out.join("audience.csv");
    let (ok, stdout, stderr) = cli(
        &net,
        &["task", "result", &query, "--out", csv.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let json = cli_json_result(&net, &query);
    let audience = json["outcome"]["audience"].as_array().unwrap();
    assert_eq!(rows[0], "contact", "{stdout}");
    assert_eq!(rows.len(), 1 + audience.len());
    assert_eq!(rows[1], audience[0].as_str().unwrap());
    // `task list`: every request of the devnet's callers, newest first.
    let (ok, stdout, stderr) = cli(&net, &["task", "list", "--json"]);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = listed["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    for id in [&query, &train] {
        assert!(ids.contains(&id.as_str()), "{id} not in {listed}");
    }
    let (ok, stdout, _) = cli(&net, &["task", "list"]);
    assert!(
        ok && stdout.contains("completed") && stdout.contains("train"),
        "{stdout}"
    );
    eprintln!(
        "every class on the devnet: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Submits `spec` as `caller` to a devnet whose masters each exit abruptly (as if
/// killed) right after the first payout (`settlement:finalized`: escrow paid, task
/// not yet completed, nothing delivered); waits for the request's final status,
/// checks the next leader completed the one attempt (one payout, one delivery, no
/// escrow left) and restarts the crashed master. Returns the net, the request id,
/// its final status and the caller's key.
fn leader_crashes_after_payout(
    caller: &str,
    spec: symphony_node::task::TaskSpec,
) -> (Net, String, Value, ed25519_dalek::SigningKey) {
    use std::collections::BTreeMap;
    use symphony_deploy::client::sign_submission;
    use symphony_deploy::master::FAULT_EXIT_AT;

    let env: BTreeMap<String, Vec<(String, String)>> = (1..=3)
        .map(|m| {
            (
                format!("master-{m}"),
                vec![(FAULT_EXIT_AT.to_owned(), "settlement:finalized".to_owned())],
            )
        })
        .collect();
    let mut net = Net::start_sized(4, SUBJECTS, RECORDS, env);
    let client = net.client_of(caller);
    let key =
        symphony_deploy::config::read_signing_key("k", net.layout.caller_key(caller).unwrap())
            .unwrap();
    let nonce = 77;
    let body = serde_json::to_vec(&sign_submission(spec, nonce, &key).unwrap()).unwrap();
    let r = net
        .rt
        .block_on(client.signed_with_nonce("POST", "/v1/tasks", body, nonce))
        .unwrap();
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["request_id"].as_str().unwrap().to_owned();
    let t = Instant::now();
    let status = loop {
        let r = net
            .rt
            .block_on(client.signed("GET", &format!("/v1/tasks/{id}"), Vec::new()));
        if let Ok(r) = r {
            let v = r.json();
            if matches!(v["status"].as_str(), Some("completed" | "rejected")) {
                break v;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(300), "{}", net.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["status"], "completed", "{status}\n{}", net.logs());
    // One attempt: completed by the next leader, not retried.
    assert_eq!(status["attempts"], 1, "{status}");
    let crashed: Vec<String> = net
        .children
        .iter_mut()
        .filter_map(|(n, c)| {
            (n.starts_with("master-") && c.try_wait().unwrap().is_some()).then(|| n.clone())
        })
        .collect();
    assert_eq!(crashed.len(), 1, "exactly one leader crashed: {crashed:?}");
    for name in crashed {
        net.children.remove(&name);
        net.spawn(&name);
    }
    let views = net.wait_converged(Duration::from_secs(60));
    assert_eq!(views[0]["escrows_paid_out"], 1, "{}", views[0]);
    assert_eq!(views[0]["deliveries_recorded"], 1, "{}", views[0]);
    assert_eq!(views[0]["escrow_remaining_micro_sym"], 0, "{}", views[0]);
    (net, id, status, key)
}

/// The result of request `id` as every master's gateway serves it to `caller`.
fn results_from_every_master(
    net: &Net,
    caller: &str,
    key: &ed25519_dalek::SigningKey,
    id: &str,
) -> Vec<Value> {
    use symphony_deploy::client::GatewayClient;
    net.layout
        .masters
        .iter()
        .map(|m| {
            let roots = symphony_deploy::tls::load_roots(&net.layout.ca).unwrap();
            let tls = symphony_deploy::tls::public_client(roots).unwrap();
            let one = GatewayClient::new(vec![m.gateway], tls, caller.to_owned(), key.clone());
            let r = net
                .rt
                .block_on(one.signed("GET", &format!("/v1/tasks/{id}/result"), Vec::new()))
                .unwrap();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()
        })
        .collect()
}

/// A `train` task whose leader crashes after the payout is completed by the next
/// leader from the replicated state — no second payout, no re-run — and every
/// master serves the staged model and its card.
#[test]
fn a_train_task_whose_leader_crashes_after_payout_is_completed_and_served_by_every_master() {
    use symphony_node::task::TaskSpec;
    let started = Instant::now();
    let operator = "model-operator:luckin-growth";
    let spec = TaskSpec::from_toml(include_str!("../examples/train.toml")).unwrap();
    let (net, id, status, key) = leader_crashes_after_payout(operator, spec);
    let task_id = status["task_id"].as_str().unwrap().to_owned();
    // Every master serves the same model and a card naming the task, settled.
    let mut models = Vec::new();
    for v in results_from_every_master(&net, operator, &key, &id) {
        assert_eq!(v["task_class"], "train");
        assert_eq!(v["outcome"]["task_id"], task_id.as_str(), "{v}");
        assert_eq!(v["outcome"]["settlement_state"], "finalized", "{v}");
        let card = &v["artifacts"]["model_card.json"];
        assert_eq!(card["task_id"], task_id.as_str(), "{card}");
        assert_eq!(card["settlement"]["state"], "finalized", "{card}");
        // The rounds settled in their epochs, linked under the parent.
        let rounds = v["outcome"]["rounds_run"].as_u64().unwrap() as usize;
        assert_eq!(
            v["outcome"]["round_settlements"].as_object().unwrap().len(),
            rounds,
            "{v}"
        );
        assert!(v["outcome"]["composite_link"].is_string(), "{v}");
        assert_eq!(
            card["settlement"]["round_settlements"],
            v["outcome"]["round_settlements"]
        );
        models.push(v["artifacts"]["model.safetensors"]["data"].clone());
    }
    assert!(models[0].is_string());
    assert!(models.iter().all(|m| m == &models[0]));
    eprintln!(
        "train takeover after payout: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A `compute` task whose leader crashes after the payout is completed by the next
/// leader with the table the crashed leader staged (checked by the state machine
/// against the recorded aggregate's hash); every master serves the same table.
#[test]
fn a_compute_task_whose_leader_crashes_after_payout_delivers_the_staged_table() {
    use symphony_node::task::TaskSpec;
    let analyst = "analyst:luckin-insights";
    let spec = TaskSpec::from_toml(include_str!("../examples/compute.toml")).unwrap();
    let (net, id, status, key) = leader_crashes_after_payout(analyst, spec);
    let tables: Vec<Value> = results_from_every_master(&net, analyst, &key, &id)
        .into_iter()
        .map(|v| {
            assert_eq!(v["task_class"], "compute", "{v}");
            assert_eq!(v["outcome"]["task_id"], status["task_id"], "{v}");
            assert_eq!(v["outcome"]["settlement_state"], "finalized", "{v}");
            v["outcome"]["groups"].clone()
        })
        .collect();
    assert!(!tables[0].as_array().unwrap().is_empty(), "{}", tables[0]);
    assert!(tables.iter().all(|t| t == &tables[0]));
}
