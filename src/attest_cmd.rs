//! `symphony attest verify`: checks a real Intel SGX or TDX DCAP quote against
//! collateral files at an explicit time, under the development or production
//! attestation policy (`symphony-attest`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use symphony_attest::{parse_utc, verify_quote, AttestationPolicy, Collateral};

/// Attestation commands.
#[derive(Subcommand)]
pub enum AttestCmd {
    /// Verify a DCAP quote (binary, or hex text) against its collateral.
    ///
    /// Example: symphony attest verify quote.bin --collateral collateral.json --at 2025-06-20T00:00:00Z
    Verify {
        /// The quote file: raw bytes or hex text.
        quote: PathBuf,
        /// The collateral: a JSON file (PCK CRLs, TCB info, QE identity, issuer chains).
        #[arg(long)]
        collateral: PathBuf,
        /// Verification time: RFC 3339 UTC (`2025-06-20T00:00:00Z`) or seconds since
        /// the epoch (default: now).
        #[arg(long)]
        at: Option<String>,
        /// `development` (accepts every kind, non-revoked TCB) or `production`
        /// (hardware only, UpToDate / SWHardeningNeeded, fresh collateral).
        #[arg(long, default_value = "production")]
        policy: String,
        /// Print the evidence as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an attestation command.
pub fn run(cmd: AttestCmd) -> Result<()> {
    match cmd {
        AttestCmd::Verify {
            quote,
            collateral,
            at,
            policy,
            json,
        } => {
            let raw =
                std::fs::read(&quote).with_context(|| format!("reading {}", quote.display()))?;
            let text = String::from_utf8_lossy(&raw);
            let bytes = match hex::decode(text.trim().trim_start_matches("0x")) {
                Ok(b) if !b.is_empty() => b,
                _ => raw,
            };
            let c = Collateral::load(&collateral)?;
            let at = match at {
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .context("system clock before 1970")?
                    .as_secs(),
                Some(s) => match s.parse::<u64>() {
                    Ok(secs) => secs,
                    Err(_) => parse_utc(&s).with_context(|| {
                        format!(
                            "--at {s:?}: expected RFC 3339 UTC (2025-06-20T00:00:00Z) or seconds"
                        )
                    })?,
                },
            };
            let policy = match policy.as_str() {
                "development" => AttestationPolicy::development(),
                "production" => AttestationPolicy::production(),
                other => anyhow::bail!("--policy {other:?}: expected development or production"),
            };
            let e = verify_quote(&bytes, &c, at, &policy, None)
                .with_context(|| format!("{}", quote.display()))?;
            if json {
                crate::output::print_json(&e)?;
            } else {
                println!("{}: accepted", quote.display());
                println!("  kind          {}", e.kind);
                println!("  TCB status    {}", e.tcb_status);
                println!("  advisories    {}", e.advisory_ids.join(", "));
                if let Some(m) = &e.measurements.mr_enclave {
                    println!("  MRENCLAVE     {m}");
                }
                if let Some(m) = &e.measurements.mr_signer {
                    println!("  MRSIGNER      {m}");
                }
                if let Some(m) = &e.measurements.mr_td {
                    println!("  MRTD          {m}");
                }
                println!("  report data   {}", e.report_data);
                println!(
                    "  collateral    valid {} – {} (s since the epoch), verified at {}",
                    e.collateral_window.0, e.collateral_window.1, e.verified_at
                );
            }
            Ok(())
        }
    }
}
