//! Shared test helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use symphony_core::budget::Epsilon;
use symphony_core::ids::{ActorId, EpochId, SubjectId, VaultId};
use symphony_core::TaskClass;
use symphony_vault::{Authorized, Purchase, Record, Vault, VaultConfig, VaultKey};

pub fn key(byte: u8) -> VaultKey {
    VaultKey::from_bytes([byte; 32])
}

pub fn config(id: &str) -> VaultConfig {
    VaultConfig {
        vault_id: VaultId::new(id).unwrap(),
        default_budget: Epsilon::from_micro(1_000_000),
        initial_epoch: EpochId(0),
    }
}

pub fn create(path: &Path, id: &str) -> Vault {
    Vault::create(path, config(id), &key(7), [1; 32]).unwrap()
}

pub fn reader(vault: &Vault) -> Authorized {
    let actor = ActorId::new("enclave-runtime").unwrap();
    vault.permit(&actor, TaskClass::Query).unwrap();
    vault.authorize(&actor, TaskClass::Query).unwrap()
}

pub fn sid(s: &str) -> SubjectId {
    SubjectId::new(s).unwrap()
}

pub fn purchase(brand: &str, amount_minor: u64, ts_ms: u64) -> Record {
    Record::Purchase(Purchase {
        brand: brand.to_owned(),
        category: "coffee".to_owned(),
        amount_minor,
        currency: "SGD".to_owned(),
        ts_ms,
        store_city: "Singapore".to_owned(),
        store_country: "SG".to_owned(),
    })
}

/// Everything a scan returns, owned: subject → records in scan order
/// (identity, geography, then purchases).
pub fn dump(vault: &Vault) -> std::collections::BTreeMap<String, Vec<Record>> {
    let auth = reader(vault);
    let mut out = std::collections::BTreeMap::new();
    vault
        .for_each_subject(&auth, |view| {
            let mut recs = Vec::new();
            if let Some(i) = view.identity {
                recs.push(symphony_vault::RecordRef::Identity(i).to_owned_record());
            }
            if let Some(g) = view.geography {
                recs.push(symphony_vault::RecordRef::Geography(g).to_owned_record());
            }
            recs.extend(
                view.purchases
                    .iter()
                    .map(|p| Record::Purchase(p.to_owned_purchase())),
            );
            out.insert(view.subject.to_owned(), recs);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    out
}
