//! Secure aggregation of model updates with pairwise masks (Bonawitz et al. 2017,
//! "Practical Secure Aggregation for Privacy-Preserving Machine Learning"), for an
//! honest-but-curious aggregator.
//!
//! * **Keys.** Each participant (a Vault) holds an X25519 static secret drawn from a
//!   caller-seeded [`ChaCha20Rng`]. The [`Roster`] lists every participant's public key.
//! * **Pairwise masks.** For participants `i < j` the seed is
//!   `HKDF-SHA256(salt = "symphony-secagg-v1", ikm = X25519(i, j),
//!   info = "symphony/secagg/pairwise-mask" ‖ round ‖ i ‖ j)` (little-endian integers),
//!   and the mask is the ChaCha20 keystream under that key (zero nonce) read as
//!   little-endian `u32` words. Participant `i` adds the masks shared with every
//!   `j > i` and subtracts those shared with every `j < i`, all in `Z_2^32`, so the masks
//!   cancel in the sum.
//! * **Quantization** ([`Quantizer`]): a real value `v` is clipped to `[-clip, clip]`,
//!   scaled by `scale`, rounded to the nearest integer and stored in two's complement
//!   in `Z_2^32`. [`Quantizer::new`] requires `max_participants · clip · scale ≤ 2^31 − 1`
//!   so the sum of all participants decodes without wrap-around.
//! * **Dropouts.** Before masking, each participant splits its X25519 secret into
//!   Shamir shares (`blahaj`, GF(256), threshold `t`), the share with x-coordinate
//!   `k + 1` going to the roster's `k`-th participant. If a participant drops after the
//!   masks are fixed, at least `t` survivors hand their shares of it to the
//!   [`Aggregator`], which rebuilds the dropped secret, recomputes its masks with every
//!   survivor and removes them. The aggregator refuses shares of a participant whose
//!   masked update it received, and refuses a masked update of a participant whose
//!   recovery has begun, so it can never unmask an individual update.
//!   (There is no self-mask: a dropped participant's update must not be delivered late,
//!   which the aggregator enforces. Transport encryption of the shares is the caller's.)
//! * **Ownership.** [`Aggregator::finish`] consumes the aggregator; what it kept was
//!   the running masked sum, the set of ids that submitted and the recovery shares.

use std::collections::{BTreeMap, BTreeSet};

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hkdf::Hkdf;
use rand_chacha::ChaCha20Rng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

/// Errors of secure aggregation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecAggError {
    /// The roster repeats a participant id.
    #[error("participant {0:?} appears twice in the roster")]
    DuplicateParticipant(ParticipantId),
    /// The roster must have between 2 and 255 participants (GF(256) Shamir shares).
    #[error("roster size {0} outside 2..=255")]
    RosterSize(usize),
    /// The participant is not in the roster.
    #[error("participant {0:?} is not in the roster")]
    UnknownParticipant(ParticipantId),
    /// Threshold outside `2..=n`.
    #[error("threshold {threshold} outside 2..={n}")]
    Threshold {
        /// Requested threshold.
        threshold: u8,
        /// Roster size.
        n: usize,
    },
    /// A vector has the wrong length.
    #[error("vector length {got}, expected {expected}")]
    LengthMismatch {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A masked update for another round.
    #[error("update is for round {got}, aggregator is at round {expected}")]
    WrongRound {
        /// Aggregator's round.
        expected: u64,
        /// Update's round.
        got: u64,
    },
    /// The participant already submitted.
    #[error("participant {0:?} already submitted")]
    AlreadySubmitted(ParticipantId),
    /// Recovery of this participant has begun, so its update is no longer accepted.
    #[error("participant {0:?} was declared dropped")]
    DeclaredDropped(ParticipantId),
    /// Recovery shares were offered for a participant whose update was received.
    #[error("participant {0:?} submitted; its secret may not be reconstructed")]
    NotDropped(ParticipantId),
    /// A recovery share must come from a participant that submitted.
    #[error("share holder {0:?} did not submit")]
    HolderNotSurvivor(ParticipantId),
    /// The same holder gave two shares for the same dropped participant.
    #[error("duplicate share from {holder:?} for {dropped:?}")]
    DuplicateShare {
        /// Dropped participant.
        dropped: ParticipantId,
        /// Holder.
        holder: ParticipantId,
    },
    /// Fewer than `threshold` shares for a dropped participant.
    #[error("only {got} of {threshold} shares for dropped participant {dropped:?}")]
    NotEnoughShares {
        /// Dropped participant.
        dropped: ParticipantId,
        /// Shares received.
        got: usize,
        /// Threshold.
        threshold: u8,
    },
    /// Fewer survivors than the threshold.
    #[error("only {got} survivors, threshold {threshold}")]
    TooFewSurvivors {
        /// Survivors.
        got: usize,
        /// Threshold.
        threshold: u8,
    },
    /// The shares reconstruct a secret that does not match the roster public key.
    #[error("reconstructed secret of {0:?} does not match its public key")]
    BadShares(ParticipantId),
    /// A malformed share.
    #[error("malformed secret share")]
    MalformedShare,
    /// The key agreement produced a non-contributory (low-order) shared secret.
    #[error("key agreement with {0:?} is not contributory")]
    NonContributory(ParticipantId),
    /// Quantizer parameters out of range.
    #[error("invalid quantizer: {0}")]
    InvalidQuantizer(&'static str),
    /// A value to quantize is NaN.
    #[error("cannot quantize NaN")]
    NotANumber,
    /// HKDF refused the output length (cannot happen for 32 bytes).
    #[error("key derivation failed")]
    KeyDerivation,
    /// Federated averaging without examples.
    #[error("federated averaging needs a positive total example count")]
    NoExamples,
}

/// Identifier of a participant (a Vault) within a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(pub u32);

/// The participants of a round and their X25519 public keys, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    keys: BTreeMap<ParticipantId, PublicKey>,
}

impl Roster {
    /// Builds a roster of 2..=255 distinct participants.
    pub fn new(
        entries: impl IntoIterator<Item = (ParticipantId, PublicKey)>,
    ) -> Result<Self, SecAggError> {
        let mut keys = BTreeMap::new();
        for (id, key) in entries {
            if keys.insert(id, key).is_some() {
                return Err(SecAggError::DuplicateParticipant(id));
            }
        }
        if !(2..=255).contains(&keys.len()) {
            return Err(SecAggError::RosterSize(keys.len()));
        }
        Ok(Self { keys })
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false for a validated roster.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Participant ids in increasing order.
    pub fn ids(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.keys.keys().copied()
    }

    fn key(&self, id: ParticipantId) -> Result<&PublicKey, SecAggError> {
        self.keys
            .get(&id)
            .ok_or(SecAggError::UnknownParticipant(id))
    }

    fn check_threshold(&self, threshold: u8) -> Result<(), SecAggError> {
        if threshold < 2 || usize::from(threshold) > self.len() {
            return Err(SecAggError::Threshold {
                threshold,
                n: self.len(),
            });
        }
        Ok(())
    }
}

/// Fixed-point encoding of real vectors into `Z_2^32`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    scale: f64,
    clip: f64,
}

impl Quantizer {
    /// `scale` units per 1.0, values clipped to `[-clip, clip]`; the sum of up to
    /// `max_participants` encoded vectors must fit in `i32`.
    pub fn new(scale: f64, clip: f64, max_participants: u32) -> Result<Self, SecAggError> {
        if !(scale.is_finite() && scale > 0.0 && clip.is_finite() && clip > 0.0) {
            return Err(SecAggError::InvalidQuantizer(
                "scale and clip must be finite and > 0",
            ));
        }
        if max_participants == 0 {
            return Err(SecAggError::InvalidQuantizer(
                "max_participants must be >= 1",
            ));
        }
        if f64::from(max_participants) * (clip * scale).round() > f64::from(i32::MAX) {
            return Err(SecAggError::InvalidQuantizer(
                "max_participants * clip * scale exceeds 2^31 - 1",
            ));
        }
        Ok(Self { scale, clip })
    }

    /// Units per 1.0.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Clipping range `[-clip, clip]`.
    pub fn clip(&self) -> f64 {
        self.clip
    }

    /// Clips, scales and rounds each value to a two's-complement word.
    pub fn encode(&self, values: &[f64]) -> Result<Vec<u32>, SecAggError> {
        values
            .iter()
            .map(|&v| {
                if v.is_nan() {
                    return Err(SecAggError::NotANumber);
                }
                let q = (v.clamp(-self.clip, self.clip) * self.scale).round() as i32;
                Ok(q as u32)
            })
            .collect()
    }

    /// Decodes a sum of at most `max_participants` encoded vectors.
    pub fn decode(&self, words: &[u32]) -> Vec<f64> {
        words
            .iter()
            .map(|&w| f64::from(w as i32) / self.scale)
            .collect()
    }
}

/// A Shamir share of a participant's X25519 secret (opaque bytes: x-coordinate, then
/// one GF(256) value per secret byte).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretShare(Vec<u8>);

impl std::fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretShare(x={:?}, ..)", self.0.first())
    }
}

impl SecretShare {
    /// Wire bytes of the share.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses wire bytes (x-coordinate followed by 32 values).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        if bytes.len() != 33 || bytes[0] == 0 {
            return Err(SecAggError::MalformedShare);
        }
        Ok(Self(bytes.to_vec()))
    }
}

/// A share of `owner`'s secret, to be delivered (encrypted, by the caller) to `holder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareFor {
    /// Whose secret this is a share of.
    pub owner: ParticipantId,
    /// Who keeps it.
    pub holder: ParticipantId,
    /// The share.
    pub share: SecretShare,
}

/// A participant's masked, quantized update for one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedUpdate {
    /// Sender.
    pub from: ParticipantId,
    /// Round number.
    pub round: u64,
    /// `x_i + Σ_{j>i} m_ij − Σ_{j<i} m_ij` in `Z_2^32`.
    pub masked: Vec<u32>,
}

/// One participant's key material.
pub struct Participant {
    id: ParticipantId,
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Pairwise mask seed of `a` and `b` for `round` (symmetric in `a`, `b`).
fn pairwise_seed(
    shared: &x25519_dalek::SharedSecret,
    round: u64,
    a: ParticipantId,
    b: ParticipantId,
) -> Result<[u8; 32], SecAggError> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if !shared.was_contributory() {
        return Err(SecAggError::NonContributory(if a < b { b } else { a }));
    }
    let mut info = Vec::with_capacity(29 + 16);
    info.extend_from_slice(b"symphony/secagg/pairwise-mask");
    info.extend_from_slice(&round.to_le_bytes());
    info.extend_from_slice(&lo.0.to_le_bytes());
    info.extend_from_slice(&hi.0.to_le_bytes());
    let hk = Hkdf::<Sha256>::new(Some(b"symphony-secagg-v1"), shared.as_bytes());
    let mut seed = [0u8; 32];
    hk.expand(&info, &mut seed)
        .map_err(|_| SecAggError::KeyDerivation)?;
    Ok(seed)
}

/// Adds (`add`) or subtracts the ChaCha20 mask stream of `seed` into `acc`.
fn apply_mask(acc: &mut [u32], seed: &[u8; 32], add: bool) {
    let mut cipher = ChaCha20::new(seed.into(), &[0u8; 12].into());
    let mut block = [0u8; 256];
    for chunk in acc.chunks_mut(64) {
        let bytes = &mut block[..chunk.len() * 4];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        for (a, w) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            *a = if add {
                a.wrapping_add(m)
            } else {
                a.wrapping_sub(m)
            };
        }
    }
}

impl Participant {
    /// A participant with a fresh X25519 secret drawn from `rng`.
    pub fn from_rng(id: ParticipantId, rng: &mut ChaCha20Rng) -> Self {
        let secret = StaticSecret::random_from_rng(rng);
        let public = PublicKey::from(&secret);
        Self { id, secret, public }
    }

    /// This participant's id.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// This participant's X25519 public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Splits the secret into Shamir shares with `threshold`, one for every other
    /// roster member (share x-coordinate = roster position + 1).
    pub fn deal_shares(
        &self,
        roster: &Roster,
        threshold: u8,
        rng: &mut ChaCha20Rng,
    ) -> Result<Vec<ShareFor>, SecAggError> {
        roster.check_threshold(threshold)?;
        roster.key(self.id)?;
        let secret = self.secret.to_bytes();
        let dealer = blahaj::Sharks(threshold).dealer_rng(&secret, rng);
        Ok(roster
            .ids()
            .zip(dealer)
            .filter(|(holder, _)| *holder != self.id)
            .map(|(holder, share)| ShareFor {
                owner: self.id,
                holder,
                share: SecretShare(Vec::from(&share)),
            })
            .collect())
    }

    /// Masks a quantized update for `round`.
    pub fn mask(
        &self,
        roster: &Roster,
        round: u64,
        update: &[u32],
    ) -> Result<MaskedUpdate, SecAggError> {
        roster.key(self.id)?;
        let mut masked = update.to_vec();
        for (&other, key) in &roster.keys {
            if other == self.id {
                continue;
            }
            let seed = pairwise_seed(&self.secret.diffie_hellman(key), round, self.id, other)?;
            apply_mask(&mut masked, &seed, other > self.id);
        }
        Ok(MaskedUpdate {
            from: self.id,
            round,
            masked,
        })
    }
}

/// The aggregator of one round: sees masked updates, recovery shares of dropped
/// participants and the final sum, nothing else.
#[derive(Debug)]
pub struct Aggregator {
    roster: Roster,
    round: u64,
    threshold: u8,
    sum: Vec<u32>,
    submitted: BTreeSet<ParticipantId>,
    recovery: BTreeMap<ParticipantId, BTreeMap<ParticipantId, SecretShare>>,
}

impl Aggregator {
    /// An aggregator for `round` over vectors of `vector_len` words.
    pub fn new(
        roster: Roster,
        round: u64,
        threshold: u8,
        vector_len: usize,
    ) -> Result<Self, SecAggError> {
        roster.check_threshold(threshold)?;
        Ok(Self {
            roster,
            round,
            threshold,
            sum: vec![0; vector_len],
            submitted: BTreeSet::new(),
            recovery: BTreeMap::new(),
        })
    }

    /// Adds one masked update into the running sum (the update is consumed).
    pub fn add_masked(&mut self, update: MaskedUpdate) -> Result<(), SecAggError> {
        self.roster.key(update.from)?;
        if update.round != self.round {
            return Err(SecAggError::WrongRound {
                expected: self.round,
                got: update.round,
            });
        }
        if update.masked.len() != self.sum.len() {
            return Err(SecAggError::LengthMismatch {
                expected: self.sum.len(),
                got: update.masked.len(),
            });
        }
        if self.recovery.contains_key(&update.from) {
            return Err(SecAggError::DeclaredDropped(update.from));
        }
        if !self.submitted.insert(update.from) {
            return Err(SecAggError::AlreadySubmitted(update.from));
        }
        for (s, m) in self.sum.iter_mut().zip(&update.masked) {
            *s = s.wrapping_add(*m);
        }
        Ok(())
    }

    /// Roster members whose update has not arrived.
    pub fn missing(&self) -> Vec<ParticipantId> {
        self.roster
            .ids()
            .filter(|id| !self.submitted.contains(id))
            .collect()
    }

    /// Accepts `holder`'s share of the `dropped` participant's secret.
    pub fn add_recovery_share(
        &mut self,
        dropped: ParticipantId,
        holder: ParticipantId,
        share: SecretShare,
    ) -> Result<(), SecAggError> {
        self.roster.key(dropped)?;
        self.roster.key(holder)?;
        if self.submitted.contains(&dropped) {
            return Err(SecAggError::NotDropped(dropped));
        }
        if !self.submitted.contains(&holder) {
            return Err(SecAggError::HolderNotSurvivor(holder));
        }
        let shares = self.recovery.entry(dropped).or_default();
        if shares.insert(holder, share).is_some() {
            return Err(SecAggError::DuplicateShare { dropped, holder });
        }
        Ok(())
    }

    /// Removes the masks of every dropped participant and returns the sum of the
    /// survivors' quantized updates. Consumes the aggregator.
    pub fn finish(mut self) -> Result<Vec<u32>, SecAggError> {
        if self.submitted.len() < usize::from(self.threshold) {
            return Err(SecAggError::TooFewSurvivors {
                got: self.submitted.len(),
                threshold: self.threshold,
            });
        }
        for dropped in self.missing() {
            let shares = self.recovery.remove(&dropped).unwrap_or_default();
            let secret = self.reconstruct(dropped, shares)?;
            for &survivor in &self.submitted {
                let key = self.roster.key(survivor)?;
                let seed =
                    pairwise_seed(&secret.diffie_hellman(key), self.round, dropped, survivor)?;
                // The survivor added m if dropped > survivor, subtracted it otherwise.
                apply_mask(&mut self.sum, &seed, dropped < survivor);
            }
        }
        Ok(self.sum)
    }

    fn reconstruct(
        &self,
        dropped: ParticipantId,
        shares: BTreeMap<ParticipantId, SecretShare>,
    ) -> Result<StaticSecret, SecAggError> {
        if shares.len() < usize::from(self.threshold) {
            return Err(SecAggError::NotEnoughShares {
                dropped,
                got: shares.len(),
                threshold: self.threshold,
            });
        }
        let mut parsed = Vec::with_capacity(shares.len());
        let mut xs = BTreeSet::new();
        for share in shares.values() {
            let s = blahaj::Share::try_from(share.as_bytes())
                .map_err(|_| SecAggError::MalformedShare)?;
            if share.0.len() != 33 || !xs.insert(share.0[0]) {
                return Err(SecAggError::MalformedShare);
            }
            parsed.push(s);
        }
        let bytes = blahaj::Sharks(self.threshold)
            .recover(parsed.iter())
            .map_err(|_| SecAggError::NotEnoughShares {
                dropped,
                got: parsed.len(),
                threshold: self.threshold,
            })?;
        let array: [u8; 32] = bytes.try_into().map_err(|_| SecAggError::MalformedShare)?;
        let secret = StaticSecret::from(array);
        if PublicKey::from(&secret) != *self.roster.key(dropped)? {
            return Err(SecAggError::BadShares(dropped));
        }
        Ok(secret)
    }
}

/// Federated averaging: the mean of `updates` weighted by their example counts.
pub fn fedavg(updates: &[(&[f64], u64)]) -> Result<Vec<f64>, SecAggError> {
    let Some((first, _)) = updates.first() else {
        return Err(SecAggError::NoExamples);
    };
    let total: u64 = updates.iter().map(|(_, n)| *n).sum();
    if total == 0 {
        return Err(SecAggError::NoExamples);
    }
    let mut out = vec![0.0; first.len()];
    for (update, n) in updates {
        if update.len() != out.len() {
            return Err(SecAggError::LengthMismatch {
                expected: out.len(),
                got: update.len(),
            });
        }
        let w = *n as f64 / total as f64;
        for (o, u) in out.iter_mut().zip(update.iter()) {
            *o += w * u;
        }
    }
    Ok(out)
}

/// Scales an update by its FedAvg weight `examples / total_examples` before
/// quantization, so that the secure sum of scaled updates is the weighted average.
pub fn fedavg_prescale(
    update: &[f64],
    examples: u64,
    total_examples: u64,
) -> Result<Vec<f64>, SecAggError> {
    if total_examples == 0 || examples > total_examples {
        return Err(SecAggError::NoExamples);
    }
    let w = examples as f64 / total_examples as f64;
    Ok(update.iter().map(|u| u * w).collect())
}
