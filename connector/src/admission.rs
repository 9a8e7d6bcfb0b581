//! The node's admission policy: a peer is a member when it presents a
//! membership credential that a configured trust anchor signed, that is
//! valid now, is not revoked, names the peer's PeerId and covers the address
//! it connects from.
//!
//! The current revocation list lives here too, because every admission
//! decision reads it: a newer list (from the operator over gRPC or from a
//! member by gossip) replaces it, is persisted before it takes effect, and
//! the caller then asks the swarm to re-check every admitted peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bayspace_contracts::region::Region;
use ed25519_dalek::VerifyingKey;
use libp2p::PeerId;
use time::OffsetDateTime;

use crate::identity::{
    Checks, FileError, MembershipCredential, RevocationBody, RevocationList, VerifyError,
};
use crate::p2p::{Admission, AdmissionRefusal, AdmittedPeer};
use crate::store::{Store, StoreError, TreeName, TypedTree};

/// Holds the current revocation list under [`CURRENT_KEY`], as its JSON text.
pub const REVOCATIONS_TREE: TreeName = TreeName::new("revocations");
const CURRENT_KEY: &str = "current";

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("revocation list storage: {0}")]
    Store(#[from] StoreError),
    #[error("revocation list is malformed: {0}")]
    Malformed(#[from] FileError),
    #[error("revocation list refused: {0}")]
    Refused(#[from] VerifyError),
    #[error("the revocation list lock was poisoned by a panic")]
    Poisoned,
}

/// What became of a revocation list offered to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// Newer than the one held: persisted and now in force.
    Accepted(RevocationBody),
    /// Genuine but not newer than the list in force (sequence `current`).
    NotNewer { current: u64 },
}

pub struct MembershipAdmission {
    own_credential: Vec<u8>,
    anchors: Vec<VerifyingKey>,
    revocations: RwLock<Option<RevocationList>>,
    stored: TypedTree<String, String>,
    store: Arc<dyn Store>,
    /// The credentials of peers admitted so far: the region for status
    /// displays, the serial to find who a revocation list revokes, the whole
    /// credential to verify the researcher credentials a member's node
    /// issues. Bounded by the number of credentials the anchors issued,
    /// which is small.
    members: Mutex<HashMap<PeerId, MembershipCredential>>,
}

impl MembershipAdmission {
    /// Opens the policy with the node's own credential and the anchors, and
    /// loads the persisted revocation list. A stored list that no configured
    /// anchor signed (the anchors were changed) is set aside with a warning:
    /// it can no longer be trusted, and the next genuine list replaces it.
    pub fn open(
        own_credential: &MembershipCredential,
        anchors: Vec<VerifyingKey>,
        store: Arc<dyn Store>,
    ) -> Result<Self, AdmissionError> {
        let stored: TypedTree<String, String> = TypedTree::open(&*store, REVOCATIONS_TREE)?;
        let current = match stored.get(&CURRENT_KEY.to_owned())? {
            None => None,
            Some(text) => {
                let list = RevocationList::from_json(&text, Path::new("<store:revocations>"))?;
                match list.verify(&anchors) {
                    Ok(_) => Some(list),
                    Err(e) => {
                        tracing::warn!(error = %e, "stored revocation list set aside");
                        None
                    }
                }
            }
        };
        Ok(MembershipAdmission {
            own_credential: own_credential.to_json().into_bytes(),
            anchors,
            revocations: RwLock::new(current),
            stored,
            store,
            members: Mutex::new(HashMap::new()),
        })
    }

    pub fn anchors(&self) -> &[VerifyingKey] {
        &self.anchors
    }

    /// The revocation list in force.
    pub fn revocations(&self) -> Result<Option<RevocationList>, AdmissionError> {
        Ok(self
            .revocations
            .read()
            .map_err(|_| AdmissionError::Poisoned)?
            .clone())
    }

    /// The region named in the credential of an admitted peer.
    /// Peers seen with a credential whose serial the current revocation
    /// list revokes: their descriptors leave the catalog with them.
    pub fn revoked_peers(&self) -> Vec<PeerId> {
        let Ok(Some(list)) = self.revocations() else {
            return Vec::new();
        };
        let Ok(members) = self.members.lock() else {
            return Vec::new();
        };
        members
            .iter()
            .filter(|(_, c)| list.is_revoked(c.body().serial))
            .map(|(peer, _)| *peer)
            .collect()
    }

    pub fn region_of(&self, peer: &PeerId) -> Option<Region> {
        self.members.lock().ok()?.get(peer).map(|c| c.body().region)
    }

    /// The membership credential a peer was last admitted with. Whether the
    /// peer is admitted *now* is the swarm's to say.
    pub fn credential_of(&self, peer: &PeerId) -> Option<MembershipCredential> {
        self.members.lock().ok()?.get(peer).cloned()
    }

    /// Verifies a revocation list (its JSON bytes) and puts it in force if it
    /// is newer than the current one; it is on disk before this returns
    /// `Accepted`. The caller then re-checks the admitted peers.
    pub fn offer_revocations(&self, bytes: &[u8]) -> Result<RevocationOutcome, AdmissionError> {
        let text = std::str::from_utf8(bytes).map_err(|e| FileError::Malformed {
            path: "<revocation list>".into(),
            field: "format".into(),
            reason: format!("not UTF-8: {e}"),
        })?;
        let candidate = RevocationList::from_json(text, Path::new("<revocation list>"))?;
        let mut current = self
            .revocations
            .write()
            .map_err(|_| AdmissionError::Poisoned)?;
        let mut next = current.clone();
        if !RevocationList::accept_newer(&mut next, candidate.clone(), &self.anchors)? {
            let held = next.as_ref().map_or(0, |l| l.body().seq);
            return Ok(RevocationOutcome::NotNewer { current: held });
        }
        self.stored
            .insert(&CURRENT_KEY.to_owned(), &candidate.to_json())?;
        self.store.flush()?;
        let body = candidate.body().clone();
        *current = Some(candidate);
        Ok(RevocationOutcome::Accepted(body))
    }
}

/// The refusal a peer is told about and the audit log records; the
/// authenticity failures keep the verifier's own wording.
fn refusal(e: VerifyError, remote: IpAddr) -> AdmissionRefusal {
    match e {
        VerifyError::Expired { .. } => AdmissionRefusal::Expired,
        VerifyError::Revoked { .. } => AdmissionRefusal::Revoked(e.to_string()),
        VerifyError::PeerIdMismatch { expected, .. } => AdmissionRefusal::WrongPeer(*expected),
        VerifyError::AddressOutsidePrefixes { .. } => {
            AdmissionRefusal::AddressOutsidePrefixes(remote)
        }
        other => AdmissionRefusal::Untrusted(other.to_string()),
    }
}

impl Admission for MembershipAdmission {
    fn check(
        &self,
        peer: &PeerId,
        remote: IpAddr,
        credential: &[u8],
        now: SystemTime,
    ) -> Result<AdmittedPeer, AdmissionRefusal> {
        let text = std::str::from_utf8(credential)
            .map_err(|e| AdmissionRefusal::Malformed(format!("not UTF-8: {e}")))?;
        let cred = MembershipCredential::from_json(text, Path::new("<peer credential>"))
            .map_err(|e| AdmissionRefusal::Malformed(e.to_string()))?;
        let revocations = self
            .revocations
            .read()
            .map_err(|_| AdmissionRefusal::Untrusted("revocation list unavailable".into()))?;
        let checks = Checks {
            peer_id: Some(*peer),
            addr: Some(remote),
            revocations: revocations.as_ref(),
            role: None,
        };
        let body = cred
            .verify(&self.anchors, OffsetDateTime::from(now), &checks)
            .map_err(|e| refusal(e, remote))?;
        let admitted = AdmittedPeer {
            peer_id: *peer,
            institution: body.institution.clone(),
            expires_at: SystemTime::from(body.not_after),
        };
        drop(revocations);
        if let Ok(mut members) = self.members.lock() {
            members.insert(*peer, cred);
        }
        Ok(admitted)
    }

    fn own_credential(&self) -> Vec<u8> {
        self.own_credential.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthorityKey, MemberRole, MembershipBody, NodeKey};
    use crate::store::SledStore;
    use std::collections::BTreeSet;
    use time::Duration;

    struct Fixture {
        anchor: AuthorityKey,
        node: NodeKey,
        store: Arc<dyn Store>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            anchor: AuthorityKey::init(dir.path(), None).unwrap(),
            node: NodeKey::generate().unwrap(),
            store: Arc::new(SledStore::temporary().unwrap()),
            _dir: dir,
        }
    }

    fn now() -> OffsetDateTime {
        crate::identity::timestamp::whole_seconds(OffsetDateTime::now_utc())
    }

    fn credential(
        signer: &AuthorityKey,
        serial: u64,
        peer: PeerId,
        prefix: &str,
    ) -> MembershipCredential {
        let body = MembershipBody {
            serial,
            institution: format!("Institution {serial}"),
            region: "hk".parse().unwrap(),
            peer_id: peer,
            prefixes: vec![prefix.parse().unwrap()],
            roles: BTreeSet::from([MemberRole::Provider]),
            not_before: now() - Duration::hours(1),
            not_after: now() + Duration::days(1),
        };
        MembershipCredential::sign(body, signer.signing_key()).unwrap()
    }

    fn revocations(signer: &AuthorityKey, seq: u64, revoked: &[u64]) -> Vec<u8> {
        RevocationList::sign(
            RevocationBody {
                seq,
                issued_at: now(),
                revoked: revoked.iter().copied().collect(),
            },
            signer.signing_key(),
        )
        .unwrap()
        .to_json()
        .into_bytes()
    }

    fn admission(f: &Fixture) -> MembershipAdmission {
        let own = credential(&f.anchor, 1, f.node.peer_id(), "2001:db8::/48");
        MembershipAdmission::open(&own, vec![f.anchor.verifying_key()], f.store.clone()).unwrap()
    }

    #[test]
    fn admits_a_member_and_refuses_with_reasons() {
        let f = fixture();
        let adm = admission(&f);
        let peer = NodeKey::generate().unwrap().peer_id();
        let ip: IpAddr = "2001:db8:1::5".parse().unwrap();
        let cred = credential(&f.anchor, 2, peer, "2001:db8:1::/48").to_json();
        let t = SystemTime::now();
        let ok = adm.check(&peer, ip, cred.as_bytes(), t).unwrap();
        assert_eq!(ok.institution, "Institution 2");
        assert!(ok.expires_at > t);
        assert_eq!(adm.region_of(&peer), Some("hk".parse().unwrap()));

        let outside: IpAddr = "2001:db8:2::5".parse().unwrap();
        assert_eq!(
            adm.check(&peer, outside, cred.as_bytes(), t),
            Err(AdmissionRefusal::AddressOutsidePrefixes(outside))
        );
        let other = NodeKey::generate().unwrap().peer_id();
        assert_eq!(
            adm.check(&other, ip, cred.as_bytes(), t),
            Err(AdmissionRefusal::WrongPeer(other))
        );
        let later = t + std::time::Duration::from_secs(3 * 86_400);
        assert_eq!(
            adm.check(&peer, ip, cred.as_bytes(), later),
            Err(AdmissionRefusal::Expired)
        );
        let forger_dir = tempfile::tempdir().unwrap();
        let forger = AuthorityKey::init(forger_dir.path(), None).unwrap();
        let forged = credential(&forger, 2, peer, "2001:db8:1::/48").to_json();
        assert!(matches!(
            adm.check(&peer, ip, forged.as_bytes(), t),
            Err(AdmissionRefusal::Untrusted(_))
        ));
        assert!(matches!(
            adm.check(&peer, ip, b"{}", t),
            Err(AdmissionRefusal::Malformed(_))
        ));
    }

    #[test]
    fn newer_revocation_lists_take_effect_and_persist() {
        let f = fixture();
        let adm = admission(&f);
        let peer = NodeKey::generate().unwrap().peer_id();
        let ip: IpAddr = "2001:db8:1::5".parse().unwrap();
        let cred = credential(&f.anchor, 2, peer, "2001:db8:1::/48").to_json();
        let t = SystemTime::now();

        let out = adm
            .offer_revocations(&revocations(&f.anchor, 1, &[2]))
            .unwrap();
        assert!(matches!(out, RevocationOutcome::Accepted(ref b) if b.seq == 1));
        assert!(matches!(
            adm.check(&peer, ip, cred.as_bytes(), t),
            Err(AdmissionRefusal::Revoked(_))
        ));
        // Replayed or older lists change nothing.
        assert_eq!(
            adm.offer_revocations(&revocations(&f.anchor, 0, &[]))
                .unwrap(),
            RevocationOutcome::NotNewer { current: 1 }
        );
        // A list from another key is refused.
        let other_dir = tempfile::tempdir().unwrap();
        let other = AuthorityKey::init(other_dir.path(), None).unwrap();
        assert!(matches!(
            adm.offer_revocations(&revocations(&other, 5, &[])),
            Err(AdmissionError::Refused(VerifyError::UnknownIssuer { .. }))
        ));
        assert!(matches!(
            adm.offer_revocations(b"not json"),
            Err(AdmissionError::Malformed(_))
        ));

        // A restart loads the list in force.
        let again = admission(&f);
        assert_eq!(again.revocations().unwrap().unwrap().body().seq, 1);
        let refused = again.check(&peer, ip, cred.as_bytes(), t);
        assert!(
            matches!(&refused, Err(AdmissionRefusal::Revoked(why)) if why.contains("serial 2")),
            "{refused:?}"
        );
    }
}
