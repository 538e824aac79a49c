//! Verification of real TEE evidence for SCP's evidence chain (seed 002: "TEE
//! attestation" is part of every task's evidence).
//!
//! The protocol's development backend is a software enclave (an ed25519-signed
//! report checked against an allow-list, `symphony-enclave`). This crate verifies
//! what real hardware produces: Intel **SGX** and **TDX** DCAP quotes, with
//! [`dcap_qvl`] (pure Rust, `ring`): the PCK certificate chain carried in the quote up
//! to Intel's SGX root CA, the quoting enclave's signature, and the collateral —
//! CRLs, TCB info and QE identity — supplied as files (nothing is fetched at run
//! time), at an explicit verification time.
//!
//! On top of the quote's own validity, an [`AttestationPolicy`] (a governed policy
//! parameter) decides what is accepted: which enclave kinds (a production policy
//! refuses `software`), which TCB statuses, which measurements (MRENCLAVE / MRSIGNER
//! for SGX, MRTD for TDX), and how old the collateral may be. A quote is bound to
//! one piece of work through its report data: [`report_data_binding`] commits to the
//! task id, the slice or aggregate commitment and the enclave's ephemeral public key,
//! and [`verify_quote`] checks it.
//!
//! [`Evidence`] says what produced it: `software`, or `sgx` / `tdx` with the TCB
//! status, the advisories and the measurements.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

pub use symphony_core::EnclaveKind;
/// The attestation policy is a governed policy parameter (`PolicyParams::attestation`).
pub use symphony_economics::AttestationPolicy;

/// The measurements a quote reports (hex).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// SGX MRENCLAVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_enclave: Option<String>,
    /// SGX MRSIGNER.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_signer: Option<String>,
    /// TDX MRTD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_td: Option<String>,
    /// TDX RTMR0..3.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub rtmrs: Vec<String>,
}

/// Verified evidence of a quote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// What produced it.
    pub kind: EnclaveKind,
    /// TCB status of the platform (Intel's name, e.g. `UpToDate`).
    pub tcb_status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
    /// Measurements.
    pub measurements: Measurements,
    /// The 64 bytes of report data (hex).
    pub report_data: String,
    /// Verification time, seconds since the Unix epoch.
    pub verified_at: u64,
    /// The collateral's validity window, seconds since the Unix epoch.
    pub collateral_window: (u64, u64),
}

/// Why a quote was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// Reading a file failed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The collateral is malformed.
    #[error("collateral {path}: {reason}")]
    Collateral {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The verification time is outside the collateral's validity window.
    #[error("collateral is valid from {from} to {until} (s since the epoch), not at {at}")]
    CollateralNotValid {
        /// Window start.
        from: u64,
        /// Window end (`nextUpdate`).
        until: u64,
        /// The verification time.
        at: u64,
    },
    /// The quote does not verify (signature, chain, CRL, TCB, format).
    #[error("quote does not verify: {0}")]
    Quote(String),
    /// The quote verifies but the policy refuses it.
    #[error("refused by the attestation policy: {0}")]
    Policy(String),
    /// The report data does not commit to the expected work.
    #[error("report data does not commit to this task, commitment and enclave key")]
    Binding,
}

/// Collateral with its validity window.
#[derive(Clone, Debug)]
pub struct Collateral {
    inner: QuoteCollateralV3,
    /// Latest `issueDate` of the TCB info and QE identity, s.
    pub issued_at: u64,
    /// Earliest `nextUpdate` of the TCB info and QE identity, s.
    pub next_update: u64,
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.f]Z`.
pub fn parse_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), proleptic Gregorian.
    let (y, m) = (y as i64 - i64::from(m <= 2), m as i64);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400)
        .ok()
        .map(|t| t + hh * 3_600 + mm * 60 + ss)
}

impl Collateral {
    /// Reads collateral (the JSON form `dcap-qvl` and PCCS tools write).
    pub fn load(path: &Path) -> Result<Self, AttestError> {
        let bytes = std::fs::read(path).map_err(|e| AttestError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_json(&bytes).map_err(|reason| AttestError::Collateral {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses collateral JSON and its validity window.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let inner: QuoteCollateralV3 =
            serde_json::from_slice(bytes).map_err(|e| format!("not collateral JSON: {e}"))?;
        let window = |json: &str, what: &str| -> Result<(u64, u64), String> {
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|e| format!("{what}: {e}"))?;
            let date = |k: &str| {
                v[k].as_str()
                    .and_then(parse_utc)
                    .ok_or_else(|| format!("{what}: no valid {k}"))
            };
            Ok((date("issueDate")?, date("nextUpdate")?))
        };
        let (tcb_from, tcb_until) = window(&inner.tcb_info, "tcb_info")?;
        let (qe_from, qe_until) = window(&inner.qe_identity, "qe_identity")?;
        Ok(Collateral {
            inner,
            issued_at: tcb_from.max(qe_from),
            next_update: tcb_until.min(qe_until),
        })
    }
}

/// Collateral read from files, kept until its `nextUpdate`.
#[derive(Debug, Default)]
pub struct CollateralCache {
    entries: BTreeMap<PathBuf, Collateral>,
}

impl CollateralCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The collateral in `path`, from the cache while it is valid at `at`, else
    /// read again (an operator replaces an expired file with a fresh one).
    pub fn get(&mut self, path: &Path, at: u64) -> Result<&Collateral, AttestError> {
        let stale = self.entries.get(path).is_none_or(|c| at >= c.next_update);
        if stale {
            let c = Collateral::load(path)?;
            self.entries.insert(path.to_owned(), c);
        }
        self.entries.get(path).ok_or_else(|| AttestError::File {
            path: path.to_owned(),
            reason: "not cached".into(),
        })
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The report data a quote must carry for one piece of work: SHA-512 over a domain
/// tag, the task id, the slice or aggregate commitment and the enclave's ephemeral
/// public key.
pub fn report_data_binding(
    task_id: &str,
    commitment: &[u8; 32],
    enclave_key: &[u8; 32],
) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(b"scp/attest/report-data/v1\0");
    h.update((task_id.len() as u64).to_le_bytes());
    h.update(task_id.as_bytes());
    h.update(commitment);
    h.update(enclave_key);
    h.finalize().into()
}

fn measurements(report: &Report) -> (EnclaveKind, Measurements, [u8; 64]) {
    let td = |r: &dcap_qvl::quote::TDReport10| {
        (
            EnclaveKind::Tdx,
            Measurements {
                mr_td: Some(hex::encode(r.mr_td)),
                rtmrs: [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3]
                    .iter()
                    .map(hex::encode)
                    .collect(),
                ..Measurements::default()
            },
            r.report_data,
        )
    };
    match report {
        Report::SgxEnclave(r) => (
            EnclaveKind::Sgx,
            Measurements {
                mr_enclave: Some(hex::encode(r.mr_enclave)),
                mr_signer: Some(hex::encode(r.mr_signer)),
                ..Measurements::default()
            },
            r.report_data,
        ),
        Report::TD10(r) => td(r),
        Report::TD15(r) => td(&r.base),
        Report::TD15Ex(r) => td(&r.base.base),
    }
}

fn pinned(allowed: &[String], value: Option<&String>, what: &str) -> Result<(), AttestError> {
    match value {
        Some(v) if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) => {
            Err(AttestError::Policy(format!(
                "{what} {v} is not an accepted measurement"
            )))
        }
        _ => Ok(()),
    }
}

/// Verifies a DCAP quote against `collateral` at `at` (seconds since the epoch),
/// then applies `policy` and, when given, checks that the report data is
/// `expected_report_data` (see [`report_data_binding`]).
pub fn verify_quote(
    quote: &[u8],
    collateral: &Collateral,
    at: u64,
    policy: &AttestationPolicy,
    expected_report_data: Option<&[u8; 64]>,
) -> Result<Evidence, AttestError> {
    if at < collateral.issued_at || at >= collateral.next_update {
        return Err(AttestError::CollateralNotValid {
            from: collateral.issued_at,
            until: collateral.next_update,
            at,
        });
    }
    let age = at - collateral.issued_at;
    if age > policy.max_collateral_age_secs {
        return Err(AttestError::Policy(format!(
            "collateral is {age} s old, more than {} s",
            policy.max_collateral_age_secs
        )));
    }
    let verified = QuoteVerifier::new_prod()
        .verify(quote, &collateral.inner, at)
        .map_err(|e| AttestError::Quote(format!("{e:#}")))?;
    let (kind, measurements, report_data) = measurements(&verified.report);
    policy
        .check_kind(kind)
        .map_err(|e| AttestError::Policy(e.to_string()))?;
    if !policy.accepted_tcb_statuses.contains(&verified.status) {
        return Err(AttestError::Policy(format!(
            "TCB status {} is not accepted (advisories: {})",
            verified.status,
            verified.advisory_ids.join(", ")
        )));
    }
    pinned(
        &policy.sgx_mr_enclaves,
        measurements.mr_enclave.as_ref(),
        "MRENCLAVE",
    )?;
    pinned(
        &policy.sgx_mr_signers,
        measurements.mr_signer.as_ref(),
        "MRSIGNER",
    )?;
    pinned(&policy.tdx_mr_tds, measurements.mr_td.as_ref(), "MRTD")?;
    if let Some(expected) = expected_report_data {
        if &report_data != expected {
            return Err(AttestError::Binding);
        }
    }
    Ok(Evidence {
        kind,
        tcb_status: verified.status,
        advisory_ids: verified.advisory_ids,
        measurements,
        report_data: hex::encode(report_data),
        verified_at: at,
        collateral_window: (collateral.issued_at, collateral.next_update),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse_like_the_calendar() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2025-06-19T10:56:11Z"), Some(1_750_330_571));
        assert_eq!(parse_utc("2000-02-29T23:59:59.5Z"), Some(951_868_799));
        assert_eq!(parse_utc("2025-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("yesterday"), None);
    }

    #[test]
    fn binding_changes_with_every_input() {
        let a = report_data_binding("task-1", &[1; 32], &[2; 32]);
        assert_ne!(a, report_data_binding("task-2", &[1; 32], &[2; 32]));
        assert_ne!(a, report_data_binding("task-1", &[3; 32], &[2; 32]));
        assert_ne!(a, report_data_binding("task-1", &[1; 32], &[4; 32]));
    }
}
