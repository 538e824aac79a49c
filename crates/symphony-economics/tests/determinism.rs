//! Determinism and policy activation: `resolve` is a pure function of
//! `(epoch_id, semantic_version, policy_version)`; changes activate only at a later
//! epoch boundary; a task keeps the version it was admitted under.

use symphony_core::{canonical_bytes, content_hash, EpochId, PolicyVersion, SemanticVersion};
use symphony_economics::policy::PolicyParams;
use symphony_economics::registry::PolicyRegistry;
use symphony_economics::EconomicsError;

fn registry_with_change() -> PolicyRegistry {
    let mut reg = PolicyRegistry::genesis(PolicyParams::default_v1()).unwrap();
    let mut v2 = PolicyParams::default_v1();
    v2.prices.query.base_fee_micro_sym = 2_000_000;
    // proposed during epoch 5, activates at the next boundary (epoch 6)
    assert_eq!(
        reg.propose(v2, EpochId(5), EpochId(6)).unwrap(),
        PolicyVersion(2)
    );
    reg
}

#[test]
fn resolve_is_byte_identical_for_identical_inputs() {
    let a = registry_with_change();
    let b = registry_with_change();
    for (epoch, version) in [(0, 1), (5, 1), (6, 1), (6, 2), (1_000, 2)] {
        let args = (EpochId(epoch), SemanticVersion(3), PolicyVersion(version));
        let ra = canonical_bytes(&a.resolve(args.0, args.1, args.2).unwrap()).unwrap();
        let rb = canonical_bytes(&b.resolve(args.0, args.1, args.2).unwrap()).unwrap();
        let again = canonical_bytes(&a.resolve(args.0, args.1, args.2).unwrap()).unwrap();
        assert_eq!(ra, rb);
        assert_eq!(ra, again);
    }
    // different inputs give different bytes
    let x = canonical_bytes(
        &a.resolve(EpochId(6), SemanticVersion(3), PolicyVersion(1))
            .unwrap(),
    )
    .unwrap();
    let y = canonical_bytes(
        &a.resolve(EpochId(6), SemanticVersion(3), PolicyVersion(2))
            .unwrap(),
    )
    .unwrap();
    assert_ne!(x, y);
}

#[test]
fn default_policy_hash_is_golden() {
    // A changed default or byte layout of PolicyParams must be a deliberate change:
    // update this hash together with the DECISIONS section of the crate docs.
    let h = content_hash("scp/policy-params/v1", &PolicyParams::default_v1()).unwrap();
    assert_eq!(h.to_hex(), GOLDEN_DEFAULT_V1_HASH);
}

// Changed with issue #17: PolicyParams gained `attestation`.
const GOLDEN_DEFAULT_V1_HASH: &str =
    "94bcd05c5464eaa03214cbf458f0cf390218cbaa370ac9e6e5fd7bc4f1b33f83";

#[test]
fn change_activates_only_at_the_next_epoch_boundary() {
    let reg = registry_with_change();
    assert_eq!(reg.active_version_at(EpochId(5)), Some(PolicyVersion(1)));
    assert_eq!(reg.active_version_at(EpochId(6)), Some(PolicyVersion(2)));
    assert_eq!(
        reg.resolve(EpochId(5), SemanticVersion(1), PolicyVersion(2)),
        Err(EconomicsError::PolicyNotYetActive {
            version: PolicyVersion(2),
            activation_epoch: EpochId(6),
            epoch: EpochId(5),
        })
    );
    let mut reg = reg;
    // a proposal may not activate in the epoch it is proposed in, or earlier
    for activation in [7, 3] {
        assert!(matches!(
            reg.propose(PolicyParams::default_v1(), EpochId(7), EpochId(activation)),
            Err(EconomicsError::ActivationNotAtFutureBoundary { .. })
        ));
    }
    // nor at or before an already scheduled activation
    assert!(matches!(
        reg.propose(PolicyParams::default_v1(), EpochId(2), EpochId(6)),
        Err(EconomicsError::ActivationNotMonotonic { .. })
    ));
    // an invalid policy is refused before registration
    let mut bad = PolicyParams::default_v1();
    bad.fee_shares.treasury_bp = 1_100;
    assert!(matches!(
        reg.propose(bad, EpochId(7), EpochId(8)),
        Err(EconomicsError::ShareOutOfRange {
            field: "treasury_bp",
            ..
        })
    ));
    assert_eq!(
        reg.propose(PolicyParams::default_v1(), EpochId(7), EpochId(8))
            .unwrap(),
        PolicyVersion(3)
    );
    assert!(matches!(
        reg.resolve(EpochId(8), SemanticVersion(1), PolicyVersion(9)),
        Err(EconomicsError::UnknownPolicyVersion { .. })
    ));
}

#[test]
fn admitted_task_keeps_its_policy_version() {
    let reg = registry_with_change();
    // task admitted in epoch 5 under the then-active version 1
    let admitted_under = reg.active_version_at(EpochId(5)).unwrap();
    assert_eq!(admitted_under, PolicyVersion(1));
    // settles in epoch 9, after version 2 activated: still version 1's prices
    let r = reg
        .resolve(EpochId(9), SemanticVersion(1), admitted_under)
        .unwrap();
    assert_eq!(r.policy_version, PolicyVersion(1));
    assert!(r.superseded);
    assert_eq!(r.params.prices.query.base_fee_micro_sym, 1_000_000);
    // a task admitted in epoch 9 gets version 2
    let v = reg.active_version_at(EpochId(9)).unwrap();
    let r2 = reg.resolve(EpochId(9), SemanticVersion(1), v).unwrap();
    assert_eq!(
        (r2.policy_version, r2.superseded),
        (PolicyVersion(2), false)
    );
    assert_eq!(r2.params.prices.query.base_fee_micro_sym, 2_000_000);
}

#[test]
fn resolved_digest_is_stable() {
    let a = registry_with_change();
    let d1 = a
        .resolve(EpochId(9), SemanticVersion(2), PolicyVersion(1))
        .unwrap()
        .digest()
        .unwrap();
    let d2 = registry_with_change()
        .resolve(EpochId(9), SemanticVersion(2), PolicyVersion(1))
        .unwrap()
        .digest()
        .unwrap();
    assert_eq!(d1, d2);
    let d3 = a
        .resolve(EpochId(9), SemanticVersion(3), PolicyVersion(1))
        .unwrap()
        .digest()
        .unwrap();
    assert_ne!(
        d1, d3,
        "the semantic version is part of the resolution context"
    );
    assert_eq!(a.records().count(), 2);
}

#[test]
fn amounts_read_as_sym_with_separators() {
    use symphony_economics::format_sym;
    assert_eq!(format_sym(0), "0 SYM");
    assert_eq!(format_sym(54_000_000), "54 SYM");
    assert_eq!(format_sym(6_300_000), "6.3 SYM");
    assert_eq!(format_sym(245_053), "0.245053 SYM");
    assert_eq!(format_sym(1), "0.000001 SYM");
    assert_eq!(format_sym(1_234_567_500_000), "1,234,567.5 SYM");
    assert_eq!(format_sym(999_000_000), "999 SYM");
    assert_eq!(format_sym(1_000_000_000), "1,000 SYM");
    assert_eq!(format_sym(u64::MAX), "18,446,744,073,709.551615 SYM");
}
