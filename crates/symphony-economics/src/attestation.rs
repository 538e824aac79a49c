//! The attestation policy: which evidence the settlement plane accepts (seed 002:
//! TEE attestation is part of every task's evidence chain). A field of
//! [`crate::PolicyParams`], so it is proposed, approved and activated at an epoch
//! boundary like every other parameter, and a task keeps the policy of its admission.

use serde::{Deserialize, Serialize};
use symphony_core::EnclaveKind;

use crate::EconomicsError;

/// Intel's TCB status names (DCAP `tcbStatus`).
pub const TCB_STATUSES: [&str; 7] = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
];

/// What the verifiers accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationPolicy {
    /// Enclave kinds accepted (a production policy leaves out `software`).
    pub accepted_kinds: Vec<EnclaveKind>,
    /// TCB statuses accepted (Intel's names, [`TCB_STATUSES`]).
    pub accepted_tcb_statuses: Vec<String>,
    /// Accepted SGX MRENCLAVE values (64 hex digits); empty accepts any.
    #[serde(default)]
    pub sgx_mr_enclaves: Vec<String>,
    /// Accepted SGX MRSIGNER values (64 hex digits); empty accepts any.
    #[serde(default)]
    pub sgx_mr_signers: Vec<String>,
    /// Accepted TDX MRTD values (96 hex digits); empty accepts any.
    #[serde(default)]
    pub tdx_mr_tds: Vec<String>,
    /// Oldest collateral accepted: seconds since it was issued.
    pub max_collateral_age_secs: u64,
}

/// Evidence of a kind the policy does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} evidence is not accepted by the attestation policy (accepted: {accepted})")]
pub struct KindRefused {
    /// What produced the evidence.
    pub kind: EnclaveKind,
    /// What the policy accepts, comma-separated.
    pub accepted: String,
}

fn invalid(field: &'static str, reason: &'static str) -> EconomicsError {
    EconomicsError::InvalidParam { field, reason }
}

fn check_hex(field: &'static str, values: &[String], bytes: usize) -> Result<(), EconomicsError> {
    let ok = |v: &String| v.len() == 2 * bytes && v.bytes().all(|b| b.is_ascii_hexdigit());
    if values.iter().all(ok) {
        Ok(())
    } else {
        Err(invalid(
            field,
            if bytes == 32 {
                "each measurement must be 64 hex digits"
            } else {
                "each measurement must be 96 hex digits"
            },
        ))
    }
}

impl AttestationPolicy {
    /// Development: every kind (the software enclave included) and every TCB status
    /// Intel does not call revoked, collateral up to 30 days old. Policy version 1's
    /// default: the devnet and the demos run the software enclave.
    pub fn development() -> Self {
        AttestationPolicy {
            accepted_kinds: EnclaveKind::ALL.to_vec(),
            accepted_tcb_statuses: TCB_STATUSES[..6].iter().map(|s| s.to_string()).collect(),
            sgx_mr_enclaves: vec![],
            sgx_mr_signers: vec![],
            tdx_mr_tds: vec![],
            max_collateral_age_secs: 30 * 86_400,
        }
    }

    /// Production: hardware only, `UpToDate` (and `SWHardeningNeeded`), collateral
    /// at most 7 days old; measurements are pinned by the operators' proposal.
    pub fn production() -> Self {
        AttestationPolicy {
            accepted_kinds: vec![EnclaveKind::Sgx, EnclaveKind::Tdx],
            accepted_tcb_statuses: vec!["UpToDate".into(), "SWHardeningNeeded".into()],
            sgx_mr_enclaves: vec![],
            sgx_mr_signers: vec![],
            tdx_mr_tds: vec![],
            max_collateral_age_secs: 7 * 86_400,
        }
    }

    /// Whether evidence of `kind` is accepted.
    pub fn accepts(&self, kind: EnclaveKind) -> bool {
        self.accepted_kinds.contains(&kind)
    }

    /// Refuses evidence of a kind the policy does not accept, naming what it accepts.
    pub fn check_kind(&self, kind: EnclaveKind) -> Result<(), KindRefused> {
        if self.accepts(kind) {
            return Ok(());
        }
        Err(KindRefused {
            kind,
            accepted: self
                .accepted_kinds
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Validates the policy; the error names the field at fault.
    pub fn validate(&self) -> Result<(), EconomicsError> {
        if self.accepted_kinds.is_empty() {
            return Err(invalid(
                "attestation.accepted_kinds",
                "must accept at least one enclave kind (software, sgx, tdx)",
            ));
        }
        let mut kinds = self.accepted_kinds.clone();
        kinds.sort();
        kinds.dedup();
        if kinds.len() != self.accepted_kinds.len() {
            return Err(invalid(
                "attestation.accepted_kinds",
                "lists a kind more than once",
            ));
        }
        if let Some(_unknown) = self
            .accepted_tcb_statuses
            .iter()
            .find(|s| !TCB_STATUSES.contains(&s.as_str()))
        {
            return Err(invalid(
                "attestation.accepted_tcb_statuses",
                "unknown TCB status (Intel's names: UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, Revoked)",
            ));
        }
        if self.accepted_kinds.iter().any(|k| k.is_hardware())
            && self.accepted_tcb_statuses.is_empty()
        {
            return Err(invalid(
                "attestation.accepted_tcb_statuses",
                "a policy that accepts sgx or tdx must accept at least one TCB status",
            ));
        }
        check_hex("attestation.sgx_mr_enclaves", &self.sgx_mr_enclaves, 32)?;
        check_hex("attestation.sgx_mr_signers", &self.sgx_mr_signers, 32)?;
        check_hex("attestation.tdx_mr_tds", &self.tdx_mr_tds, 48)?;
        if self.max_collateral_age_secs == 0 {
            return Err(invalid(
                "attestation.max_collateral_age_secs",
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_production_refuses_software() {
        AttestationPolicy::development().validate().unwrap();
        AttestationPolicy::production().validate().unwrap();
        let e = AttestationPolicy::production()
            .check_kind(EnclaveKind::Software)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "software evidence is not accepted by the attestation policy (accepted: sgx, tdx)"
        );
        assert!(AttestationPolicy::development()
            .check_kind(EnclaveKind::Software)
            .is_ok());
    }

    #[test]
    fn bad_policies_name_their_field() {
        let field = |p: AttestationPolicy| match p.validate() {
            Err(EconomicsError::InvalidParam { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        let mut p = AttestationPolicy::production();
        p.accepted_kinds.clear();
        assert_eq!(field(p), "attestation.accepted_kinds");
        let mut p = AttestationPolicy::production();
        p.accepted_kinds.push(EnclaveKind::Sgx);
        assert_eq!(field(p), "attestation.accepted_kinds");
        let mut p = AttestationPolicy::production();
        p.accepted_tcb_statuses = vec!["Fine".into()];
        assert_eq!(field(p), "attestation.accepted_tcb_statuses");
        let mut p = AttestationPolicy::production();
        p.accepted_tcb_statuses.clear();
        assert_eq!(field(p), "attestation.accepted_tcb_statuses");
        let mut p = AttestationPolicy::production();
        p.sgx_mr_enclaves = vec!["ab".into()];
        assert_eq!(field(p), "attestation.sgx_mr_enclaves");
        let mut p = AttestationPolicy::production();
        p.tdx_mr_tds = vec!["00".repeat(32)];
        assert_eq!(field(p), "attestation.tdx_mr_tds");
        let mut p = AttestationPolicy::production();
        p.max_collateral_age_secs = 0;
        assert_eq!(field(p), "attestation.max_collateral_age_secs");
        // A software-only policy needs no TCB status.
        let mut p = AttestationPolicy::development();
        p.accepted_kinds = vec![EnclaveKind::Software];
        p.accepted_tcb_statuses.clear();
        p.validate().unwrap();
    }
}
