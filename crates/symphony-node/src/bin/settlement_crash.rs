//! Crash-test child for the settlement plane (used by `tests/settlement_crash.rs`).
//!
//! `settlement_crash DIR [PAUSE_AT]` settles the deterministic fixture task against
//! `DIR/ledger.redb` and `DIR/settlement.redb`, printing `STEP <name>` after each
//! finalization step; with `PAUSE_AT` it stops after that step and waits to be
//! killed (SIGKILL). Run again without `PAUSE_AT`, it resumes from what was persisted
//! and prints `DONE`.
//!
//! The masters here are an in-process `LocalReplicator`, so their log does not
//! survive the kill (a deployed master's does: openraft over redb). Exactly-once
//! therefore rests only on what this test exercises: the settlement store (the
//! persisted final certificate and payout phase) and the ledger (payout by id).

use std::io::Write;
use std::path::Path;

use symphony_core::ids::{ActorId, EpochId};
use symphony_economics::rewards::ProducerUsage;
use symphony_ledger::RedbLedger;
use symphony_node::settlement::fixture;
use symphony_node::settlement::rewards::{pay_vault_dividends, vault_dividend_sets};
use symphony_node::settlement::{FinalizeStep, SettlementContext, SettlementStore};
use symphony_node::NodeError;

const SEED: u64 = 77;
const SUBJECTS: [u64; 3] = [150, 90, 60];

fn step_name(s: FinalizeStep) -> &'static str {
    match s {
        FinalizeStep::CertificateStored => "certificate_stored",
        FinalizeStep::EscrowPaidUnrecorded => "escrow_paid_unrecorded",
        FinalizeStep::EscrowPaid => "escrow_paid",
        FinalizeStep::RefundedUnrecorded => "refunded_unrecorded",
        FinalizeStep::Refunded => "refunded",
        FinalizeStep::Paid => "paid",
        FinalizeStep::Finalized => "finalized",
    }
}

fn report(name: &str, pause: Option<&str>) {
    println!("STEP {name}");
    let _ = std::io::stdout().flush();
    if pause == Some(name) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

fn producers(vault: usize, n: u64) -> Result<Vec<ProducerUsage>, NodeError> {
    (0..n)
        .map(|i| {
            Ok(ProducerUsage {
                producer: ActorId::new(format!("producer:v{vault}-s{i:04}"))
                    .map_err(|e| NodeError::Refused(e.to_string()))?,
                records_used: 1,
                epsilon_consumed: symphony_core::budget::Epsilon::from_milli(100),
                staked: false,
            })
        })
        .collect()
}

fn run(dir: &Path, pause: Option<&str>) -> Result<(), NodeError> {
    let mut fx = fixture::build(SEED, &SUBJECTS, 0, 40, EpochId(2))?;
    let ledger_path = dir.join("ledger.redb");
    let mut ledger = if ledger_path.exists() {
        RedbLedger::open(&ledger_path).map_err(|e| NodeError::Ledger(e.to_string()))?
    } else {
        let genesis = fixture::genesis(&fx.params, SUBJECTS.len())?;
        let mut l = RedbLedger::create(&ledger_path, &genesis)
            .map_err(|e| NodeError::Ledger(e.to_string()))?;
        fixture::fund(&mut l, &fx, SUBJECTS.len(), true)?;
        l
    };
    let store = SettlementStore::open(dir.join("settlement.redb"))?;
    let inputs = fx.inputs.clone();
    let mut ctx = SettlementContext {
        masters: &mut fx.masters,
        ledger: &mut ledger,
        verifier: &fx.verifier,
        store: &store,
        params: &fx.params,
    };
    match store.row(&inputs.task_id)? {
        None => {
            let (row, _) = ctx.open(&inputs, fixture::NOW_MS)?;
            let at = row.closes_at_ms.unwrap_or(fixture::NOW_MS);
            ctx.finalize(&inputs.task_id, at, &mut |s| report(step_name(s), pause))?;
        }
        Some(_) => {
            let resumed = ctx.resume_pending()?;
            println!("RESUMED {}", resumed.len());
        }
    }
    let row = store
        .row(&inputs.task_id)?
        .ok_or_else(|| NodeError::Io("no settlement row".into()))?;
    // The Vault side: each Vault pays its producers (idempotent by payout id).
    for (i, n) in SUBJECTS.iter().enumerate() {
        let vault = fixture::vault_ids(SUBJECTS.len())?.remove(i);
        let share = row
            .candidate
            .fee_shares
            .get(&format!("contributors:{vault}"))
            .copied()
            .unwrap_or(0);
        let sets = vault_dividend_sets(
            &vault,
            &row.task_id,
            share,
            &producers(i, *n)?,
            &fx.params,
            row.epoch_id,
        )?;
        pay_vault_dividends(&mut ledger, &store, &vault, &sets)?;
        report(&format!("dividends:{vault}"), pause);
    }
    println!("DONE {}", row.state);
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: settlement_crash DIR [PAUSE_AT]");
        std::process::exit(2);
    };
    let pause = args.next();
    if let Err(e) = run(Path::new(&dir), pause.as_deref()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
