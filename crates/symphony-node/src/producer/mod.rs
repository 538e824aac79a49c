//! Data producers (seed 002, "Receipt Upload to Personal Vault"): the receipt
//! record and its text parser ([`receipt`]), OCR inside the Vault enclave's
//! boundary ([`ocr`]), and the seeded receipt corpus the OCR path is measured
//! against ([`corpus`]).

pub mod bench;
pub mod corpus;
pub mod demo;
pub mod enclave;
pub mod ocr;
pub mod personal;
pub mod receipt;
