//! Inspection points of a round's secure aggregation, for audits and tests.
//!
//! A production run ([`super::run_training`]) uses [`NoTap`]: every method is a no-op
//! and the run is byte-identical with or without a tap. [`super::run_training_tapped`]
//! lets an auditor observe, per round:
//!
//! * **Vault side** ([`RoundTap::vault_update`]): the quantized update a Vault's
//!   enclave produced before masking (DP-SGD clipped and noised, FedAvg pre-scaled,
//!   fixed-point in `Z_2^32`). It is the Vault operator's own copy of its own output;
//!   in a deployment that sink lives with the Vault, never with the masters.
//! * **Master side** ([`RoundTap::aggregation_inputs`]): exactly what the aggregation
//!   runtime receives, the masked vectors of the Vaults whose slice verified, and
//!   ([`RoundTap::aggregate_sum`]) the sum the aggregation enclave unmasked.
//!
//! Apart from its one fault point, [`RoundTap::drops_out`] (a Vault dropping out of
//! a round after the masks were agreed, as a crash or partition would), the tap only
//! observes; it cannot change a vector, a commitment or a decision.

use symphony_core::ids::VaultId;

/// Observer of secure aggregation. Every method defaults to doing nothing.
pub trait RoundTap {
    /// Fault point, asked once per Vault after the round's keys are agreed and the
    /// Shamir shares dealt, before the Vault trains: `true` makes `vault` drop out of
    /// `round` (its update never arrives; the survivors' shares remove its masks).
    fn drops_out(&mut self, _round: u32, _vault: &VaultId) -> bool {
        false
    }

    /// Vault side: `vault`'s quantized update of `round` before masking.
    fn vault_update(&mut self, _round: u32, _vault: &VaultId, _words: &[u32]) {}

    /// Master side: the masked vectors handed to the aggregation runtime for `round`
    /// (one per Vault whose slice verified, in roster order) and the Vaults declared
    /// dropped (their masks are removed with the survivors' Shamir shares).
    fn aggregation_inputs(
        &mut self,
        _round: u32,
        _masked: &[(VaultId, &[u32])],
        _dropped: &[VaultId],
    ) {
    }

    /// The sum the aggregation enclave unmasked for `round`, in `Z_2^32` (before
    /// decoding to real values).
    fn aggregate_sum(&mut self, _round: u32, _sum: &[u32]) {}
}

/// The tap of a production run: observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTap;

impl RoundTap for NoTap {}
