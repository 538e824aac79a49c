//! A dry run of admission (`--dry-run` of `symphony demo luckin` and
//! `symphony task submit`): the same checks admission makes before it asks any
//! Vault — the spec against the semantic registry and the policy, the class's
//! bounds, the Vault quorum — and the figures a submitter commits to: the audience
//! bound, ε per subject and the fee estimate (the escrow admission would lock,
//! an upper bound of the fee). Pure: no Vault is asked, nothing is reserved,
//! locked or replicated.

use serde::{Deserialize, Serialize};
use symphony_core::envelope::TaskClass;
use symphony_economics::pricing::rejection_fee;
use symphony_economics::{estimate_fee, PolicyParams};
use symphony_semantic::SemanticRegistry;

use super::admission::vault_quorum;
use super::ClassModule;
use crate::classes::compute::Compute;
use crate::classes::query::Query;
use crate::task::TaskSpec;
use crate::NodeError;

/// What a task would commit to, computed without spending anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Always true: nothing was reserved, locked or replicated.
    pub dry_run: bool,
    /// The task class.
    pub task_class: String,
    /// The usage scope charged.
    pub usage_scope: String,
    /// ε reserved and committed per subject (for `train`: the whole run).
    pub epsilon_per_subject: String,
    /// Most subjects the result can name: the audience cap of a `query`; `None`
    /// when it is only known once the Vaults reserve (`compute`, `train`).
    pub audience_bound: Option<u64>,
    /// Fewest subjects a released result may count (smaller results are
    /// suppressed); `None` for `train`, whose acceptance criteria decide.
    pub minimum_result_cardinality: Option<u64>,
    /// Vaults the estimate assumes are asked.
    pub vaults: u32,
    /// Minimum Vaults that must respond.
    pub minimum_vault_quorum: u32,
    /// The escrow admission would lock: the fee at the spec's caps, an upper
    /// bound of the fee charged (µSYM). `None` when it depends on how many
    /// subjects the Vaults reserve (`compute`, `train`).
    pub fee_estimate_micro_sym: Option<u64>,
    /// What a rejection after admission costs (the class's base fee, µSYM).
    pub rejection_fee_micro_sym: u64,
    /// The policy the figures come from.
    pub policy_version: u64,
}

fn class_name(c: TaskClass) -> String {
    c.as_str().to_owned()
}

/// The quote of a single-round class module over `vaults` Vaults.
fn quote_class<C: ClassModule>(
    class: &C,
    semantic: &SemanticRegistry,
    params: &PolicyParams,
    policy_version: u64,
    vaults: u32,
    audience_bound: Option<u64>,
) -> Result<Quote, NodeError> {
    let plan = class.resolve(semantic)?;
    let c = class.admission(params, vaults)?;
    let quorum = vault_quorum(&c, vaults)?;
    // The query fee at its caps does not depend on the subjects reserved.
    let fee = audience_bound
        .map(|_| estimate_fee(&params.prices, &class.estimate(&c, vaults, 0)))
        .transpose()
        .map_err(|e| NodeError::Refused(e.to_string()))?;
    Ok(Quote {
        dry_run: true,
        task_class: class_name(class.class()),
        usage_scope: c.usage_scope.to_string(),
        epsilon_per_subject: c.epsilon.to_string(),
        audience_bound,
        minimum_result_cardinality: Some(plan.minimum_result_cardinality()),
        vaults,
        minimum_vault_quorum: quorum,
        fee_estimate_micro_sym: fee,
        rejection_fee_micro_sym: rejection_fee(&params.prices, class.class(), u64::MAX)
            .charged_micro_sym,
        policy_version,
    })
}

/// The quote of `spec` under `params` (policy `policy_version`) over `vaults`
/// Vaults; the error is the refusal admission would give, before anything is spent.
pub fn quote(
    spec: &TaskSpec,
    semantic: &SemanticRegistry,
    params: &PolicyParams,
    policy_version: u64,
    vaults: u32,
) -> Result<Quote, NodeError> {
    match spec {
        TaskSpec::Query(s) => quote_class(
            &Query { spec: s },
            semantic,
            params,
            policy_version,
            vaults,
            Some(s.audience_cap),
        ),
        TaskSpec::Compute(s) => quote_class(
            &Compute { spec: s },
            semantic,
            params,
            policy_version,
            vaults,
            None,
        ),
        TaskSpec::Train(t) => {
            t.validate()?;
            let epsilon = t.epsilon_total()?;
            // As training admission sets it (`training::admission`).
            let quorum = t
                .minimum_vault_quorum
                .unwrap_or((vaults / 2 + 1).max(2))
                .clamp(2, vaults.max(2));
            Ok(Quote {
                dry_run: true,
                task_class: class_name(TaskClass::Train),
                usage_scope: "training".to_owned(),
                epsilon_per_subject: epsilon.to_string(),
                audience_bound: None,
                minimum_result_cardinality: None,
                vaults,
                minimum_vault_quorum: quorum,
                fee_estimate_micro_sym: None,
                rejection_fee_micro_sym: rejection_fee(&params.prices, TaskClass::Train, u64::MAX)
                    .charged_micro_sym,
                policy_version,
            })
        }
    }
}

/// The quote of `spec` under the genesis policy (v1) and semantic catalog v1: what
/// an embedded network or a devnet whose policy governance has not changed charges.
pub fn quote_genesis(spec: &TaskSpec, vaults: u32) -> Result<Quote, NodeError> {
    quote(
        spec,
        &SemanticRegistry::catalog_v1(),
        &PolicyParams::default_v1(),
        1,
        vaults,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> TaskSpec {
        TaskSpec::from_toml(text).unwrap()
    }

    #[test]
    fn the_luckin_quote_bounds_the_audience_and_fee_and_bad_specs_are_refused() {
        let params = PolicyParams::default_v1();
        let semantic = SemanticRegistry::catalog_v1();
        let luckin = spec(include_str!("../../../../examples/luckin.toml"));
        let q = quote(&luckin, &semantic, &params, 1, 4).unwrap();
        let TaskSpec::Query(s) = &luckin else {
            panic!("query")
        };
        assert!(q.dry_run);
        assert_eq!(q.task_class, "query");
        assert_eq!(q.audience_bound, Some(s.audience_cap));
        assert_eq!(
            q.epsilon_per_subject,
            params.privacy.epsilon_per_query.to_string()
        );
        assert_eq!(q.minimum_vault_quorum, 3);
        assert!(q.fee_estimate_micro_sym.unwrap() > q.rejection_fee_micro_sym);
        let mut bad = s.clone();
        bad.brand = "Luckin Cofee".into();
        let e = quote(&TaskSpec::Query(bad), &semantic, &params, 1, 4).unwrap_err();
        assert!(e.to_string().contains("nothing reserved or charged"), "{e}");
        let mut zero = s.clone();
        zero.audience_cap = 0;
        let e = quote(&TaskSpec::Query(zero), &semantic, &params, 1, 4).unwrap_err();
        assert!(e.to_string().contains("audience_cap must be >= 1"), "{e}");
        let compute = spec(include_str!("../../../../examples/compute.toml"));
        let q = quote(&compute, &semantic, &params, 1, 4).unwrap();
        assert_eq!(
            (q.task_class.as_str(), q.fee_estimate_micro_sym),
            ("compute", None)
        );
        let train = spec(include_str!("../../../../examples/train.toml"));
        assert_eq!(
            quote(&train, &semantic, &params, 1, 4).unwrap().task_class,
            "train"
        );
    }
}
