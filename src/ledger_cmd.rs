//! `symphony ledger reconcile|show --dir DIR`: audit the settlement ledger that
//! `symphony demo luckin --dir DIR` keeps in `DIR/ledger.redb` (with the settlement
//! plane's `DIR/settlement.redb`), or — when DIR is a devnet (`devnet.json`) — the
//! replicated ledger of its masters, running or stopped
//! (`symphony_deploy::ledger_export`).
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use symphony_node::settlement::reconcile::{reconcile_dir, summarize_dir};

/// Ledger audits.
#[derive(Subcommand)]
pub enum LedgerCmd {
    /// Prove that every finalized settlement was paid exactly once, that nothing was
    /// paid before finality, that per-epoch payout sets match the ledger, and that
    /// balances equal the sum of the ledger's events. Exit code 1 on any discrepancy.
    Reconcile {
        /// The network directory (holds ledger.redb and settlement.redb).
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print balances, stakes, escrows, settlements and per-epoch payouts.
    Show {
        /// The network directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs a ledger command.
pub fn run(cmd: LedgerCmd) -> Result<()> {
    match cmd {
        LedgerCmd::Reconcile { dir, json } if dir.join("devnet.json").exists() => {
            reconcile_devnet(&dir, json)
        }
        LedgerCmd::Reconcile { dir, json } => {
            let r = reconcile_dir(&dir)
                .with_context(|| format!("reconciling the ledger in {}", dir.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("ledger reconciled: {}", dir.display());
                println!("  events replayed           {}", r.ledger_events);
                println!("  payouts (each once)       {}", r.ledger_payouts);
                println!(
                    "  settlements finalized     {} of {}",
                    r.settlements_finalized, r.settlements
                );
                println!(
                    "  epoch payout sets matched {} (epochs {:?})",
                    r.epoch_payout_sets, r.epochs
                );
                println!(
                    "  total supply              {} = genesis {} + minted {}",
                    r.total_supply, r.genesis_supply, r.minted_total
                );
            }
            Ok(())
        }
        LedgerCmd::Show { dir } => {
            let s = summarize_dir(&dir)
                .with_context(|| format!("reading the ledger in {}", dir.display()))?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
    }
}

/// Reconciles the replicated ledger of the devnet in `dir` (the freshest master
/// copy). With `--json` a failure prints `{"ok": false, "error": …}` too.
fn reconcile_devnet(dir: &std::path::Path, json: bool) -> Result<()> {
    use symphony_deploy::ledger_export::{read_devnet, reconcile};
    let checked = read_devnet(dir).and_then(|(export, path)| Ok((reconcile(&export)?, path)));
    let (r, path) = match checked {
        Ok(x) => x,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            }
            return Err(e).with_context(|| {
                format!("reconciling the replicated ledger of {}", dir.display())
            });
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("replicated ledger reconciled: {}", path.display());
    println!(
        "  copy of master {} at log index {}",
        r.source_node, r.applied
    );
    println!("  events replayed           {}", r.ledger.ledger_events);
    println!("  payouts (each once)       {}", r.ledger.ledger_payouts);
    println!(
        "  settlements finalized     {} of {}",
        r.settlements_finalized, r.settlements
    );
    println!(
        "  in one epoch payout set   {} (epochs closed: {})",
        r.payouts_in_epoch_sets, r.epochs_closed
    );
    println!(
        "  node rewards minted       {} µSYM",
        r.rewards_minted_micro_sym
    );
    println!(
        "  total supply              {} = genesis {} + minted {}",
        r.ledger.total_supply, r.ledger.genesis_supply, r.ledger.minted_total
    );
    Ok(())
}
