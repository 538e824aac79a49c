//! # symphony-enclave: the `Tee` boundary
//!
//! SCP treats a TEE as a temporary extension of a Vault's privacy boundary: code
//! whose identity is *measured* runs on authorized plaintext, and an *attestation
//! report* proves to the settlement plane which code ran and which inputs and
//! outputs it was bound to. This crate is that boundary and nothing more.
//!
//! ## Pieces
//!
//! - [`CodeIdentity`] → [`Measurement`]: the 32-byte code identity hash,
//!   SHA-256 over a canonical, length-prefixed encoding (see [`CodeIdentity::measurement`]).
//! - [`Tee`]: the narrow enclave trait (measurement, enclave public key, `attest`,
//!   and the provided [`Tee::run`] that executes a closure and binds the report to a
//!   commitment over the caller's inputs and the closure's outputs).
//! - [`SoftwareEnclave`]: the default implementation. It *simulates* a platform: a
//!   platform signing key (standing in for a hardware quoting key) signs reports for
//!   an enclave key derived from the platform key and the measurement.
//! - [`AttestationReport`]: the signed statement, with a documented fixed byte layout
//!   ([`AttestationReport::to_bytes`]); serde for transport.
//! - [`AttestationVerifier`] / [`SoftwareAttestationVerifier`]: checks a report against
//!   trusted platform keys, an allow-list of measurements and the expected
//!   `report_data` (and optionally the nonce).
//!
//! ## Invariants
//!
//! - No clock and no OS randomness inside the crate: `issued_at_ms` and nonces are
//!   inputs, keys are passed in or derived deterministically from passed-in keys. The
//!   same inputs give byte-identical reports (ed25519 signatures are deterministic).
//! - A report is accepted only if *all* of these hold, checked in this order so the
//!   error names the first failure: known layout version, trusted platform key, valid
//!   signature over the canonical bytes, measurement in the allow-list, `report_data`
//!   equals the expected commitment, nonce equals the expected nonce (if one is given).
//!
//! ## Failure contract
//!
//! Bad input (a tampered or foreign report, malformed bytes) is never a panic: it is a
//! typed [`VerifyError`] or [`DecodeError`] naming exactly what failed.
//!
//! ## What the software enclave does *not* give you
//!
//! It gives no confidentiality against the host: the "enclave" is the same process.
//! It gives the protocol the *shape* of attestation (measured identity, signed binding
//! of inputs and outputs, allow-listed code) so that every downstream check is real
//! and a hardware backend can replace it without changing callers.
//!
//! ## Where hardware verifiers plug in
//!
//! A hardware backend (e.g. Intel SGX/TDX with DCAP quotes verified by the `dcap-qvl`
//! crate) adds, beside the software types:
//! 1. a `Tee` implementation whose `attest` asks the platform for a quote with
//!    `report_data` = the 32-byte commitment (zero-padded to the 64-byte quote field);
//! 2. an evidence variant carrying the raw quote (the report would gain an
//!    `evidence: Evidence { Software { .. }, DcapQuote(Vec<u8>) }` field; the layout
//!    version is bumped);
//! 3. an `AttestationVerifier` implementation that runs `dcap-qvl` quote verification
//!    against collateral (TCB info, QE identity, CRLs) supplied as *inputs* together
//!    with the verification time, then applies the same allow-list and
//!    `report_data`/nonce checks as [`SoftwareAttestationVerifier`] (MRENCLAVE/MRTD
//!    plays the role of [`Measurement`]).
//!
//! The shared conformance suite in `tests/suite/` is generic over `Tee` and
//! `AttestationVerifier`; a hardware backend runs it unchanged.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod hex_serde;
mod identity;
mod report;
mod tee;
mod verify;

pub use identity::{CodeIdentity, Measurement};
pub use report::{
    run_commitment, AttestationReport, Commitment, DecodeError, EnclaveKind, Nonce,
    REPORT_LAYOUT_VERSION, REPORT_SIGNING_DOMAIN, REPORT_WIRE_LEN,
};
pub use tee::{SoftwareEnclave, Tee, TeeError};
pub use verify::{
    AttestationVerifier, ReportExpectation, SoftwareAttestationVerifier, VerifiedEnclave,
    VerifyError,
};
