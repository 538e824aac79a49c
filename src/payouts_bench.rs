//! `symphony bench payouts`: an epoch's producer payouts as one Merkle commitment
//! (`symphony_ledger::distributor`) against the per-account ledger path.
//!
//! The distributor side builds the tree over every producer's (index, producer,
//! amount, kind) leaf. That is the work that replaces one account write per
//! producer. It then claims a sample of leaves with their proofs against a claim
//! book. The baseline pays producers the way settlement does today: a redb
//! settlement ledger, `reward::distribute` from a Vault's dividend account, in sets of
//! at most `MAX_PAYOUT_INSTRUCTIONS`. It runs on `--baseline-producers`, and its
//! per-producer time is extrapolated to `--producers`.

use std::time::Instant;

use anyhow::{anyhow, Result};
use serde::Serialize;
use symphony_ledger::distributor::{ClaimBook, Distribution, DistributionLeaf};
use symphony_ledger::{
    AccountId, Genesis, LedgerConfig, PayoutId, PayoutInstruction, PayoutInstructionSet,
    PayoutKind, PayoutSource, RedbLedger, SettlementLedger, MAX_PAYOUT_INSTRUCTIONS,
};

#[derive(clap::Args)]
pub struct BenchPayoutsArgs {
    /// Producers paid in the epoch.
    #[arg(long, default_value_t = 1_000_000)]
    pub producers: u64,
    /// Producers paid through per-account ledger writes (the baseline).
    #[arg(long, default_value_t = 50_000)]
    pub baseline_producers: u64,
    /// Claims verified against the commitment (a sample of the producers).
    #[arg(long, default_value_t = 100_000)]
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
    /// Building the tree and its commitment, seconds (the ≤ 1 s target).
    pub commit_secs: f64,
    /// Bytes of the commitment the ledger stores.
    pub commitment_bytes: usize,
    /// Hashes in one proof (⌈log2 producers⌉ at most).
    pub proof_hashes: usize,
    /// Claims verified and paid against the claim book.
    pub claims: u64,
    /// Claims per second (proof built, verified, bitmap and total checked).
    pub claims_per_s: f64,
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

    let t = Instant::now();
    let d = Distribution::build("epoch-1/producers", 1, &leaves).map_err(|e| anyhow!("{e}"))?;
    let commit_secs = t.elapsed().as_secs_f64();
    let commitment = d.commitment().clone();
    let commitment_bytes = bcs::to_bytes(&commitment)?.len();

    let claims = args.claims.min(args.producers);
    let stride = (args.producers / claims.max(1)).max(1);
    let mut book = ClaimBook::new(commitment.clone());
    let mut proof_hashes = 0;
    let t = Instant::now();
    for k in 0..claims {
        let leaf = &leaves[(k * stride) as usize];
        let proof = d
            .proof(leaf.index)
            .ok_or_else(|| anyhow!("no proof for leaf {}", leaf.index))?;
        proof_hashes = proof_hashes.max(proof.siblings.len());
        book.claim(leaf, &proof).map_err(|e| anyhow!("{e}"))?;
    }
    let claims_secs = t.elapsed().as_secs_f64();
    let expected: u64 = (0..claims)
        .map(|k| leaves[(k * stride) as usize].amount)
        .sum();
    if book.paid() != expected {
        anyhow::bail!(
            "claims paid {} but the leaves add up to {expected}",
            book.paid()
        );
    }

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
        commitment_bytes,
        proof_hashes,
        claims,
        claims_per_s: claims as f64 / claims_secs.max(1e-9),
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
        "  Merkle commitment   {:>10.3} s   ({} bytes on the ledger, proofs of ≤ {} hashes)",
        figures.commit_secs, figures.commitment_bytes, figures.proof_hashes
    );
    println!(
        "  claims              {:>10.0} /s  ({} verified and paid)",
        figures.claims_per_s, figures.claims
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
    let mut ledger = RedbLedger::create(
        dir.path().join("ledger.redb"),
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
    .map_err(|e| anyhow!("{e}"))?;
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
