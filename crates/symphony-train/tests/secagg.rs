//! Secure aggregation: exact unmasking with and without a dropout, uniformity of a
//! single masked vector, and the refusals that keep individual updates hidden.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use symphony_train::secagg::{
    fedavg, fedavg_prescale, Aggregator, MaskedUpdate, Participant, ParticipantId, Quantizer,
    Roster, SecAggError, ShareFor,
};

const ROUND: u64 = 7;

struct Setup {
    participants: Vec<Participant>,
    roster: Roster,
    /// shares[k] = shares dealt by participant k
    shares: Vec<Vec<ShareFor>>,
}

fn setup(n: u32, threshold: u8, seed: u64) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    // Non-contiguous ids to exercise the ordering logic.
    let participants: Vec<Participant> = (0..n)
        .map(|i| Participant::from_rng(ParticipantId(100 + 3 * i), &mut rng))
        .collect();
    let roster = Roster::new(participants.iter().map(|p| (p.id(), p.public_key()))).unwrap();
    let shares = participants
        .iter()
        .map(|p| p.deal_shares(&roster, threshold, &mut rng).unwrap())
        .collect();
    Setup {
        participants,
        roster,
        shares,
    }
}

fn random_updates(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.gen()).collect())
        .collect()
}

fn plain_sum(updates: &[&Vec<u32>], len: usize) -> Vec<u32> {
    let mut sum = vec![0u32; len];
    for u in updates {
        for (s, x) in sum.iter_mut().zip(u.iter()) {
            *s = s.wrapping_add(*x);
        }
    }
    sum
}

fn share_of(s: &Setup, owner: ParticipantId, holder: ParticipantId) -> ShareFor {
    s.shares
        .iter()
        .flatten()
        .find(|f| f.owner == owner && f.holder == holder)
        .cloned()
        .unwrap()
}

#[test]
fn unmasked_sum_equals_plaintext_sum_without_dropout() {
    let (n, len) = (5, 1000);
    let s = setup(n, 3, 1);
    let updates = random_updates(n as usize, len, 2);
    let mut agg = Aggregator::new(s.roster.clone(), ROUND, 3, len).unwrap();
    for (p, u) in s.participants.iter().zip(&updates) {
        let masked = p.mask(&s.roster, ROUND, u).unwrap();
        assert_ne!(&masked.masked, u, "the update must leave masked");
        agg.add_masked(masked).unwrap();
    }
    assert!(agg.missing().is_empty());
    let sum = agg.finish().unwrap();
    assert_eq!(sum, plain_sum(&updates.iter().collect::<Vec<_>>(), len));
}

#[test]
fn unmasked_sum_equals_plaintext_sum_with_dropout_recovered_by_shamir() {
    let (n, len, t) = (6, 777, 3u8);
    let s = setup(n, t, 3);
    let updates = random_updates(n as usize, len, 4);
    // Participant 2 (a middle id, so it has peers on both sides) drops after masking.
    let dropped = s.participants[2].id();
    let mut agg = Aggregator::new(s.roster.clone(), ROUND, t, len).unwrap();
    for (p, u) in s.participants.iter().zip(&updates) {
        let masked = p.mask(&s.roster, ROUND, u).unwrap();
        if p.id() != dropped {
            agg.add_masked(masked).unwrap();
        }
    }
    assert_eq!(agg.missing(), vec![dropped]);
    // Masks do not cancel without recovery.
    let survivors: Vec<&Participant> = s
        .participants
        .iter()
        .filter(|p| p.id() != dropped)
        .collect();
    for holder in survivors.iter().take(usize::from(t)) {
        let share = share_of(&s, dropped, holder.id());
        agg.add_recovery_share(dropped, holder.id(), share.share)
            .unwrap();
    }
    let sum = agg.finish().unwrap();
    let surviving_updates: Vec<&Vec<u32>> = s
        .participants
        .iter()
        .zip(&updates)
        .filter(|(p, _)| p.id() != dropped)
        .map(|(_, u)| u)
        .collect();
    assert_eq!(sum, plain_sum(&surviving_updates, len));
}

#[test]
fn without_recovery_the_sum_is_garbage() {
    // Guards the previous test: dropping without removing masks must not give the sum.
    let (n, len) = (4, 64);
    let s = setup(n, 2, 5);
    let updates = random_updates(n as usize, len, 6);
    let mut plain = vec![0u32; len];
    let mut masked_sum = vec![0u32; len];
    for (p, u) in s.participants.iter().zip(&updates).skip(1) {
        let m = p.mask(&s.roster, ROUND, u).unwrap();
        for k in 0..len {
            plain[k] = plain[k].wrapping_add(u[k]);
            masked_sum[k] = masked_sum[k].wrapping_add(m.masked[k]);
        }
    }
    assert_ne!(plain, masked_sum);
}

#[test]
fn fewer_than_threshold_shares_is_an_error() {
    let (n, len, t) = (5, 10, 3u8);
    let s = setup(n, t, 7);
    let updates = random_updates(n as usize, len, 8);
    let dropped = s.participants[0].id();
    let mut agg = Aggregator::new(s.roster.clone(), ROUND, t, len).unwrap();
    for (p, u) in s.participants.iter().zip(&updates).skip(1) {
        agg.add_masked(p.mask(&s.roster, ROUND, u).unwrap())
            .unwrap();
    }
    for holder in s.participants.iter().skip(1).take(usize::from(t) - 1) {
        agg.add_recovery_share(
            dropped,
            holder.id(),
            share_of(&s, dropped, holder.id()).share,
        )
        .unwrap();
    }
    assert_eq!(
        agg.finish(),
        Err(SecAggError::NotEnoughShares {
            dropped,
            got: usize::from(t) - 1,
            threshold: t
        })
    );
}

#[test]
fn aggregator_never_unmasks_a_submitted_update() {
    let (n, len, t) = (4, 8, 2u8);
    let s = setup(n, t, 9);
    let updates = random_updates(n as usize, len, 10);
    let mut agg = Aggregator::new(s.roster.clone(), ROUND, t, len).unwrap();
    let p0 = &s.participants[0];
    let p1 = &s.participants[1];
    let p3 = &s.participants[3];
    agg.add_masked(p0.mask(&s.roster, ROUND, &updates[0]).unwrap())
        .unwrap();
    agg.add_masked(p1.mask(&s.roster, ROUND, &updates[1]).unwrap())
        .unwrap();
    // Shares of a participant that submitted are refused.
    let share = share_of(&s, p0.id(), p1.id()).share;
    assert_eq!(
        agg.add_recovery_share(p0.id(), p1.id(), share),
        Err(SecAggError::NotDropped(p0.id()))
    );
    // Shares held by a non-survivor are refused.
    let share = share_of(&s, p3.id(), s.participants[2].id()).share;
    assert_eq!(
        agg.add_recovery_share(p3.id(), s.participants[2].id(), share),
        Err(SecAggError::HolderNotSurvivor(s.participants[2].id()))
    );
    // Once recovery of p3 began, its late update is refused.
    agg.add_recovery_share(p3.id(), p0.id(), share_of(&s, p3.id(), p0.id()).share)
        .unwrap();
    let late = p3.mask(&s.roster, ROUND, &updates[3]).unwrap();
    assert_eq!(
        agg.add_masked(late),
        Err(SecAggError::DeclaredDropped(p3.id()))
    );
    // Double submission and wrong round are refused.
    let again = p0.mask(&s.roster, ROUND, &updates[0]).unwrap();
    assert_eq!(
        agg.add_masked(again),
        Err(SecAggError::AlreadySubmitted(p0.id()))
    );
    let other_round = s.participants[2]
        .mask(&s.roster, ROUND + 1, &updates[2])
        .unwrap();
    assert!(matches!(
        agg.add_masked(other_round),
        Err(SecAggError::WrongRound { .. })
    ));
}

/// Pearson chi-square statistic of the top byte of each word against uniform.
fn chi_square_top_byte(words: &[u32]) -> f64 {
    let mut hist = [0u64; 256];
    for w in words {
        hist[(w >> 24) as usize] += 1;
    }
    let expected = words.len() as f64 / 256.0;
    hist.iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn single_masked_vector_looks_uniform() {
    let (n, len) = (3, 256 * 200);
    let s = setup(n, 2, 11);
    // A very non-uniform update: small quantized values near zero.
    let q = Quantizer::new(65536.0, 1.0, 3).unwrap();
    let values: Vec<f64> = (0..len).map(|i| ((i % 17) as f64 - 8.0) / 100.0).collect();
    let update = q.encode(&values).unwrap();
    let MaskedUpdate { masked, .. } = s.participants[1].mask(&s.roster, ROUND, &update).unwrap();
    // 255 degrees of freedom: mean 255, sd ≈ 22.6; 400 is about +6.4 sd (p < 1e-8).
    let chi_masked = chi_square_top_byte(&masked);
    assert!(
        chi_masked < 400.0,
        "masked vector is not uniform: chi2 = {chi_masked}"
    );
    // The same test must reject the unmasked update (so it can fail).
    let chi_plain = chi_square_top_byte(&update);
    assert!(
        chi_plain > 10_000.0,
        "plain update looked uniform: chi2 = {chi_plain}"
    );
}

#[test]
fn secure_fedavg_matches_plain_fedavg_within_quantization_error() {
    let (n, dim) = (4usize, 17usize);
    let s = setup(n as u32, 3, 12);
    let counts = [1000u64, 250, 4000, 10];
    let total: u64 = counts.iter().sum();
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let deltas: Vec<Vec<f64>> = (0..n)
        .map(|_| (0..dim).map(|_| rng.gen_range(-0.5..0.5)).collect())
        .collect();
    let q = Quantizer::new((1u32 << 20) as f64, 1.0, n as u32).unwrap();
    let mut agg = Aggregator::new(s.roster.clone(), ROUND, 3, dim).unwrap();
    for ((p, d), &c) in s.participants.iter().zip(&deltas).zip(&counts) {
        let encoded = q.encode(&fedavg_prescale(d, c, total).unwrap()).unwrap();
        agg.add_masked(p.mask(&s.roster, ROUND, &encoded).unwrap())
            .unwrap();
    }
    let secure = q.decode(&agg.finish().unwrap());
    let pairs: Vec<(&[f64], u64)> = deltas.iter().map(|d| d.as_slice()).zip(counts).collect();
    let plain = fedavg(&pairs).unwrap();
    let tolerance = n as f64 * 0.5 / q.scale() + 1e-12;
    for (a, b) in secure.iter().zip(&plain) {
        assert!((a - b).abs() <= tolerance, "{a} vs {b}");
    }
}

#[test]
fn quantizer_rejects_overflowing_parameters_and_round_trips() {
    assert!(Quantizer::new(65536.0, 1.0, 40_000).is_err());
    let q = Quantizer::new(1024.0, 2.0, 8).unwrap();
    let enc = q.encode(&[-3.0, -1.5, 0.0, 0.25, 5.0]).unwrap();
    assert_eq!(q.decode(&enc), vec![-2.0, -1.5, 0.0, 0.25, 2.0]);
    assert_eq!(q.encode(&[f64::NAN]), Err(SecAggError::NotANumber));
}

#[test]
fn roster_and_threshold_validation() {
    let s = setup(3, 2, 14);
    assert!(matches!(
        s.participants[0].deal_shares(&s.roster, 4, &mut ChaCha20Rng::seed_from_u64(0)),
        Err(SecAggError::Threshold { .. })
    ));
    let dup = Roster::new(vec![
        (ParticipantId(1), s.participants[0].public_key()),
        (ParticipantId(1), s.participants[1].public_key()),
    ]);
    assert_eq!(
        dup,
        Err(SecAggError::DuplicateParticipant(ParticipantId(1)))
    );
    assert_eq!(s.shares[0].len(), 2, "one share per other participant");
}
