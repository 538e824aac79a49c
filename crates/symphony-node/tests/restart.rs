//! An enterprise node restarted between a task's admission and its slice: the new
//! process has none of the old one's memory, only the Vault file. The slice must
//! evaluate the subjects admission reserved (read back from the Vault), so the
//! campaign comes out exactly as on a network where nothing restarted.

use std::sync::{Mutex, PoisonError};

use symphony_core::budget::Epsilon;
use symphony_core::consent::UsageScope;
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, EpochId, SubjectId, TaskId, VaultId};
use symphony_node::bundle::{ComputeBody, SliceAssignment, SliceResultBundle};
use symphony_node::classes::parse::{ParseAssignment, ParseBundle};
use symphony_node::enterprise::{AdmissionReply, EnterpriseEndpoint, EnterpriseNode};
use symphony_node::network::{advertiser_key, CampaignOutcome, Quiet, SignedRequest};
use symphony_node::NodeError;

mod common;

use common::{luckin, network, ADVERTISER, NOW_MS};

const SEED: u64 = 5;

fn request() -> SignedRequest {
    SignedRequest::sign(luckin(), 1, &advertiser_key(SEED, ADVERTISER)).unwrap()
}

/// Vault 1's enterprise node, replaced by a fresh process over the same Vault
/// and enclave platform just before it executes a slice.
struct RestartsBeforeSlices {
    id: VaultId,
    node: Mutex<Option<EnterpriseNode>>,
    restarts: Mutex<u32>,
}

impl RestartsBeforeSlices {
    fn with<T>(&self, f: impl FnOnce(&EnterpriseNode) -> T) -> T {
        let node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
        f(node
            .as_ref()
            .expect("a node is always in place between calls"))
    }

    fn restart(&self) {
        let mut node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
        let (vault, enclave) = node.take().expect("in place").into_parts();
        *node = Some(EnterpriseNode::new(vault, enclave));
        *self.restarts.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }
}

impl EnterpriseEndpoint for RestartsBeforeSlices {
    fn vault_id(&self) -> &VaultId {
        &self.id
    }
    fn admission_reserve(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        class: TaskClass,
        scope: UsageScope,
        epsilon: Epsilon,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        self.with(|n| n.admission_reserve(task_id, actor, class, scope, epsilon, at_ms))
    }
    fn execute_slice(&self, a: &SliceAssignment) -> Result<SliceResultBundle, NodeError> {
        self.restart();
        self.with(|n| EnterpriseEndpoint::execute_slice(n, a))
    }
    fn execute_compute_slice(
        &self,
        a: &SliceAssignment,
    ) -> Result<SliceResultBundle<ComputeBody>, NodeError> {
        self.restart();
        self.with(|n| EnterpriseEndpoint::execute_compute_slice(n, a))
    }
    fn release(&self, task_id: &TaskId) -> Result<u64, NodeError> {
        self.with(|n| EnterpriseEndpoint::release(n, task_id))
    }
    fn open_epoch(
        &self,
        epoch: EpochId,
        replenish: &[(UsageScope, Epsilon)],
    ) -> Result<u64, NodeError> {
        self.with(|n| EnterpriseEndpoint::open_epoch(n, epoch, replenish))
    }
    fn parse_admit(
        &self,
        task_id: &TaskId,
        actor: &ActorId,
        subject: &SubjectId,
        at_ms: u64,
    ) -> Result<AdmissionReply, NodeError> {
        self.with(|n| EnterpriseEndpoint::parse_admit(n, task_id, actor, subject, at_ms))
    }
    fn execute_parse_slice(&self, a: &ParseAssignment) -> Result<ParseBundle, NodeError> {
        self.with(|n| EnterpriseEndpoint::execute_parse_slice(n, a))
    }
}

/// The ε `vault`'s consenting subjects have committed in the marketing scope,
/// micro-units, summed.
fn committed_micro(vault: &symphony_vault::Vault) -> u64 {
    let subjects = vault
        .consented_subjects(UsageScope::Marketing, NOW_MS)
        .unwrap();
    vault
        .budget_accounts(&subjects, UsageScope::Marketing)
        .unwrap()
        .iter()
        .map(|a| a.committed().micro)
        .sum()
}

#[test]
fn a_node_restarted_between_admission_and_slice_evaluates_the_subjects_it_reserved() {
    // The same network twice: once untouched, once with vault 1's node restarted
    // before its slice.
    let plain_dir = tempfile::tempdir().unwrap();
    let mut plain = network(plain_dir.path(), SEED, 600, 3);
    let expected: CampaignOutcome = plain.run_campaign(&request(), &mut Quiet).unwrap();
    assert!(expected.eligible_count > 0, "{expected:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut net = network(dir.path(), SEED, 600, 3);
    let first = net.enterprises.remove(0);
    let restarting = RestartsBeforeSlices {
        id: first.vault_id().clone(),
        node: Mutex::new(Some(first)),
        restarts: Mutex::new(0),
    };
    let mut endpoints: Vec<&dyn EnterpriseEndpoint> = vec![&restarting];
    endpoints.extend(net.enterprises.iter().map(|e| e as &dyn EnterpriseEndpoint));
    let outcome = net
        .master
        .run_campaign(&endpoints, &request(), &mut Quiet)
        .unwrap();
    assert_eq!(*restarting.restarts.lock().unwrap(), 1, "one slice ran");

    assert_eq!(outcome.states, expected.states);
    assert_eq!(outcome.subjects_evaluated, expected.subjects_evaluated);
    assert_eq!(outcome.eligible_count, expected.eligible_count);
    assert_eq!(outcome.delivered_count, expected.delivered_count);
    assert_eq!(outcome.fee_total, expected.fee_total);
    // The restarted Vault charged the same people the same ε, and holds nothing
    // reserved for the task any more.
    let restarted = restarting.node.lock().unwrap().take().unwrap();
    let restarted_commit = committed_micro(restarted.vault());
    assert!(restarted_commit > 0, "the restarted Vault evaluated nobody");
    assert_eq!(
        restarted_commit,
        committed_micro(plain.enterprises[0].vault())
    );
    let task = TaskId::new(outcome.task_id.clone()).unwrap();
    assert!(restarted
        .vault()
        .bulk_reserved(UsageScope::Marketing, &task)
        .unwrap()
        .is_empty());
}
