//! Admission: who may use this node's services. The decision itself belongs to
//! the node (credentials, revocations, address plan); this module keeps the
//! per-peer state that makes the decision stick until the peer leaves, its
//! credential expires or the node asks for a recheck.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::protocol::MAX_CREDENTIAL_BYTES;

/// The node's admission policy, consulted for every peer that connects.
pub trait Admission: Send + Sync + 'static {
    /// Decides whether `peer`, connected from `remote`, is a member, given the
    /// credential it presented. `now` is passed so the decision is testable.
    fn check(
        &self,
        peer: &PeerId,
        remote: IpAddr,
        credential: &[u8],
        now: SystemTime,
    ) -> Result<AdmittedPeer, AdmissionRefusal>;

    /// The credential this node presents to its peers.
    fn own_credential(&self) -> Vec<u8>;
}

/// A peer that passed admission, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedPeer {
    pub peer_id: PeerId,
    pub institution: String,
    pub expires_at: SystemTime,
}

/// Why a peer was not admitted (or no longer is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    #[error("credential is malformed: {0}")]
    Malformed(String),
    #[error("credential is not issued by a trusted authority: {0}")]
    Untrusted(String),
    #[error("credential expired")]
    Expired,
    #[error("credential is revoked: {0}")]
    Revoked(String),
    #[error("credential was issued to another peer id, not {0}")]
    WrongPeer(PeerId),
    #[error("remote address {0} is outside the institution's prefixes")]
    AddressOutsidePrefixes(IpAddr),
    #[error("credential is {len} bytes, more than the {max} allowed")]
    CredentialTooLarge { len: usize, max: usize },
    #[error("remote address {0} carries no IP address")]
    NoIpAddress(Multiaddr),
    #[error("no credential received within {0:?} of connecting")]
    NoCredential(Duration),
}

/// Outcome of judging a credential against the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admitted(AdmittedPeer),
    AlreadyAdmitted,
    Refused(AdmissionRefusal),
    /// Refused earlier on this connection; nothing new to do.
    AlreadyRefused,
    /// Not connected (a late message after the peer left).
    Unknown,
}

struct Admitted {
    info: AdmittedPeer,
    credential: Vec<u8>,
    remote: Multiaddr,
}

struct Pending {
    remote: Multiaddr,
    deadline: Instant,
}

/// Admission state of every connected peer. Entries live only while the peer
/// is connected, so the table is bounded by the connection limits.
#[derive(Default)]
pub(crate) struct PeerTable {
    pending: HashMap<PeerId, Pending>,
    admitted: HashMap<PeerId, Admitted>,
    refused: HashSet<PeerId>,
    refusals: u64,
}

impl PeerTable {
    /// Records a new connection; true when admission must start for `peer`.
    pub(crate) fn connected(&mut self, peer: PeerId, remote: Multiaddr, deadline: Instant) -> bool {
        if self.admitted.contains_key(&peer)
            || self.pending.contains_key(&peer)
            || self.refused.contains(&peer)
        {
            return false;
        }
        self.pending.insert(peer, Pending { remote, deadline });
        true
    }

    /// Forgets everything about a peer whose last connection closed.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.pending.remove(peer);
        self.admitted.remove(peer);
        self.refused.remove(peer);
    }

    pub(crate) fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admitted.contains_key(peer)
    }

    /// The remote address of the connection a peer was admitted on, while
    /// it is admitted.
    pub(crate) fn admitted_from(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.admitted.get(peer).map(|a| a.remote.clone())
    }

    pub(crate) fn admitted(&self) -> Vec<AdmittedPeer> {
        self.admitted.values().map(|a| a.info.clone()).collect()
    }

    pub(crate) fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Judges a credential the peer presented.
    pub(crate) fn judge(
        &mut self,
        admission: &dyn Admission,
        peer: PeerId,
        credential: &[u8],
        now: SystemTime,
    ) -> Verdict {
        if self.admitted.contains_key(&peer) {
            return Verdict::AlreadyAdmitted;
        }
        if self.refused.contains(&peer) {
            return Verdict::AlreadyRefused;
        }
        let Some(pending) = self.pending.remove(&peer) else {
            return Verdict::Unknown;
        };
        match decide(admission, peer, &pending.remote, credential, now) {
            Ok(info) => {
                self.admitted.insert(
                    peer,
                    Admitted {
                        info: info.clone(),
                        credential: credential.to_vec(),
                        remote: pending.remote,
                    },
                );
                Verdict::Admitted(info)
            }
            Err(reason) => {
                self.refuse(peer);
                Verdict::Refused(reason)
            }
        }
    }

    /// Refuses pending peers that presented nothing before their deadline.
    pub(crate) fn refuse_overdue(&mut self, now: Instant) -> Vec<PeerId> {
        let overdue: Vec<PeerId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &overdue {
            self.pending.remove(peer);
            self.refuse(*peer);
        }
        overdue
    }

    /// Re-checks admitted peers (all, or only those whose credential expired by
    /// `now`) with their stored credential; returns those now refused.
    pub(crate) fn recheck(
        &mut self,
        admission: &dyn Admission,
        now: SystemTime,
        only_expired: bool,
    ) -> Vec<(PeerId, AdmissionRefusal)> {
        let mut refused = Vec::new();
        for (peer, entry) in &mut self.admitted {
            if only_expired && entry.info.expires_at > now {
                continue;
            }
            match decide(admission, *peer, &entry.remote, &entry.credential, now) {
                Ok(info) => entry.info = info,
                Err(reason) => refused.push((*peer, reason)),
            }
        }
        for (peer, _) in &refused {
            self.admitted.remove(peer);
            self.refuse(*peer);
        }
        refused
    }

    fn refuse(&mut self, peer: PeerId) {
        self.refused.insert(peer);
        self.refusals += 1;
    }
}

/// One admission decision, with the checks the p2p layer owns around the node's.
fn decide(
    admission: &dyn Admission,
    peer: PeerId,
    remote: &Multiaddr,
    credential: &[u8],
    now: SystemTime,
) -> Result<AdmittedPeer, AdmissionRefusal> {
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(AdmissionRefusal::CredentialTooLarge {
            len: credential.len(),
            max: MAX_CREDENTIAL_BYTES,
        });
    }
    let ip = remote_ip(remote).ok_or_else(|| AdmissionRefusal::NoIpAddress(remote.clone()))?;
    let info = admission.check(&peer, ip, credential, now)?;
    if info.peer_id != peer {
        return Err(AdmissionRefusal::WrongPeer(peer));
    }
    if info.expires_at <= now {
        return Err(AdmissionRefusal::Expired);
    }
    Ok(info)
}

fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Admits `b"ok"` for one hour, refuses everything else; can be told to refuse all.
    struct Fake {
        refuse_all: AtomicBool,
    }

    impl Admission for Fake {
        fn check(
            &self,
            peer: &PeerId,
            _remote: IpAddr,
            credential: &[u8],
            now: SystemTime,
        ) -> Result<AdmittedPeer, AdmissionRefusal> {
            if self.refuse_all.load(Ordering::SeqCst) {
                return Err(AdmissionRefusal::Revoked("all".into()));
            }
            if credential != b"ok" {
                return Err(AdmissionRefusal::Malformed("not ok".into()));
            }
            Ok(AdmittedPeer {
                peer_id: *peer,
                institution: "uni".into(),
                expires_at: now + Duration::from_secs(3600),
            })
        }
        fn own_credential(&self) -> Vec<u8> {
            b"ok".to_vec()
        }
    }

    fn fake() -> Fake {
        Fake {
            refuse_all: AtomicBool::new(false),
        }
    }

    fn addr() -> Multiaddr {
        "/ip6/::1/tcp/4001".parse().unwrap()
    }

    #[test]
    fn admits_once_and_ignores_repeats() {
        let (adm, mut t, peer, now) = (
            fake(),
            PeerTable::default(),
            PeerId::random(),
            SystemTime::now(),
        );
        assert!(t.connected(peer, addr(), Instant::now()));
        assert!(!t.connected(peer, addr(), Instant::now()));
        assert!(matches!(
            t.judge(&adm, peer, b"ok", now),
            Verdict::Admitted(_)
        ));
        assert_eq!(t.judge(&adm, peer, b"ok", now), Verdict::AlreadyAdmitted);
        assert!(t.is_admitted(&peer));
        assert_eq!(t.refusals(), 0);
    }

    #[test]
    fn refuses_bad_credential_once_and_counts() {
        let (adm, mut t, peer, now) = (
            fake(),
            PeerTable::default(),
            PeerId::random(),
            SystemTime::now(),
        );
        t.connected(peer, addr(), Instant::now());
        assert!(matches!(
            t.judge(&adm, peer, b"bad", now),
            Verdict::Refused(AdmissionRefusal::Malformed(_))
        ));
        assert_eq!(t.judge(&adm, peer, b"ok", now), Verdict::AlreadyRefused);
        assert!(!t.is_admitted(&peer));
        assert_eq!(t.refusals(), 1);
        t.disconnected(&peer);
        assert!(t.connected(peer, addr(), Instant::now()));
    }

    #[test]
    fn unknown_and_oversized_and_ipless() {
        let (adm, mut t, now) = (fake(), PeerTable::default(), SystemTime::now());
        assert_eq!(
            t.judge(&adm, PeerId::random(), b"ok", now),
            Verdict::Unknown
        );
        let big = PeerId::random();
        t.connected(big, addr(), Instant::now());
        assert!(matches!(
            t.judge(&adm, big, &vec![0; MAX_CREDENTIAL_BYTES + 1], now),
            Verdict::Refused(AdmissionRefusal::CredentialTooLarge { .. })
        ));
        let ipless = PeerId::random();
        t.connected(ipless, "/memory/1".parse().unwrap(), Instant::now());
        assert!(matches!(
            t.judge(&adm, ipless, b"ok", now),
            Verdict::Refused(AdmissionRefusal::NoIpAddress(_))
        ));
    }

    #[test]
    fn overdue_pending_peers_are_refused() {
        let mut t = PeerTable::default();
        let start = Instant::now();
        let (late, fresh) = (PeerId::random(), PeerId::random());
        t.connected(late, addr(), start);
        t.connected(fresh, addr(), start + Duration::from_secs(60));
        assert_eq!(t.refuse_overdue(start), vec![late]);
        assert_eq!(t.refusals(), 1);
    }

    #[test]
    fn recheck_refuses_expired_and_revoked() {
        let (adm, mut t, peer, now) = (
            fake(),
            PeerTable::default(),
            PeerId::random(),
            SystemTime::now(),
        );
        t.connected(peer, addr(), Instant::now());
        t.judge(&adm, peer, b"ok", now);
        // Not yet expired: the expiry sweep leaves it alone.
        assert!(t.recheck(&adm, now, true).is_empty());
        // After expiry the node's check runs again; the fake renews.
        let later = now + Duration::from_secs(7200);
        assert!(t.recheck(&adm, later, true).is_empty());
        adm.refuse_all.store(true, Ordering::SeqCst);
        let refused = t.recheck(&adm, later, false);
        assert_eq!(refused.len(), 1);
        assert!(!t.is_admitted(&peer));
        assert_eq!(t.refusals(), 1);
    }

    /// Admits `b"ok"` only from `fd00:852::/48`, like a member's prefix.
    struct Prefixed;

    impl Admission for Prefixed {
        fn check(
            &self,
            peer: &PeerId,
            remote: IpAddr,
            credential: &[u8],
            now: SystemTime,
        ) -> Result<AdmittedPeer, AdmissionRefusal> {
            let inside = match remote {
                IpAddr::V6(ip) => ip.segments()[..3] == [0xfd00, 0x852, 0],
                IpAddr::V4(_) => false,
            };
            if !inside {
                return Err(AdmissionRefusal::AddressOutsidePrefixes(remote));
            }
            fake().check(peer, remote, credential, now)
        }
        fn own_credential(&self) -> Vec<u8> {
            b"ok".to_vec()
        }
    }

    #[test]
    fn old_api_second_connection_from_outside_is_checked() {
        let (mut t, peer, now) = (PeerTable::default(), PeerId::random(), SystemTime::now());
        let inside: Multiaddr = "/ip6/fd00:852::7/tcp/4001".parse().unwrap();
        let outside: Multiaddr = "/ip6/2001:db8::66/tcp/4001".parse().unwrap();
        t.connected(peer, inside, Instant::now());
        assert!(matches!(t.judge(&Prefixed, peer, b"ok", now), Verdict::Admitted(_)));
        // The same key dials again from outside its institution's prefixes.
        let checked = t.connected(peer, outside, Instant::now());
        assert!(checked, "the second connection was never checked");
    }
}
