//! Key files, the node key and the trust anchor's key.
//!
//! Both the node and the trust anchor hold one ed25519 seed. The node's seed
//! is also its libp2p identity: the PeerId is derived from the same key, and
//! since an ed25519 PeerId embeds the public key, anyone holding a PeerId can
//! check the node's signatures without another lookup.

use std::path::Path;

use bayspace_contracts::signing::b64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::files::{self, FileError, Overwrite};

pub const SECRET_KEY_FORMAT: &str = "bayspace/ed25519-secret/1";
pub const PUBLIC_KEY_FORMAT: &str = "bayspace/ed25519-public/1";

/// File names inside an authority directory.
pub const AUTHORITY_KEY_FILE: &str = "authority.key";
pub const AUTHORITY_PUB_FILE: &str = "authority.pub";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    format: String,
    #[serde(with = "b64")]
    seed: [u8; 32],
}

impl Drop for SecretKeyFile {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    format: String,
    #[serde(with = "b64")]
    key: [u8; 32],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
    #[error("libp2p refused the ed25519 key: {0}")]
    Libp2p(String),
}

/// Why a PeerId does not yield an ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerKeyError {
    #[error(
        "PeerId {0} does not embed its public key (it is a hash); Bayspace nodes use ed25519 PeerIds"
    )]
    NotInline(PeerId),
    #[error("PeerId {0} does not hold an ed25519 public key")]
    NotEd25519(PeerId),
}

fn random_seed() -> Result<[u8; 32], KeyError> {
    Ok(crate::random::bytes()?)
}

fn write_secret(path: &Path, key: &SigningKey) -> Result<(), FileError> {
    let doc = SecretKeyFile {
        format: SECRET_KEY_FORMAT.into(),
        seed: key.to_bytes(),
    };
    let text = Zeroizing::new(to_json(&doc));
    files::write_atomic(path, &text, 0o600, Overwrite::Refuse)
}

fn read_secret(path: &Path) -> Result<SigningKey, FileError> {
    let text = files::read_secret_text(path)?;
    let doc: SecretKeyFile = files::parse_document(&text, path, SECRET_KEY_FORMAT)?;
    Ok(SigningKey::from_bytes(&doc.seed))
}

fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    // Serialising these plain structs to a Vec cannot fail; an empty document
    // would be refused on read, never silently accepted.
    let mut out = serde_json::to_vec_pretty(doc).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The ed25519 public key embedded in a PeerId.
pub fn key_of_peer_id(peer: &PeerId) -> Result<VerifyingKey, PeerKeyError> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return Err(PeerKeyError::NotInline(*peer));
    }
    let pk = libp2p_identity::PublicKey::try_decode_protobuf(mh.digest())
        .map_err(|_| PeerKeyError::NotEd25519(*peer))?;
    let ed = pk
        .try_into_ed25519()
        .map_err(|_| PeerKeyError::NotEd25519(*peer))?;
    VerifyingKey::from_bytes(&ed.to_bytes()).map_err(|_| PeerKeyError::NotEd25519(*peer))
}

/// A node's identity: one ed25519 seed, used both for Bayspace signatures
/// and as the libp2p key.
pub struct NodeKey {
    signing: SigningKey,
    keypair: libp2p_identity::Keypair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, KeyError> {
        let keypair = libp2p_identity::Keypair::ed25519_from_bytes(seed)
            .map_err(|e| KeyError::Libp2p(e.to_string()))?;
        Ok(NodeKey {
            signing: SigningKey::from_bytes(&seed),
            keypair,
        })
    }

    pub fn generate() -> Result<Self, KeyError> {
        Self::from_seed(random_seed()?)
    }

    /// Load the key, refusing a file that group or others may read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_seed(read_secret(path)?.to_bytes())
    }

    /// A key file's text (as `load` reads it) that is not on disk, e.g.
    /// out of a backup; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let doc: SecretKeyFile = files::parse_document(text, path, SECRET_KEY_FORMAT)?;
        Self::from_seed(doc.seed)
    }

    /// Generate a key and write it with mode 0600; refuses an existing file.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let key = Self::generate()?;
        write_secret(path, &key.signing)?;
        Ok(key)
    }

    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        self.keypair.clone()
    }
}

/// The trust anchor's key pair, as the data space operator holds it.
pub struct AuthorityKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityKey")
            .field(
                "public",
                &b64::encode(self.signing.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl AuthorityKey {
    /// Create `DIR/authority.key` (0600) and `DIR/authority.pub`; refuses to
    /// overwrite either. `name` labels the public file for humans.
    pub fn init(dir: &Path, name: Option<&str>) -> Result<Self, KeyError> {
        let pub_path = dir.join(AUTHORITY_PUB_FILE);
        if pub_path.exists() {
            return Err(FileError::Exists { path: pub_path }.into());
        }
        let signing = SigningKey::from_bytes(&random_seed()?);
        write_secret(&dir.join(AUTHORITY_KEY_FILE), &signing)?;
        let anchor = Anchor {
            key: signing.verifying_key(),
            name: name.map(str::to_owned),
        };
        anchor.write(&pub_path, Overwrite::Refuse)?;
        Ok(AuthorityKey { signing })
    }

    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        Ok(AuthorityKey {
            signing: read_secret(&dir.join(AUTHORITY_KEY_FILE))?,
        })
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// A trust anchor's public key as nodes configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub key: VerifyingKey,
    /// A label for humans; not signed, not used in any decision.
    pub name: Option<String>,
}

impl Anchor {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = files::read_text(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, FileError> {
        let doc: PublicKeyFile = files::parse_document(text, path, PUBLIC_KEY_FORMAT)?;
        let key = VerifyingKey::from_bytes(&doc.key).map_err(|e| FileError::Malformed {
            path: path.to_owned(),
            field: "key".into(),
            reason: e.to_string(),
        })?;
        Ok(Anchor {
            key,
            name: doc.name,
        })
    }

    /// Write the public file (mode 0644).
    pub fn write(&self, path: &Path, overwrite: Overwrite) -> Result<(), FileError> {
        let doc = PublicKeyFile {
            format: PUBLIC_KEY_FORMAT.into(),
            key: self.key.to_bytes(),
            name: self.name.clone(),
        };
        files::write_atomic(path, &to_json(&doc), 0o644, overwrite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_key_round_trips_and_derives_the_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        let k = NodeKey::create(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = NodeKey::load(&p).unwrap();
        assert_eq!(k.peer_id(), again.peer_id());
        assert_eq!(k.verifying_key(), again.verifying_key());
        // The PeerId embeds exactly the key that signs.
        assert_eq!(key_of_peer_id(&k.peer_id()).unwrap(), k.verifying_key());
        assert_eq!(k.libp2p_keypair().public().to_peer_id(), k.peer_id());
        assert!(matches!(
            NodeKey::create(&p),
            Err(KeyError::File(FileError::Exists { .. }))
        ));
    }

    #[test]
    fn node_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        NodeKey::create(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = NodeKey::load(&p).unwrap_err();
        assert!(
            matches!(
                e,
                KeyError::File(FileError::InsecureMode { mode: 0o644, .. })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn key_files_are_strict() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        let seed = b64::encode(&[1; 32]);
        let write = |text: String| {
            let _ = fs::remove_file(&p);
            files::write_atomic(&p, text.as_bytes(), 0o600, Overwrite::Refuse).unwrap();
        };
        write(format!(
            r#"{{"format":"bayspace/ed25519-secret/2","seed":"{seed}"}}"#
        ));
        assert!(matches!(
            NodeKey::load(&p),
            Err(KeyError::File(FileError::UnknownFormat { .. }))
        ));
        write(format!(
            r#"{{"format":"bayspace/ed25519-secret/1","seed":"{seed}","comment":"x"}}"#
        ));
        let e = NodeKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("comment"), "{e}");
        write(r#"{"format":"bayspace/ed25519-secret/1","seed":"AAAA"}"#.into());
        let e = NodeKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("seed") && e.contains("32 bytes"), "{e}");
    }

    #[test]
    fn authority_init_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let a = AuthorityKey::init(dir.path(), Some("GBA data space")).unwrap();
        let anchor = Anchor::load(&dir.path().join(AUTHORITY_PUB_FILE)).unwrap();
        assert_eq!(anchor.key, a.verifying_key());
        assert_eq!(anchor.name.as_deref(), Some("GBA data space"));
        assert_eq!(
            AuthorityKey::load(dir.path()).unwrap().verifying_key(),
            a.verifying_key()
        );
        assert!(matches!(
            AuthorityKey::init(dir.path(), None),
            Err(KeyError::File(FileError::Exists { .. }))
        ));
    }
}
