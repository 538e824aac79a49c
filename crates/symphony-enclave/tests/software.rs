//! Runs the shared conformance suite against the software enclave and verifier.

mod suite;

use ed25519_dalek::SigningKey;
use symphony_enclave::{CodeIdentity, SoftwareAttestationVerifier, SoftwareEnclave, Tee};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

#[test]
fn software_enclave_passes_the_shared_suite() {
    let allowed = CodeIdentity::new("symphony/luckin-eligibility", "1.0.0", [1; 32]);
    let foreign = CodeIdentity::new("symphony/luckin-eligibility", "1.0.1-evil", [1; 32]);
    let tee = SoftwareEnclave::new(key(1), &allowed);
    let verifier =
        SoftwareAttestationVerifier::new([allowed.measurement()], [tee.platform_public_key()]);
    let fixture = suite::Fixture {
        foreign_code_tee: SoftwareEnclave::new(key(1), &foreign),
        untrusted_platform_tee: SoftwareEnclave::new(key(2), &allowed),
        tee,
        verifier,
    };
    suite::suite(&fixture);
}

#[test]
fn enclave_key_is_derived_per_platform_and_code() {
    let a = CodeIdentity::new("a", "1", [0; 32]);
    let b = CodeIdentity::new("b", "1", [0; 32]);
    let k1a = SoftwareEnclave::new(key(1), &a).enclave_public_key();
    assert_eq!(k1a, SoftwareEnclave::new(key(1), &a).enclave_public_key());
    assert_ne!(k1a, SoftwareEnclave::new(key(1), &b).enclave_public_key());
    assert_ne!(k1a, SoftwareEnclave::new(key(2), &a).enclave_public_key());
}

#[test]
fn enclave_signatures_verify_under_the_attested_key() {
    use ed25519_dalek::{Verifier, VerifyingKey};
    let tee = SoftwareEnclave::new(key(3), &CodeIdentity::new("x", "1", [2; 32]));
    let sig = tee.sign(b"slice result bundle");
    let vk = VerifyingKey::from_bytes(&tee.enclave_public_key()).unwrap();
    assert!(vk.verify(b"slice result bundle", &sig).is_ok());
    assert!(vk.verify(b"slice result bundle!", &sig).is_err());
}
