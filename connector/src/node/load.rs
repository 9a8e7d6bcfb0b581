//! Reading and checking a node directory before anything is opened or
//! listens, so a misconfiguration is one clear error, not a node that runs
//! but cannot join.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use time::OffsetDateTime;

use super::OpenError;
use crate::config::{CONFIG_FILE, NodeConfig, resolve};
use crate::identity::{Anchor, Checks, MembershipCredential, NodeKey, PeerId, VerifyError};

/// A node directory whose files were read and checked; nothing is opened
/// yet. [`Node::start`](super::Node::start) opens it.
pub struct NodeDir {
    pub dir: PathBuf,
    pub config: NodeConfig,
    pub key: NodeKey,
    pub credential: MembershipCredential,
    pub anchors: Vec<ed25519_dalek::VerifyingKey>,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
}

impl NodeDir {
    /// Reads `config.toml`, the node key, the trust anchors and the
    /// membership credential of `dir`, and checks the addresses. Each
    /// error names the file and says how to fix it.
    pub fn load(dir: &Path) -> Result<NodeDir, OpenError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            return Err(OpenError::NoConfig {
                dir: dir.to_owned(),
            });
        }
        let config = NodeConfig::load(&config_path)?;
        config.check_api().map_err(|source| OpenError::Api {
            config: config_path.clone(),
            source,
        })?;
        let key = NodeKey::load(&resolve(dir, &config.node_key))?;

        let mut anchors = Vec::new();
        for a in &config.anchors {
            let path = resolve(dir, a);
            if !path.exists() {
                return Err(OpenError::NoAnchor { path });
            }
            anchors.push(Anchor::load(&path)?.key);
        }
        if anchors.is_empty() {
            return Err(OpenError::NoAnchors {
                config: config_path,
            });
        }

        let cred_path = resolve(dir, &config.credential);
        if !cred_path.exists() {
            return Err(OpenError::NoCredential {
                path: cred_path,
                peer_id: key.peer_id(),
            });
        }
        let credential = MembershipCredential::read(&cred_path)?;

        let mut listen = Vec::new();
        for l in &config.listen {
            let bad = |reason: String| OpenError::Address {
                config: config_path.clone(),
                key: "listen",
                addr: l.clone(),
                reason,
            };
            bayspace_ipv6::listen::ListenAddr::parse_multiaddr(l, false)
                .map_err(|e| bad(e.to_string()))?;
            listen.push(l.parse::<Multiaddr>().map_err(|e| bad(e.to_string()))?);
        }
        let mut bootstrap = Vec::new();
        for b in &config.bootstrap {
            let bad = |reason: String| OpenError::Address {
                config: config_path.clone(),
                key: "bootstrap",
                addr: b.clone(),
                reason,
            };
            let addr: Multiaddr = b
                .parse()
                .map_err(|e: libp2p::multiaddr::Error| bad(e.to_string()))?;
            if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                return Err(bad("it must end in /p2p/<PeerId>".into()));
            }
            bootstrap.push(addr);
        }
        Ok(NodeDir {
            dir: dir.to_owned(),
            config,
            key,
            credential,
            anchors,
            listen,
            bootstrap,
        })
    }

    pub fn path(&self, p: &Path) -> PathBuf {
        resolve(&self.dir, p)
    }

    /// The membership credential must be valid now (judged with the
    /// revocation list the store holds) and name the institution and
    /// region the config does: agreements name the institution as its
    /// credential does, and the catalog as the config does.
    pub(super) fn check_credential(
        &self,
        revocations: Option<&crate::identity::RevocationList>,
        now: OffsetDateTime,
    ) -> Result<(), OpenError> {
        let peer_id = self.key.peer_id();
        let checks = Checks {
            peer_id: Some(peer_id),
            revocations,
            ..Checks::default()
        };
        let path = self.path(&self.config.credential);
        if let Err(source) = self.credential.verify(&self.anchors, now, &checks) {
            let hint = credential_hint(&source, &peer_id);
            return Err(OpenError::Credential { path, source, hint });
        }
        let body = self.credential.body();
        if body.institution != self.config.institution || body.region != self.config.region {
            return Err(OpenError::Mismatch {
                config: self.dir.join(CONFIG_FILE),
                config_names: format!("`{}` in {}", self.config.institution, self.config.region),
                credential: path,
                credential_names: format!("`{}` in {}", body.institution, body.region),
            });
        }
        Ok(())
    }
}

/// The fix for a node credential that does not verify.
fn credential_hint(e: &VerifyError, peer_id: &PeerId) -> String {
    match e {
        VerifyError::UnknownIssuer { .. } | VerifyError::BadSignature { .. } => {
            "check that `anchors` lists the public key of the operator who issued it".into()
        }
        VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => {
            format!("ask the data space operator for a credential for PeerId {peer_id} valid now")
        }
        VerifyError::Revoked { .. } => {
            "this node's membership was revoked; contact the data space operator".into()
        }
        VerifyError::PeerIdMismatch { .. } => format!(
            "it was issued for another node key; send this node's PeerId {peer_id} to the operator"
        ),
        _ => "contact the data space operator".into(),
    }
}
