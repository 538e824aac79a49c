//! combined_privacy_class is the highest operand class, whatever the input says.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use symphony_semantic::composition::CompositionOperand;
use symphony_semantic::{
    AttributeComposition, AttributeName, CompositionError, CompositionOperator, CrossDomainPolicy,
    DomainId, PrivacyClass,
};

fn class() -> impl Strategy<Value = PrivacyClass> {
    prop::sample::select(PrivacyClass::ALL.to_vec())
}

fn build(classes: &[(PrivacyClass, u8)]) -> Result<AttributeComposition, CompositionError> {
    let operands = classes
        .iter()
        .enumerate()
        .map(|(i, (privacy_class, domain))| CompositionOperand {
            attribute: AttributeName::new(format!("a{i}")).unwrap(),
            domain: DomainId::new(format!("d{domain}")).unwrap(),
            privacy_class: *privacy_class,
        })
        .collect();
    let policies: BTreeMap<_, _> = (0..4u8)
        .map(|d| {
            (
                DomainId::new(format!("d{d}")).unwrap(),
                CrossDomainPolicy::Allowed,
            )
        })
        .collect();
    AttributeComposition::new(
        AttributeName::new("c").unwrap(),
        CompositionOperator::And,
        operands,
        10,
        policies,
        BTreeSet::new(),
    )
}

proptest! {
    #[test]
    fn combined_class_is_the_max(classes in prop::collection::vec((class(), 0..4u8), 1..8)) {
        let composition = build(&classes).unwrap();
        let max = classes.iter().map(|(c, _)| *c).max().unwrap();
        prop_assert_eq!(composition.combined_privacy_class(), max);
        for (c, _) in &classes {
            prop_assert!(composition.combined_privacy_class() >= *c);
        }
    }

    #[test]
    fn a_claimed_lower_class_is_refused(classes in prop::collection::vec((class(), 0..4u8), 1..8), claimed in class()) {
        let composition = build(&classes).unwrap();
        let mut json: serde_json::Value = serde_json::to_value(&composition).unwrap();
        json["combined_privacy_class"] = serde_json::to_value(claimed).unwrap();
        let back = serde_json::from_value::<AttributeComposition>(json);
        prop_assert_eq!(back.is_ok(), claimed == composition.combined_privacy_class());
    }
}

#[test]
fn class_order_is_fixed() {
    assert!(PrivacyClass::Public < PrivacyClass::Pseudonymous);
    assert!(PrivacyClass::Pseudonymous < PrivacyClass::Personal);
    assert!(PrivacyClass::Personal < PrivacyClass::Sensitive);
    assert!(PrivacyClass::Sensitive < PrivacyClass::Identifying);
}

#[test]
fn structural_errors() {
    assert_eq!(build(&[]).unwrap_err(), CompositionError::NoOperands);
    let one = CompositionOperand {
        attribute: AttributeName::new("a").unwrap(),
        domain: DomainId::new("d").unwrap(),
        privacy_class: PrivacyClass::Public,
    };
    let dup = AttributeComposition::new(
        AttributeName::new("c").unwrap(),
        CompositionOperator::Or,
        vec![one.clone(), one.clone()],
        1,
        BTreeMap::new(),
        BTreeSet::new(),
    );
    assert!(matches!(
        dup,
        Err(CompositionError::DuplicateOperand { .. })
    ));
    let zero = AttributeComposition::new(
        AttributeName::new("c").unwrap(),
        CompositionOperator::Or,
        vec![one],
        0,
        BTreeMap::new(),
        BTreeSet::new(),
    );
    assert_eq!(zero.unwrap_err(), CompositionError::ZeroMinimumCardinality);
}
