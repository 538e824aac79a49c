//! `symphony ledger reconcile|show --dir DIR`: audit the settlement ledger that
//! `symphony demo luckin --dir DIR` keeps in `DIR/ledger.redb` (with the settlement
//! plane's `DIR/settlement.redb`), or — when DIR is a devnet (`devnet.json`) — the
//! replicated ledger of its masters, running or stopped
//! (`symphony_deploy::ledger_export`).
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use symphony_node::settlement::reconcile::reconcile_dir;
use symphony_node::settlement::summary::{
    summarize, summarize_dir, AccountRole, AccountRow, LedgerFilter, LedgerSummary,
};
use symphony_node::settlement::SettlementStore;

/// Ledger audits.
#[derive(Subcommand)]
pub enum LedgerCmd {
    /// Prove that every finalized settlement was paid exactly once, that nothing was
    /// paid before finality, that per-epoch payout sets match the ledger, that every
    /// dividend distribution's kept leaves rebuild its committed root and total (claims
    /// paid ≤ total), and that balances equal the sum of the ledger's events. Exit
    /// code 1 on any discrepancy.
    Reconcile {
        /// The network directory (holds ledger.redb and settlement.redb).
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print accounts (role, balance, stake), escrows, settlements, per-epoch
    /// payout sets and dividend distributions (id, epoch, leaves, total, claimed), labelled; producers are summed by role unless `--all` or
    /// `--account` lists them. DIR is a demo's `--dir` or a devnet.
    #[command(
        after_help = "Examples:\n  symphony ledger show --dir symphony-devnet\n  symphony ledger show --dir symphony-devnet --account luckin\n  symphony ledger show --dir net --epoch 0 --json"
    )]
    Show {
        /// The network directory (a demo's `--dir`, or a devnet's directory).
        #[arg(long)]
        dir: PathBuf,
        /// Only accounts whose id contains this text, with each payment they received.
        #[arg(long)]
        account: Option<String>,
        /// Only the settlements and payout sets of this epoch.
        #[arg(long)]
        epoch: Option<u64>,
        /// List every account, producers too.
        #[arg(long)]
        all: bool,
        /// One JSON object (µSYM integers).
        #[arg(long)]
        json: bool,
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
                crate::output::print_json(&r)?;
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
                    "  dividend distributions    {} ({} of {} leaves claimed, {} of {} µSYM; roots rebuilt)",
                    r.distributions.distributions,
                    r.distributions.claimed,
                    r.distributions.leaves,
                    r.distributions.claimed_micro_sym,
                    r.distributions.committed_micro_sym
                );
                println!(
                    "  total supply              {} = genesis {} + minted {}",
                    r.total_supply, r.genesis_supply, r.minted_total
                );
            }
            Ok(())
        }
        LedgerCmd::Show {
            dir,
            account,
            epoch,
            all,
            json,
        } => {
            let filter = LedgerFilter { account, epoch };
            let s = if dir.join("devnet.json").exists() {
                let (export, _) =
                    symphony_deploy::ledger_export::read_devnet(&dir).with_context(|| {
                        format!("reading the replicated ledger of {}", dir.display())
                    })?;
                let ledger = export.ledger()?;
                let store = SettlementStore::frozen(export.settlement.clone());
                summarize(ledger.state(), &store, &filter)?
            } else {
                summarize_dir(&dir, &filter)
                    .with_context(|| format!("reading the ledger in {}", dir.display()))?
            };
            if json {
                return crate::output::print_json(&s);
            }
            print_summary(&dir, &s, all || filter.account.is_some());
            Ok(())
        }
    }
}

/// Prints `rows` under `headers` in aligned columns (numbers right-aligned).
fn columns(title: &str, headers: &[&str], rows: &[Vec<String>]) {
    println!();
    println!("{title}");
    if rows.is_empty() {
        println!("  (none)");
        return;
    }
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let numeric = |i: usize| {
        rows.iter().all(|r| {
            r[i].chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-')
        })
    };
    let right: Vec<bool> = (0..headers.len()).map(numeric).collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let width = w[i];
            if right[i] {
                out.push_str(&format!(" {c:>width$}"));
            } else {
                out.push_str(&format!(" {c:<width$}"));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_summary(dir: &std::path::Path, s: &LedgerSummary, list_all: bool) {
    let sym = symphony_economics::format_sym;
    let supply = s
        .total_supply_micro_sym
        .parse::<u64>()
        .map(sym)
        .unwrap_or_else(|_| format!("{} µSYM", s.total_supply_micro_sym));
    println!(
        "ledger of {}: epoch {}, total supply {supply} (genesis {} + minted {})",
        dir.display(),
        s.epoch,
        sym(s.genesis_supply_micro_sym),
        sym(s.minted_micro_sym)
    );
    if let Some(a) = &s.filter_account {
        println!("  accounts matching {a:?}");
    }
    if let Some(e) = s.filter_epoch {
        println!("  settlements and payout sets of epoch {e} (balances are current)");
    }
    columns(
        "accounts by role",
        &["role", "accounts", "balance"],
        &s.roles
            .iter()
            .map(|r| {
                vec![
                    r.role.label().into(),
                    r.accounts.to_string(),
                    sym(r.balance_micro_sym),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let listed: Vec<&AccountRow> = s
        .accounts
        .iter()
        .filter(|a| list_all || a.role != AccountRole::Producer)
        .collect();
    let hidden = s.accounts.len() - listed.len();
    let title = if hidden > 0 {
        format!("accounts ({hidden} producers summed above; --all or --account lists them)")
    } else {
        "accounts".to_owned()
    };
    columns(
        &title,
        &["account", "role", "balance", "bonded", "unbonding", "tier"],
        &listed
            .iter()
            .map(|a| {
                vec![
                    a.account.clone(),
                    a.role.label().into(),
                    sym(a.balance_micro_sym),
                    sym(a.bonded_micro_sym),
                    sym(a.unbonding_micro_sym),
                    a.stake_tier.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    );
    columns(
        "escrows",
        &[
            "escrow",
            "owner",
            "locked",
            "paid out",
            "refunded",
            "remaining",
        ],
        &s.escrows
            .iter()
            .map(|e| {
                vec![
                    e.escrow.clone(),
                    e.owner.clone(),
                    sym(e.locked_micro_sym),
                    sym(e.paid_out_micro_sym),
                    sym(e.refunded_micro_sym),
                    sym(e.remaining_micro_sym),
                ]
            })
            .collect::<Vec<_>>(),
    );
    columns(
        "settlements",
        &["task", "epoch", "state", "fee total", "refund"],
        &s.settlements
            .iter()
            .map(|t| {
                vec![
                    t.task_id.clone(),
                    t.epoch.to_string(),
                    t.state.clone(),
                    sym(t.fee_total_micro_sym),
                    sym(t.refund_micro_sym),
                ]
            })
            .collect::<Vec<_>>(),
    );
    columns(
        "epoch payout sets",
        &["epoch", "payout", "recipients", "total"],
        &s.epoch_payouts
            .iter()
            .map(|p| {
                vec![
                    p.epoch.to_string(),
                    p.payout_id.clone(),
                    p.recipients.to_string(),
                    sym(p.total_micro_sym),
                ]
            })
            .collect::<Vec<_>>(),
    );
    print_distributions_and_received(s);
}

/// The `ledger show` tables of dividend distributions and, for `--account`, the
/// payments the account received.
fn print_distributions_and_received(s: &LedgerSummary) {
    let sym = symphony_economics::format_sym;
    columns(
        "distributions (claimed by producers with a Merkle proof)",
        &[
            "distribution",
            "epoch",
            "leaves",
            "total",
            "claimed",
            "paid",
        ],
        &s.distributions
            .iter()
            .map(|d| {
                vec![
                    d.distribution_id.clone(),
                    d.epoch.to_string(),
                    d.leaves.to_string(),
                    sym(d.total_micro_sym),
                    d.claimed.to_string(),
                    sym(d.claimed_micro_sym),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if s.filter_account.is_some() {
        columns(
            "received",
            &["account", "epoch", "payout", "kind", "amount"],
            &s.received
                .iter()
                .map(|r| {
                    vec![
                        r.account.clone(),
                        r.epoch.to_string(),
                        r.payout_id.clone(),
                        r.kind.clone(),
                        sym(r.amount_micro_sym),
                    ]
                })
                .collect::<Vec<_>>(),
        );
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
                crate::output::print_json_line(
                    &serde_json::json!({"ok": false, "error": e.to_string()}),
                )?;
            }
            return Err(e).with_context(|| {
                format!("reconciling the replicated ledger of {}", dir.display())
            });
        }
    };
    if json {
        crate::output::print_json(&r)?;
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
