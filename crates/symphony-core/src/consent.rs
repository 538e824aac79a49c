//! Data-subject consent per usage scope.
//!
//! Consent is a history of grant/withdraw changes per (subject, scope), ordered by
//! time. Whether a subject may be used at time `t` is read from the last change at or
//! before `t`, so a withdrawal blocks every task admitted after it and never rewrites
//! work that was admitted (or settled) before it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The usage categories a data subject consents to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageScope {
    /// The subject's own use of their data (receipt parsing, personal insights).
    Personal,
    /// Audience selection and campaign activation.
    Marketing,
    /// Aggregate statistics.
    Analytics,
    /// Model training.
    Training,
}

impl UsageScope {
    /// Every scope, in canonical order.
    pub const ALL: [UsageScope; 4] = [
        UsageScope::Personal,
        UsageScope::Marketing,
        UsageScope::Analytics,
        UsageScope::Training,
    ];

    /// The scope's protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageScope::Personal => "personal",
            UsageScope::Marketing => "marketing",
            UsageScope::Analytics => "analytics",
            UsageScope::Training => "training",
        }
    }
}

impl fmt::Display for UsageScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UsageScope {
    type Err = ConsentError;
    fn from_str(s: &str) -> Result<Self, ConsentError> {
        UsageScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ConsentError::UnknownScope(s.to_owned()))
    }
}

/// One change of consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    /// When the change took effect (ms since the Unix epoch, supplied by the caller).
    pub at_ms: u64,
    /// `true` for a grant, `false` for a withdrawal.
    pub granted: bool,
}

/// A consent operation that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentError {
    /// A change dated before the latest recorded change: history is append-only.
    #[error("consent change at {at_ms} ms is earlier than the last recorded change at {last_ms} ms; consent history is append-only")]
    OutOfOrder {
        /// The refused change's time.
        at_ms: u64,
        /// The latest recorded change's time.
        last_ms: u64,
    },
    /// A scope name that is not one of personal, marketing, analytics, training.
    #[error("unknown usage scope {0:?}; expected personal, marketing, analytics or training")]
    UnknownScope(String),
}

/// The consent history of one subject for one scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentHistory {
    changes: Vec<ConsentChange>,
}

impl ConsentHistory {
    /// An empty history: no consent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a grant at `at_ms`.
    pub fn grant(&mut self, at_ms: u64) -> Result<(), ConsentError> {
        self.push(ConsentChange {
            at_ms,
            granted: true,
        })
    }

    /// Records a withdrawal at `at_ms`.
    pub fn withdraw(&mut self, at_ms: u64) -> Result<(), ConsentError> {
        self.push(ConsentChange {
            at_ms,
            granted: false,
        })
    }

    /// Appends a change; changes must not go back in time.
    pub fn push(&mut self, change: ConsentChange) -> Result<(), ConsentError> {
        if let Some(last) = self.changes.last() {
            if change.at_ms < last.at_ms {
                return Err(ConsentError::OutOfOrder {
                    at_ms: change.at_ms,
                    last_ms: last.at_ms,
                });
            }
        }
        self.changes.push(change);
        Ok(())
    }

    /// Whether consent was in force at `at_ms` (the last change at or before it).
    pub fn is_granted_at(&self, at_ms: u64) -> bool {
        self.changes
            .iter()
            .rev()
            .find(|c| c.at_ms <= at_ms)
            .is_some_and(|c| c.granted)
    }

    /// The recorded changes, oldest first.
    pub fn changes(&self) -> &[ConsentChange] {
        &self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawal_blocks_later_but_not_earlier() {
        let mut h = ConsentHistory::new();
        assert!(!h.is_granted_at(5));
        h.grant(10).unwrap();
        h.withdraw(20).unwrap();
        assert!(!h.is_granted_at(9));
        assert!(h.is_granted_at(10));
        assert!(h.is_granted_at(19));
        assert!(!h.is_granted_at(20));
        assert!(!h.is_granted_at(1_000));
        h.grant(30).unwrap();
        assert!(h.is_granted_at(30));
        // the past is unchanged by later changes
        assert!(h.is_granted_at(15));
    }

    #[test]
    fn history_is_append_only() {
        let mut h = ConsentHistory::new();
        h.grant(10).unwrap();
        assert_eq!(
            h.withdraw(5),
            Err(ConsentError::OutOfOrder {
                at_ms: 5,
                last_ms: 10
            })
        );
        assert_eq!(h.changes().len(), 1);
    }

    #[test]
    fn scope_names_round_trip() {
        for s in UsageScope::ALL {
            assert_eq!(s.as_str().parse::<UsageScope>().unwrap(), s);
        }
        assert!("ads".parse::<UsageScope>().is_err());
    }
}
