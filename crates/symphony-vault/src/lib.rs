//! # symphony-vault
//!
//! The Data Sovereignty Service of an enterprise node: an encrypted record store,
//! the consent registry, the privacy budget ledger and Vault-level authorization,
//! all in one redb file, plus a synthetic data generator and the importer.
//!
//! (Layout, formats and measured figures: see the sections below.)
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
pub mod crypto;
pub mod error;
pub mod generate;
pub mod import;
pub mod ledger;
pub mod record;
pub mod store;

pub use auth::Authorized;
pub use crypto::VaultKey;
pub use error::{GenerateError, ImportError, VaultError};
pub use generate::{generate, GenerateParams, GenerateSummary};
pub use import::{
    import_consent, import_file, import_records, validate_records, ImportOptions, ImportPhase,
    ImportProgress, ImportSummary,
};
pub use ledger::{ReplenishReport, ReserveMode, ReserveReport};
pub use record::{
    ContactKind, Geography, GeographyRef, Identity, IdentityRef, Purchase, PurchaseRef, Record,
    RecordRef, SubjectView,
};
pub use store::{BatchBuilder, InsertSummary, PreparedBatch, ScanStats, Vault, VaultConfig};
