//! The explorer on a devnet of real processes (3 masters, 4 enterprise nodes): a
//! Luckin campaign and a short training run go through the gateway, then the
//! explorer's pages (plain HTTPS GETs, no signature) are checked as HTML:
//!
//! - the Luckin task page shows `completed`, the enclave kind of its attestations,
//!   and a fee split whose rows add up to the fee the caller was charged; neither it
//!   nor any other page contains a delivered contact handle;
//! - the task list filters by class, status and submitter;
//! - the training task shows parent → rounds → slices, the training curve as SVG
//!   (axes, axis titles, legend) and the model card;
//! - the epoch closed by capacity after the campaign shows its sealed payout set
//!   (the campaign's task, rows adding up to the total) and its minted rewards;
//! - every master's gateway serves the network page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use deployed::{luckin, Net, RECORDS, SUBJECTS};
use serde_json::Value;

/// `(status, body)` of a plain GET at `gw`.
fn page(net: &Net, gw: SocketAddr, path: &str) -> (u16, String) {
    let tls = symphony_deploy::tls::public_client(
        symphony_deploy::tls::load_roots(&net.layout.ca).unwrap(),
    )
    .unwrap();
    let r = net
        .rt
        .block_on(symphony_deploy::client::https_request(
            gw,
            tls,
            "GET",
            path,
            &[],
            Vec::new(),
        ))
        .unwrap();
    (r.status, String::from_utf8(r.body).unwrap())
}

/// The numbers in `data-micro-sym="…"` of the rows with class `share` and of the
/// `total` row of the table with class `table_class`.
fn split_rows(html: &str, table_class: &str) -> (Vec<u64>, u64) {
    let start = html
        .find(&format!("<table class=\"{table_class}\">"))
        .unwrap_or_else(|| panic!("no table {table_class}: {html}"));
    let table = &html[start..start + html[start..].find("</table>").unwrap()];
    let value = |row: &str| -> u64 {
        let at = row.find("data-micro-sym=\"").unwrap() + "data-micro-sym=\"".len();
        row[at..at + row[at..].find('"').unwrap()].parse().unwrap()
    };
    let shares = table
        .split("<tr class=\"share\">")
        .skip(1)
        .map(value)
        .collect();
    let total = value(table.split("<tr class=\"total\">").nth(1).unwrap());
    (shares, total)
}

fn cli(net: &Net, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(args)
        .arg("--dir")
        .arg(&net.layout.dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "symphony {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_explorer_shows_a_luckin_task_a_training_run_and_an_epoch_payout_set() {
    let started = Instant::now();
    // Epoch 0 closes by capacity after one task: the campaign's payout is sealed.
    let net = Net::start_governed(4, SUBJECTS, RECORDS, BTreeMap::new(), None, Some(1));
    let gw = net.layout.masters[0].gateway;

    let luckin_req = net.submit_ok(luckin());
    let status = net.wait_final(&luckin_req, Duration::from_secs(120));
    assert_eq!(status["status"], "completed", "{status}");
    let luckin_task = status["task_id"].as_str().unwrap().to_owned();
    let fee = status["fee_charged_micro_sym"].as_u64().unwrap();
    assert!(fee > 0, "{status}");
    let handles: Vec<String> = net.result(&luckin_req)["outcome"]["audience"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    assert!(!handles.is_empty());

    // The leader closes epoch 0 by capacity once the campaign is done; the training
    // run is admitted in epoch 1.
    let t = Instant::now();
    while cli(&net, &["epoch", "show"])["epoch_id"].as_u64() < Some(1) {
        assert!(t.elapsed() < Duration::from_secs(30), "no capacity close");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A short training run whose acceptance criteria the small devnet meets.
    let dir = tempfile::tempdir().unwrap();
    let train_text = include_str!("../examples/train.toml")
        .replace("max_rounds = 12", "max_rounds = 3")
        .replace("min_auc = 0.6", "min_auc = 0.0")
        .replace("max_mia_advantage = 0.1", "max_mia_advantage = 1.0");
    let train_file = dir.path().join("train.toml");
    std::fs::write(&train_file, &train_text).unwrap();
    let submitted = cli(&net, &["task", "submit", train_file.to_str().unwrap()]);
    let train_req = submitted["request_id"].as_str().unwrap().to_owned();
    let t = Instant::now();
    let train_status = loop {
        let v = cli(&net, &["task", "status", &train_req]);
        if v["status"] == "completed" || v["status"] == "rejected" {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "train not final: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(train_status["status"], "completed", "{train_status}");
    let train_task = train_status["task_id"].as_str().unwrap().to_owned();
    eprintln!("tasks done after {:.1} s", started.elapsed().as_secs_f64());

    // --- the Luckin task page -------------------------------------------------------
    let (code, html) = page(&net, gw, &format!("/explorer/tasks/{luckin_task}"));
    assert_eq!(code, 200, "{html}");
    assert!(
        html.contains("<td class=\"status\">completed</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td class=\"enclave\">software</td>"),
        "{html}"
    );
    assert!(html.contains("Aggregate proof"), "{html}");
    let (shares, total) = split_rows(&html, "fee-split");
    assert!(shares.len() >= 2, "{shares:?}");
    assert_eq!(shares.iter().sum::<u64>(), total);
    assert_eq!(total, fee, "fee split total differs from the fee charged");
    assert!(html.contains("The shares add up to the fee"), "{html}");
    // A completed task no longer changes: no live refresh.
    assert!(!html.contains("hx-trigger"), "{html}");
    // The request id leads to the same task.
    let (code, by_request) = page(&net, gw, &format!("/explorer/tasks/{luckin_req}"));
    assert_eq!(code, 200);
    assert!(by_request.contains(&luckin_task));

    // --- the task list and its filters ----------------------------------------------------
    let list = |q: &str| {
        let (code, html) = page(&net, gw, &format!("/explorer/tasks{q}"));
        assert_eq!(code, 200, "{q}: {html}");
        html
    };
    let all = list("");
    assert!(
        all.contains(&luckin_task) && all.contains(&train_task),
        "{all}"
    );
    let queries = list("?class=query&status=completed&submitter=advertiser%3Aluckin");
    assert!(queries.contains(&luckin_task), "{queries}");
    assert!(!queries.contains(&train_task), "{queries}");
    let trains = list("?class=train");
    assert!(trains.contains(&train_task) && !trains.contains(&luckin_task));
    let nobody = list("?submitter=advertiser%3Anobody");
    assert!(nobody.contains("0 tasks"), "{nobody}");
    let (code, bad) = page(&net, gw, "/explorer/tasks?status=finished");
    assert_eq!(code, 400, "{bad}");
    assert!(bad.contains("status: &quot;finished&quot; is not a task lifecycle state"));

    // --- the training run -----------------------------------------------------------------
    let (code, html) = page(&net, gw, &format!("/explorer/tasks/{train_task}"));
    assert_eq!(code, 200, "{html}");
    assert!(
        html.contains("Composite: parent → rounds → slices"),
        "{html}"
    );
    assert!(html.contains("Round 0"), "{html}");
    let svg_at = html.find("<svg").expect("no training curve SVG");
    let svg = &html[svg_at..svg_at + html[svg_at..].find("</svg>").unwrap()];
    assert_eq!(svg.matches("class=\"axis\"").count(), 2, "{svg}");
    assert!(
        svg.contains(">round</text>") && svg.contains(">mean loss</text>"),
        "{svg}"
    );
    assert!(svg.contains("class=\"legend\""), "{svg}");
    assert!(svg.contains(">held-out loss (noisy)</text>"), "{svg}");
    assert!(svg.matches("<circle").count() >= 2, "{svg}");
    assert!(html.contains("<table class=\"model-card\">"), "{html}");
    assert!(html.contains("logistic_regression"), "{html}");
    assert!(html.contains(&format!("<td>{train_task}</td>")), "{html}");

    // --- epochs ------------------------------------------------------------------------------
    let (code, html) = page(&net, gw, "/explorer/epochs");
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("href=\"/explorer/epochs/0\""), "{html}");
    assert!(html.contains("capacity"), "{html}");
    let (code, html) = page(&net, gw, "/explorer/epochs/0");
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("Payout set (sealed)"), "{html}");
    assert!(
        !html.contains("hx-trigger"),
        "a closed epoch refreshes: {html}"
    );
    assert!(html.contains(&luckin_task), "{html}");
    let (payouts, payout_total) = split_rows(&html, "recipients");
    assert_eq!(payouts.iter().sum::<u64>(), payout_total);
    assert_eq!(
        payout_total, fee,
        "epoch 0 sealed only the campaign's payout"
    );
    assert!(
        html.contains("Node operation rewards (inflation)"),
        "{html}"
    );

    // --- the network page, at every master -------------------------------------------------
    for m in &net.layout.masters {
        let (code, html) = page(&net, m.gateway, "/explorer");
        assert_eq!(code, 200, "{html}");
        assert!(html.contains("<b>leader</b>"), "{html}");
        assert!(html.contains("masters agree"), "{html}");
        assert!(html.contains("Governance proposals"), "{html}");
        assert!(html.contains("hx-trigger=\"every 3s\""), "{html}");
    }

    // --- nothing unreleased on any page -------------------------------------------------------
    let pages = [
        format!("/explorer/tasks/{luckin_task}"),
        format!("/explorer/tasks/{train_task}"),
        "/explorer/tasks".to_owned(),
        "/explorer/epochs/0".to_owned(),
        "/explorer/epochs/1".to_owned(),
        "/explorer".to_owned(),
    ];
    // The pages are kept as test output (target/tmp/explorer-pages/).
    let kept = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer-pages");
    std::fs::create_dir_all(&kept).unwrap();
    for p in &pages {
        let (_, html) = page(&net, gw, p);
        let name = p.trim_start_matches('/').replace('/', "_");
        std::fs::write(kept.join(format!("{name}.html")), &html).unwrap();
        for h in &handles {
            assert!(
                !html.contains(h.as_str()),
                "{p} shows the contact handle {h}"
            );
        }
        for word in ["subjects_evaluated", "eligible", "subjects_reserved"] {
            assert!(!html.contains(word), "{p} shows {word}");
        }
    }
    eprintln!("whole test {:.1} s", started.elapsed().as_secs_f64());
}
