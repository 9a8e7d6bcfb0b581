//! The data key of one transfer, and data keys wrapped for keeping at rest.

use bayspace_contracts::signing::b64;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::{
    CryptoError, KEY_SIZE, Result, STORAGE_KEY_CONTEXT, TAG_SIZE, WRAP_AAD_DOMAIN, WRAP_NONCE_SIZE,
    random,
};

/// The 256-bit key one transfer is encrypted under.
///
/// It is never cloned, never printed, and wiped from memory when dropped, so
/// the only copies are the ones the transfer deliberately sends or wraps.
pub struct DataKey([u8; KEY_SIZE]);

impl DataKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        Ok(Self(random()?))
    }

    pub fn from_bytes(bytes: [u8; KEY_SIZE]) -> Self {
        Self(bytes)
    }

    /// The raw key, for sending it in a TransferStartMessage; do not keep
    /// copies of it.
    pub fn as_bytes(&self) -> &[u8; KEY_SIZE] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Derives the key that wraps data keys at rest from the node's key seed,
/// so a node needs no second secret and its storage key never leaves it.
pub fn storage_key_from_seed(seed: &[u8; 32]) -> [u8; KEY_SIZE] {
    blake3::derive_key(STORAGE_KEY_CONTEXT, seed)
}

/// A data key encrypted under a storage key, for data kept sealed at rest.
///
/// Destroying the wrapped key is crypto-shredding: the sealed data can no
/// longer be opened by anyone. The context (such as the agreement id) is
/// authenticated, so a wrapped key moved to another record does not open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    #[serde(with = "b64")]
    nonce: [u8; WRAP_NONCE_SIZE],
    #[serde(with = "b64")]
    pub(super) sealed: [u8; KEY_SIZE + TAG_SIZE],
}

fn wrap_aad(context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_DOMAIN.len() + context.len());
    aad.extend_from_slice(WRAP_AAD_DOMAIN);
    aad.extend_from_slice(context.as_bytes());
    aad
}

impl WrappedKey {
    pub fn wrap(key: &DataKey, storage_key: &[u8; KEY_SIZE], context: &str) -> Result<Self> {
        let nonce: [u8; WRAP_NONCE_SIZE] = random()?;
        let aead = XChaCha20Poly1305::new(storage_key.into());
        let mut buf = *key.as_bytes();
        let tag = aead.encrypt_inout_detached(
            &XNonce::from(nonce),
            &wrap_aad(context),
            (&mut buf[..]).into(),
        );
        let mut sealed = [0u8; KEY_SIZE + TAG_SIZE];
        sealed[..KEY_SIZE].copy_from_slice(&buf);
        buf.zeroize();
        // Encrypting 32 bytes cannot exceed the AEAD's limits; the error
        // is kept typed rather than assumed away.
        let tag = tag.map_err(|_| CryptoError::Wrap {
            context: context.to_owned(),
        })?;
        sealed[KEY_SIZE..].copy_from_slice(&tag);
        Ok(Self { nonce, sealed })
    }

    pub fn unwrap(&self, storage_key: &[u8; KEY_SIZE], context: &str) -> Result<DataKey> {
        let aead = XChaCha20Poly1305::new(storage_key.into());
        let mut buf = [0u8; KEY_SIZE];
        buf.copy_from_slice(&self.sealed[..KEY_SIZE]);
        let mut tag = [0u8; TAG_SIZE];
        tag.copy_from_slice(&self.sealed[KEY_SIZE..]);
        let opened = aead.decrypt_inout_detached(
            &XNonce::from(self.nonce),
            &wrap_aad(context),
            (&mut buf[..]).into(),
            &Tag::from(tag),
        );
        let key = opened.map(|()| DataKey::from_bytes(buf));
        buf.zeroize();
        key.map_err(|_| CryptoError::Unwrap {
            context: context.to_owned(),
        })
    }
}
