//! Vault-level authorization: the operator permits (actor, task class) pairs.
//!
//! A scan needs an [`Authorized`] value, which only [`Vault::authorize`] makes, so
//! record access without a permit check does not type-check.

use redb::{ReadableTable, TableDefinition};
use symphony_core::envelope::TaskClass;
use symphony_core::ids::{ActorId, VaultId};

use crate::error::VaultError;
use crate::store::Vault;

/// (actor, task class) → () : the operator's permits.
pub(crate) const PERMITS: TableDefinition<(&str, &str), ()> = TableDefinition::new("permits");

/// Proof that the operator permitted `actor` to run `class` tasks on this Vault, at
/// the time of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    vault: VaultId,
    actor: ActorId,
    class: TaskClass,
}

impl Authorized {
    /// The permitted actor.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The permitted task class.
    pub fn class(&self) -> TaskClass {
        self.class
    }

    pub(crate) fn check_vault(&self, vault: &VaultId) -> Result<(), VaultError> {
        if &self.vault == vault {
            Ok(())
        } else {
            Err(VaultError::NotAuthorized {
                vault: vault.to_string(),
                actor: self.actor.to_string(),
                class: self.class,
            })
        }
    }
}

impl Vault {
    /// The operator permits `actor` to run `class` tasks here.
    pub fn permit(&self, actor: &ActorId, class: TaskClass) -> Result<(), VaultError> {
        let tx = self.db.begin_write()?;
        tx.open_table(PERMITS)?
            .insert((actor.as_str(), class.as_str()), ())?;
        tx.commit()?;
        Ok(())
    }

    /// Withdraws a permit. Returns whether one existed.
    pub fn revoke(&self, actor: &ActorId, class: TaskClass) -> Result<bool, VaultError> {
        let tx = self.db.begin_write()?;
        let existed = tx
            .open_table(PERMITS)?
            .remove((actor.as_str(), class.as_str()))?
            .is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Checks the permit; anything not permitted is refused with
    /// [`VaultError::NotAuthorized`].
    pub fn authorize(&self, actor: &ActorId, class: TaskClass) -> Result<Authorized, VaultError> {
        let tx = self.db.begin_read()?;
        let permitted = tx
            .open_table(PERMITS)?
            .get((actor.as_str(), class.as_str()))?
            .is_some();
        if permitted {
            Ok(Authorized {
                vault: self.config.vault_id.clone(),
                actor: actor.clone(),
                class,
            })
        } else {
            Err(VaultError::NotAuthorized {
                vault: self.config.vault_id.to_string(),
                actor: actor.to_string(),
                class,
            })
        }
    }

    /// All permits, sorted.
    pub fn permits(&self) -> Result<Vec<(ActorId, TaskClass)>, VaultError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PERMITS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, _) = entry?;
            let (actor, class) = k.value();
            let class = TaskClass::ALL
                .into_iter()
                .find(|c| c.as_str() == class)
                .ok_or_else(|| {
                    VaultError::Storage(format!("unknown task class {class:?} in permits"))
                })?;
            out.push((ActorId::new(actor)?, class));
        }
        Ok(out)
    }
}
