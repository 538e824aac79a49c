//! Atomic refusals without copying the whole state.
//!
//! [`MasterState::apply`] promises that a refused command changes nothing. The
//! handlers check and mutate as they go (a composite round's slice advances its tree
//! before a later check can refuse), so a refusal has to put back what the handler
//! touched. Copying the whole state before every command did that, at a cost that
//! grows with every task ever admitted. A command about one task can only touch the
//! entries keyed by that task (its record, its composite hierarchy, its challenge
//! window), the challenge it names, the caller's nonce (admission), the audit log (an
//! append) and the governance state; a [`Savepoint`] copies exactly those before the
//! command runs and writes them back if it is refused. Commands with a wider reach
//! (governance: configure, propose, vote, close an epoch; any command added later) are
//! rare and still run on a copy of the whole state.
//!
//! The destructuring in [`Savepoint::take`] names every field of [`MasterState`]: a new
//! field does not compile until its author decides whether a savepoint must keep it.

use symphony_core::ids::{ActorId, ChallengeId, TaskId};

use crate::{
    ChallengeRecord, ChallengeWindow, Command, CompositeRecord, GovernanceState, MasterState,
    TaskRecord,
};

/// What one task-scoped command may change, as it was before the command.
pub(crate) struct Savepoint {
    task_id: TaskId,
    task: Option<TaskRecord>,
    composite: Option<CompositeRecord>,
    window: Option<ChallengeWindow>,
    challenge: Option<(ChallengeId, Option<ChallengeRecord>)>,
    /// The admitted caller's nonce, if it was not used yet.
    fresh_nonce: Option<(ActorId, u64)>,
    audit_len: usize,
    applied_commands: u64,
    governance: GovernanceState,
}

/// The task (and challenge) a command is about; `None` for a command that may reach
/// beyond one task.
fn scope<'a>(
    state: &'a MasterState,
    command: &'a Command,
) -> Option<(&'a TaskId, Option<&'a ChallengeId>)> {
    match command {
        Command::AdmitTask { envelope } => Some((&envelope.body().task_id, None)),
        Command::Advance { task_id, .. }
        | Command::RecordSlice { task_id, .. }
        | Command::RecordAggregate { task_id, .. }
        | Command::RecordSettlement { task_id, .. }
        | Command::RecordDelivery { task_id, .. }
        | Command::OpenRound { task_id, .. }
        | Command::RecordRoundSlice { task_id, .. }
        | Command::CloseRound { task_id, .. }
        | Command::RecordCompositeResult { task_id, .. }
        | Command::SettleRound { task_id, .. }
        | Command::OpenChallengeWindow { task_id, .. }
        | Command::CloseChallengeWindow { task_id, .. } => Some((task_id, None)),
        Command::FileChallenge { filing } => Some((&filing.task_id, Some(&filing.challenge_id))),
        // An unknown challenge is refused before anything changes; the whole-state
        // copy covers it all the same.
        Command::ChallengeStep { challenge_id, .. } => state
            .challenges
            .get(challenge_id)
            .map(|c| (&c.task_id, Some(challenge_id))),
        _ => None,
    }
}

impl Savepoint {
    /// Copies what `command` may change; `None` when it needs the whole state copied.
    pub(crate) fn take(state: &MasterState, command: &Command) -> Option<Savepoint> {
        let (task_id, challenge_id) = scope(state, command)?;
        let MasterState {
            tasks,
            used_nonces,
            audit_log,
            applied_commands,
            composites,
            challenges,
            challenge_windows,
            governance,
        } = state;
        let fresh_nonce = match command {
            Command::AdmitTask { envelope } => {
                let caller = &envelope.body().caller;
                let key = (caller.actor_id.clone(), caller.nonce);
                (!used_nonces.contains(&key)).then_some(key)
            }
            _ => None,
        };
        Some(Savepoint {
            task_id: task_id.clone(),
            task: tasks.get(task_id).cloned(),
            composite: composites.get(task_id).cloned(),
            window: challenge_windows.get(task_id).copied(),
            challenge: challenge_id.map(|id| (id.clone(), challenges.get(id).cloned())),
            fresh_nonce,
            audit_len: audit_log.len(),
            applied_commands: *applied_commands,
            governance: governance.clone(),
        })
    }

    /// Puts back what the refused command may have changed.
    pub(crate) fn restore(self, state: &mut MasterState) {
        put(&mut state.tasks, self.task_id.clone(), self.task);
        put(&mut state.composites, self.task_id.clone(), self.composite);
        put(&mut state.challenge_windows, self.task_id, self.window);
        if let Some((id, challenge)) = self.challenge {
            put(&mut state.challenges, id, challenge);
        }
        if let Some(key) = self.fresh_nonce {
            state.used_nonces.remove(&key);
        }
        state.audit_log.truncate(self.audit_len);
        state.applied_commands = self.applied_commands;
        state.governance = self.governance;
    }
}

fn put<K: Ord, V>(map: &mut std::collections::BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}
