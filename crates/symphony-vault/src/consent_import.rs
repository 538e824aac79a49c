//! Import of the consent file: consent changes and prior budget spend, for all
//! Vaults (rows for other Vaults are skipped), in one write transaction.

use redb::ReadableTable;
use serde::Deserialize;
use std::path::Path;
use symphony_core::budget::{BudgetAccount, BudgetOp, Epsilon};
use symphony_core::consent::{ConsentChange, ConsentHistory, UsageScope};
use symphony_core::ids::{SubjectId, TaskId};

use crate::error::{ImportError, VaultError};
use crate::import::{
    diagnose, for_each_line, required, row_error, subject_id, FieldError, FieldType, ImportPhase,
    ImportProgress, ImportSummary,
};
use crate::ledger::{BUDGET, CONSENT};
use crate::store::Vault;

/// Task id under which imported prior budget spend is committed.
pub const PRIOR_SPEND_TASK: &str = "import/prior-spend";

/// One line of a consent file, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRow {
    kind: Option<String>,
    vault: Option<String>,
    subject: Option<String>,
    scope: Option<String>,
    granted: Option<bool>,
    at_ms: Option<u64>,
    capacity_micro: Option<u64>,
    spent_micro: Option<u64>,
}

const CONSENT_FIELDS: &[(&str, FieldType)] = &[
    ("kind", FieldType::Str),
    ("vault", FieldType::Str),
    ("subject", FieldType::Str),
    ("scope", FieldType::Str),
    ("granted", FieldType::Bool),
    ("at_ms", FieldType::U64),
    ("capacity_micro", FieldType::U64),
    ("spent_micro", FieldType::U64),
];

/// A validated consent-file row.
enum ConsentItem {
    Change(SubjectId, UsageScope, ConsentChange),
    Spent(SubjectId, UsageScope, Epsilon, Epsilon),
}

fn validate_consent(row: ConsentRow) -> Result<(String, ConsentItem), FieldError> {
    let vault = required("vault", row.vault)?;
    let subject = subject_id(row.subject.as_deref())?;
    let scope_text = required("scope", row.scope)?;
    let scope: UsageScope = scope_text
        .parse()
        .map_err(|e: symphony_core::consent::ConsentError| ("scope", e.to_string()))?;
    let item = match required("kind", row.kind)?.as_str() {
        "consent" => ConsentItem::Change(
            subject,
            scope,
            ConsentChange {
                at_ms: required("at_ms", row.at_ms)?,
                granted: required("granted", row.granted)?,
            },
        ),
        "budget" => {
            let capacity = Epsilon::from_micro(required("capacity_micro", row.capacity_micro)?);
            let spent = Epsilon::from_micro(required("spent_micro", row.spent_micro)?);
            if spent > capacity {
                return Err(("spent_micro", "exceeds capacity_micro".to_owned()));
            }
            ConsentItem::Spent(subject, scope, capacity, spent)
        }
        other => return Err(("kind", format!("{other:?} is not consent or budget"))),
    };
    Ok((vault, item))
}

/// Imports a consent file (consent changes and prior budget spend) in one write
/// transaction. Rows for other Vaults are skipped; identical changes already
/// recorded are skipped, so re-import changes nothing.
pub fn import_consent(
    vault: &Vault,
    file: &Path,
    progress: &mut dyn FnMut(&ImportProgress<'_>),
) -> Result<ImportSummary, ImportError> {
    let mut items = Vec::new();
    let mut summary = ImportSummary::default();
    let own = vault.vault_id().as_str().to_owned();
    for_each_line(file, |line_no, line| {
        summary.rows += 1;
        let row: ConsentRow = serde_json::from_slice(line).map_err(|e| {
            let (field, reason) = diagnose(line, CONSENT_FIELDS, &e);
            row_error(file, line_no, field, reason)
        })?;
        let (row_vault, item) =
            validate_consent(row).map_err(|(f, r)| row_error(file, line_no, f, r))?;
        if row_vault == own {
            items.push((line_no, item));
        } else {
            summary.other_vault_rows += 1;
        }
        Ok(())
    })?;
    write_consent_items(vault, file, &items, &mut summary)?;
    progress(&ImportProgress {
        file,
        phase: ImportPhase::Writing,
        lines_done: summary.rows,
        lines_total: summary.rows,
        batches_committed: 1,
    });
    summary.batches = 1;
    Ok(summary)
}

fn write_consent_items(
    vault: &Vault,
    file: &Path,
    items: &[(u64, ConsentItem)],
    summary: &mut ImportSummary,
) -> Result<(), ImportError> {
    let prior = TaskId::new(PRIOR_SPEND_TASK).map_err(VaultError::from)?;
    let epoch = vault.budget_epoch()?;
    let tx = vault.db.begin_write().map_err(VaultError::from)?;
    {
        let mut consent = tx.open_table(CONSENT).map_err(VaultError::from)?;
        let mut budget = tx.open_table(BUDGET).map_err(VaultError::from)?;
        for (line_no, item) in items {
            match item {
                ConsentItem::Change(subject, scope, change) => {
                    let key = (scope.as_str(), subject.as_str());
                    let mut history: ConsentHistory =
                        match consent.get(key).map_err(VaultError::from)? {
                            Some(v) => bcs::from_bytes(v.value()).map_err(VaultError::from)?,
                            None => ConsentHistory::new(),
                        };
                    if history.changes().contains(change) {
                        continue;
                    }
                    history
                        .push(*change)
                        .map_err(|e| row_error(file, *line_no, "at_ms", e.to_string()))?;
                    let bytes = bcs::to_bytes(&history).map_err(VaultError::from)?;
                    consent
                        .insert(key, bytes.as_slice())
                        .map_err(VaultError::from)?;
                    summary.consent_changes += 1;
                }
                ConsentItem::Spent(subject, scope, capacity, spent) => {
                    let key = (scope.as_str(), subject.as_str());
                    let mut account: BudgetAccount =
                        match budget.get(key).map_err(VaultError::from)? {
                            Some(v) => bcs::from_bytes(v.value()).map_err(VaultError::from)?,
                            None => BudgetAccount::new(*capacity, epoch),
                        };
                    if account.finished_of(&prior).is_some() {
                        continue;
                    }
                    let ops = [
                        BudgetOp::Reserve {
                            task: prior.clone(),
                            amount: *spent,
                        },
                        BudgetOp::CommitAtEstimate {
                            task: prior.clone(),
                        },
                    ];
                    for op in &ops {
                        account
                            .apply(op)
                            .map_err(|e| row_error(file, *line_no, "spent_micro", e.to_string()))?;
                    }
                    let bytes = bcs::to_bytes(&account).map_err(VaultError::from)?;
                    budget
                        .insert(key, bytes.as_slice())
                        .map_err(VaultError::from)?;
                    summary.budget_rows += 1;
                }
            }
        }
    }
    tx.commit().map_err(VaultError::from)?;
    Ok(())
}
