//! `--dry-run` of `symphony demo luckin` and `symphony task submit`: the figures
//! a task would commit to (audience bound, ε per subject, fee estimate), from the
//! spec, the semantic registry and the genesis policy, without starting a network
//! or sending anything: nothing is reserved, locked or replicated. An invalid spec
//! is refused exactly as admission would refuse it.

use anyhow::Result;
use symphony_node::planes::quote::quote_genesis;
use symphony_node::task::TaskSpec;

fn sym(micro: u64) -> String {
    format!("{}.{:06} SYM", micro / 1_000_000, micro % 1_000_000)
}

/// Prints the quote of `spec` (one JSON object with `json`).
pub(crate) fn print_dry_run(spec: &TaskSpec, vaults: u32, json: bool) -> Result<()> {
    let q = quote_genesis(spec, vaults)?;
    if json {
        crate::output::print_json(&q)?;
        return Ok(());
    }
    println!(
        "dry run ({} task, policy v{}): nothing reserved, locked or sent",
        q.task_class, q.policy_version
    );
    match q.audience_bound {
        Some(n) => println!("  audience bound      at most {n} subjects"),
        None => println!("  audience bound      known once the Vaults reserve at admission"),
    }
    if let Some(n) = q.minimum_result_cardinality {
        println!("  minimum result      {n} subjects (smaller results are suppressed)");
    }
    println!(
        "  ε per subject       {} ({} scope)",
        q.epsilon_per_subject, q.usage_scope
    );
    println!(
        "  Vault quorum        {} of {}",
        q.minimum_vault_quorum, q.vaults
    );
    match q.fee_estimate_micro_sym {
        Some(f) => println!(
            "  fee estimate        at most {} (escrow locked at admission)",
            sym(f)
        ),
        None => println!("  fee estimate        set at admission from the subjects reserved"),
    }
    println!(
        "  if rejected         {} (base fee)",
        sym(q.rejection_fee_micro_sym)
    );
    Ok(())
}
