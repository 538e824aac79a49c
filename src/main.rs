//! `symphony`: the command line of Symphony (SCP).
/// mimalloc instead of glibc malloc: the gateway, consensus and Vault paths make many
/// small, short-lived allocations on several threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod attest_cmd;
mod compute_cmd;
mod deploy_cmd;
mod examples;
mod gov_cmd;
mod import_bench;
mod ledger_cmd;
mod luckin_bench;
mod output;
mod payouts_bench;
mod producer_cmd;
mod quote_cmd;
mod sim_cmd;
mod train_cmd;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use symphony_core::encoding::content_hash;
use symphony_deploy::loopback::{LoopbackCluster, LoopbackOptions};
use symphony_node::aggregation::AUDIENCE_HASH_TAG;
use symphony_node::network::{
    advertiser_key, CampaignOutcome, CampaignSpec, EmbeddedNetwork, NetworkParams, Observer,
    SignedRequest,
};

/// 2026-11-21T00:00:00Z: the embedded demo's fixed "now" (time is an input).
const DEMO_NOW_MS: u64 = 1_795_219_200_000;

#[derive(Parser)]
#[command(
    name = "symphony",
    version,
    about = "Symphony: SCP privacy data platform",
    after_help = "Examples:\n  symphony demo luckin                       the Luckin campaign on the embedded network\n  symphony demo train --json                 federated training, one JSON object\n  symphony devnet up                         3 masters + 4 enterprise nodes on 127.0.0.1\n  symphony task submit examples/luckin.toml  submit to the devnet, then `task watch req-…`\n  symphony completions bash                  tab completion for bash (zsh, fish, …)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a reference scenario on the embedded network.
    Demo {
        #[command(subcommand)]
        scenario: Demo,
    },
    /// Synthetic data.
    Data {
        #[command(subcommand)]
        action: DataCmd,
    },
    /// Vault operations.
    Vault {
        #[command(subcommand)]
        action: VaultCmd,
    },
    /// Protocol policy.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// Settlement ledger audits (reconcile, show).
    Ledger {
        #[command(subcommand)]
        action: ledger_cmd::LedgerCmd,
    },
    /// Deterministic fault simulation of the masters, Vault budgets and escrow:
    /// exits 1 on any violated invariant and prints how to replay the seed.
    Sim(sim_cmd::SimArgs),
    /// Run a master node process (consensus, API gateway, campaign worker).
    Master(deploy_cmd::NodeArgs),
    /// Run an enterprise node process (Vault + enclave behind mutual TLS).
    Enterprise(deploy_cmd::NodeArgs),
    /// Node and caller keys.
    Keys {
        #[command(subcommand)]
        action: deploy_cmd::KeysCmd,
    },
    /// A local multi-process network on 127.0.0.1.
    Devnet {
        #[command(subcommand)]
        action: deploy_cmd::DevnetCmd,
    },
    /// Submit and follow tasks through a master's API gateway.
    Task {
        #[command(subcommand)]
        action: deploy_cmd::TaskCmd,
    },
    /// The current epoch of a devnet, and closing it through governance.
    Epoch {
        #[command(subcommand)]
        action: gov_cmd::EpochCmd,
    },
    /// Governance proposals of a devnet: list, propose, vote (as a master).
    Gov {
        #[command(subcommand)]
        action: gov_cmd::GovCmd,
    },
    /// Benchmarks of the deployed network.
    Bench {
        #[command(subcommand)]
        action: deploy_cmd::BenchCmd,
    },
    /// Data producers: upload receipts, consent, budget, earnings, stake.
    Producer {
        #[command(subcommand)]
        action: producer_cmd::ProducerCmd,
    },
    /// Verify real TEE evidence (Intel SGX / TDX DCAP quotes).
    Attest {
        #[command(subcommand)]
        action: attest_cmd::AttestCmd,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  symphony completions bash > ~/.local/share/bash-completion/completions/symphony"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum Demo {
    /// The Luckin Coffee Singapore coupon campaign (audience selection end to end).
    Luckin(LuckinArgs),
    /// Federated training of a purchase-propensity model (composite `train` task).
    Train(train_cmd::TrainArgs),
    /// A `compute` task: customers and mean basket per home city, with DP noise.
    Compute(compute_cmd::ComputeArgs),
    /// Receipt Upload to Personal Vault: receipts OCR'd in the Vault enclave, quality
    /// rewards, and the Luckin campaign finding the producer.
    Parse(producer_cmd::ParseDemoArgs),
}

#[derive(clap::Args)]
struct LuckinArgs {
    /// People in the synthetic population.
    #[arg(long, default_value_t = 20_000)]
    subjects: u64,
    /// Purchase records in total.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Enterprise nodes (one Vault each).
    #[arg(long, default_value_t = 4)]
    vaults: u32,
    /// Seed of data, keys and selection.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Audience cap (overrides the spec).
    #[arg(long)]
    cap: Option<u64>,
    /// Campaign spec file (default: the embedded examples/luckin.toml).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Keep the network's files here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the generated plaintext import files (`data/*.jsonl`) after the Vaults
    /// imported them (default: deleted, only the encrypted Vaults stay).
    #[arg(long)]
    keep_plaintext: bool,
    /// Print one JSON object instead of the story.
    #[arg(long)]
    json: bool,
    /// Print the audience bound, ε and fee estimate without starting the network
    /// or spending anything.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Write one import file per Vault plus a consent file (the formats are in
    /// `symphony vault import --help`).
    #[command(
        after_help = "Example:\n  symphony data generate --subjects 20000 --vaults 4 --records 200000 --out data"
    )]
    Generate {
        /// People in the synthetic population (each held by one or more Vaults).
        #[arg(long)]
        subjects: u64,
        /// Vaults (one record file each: vault-01.jsonl …).
        #[arg(long)]
        vaults: u32,
        /// Purchase records in total, over all Vaults.
        #[arg(long)]
        records: u64,
        /// Seed: the same seed writes byte-identical files.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum VaultCmd {
    /// Import record or consent files into a Vault (created if missing).
    #[command(after_help = VAULT_IMPORT_FORMAT)]
    Import {
        /// The Vault file.
        #[arg(long)]
        vault: PathBuf,
        /// Vault id when creating.
        #[arg(long, default_value = "vault-01")]
        id: String,
        /// Files to import.
        files: Vec<PathBuf>,
    },
    /// A subject's privacy budget per usage scope: capacity, reserved, committed,
    /// remaining, and what replenishes at the next epoch boundary.
    Budget {
        /// The Vault file (not open in a running enterprise node: redb allows one
        /// process at a time).
        #[arg(long)]
        vault: PathBuf,
        /// The Vault key file (default: the Vault file with extension `key`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The subject (its pseudonymous id in this Vault).
        #[arg(long)]
        subject: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the active policy (fees, shares, privacy, staking).
    Show,
}

const DEFAULT_SPEC: &str = include_str!("../examples/luckin.toml");

/// `vault import --help`: the file formats (plain JSONL, one object per line).
const VAULT_IMPORT_FORMAT: &str = "\
File formats: JSONL (UTF-8, one JSON object per line; blank lines ignored; unknown
fields are errors). A file is validated whole before anything is written.

Record file (one Vault's rows; a subject's rows contiguous):
  {\"kind\":\"identity\",\"subject\":\"s-1f2e…\",\"contact_kind\":\"phone\",\"contact\":\"+6581234567\"}
  {\"kind\":\"geography\",\"subject\":\"s-1f2e…\",\"home_city\":\"Singapore\",\"home_country\":\"SG\"}
  {\"kind\":\"purchase\",\"subject\":\"s-1f2e…\",\"brand\":\"Luckin Coffee\",\"category\":\"coffee\",
   \"amount_minor\":460,\"currency\":\"SGD\",\"ts_ms\":1766020511000,\"store_city\":\"Singapore\",\"store_country\":\"SG\"}
  contact_kind: phone (E.164) or email; countries ISO 3166-1 alpha-2; currency ISO 4217;
  amount_minor: integer minor units; ts_ms: ms since the Unix epoch.

Consent file (rows name their vault; rows for other Vaults are skipped):
  {\"kind\":\"consent\",\"vault\":\"vault-01\",\"subject\":\"s-1f2e…\",\"scope\":\"marketing\",\"granted\":true,\"at_ms\":1752000000000}
  {\"kind\":\"budget\",\"vault\":\"vault-01\",\"subject\":\"s-1f2e…\",\"scope\":\"marketing\",\"capacity_micro\":1000000,\"spent_micro\":0}
  scope: personal, marketing, analytics or training.

Example:
  symphony data generate --subjects 1000 --vaults 2 --records 10000 --out data\n  symphony vault import --vault v1.redb --id vault-01 data/vault-01.jsonl data/consent.jsonl";

pub(crate) struct Story {
    json: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    /// Progress goes to a terminal (a bar) or elsewhere (plain lines at each quarter).
    terminal: bool,
    /// The last quarter printed as a plain line, per label.
    quarter: Option<(String, u64)>,
}

impl Story {
    pub(crate) fn new(json: bool) -> Self {
        use std::io::IsTerminal;
        Story {
            json,
            bar: None,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            quarter: None,
        }
    }
}

impl Observer for Story {
    fn step(&mut self, name: &str, detail: &str) {
        if self.json {
            return;
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let t = self.started.elapsed().as_secs_f64();
        println!("  [{t:7.2}s] {name:<28} {detail}");
    }
    fn progress(&mut self, label: &str, done: u64, total: u64) {
        if self.json {
            return;
        }
        if !self.terminal {
            // Not a terminal (a log, a pipe): a plain line at 0, 25, 50, 75 and 100 %.
            let q = (done.saturating_mul(4)).checked_div(total).unwrap_or(4);
            let new = match &self.quarter {
                Some((l, last)) => l != label || q > *last,
                None => true,
            };
            if new {
                let t = self.started.elapsed().as_secs_f64();
                println!("  [{t:7.2}s] {label:<28} {done}/{total}");
                self.quarter = Some((label.to_owned(), q));
            }
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "  {msg:<12} [{bar:40}] {human_pos}/{human_len} {percent:>3}%  eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(label.to_owned());
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }
}

fn demo_luckin(args: LuckinArgs) -> Result<()> {
    let text = match &args.spec {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => DEFAULT_SPEC.to_owned(),
    };
    let mut spec: CampaignSpec = toml::from_str(&text).with_context(|| {
        format!(
            "campaign spec {}",
            args.spec
                .as_ref()
                .map_or("(the embedded examples/luckin.toml)".into(), |p| p
                    .display()
                    .to_string())
        )
    })?;
    if let Some(cap) = args.cap {
        spec.audience_cap = cap;
    }
    if args.dry_run {
        let spec = symphony_node::task::TaskSpec::Query(spec);
        return quote_cmd::print_dry_run(&spec, args.vaults, args.json);
    }
    if !args.json {
        println!(
            "Symphony embedded network — Luckin coupon campaign ({} in {})",
            spec.brand, spec.country
        );
    }
    let mut story = Story::new(args.json);
    let net_args = NetArgs {
        subjects: args.subjects,
        records: args.records,
        vaults: args.vaults,
        seed: args.seed,
        dir: args.dir.clone(),
        keep_plaintext: args.keep_plaintext,
    };
    let mut emb = Embedded::start(&net_args, &[spec.advertiser.as_str()], &mut story)?;
    let key = advertiser_key(args.seed, &spec.advertiser);
    let req = SignedRequest::sign(spec, 1, &key)?;
    let outcome = emb.net.run_campaign(&req, &mut story)?;
    let epoch = epoch_of(&emb.net, &outcome.task_id);
    let consensus = emb.stop()?.with_epoch(epoch);
    let result_hash = content_hash(AUDIENCE_HASH_TAG, &outcome.audience)?.to_hex();
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("audience");
            o.insert("result_hash".into(), result_hash.into());
            o.insert("consensus".into(), serde_json::to_value(&consensus)?);
            o.insert("epoch".into(), epoch.json());
        }
        crate::output::print_json(&v)?;
    } else {
        summary(&outcome, &consensus, story.started.elapsed().as_secs_f64());
    }
    ended(&outcome.task_id, &outcome.states, outcome.reason.as_deref())
}

/// The size and place of an embedded network.
pub(crate) struct NetArgs {
    pub(crate) subjects: u64,
    pub(crate) records: u64,
    pub(crate) vaults: u32,
    pub(crate) seed: u64,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) keep_plaintext: bool,
}

/// An embedded network whose masters are three openraft nodes over mutual TLS on
/// 127.0.0.1: the same consensus node, log store and replicated state machine a
/// deployed master runs.
pub(crate) struct Embedded {
    pub(crate) net: EmbeddedNetwork,
    masters: LoopbackCluster,
    _tmp: Option<tempfile::TempDir>,
}

impl Embedded {
    /// Builds the network (data, Vaults, ledger) for `submitters` and starts the masters.
    pub(crate) fn start(
        args: &NetArgs,
        submitters: &[&str],
        story: &mut dyn Observer,
    ) -> Result<Self> {
        let (dir, tmp) = match &args.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::tempdir()?;
                (t.path().to_owned(), Some(t))
            }
        };
        let params = NetworkParams {
            subjects: args.subjects,
            vaults: args.vaults,
            records: args.records,
            seed: args.seed,
            now_ms: DEMO_NOW_MS,
        };
        let mut net = EmbeddedNetwork::build(&dir, &params, submitters, story)?;
        if !args.keep_plaintext {
            net.remove_plaintext()?;
        }
        let masters = LoopbackCluster::start(
            &dir.join("masters"),
            &LoopbackOptions {
                cluster_id: "symphony-embedded".into(),
                key_seed: Some(args.seed),
                ..LoopbackOptions::default()
            },
        )?;
        let addrs: Vec<String> = masters
            .nodes()
            .iter()
            .map(|n| n.local_addr().to_string())
            .collect();
        net.master.masters = Box::new(masters.replicator()?);
        story.step(
            "consensus",
            &format!(
                "3 masters under openraft (mutual TLS, fsync) on {}",
                addrs.join(", ")
            ),
        );
        Ok(Embedded {
            net,
            masters,
            _tmp: tmp,
        })
    }

    /// Waits for the three replicas to converge, stops them, and reports.
    pub(crate) fn stop(self) -> Result<ConsensusSummary> {
        let roots = self
            .masters
            .converged_roots(std::time::Duration::from_secs(10))?;
        let agree = roots.windows(2).all(|w| w[0] == w[1]);
        let consensus = ConsensusSummary {
            masters: roots.len(),
            log_index: roots.first().and_then(|r| r.0).unwrap_or(0),
            state_root: roots.first().map(|r| hex::encode(r.1)).unwrap_or_default(),
            roots_agree: agree,
            epoch: None,
        };
        self.masters.shutdown()?;
        if !agree {
            bail!("master state roots diverged: {roots:?}");
        }
        Ok(consensus)
    }
}

/// What the demo reports of the masters' consensus after the campaign.
#[derive(serde::Serialize)]
pub(crate) struct ConsensusSummary {
    masters: usize,
    log_index: u64,
    state_root: String,
    roots_agree: bool,
    /// The epoch the task ran in (a summary row; in JSON as the top-level `epoch`).
    #[serde(skip)]
    epoch: Option<EpochInfo>,
}

impl ConsensusSummary {
    /// The summary with the epoch its task ran in.
    pub(crate) fn with_epoch(mut self, epoch: EpochInfo) -> Self {
        self.epoch = Some(epoch);
        self
    }
}

/// The epoch and policy version a demo's task ran in (its envelope's: the
/// Governance Service's epoch and active policy at admission).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpochInfo {
    epoch_id: u64,
    policy_version: u32,
}

impl EpochInfo {
    /// `{"epoch_id": …, "policy_version": …}`.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({"epoch_id": self.epoch_id, "policy_version": self.policy_version})
    }

    /// The summary row.
    pub(crate) fn row(&self) -> (&'static str, String) {
        (
            "epoch / policy",
            format!("epoch-{} / policy-v{}", self.epoch_id, self.policy_version),
        )
    }
}

/// The epoch and policy version `task_id` was admitted in (the current ones if
/// the task was never admitted).
pub(crate) fn epoch_of(net: &EmbeddedNetwork, task_id: &str) -> EpochInfo {
    let state = net.master.masters.state();
    let admitted = symphony_core::ids::TaskId::new(task_id.to_owned())
        .ok()
        .and_then(|t| state.task(&t))
        .map(|r| (r.envelope.body().epoch_id, r.envelope.body().policy_version));
    let (epoch, policy) =
        admitted.unwrap_or((state.current_epoch(), state.active_policy_version()));
    EpochInfo {
        epoch_id: epoch.0,
        policy_version: policy.0,
    }
}

/// Widest value cell of a summary table; longer values wrap (at ` → ` or a space).
const TABLE_VALUE_WIDTH: usize = 64;

/// `text` in lines of at most `width` characters, broken after a space where one is.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_inclusive(' ') {
        if line.chars().count() + word.trim_end().chars().count() > width && !line.is_empty() {
            lines.push(line.trim_end().to_owned());
            line.clear();
        }
        line.push_str(word);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            let tail: String = line.chars().skip(width).collect();
            lines.push(head);
            line = tail;
        }
    }
    if !line.trim_end().is_empty() || lines.is_empty() {
        lines.push(line.trim_end().to_owned());
    }
    lines
}

/// A demo's summary table: one row per `(label, value)`, boxed; the columns are as
/// wide as their widest cell and a long value wraps onto further lines, never cut.
pub(crate) fn print_table(rows: &[(&str, String)]) {
    let key_w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let wrapped: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, v)| wrap(v, TABLE_VALUE_WIDTH))
        .collect();
    let val_w = wrapped
        .iter()
        .flatten()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let bar = |l: &str, m: &str, r: &str| {
        format!(
            "  {l}{}{m}{}{r}",
            "─".repeat(key_w + 2),
            "─".repeat(val_w + 2)
        )
    };
    println!();
    println!("{}", bar("┌", "┬", "┐"));
    for ((k, _), lines) in rows.iter().zip(&wrapped) {
        for (i, line) in lines.iter().enumerate() {
            let key = if i == 0 { *k } else { "" };
            println!("  │ {key:<key_w$} │ {line:<val_w$} │");
        }
    }
    println!("{}", bar("└", "┴", "┘"));
}

/// The rows every single-round task's summary shows: identity and lifecycle first.
pub(crate) fn head_rows(task_id: &str, states: &[String]) -> Vec<(&'static str, String)> {
    vec![
        ("task_id", task_id.to_owned()),
        ("final state", states.last().cloned().unwrap_or_default()),
        ("lifecycle", states.join(" → ")),
    ]
}

/// The money and consensus rows every task's summary ends with.
pub(crate) fn money_rows(
    fee_locked: u64,
    fee_total: u64,
    refund: u64,
    settlement_state: Option<&str>,
    c: &ConsensusSummary,
    secs: f64,
) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        (
            "fee locked / charged",
            format!(
                "{} / {}",
                symphony_economics::format_sym(fee_locked),
                symphony_economics::format_sym(fee_total)
            ),
        ),
        ("refund", symphony_economics::format_sym(refund)),
        ("settlement", settlement_state.unwrap_or("-").to_owned()),
    ];
    rows.extend(c.epoch.map(|e| e.row()));
    rows.extend([
        (
            "master consensus (openraft)",
            format!(
                "{} replicas at log {}, roots {}",
                c.masters,
                c.log_index,
                if c.roots_agree { "agree" } else { "DIVERGE" }
            ),
        ),
        ("wall time", format!("{secs:.2} s")),
    ]);
    rows
}

/// The rejection reason and the fee split under a summary table.
pub(crate) fn print_reason_and_shares(
    reason: Option<&str>,
    shares: &std::collections::BTreeMap<String, u64>,
) {
    if let Some(r) = reason {
        println!("  reason: {r}");
    }
    if !shares.is_empty() {
        println!("  fee shares:");
        let w = shares.keys().map(|k| k.chars().count()).max().unwrap_or(0);
        for (k, v) in shares {
            println!("    {k:<w$}  {:>22}", symphony_economics::format_sym(*v));
        }
    }
}

fn summary(o: &CampaignOutcome, c: &ConsensusSummary, secs: f64) {
    let mut rows = head_rows(&o.task_id, &o.states);
    rows.extend([
        ("eligible (before cap)", o.eligible_count.to_string()),
        (
            "delivered / cap",
            format!("{} / {}", o.delivered_count, o.audience_cap),
        ),
        (
            "vaults responded / quorum",
            format!("{} / {}", o.vaults_responded, o.minimum_vault_quorum),
        ),
        ("subjects evaluated", o.subjects_evaluated.to_string()),
        ("ε committed per subject", o.epsilon_committed.clone()),
        (
            "attestations verified",
            format!(
                "{} (software enclave: development backend)",
                o.attestations_verified
            ),
        ),
        (
            "commit certificate",
            format!("{}/3 master signatures", o.certificate_signatures),
        ),
    ]);
    rows.extend(money_rows(
        o.fee_locked,
        o.fee_total,
        o.refund,
        o.settlement_state.as_deref(),
        c,
        secs,
    ));
    print_table(&rows);
    print_reason_and_shares(o.reason.as_deref(), &o.fee_shares);
    if !o.audience.is_empty() {
        let sample: Vec<&str> = o.audience.iter().take(3).map(String::as_str).collect();
        println!("  first delivered handles: {}", sample.join(", "));
    }
}

/// A task that ended without a result: `symphony` exits with [`EXIT_REJECTED`] or
/// [`EXIT_TIMED_OUT`] after printing what it has (README, "Exit codes").
#[derive(Debug, thiserror::Error)]
#[error("task {task} ended {status}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
pub(crate) struct TaskEnded {
    pub(crate) task: String,
    pub(crate) status: String,
    pub(crate) reason: Option<String>,
}

/// Exit code of a task that ended `rejected`.
pub(crate) const EXIT_REJECTED: u8 = 3;
/// Exit code of a task that ended `timed_out`.
pub(crate) const EXIT_TIMED_OUT: u8 = 4;

/// `Err(TaskEnded)` when the lifecycle's last state is not `completed`.
pub(crate) fn ended(task: &str, states: &[String], reason: Option<&str>) -> Result<()> {
    match states.last().map(String::as_str) {
        Some("rejected") | Some("timed_out") => Err(TaskEnded {
            task: task.to_owned(),
            status: states.last().cloned().unwrap_or_default(),
            reason: reason.map(str::to_owned),
        }
        .into()),
        _ => Ok(()),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<TaskEnded>() {
                Some(t) if t.status == "timed_out" => std::process::ExitCode::from(EXIT_TIMED_OUT),
                Some(_) => std::process::ExitCode::from(EXIT_REJECTED),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

fn run() -> Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = examples::with_examples(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Cmd::Ledger { action } => ledger_cmd::run(action),
        Cmd::Attest { action } => attest_cmd::run(action),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut examples::with_examples(Cli::command()),
                "symphony",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Sim(args) => sim_cmd::sim(args),
        Cmd::Demo {
            scenario: Demo::Train(args),
        } => train_cmd::demo_train(args, DEMO_NOW_MS),
        Cmd::Demo {
            scenario: Demo::Luckin(args),
        } => demo_luckin(args),
        Cmd::Demo {
            scenario: Demo::Compute(args),
        } => compute_cmd::demo_compute(args),
        Cmd::Demo {
            scenario: Demo::Parse(args),
        } => producer_cmd::demo_parse(args),
        Cmd::Producer { action } => producer_cmd::run(action),
        Cmd::Master(args) => deploy_cmd::master(args),
        Cmd::Enterprise(args) => deploy_cmd::enterprise(args),
        Cmd::Keys { action } => deploy_cmd::keys(action),
        Cmd::Devnet { action } => deploy_cmd::devnet(action, DEMO_NOW_MS),
        Cmd::Task { action } => deploy_cmd::task(action),
        Cmd::Bench { action } => deploy_cmd::bench(action, DEFAULT_SPEC),
        Cmd::Epoch { action } => gov_cmd::epoch(action),
        Cmd::Gov { action } => gov_cmd::gov(action),
        Cmd::Data {
            action:
                DataCmd::Generate {
                    subjects,
                    vaults,
                    records,
                    seed,
                    out,
                },
        } => {
            let s = symphony_vault::generate(
                &symphony_vault::GenerateParams {
                    subjects,
                    vaults,
                    records,
                    seed,
                    now_ms: DEMO_NOW_MS,
                },
                &out,
            )?;
            println!(
                "wrote {} record rows to {} Vault files and {} consent rows to {}",
                s.record_rows,
                s.vault_files.len(),
                s.consent_rows,
                s.consent_file.display()
            );
            Ok(())
        }
        Cmd::Vault {
            action: VaultCmd::Import { vault, id, files },
        } => vault_import(vault, id, files),
        Cmd::Vault {
            action:
                VaultCmd::Budget {
                    vault,
                    key,
                    subject,
                    json,
                },
        } => vault_budget(vault, key, subject, json),
        Cmd::Policy {
            action: PolicyCmd::Show,
        } => {
            let p = symphony_economics::PolicyParams::default_v1();
            p.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            // The policy document itself (what `gov propose policy --file` reads):
            println!("{}", serde_json::to_string_pretty(&p)?); // a file, not a --json view
            Ok(())
        }
    }
}

fn vault_budget(path: PathBuf, key: Option<PathBuf>, subject: String, json: bool) -> Result<()> {
    use symphony_core::consent::UsageScope;
    let key_path = key.unwrap_or_else(|| path.with_extension("key"));
    if !path.exists() {
        bail!("--vault {}: no such Vault file", path.display());
    }
    let key = symphony_vault::VaultKey::load(&key_path)
        .with_context(|| format!("--key {}: reading the Vault key", key_path.display()))?;
    // Entropy for nonces of anything the Vault writes (this command only reads).
    let mut entropy = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut entropy))
        .context("OS randomness")?;
    let vault = symphony_vault::Vault::open(&path, &key, entropy).with_context(|| {
        format!(
            "--vault {}: opening (a running enterprise node holds it open)",
            path.display()
        )
    })?;
    let subject_id = symphony_core::ids::SubjectId::new(subject.clone())
        .with_context(|| format!("--subject {subject:?}"))?;
    let policy = symphony_economics::PolicyParams::default_v1();
    let mut scopes = serde_json::Map::new();
    for scope in UsageScope::ALL {
        let a = vault.budget_account(&subject_id, scope)?;
        scopes.insert(
            scope.to_string(),
            serde_json::json!({
                "capacity": a.capacity().to_string(),
                "reserved": a.reserved().to_string(),
                "committed": a.committed().to_string(),
                "remaining": a.remaining().to_string(),
                "last_replenished_epoch": a.last_replenished().0,
                "replenishes_per_epoch": policy.privacy.epsilon_replenish_per_epoch.get(scope).to_string(),
            }),
        );
    }
    let v = serde_json::json!({
        "vault": vault.vault_id().to_string(),
        "subject": subject,
        "scopes": scopes,
        "replenishment": "at the next epoch boundary, under the Governance Service's policy",
    });
    if json {
        crate::output::print_json(&v)?;
        return Ok(());
    }
    println!("privacy budget of {subject} in {}", vault.vault_id());
    println!(
        "  {:<10} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "scope", "capacity", "reserved", "committed", "remaining", "+ per epoch"
    );
    for (scope, a) in &scopes {
        println!(
            "  {:<10} {:>10} {:>10} {:>10} {:>10} {:>14}",
            scope,
            a["capacity"].as_str().unwrap_or(""),
            a["reserved"].as_str().unwrap_or(""),
            a["committed"].as_str().unwrap_or(""),
            a["remaining"].as_str().unwrap_or(""),
            a["replenishes_per_epoch"].as_str().unwrap_or(""),
        );
    }
    println!("  budgets replenish at the next epoch boundary (Governance Service)");
    Ok(())
}

fn vault_import(path: PathBuf, id: String, files: Vec<PathBuf>) -> Result<()> {
    if files.is_empty() {
        bail!("name at least one file to import");
    }
    let key_path = path.with_extension("key");
    let (new_key, new_db) = (!key_path.exists(), !path.exists());
    let result = import_into(&path, &key_path, id, &files);
    if result.is_err() {
        // A failed first import leaves nothing behind: no empty Vault, no unused key.
        if new_db {
            let _ = std::fs::remove_file(&path);
        }
        if new_key {
            let _ = std::fs::remove_file(&key_path);
        }
    }
    result
}

fn import_into(path: &Path, key_path: &Path, id: String, files: &[PathBuf]) -> Result<()> {
    let key = if key_path.exists() {
        symphony_vault::VaultKey::load(key_path)?
    } else {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .context("reading OS randomness for a new Vault key")?;
        let k = symphony_vault::VaultKey::from_bytes(seed);
        k.save(key_path)?;
        k
    };
    let entropy = {
        let mut e = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut e))
            .context("OS randomness")?;
        e
    };
    let vault = if path.exists() {
        symphony_vault::Vault::open(path, &key, entropy)?
    } else {
        symphony_vault::Vault::create(
            path,
            symphony_vault::VaultConfig {
                vault_id: symphony_core::VaultId::new(id)?,
                default_budget: symphony_core::Epsilon::from_micro(
                    symphony_vault::generate::BUDGET_CAPACITY_MICRO,
                ),
                initial_epoch: symphony_core::EpochId::GENESIS,
            },
            &key,
            entropy,
        )?
    };
    for f in files {
        let bar = ProgressBar::new(0);
        let s = symphony_vault::import_file(
            &vault,
            f,
            &symphony_vault::ImportOptions::default(),
            &mut |p| {
                bar.set_length(p.lines_total);
                bar.set_position(p.lines_done);
            },
        )
        .map_err(|e| {
            bar.finish_and_clear();
            anyhow::anyhow!(
                "{e}\n(nothing from this file was stored; `symphony vault import --help` shows the JSONL formats)"
            )
        })?;
        bar.finish_and_clear();
        // Every kind of row is counted: records, consent changes, budget rows, and
        // what was skipped and why.
        let mut parts = vec![format!("{} rows", s.rows)];
        for (n, what) in [
            (s.inserted, "records inserted"),
            (s.duplicates, "duplicate records skipped"),
            (s.skipped_erased, "records of erased subjects skipped"),
            (s.consent_changes, "consent changes recorded"),
            (s.budget_rows, "budget accounts set"),
            (s.other_vault_rows, "rows for other Vaults skipped"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        println!("{}: {}", f.display(), parts.join(", "));
    }
    Ok(())
}
