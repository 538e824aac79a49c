//! A spec that cannot be right is refused before anything is reserved or charged:
//! a misspelled brand, a country name instead of its code, `audience_cap = 0`, a
//! quorum outside a majority..=all Vaults. The message names the field and what to
//! use instead; no task, no escrow, no reservation.

mod common;

use common::{luckin, ADVERTISER};

use symphony_core::consent::UsageScope;
use symphony_core::ids::SubjectId;
use symphony_ledger::AccountId;
use symphony_node::network::{advertiser_key, CampaignSpec, Quiet, SignedRequest};

#[test]
fn invalid_specs_are_refused_before_any_reservation_or_fee() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 29;
    let mut net = common::network(dir.path(), seed, 300, 3);
    let key = advertiser_key(seed, ADVERTISER);
    let payer = AccountId::new(format!("actor:{ADVERTISER}")).unwrap();
    let before = net.master.ledger.balance(&payer);
    let cases: Vec<(CampaignSpec, &str)> = vec![
        (
            CampaignSpec { brand: "Luckin Cofee".into(), ..luckin() },
            "brand \"Luckin Cofee\" is not known to the semantic registry (did you mean \"Luckin Coffee\"?)",
        ),
        (
            CampaignSpec { country: "Singapore".into(), ..luckin() },
            "use the ISO 3166-1 alpha-2 code \"SG\"",
        ),
        (CampaignSpec { audience_cap: 0, ..luckin() }, "audience_cap must be >= 1"),
        (
            CampaignSpec { minimum_vault_quorum: Some(0), ..luckin() },
            "minimum_vault_quorum 0 is outside 2..=3",
        ),
        (
            CampaignSpec { minimum_vault_quorum: Some(99), ..luckin() },
            "minimum_vault_quorum 99 is outside 2..=3",
        ),
    ];
    for (nonce, (s, expected)) in cases.into_iter().enumerate() {
        let req = SignedRequest::sign(s, nonce as u64 + 1, &key).unwrap();
        let e = net.run_campaign(&req, &mut Quiet).unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        assert!(e.contains("nothing reserved or charged"), "{e}");
    }
    assert_eq!(net.master.masters.state().tasks().count(), 0);
    assert_eq!(net.master.ledger.balance(&payer), before);
    let (files, _) = net.data_files();
    for (e, file) in net.enterprises.iter().zip(files) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = SubjectId::new(r["subject"].as_str().unwrap()).unwrap();
            let acc = e.vault().budget_account(&s, UsageScope::Marketing).unwrap();
            assert_eq!(acc.reserved().micro, 0);
        }
    }
    // A valid spec still runs.
    let req = SignedRequest::sign(luckin(), 10, &key).unwrap();
    assert!(net.run_campaign(&req, &mut Quiet).is_ok());
}
