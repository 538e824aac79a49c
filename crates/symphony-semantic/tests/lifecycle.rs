//! Attribute lifecycle: every (state, event) pair against the expected table.

use symphony_semantic::{AttributeState as S, LifecycleError, LifecycleEvent as E};

/// The only legal transitions: the seed's chain, one step at a time.
const LEGAL: [(S, E, S); 5] = [
    (S::Proposed, E::Register, S::Registered),
    (S::Registered, E::Activate, S::Active),
    (S::Active, E::Deprecate, S::Deprecated),
    (S::Deprecated, E::Retire, S::Retired),
    (S::Retired, E::Supersede, S::Superseded),
];

#[test]
fn every_pair_matches_the_table() {
    let mut legal_seen = 0;
    for from in S::ALL {
        for event in E::ALL {
            let expected = LEGAL
                .iter()
                .find(|(f, e, _)| *f == from && *e == event)
                .map(|(_, _, to)| *to);
            match (from.next(event), expected) {
                (Ok(to), Some(want)) => {
                    assert_eq!(to, want, "{from} --{event}-->");
                    legal_seen += 1;
                }
                (Err(err), None) => assert_eq!(err, LifecycleError { from, event }),
                (got, want) => panic!("{from} --{event}--> got {got:?}, table says {want:?}"),
            }
        }
    }
    assert_eq!(legal_seen, LEGAL.len());
}

#[test]
fn no_state_is_skipped() {
    assert!(S::Proposed.next(E::Activate).is_err());
    assert!(S::Registered.next(E::Deprecate).is_err());
    assert!(S::Active.next(E::Retire).is_err());
    assert!(S::Superseded.next(E::Register).is_err());
}
