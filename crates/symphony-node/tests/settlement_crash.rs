//! Crash during finalization: a child process settles a task against redb files and
//! is killed with SIGKILL after each step; on restart the settlement completes
//! exactly once — the ledger ends byte-for-byte in the state of an uninterrupted run
//! (same balances, escrows, stakes, payouts), each payout id executed once, and both
//! reconciliations pass.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use symphony_core::ids::TaskId;
use symphony_core::lifecycle::SettlementState;
use symphony_ledger::{LedgerState, RedbLedger, SettlementLedger};
use symphony_node::settlement::reconcile::reconcile_settlements;
use symphony_node::settlement::SettlementStore;

const CHILD: &str = env!("CARGO_BIN_EXE_settlement_crash");

fn run_to_end(dir: &Path) -> String {
    let out = Command::new(CHILD).arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("DONE finalized"), "{stdout}");
    stdout
}

fn kill_after(dir: &Path, step: &str) {
    let mut child = Command::new(CHILD)
        .arg(dir)
        .arg(step)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let wanted = format!("STEP {step}");
    loop {
        let line = lines.next().expect("child ended before the step").unwrap();
        if line == wanted {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
}

fn final_state(dir: &Path) -> LedgerState {
    let ledger = RedbLedger::open(dir.join("ledger.redb")).unwrap();
    ledger.reconcile().unwrap();
    let store = SettlementStore::open(dir.join("settlement.redb")).unwrap();
    let report = reconcile_settlements(&store, &ledger).unwrap();
    assert_eq!(report.settlements_finalized, 1);
    let row = store
        .row(&TaskId::new("task-fixture-77").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(row.state, SettlementState::Finalized);
    ledger.state().clone()
}

#[test]
fn killed_between_finalization_steps_completes_exactly_once() {
    let reference_dir = tempfile::tempdir().unwrap();
    run_to_end(reference_dir.path());
    let reference = final_state(reference_dir.path());
    assert!(
        reference.payouts.len() >= 4,
        "escrow set + 3 Vault dividend sets"
    );
    for step in [
        "certificate_stored",
        "escrow_paid_unrecorded",
        "escrow_paid",
        "refunded_unrecorded",
        "refunded",
        "paid",
        "finalized",
        "dividends:vault-00",
        "dividends:vault-01",
    ] {
        let dir = tempfile::tempdir().unwrap();
        kill_after(dir.path(), step);
        let out = run_to_end(dir.path());
        let state = final_state(dir.path());
        assert_eq!(state.balances, reference.balances, "after a kill at {step}");
        assert_eq!(state.escrows, reference.escrows, "after a kill at {step}");
        assert_eq!(state.stakes, reference.stakes, "after a kill at {step}");
        assert_eq!(state.payouts, reference.payouts, "after a kill at {step}");
        // A third start changes nothing.
        run_to_end(dir.path());
        assert_eq!(final_state(dir.path()), state, "{step}: {out}");
    }
}
