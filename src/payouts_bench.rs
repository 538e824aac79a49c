//! `symphony bench payouts`: an epoch's producer payouts as one Merkle commitment
//! (`symphony_ledger::distributor`) against the per-account ledger path.
//!
//! The distributor side builds the tree over every producer's (index, producer,
//! amount, kind) leaf and commits its root through the real redb settlement ledger
//! (`Command::CommitDistribution`: one durable write moving the total from the
//! Vault's dividend account into the distribution's pool). That is the work that
//! replaces one account write per producer. It then claims a sample of leaves with
//! their proofs through the same ledger (`Command::ClaimDistribution`, one durable
//! write each, as producers would, one by one) and reconciles the ledger, which
//! replays the log and re-verifies every claim against the root. The baseline pays
//! producers the way settlement does today: a redb
//! settlement ledger, `reward::distribute` from a Vault's dividend account, in sets of
//! at most `MAX_PAYOUT_INSTRUCTIONS`. It runs on `--baseline-producers`, and its
//! per-producer time is extrapolated to `--producers`.

use std::time::Instant;

use anyhow::{anyhow, Result};
use serde::Serialize;
use symphony_ledger::distributor::{Distribution, DistributionLeaf};
use symphony_ledger::{
    AccountId, DistributionId, Genesis, LedgerConfig, PayoutId, PayoutInstruction,
    PayoutInstructionSet, PayoutKind, PayoutSource, RedbLedger, SettlementLedger,
    MAX_PAYOUT_INSTRUCTIONS,
};

#[derive(clap::Args)]
pub struct BenchPayoutsArgs {
    /// Producers paid in the epoch.
    #[arg(long, default_value_t = 1_000_000)]
    pub producers: u64,
    /// Producers paid through per-account ledger writes (the baseline).
    #[arg(long, default_value_t = 50_000)]
    pub baseline_producers: u64,
    /// Claims paid through the ledger (a sample of the producers; each is one durable
    /// write).
    #[arg(long, default_value_t = 2_000)]
    pub claims: u64,
    /// One JSON line with the figures.
    #[arg(long)]
    pub json: bool,
}

/// What `symphony bench payouts` measured.
#[derive(Debug, Serialize)]
pub struct PayoutFigures {
    /// Producers in the distribution.
    pub producers: u64,
    /// Sum of their amounts, µSYM.
    pub total_micro_sym: u64,
    /// Building the tree and committing its root through the redb ledger, seconds
    /// (`tree_secs + ledger_commit_secs`; the ≤ 1 s target).
    pub commit_secs: f64,
    /// Building the tree (every leaf hashed, every level up to the root), seconds.
    pub tree_secs: f64,
    /// `CommitDistribution` through the redb ledger (one durable write), seconds.
    pub ledger_commit_secs: f64,
    /// Bytes of the commitment the ledger stores.
    pub commitment_bytes: usize,
    /// Hashes in one proof (⌈log2 producers⌉ at most).
    pub proof_hashes: usize,
    /// Claims paid through the redb ledger (`ClaimDistribution`).
    pub claims: u64,
    /// Claims per second through the ledger (proof built and verified, claimed set
    /// and pool checked, one durable write each).
    pub claims_per_s: f64,
    /// Reconciling the ledger after the claims (replay of the log, every claim's
    /// proof re-verified against the root), seconds.
    pub reconcile_secs: f64,
    /// Producers paid through the per-account ledger path.
    pub baseline_producers: u64,
    /// Their time, seconds.
    pub baseline_secs: f64,
    /// The baseline's per-producer time extrapolated to `producers`, seconds.
    pub baseline_secs_extrapolated: f64,
    /// `baseline_secs_extrapolated / commit_secs`.
    pub speedup: f64,
}

fn producer(i: u64) -> Result<AccountId> {
    AccountId::new(format!("producer:p{i:07}")).map_err(|e| anyhow!("{e}"))
}

/// A deterministic dividend per producer (1–1,000 µSYM).
fn amount(i: u64) -> u64 {
    1 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54)
}

pub fn bench(args: BenchPayoutsArgs) -> Result<()> {
    if args.producers == 0 {
        anyhow::bail!("--producers must be at least 1");
    }
    let leaves: Vec<DistributionLeaf> = (0..args.producers)
        .map(|i| {
            Ok(DistributionLeaf {
                index: i,
                recipient: producer(i)?,
                amount: amount(i),
                kind: PayoutKind::DataUsageDividend,
            })
        })
        .collect::<Result<_>>()?;

    let id = "epoch-1/producers";
    let total: u64 = leaves.iter().map(|l| l.amount).sum();
    let dir = tempfile::tempdir()?;
    let vault = AccountId::new("vault-dividends:bench").map_err(|e| anyhow!("{e}"))?;
    let mut ledger = bench_ledger(&dir.path().join("distributor.redb"), &vault, total)?;

    let t = Instant::now();
    let d = Distribution::build(id, 1, &leaves).map_err(|e| anyhow!("{e}"))?;
    let tree_secs = t.elapsed().as_secs_f64();
    let commitment = d.commitment().clone();
    let t = Instant::now();
    ledger
        .commit_distribution(PayoutSource::Account(vault.clone()), &commitment)
        .map_err(|e| anyhow!("{e}"))?;
    let ledger_commit_secs = t.elapsed().as_secs_f64();
    let commit_secs = tree_secs + ledger_commit_secs;
    let commitment_bytes = bcs::to_bytes(&commitment)?.len();

    let claims = args.claims.min(args.producers);
    let stride = (args.producers / claims.max(1)).max(1);
    let distribution_id = DistributionId::new(id).map_err(|e| anyhow!("{e}"))?;
    let mut proof_hashes = 0;
    let t = Instant::now();
    for k in 0..claims {
        let leaf = &leaves[(k * stride) as usize];
        let proof = d
            .proof(leaf.index)
            .ok_or_else(|| anyhow!("no proof for leaf {}", leaf.index))?;
        proof_hashes = proof_hashes.max(proof.siblings.len());
        ledger
            .claim_distribution(&distribution_id, leaf, &proof)
            .map_err(|e| anyhow!("claim of leaf {}: {e}", leaf.index))?;
    }
    let claims_secs = t.elapsed().as_secs_f64();
    let expected: u64 = (0..claims)
        .map(|k| leaves[(k * stride) as usize].amount)
        .sum();
    let paid = ledger
        .state()
        .distributions
        .get(&distribution_id)
        .map_or(0, |r| r.paid);
    if paid != expected {
        anyhow::bail!("claims paid {paid} but the leaves add up to {expected}");
    }
    let t = Instant::now();
    let report = ledger.reconcile().map_err(|e| anyhow!("{e}"))?;
    let reconcile_secs = t.elapsed().as_secs_f64();
    if report.claims as u64 != claims {
        anyhow::bail!("reconcile saw {} claims, not {claims}", report.claims);
    }
    drop(ledger);

    let baseline_producers = args.baseline_producers.min(args.producers);
    let baseline_secs = baseline(&leaves[..baseline_producers as usize])?;
    let baseline_secs_extrapolated = if baseline_producers == 0 {
        0.0
    } else {
        baseline_secs * args.producers as f64 / baseline_producers as f64
    };
    let figures = PayoutFigures {
        producers: args.producers,
        total_micro_sym: commitment.total,
        commit_secs,
        tree_secs,
        ledger_commit_secs,
        commitment_bytes,
        proof_hashes,
        claims,
        claims_per_s: claims as f64 / claims_secs.max(1e-9),
        reconcile_secs,
        baseline_producers,
        baseline_secs,
        baseline_secs_extrapolated,
        speedup: baseline_secs_extrapolated / commit_secs.max(1e-9),
    };
    if args.json {
        return crate::output::print_bench_json("payouts", &figures);
    }
    println!(
        "payouts to {} producers (total {} µSYM)",
        figures.producers, figures.total_micro_sym
    );
    println!(
        "  Merkle commitment   {:>10.3} s   (tree {:.3} s + one ledger write {:.4} s; {} bytes, proofs of ≤ {} hashes)",
        figures.commit_secs,
        figures.tree_secs,
        figures.ledger_commit_secs,
        figures.commitment_bytes,
        figures.proof_hashes
    );
    println!(
        "  claims              {:>10.0} /s  ({} verified and paid through the ledger, one durable write each)",
        figures.claims_per_s, figures.claims
    );
    println!(
        "  reconcile           {:>10.3} s   (log replayed, every claim re-verified)",
        figures.reconcile_secs
    );
    println!(
        "  per-account writes  {:>10.3} s   for {} producers → {:.1} s for {} ({:.0}× the commitment)",
        figures.baseline_secs,
        figures.baseline_producers,
        figures.baseline_secs_extrapolated,
        figures.producers,
        figures.speedup
    );
    println!("  load average {:?}", crate::output::load_average());
    Ok(())
}

/// Pays `leaves` through a redb settlement ledger, one `reward::distribute` per set
/// of at most `MAX_PAYOUT_INSTRUCTIONS`; returns the seconds.
fn baseline(leaves: &[DistributionLeaf]) -> Result<f64> {
    if leaves.is_empty() {
        return Ok(0.0);
    }
    let dir = tempfile::tempdir()?;
    let vault = AccountId::new("vault:bench").map_err(|e| anyhow!("{e}"))?;
    let total: u64 = leaves.iter().map(|l| l.amount).sum();
    let mut ledger = bench_ledger(&dir.path().join("ledger.redb"), &vault, total)?;
    let t = Instant::now();
    for (n, chunk) in leaves.chunks(MAX_PAYOUT_INSTRUCTIONS).enumerate() {
        let set = PayoutInstructionSet {
            payout_id: PayoutId::new(format!("bench-{n}")).map_err(|e| anyhow!("{e}"))?,
            epoch_id: 0,
            settlement_ref: "bench".into(),
            instructions: chunk
                .iter()
                .map(|l| PayoutInstruction {
                    recipient: l.recipient.clone(),
                    amount: l.amount,
                    kind: l.kind,
                })
                .collect(),
        };
        ledger
            .distribute(PayoutSource::Account(vault.clone()), &set)
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// A fresh redb settlement ledger whose only funds, `total`, sit in `vault`.
fn bench_ledger(path: &std::path::Path, vault: &AccountId, total: u64) -> Result<RedbLedger> {
    RedbLedger::create(
        path,
        &Genesis {
            config: LedgerConfig {
                unbonding_period_epochs: 1,
                min_stake_master: 1,
                min_stake_enterprise: 1,
                min_stake_producer: 1,
            },
            allocations: vec![(vault.clone(), total)],
        },
    )
    .map_err(|e| anyhow!("{e}"))
}
