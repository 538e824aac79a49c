//! Conformance suite for every `Tee` + `AttestationVerifier` pair.
//!
//! Each backend provides a [`Fixture`]; [`suite`] runs every check. The checks only use
//! the traits and the report's public wire layout, so a hardware backend can reuse them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use symphony_enclave::{
    run_commitment, AttestationReport, AttestationVerifier, DecodeError, ReportExpectation, Tee,
    VerifyError,
};

/// What a backend supplies to the suite.
pub struct Fixture<T, V> {
    /// An enclave running allow-listed code on a trusted platform.
    pub tee: T,
    /// Same trusted platform, code that is NOT in the allow-list.
    pub foreign_code_tee: T,
    /// Allow-listed code on a platform the verifier does not trust.
    pub untrusted_platform_tee: T,
    /// The verifier under test.
    pub verifier: V,
}

const DATA: [u8; 32] = [0xAB; 32];
const NONCE: [u8; 32] = [0x11; 32];
const NOW_MS: u64 = 1_700_000_000_000;

fn expect(report_data: [u8; 32]) -> ReportExpectation {
    ReportExpectation {
        report_data,
        nonce: Some(NONCE),
    }
}

/// Runs every check.
pub fn suite<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    valid_report_verifies(f);
    attest_is_deterministic(f);
    run_binds_inputs_and_outputs(f);
    wrong_report_data_rejected(f);
    wrong_nonce_rejected(f);
    wrong_measurement_rejected(f);
    untrusted_platform_rejected(f);
    forged_signature_rejected(f);
    every_flipped_byte_rejected(f);
    field_flips_give_the_right_error(f);
}

fn valid_report_verifies<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let report = f.tee.attest(DATA, NONCE, NOW_MS).unwrap();
    let verified = f.verifier.verify(&report, &expect(DATA)).unwrap();
    assert_eq!(verified.measurement, f.tee.measurement());
    assert_eq!(verified.enclave_public_key, f.tee.enclave_public_key());
    assert_eq!(verified.issued_at_ms, NOW_MS);
    // Without a nonce expectation it verifies too.
    let no_nonce = ReportExpectation {
        report_data: DATA,
        nonce: None,
    };
    assert!(f.verifier.verify(&report, &no_nonce).is_ok());
    // Wire and serde round trips preserve validity.
    let decoded = AttestationReport::from_bytes(&report.to_bytes()).unwrap();
    assert_eq!(decoded, report);
    let json = serde_json::to_string(&report).unwrap();
    let from_json: AttestationReport = serde_json::from_str(&json).unwrap();
    assert_eq!(from_json, report);
    assert!(f.verifier.verify(&from_json, &expect(DATA)).is_ok());
}

fn attest_is_deterministic<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let a = f.tee.attest(DATA, NONCE, NOW_MS).unwrap();
    let b = f.tee.attest(DATA, NONCE, NOW_MS).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
}

fn run_binds_inputs_and_outputs<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let inputs = [3u8; 32];
    let (out, report) = f
        .tee
        .run(&inputs, NONCE, NOW_MS, || (42u32, [9u8; 32]))
        .unwrap();
    assert_eq!(out, 42);
    let expected = run_commitment(&inputs, &[9u8; 32]);
    assert!(f.verifier.verify(&report, &expect(expected)).is_ok());
    // A verifier told about different outputs rejects the run.
    let other = run_commitment(&inputs, &[8u8; 32]);
    assert!(matches!(
        f.verifier.verify(&report, &expect(other)),
        Err(VerifyError::ReportDataMismatch { .. })
    ));
}

fn wrong_report_data_rejected<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let report = f.tee.attest(DATA, NONCE, NOW_MS).unwrap();
    let err = f.verifier.verify(&report, &expect([0xAC; 32])).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReportDataMismatch { .. }),
        "{err:?}"
    );
}

fn wrong_nonce_rejected<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let report = f.tee.attest(DATA, [0x12; 32], NOW_MS).unwrap();
    let err = f.verifier.verify(&report, &expect(DATA)).unwrap_err();
    assert_eq!(err, VerifyError::NonceMismatch);
}

fn wrong_measurement_rejected<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    assert_ne!(f.foreign_code_tee.measurement(), f.tee.measurement());
    let report = f.foreign_code_tee.attest(DATA, NONCE, NOW_MS).unwrap();
    let err = f.verifier.verify(&report, &expect(DATA)).unwrap_err();
    assert_eq!(
        err,
        VerifyError::UnknownMeasurement {
            measurement: f.foreign_code_tee.measurement()
        }
    );
    // Relabelling foreign code with the allowed measurement breaks the signature.
    let mut relabelled = report;
    relabelled.measurement = f.tee.measurement();
    let err = f.verifier.verify(&relabelled, &expect(DATA)).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
}

fn untrusted_platform_rejected<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let report = f
        .untrusted_platform_tee
        .attest(DATA, NONCE, NOW_MS)
        .unwrap();
    let err = f.verifier.verify(&report, &expect(DATA)).unwrap_err();
    assert!(
        matches!(err, VerifyError::UntrustedPlatformKey { .. }),
        "{err:?}"
    );
}

fn forged_signature_rejected<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    // Sign the right body with the wrong (untrusted) key, but claim the trusted key.
    let genuine = f.tee.attest(DATA, NONCE, NOW_MS).unwrap();
    let mut forged = f
        .untrusted_platform_tee
        .attest(DATA, NONCE, NOW_MS)
        .unwrap();
    forged.measurement = genuine.measurement;
    forged.enclave_public_key = genuine.enclave_public_key;
    forged.platform_public_key = genuine.platform_public_key;
    let err = f.verifier.verify(&forged, &expect(DATA)).unwrap_err();
    assert_eq!(err, VerifyError::BadSignature);
    // An all-zero signature is rejected too.
    let mut zeroed = genuine;
    zeroed.signature = [0; 64];
    assert_eq!(
        f.verifier.verify(&zeroed, &expect(DATA)).unwrap_err(),
        VerifyError::BadSignature
    );
}

fn every_flipped_byte_rejected<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let bytes = f.tee.attest(DATA, NONCE, NOW_MS).unwrap().to_bytes();
    for index in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut tampered = bytes.clone();
            tampered[index] ^= bit;
            match AttestationReport::from_bytes(&tampered) {
                Err(e) => assert!(matches!(e, DecodeError::UnsupportedVersion { .. })),
                Ok(report) => assert!(
                    f.verifier.verify(&report, &expect(DATA)).is_err(),
                    "flip of byte {index} (mask {bit:#x}) was accepted"
                ),
            }
        }
    }
    assert!(matches!(
        AttestationReport::from_bytes(&bytes[1..]),
        Err(DecodeError::Length { .. })
    ));
}

fn field_flips_give_the_right_error<T: Tee, V: AttestationVerifier>(f: &Fixture<T, V>) {
    let report = f.tee.attest(DATA, NONCE, NOW_MS).unwrap();
    let check = |mutate: &dyn Fn(&mut AttestationReport), want: &dyn Fn(&VerifyError) -> bool| {
        let mut r = report.clone();
        mutate(&mut r);
        let err = f.verifier.verify(&r, &expect(DATA)).unwrap_err();
        assert!(want(&err), "unexpected error {err:?}");
    };
    let bad_sig = |e: &VerifyError| *e == VerifyError::BadSignature;
    check(&|r| r.report_data[0] ^= 1, &bad_sig);
    check(&|r| r.enclave_public_key[31] ^= 1, &bad_sig);
    check(&|r| r.nonce[5] ^= 1, &bad_sig);
    check(&|r| r.issued_at_ms += 1, &bad_sig);
    check(&|r| r.signature[10] ^= 1, &bad_sig);
    check(&|r| r.platform_public_key[0] ^= 1, &|e| {
        matches!(e, VerifyError::UntrustedPlatformKey { .. })
    });
    check(&|r| r.version = 2, &|e| {
        *e == VerifyError::UnsupportedVersion { found: 2 }
    });
}
