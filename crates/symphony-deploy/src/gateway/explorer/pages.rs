//! The explorer's pages, rendered from this master's applied [`DeployState`] (and,
//! for the network page, its consensus node). Each shows only what the protocol
//! releases publicly (see the module docs of `explorer`).

use std::collections::BTreeMap;

use maud::{html, Markup};
use serde_json::Value;
use symphony_core::ids::{EpochId, TaskId};
use symphony_master::{ProposalKind, TaskRecord};
use symphony_node::task::TaskOutcome;
use symphony_node::training::registry::curve_points;
use symphony_node::training::RoundSummary;

use super::filter::TaskFilter;
use super::svg::{training_curve_svg, CurveSeries};
use crate::gateway::AppState;
use crate::state::{DeployState, RequestRecord};

/// Most tasks one listing shows (the newest).
const LIST_LIMIT: usize = 500;

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// µSYM with its SYM value.
fn sym(micro: u64) -> Markup {
    html! {
        span.amount title={ (micro) " µSYM" } {
            (micro) " µSYM " span.mute { "(" (micro / 1_000_000) "." (format!("{:06}", micro % 1_000_000)) " SYM)" }
        }
    }
}

fn badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } { (state) } }
}

fn short(hex: &str) -> Markup {
    html! { code title=(hex) { (hex.get(..16).unwrap_or(hex)) "…" } }
}

/// The request (id, record) one of whose attempts is `task_id`.
fn request_of<'a>(s: &'a DeployState, task_id: &str) -> Option<(&'a String, &'a RequestRecord)> {
    s.requests_by_id()
        .find(|(_, r)| r.attempts.iter().any(|t| t == task_id))
}

fn task_link(id: &str) -> Markup {
    // A training round's payout carries its sub-task id (`<task>/r<round>`): its
    // page is the parent task's.
    let page = id.split('/').next().unwrap_or(id);
    html! { a href={ "/explorer/tasks/" (page) } { code { (id) } } }
}

// --- network -------------------------------------------------------------------

pub(super) fn network(state: &AppState) -> Markup {
    let view = crate::gateway::cluster_view_of(state);
    let collector = state.cluster.node.collector();
    let certificate = collector
        .final_index()
        .and_then(|i| collector.certificate(i));
    let equivocations = collector.evidence().len();
    let keys = state.cluster.keys().to_vec();
    state.cluster.with_state(|s| {
        let g = s.master().governance();
        html! {
            h1 { "Network" }
            h2 { "Masters" }
            p.mute {
                "As master " (view.node_id) " knows them: its own applied state, and the masters' signatures on the latest final commit certificate (2 of 3 signing one state root is agreement)."
            }
            table.masters {
                tr { th { "master" } th { "node" } th { "commit key" } th { "role" } th { "signed the latest final root" } }
                @for (i, k) in keys.iter().enumerate() {
                    @let node = i as u64 + 1;
                    @let signed = certificate.as_ref().is_some_and(|c| c.signatures.contains_key(&node));
                    tr {
                        td { "master-" (i) }
                        td.num { (node) }
                        td { (short(&hex::encode(k.as_bytes()))) }
                        td { @if view.leader == Some(node) { b { "leader" } } @else { "follower" } }
                        td { @if certificate.is_none() { span.mute { "no final certificate yet" } } @else if signed { "yes" } @else { "no" } }
                    }
                }
            }
            table.cluster {
                tr { th { "leader" } td { (view.leader.map_or("none known".to_owned(), |l| l.to_string())) } }
                tr { th { "term" } td.num { (view.term) } }
                tr { th { "applied log index (this master)" } td.num { (view.last_applied_index.map_or("-".to_owned(), |i| i.to_string())) } }
                tr { th { "state root (this master)" } td { code { (view.state_root) } } }
                @if let Some(c) = &certificate {
                    tr { th { "latest final certificate" } td { "log index " (c.log_index) ", root " code { (hex::encode(c.state_root)) } ", " (c.signatures.len()) " of " (keys.len()) " masters agree" } }
                }
                tr { th { "equivocation evidence held" } td.num { (equivocations) } }
                tr { th { "task requests (final / all)" } td.num { (view.requests_final) " / " (view.requests_total) } }
                tr { th { "escrow still locked" } td { (sym(view.escrow_remaining_micro_sym)) } }
            }
            h2 { "Epoch and policy" }
            @if !s.governance_configured() {
                p.mute { "Governance is not configured yet (the leader configures it at genesis)." }
            } @else {
                table.epoch {
                    tr { th { "current epoch" } td { a href={ "/explorer/epochs/" (g.epoch.0) } { (g.epoch.0) } } }
                    tr { th { "policy version" } td { (g.policy_version.0) } }
                    tr { th { "opened" } td { (utc(s.epoch_opened_at_ms())) } }
                    tr { th { "closes by time" } td { (utc(s.epoch_due_at_ms())) } }
                    tr { th { "tasks admitted in the epoch" } td.num { (g.tasks_in_epoch) @if let Some(m) = g.max_tasks_per_epoch { " of at most " (m) } } }
                    tr { th { "epochs closed" } td.num { (g.history.len()) } }
                }
            }
            h2 { "Enterprises and Vaults" }
            @if g.members.is_empty() {
                p.mute { "No member recorded in the replicated state yet (genesis members are listed in the masters' configuration)." }
            } @else {
                table.members {
                    tr { th { "Vault" } th { "operator" } th.num { "stake" } th { "member since epoch" } th { "last epoch applied" } }
                    @for (v, m) in &g.members {
                        tr {
                            td { code { (v.as_str()) } }
                            td { (m.operator.as_str()) }
                            td.num { (sym(m.stake_micro_sym)) }
                            td.num { (m.since.0) }
                            td.num { (s.vault_epochs().get(v.as_str()).map_or("-".to_owned(), |e| e.epoch.to_string())) }
                        }
                    }
                }
            }
            @let others: Vec<_> = s.vault_epochs().iter().filter(|(v, _)| !g.members.keys().any(|m| m.as_str() == v.as_str())).collect();
            @if !others.is_empty() {
                p { "Vaults applying epochs (from the masters' configuration):" }
                table.vaults {
                    tr { th { "Vault" } th { "last epoch applied" } }
                    @for (v, e) in others { tr { td { code { (v) } } td.num { (e.epoch) } } }
                }
            }
            @if !g.registry.actors.is_empty() {
                h2 { "Actor registry (staked)" }
                table.registry {
                    tr { th { "actor" } th { "tier" } th.num { "bonded" } th.num { "slashed" } th.num { "offences" } }
                    @for (a, st) in &g.registry.actors {
                        tr { td { (a.as_str()) } td { (format!("{:?}", st.tier).to_ascii_lowercase()) } td.num { (sym(st.bonded_micro_sym)) } td.num { (sym(st.slashed_micro_sym)) } td.num { (st.offences.len()) } }
                    }
                }
            }
            h2 { "Governance proposals" }
            @if g.proposals.is_empty() {
                p.mute { "No proposal filed." }
            } @else {
                table.proposals {
                    tr { th { "#" } th { "kind" } th { "by" } th { "filed in epoch" } th { "votes" } th { "status" } th { "enacted in" } }
                    @for p in g.proposals.values().rev() {
                        tr {
                            td.num { (p.id.0) }
                            td { (proposal_kind(&p.kind)) }
                            td { "master-" (p.proposed_by) }
                            td.num { (p.proposed_in.0) }
                            td { @for (by, yes) in &p.votes { "master-" (by) ": " @if *yes { "yes" } @else { "no" } "; " } }
                            td { (badge(&format!("{:?}", p.status).to_ascii_lowercase())) }
                            td { (p.enacted_in.map_or("-".to_owned(), |e| e.0.to_string())) }
                        }
                    }
                }
            }
        }
    })
}

fn proposal_kind(k: &ProposalKind) -> String {
    match serde_json::to_value(k) {
        Ok(Value::String(s)) => s,
        Ok(Value::Object(o)) => o.keys().next().cloned().unwrap_or_default(),
        _ => format!("{k:?}"),
    }
}

// --- task list -------------------------------------------------------------------

pub(super) fn tasks(s: &DeployState, f: &TaskFilter) -> Markup {
    let mut rows: Vec<&TaskRecord> = s
        .master()
        .tasks()
        .filter(|t| f.class.is_none_or(|c| t.envelope.task_class() == c))
        .filter(|t| f.status.is_none_or(|st| t.state == st))
        .filter(|t| {
            f.submitter
                .as_deref()
                .is_none_or(|a| t.envelope.body().caller.actor_id.as_str() == a)
        })
        .collect();
    rows.sort_by_key(|t| std::cmp::Reverse(t.envelope.body().caller.admitted_at_ms));
    let total = rows.len();
    let selected = |v: &str, cur: Option<String>| cur.as_deref() == Some(v);
    html! {
        h1 { "Tasks" }
        form.filters id="filters" hx-preserve="true" method="get" action="/explorer/tasks" {
            label { "class"
                select name="class" {
                    option value="" { "any" }
                    @for c in symphony_core::envelope::TaskClass::ALL {
                        option value=(c) selected[selected(&c.to_string(), f.class.map(|x| x.to_string()))] { (c) }
                    }
                }
            }
            label { "status"
                select name="status" {
                    option value="" { "any" }
                    @for st in symphony_core::lifecycle::TaskState::ALL {
                        option value=(st) selected[selected(st.as_str(), f.status.map(|x| x.to_string()))] { (st) }
                    }
                }
            }
            label { "submitter"
                input name="submitter" value=(f.submitter.clone().unwrap_or_default()) placeholder="advertiser:luckin";
            }
            button type="submit" { "Filter" }
        }
        p.count { (total) " task" @if total != 1 { "s" } @if total > LIST_LIMIT { " (the newest " (LIST_LIMIT) " shown)" } }
        table.tasks {
            tr { th { "task" } th { "class" } th { "submitter" } th { "status" } th { "epoch" } th { "admitted" } th.num { "fee" } }
            @for t in rows.iter().take(LIST_LIMIT) {
                @let b = t.envelope.body();
                tr {
                    td { (task_link(b.task_id.as_str())) }
                    td { (b.task_class) }
                    td { (b.caller.actor_id.as_str()) }
                    td { (badge(t.state.as_str())) }
                    td.num { a href={ "/explorer/epochs/" (b.epoch_id.0) } { (b.epoch_id.0) } }
                    td { (utc(b.caller.admitted_at_ms)) }
                    td.num { @if let Some(st) = &t.settlement { (sym(st.fee_total)) } @else { span.mute { "-" } } }
                }
            }
        }
        @let refused: Vec<_> = s.requests_by_id().filter(|(_, r)| r.attempts.is_empty() && r.status.is_final()).collect();
        @if !refused.is_empty() && f.is_empty() {
            h2 { "Requests refused before admission" }
            table.refused {
                tr { th { "request" } th { "submitter" } th { "received" } th { "why" } }
                @for (id, r) in refused.iter().rev().take(50) {
                    tr { td { code { (id) } } td { (r.caller) } td { (utc(r.received_at_ms)) } td { (r.error.clone().unwrap_or_default()) } }
                }
            }
        }
    }
}

// --- task page ---------------------------------------------------------------------

/// The page of a task and whether it can still change (not in a terminal state).
pub(super) fn task(s: &DeployState, id: &str) -> Option<(Markup, bool)> {
    // A request id shows its latest attempt.
    let task_id = match s.request(id) {
        Some(r) => r.attempts.last()?.clone(),
        None => id.to_owned(),
    };
    let tid = TaskId::new(task_id.clone()).ok()?;
    let rec = s.master().task(&tid)?;
    let b = rec.envelope.body();
    let request = request_of(s, &task_id);
    let audit: Vec<_> = s
        .master()
        .audit_log()
        .iter()
        .filter(|e| e.task_id == tid)
        .collect();
    let challenges: Vec<_> = s
        .master()
        .challenges()
        .filter(|(_, c)| c.task_id == tid)
        .collect();
    let composite = s.master().composite(&tid);
    let train_outcome = request.and_then(|(_, r)| match &r.outcome {
        Some(TaskOutcome::Train(o)) => Some(o.as_ref()),
        _ => None,
    });
    let row = s.settlement().settlements.get(&task_id).cloned();
    let card: Option<Value> = s
        .artifacts(&task_id)
        .and_then(|a| serde_json::from_slice(&a.card).ok());
    let live = !rec.state.is_terminal();
    Some((
        html! {
            h1 { "Task " code { (task_id) } " " (badge(rec.state.as_str())) }
            table.summary {
                tr { th { "class" } td { (b.task_class) } }
                tr { th { "submitter" } td { a href={ "/explorer/tasks?submitter=" (b.caller.actor_id.as_str()) } { (b.caller.actor_id.as_str()) } } }
                tr { th { "status" } td.status { (rec.state.as_str()) } }
                @if let Some(reason) = &rec.reason { tr { th { "reason" } td { (reason) } } }
                @if let Some((rid, r)) = request {
                    tr { th { "request" } td { code { (rid) } " — " (format!("{:?}", r.status).to_ascii_lowercase()) ", attempt " (r.attempts.iter().position(|t| *t == task_id).map_or(0, |p| p + 1)) " of " (r.attempts.len()) } }
                }
                tr { th { "epoch / policy version" } td { a href={ "/explorer/epochs/" (b.epoch_id.0) } { (b.epoch_id.0) } " / " (b.policy_version.0) } }
                tr { th { "admitted" } td { (utc(b.caller.admitted_at_ms)) } }
            }
            h2 { "Lifecycle" }
            ol.timeline { @for st in &rec.history { li { (badge(st.as_str())) } } }
            @if !audit.is_empty() {
                table.audit {
                    tr { th { "#" } th { "when" } th { "event" } }
                    @for e in &audit { tr { td.num { (e.seq) } td { (utc(e.at_ms)) } td { (e.kind) } } }
                }
            }
            h2 { "Envelope" }
            table.envelope {
                tr { th { "envelope hash" } td { code { (rec.envelope.hash().to_hex()) } } }
                tr { th { "semantic version" } td { (b.semantic_version) } }
                tr { th { "usage scope" } td { (b.budget_reservation.usage_scope) } }
                tr { th { "ε per subject" } td { (b.budget_reservation.epsilon_per_subject) } }
                tr { th { "participating Vaults" } td { @for v in &b.coordination_envelope.participating_vault_ids { code { (v.as_str()) } " " } } }
                tr { th { "quorum" } td { (b.coordination_envelope.minimum_vault_quorum) " Vaults" } }
                tr { th { "aggregation" } td { (format!("{:?}", b.coordination_envelope.aggregation_method)) } }
                tr { th { "authorized by" } td { (b.authorization.granted_by) } }
                tr { th { "consent snapshots" } td { @for c in &b.consent_refs { code { (c.vault_id.as_str()) } ": " (short(&c.snapshot_commitment.to_hex())) " " } } }
                @if let Some(l) = &b.budget_lock_ref {
                    tr { th { "escrow" } td { (l.ledger) " " code { (l.escrow_id) } ", locked " (sym(l.amount_base_units)) } }
                }
                @if let Some(p) = &b.iteration_policy { tr { th { "iteration policy" } td { code { (serde_json::to_string(p).unwrap_or_default()) } } } }
                tr { th { "resolved plan hash" } td { code { (b.resolved_plan_hash.to_hex()) } } }
                @for (k, v) in &b.constraints { tr { th { "constraint " (k) } td { (v) } } }
                tr { th { "deadline" } td { (utc(b.deadline_ms)) } }
            }
            @if let Some(c) = composite {
                (composite_section(c, rec))
            } @else {
                h2 { "Slices and attestations" }
                table.slices {
                    tr { th { "Vault" } th { "slice state" } th { "attested by" } th { "bundle commitment" } }
                    @for (v, sl) in &rec.slices {
                        tr { td { code { (v.as_str()) } } td { (badge(sl.state.as_str())) } td.enclave { (sl.enclave_kind.map_or("-".to_owned(), |k| k.to_string())) } td { (short(&sl.commitment.to_hex())) } }
                    }
                }
                h2 { "Aggregate proof" }
                @if let Some(a) = &rec.aggregate {
                    table.aggregate {
                        tr { th { "commitment (over the slices' commitments)" } td { code { (a.commitment.to_hex()) } } }
                        tr { th { "result hash" } td { code { (a.result_hash.to_hex()) } } }
                        tr { th { "result size delivered" } td.num { (a.delivered_count) } }
                        tr { th { "attested by" } td.enclave { (a.enclave_kind) } }
                    }
                } @else { p.mute { "No aggregate recorded." } }
            }
            h2 { "Settlement" }
            @if let Some(st) = &rec.settlement {
                table.settlement {
                    tr { th { "settlement lifecycle" } td { ol.timeline.settlement {
                        @for x in symphony_core::lifecycle::SettlementState::ALL.iter().filter(|x| **x <= st.state) { li { (badge(x.as_str())) } }
                    } } }
                    @if let Some(row) = &row {
                        tr { th { "payout" } td { (format!("{:?}", row.phase)) } }
                        @if let Some(at) = row.closes_at_ms { tr { th { "challenge window closed at" } td { (utc(at)) } } }
                        @if let Some(c) = &row.certificate {
                            tr { th { "finalizing certificate" } td { "log index " (c.log_index) ", " (c.signatures.len()) " of 3 master signatures over root " (short(&c.state_root.to_hex())) } }
                        }
                    }
                    tr { th { "settles in epoch" } td { a href={ "/explorer/epochs/" (st.epoch_id.0) } { (st.epoch_id.0) } } }
                    tr { th { "fee" } td.fee { (sym(st.fee_total)) } }
                    tr { th { "refund to the submitter" } td { (sym(st.refund)) } }
                }
                @let sum: u64 = st.fee_shares.values().sum();
                h2 { "Fee split" }
                table.fee-split {
                    tr { th { "recipient" } th.num { "amount (µSYM)" } }
                    @for (who, amount) in &st.fee_shares { tr.share { td { (who) } td.num data-micro-sym=(amount) { (amount) } } }
                    tr.total { th { "total" } th.num data-micro-sym=(sum) { (sum) } }
                }
                p.fee-check { @if sum == st.fee_total { "The shares add up to the fee (" (st.fee_total) " µSYM)." } @else { b { "The shares (" (sum) ") do not add up to the fee (" (st.fee_total) ")." } } }
            } @else { p.mute { "No settlement yet." } }
            h2 { "Challenges" }
            @if challenges.is_empty() { p.mute { "No challenge filed." } } @else {
                table.challenges {
                    tr { th { "challenge" } th { "target" } th { "challenger" } th { "filed" } th { "states" } th { "penalty" } }
                    @for (cid, c) in &challenges {
                        tr {
                            td { code { (cid.as_str()) } }
                            td { (format!("{:?}", c.target)) }
                            td { (c.challenger.as_str()) }
                            td { (utc(c.filed_at_ms)) }
                            td { @for h in &c.history { (badge(h.as_str())) " " } }
                            td { @if let Some(p) = &c.penalty { (p.actor.as_str()) " slashed " (sym(p.slashed)) " (" (p.offence) ")" } @else { "-" } }
                        }
                    }
                }
            }
            @if b.task_class == symphony_core::envelope::TaskClass::Train {
                (training_section(train_outcome.map(|o| o.rounds.as_slice()), card.as_ref(), composite))
            }
        },
        live,
    ))
}

fn composite_section(c: &symphony_master::CompositeRecord, rec: &TaskRecord) -> Markup {
    html! {
        h2 { "Composite: parent → rounds → slices" }
        p { "Parent " code { (c.tree.task_id.as_str()) } " " (badge(rec.state.as_str())) ": "
            (c.tree.rounds.len()) " of at most " (c.tree.max_rounds) " rounds over " (c.tree.vaults.len()) " Vaults ("
            (c.slices.len()) " slices; " (1 + c.tree.rounds.len() + c.slices.len()) " protocol objects)." }
        @for (i, sub) in c.tree.rounds.iter().enumerate() {
            @let round = i as u32;
            @let r = c.rounds.get(&round);
            details.round open[i + 1 == c.tree.rounds.len()] {
                summary { "Round " (round) " — " code { (sub.id) } " " (badge(sub.state.as_str())) " epoch " (sub.epoch_id.0)
                    @if let Some(r) = r { ", " (r.examples) " examples (noisy), loss " (format!("{:.4}", r.loss_micro as f64 / 1e6)) ", ε +" (format!("{:.6}", r.epsilon_micro as f64 / 1e6)) } }
                div.rounds {
                    @if let Some(r) = r {
                        p { "aggregate " (short(&r.aggregate_commitment.to_hex())) ", model " (short(&r.model_hash.to_hex())) ", attested by " span.enclave { (r.enclave_kind) } }
                    }
                    table.slices {
                        tr { th { "Vault" } th { "slice state" } th { "attested by" } th { "commitment" } }
                        @for ((_, v), sl) in c.slices.iter().filter(|((rr, _), _)| *rr == round) {
                            tr { td { code { (v.as_str()) } } td { (badge(sl.state.as_str())) } td.enclave { (sl.enclave_kind.map_or("-".to_owned(), |k| k.to_string())) } td { (short(&sl.commitment.to_hex())) } }
                        }
                    }
                }
            }
        }
        @if let Some(res) = &c.result {
            table.composite-result {
                tr { th { "rounds run" } td.num { (res.rounds_run) } }
                tr { th { "stop reason" } td { (res.stop_reason) } }
                tr { th { "ε spent" } td { (format!("{:.6}", res.epsilon_spent_micro as f64 / 1e6)) } }
                tr { th { "model hash" } td { code { (res.model_hash.to_hex()) } } }
                tr { th { "composite verification" } td { @if res.accepted { "accepted" } @else { "not accepted" } } }
            }
        }
        @if !c.round_settlements.is_empty() {
            table.round-settlements {
                tr { th { "round" } th { "epoch" } th.num { "fee (µSYM)" } }
                @for (r, (e, fee)) in &c.round_settlements { tr { td.num { (r) } td.num { (e.0) } td.num { (fee) } } }
            }
        }
    }
}

fn training_section(
    rounds: Option<&[RoundSummary]>,
    card: Option<&Value>,
    composite: Option<&symphony_master::CompositeRecord>,
) -> Markup {
    // The released rounds: the model card's, else the outcome's.
    let from_card: Option<Vec<RoundSummary>> = card
        .and_then(|c| c.get("rounds"))
        .and_then(|r| serde_json::from_value(r.clone()).ok());
    let rounds: Vec<RoundSummary> = from_card
        .or_else(|| rounds.map(<[RoundSummary]>::to_vec))
        .unwrap_or_default();
    let mut series = Vec::new();
    if rounds.is_empty() {
        // Only the masters' round records: the noisy training loss of each round.
        if let Some(c) = composite {
            series.push(CurveSeries {
                name: "training loss (noisy)".into(),
                color: "#2456a6",
                points: c
                    .rounds
                    .iter()
                    .map(|(r, x)| (f64::from(*r), x.loss_micro as f64 / 1e6))
                    .collect(),
            });
        }
    } else {
        let points = curve_points(&rounds);
        series.push(CurveSeries {
            name: "training loss (noisy)".into(),
            color: "#2456a6",
            points: points
                .iter()
                .filter_map(|p| p.train_loss.map(|l| (f64::from(p.round), l)))
                .collect(),
        });
        series.push(CurveSeries {
            name: "held-out loss (noisy)".into(),
            color: "#c0392b",
            points: points
                .iter()
                .filter_map(|p| p.holdout_loss.map(|l| (f64::from(p.round), l)))
                .collect(),
        });
    }
    html! {
        h2 { "Training curve" }
        @if series.iter().all(|s| s.points.is_empty()) {
            p.mute { "No round released yet." }
        } @else {
            figure.curve {
                (training_curve_svg(&series, "round", "mean loss"))
                figcaption.mute { "Round k: the model after k rounds. Losses are the aggregation enclave's noisy releases." }
            }
        }
        h2 { "Model card" }
        @if let Some(Value::Object(card)) = card {
            table.model-card {
                @for (k, v) in card {
                    @if k != "rounds" {
                        tr { th { (k) } td { (json_value(v, 0)) } }
                    }
                }
            }
        } @else {
            p.mute { "No model delivered (yet): the card is published with the model once the run's composite result is accepted." }
        }
    }
}

/// A JSON value as HTML: scalars as text, arrays of scalars as a list, objects and
/// arrays of objects as (nested) tables; past depth 3, compact JSON.
fn json_value(v: &Value, depth: u32) -> Markup {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let columns = |items: &[Value]| {
        let mut keys: Vec<String> = Vec::new();
        for item in items {
            if let Value::Object(o) = item {
                for k in o.keys() {
                    if !keys.contains(k) {
                        keys.push(k.clone());
                    }
                }
            }
        }
        keys
    };
    html! {
        @match v {
            Value::Array(items) if depth < 3 && !items.is_empty() && items.iter().all(Value::is_object) => {
                @let keys = columns(items);
                table.json {
                    tr { @for k in &keys { th { (k) } } }
                    @for item in items { tr { @for k in &keys { td { (json_value(item.get(k.as_str()).unwrap_or(&Value::Null), depth + 1)) } } } }
                }
            }
            Value::Array(items) if items.iter().all(|x| !x.is_object() && !x.is_array()) => {
                (items.iter().map(scalar).collect::<Vec<_>>().join(", "))
            }
            Value::Object(o) if depth < 3 => {
                table.json { @for (k, x) in o { tr { th { (k) } td { (json_value(x, depth + 1)) } } } }
            }
            Value::Array(_) | Value::Object(_) => code { (v.to_string()) },
            other => (scalar(other)),
        }
    }
}

// --- epochs --------------------------------------------------------------------------

pub(super) fn epochs(s: &DeployState) -> Markup {
    let g = s.master().governance();
    let open_total: u64 = g.open_payouts.values().map(|p| p.fee_total_micro_sym).sum();
    html! {
        h1 { "Epochs" }
        table.epochs {
            tr { th { "epoch" } th { "policy" } th { "opened" } th { "closed" } th { "trigger" } th.num { "tasks" } th.num { "payout set" } th.num { "rewards minted (inflation)" } }
            @if s.governance_configured() {
                tr.open {
                    td { a href={ "/explorer/epochs/" (g.epoch.0) } { (g.epoch.0) } }
                    td.num { (g.policy_version.0) }
                    td { (utc(s.epoch_opened_at_ms())) }
                    td { span.mute { "open" } }
                    td { "-" }
                    td.num { (g.tasks_in_epoch) }
                    td.num { (sym(open_total)) span.mute { " scheduled" } }
                    td.num { "-" }
                }
            }
            @for e in g.history.iter().rev() {
                tr {
                    td { a href={ "/explorer/epochs/" (e.epoch.0) } { (e.epoch.0) } }
                    td.num { (e.policy_version.0) }
                    td { (utc(opened_at(s, e))) }
                    td { (utc(e.closed_at_ms)) }
                    td { (trigger(&e.trigger)) }
                    td.num { (e.tasks_admitted) }
                    td.num { (sym(e.payouts.total_micro_sym)) }
                    td.num { @if let Some(r) = &e.rewards { (sym(r.minted_micro_sym)) } @else { span.mute { "pending" } } }
                }
            }
        }
    }
}

/// When a closed epoch opened (the genesis epoch: when governance was configured).
fn opened_at(s: &DeployState, e: &symphony_master::EpochRecord) -> u64 {
    if e.epoch == EpochId(0) && e.opened_at_ms == 0 {
        s.genesis_opened_at_ms().unwrap_or(0)
    } else {
        e.opened_at_ms
    }
}

fn trigger(t: &symphony_master::CloseTrigger) -> String {
    match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        Ok(Value::Object(o)) => o
            .iter()
            .next()
            .map(|(k, v)| format!("{k} {v}"))
            .unwrap_or_default(),
        _ => format!("{t:?}"),
    }
}

fn recipients_table(rows: &BTreeMap<String, u64>, total: u64) -> Markup {
    let sum: u64 = rows.values().sum();
    html! {
        table.recipients {
            tr { th { "recipient" } th.num { "amount (µSYM)" } }
            @for (who, amount) in rows { tr.share { td { (who) } td.num data-micro-sym=(amount) { (amount) } } }
            tr.total { th { "total" } th.num data-micro-sym=(sum) { (sum) } }
        }
        @if sum != total { p { b { "The rows (" (sum) ") do not add up to the total (" (total) ")." } } }
    }
}

/// The page of epoch `n` and whether it can still change (open).
pub(super) fn epoch(s: &DeployState, n: u64) -> Option<(Markup, bool)> {
    let g = s.master().governance();
    if let Some(e) = g.history.iter().find(|e| e.epoch.0 == n) {
        return Some((
            html! {
                h1 { "Epoch " (n) " " (badge("closed")) }
                table.summary {
                    tr { th { "policy version" } td { (e.policy_version.0) } }
                    tr { th { "opened" } td { (utc(opened_at(s, e))) } }
                    tr { th { "closed" } td { (utc(e.closed_at_ms)) " (" (trigger(&e.trigger)) ")" } }
                    tr { th { "tasks admitted" } td.num { (e.tasks_admitted) } }
                }
                h2 { "Payout set (sealed)" }
                p { (e.payouts.tasks.len()) " settled task(s), " (sym(e.payouts.total_micro_sym)) ", commitment " code { (e.payouts.commitment.to_hex()) } }
                ul.payout-tasks { @for t in &e.payouts.tasks { li { (task_link(t.as_str())) } } }
                (recipients_table(&e.payouts.recipients, e.payouts.total_micro_sym))
                h2 { "Node operation rewards (inflation)" }
                @if let Some(r) = &e.rewards {
                    p { "Minted for the epoch: " (sym(r.minted_micro_sym)) }
                    @let rows: BTreeMap<String, u64> = r.recipients.iter().map(|(a, x)| (a.as_str().to_owned(), *x)).collect();
                    (recipients_table(&rows, r.minted_micro_sym))
                } @else {
                    p.mute { "Not minted yet (the leader mints them after the close)." }
                }
            },
            false,
        ));
    }
    if !s.governance_configured() || g.epoch.0 != n {
        return None;
    }
    let scheduled: BTreeMap<String, u64> = g
        .open_payouts
        .values()
        .flat_map(|p| p.fee_shares.iter())
        .fold(BTreeMap::new(), |mut m, (who, x)| {
            *m.entry(who.clone()).or_insert(0) += x;
            m
        });
    let total: u64 = g.open_payouts.values().map(|p| p.fee_total_micro_sym).sum();
    Some((
        html! {
            h1 { "Epoch " (n) " " (badge("open")) }
            table.summary {
                tr { th { "policy version" } td { (g.policy_version.0) } }
                tr { th { "opened" } td { (utc(s.epoch_opened_at_ms())) } }
                tr { th { "closes by time" } td { (utc(s.epoch_due_at_ms())) } }
                tr { th { "tasks admitted" } td.num { (g.tasks_in_epoch) } }
            }
            h2 { "Payouts scheduled (sealed at the close)" }
            ul.payout-tasks { @for t in g.open_payouts.keys() { li { (task_link(t.as_str())) } } }
            (recipients_table(&scheduled, total))
        },
        true,
    ))
}
