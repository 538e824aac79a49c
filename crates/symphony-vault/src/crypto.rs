//! Envelope encryption: a Vault key wraps one random data key per subject.
//!
//! Cipher: AES-256-GCM (RustCrypto `aes-gcm`, AES-NI + PCLMULQDQ detected at run time).
//! Every sealed value binds its context through the associated data, so a ciphertext
//! moved to another key slot, subject or block fails authentication instead of
//! decrypting as someone else's data.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::{CryptoRng, RngCore};
use sha2::{Digest as _, Sha256};
use std::path::Path;

use crate::error::VaultError;

/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// The Vault key (256 bits). It wraps the per-subject data keys; it never encrypts
/// records directly.
#[derive(Clone)]
pub struct VaultKey([u8; 32]);

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey(..)")
    }
}

impl VaultKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        VaultKey(bytes)
    }

    /// A fresh key from the caller's cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        VaultKey(bytes)
    }

    /// Reads a key file: 64 hex characters (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let text = std::fs::read_to_string(path).map_err(|source| VaultError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bytes = hex::decode(text.trim()).map_err(|_| VaultError::BadKeyFile {
            path: path.to_owned(),
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| VaultError::BadKeyFile {
            path: path.to_owned(),
        })?;
        Ok(VaultKey(bytes))
    }

    /// Writes the key as 64 hex characters (the caller sets file permissions).
    pub fn save(&self, path: &Path) -> Result<(), VaultError> {
        use std::io::Write;
        let io = |source| VaultError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600); // readable by its owner only
        }
        let mut f = options.open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // An existing file keeps its mode on open: tighten it too.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        f.write_all(hex::encode(self.0).as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }

    /// A secret derived for keyed record digests (deduplication index), so the
    /// index does not reveal plaintext by dictionary attack.
    pub(crate) fn digest_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"symphony-vault/record-digest-key/v1\0");
        h.update(self.0);
        h.finalize().into()
    }
}

/// A subject's data key (256 bits), stored only wrapped by the Vault key.
pub(crate) struct DataKey(pub(crate) [u8; 32]);

impl DataKey {
    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }
}

/// Seals `plaintext` as `nonce || ciphertext || tag`.
pub(crate) fn seal(
    cipher: &Aes256Gcm,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    buf.resize(NONCE_LEN, 0);
    buf.extend_from_slice(plaintext);
    seal_in_place(cipher, nonce, aad, buf)
}

/// [`seal`] of `buf[NONCE_LEN..]`, encrypted in place: the caller leaves
/// `NONCE_LEN` bytes of room in front for the nonce; the tag is appended. The
/// same bytes as `Aead::encrypt` after the nonce.
pub(crate) fn seal_in_place(
    cipher: &Aes256Gcm,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, VaultError> {
    let Some((room, plaintext)) = buf.split_first_chunk_mut::<NONCE_LEN>() else {
        return Err(VaultError::Crypto("no room for the nonce"));
    };
    *room = nonce;
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, plaintext)
        .map_err(|_| VaultError::Crypto("encryption failed"))?;
    buf.extend_from_slice(&tag);
    Ok(buf)
}

/// Opens a value sealed by [`seal`]; any change to key, context or bytes is an error.
pub(crate) fn open(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ()> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(());
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| ())
}

/// Associated data of a wrapped data key.
pub(crate) fn key_aad(vault: &str, subject: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(40 + vault.len() + subject.len());
    aad.extend_from_slice(b"symphony-vault/dek/v1\0");
    push_str(&mut aad, vault);
    push_str(&mut aad, subject);
    aad
}

/// Associated data of a record block: vault, subject and block number.
pub(crate) fn block_aad(vault: &str, subject: &str, block: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48 + vault.len() + subject.len());
    aad.extend_from_slice(b"symphony-vault/block/v1\0");
    push_str(&mut aad, vault);
    push_str(&mut aad, subject);
    aad.extend_from_slice(&block.to_le_bytes());
    aad
}

/// Length-prefixed, so ("ab","c") and ("a","bc") differ.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Nonce of block `block` under a subject's data key. Each data key encrypts each
/// block number at most once (the next block number is persisted in the same write
/// transaction as the block), so the nonce never repeats under one key.
pub(crate) fn block_nonce(block: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..8].copy_from_slice(&block.to_le_bytes());
    nonce[8..].copy_from_slice(b"blk1");
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_bound() {
        let cipher = VaultKey::from_bytes([3; 32]).cipher();
        let sealed = seal(&cipher, block_nonce(0), &block_aad("v", "s", 0), b"data").unwrap();
        assert_eq!(
            open(&cipher, &block_aad("v", "s", 0), &sealed).unwrap(),
            b"data"
        );
        // Another block number, subject or Vault: refused.
        assert!(open(&cipher, &block_aad("v", "s", 1), &sealed).is_err());
        assert!(open(&cipher, &block_aad("v", "t", 0), &sealed).is_err());
        assert!(open(&cipher, &block_aad("w", "s", 0), &sealed).is_err());
        // Length prefixes keep ("ab","c") apart from ("a","bc").
        assert_ne!(block_aad("ab", "c", 0), block_aad("a", "bc", 0));
        // Another key: refused.
        let other = VaultKey::from_bytes([4; 32]).cipher();
        assert!(open(&other, &block_aad("v", "s", 0), &sealed).is_err());
        // Every single flipped bit: refused.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&cipher, &block_aad("v", "s", 0), &bad).is_err(),
                "byte {i}"
            );
        }
        assert!(open(&cipher, &block_aad("v", "s", 0), &sealed[..10]).is_err());
    }
}
