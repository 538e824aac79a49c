//! Composite settlement (seed 003 "Settlement Timing"): each sub-task (round)
//! settles in the epoch it was dispatched in; the composite links every sub-task
//! settlement, across epochs, with a replayable commitment. Pure functions; the
//! training coordinator calls [`link_composite`] and stores the result with
//! `SettlementStore::put_composite`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use symphony_core::encoding::{content_hash, Digest};
use symphony_core::ids::{EpochId, SubTaskId, TaskId};
use symphony_master::link_commitment;

use crate::NodeError;

/// One sub-task's settlement as linked into its composite (seed 003 "Settlement
/// Timing": a sub-task settles in the epoch it was dispatched in).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubTaskSettlementRef {
    /// The sub-task (round).
    pub sub_task: SubTaskId,
    /// Epoch of its dispatch.
    pub epoch_id: EpochId,
    /// Fee settled for it.
    pub fee_total: u64,
    /// Hash of its finalized settlement (e.g. of its payout set).
    pub settlement_hash: Digest,
}

/// A composite settlement: the parent's link over every sub-task settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeSettlement {
    /// The parent task.
    pub parent: TaskId,
    /// Sub-task settlements, by round.
    pub sub_tasks: Vec<SubTaskSettlementRef>,
    /// Σ sub-task fees.
    pub fee_total: u64,
    /// Commitment over the sub-task settlement hashes, in round order.
    pub link: Digest,
}

/// Tag of the composite link.
pub const COMPOSITE_LINK_TAG: &str = "scp/composite-settlement/v1";

fn composite_link(subs: &[SubTaskSettlementRef]) -> Result<Digest, NodeError> {
    let parts = subs
        .iter()
        .map(|s| content_hash(COMPOSITE_LINK_TAG, s).map_err(|e| NodeError::Encoding(e.0)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(link_commitment(COMPOSITE_LINK_TAG, &parts))
}

/// Links sub-task settlements into their composite. Rules: every sub-task belongs to
/// `parent`; rounds are distinct; sorted by round, epochs never decrease (a later
/// round is never dispatched in an earlier epoch); fees add up without overflow.
pub fn link_composite(
    parent: &TaskId,
    mut sub_tasks: Vec<SubTaskSettlementRef>,
) -> Result<CompositeSettlement, NodeError> {
    sub_tasks.sort();
    let bad = |m: String| Err(NodeError::Refused(format!("composite {parent}: {m}")));
    let mut fee_total: u64 = 0;
    for (i, s) in sub_tasks.iter().enumerate() {
        if &s.sub_task.parent != parent {
            return bad(format!("{} is not a sub-task", s.sub_task));
        }
        if let Some(prev) = i.checked_sub(1).and_then(|p| sub_tasks.get(p)) {
            if prev.sub_task.round == s.sub_task.round {
                return bad(format!("round {} settled twice", s.sub_task.round));
            }
            if prev.epoch_id > s.epoch_id {
                return bad(format!(
                    "round {} in epoch {} precedes round {} in epoch {}",
                    s.sub_task.round, s.epoch_id, prev.sub_task.round, prev.epoch_id
                ));
            }
        }
        fee_total = match fee_total.checked_add(s.fee_total) {
            Some(f) => f,
            None => return bad("fee overflow".into()),
        };
    }
    let link = composite_link(&sub_tasks)?;
    Ok(CompositeSettlement {
        parent: parent.clone(),
        sub_tasks,
        fee_total,
        link,
    })
}

/// Replays a composite's link (what a challenge of the composite result checks).
pub fn verify_composite(c: &CompositeSettlement) -> bool {
    link_composite(&c.parent, c.sub_tasks.clone()).is_ok_and(|r| &r == c)
}

/// Sub-task settlements grouped by epoch (reward accounting follows each sub-task's
/// epoch).
pub fn composite_by_epoch(c: &CompositeSettlement) -> BTreeMap<EpochId, Vec<SubTaskSettlementRef>> {
    let mut out: BTreeMap<EpochId, Vec<SubTaskSettlementRef>> = BTreeMap::new();
    for s in &c.sub_tasks {
        out.entry(s.epoch_id).or_default().push(s.clone());
    }
    out
}
