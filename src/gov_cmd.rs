//! `symphony epoch show|close` and `symphony gov list|propose|vote`: the
//! Governance Service of a devnet through its masters' gateways. Reads are signed
//! with the devnet's advertiser key; proposals and votes with the commit key of
//! the master named by `--as master-N` (its governance index: the masters in
//! node-id order, so `master-0` is the devnet's node 1, `keys/master-1.key`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use symphony_deploy::devnet::DevnetLayout;
use symphony_deploy::governance::{
    parse_master, parse_proposal_id, AttributePromotion, GovClient, ProposalKind,
};
use symphony_economics::PolicyParams;

/// `--dir` of the devnet.
#[derive(Args)]
pub struct GovDir {
    /// Devnet directory.
    #[arg(long, default_value = "symphony-devnet")]
    dir: PathBuf,
}

#[derive(Subcommand)]
pub enum EpochCmd {
    /// The current epoch: id, policy version, when it opened, how near each close
    /// trigger is (time, capacity, proposals), which epoch each Vault applied, and
    /// the closed epochs.
    Show {
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's GET /v1/epoch).
        #[arg(long)]
        json: bool,
    },
    /// Close the current epoch through governance: master-0 files a close_epoch
    /// proposal and master-1 approves it (2 of 3, with their keys from the devnet
    /// directory); waits until the next epoch is open and every Vault replenished
    /// its budgets for it.
    Close {
        #[command(flatten)]
        dir: GovDir,
        /// Seconds to wait for the next epoch and the Vaults.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
        /// One JSON object (GET /v1/epoch once done).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum GovCmd {
    /// Every proposal: kind, proposer, votes, status.
    List {
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's GET /v1/governance/proposals).
        #[arg(long)]
        json: bool,
    },
    /// File a proposal as a master (its signature counts as its approval).
    Propose {
        #[command(subcommand)]
        kind: ProposeCmd,
    },
    /// Vote on a proposal as a master; the second approval (or rejection) decides.
    Vote {
        /// The proposal: 3 or proposal-3.
        id: String,
        /// The voting master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        /// Vote against.
        #[arg(long)]
        reject: bool,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ProposeCmd {
    /// The next policy version, active from the epoch after its approval (tasks
    /// keep the version of their admission).
    Policy {
        /// Every parameter of the version, as JSON (the format of
        /// `symphony policy show`).
        #[arg(long)]
        file: PathBuf,
        /// Tasks admitted per epoch before it closes by capacity.
        #[arg(long)]
        max_tasks: Option<u64>,
        /// The proposing master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
    /// An enterprise joins with its Vault and stake: once a second master
    /// approves, its Vault receives slices of the next task.
    Membership {
        /// The candidate's Vault id.
        #[arg(long)]
        vault: String,
        /// Its stake, µSYM (default: S_enterprise of policy v1).
        #[arg(long)]
        stake: Option<u64>,
        /// The proposing master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
    /// The verdict on a challenge under review: `--upheld` slashes the
    /// responsible actor by the graduated table and rejects the task (its escrow
    /// pays the base fee, the rest is refunded); `--dismissed` closes it without
    /// penalty and the settlement pays out as usual. Decided by 2 of 3 masters.
    Adjudicate {
        /// The challenge id.
        #[arg(long)]
        challenge: String,
        /// The fault is confirmed.
        #[arg(long, conflicts_with = "dismissed")]
        upheld: bool,
        /// The fault is not confirmed.
        #[arg(long)]
        dismissed: bool,
        /// With --upheld: who is slashed (e.g. operator:vault-01).
        #[arg(long)]
        responsible: Option<String>,
        /// With --upheld: unavailability, invalid_result, faulty_verification,
        /// sovereignty_violation or equivocation.
        #[arg(long)]
        offence: Option<String>,
        /// The proposing master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
    /// Slash a registered actor's stake by the graduated table (the offence's
    /// severity, doubled per earlier offence in the repeat window); the amount
    /// moves from its stake to the treasury once a second master approves.
    Slash {
        /// The actor (e.g. operator:vault-01).
        #[arg(long)]
        actor: String,
        /// unavailability, invalid_result, faulty_verification,
        /// sovereignty_violation or equivocation.
        #[arg(long)]
        offence: String,
        /// Why (1 to 256 bytes).
        #[arg(long)]
        reason: String,
        /// The proposing master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
    /// Promote a local attribute one step: to a vault-scoped query attribute
    /// (usable inside its Vault; the rule must read it), or — once it is a local
    /// attribute in the registry — to canonical, with the rule each Vault derives
    /// it by (at least 2 Vaults, one besides the origin, all the same rule). Once
    /// a second master approves, later admissions resolve against the new
    /// semantic registry version; earlier tasks keep theirs.
    Promote {
        /// The promotion as JSON: {"local": {name, vault, value_type,
        /// privacy_class, description}, "target": {"vault_scoped_query": {…}} or
        /// {"canonical": {domain, directly_queryable, derivations}}}.
        #[arg(long)]
        file: PathBuf,
        /// The proposing master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
    /// Close the current epoch once a second master approves.
    CloseEpoch {
        /// The proposing master: master-0, master-1 or master-2.
        #[arg(long = "as", value_name = "MASTER")]
        as_master: String,
        #[command(flatten)]
        dir: GovDir,
        /// One JSON object (the gateway's reply).
        #[arg(long)]
        json: bool,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn client(dir: &GovDir) -> Result<GovClient> {
    let layout = DevnetLayout::load(&dir.dir)
        .with_context(|| format!("--dir {}: not a devnet", dir.dir.display()))?;
    Ok(GovClient::new(layout)?)
}

fn print_json(v: &Value) -> Result<()> {
    crate::output::print_json(v)
}

/// Prints a filed proposal: the gateway's reply with `--json`, else one line that
/// says what was proposed and how a second master approves it.
fn filed(v: &Value, by: u8, what: &str, json: bool) -> Result<()> {
    if json {
        return print_json(v);
    }
    println!(
        "proposal-{} filed by master-{by}: {what} (a second master approves with `symphony gov vote {} --as master-N`)",
        v["proposal_id"], v["proposal_id"]
    );
    Ok(())
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `symphony epoch ...`.
pub fn epoch(cmd: EpochCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        EpochCmd::Show { dir, json } => {
            let v = rt.block_on(client(&dir)?.epoch())?;
            if json {
                return print_json(&v);
            }
            print_epoch(&v);
            Ok(())
        }
        EpochCmd::Close {
            dir,
            timeout_s,
            json,
        } => {
            let c = client(&dir)?;
            let before = rt.block_on(c.epoch())?;
            let v = rt.block_on(c.close_epoch(Duration::from_secs(timeout_s)))?;
            if json {
                return print_json(&v);
            }
            println!(
                "epoch-{} closed by a close_epoch proposal of master-0, approved by master-1; epoch-{} is open under policy-v{}",
                before["epoch_id"], v["epoch_id"], v["policy_version"]
            );
            if let Some(vaults) = v["vaults"].as_object() {
                for (vault, e) in vaults {
                    println!(
                        "  {vault}: budgets replenished for epoch-{} ({} accounts)",
                        e["epoch_applied"], e["accounts_replenished"]
                    );
                }
            }
            Ok(())
        }
    }
}

fn print_epoch(v: &Value) {
    if v["configured"] != Value::Bool(true) {
        println!("governance is not configured yet (the leader configures it at genesis)");
    }
    println!(
        "epoch-{} under policy-v{}, opened at {} ms",
        v["epoch_id"], v["policy_version"], v["opened_at_ms"]
    );
    let remaining = v["ms_until_time_close"].as_u64().unwrap_or(0);
    println!(
        "  time:      closes in {} (epoch length {})",
        secs(remaining),
        secs(v["epoch_length_ms"].as_u64().unwrap_or(0))
    );
    match v["max_tasks_per_epoch"].as_u64() {
        Some(max) => println!(
            "  capacity:  {} of {max} tasks admitted",
            v["tasks_in_epoch"]
        ),
        None => println!(
            "  capacity:  {} tasks admitted, no bound",
            v["tasks_in_epoch"]
        ),
    }
    let voting = v["triggers"]["proposal"]["close_epoch_proposals_voting"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("proposal-{x}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "  proposal:  {}",
        if voting.is_empty() {
            "no close_epoch proposal is being voted on".to_owned()
        } else {
            format!("{voting} being voted on")
        }
    );
    if let Some(p) = v["pending_policy_change"].as_object() {
        println!(
            "  policy:    proposal-{} for policy-v{} is {} (active from the epoch after its approval)",
            p["proposal_id"],
            p["version"],
            p["status"].as_str().unwrap_or("?")
        );
    }
    if let Some(vaults) = v["vaults"].as_object() {
        for (vault, e) in vaults {
            println!(
                "  {vault}: budgets replenished for epoch-{}",
                e["epoch_applied"]
            );
        }
    }
    for h in v["history"].as_array().into_iter().flatten() {
        // "time", "capacity" or {"proposal": id}.
        let trigger = match h["trigger"].as_str() {
            Some(t) => t.to_owned(),
            None => format!("proposal-{}", h["trigger"]["proposal"]),
        };
        println!(
            "  closed: epoch-{} (policy-v{}) by {trigger} after {}, {} tasks",
            h["epoch"],
            h["policy_version"],
            secs(
                h["closed_at_ms"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(h["opened_at_ms"].as_u64().unwrap_or(0))
            ),
            h["tasks_admitted"]
        );
    }
}

/// `symphony gov ...`.
pub fn gov(cmd: GovCmd) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        GovCmd::List { dir, json } => {
            let v = rt.block_on(client(&dir)?.proposals())?;
            if json {
                return print_json(&v);
            }
            print_proposals(&v);
            Ok(())
        }
        GovCmd::Vote {
            id,
            as_master,
            reject,
            dir,
            json,
        } => {
            let id = parse_proposal_id(&id).map_err(anyhow::Error::msg)?;
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let v = rt.block_on(client(&dir)?.vote(id, by, !reject))?;
            if json {
                return print_json(&v);
            }
            println!(
                "master-{by} {} proposal-{id}: {}",
                if reject { "rejected" } else { "approved" },
                v["status"].as_str().unwrap_or("?")
            );
            if let Some(c) = v["epoch_closed"].as_object() {
                println!(
                    "  epoch-{} closed; epoch-{} is open (the leader replenishes the Vaults' budgets)",
                    c["closed"], c["opened"]
                );
            }
            Ok(())
        }
        GovCmd::Propose {
            kind:
                ProposeCmd::Policy {
                    file,
                    max_tasks,
                    as_master,
                    dir,
                    json,
                },
        } => {
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("--file {}: cannot read", file.display()))?;
            let params: PolicyParams = serde_json::from_str(&text).with_context(|| {
                format!(
                    "--file {}: not a policy (every field of `symphony policy show`)",
                    file.display()
                )
            })?;
            if let Err(e) = params.validate() {
                bail!("--file {}: {e}", file.display());
            }
            if max_tasks == Some(0) {
                bail!("--max-tasks: must be > 0 (tasks admitted per epoch before it closes)");
            }
            let c = client(&dir)?;
            let epoch = rt.block_on(c.epoch())?;
            let active = epoch["policy_version"]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .context("the gateway reported no policy version")?;
            let version = symphony_core::ids::PolicyVersion(active + 1);
            let kind = ProposalKind::PolicyChange {
                version,
                params: Box::new(params),
                max_tasks_per_epoch: max_tasks,
            };
            let v = rt.block_on(c.propose(kind, by))?;
            filed(
                &v,
                by,
                &format!("{version}, active from the epoch after its approval"),
                json,
            )
        }
        GovCmd::Propose {
            kind:
                ProposeCmd::Membership {
                    vault,
                    stake,
                    as_master,
                    dir,
                    json,
                },
        } => {
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let vault_id = symphony_core::ids::VaultId::new(vault.clone())
                .map_err(|e| anyhow::anyhow!("--vault {vault:?}: {e}"))?;
            let operator = symphony_core::ids::ActorId::new(format!("operator:{vault}"))
                .map_err(|e| anyhow::anyhow!("--vault {vault:?}: {e}"))?;
            let stake_micro_sym =
                stake.unwrap_or(PolicyParams::default_v1().staking.s_enterprise_micro_sym);
            let kind = ProposalKind::EnterpriseMembership {
                vault: vault_id,
                operator,
                stake_micro_sym,
            };
            let v = rt.block_on(client(&dir)?.propose(kind, by))?;
            filed(
                &v,
                by,
                &format!("{vault} joins with {stake_micro_sym} µSYM stake"),
                json,
            )
        }
        GovCmd::Propose {
            kind:
                ProposeCmd::Adjudicate {
                    challenge,
                    upheld,
                    dismissed,
                    responsible,
                    offence,
                    as_master,
                    dir,
                    json,
                },
        } => {
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let kind = adjudication_kind(&challenge, upheld, dismissed, responsible, offence)?;
            let v = rt.block_on(client(&dir)?.propose(kind, by))?;
            filed(
                &v,
                by,
                &format!(
                    "challenge {challenge} {}",
                    if upheld { "upheld" } else { "dismissed" }
                ),
                json,
            )
        }
        GovCmd::Propose {
            kind:
                ProposeCmd::Slash {
                    actor,
                    offence,
                    reason,
                    as_master,
                    dir,
                    json,
                },
        } => {
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let kind = slashing_kind(&actor, &offence, reason)?;
            let v = rt.block_on(client(&dir)?.propose(kind, by))?;
            filed(
                &v,
                by,
                &format!("slash {actor} for {offence} by the graduated table"),
                json,
            )
        }
        GovCmd::Propose {
            kind:
                ProposeCmd::Promote {
                    file,
                    as_master,
                    dir,
                    json,
                },
        } => {
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let promotion = read_promotion(&file)?;
            let what = promotion.summary();
            let kind = ProposalKind::AttributePromotion {
                promotion: Box::new(promotion),
            };
            let v = rt.block_on(client(&dir)?.propose(kind, by))?;
            filed(&v, by, &what, json)
        }
        GovCmd::Propose {
            kind:
                ProposeCmd::CloseEpoch {
                    as_master,
                    dir,
                    json,
                },
        } => {
            let by = parse_master("--as", &as_master).map_err(anyhow::Error::msg)?;
            let v = rt.block_on(client(&dir)?.propose(ProposalKind::CloseEpoch, by))?;
            filed(&v, by, "close the current epoch", json)
        }
    }
}

/// The promotion in `file`, checked before anything is sent (the masters check
/// it again against the registry).
fn read_promotion(file: &std::path::Path) -> Result<AttributePromotion> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--file {}: cannot read", file.display()))?;
    let promotion: AttributePromotion = serde_json::from_str(&text).with_context(|| {
        format!(
            "--file {}: not an attribute promotion ({{\"local\": {{…}}, \"target\": \
             {{\"vault_scoped_query\": {{…}}}} or {{\"canonical\": {{…}}}}}})",
            file.display()
        )
    })?;
    if let Err(e) = promotion.check() {
        bail!("--file {}: {e}", file.display());
    }
    Ok(promotion)
}

/// The `challenge_adjudication` proposal the flags describe (each fault named).
fn adjudication_kind(
    challenge: &str,
    upheld: bool,
    dismissed: bool,
    responsible: Option<String>,
    offence: Option<String>,
) -> Result<ProposalKind> {
    let challenge = symphony_core::ids::ChallengeId::new(challenge)
        .map_err(|e| anyhow::anyhow!("--challenge {challenge:?}: {e}"))?;
    let verdict = match (upheld, dismissed, responsible, offence) {
        (true, false, Some(r), Some(o)) => symphony_deploy::governance::Verdict::Upheld {
            responsible: symphony_core::ids::ActorId::new(r.clone())
                .map_err(|e| anyhow::anyhow!("--responsible {r:?}: {e}"))?,
            offence: symphony_deploy::governance::parse_offence(&o)
                .map_err(|e| anyhow::anyhow!("--offence: {e}"))?,
        },
        (true, false, None, _) | (true, false, _, None) => {
            bail!("--upheld needs --responsible (who is slashed) and --offence")
        }
        (false, true, None, None) => symphony_deploy::governance::Verdict::Dismissed,
        (false, true, _, _) => {
            bail!("--dismissed slashes nobody: drop --responsible and --offence")
        }
        _ => bail!("give exactly one of --upheld or --dismissed"),
    };
    Ok(ProposalKind::AdjudicateChallenge { challenge, verdict })
}

/// The `slashing` proposal the flags describe (each fault named).
fn slashing_kind(actor: &str, offence: &str, reason: String) -> Result<ProposalKind> {
    let actor = symphony_core::ids::ActorId::new(actor)
        .map_err(|e| anyhow::anyhow!("--actor {actor:?}: {e}"))?;
    let offence = symphony_deploy::governance::parse_offence(offence)
        .map_err(|e| anyhow::anyhow!("--offence: {e}"))?;
    if reason.is_empty() || reason.len() > symphony_deploy::governance::MAX_REASON_BYTES {
        bail!(
            "--reason: 1 to {} bytes, got {}",
            symphony_deploy::governance::MAX_REASON_BYTES,
            reason.len()
        );
    }
    Ok(ProposalKind::Slash {
        actor,
        offence,
        reason,
    })
}

fn print_proposals(v: &Value) {
    let list = v["proposals"].as_array().cloned().unwrap_or_default();
    println!(
        "epoch-{} under policy-v{}: {} proposals",
        v["epoch_id"],
        v["policy_version"],
        list.len()
    );
    for p in &list {
        // Externally tagged: "close_epoch" or {"policy_change": {…}}.
        let k = &p["kind"];
        let what = if let Some(c) = k.get("policy_change") {
            format!("policy_change to policy-v{}", c["version"])
        } else if let Some(m) = k.get("enterprise_membership") {
            format!("enterprise_membership of {}", m["vault"])
        } else if let Some(a) = k.get("challenge_adjudication") {
            let verdict = if a["verdict"].is_string() {
                "dismissed".to_owned()
            } else {
                format!("upheld against {}", a["verdict"]["upheld"]["responsible"])
            };
            format!("challenge_adjudication of {}: {verdict}", a["challenge"])
        } else if let Some(a) = k.get("attribute_promotion") {
            let to = if a["promotion"]["target"].get("canonical").is_some() {
                "canonical".to_owned()
            } else {
                format!(
                    "vault-scoped {}",
                    a["promotion"]["target"]["vault_scoped_query"]["name"]
                )
            };
            format!(
                "attribute_promotion of {} to {to}",
                a["promotion"]["local"]["name"]
            )
        } else if let Some(s) = k.get("slashing") {
            format!("slashing of {} for {}", s["actor"], s["offence"])
        } else {
            k.as_str().unwrap_or("?").to_owned()
        };
        let votes = p["votes"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(m, yes)| {
                        format!(
                            "master-{m} {}",
                            if yes.as_bool() == Some(true) {
                                "yes"
                            } else {
                                "no"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let enacted = p["enacted_in"]
            .as_u64()
            .map(|e| format!(" in epoch-{e}"))
            .unwrap_or_default();
        println!(
            "  proposal-{:<3} {what:<32} by master-{} in epoch-{}  votes: {votes}  {}{enacted}",
            p["id"],
            p["proposed_by"],
            p["proposed_in"],
            p["status"].as_str().unwrap_or("?")
        );
    }
}
