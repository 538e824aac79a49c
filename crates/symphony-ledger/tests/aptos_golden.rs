//! The Aptos adapter's transaction bytes against committed golden vectors
//! (`tests/golden/aptos_raw_transactions.txt`), plus one transaction encoded by hand
//! from the BCS rules, independently of `aptos-sdk`. Runs only with
//! `--features aptos`. Regenerate the vectors (after a deliberate interface change)
//! with `SYMPHONY_UPDATE_GOLDEN=1 cargo test -p symphony-ledger --features aptos --test aptos_golden`.
#![cfg(feature = "aptos")]

use aptos_sdk::types::AccountAddress;
use symphony_ledger::aptos::{account_address, AddressBook, AptosAdapter, AptosModules, TxParams};
use symphony_ledger::distributor::{Distribution, DistributionLeaf};
use symphony_ledger::{
    AccountId, Command, DistributionId, EscrowId, PayoutId, PayoutInstruction,
    PayoutInstructionSet, PayoutKind, PayoutSource, StakeTier,
};

const GOLDEN: &str = "tests/golden/aptos_raw_transactions.txt";

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn adapter() -> AptosAdapter {
    let mut book = AddressBook::new();
    book.insert(
        acct("actor:advertiser:luckin"),
        AccountAddress::from_hex("0x1c").unwrap(),
    );
    AptosAdapter::new(
        AptosModules {
            address: AccountAddress::from_hex("0xa11ce").unwrap(),
            master_cluster: AccountAddress::from_hex("0xc1").unwrap(),
        },
        book,
    )
}

const PARAMS: TxParams = TxParams {
    sequence_number: 7,
    max_gas_amount: 200_000,
    gas_unit_price: 100,
    expiration_timestamp_secs: 1_795_219_800,
    chain_id: 4,
};

fn payout_set() -> PayoutInstructionSet {
    PayoutInstructionSet {
        payout_id: PayoutId::new("payout-task-0001").unwrap(),
        epoch_id: 3,
        settlement_ref: "task-0001".into(),
        instructions: vec![
            PayoutInstruction {
                recipient: acct("vault-dividends:vault-01"),
                amount: 4_500,
                kind: PayoutKind::VaultDividendPool,
            },
            PayoutInstruction {
                recipient: acct("actor:operator:vault-01"),
                amount: 2_000,
                kind: PayoutKind::VaultOperator,
            },
            PayoutInstruction {
                recipient: acct("protocol:treasury"),
                amount: 750,
                kind: PayoutKind::Treasury,
            },
        ],
    }
}

fn commands() -> Vec<(&'static str, Command)> {
    let escrow = EscrowId::new("escrow-task-0001").unwrap();
    vec![
        (
            "escrow_lock",
            Command::EscrowLock {
                escrow_id: escrow.clone(),
                owner: acct("actor:advertiser:luckin"),
                amount: 54_000_000,
            },
        ),
        (
            "escrow_refund",
            Command::EscrowRefund {
                escrow_id: escrow.clone(),
                amount: 1_000_000,
            },
        ),
        (
            "escrow_payout",
            Command::EscrowPayout {
                escrow_id: escrow,
                set: payout_set(),
            },
        ),
        (
            "reward_distribute_treasury",
            Command::RewardDistribute {
                source: PayoutSource::Treasury,
                set: payout_set(),
            },
        ),
        (
            "reward_distribute_pool",
            Command::RewardDistribute {
                source: PayoutSource::RewardPool(3),
                set: payout_set(),
            },
        ),
        (
            "reward_distribute_from",
            Command::RewardDistribute {
                source: PayoutSource::Account(acct("vault-dividends:vault-01")),
                set: payout_set(),
            },
        ),
        (
            "stake_bond",
            Command::StakeBond {
                actor: acct("actor:operator:vault-01"),
                tier: StakeTier::Enterprise,
                amount: 100_000_000_000,
            },
        ),
        (
            "stake_begin_unbond",
            Command::StakeBeginUnbond {
                actor: acct("actor:operator:vault-01"),
                amount: 5,
            },
        ),
        (
            "stake_withdraw",
            Command::StakeWithdraw {
                actor: acct("actor:operator:vault-01"),
            },
        ),
        (
            "stake_slash",
            Command::StakeSlash {
                actor: acct("actor:operator:vault-01"),
                amount: 10_000_000_000,
                reason: "challenge:c1".into(),
            },
        ),
        (
            "treasury_deposit",
            Command::TreasuryDeposit {
                from: acct("actor:advertiser:luckin"),
                amount: 9,
            },
        ),
        (
            "treasury_mint_inflation",
            Command::TreasuryMintInflation {
                epoch: 3,
                amount: 123_456,
            },
        ),
        ("advance_epoch", Command::AdvanceEpoch { epoch: 4 }),
        (
            "transfer",
            Command::Transfer {
                from: acct("actor:advertiser:luckin"),
                to: acct("actor:master-0"),
                amount: 1,
            },
        ),
        // Appended after the original vectors: their lines are unchanged.
        (
            "distributor_commit",
            commit(PayoutSource::Account(acct("vault-dividends:vault-01"))),
        ),
        (
            "distributor_commit_treasury",
            commit(PayoutSource::Treasury),
        ),
        (
            "distributor_commit_pool",
            commit(PayoutSource::RewardPool(3)),
        ),
        ("distributor_claim", claim(2)),
    ]
}

fn distribution() -> (Vec<DistributionLeaf>, Distribution) {
    let leaves: Vec<DistributionLeaf> = [
        ("producer:p0000001", 120),
        ("producer:p0000002", 75),
        ("actor:advertiser:luckin", 3),
    ]
    .iter()
    .enumerate()
    .map(|(i, (r, amount))| DistributionLeaf {
        index: i as u64,
        recipient: acct(r),
        amount: *amount,
        kind: PayoutKind::DataUsageDividend,
    })
    .collect();
    let d = Distribution::build("epoch-3/producers", 3, &leaves).unwrap();
    (leaves, d)
}

fn commit(source: PayoutSource) -> Command {
    let (_, d) = distribution();
    let c = d.commitment();
    Command::CommitDistribution {
        source,
        distribution_id: DistributionId::new(c.distribution_id.clone()).unwrap(),
        epoch: c.epoch_id,
        root: c.root,
        total: c.total,
        leaves: c.count,
    }
}

fn claim(index: usize) -> Command {
    let (leaves, d) = distribution();
    let leaf = &leaves[index];
    Command::ClaimDistribution {
        distribution_id: DistributionId::new("epoch-3/producers").unwrap(),
        index: leaf.index,
        recipient: leaf.recipient.clone(),
        amount: leaf.amount,
        kind: leaf.kind,
        proof: d.proof(leaf.index).unwrap().siblings,
    }
}

fn render() -> String {
    let a = adapter();
    let mut out = String::new();
    for (name, c) in commands() {
        let bytes = a.raw_transaction_bytes(&c, &PARAMS).unwrap();
        out.push_str(&format!("{name} {}\n", hex::encode(bytes)));
    }
    out
}

#[test]
fn raw_transactions_match_golden_vectors() {
    let actual = render();
    if std::env::var_os("SYMPHONY_UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(GOLDEN).unwrap();
    for (e, a) in expected.lines().zip(actual.lines()) {
        assert_eq!(e, a);
    }
    assert_eq!(expected.lines().count(), actual.lines().count());
}

fn uleb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn bytes_arg(b: &[u8], out: &mut Vec<u8>) {
    uleb(b.len(), out);
    out.extend_from_slice(b);
}

/// `escrow::lock` encoded by hand from the BCS layout of `RawTransaction`.
#[test]
fn escrow_lock_matches_a_hand_encoding() {
    let mut expected = Vec::new();
    expected.extend_from_slice(&AccountAddress::from_hex("0x1c").unwrap().to_bytes());
    expected.extend_from_slice(&7u64.to_le_bytes());
    expected.push(2); // TransactionPayload::EntryFunction
    expected.extend_from_slice(&AccountAddress::from_hex("0xa11ce").unwrap().to_bytes());
    bytes_arg(b"escrow", &mut expected);
    bytes_arg(b"lock", &mut expected);
    uleb(0, &mut expected); // type args
    uleb(2, &mut expected); // args
    let mut id = Vec::new();
    bytes_arg(b"escrow-task-0001", &mut id);
    bytes_arg(&id, &mut expected);
    bytes_arg(&54_000_000u64.to_le_bytes(), &mut expected);
    expected.extend_from_slice(&200_000u64.to_le_bytes());
    expected.extend_from_slice(&100u64.to_le_bytes());
    expected.extend_from_slice(&1_795_219_800u64.to_le_bytes());
    expected.push(4);
    let (_, c) = commands().remove(0);
    let a = adapter();
    assert_eq!(a.raw_transaction_bytes(&c, &PARAMS).unwrap(), expected);
    // The signing message is a 32-byte domain prefix followed by the same bytes.
    let msg = a.signing_message(&c, &PARAMS).unwrap();
    assert_eq!(&msg[32..], &expected[..]);
}

#[test]
fn default_addresses_are_domain_separated_hashes() {
    let a = adapter();
    assert_eq!(
        a.address_of(&acct("actor:master-0")),
        account_address(&acct("actor:master-0"))
    );
    assert_ne!(
        account_address(&acct("actor:master-0")),
        account_address(&acct("actor:master-1"))
    );
    assert_eq!(
        a.address_of(&acct("actor:advertiser:luckin")),
        AccountAddress::from_hex("0x1c").unwrap()
    );
    let escrow_source = Command::RewardDistribute {
        source: PayoutSource::Escrow(EscrowId::new("e").unwrap()),
        set: payout_set(),
    };
    assert!(a.raw_transaction_bytes(&escrow_source, &PARAMS).is_err());
}

/// `distributor::claim`'s arguments encoded by hand from the BCS rules: the id as a
/// string, the index and amount as u64, the recipient as a 32-byte address, the kind
/// as u8 and the proof as a vector of byte vectors; signed by the recipient.
#[test]
fn distributor_claim_matches_a_hand_encoding() {
    let (leaves, d) = distribution();
    let leaf = &leaves[2];
    assert_eq!(
        (leaf.amount, leaf.recipient.as_str()),
        (3, "actor:advertiser:luckin")
    );
    let proof = d.proof(2).unwrap().siblings;
    assert_eq!(
        proof.len(),
        1,
        "leaf 2 of 3 has one sibling (the pair above 0 and 1)"
    );
    let a = adapter();
    let (signer, f) = a.entry_function(&claim(2)).unwrap();
    let luckin = AccountAddress::from_hex("0x1c").unwrap();
    assert_eq!(signer, luckin);
    let mut id = Vec::new();
    bytes_arg(b"epoch-3/producers", &mut id);
    let mut proof_arg = Vec::new();
    uleb(1, &mut proof_arg);
    bytes_arg(&proof[0], &mut proof_arg);
    let expected: Vec<Vec<u8>> = vec![
        id,
        2u64.to_le_bytes().to_vec(),
        luckin.to_bytes().to_vec(),
        3u64.to_le_bytes().to_vec(),
        vec![0],
        proof_arg,
    ];
    assert_eq!(f.args, expected);
    assert_eq!(f.module.name.to_string(), "distributor");
    assert_eq!(f.function.as_str(), "claim");
    // The commit of an account-funded distribution is signed by that account; an
    // escrow source has no on-chain form.
    let (signer, f) = a
        .entry_function(&commit(PayoutSource::Account(acct(
            "actor:advertiser:luckin",
        ))))
        .unwrap();
    assert_eq!(signer, luckin);
    assert_eq!(f.function.as_str(), "commit");
    let mut root = Vec::new();
    bytes_arg(&d.commitment().root, &mut root);
    assert_eq!(f.args[2], root);
    assert!(a
        .raw_transaction_bytes(
            &commit(PayoutSource::Escrow(EscrowId::new("e").unwrap())),
            &PARAMS
        )
        .is_err());
}
