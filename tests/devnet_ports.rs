//! `symphony devnet up` picks ports by binding port 0 and releasing them before the
//! processes bind: another process can take one in between. The start moves the
//! ports and starts again when a node exits because its address is in use; on a
//! devnet that ran before, a taken Raft port (recorded by the Raft membership) is an
//! error naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use deployed::NOW_MS;
use symphony_deploy::client::https_request;
use symphony_deploy::config::MasterConfig;
use symphony_deploy::devnet::{prepare, start_processes, DevnetLayout, DevnetParams, StartedNode};
use symphony_node::network::Quiet;

/// Kills the started processes when dropped (also when an assertion fails).
struct Children(Vec<StartedNode>);

impl Drop for Children {
    fn drop(&mut self) {
        for n in &mut self.0 {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

fn addresses(layout: &DevnetLayout) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = layout.enterprises.iter().map(|e| e.addr).collect();
    for m in &layout.masters {
        out.push(m.raft);
        out.push(m.gateway);
    }
    out
}

fn leader(layout: &DevnetLayout, timeout: Duration) -> u64 {
    let roots = symphony_deploy::tls::load_roots(&layout.ca).unwrap();
    let tls = symphony_deploy::tls::public_client(roots).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for g in layout.gateways() {
            if let Ok(r) = rt.block_on(https_request(
                g,
                tls.clone(),
                "GET",
                "/v1/cluster",
                &[],
                Vec::new(),
            )) {
                leaders.push(r.json()["leader"].as_u64());
            }
        }
        if leaders.len() == 3 && leaders[0].is_some() && leaders.windows(2).all(|w| w[0] == w[1]) {
            return leaders[0].unwrap();
        }
        assert!(
            t.elapsed() < timeout,
            "no common leader within {timeout:?}: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn devnet_start_moves_ports_taken_after_they_were_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = prepare(
        dir.path(),
        &DevnetParams {
            enterprises: 1,
            subjects: 200,
            records: 1_000,
            seed: 7,
            now_ms: NOW_MS,
            advertiser: "advertiser:luckin".into(),
            rate_limit_per_s: 100,
            epoch_length_ms: None,
            max_tasks_per_epoch: None,
            personal_vault: false,
        },
        &mut Quiet,
    )
    .unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_symphony"));

    // Another process takes a Raft port, a gateway port and an enterprise port
    // between `prepare` and the start.
    let taken = [
        layout.masters[1].raft,
        layout.masters[2].gateway,
        layout.enterprises[0].addr,
    ];
    let holders: Vec<TcpListener> = taken
        .iter()
        .map(|a| TcpListener::bind(a).unwrap())
        .collect();
    let report = start_processes(&mut layout, exe, Duration::from_secs(60)).unwrap();
    let children = Children(report.started);
    assert!(report.port_moves >= 1, "no port was moved");
    assert_eq!(children.0.len(), 4);
    let now = addresses(&layout);
    for a in &taken {
        assert!(!now.contains(a), "{a} is still assigned: {now:?}");
    }
    // The manifest and every config hold the new addresses.
    let saved = DevnetLayout::load(&layout.dir).unwrap();
    assert_eq!(addresses(&saved), now);
    for m in &layout.masters {
        let config = MasterConfig::load(&m.config).unwrap();
        for (entry, lm) in config.masters.iter().zip(&layout.masters) {
            assert_eq!(entry.addr, lm.raft.to_string());
            assert_eq!(entry.gateway, lm.gateway.to_string());
        }
        assert_eq!(
            config.enterprises[0].addr,
            layout.enterprises[0].addr.to_string()
        );
    }
    let l = leader(&layout, Duration::from_secs(60));
    assert!((1..=3).contains(&l));
    drop(children);
    drop(holders);

    // The devnet ran: its Raft membership records the Raft addresses. A taken Raft
    // port is now an error naming the node, and the nodes started are stopped.
    let raft = layout.masters[0].raft;
    let _holder = TcpListener::bind(raft).unwrap();
    let e = start_processes(&mut layout, exe, Duration::from_secs(60))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("master-1: its Raft address {raft} is taken")),
        "{e}"
    );
    assert!(e.contains(&raft.to_string()), "{e}");
    assert_eq!(
        layout.masters[0].raft, raft,
        "a Raft address of a devnet that ran moved"
    );
    let saved = DevnetLayout::load(&layout.dir).unwrap();
    assert!(
        saved.pids.is_empty(),
        "stopped nodes left in the manifest: {:?}",
        saved.pids
    );
}
