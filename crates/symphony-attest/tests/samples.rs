//! Real SGX and TDX quotes (the samples `dcap-qvl` publishes) against their
//! collateral: accepted inside the collateral's validity window, refused after
//! `nextUpdate`, with a flipped byte, under a policy that pins another
//! measurement or refuses the TCB status, or when the report data does not
//! commit to the expected work.

use std::path::PathBuf;

use symphony_attest::*;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn sample(kind: &str) -> (Vec<u8>, Collateral) {
    let quote = std::fs::read(data(&format!("{kind}_quote"))).unwrap();
    let collateral = Collateral::load(&data(&format!("{kind}_quote_collateral.json"))).unwrap();
    (quote, collateral)
}

fn inside(c: &Collateral) -> u64 {
    c.issued_at + 3_600
}

#[test]
fn sgx_sample_verifies_with_its_status_and_measurements() {
    let (quote, c) = sample("sgx");
    let e = verify_quote(
        &quote,
        &c,
        inside(&c),
        &AttestationPolicy::development(),
        None,
    )
    .unwrap();
    assert_eq!(e.kind, EnclaveKind::Sgx);
    assert_eq!(e.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_eq!(e.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(e.measurements.mr_enclave.as_ref().unwrap().len(), 64);
    assert!(e.measurements.mr_td.is_none());
    // Production refuses the status (and would refuse software evidence outright).
    let err = verify_quote(
        &quote,
        &c,
        inside(&c),
        &AttestationPolicy::production(),
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("TCB status ConfigurationAndSWHardeningNeeded"),
        "{err}"
    );
    assert!(AttestationPolicy::production()
        .check_kind(EnclaveKind::Software)
        .is_err());
    assert!(AttestationPolicy::development()
        .check_kind(EnclaveKind::Software)
        .is_ok());
}

#[test]
fn tdx_sample_verifies_with_mrtd_and_rtmrs() {
    let (quote, c) = sample("tdx");
    let e = verify_quote(
        &quote,
        &c,
        inside(&c),
        &AttestationPolicy::development(),
        None,
    )
    .unwrap();
    assert_eq!(e.kind, EnclaveKind::Tdx);
    assert_eq!(e.measurements.mr_td.as_ref().unwrap().len(), 96);
    assert_eq!(e.measurements.rtmrs.len(), 4);
    // Pinning the right MRTD accepts; pinning another refuses.
    let mut policy = AttestationPolicy::development();
    policy.tdx_mr_tds = vec![e.measurements.mr_td.clone().unwrap()];
    assert!(verify_quote(&quote, &c, inside(&c), &policy, None).is_ok());
    policy.tdx_mr_tds = vec!["00".repeat(48)];
    let err = verify_quote(&quote, &c, inside(&c), &policy, None).unwrap_err();
    assert!(err.to_string().contains("MRTD"), "{err}");
}

#[test]
fn expired_collateral_a_flipped_byte_and_a_wrong_binding_are_refused() {
    let (quote, c) = sample("sgx");
    let policy = AttestationPolicy::development();
    let err = verify_quote(&quote, &c, c.next_update, &policy, None).unwrap_err();
    assert!(
        matches!(err, AttestError::CollateralNotValid { .. }),
        "{err}"
    );
    let err = verify_quote(&quote, &c, c.issued_at - 1, &policy, None).unwrap_err();
    assert!(
        matches!(err, AttestError::CollateralNotValid { .. }),
        "{err}"
    );
    // Old collateral beyond the policy's age.
    let mut strict = policy.clone();
    strict.max_collateral_age_secs = 60;
    let err = verify_quote(&quote, &c, inside(&c), &strict, None).unwrap_err();
    assert!(err.to_string().contains("old"), "{err}");
    // A byte of the report body flipped: the QE signature no longer verifies.
    let mut tampered = quote.clone();
    tampered[48 + 64] ^= 1;
    let err = verify_quote(&tampered, &c, inside(&c), &policy, None).unwrap_err();
    assert!(matches!(err, AttestError::Quote(_)), "{err}");
    // Binding: the quote's own report data matches, any other does not.
    let e = verify_quote(&quote, &c, inside(&c), &policy, None).unwrap();
    let mut own = [0u8; 64];
    own.copy_from_slice(&hex::decode(&e.report_data).unwrap());
    assert!(verify_quote(&quote, &c, inside(&c), &policy, Some(&own)).is_ok());
    let other = report_data_binding("task-1", &[1; 32], &[2; 32]);
    let err = verify_quote(&quote, &c, inside(&c), &policy, Some(&other)).unwrap_err();
    assert_eq!(err, AttestError::Binding);
}

#[test]
fn the_cache_keeps_collateral_until_next_update() {
    let path = data("tdx_quote_collateral.json");
    let mut cache = CollateralCache::new();
    let c = Collateral::load(&path).unwrap();
    let first = cache.get(&path, inside(&c)).unwrap().next_update;
    assert_eq!(first, c.next_update);
    assert_eq!(cache.len(), 1);
    assert!(cache.get(&data("missing.json"), 0).is_err());
}
