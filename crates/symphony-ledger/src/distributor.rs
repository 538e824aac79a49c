//! The Merkle payout distributor: an epoch's producer payouts committed as one root
//! instead of one ledger account write per producer.
//!
//! This is the usual on-chain distributor pattern. The masters commit one
//! [`Distribution`]: the root of a Merkle tree whose leaves are
//! `(index, recipient, amount, kind)`, together with the leaf count and the total.
//! The tree is built in memory, so a million producers take one commitment, not a
//! million writes. Each producer later claims their leaf with a [`MerkleProof`], and
//! [`ClaimBook`] enforces the rules:
//!
//! - a claim's proof must lead to the committed root;
//! - each index is claimed at most once;
//! - the claimed amounts never exceed the committed total.
//!
//! [`ClaimBook::reconcile`] replays the claims against the root and the total.
//!
//! **Hashing.** A leaf hash is `SHA-256(0x00 || "symphony/payout-leaf/v1" ||
//! bcs(distribution_id, epoch_id, leaf))`. An inner node is
//! `SHA-256(0x01 || left || right)`. The distinct prefixes keep a leaf from passing
//! as an inner node (second-preimage). On a level with an odd count, the last node
//! moves up unchanged. The id and epoch are inside every leaf, so a proof from one
//! distribution never verifies against another.
//!
//! This module is pure: no IO, no clock. The settlement ledger keeps distributions
//! with the same rules through [`crate::Command::CommitDistribution`] and
//! [`crate::Command::ClaimDistribution`] (the claimed set stored per leaf, the pool
//! counted in the supply); [`ClaimBook`] is the standalone equivalent.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::{AccountId, PayoutKind};

const LEAF_DOMAIN: &[u8] = b"symphony/payout-leaf/v1";

/// One producer's entry in a distribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionLeaf {
    /// Position in the distribution (0-based; the claimed-bitmap index).
    pub index: u64,
    /// Who may claim it.
    pub recipient: AccountId,
    /// Amount in base units.
    pub amount: u64,
    /// What for (dividend or quality reward).
    pub kind: PayoutKind,
}

/// A committed distribution: what the ledger stores (a few hundred bytes, whatever
/// the number of producers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionCommitment {
    /// Unique id, e.g. `epoch-7/producers`.
    pub distribution_id: String,
    /// The epoch whose payouts it holds.
    pub epoch_id: u64,
    /// Merkle root of the leaves.
    pub root: [u8; 32],
    /// Number of leaves.
    pub count: u64,
    /// Sum of the leaves' amounts.
    pub total: u64,
}

/// The sibling hashes from a leaf up to the root. A level where the node had no
/// sibling (odd count, moved up unchanged) contributes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// Sibling hashes, leaf level first.
    pub siblings: Vec<[u8; 32]>,
}

/// Why a distribution or a claim was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DistributorError {
    /// Leaf `index` does not sit at position `index` of the list.
    #[error("leaf at position {position} carries index {index}; indices must be 0, 1, 2, …")]
    IndexOutOfOrder {
        /// Where it was.
        position: u64,
        /// What it said.
        index: u64,
    },
    /// The amounts overflow `u64`.
    #[error("the distribution's amounts overflow u64")]
    Overflow,
    /// No leaves.
    #[error("a distribution needs at least one leaf")]
    Empty,
    /// The claim names an index beyond the distribution.
    #[error("claim index {index} is beyond the distribution's {count} leaves")]
    NoSuchLeaf {
        /// The claimed index.
        index: u64,
        /// Leaves committed.
        count: u64,
    },
    /// The proof does not lead to the committed root.
    #[error("the proof for leaf {index} ({recipient}) does not lead to the committed root")]
    BadProof {
        /// The claimed index.
        index: u64,
        /// The claimed recipient.
        recipient: String,
    },
    /// The index was claimed before.
    #[error("leaf {index} was already claimed")]
    AlreadyClaimed {
        /// The index.
        index: u64,
    },
    /// Paying it would exceed the committed total.
    #[error("claims would exceed the committed total {total} (paid {paid}, claim {amount})")]
    ExceedsTotal {
        /// Committed total.
        total: u64,
        /// Paid so far.
        paid: u64,
        /// This claim.
        amount: u64,
    },
}

/// The hash of one leaf of distribution `id` in `epoch`.
pub fn leaf_hash(id: &str, epoch: u64, leaf: &DistributionLeaf) -> [u8; 32] {
    leaf_hash_from(&leaf_prefix(id, epoch), leaf)
}

/// The hasher state after `0x00 || domain || bcs(id) || bcs(epoch)`: shared by
/// every leaf of one distribution.
fn leaf_prefix(id: &str, epoch: u64) -> Sha256 {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(LEAF_DOMAIN);
    // BCS of a bounded id and integers cannot fail (it fails only past 2^31 items).
    h.update(bcs::to_bytes(&(id, epoch)).unwrap_or_default());
    h
}

fn leaf_hash_from(prefix: &Sha256, leaf: &DistributionLeaf) -> [u8; 32] {
    let mut h = prefix.clone();
    // The leaf's BCS bytes written straight into the hasher (no buffer); a leaf
    // always encodes (its one string is a bounded id).
    let _ = bcs::serialize_into(&mut h, leaf);
    h.finalize().into()
}

/// Levels at least this wide are hashed on every core (the result is the same).
const PARALLEL_FROM: usize = 1 << 14;

/// `f` over `items`, in order, split across the machine's cores when worth it.
fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < PARALLEL_FROM {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|c| scope.spawn(move || c.iter().map(f).collect::<Vec<U>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A built distribution: the commitment plus every level of the tree, so proofs
/// can be handed to producers.
#[derive(Clone, Debug)]
pub struct Distribution {
    commitment: DistributionCommitment,
    /// `levels[0]` are the leaf hashes; the last level holds the root alone.
    levels: Vec<Vec<[u8; 32]>>,
}

impl Distribution {
    /// Builds the tree over `leaves` (indices 0, 1, 2, … in order).
    pub fn build(
        distribution_id: &str,
        epoch_id: u64,
        leaves: &[DistributionLeaf],
    ) -> Result<Self, DistributorError> {
        if leaves.is_empty() {
            return Err(DistributorError::Empty);
        }
        let mut total = 0u64;
        for (position, leaf) in leaves.iter().enumerate() {
            if leaf.index != position as u64 {
                return Err(DistributorError::IndexOutOfOrder {
                    position: position as u64,
                    index: leaf.index,
                });
            }
            total = total
                .checked_add(leaf.amount)
                .ok_or(DistributorError::Overflow)?;
        }
        let prefix = leaf_prefix(distribution_id, epoch_id);
        let mut levels = vec![par_map(leaves, |leaf| leaf_hash_from(&prefix, leaf))];
        while levels.last().map_or(0, Vec::len) > 1 {
            let below = levels.last().expect("non-empty");
            let pairs: Vec<&[[u8; 32]]> = below.chunks(2).collect();
            let up = par_map(&pairs, |pair| match pair {
                [l, r] => node_hash(l, r),
                [only] => *only,
                _ => unreachable!("chunks(2)"),
            });
            levels.push(up);
        }
        let root = levels.last().expect("non-empty")[0];
        Ok(Self {
            commitment: DistributionCommitment {
                distribution_id: distribution_id.to_owned(),
                epoch_id,
                root,
                count: leaves.len() as u64,
                total,
            },
            levels,
        })
    }

    /// What the ledger commits.
    pub fn commitment(&self) -> &DistributionCommitment {
        &self.commitment
    }

    /// The proof of leaf `index`, or `None` beyond the distribution.
    pub fn proof(&self, index: u64) -> Option<MerkleProof> {
        if index >= self.commitment.count {
            return None;
        }
        let mut i = index as usize;
        let mut siblings = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                siblings.push(level[sibling]);
            }
            i /= 2;
        }
        Some(MerkleProof { siblings })
    }
}

/// Whether `proof` leads from `leaf` to `commitment.root`.
pub fn verify(
    commitment: &DistributionCommitment,
    leaf: &DistributionLeaf,
    proof: &MerkleProof,
) -> bool {
    if leaf.index >= commitment.count {
        return false;
    }
    let mut hash = leaf_hash(&commitment.distribution_id, commitment.epoch_id, leaf);
    let mut siblings = proof.siblings.iter();
    let (mut i, mut width) = (leaf.index, commitment.count);
    while width > 1 {
        let sibling = i ^ 1;
        if sibling < width {
            let Some(s) = siblings.next() else {
                return false;
            };
            hash = if i % 2 == 0 {
                node_hash(&hash, s)
            } else {
                node_hash(s, &hash)
            };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none() && hash == commitment.root
}

/// The claims against one committed distribution: a claimed bitmap and the amount
/// paid, as the distributor contract keeps them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimBook {
    commitment: DistributionCommitment,
    claimed: Vec<u64>,
    paid: u64,
    claims: Vec<DistributionLeaf>,
}

impl ClaimBook {
    /// An empty book for `commitment`.
    pub fn new(commitment: DistributionCommitment) -> Self {
        let words = commitment.count.div_ceil(64) as usize;
        Self {
            commitment,
            claimed: vec![0; words],
            paid: 0,
            claims: Vec::new(),
        }
    }

    /// The distribution claimed against.
    pub fn commitment(&self) -> &DistributionCommitment {
        &self.commitment
    }

    /// Paid so far.
    pub fn paid(&self) -> u64 {
        self.paid
    }

    /// What remains unclaimed.
    pub fn remaining(&self) -> u64 {
        self.commitment.total - self.paid
    }

    /// Whether leaf `index` was claimed.
    pub fn is_claimed(&self, index: u64) -> bool {
        index < self.commitment.count
            && self.claimed[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    /// Pays `leaf` if its proof verifies, it was not claimed and the total allows;
    /// returns the amount. A refused claim changes nothing.
    pub fn claim(
        &mut self,
        leaf: &DistributionLeaf,
        proof: &MerkleProof,
    ) -> Result<u64, DistributorError> {
        let c = &self.commitment;
        if leaf.index >= c.count {
            return Err(DistributorError::NoSuchLeaf {
                index: leaf.index,
                count: c.count,
            });
        }
        if !verify(c, leaf, proof) {
            return Err(DistributorError::BadProof {
                index: leaf.index,
                recipient: leaf.recipient.to_string(),
            });
        }
        if self.is_claimed(leaf.index) {
            return Err(DistributorError::AlreadyClaimed { index: leaf.index });
        }
        let paid = self
            .paid
            .checked_add(leaf.amount)
            .filter(|p| *p <= c.total)
            .ok_or(DistributorError::ExceedsTotal {
                total: c.total,
                paid: self.paid,
                amount: leaf.amount,
            })?;
        self.paid = paid;
        self.claimed[(leaf.index / 64) as usize] |= 1 << (leaf.index % 64);
        self.claims.push(leaf.clone());
        Ok(leaf.amount)
    }

    /// Replays the recorded claims from an empty bitmap against the root and the
    /// total; fails on a claim that would not pass now (a tampered book).
    pub fn reconcile(&self, proofs: &dyn Fn(u64) -> Option<MerkleProof>) -> Result<(), String> {
        let mut fresh = ClaimBook::new(self.commitment.clone());
        for leaf in &self.claims {
            let proof = proofs(leaf.index).ok_or_else(|| format!("no proof for {}", leaf.index))?;
            fresh
                .claim(leaf, &proof)
                .map_err(|e| format!("claim of leaf {}: {e}", leaf.index))?;
        }
        if fresh != *self {
            return Err("the claimed bitmap or paid amount differs from the replay".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(amounts: &[u64]) -> Vec<DistributionLeaf> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, a)| DistributionLeaf {
                index: i as u64,
                recipient: AccountId::new(format!("producer:p{i}")).unwrap(),
                amount: *a,
                kind: PayoutKind::DataUsageDividend,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_leaf_claims_once_and_the_claims_add_up_to_the_total(
            amounts in proptest::collection::vec(0u64..1_000_000, 1..70)
        ) {
            let ls = leaves(&amounts);
            let d = Distribution::build("epoch-3/producers", 3, &ls).unwrap();
            let mut book = ClaimBook::new(d.commitment().clone());
            for l in ls.iter().rev() {
                let p = d.proof(l.index).unwrap();
                prop_assert_eq!(book.claim(l, &p), Ok(l.amount));
                prop_assert_eq!(
                    book.claim(l, &p),
                    Err(DistributorError::AlreadyClaimed { index: l.index })
                );
            }
            prop_assert_eq!(book.paid(), amounts.iter().sum::<u64>());
            prop_assert_eq!(book.remaining(), 0);
            prop_assert!(book.reconcile(&|i| d.proof(i)).is_ok());
        }

        #[test]
        fn a_changed_amount_recipient_or_index_does_not_verify(
            amounts in proptest::collection::vec(1u64..1_000_000, 2..70),
            pick in any::<prop::sample::Index>(),
        ) {
            let ls = leaves(&amounts);
            let d = Distribution::build("e/p", 1, &ls).unwrap();
            let l = &ls[pick.index(ls.len())];
            let p = d.proof(l.index).unwrap();
            let mut more = l.clone();
            more.amount += 1;
            prop_assert!(!verify(d.commitment(), &more, &p));
            let mut other = l.clone();
            other.recipient = AccountId::new("producer:mallory").unwrap();
            prop_assert!(!verify(d.commitment(), &other, &p));
            let mut moved = l.clone();
            moved.index = (l.index + 1) % ls.len() as u64;
            prop_assert!(!verify(d.commitment(), &moved, &p));
            let mut book = ClaimBook::new(d.commitment().clone());
            let refused = matches!(book.claim(&more, &p), Err(DistributorError::BadProof { .. }));
            prop_assert!(refused, "a forged amount was paid");
            prop_assert_eq!(book.paid(), 0, "a refused claim changes nothing");
        }
    }

    #[test]
    fn a_wide_tree_hashed_on_every_core_matches_the_sequential_definition() {
        let n = PARALLEL_FROM * 2 + 3;
        let ls = leaves(&(0..n as u64).collect::<Vec<_>>());
        let d = Distribution::build("wide", 9, &ls).unwrap();
        let mut level: Vec<[u8; 32]> = ls.iter().map(|l| leaf_hash("wide", 9, l)).collect();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| {
                    if p.len() == 2 {
                        node_hash(&p[0], &p[1])
                    } else {
                        p[0]
                    }
                })
                .collect();
        }
        assert_eq!(d.commitment().root, level[0]);
        for i in [0, 1, n as u64 / 2, n as u64 - 1] {
            assert!(verify(
                d.commitment(),
                &ls[i as usize],
                &d.proof(i).unwrap()
            ));
        }
    }

    #[test]
    fn a_proof_of_another_distribution_or_epoch_is_refused() {
        let ls = leaves(&[5, 6, 7]);
        let a = Distribution::build("epoch-1/producers", 1, &ls).unwrap();
        let b = Distribution::build("epoch-2/producers", 2, &ls).unwrap();
        assert_ne!(a.commitment().root, b.commitment().root);
        let p = a.proof(1).unwrap();
        assert!(verify(a.commitment(), &ls[1], &p));
        assert!(!verify(b.commitment(), &ls[1], &p));
    }

    #[test]
    fn bad_distributions_and_claims_are_named() {
        assert_eq!(
            Distribution::build("x", 0, &[]).unwrap_err(),
            DistributorError::Empty
        );
        let mut ls = leaves(&[1, 2]);
        ls[1].index = 5;
        assert_eq!(
            Distribution::build("x", 0, &ls).unwrap_err(),
            DistributorError::IndexOutOfOrder {
                position: 1,
                index: 5
            }
        );
        let ls = leaves(&[u64::MAX, 1]);
        assert_eq!(
            Distribution::build("x", 0, &ls).unwrap_err(),
            DistributorError::Overflow
        );
        let ls = leaves(&[1, 2, 3]);
        let d = Distribution::build("x", 0, &ls).unwrap();
        let mut book = ClaimBook::new(d.commitment().clone());
        let mut beyond = ls[0].clone();
        beyond.index = 3;
        assert!(matches!(
            book.claim(&beyond, &d.proof(0).unwrap()),
            Err(DistributorError::NoSuchLeaf { index: 3, count: 3 })
        ));
        assert!(d.proof(3).is_none());
    }

    #[test]
    fn a_tampered_book_fails_reconcile() {
        let ls = leaves(&[10, 20, 30]);
        let d = Distribution::build("x", 0, &ls).unwrap();
        let mut book = ClaimBook::new(d.commitment().clone());
        book.claim(&ls[0], &d.proof(0).unwrap()).unwrap();
        let mut tampered = book.clone();
        tampered.paid += 5;
        assert!(book.reconcile(&|i| d.proof(i)).is_ok());
        assert!(tampered.reconcile(&|i| d.proof(i)).is_err());
    }
}
