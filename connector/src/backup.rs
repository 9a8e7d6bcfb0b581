//! Backups of a node directory: one file, signed by the node key, holding a
//! consistent snapshot of the store (the audit log ends at a signed
//! checkpoint), the configuration, the membership credential, the anchors
//! and the API certificate; and, only when asked, the node's secrets (node
//! key, API key, administrator token) encrypted under a passphrase.
//!
//! # File layout
//! `MAGIC` (16 bytes) ‖ body length (u64, big-endian) ‖ body (CBOR of
//! [`Contents`]) ‖ the node's ed25519 public key (32) ‖ signature (64) over
//! [`SIGNING_CONTEXT`] ‖ everything before the signature.
//!
//! Reading checks the length, then the signature, then that the signing
//! key is the node's the backup says it is, before anything is decoded or
//! written: a truncated or altered file is refused whole.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::audit::Checkpoint;
use crate::config::{CONFIG_FILE, NodeConfig, resolve};
use crate::identity::NodeKey;
use crate::store::Snapshot;

pub const MAGIC: &[u8; 16] = b"bayspace-backup1";
pub const SIGNING_CONTEXT: &[u8] = b"bayspace/backup/1\0";
const HEADER: usize = MAGIC.len() + 8;
const TRAILER: usize = 32 + 64;
/// Largest body read back; far above any real node's store.
pub const MAX_BODY: u64 = 16 << 30;

const SALT_SIZE: usize = 16;
const NONCE_SIZE: usize = 24;
const TAG_SIZE: usize = 16;
/// Argon2id cost: 64 MiB, 3 passes, one lane.
const ARGON_MEMORY_KIB: u32 = 64 * 1024;
const ARGON_PASSES: u32 = 3;
const ARGON_LANES: u32 = 1;
const SECRETS_AAD: &[u8] = b"bayspace/backup-secrets/1";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: not a Bayspace backup (it does not start with the backup header)")]
    NotABackup { path: String },
    #[error("{path}: the backup is truncated or has bytes added: {got} bytes, {expected} expected")]
    Length {
        path: String,
        got: u64,
        expected: u64,
    },
    #[error("{path}: the backup's signature does not verify: it was altered after it was written")]
    BadSignature { path: String },
    #[error("{path}: the backup is signed by PeerId {signer}, but its contents name {named}")]
    WrongSigner {
        path: String,
        signer: String,
        named: String,
    },
    #[error("{path}: the backup's contents do not decode: {reason}")]
    Malformed { path: String, reason: String },
    #[error(
        "the passphrase does not open the backup's secrets (wrong passphrase, or they were altered)"
    )]
    WrongPassphrase,
    #[error("the backup holds no secrets (it was made without --include-key)")]
    NoSecrets,
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("cannot take a snapshot of the store: {0}")]
    Snapshot(String),
    #[error("cannot encode the backup: {0}")]
    Encode(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a file in the node directory is for; restore puts each at its
/// default name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    Config,
    Credential,
    Anchor,
    ApiCert,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    pub role: FileRole,
    pub data: ByteBuf,
}

/// Everything a backup holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contents {
    /// RFC 3339.
    pub created: String,
    pub peer_id: String,
    pub version: String,
    /// The checkpoint the snapshot's audit log ends at (JSON), if the log
    /// has any entry.
    pub checkpoint: Option<String>,
    pub files: Vec<BackupFile>,
    pub store: Snapshot,
    pub secrets: Option<SealedSecrets>,
}

impl Contents {
    pub fn new(
        peer_id: String,
        checkpoint: Option<&Checkpoint>,
        files: Vec<BackupFile>,
        store: Snapshot,
        now: OffsetDateTime,
    ) -> Result<Self, BackupError> {
        Ok(Contents {
            created: now
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| BackupError::Encode(e.to_string()))?,
            peer_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            checkpoint: checkpoint
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| BackupError::Encode(e.to_string()))?,
            files,
            store,
            secrets: None,
        })
    }

    pub fn files(&self, role: FileRole) -> impl Iterator<Item = &[u8]> {
        self.files
            .iter()
            .filter(move |f| f.role == role)
            .map(|f| f.data.as_slice())
    }
}

/// A store snapshot and the checkpoint its audit log ends at, as a running
/// node hands it to `bayspace backup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshotted {
    pub checkpoint: Option<Checkpoint>,
    pub store: Snapshot,
}

impl Snapshotted {
    /// Takes one from a live store: the audit log is checkpointed and no
    /// entry or other write lands while the snapshot is read.
    pub fn take(
        audit: &crate::audit::AuditLog,
        store: &dyn crate::store::Store,
        now: OffsetDateTime,
    ) -> Result<Self, BackupError> {
        let (checkpoint, store) = audit
            .at_checkpoint(now, || store.snapshot())
            .map_err(|e| BackupError::Snapshot(e.to_string()))?;
        Ok(Snapshotted {
            checkpoint,
            store: store.map_err(|e| BackupError::Snapshot(e.to_string()))?,
        })
    }

    pub fn to_cbor(&self) -> Result<Vec<u8>, BackupError> {
        let mut out = Vec::new();
        cbor4ii::serde::to_writer(&mut out, self)
            .map_err(|e| BackupError::Encode(e.to_string()))?;
        Ok(out)
    }

    pub fn from_cbor(bytes: &[u8]) -> Result<Self, BackupError> {
        cbor4ii::serde::from_slice(bytes).map_err(|e| BackupError::Malformed {
            path: "the node's snapshot".into(),
            reason: e.to_string(),
        })
    }
}

/// The node's secrets, in the clear; only ever inside [`SealedSecrets`].
#[derive(Serialize, Deserialize)]
pub struct Secrets {
    /// The node key file, as it was on disk.
    pub node_key: ByteBuf,
    pub api_key: Option<ByteBuf>,
    pub admin_token: Option<ByteBuf>,
}

impl Drop for Secrets {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.node_key.as_mut_slice().zeroize();
        if let Some(k) = self.api_key.as_mut() {
            k.as_mut_slice().zeroize();
        }
        if let Some(t) = self.admin_token.as_mut() {
            t.as_mut_slice().zeroize();
        }
    }
}

/// [`Secrets`] under XChaCha20-Poly1305 with a key derived from a
/// passphrase by Argon2id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    pub kdf: String,
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
    pub salt: ByteBuf,
    pub nonce: ByteBuf,
    pub ciphertext: ByteBuf,
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    memory_kib: u32,
    passes: u32,
    lanes: u32,
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let params = argon2::Params::new(memory_kib, passes, lanes, Some(32))
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    Ok(key)
}

fn random<const N: usize>() -> Result<[u8; N], BackupError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| BackupError::Random(e.to_string()))?;
    Ok(b)
}

impl SealedSecrets {
    pub fn seal(secrets: &Secrets, passphrase: &str) -> Result<Self, BackupError> {
        if passphrase.is_empty() {
            return Err(BackupError::EmptyPassphrase);
        }
        let salt: [u8; SALT_SIZE] = random()?;
        let nonce: [u8; NONCE_SIZE] = random()?;
        let key = derive(
            passphrase,
            &salt,
            ARGON_MEMORY_KIB,
            ARGON_PASSES,
            ARGON_LANES,
        )?;
        let mut buf = Zeroizing::new(Vec::new());
        cbor4ii::serde::to_writer(&mut *buf, secrets)
            .map_err(|e| BackupError::Encode(e.to_string()))?;
        let aead = XChaCha20Poly1305::new((&*key).into());
        let tag = aead
            .encrypt_inout_detached(&XNonce::from(nonce), SECRETS_AAD, buf.as_mut_slice().into())
            .map_err(|_| BackupError::Encode("encryption of the secrets failed".into()))?;
        let mut ciphertext = buf.to_vec();
        ciphertext.extend_from_slice(&tag);
        Ok(SealedSecrets {
            kdf: "argon2id".into(),
            memory_kib: ARGON_MEMORY_KIB,
            passes: ARGON_PASSES,
            lanes: ARGON_LANES,
            salt: ByteBuf::from(salt.to_vec()),
            nonce: ByteBuf::from(nonce.to_vec()),
            ciphertext: ByteBuf::from(ciphertext),
        })
    }

    pub fn open(&self, passphrase: &str) -> Result<Secrets, BackupError> {
        let malformed = |reason: &str| BackupError::Malformed {
            path: "secrets".into(),
            reason: reason.to_owned(),
        };
        if self.kdf != "argon2id" {
            return Err(malformed("unknown key derivation"));
        }
        // Bounded so that a crafted file cannot ask for all the memory.
        if self.memory_kib > 1 << 21 || self.passes > 64 || self.lanes > 16 {
            return Err(malformed("key derivation cost out of range"));
        }
        let nonce: [u8; NONCE_SIZE] = self
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| malformed("nonce size"))?;
        let split = self
            .ciphertext
            .len()
            .checked_sub(TAG_SIZE)
            .ok_or_else(|| malformed("ciphertext too short"))?;
        let key = derive(
            passphrase,
            &self.salt,
            self.memory_kib,
            self.passes,
            self.lanes,
        )?;
        let mut buf = Zeroizing::new(self.ciphertext[..split].to_vec());
        let mut tag = [0u8; TAG_SIZE];
        tag.copy_from_slice(&self.ciphertext[split..]);
        XChaCha20Poly1305::new((&*key).into())
            .decrypt_inout_detached(
                &XNonce::from(nonce),
                SECRETS_AAD,
                buf.as_mut_slice().into(),
                &Tag::from(tag),
            )
            .map_err(|_| BackupError::WrongPassphrase)?;
        cbor4ii::serde::from_slice(&buf).map_err(|e| malformed(&e.to_string()))
    }
}

/// The PeerId of the node whose key is `key`.
pub fn peer_id_of(key: &VerifyingKey) -> crate::identity::PeerId {
    match libp2p_identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()) {
        Ok(k) => libp2p_identity::PublicKey::from(k).to_peer_id(),
        // Both libraries take any 32-byte ed25519 key that decodes; a key
        // dalek accepted cannot fail here. A PeerId no node has keeps the
        // comparison failing rather than panicking.
        Err(_) => crate::identity::PeerId::random(),
    }
}

/// The signed bytes of a backup.
pub fn encode(contents: &Contents, key: &SigningKey) -> Result<Vec<u8>, BackupError> {
    let mut body = Vec::new();
    cbor4ii::serde::to_writer(&mut body, contents)
        .map_err(|e| BackupError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + body.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(key.verifying_key().as_bytes());
    let signature = key.sign(&signed_message(&out));
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

fn signed_message(signed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + signed.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(signed);
    m
}

/// Writes `bytes` to `out` whole or not at all (a temporary file beside it,
/// synced, then renamed), mode 0600: a backup holds the whole store.
pub fn write_file(out: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    crate::identity::files::write_atomic(
        out,
        bytes,
        0o600,
        crate::identity::files::Overwrite::Replace,
    )
    .map_err(|e| BackupError::Io {
        path: out.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Checks and decodes a backup; `path` only names it in errors. Returns
/// the contents and the node's public key that signed them.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(Contents, VerifyingKey), BackupError> {
    let shown = path.display().to_string();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup { path: shown });
    }
    let got = bytes.len() as u64;
    let Some(len) = bytes.get(MAGIC.len()..HEADER) else {
        return Err(BackupError::Length {
            path: shown,
            got,
            expected: (HEADER + TRAILER) as u64,
        });
    };
    let mut be = [0u8; 8];
    be.copy_from_slice(len);
    let body_len = u64::from_be_bytes(be);
    let expected = body_len
        .min(MAX_BODY)
        .saturating_add((HEADER + TRAILER) as u64);
    if body_len > MAX_BODY || got != expected {
        return Err(BackupError::Length {
            path: shown,
            got,
            expected,
        });
    }
    // The lengths are checked: these cannot go out of range.
    let body_end = HEADER + body_len as usize;
    let mut public = [0u8; 32];
    public.copy_from_slice(&bytes[body_end..body_end + 32]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&bytes[body_end + 32..]);
    let key = VerifyingKey::from_bytes(&public).map_err(|_| BackupError::BadSignature {
        path: shown.clone(),
    })?;
    key.verify_strict(
        &signed_message(&bytes[..body_end + 32]),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| BackupError::BadSignature {
        path: shown.clone(),
    })?;
    let contents: Contents = cbor4ii::serde::from_slice(&bytes[HEADER..body_end]).map_err(|e| {
        BackupError::Malformed {
            path: shown.clone(),
            reason: e.to_string(),
        }
    })?;
    let signer = peer_id_of(&key);
    if signer.to_string() != contents.peer_id {
        return Err(BackupError::WrongSigner {
            path: shown,
            signer: signer.to_string(),
            named: contents.peer_id,
        });
    }
    Ok((contents, key))
}

/// A directory built beside its final place and moved there at the end, so
/// a failed restore leaves nothing at the target.
pub struct Staging {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staging {
    /// `target` must not exist, or be an empty directory.
    pub fn new(target: &Path) -> Result<Self, BackupError> {
        if target.exists() {
            let empty = fs::read_dir(target).map_err(io(target))?.next().is_none();
            if !empty {
                return Err(BackupError::Io {
                    path: target.display().to_string(),
                    source: std::io::Error::other(
                        "the directory is not empty; restore into a new directory",
                    ),
                });
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into());
        let suffix: [u8; 8] = random()?;
        let tmp = parent.join(format!(".{name}.restoring-{}", u64::from_le_bytes(suffix)));
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(false)
            .create(&tmp)
            .map_err(io(&tmp))?;
        Ok(Staging {
            tmp,
            target: target.to_owned(),
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), BackupError> {
        let path = self.tmp.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io(&path))?;
        f.write_all(bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))
    }

    /// Moves the directory into place.
    pub fn finish(mut self) -> Result<PathBuf, BackupError> {
        if self.target.exists() {
            fs::remove_dir(&self.target).map_err(io(&self.target))?;
        }
        fs::rename(&self.tmp, &self.target).map_err(io(&self.target))?;
        self.done = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Writes the backup of the node directory `dir`: its config, credential,
/// trust anchors and API certificate, the store snapshot `snap`, and the
/// sealed secrets if given; signed with the node key, replaced whole.
pub fn write_node_backup(
    dir: &Path,
    config: &NodeConfig,
    key: &NodeKey,
    snap: Snapshotted,
    secrets: Option<SealedSecrets>,
    out: &Path,
) -> Result<Contents, BackupError> {
    let read = |path: PathBuf| fs::read(&path).map_err(io(&path)).map(ByteBuf::from);
    let mut files = vec![BackupFile {
        role: FileRole::Config,
        data: read(dir.join(CONFIG_FILE))?,
    }];
    files.push(BackupFile {
        role: FileRole::Credential,
        data: read(resolve(dir, &config.credential))?,
    });
    for a in &config.anchors {
        files.push(BackupFile {
            role: FileRole::Anchor,
            data: read(resolve(dir, a))?,
        });
    }
    // A node serving plaintext on loopback has no certificate.
    if let Ok(cert) = fs::read(resolve(dir, &config.api_cert)) {
        files.push(BackupFile {
            role: FileRole::ApiCert,
            data: ByteBuf::from(cert),
        });
    }
    let mut contents = Contents::new(
        key.peer_id().to_string(),
        snap.checkpoint.as_ref(),
        files,
        snap.store,
        OffsetDateTime::now_utc(),
    )?;
    contents.secrets = secrets;
    let bytes = encode(&contents, key.signing_key())?;
    write_file(out, &bytes)?;
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SnapshotTree;

    fn sample(key: &SigningKey) -> Contents {
        let peer = peer_id_of(&key.verifying_key());
        Contents::new(
            peer.to_string(),
            None,
            vec![BackupFile {
                role: FileRole::Config,
                data: ByteBuf::from(b"institution = \"x\"".to_vec()),
            }],
            Snapshot {
                trees: vec![SnapshotTree {
                    name: "t".into(),
                    entries: vec![(ByteBuf::from(vec![1]), ByteBuf::from(vec![2, 3]))],
                }],
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let contents = sample(&key);
        let bytes = encode(&contents, &key).unwrap();
        let (back, signer) = decode(&bytes, Path::new("b")).unwrap();
        assert_eq!(back, contents);
        assert_eq!(signer, key.verifying_key());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad, Path::new("b")).is_err(), "byte {i}");
        }
        for cut in [0, 10, HEADER, bytes.len() / 2, bytes.len() - 1] {
            let err = decode(&bytes[..cut], Path::new("b")).unwrap_err();
            assert!(
                matches!(
                    err,
                    BackupError::Length { .. } | BackupError::NotABackup { .. }
                ),
                "{cut}: {err}"
            );
        }
    }

    #[test]
    fn a_backup_re_signed_by_another_key_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let bytes = encode(&sample(&key), &other).unwrap();
        assert!(matches!(
            decode(&bytes, Path::new("b")),
            Err(BackupError::WrongSigner { .. })
        ));
    }

    #[test]
    fn secrets_open_only_with_the_passphrase() {
        let secrets = Secrets {
            node_key: ByteBuf::from(b"node key file".to_vec()),
            api_key: None,
            admin_token: Some(ByteBuf::from(b"token".to_vec())),
        };
        let sealed = SealedSecrets::seal(&secrets, "correct horse").unwrap();
        let opened = sealed.open("correct horse").unwrap();
        assert_eq!(opened.node_key.as_slice(), b"node key file");
        assert!(matches!(
            sealed.open("wrong"),
            Err(BackupError::WrongPassphrase)
        ));
        assert!(matches!(
            SealedSecrets::seal(&secrets, ""),
            Err(BackupError::EmptyPassphrase)
        ));
    }
}
