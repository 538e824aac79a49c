//! Real processes on 127.0.0.1: master crashes (SIGKILL) and enterprise outages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::time::{Duration, Instant};

use deployed::{luckin, Net};

fn completed_once(net: &Net, ids: &[String]) {
    for id in ids {
        let s = net.wait_final(id, Duration::from_secs(120));
        assert_eq!(s["status"], "completed", "{id}: {s}");
        let r = net.result(id);
        assert_eq!(r["status"], "completed");
    }
}

#[test]
fn leader_killed_with_tasks_in_flight_then_one_and_two_masters_down() {
    let mut net = Net::start(4);
    let leader = net.wait_leader(None, Duration::from_secs(30));
    // Tasks in flight: acknowledged, the leader's worker busy with them.
    let ids: Vec<String> = (0..4).map(|_| net.submit_ok(luckin())).collect();
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    net.kill(&format!("master-{leader}"));
    let new_leader = net.wait_leader(Some(leader), Duration::from_secs(15));
    let election = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("new leader master-{new_leader} after {election:?}");
    completed_once(&net, &ids);
    // Attempts a crashed leader left unfinished were aborted: their reservations are
    // gone from every Vault (no budget stays double-reserved).
    let mut aborted = 0;
    for id in &ids {
        let st = net.get(&format!("/v1/tasks/{id}")).json();
        let attempts: Vec<String> = st["attempt_task_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        for t in &attempts[..attempts.len() - 1] {
            aborted += 1;
            assert!(
                net.release_on_vaults(t).iter().all(|n| *n == 0),
                "{t} kept reservations"
            );
        }
    }
    eprintln!("{aborted} attempt(s) aborted by the leader change");

    // Exactly once: every escrow paid at most once, nothing left locked; one
    // payout per completed request.
    let views = net.wait_converged(Duration::from_secs(20));
    let v = &views[0];
    assert_eq!(v["escrow_remaining_micro_sym"], 0, "{v}");
    assert_eq!(
        v["escrows_paid_out"].as_u64().unwrap(),
        ids.len() as u64,
        "{v}"
    );

    // The killed master restarts, catches up, and agrees on the state root.
    net.spawn(&format!("master-{leader}"));
    let views = net.wait_converged(Duration::from_secs(60));
    assert_eq!(views.len(), 3);

    // One master down: the cluster still admits and completes.
    let follower = (1..=3).find(|m| *m != new_leader && *m != leader).unwrap();
    net.kill(&format!("master-{follower}"));
    let id = net.submit_ok(luckin());
    completed_once(&net, std::slice::from_ref(&id));

    // Two down: admission refused with a clear error, nothing lost.
    let root_before = net.wait_converged(Duration::from_secs(20))[0]["state_root"].clone();
    let other = (1..=3).find(|m| {
        *m != follower && net.children.contains_key(&format!("master-{m}")) && *m != new_leader
    });
    let second = other.unwrap_or(new_leader);
    net.kill(&format!("master-{second}"));
    let r = net.submit(luckin());
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].as_str().unwrap().contains("no quorum"));

    // Heal: both come back, the earlier results are intact, and new tasks complete.
    net.spawn(&format!("master-{follower}"));
    net.spawn(&format!("master-{second}"));
    net.wait_leader(None, Duration::from_secs(30));
    for id in ids.iter().chain(std::iter::once(&id)) {
        assert_eq!(net.result(id)["status"], "completed");
    }
    let id = net.submit_ok(luckin());
    completed_once(&net, &[id]);
    let views = net.wait_converged(Duration::from_secs(60));
    assert_eq!(views.len(), 3);
    assert_ne!(views[0]["state_root"], root_before);
    assert_eq!(views[0]["escrow_remaining_micro_sym"], 0);
}

#[test]
fn enterprise_down_above_and_below_the_vault_quorum() {
    let mut net = Net::start(4);
    // Default quorum: a majority of 4 Vaults = 3.
    net.kill("enterprise-3");
    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(120));
    assert_eq!(s["status"], "completed", "{s}");
    let o = net.result(&id)["outcome"].clone();
    assert_eq!(o["vaults_responded"], 3);

    net.kill("enterprise-2");
    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(120));
    assert_eq!(s["status"], "rejected", "{s}");
    let o = net.result(&id)["outcome"].clone();
    assert_eq!(o["states"].as_array().unwrap().last().unwrap(), "rejected");
    // The escrow is refunded (less what the settlement plane charges for work done
    // before the rejection, if anything) and nothing is left locked.
    let (refund, locked) = (
        o["refund"].as_u64().unwrap(),
        o["fee_locked"].as_u64().unwrap(),
    );
    assert!(
        refund > 0 && refund <= locked,
        "refund {refund} of {locked}"
    );
    let v = net.wait_converged(Duration::from_secs(20));
    assert_eq!(v[0]["escrow_remaining_micro_sym"], 0);

    // Reservations were released: asking the live Vaults (over mutual TLS, as a
    // master) to release the task's reservations again finds nothing left.
    let task_id = s["task_id"].as_str().unwrap().to_owned();
    assert_eq!(net.release_on_vaults(&task_id), vec![0, 0]);

    // With the Vaults back, the same subjects are
    // reserved again and the task completes with every Vault.
    net.spawn("enterprise-2");
    net.spawn("enterprise-3");
    std::thread::sleep(Duration::from_millis(500));
    let id = net.submit_ok(luckin());
    let s = net.wait_final(&id, Duration::from_secs(120));
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(net.result(&id)["outcome"]["vaults_responded"], 4);
}
