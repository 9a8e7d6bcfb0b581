//! Admission: who may use this node's services. The decision itself belongs to
//! the node (credentials, revocations, address plan); this module keeps the
//! per-peer state that makes the decision stick until the peer leaves, its
//! credential expires or the node asks for a recheck.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
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
    /// Admitted on the connections in `open`; those in `close` come from
    /// outside the peer's prefixes (or fail otherwise) and must close.
    Admitted {
        info: AdmittedPeer,
        open: Vec<ConnectionId>,
        close: Vec<(ConnectionId, AdmissionRefusal)>,
    },
    AlreadyAdmitted,
    Refused(AdmissionRefusal),
    /// Refused earlier on this connection; nothing new to do.
    AlreadyRefused,
    /// Not connected (a late message after the peer left).
    Unknown,
}

/// What to do with a connection that was just established.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Connected {
    /// The peer's first connection: start the credential exchange.
    StartAdmission,
    /// The peer is mid-admission; this connection is judged with the others.
    Pending,
    /// The peer is admitted and this connection, judged with the peer's
    /// credential and its own address, may be served.
    Admitted,
    /// The peer is admitted, but not on this connection: close it.
    Refused(AdmissionRefusal),
    /// The peer was refused and is being disconnected.
    Ignore,
}

struct Admitted {
    info: AdmittedPeer,
    credential: Vec<u8>,
    /// Every connection being served, each judged on its own address.
    connections: BTreeMap<ConnectionId, Multiaddr>,
}

struct Pending {
    connections: BTreeMap<ConnectionId, Multiaddr>,
    deadline: Instant,
}

/// Admission state of every connected peer. Entries live only while the peer
/// is connected, so the table is bounded by the connection limits.
///
/// Admission is judged per connection: a member's credential binds it to
/// its institution's prefixes, and a second connection under the same key
/// from elsewhere (a stolen key, say) is refused on its own, however the
/// first was judged.
#[derive(Default)]
pub(crate) struct PeerTable {
    pending: HashMap<PeerId, Pending>,
    admitted: HashMap<PeerId, Admitted>,
    refused: HashSet<PeerId>,
    refusals: u64,
}

impl PeerTable {
    /// Records a new connection and says what to do with it.
    pub(crate) fn connected(
        &mut self,
        admission: &dyn Admission,
        peer: PeerId,
        connection: ConnectionId,
        remote: Multiaddr,
        deadline: Instant,
        now: SystemTime,
    ) -> Connected {
        if self.refused.contains(&peer) {
            return Connected::Ignore;
        }
        if let Some(a) = self.admitted.get_mut(&peer) {
            return match decide(admission, peer, &remote, &a.credential, now) {
                Ok(_) => {
                    a.connections.insert(connection, remote);
                    Connected::Admitted
                }
                Err(reason) => {
                    self.refusals += 1;
                    Connected::Refused(reason)
                }
            };
        }
        if let Some(p) = self.pending.get_mut(&peer) {
            p.connections.insert(connection, remote);
            return Connected::Pending;
        }
        self.pending.insert(
            peer,
            Pending {
                connections: BTreeMap::from([(connection, remote)]),
                deadline,
            },
        );
        Connected::StartAdmission
    }

    /// Forgets one closed connection.
    pub(crate) fn connection_closed(&mut self, peer: &PeerId, connection: ConnectionId) {
        if let Some(a) = self.admitted.get_mut(peer) {
            a.connections.remove(&connection);
        }
        if let Some(p) = self.pending.get_mut(peer) {
            p.connections.remove(&connection);
        }
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

    /// The remote address of a connection the peer is served on, while it
    /// is admitted. Every such connection passed the address check itself.
    pub(crate) fn admitted_from(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.admitted
            .get(peer)
            .and_then(|a| a.connections.values().next().cloned())
    }

    pub(crate) fn admitted(&self) -> Vec<AdmittedPeer> {
        self.admitted.values().map(|a| a.info.clone()).collect()
    }

    pub(crate) fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Judges a credential the peer presented, on each of its connections.
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
        let mut info = None;
        let mut served = BTreeMap::new();
        let mut close = Vec::new();
        for (connection, remote) in pending.connections {
            match decide(admission, peer, &remote, credential, now) {
                Ok(i) => {
                    info.get_or_insert(i);
                    served.insert(connection, remote);
                }
                Err(reason) => close.push((connection, reason)),
            }
        }
        match info {
            Some(info) => {
                self.refusals += close.len() as u64;
                let open = served.keys().copied().collect();
                self.admitted.insert(
                    peer,
                    Admitted {
                        info: info.clone(),
                        credential: credential.to_vec(),
                        connections: served,
                    },
                );
                Verdict::Admitted { info, open, close }
            }
            None => {
                self.refuse(peer);
                let reason = close.into_iter().next().map_or(
                    AdmissionRefusal::Malformed("no connection to judge".into()),
                    |(_, r)| r,
                );
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
    /// `now`) with their stored credential, connection by connection. Returns
    /// the peers now refused, and the connections of peers still admitted
    /// that must close.
    pub(crate) fn recheck(
        &mut self,
        admission: &dyn Admission,
        now: SystemTime,
        only_expired: bool,
    ) -> Recheck {
        let mut out = Recheck::default();
        for (peer, entry) in &mut self.admitted {
            if only_expired && entry.info.expires_at > now {
                continue;
            }
            let mut first_refusal = None;
            let mut renewed = None;
            entry.connections.retain(|connection, remote| {
                match decide(admission, *peer, remote, &entry.credential, now) {
                    Ok(info) => {
                        renewed = Some(info);
                        true
                    }
                    Err(reason) => {
                        out.close.push((*peer, *connection, reason.clone()));
                        first_refusal.get_or_insert(reason);
                        false
                    }
                }
            });
            match renewed {
                Some(info) => entry.info = info,
                None => {
                    let reason = first_refusal.unwrap_or(AdmissionRefusal::Expired);
                    out.refused.push((*peer, reason));
                }
            }
        }
        for (peer, _) in &out.refused {
            self.admitted.remove(peer);
            out.close.retain(|(p, _, _)| p != peer);
            self.refuse(*peer);
        }
        self.refusals += out.close.len() as u64;
        out
    }

    fn refuse(&mut self, peer: PeerId) {
        self.refused.insert(peer);
        self.refusals += 1;
    }
}

/// What a recheck found.
#[derive(Debug, Default)]
pub(crate) struct Recheck {
    /// Peers no longer admitted at all.
    pub(crate) refused: Vec<(PeerId, AdmissionRefusal)>,
    /// Connections of peers still admitted that no longer pass.
    pub(crate) close: Vec<(PeerId, ConnectionId, AdmissionRefusal)>,
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

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    /// A first connection of `peer` from `remote`.
    fn connect(t: &mut PeerTable, peer: PeerId, remote: Multiaddr, deadline: Instant) -> Connected {
        t.connected(&fake(), peer, conn(1), remote, deadline, SystemTime::now())
    }

    fn admitted_on(v: Verdict) -> Vec<ConnectionId> {
        match v {
            Verdict::Admitted { open, .. } => open,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn admits_once_and_ignores_repeats() {
        let (adm, mut t, peer, now) = (
            fake(),
            PeerTable::default(),
            PeerId::random(),
            SystemTime::now(),
        );
        assert_eq!(
            connect(&mut t, peer, addr(), Instant::now()),
            Connected::StartAdmission
        );
        assert_eq!(
            t.connected(&adm, peer, conn(2), addr(), Instant::now(), now),
            Connected::Pending
        );
        assert_eq!(
            admitted_on(t.judge(&adm, peer, b"ok", now)),
            vec![conn(1), conn(2)]
        );
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
        connect(&mut t, peer, addr(), Instant::now());
        assert!(matches!(
            t.judge(&adm, peer, b"bad", now),
            Verdict::Refused(AdmissionRefusal::Malformed(_))
        ));
        assert_eq!(t.judge(&adm, peer, b"ok", now), Verdict::AlreadyRefused);
        assert_eq!(
            t.connected(&adm, peer, conn(2), addr(), Instant::now(), now),
            Connected::Ignore
        );
        assert!(!t.is_admitted(&peer));
        assert_eq!(t.refusals(), 1);
        t.disconnected(&peer);
        assert_eq!(
            connect(&mut t, peer, addr(), Instant::now()),
            Connected::StartAdmission
        );
    }

    #[test]
    fn unknown_and_oversized_and_ipless() {
        let (adm, mut t, now) = (fake(), PeerTable::default(), SystemTime::now());
        assert_eq!(
            t.judge(&adm, PeerId::random(), b"ok", now),
            Verdict::Unknown
        );
        let big = PeerId::random();
        connect(&mut t, big, addr(), Instant::now());
        assert!(matches!(
            t.judge(&adm, big, &vec![0; MAX_CREDENTIAL_BYTES + 1], now),
            Verdict::Refused(AdmissionRefusal::CredentialTooLarge { .. })
        ));
        let ipless = PeerId::random();
        connect(&mut t, ipless, "/memory/1".parse().unwrap(), Instant::now());
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
        connect(&mut t, late, addr(), start);
        connect(&mut t, fresh, addr(), start + Duration::from_secs(60));
        assert_eq!(t.refuse_overdue(start), vec![late]);
        assert_eq!(t.refusals(), 1);
    }

    /// Admits `b"ok"` with a credential that expires at `.0`, and refuses
    /// it as expired from then on, as a member's real credential is.
    struct Expiring(SystemTime);

    impl Admission for Expiring {
        fn check(
            &self,
            peer: &PeerId,
            _remote: IpAddr,
            credential: &[u8],
            now: SystemTime,
        ) -> Result<AdmittedPeer, AdmissionRefusal> {
            if credential != b"ok" {
                return Err(AdmissionRefusal::Malformed("not ok".into()));
            }
            if now >= self.0 {
                return Err(AdmissionRefusal::Expired);
            }
            Ok(AdmittedPeer {
                peer_id: *peer,
                institution: "uni".into(),
                expires_at: self.0,
            })
        }
        fn own_credential(&self) -> Vec<u8> {
            b"ok".to_vec()
        }
    }

    #[test]
    fn recheck_refuses_expired_and_revoked() {
        let now = SystemTime::now();

        // A credential that is not renewed: refused once it has expired.
        let (adm, mut t, peer) = (
            Expiring(now + Duration::from_secs(3600)),
            PeerTable::default(),
            PeerId::random(),
        );
        connect(&mut t, peer, addr(), Instant::now());
        t.judge(&adm, peer, b"ok", now);
        assert!(t.is_admitted(&peer));
        let r = t.recheck(&adm, now + Duration::from_secs(3599), true);
        assert!(r.refused.is_empty() && r.close.is_empty());
        let r = t.recheck(&adm, now + Duration::from_secs(3600), true);
        assert_eq!(r.refused, [(peer, AdmissionRefusal::Expired)]);
        assert!(r.close.is_empty(), "the whole peer goes, not a connection");
        assert!(!t.is_admitted(&peer));
        assert_eq!(t.refusals(), 1);

        // A renewed credential stays; a revoked one is refused as revoked.
        let (adm, mut t, peer) = (fake(), PeerTable::default(), PeerId::random());
        connect(&mut t, peer, addr(), Instant::now());
        t.judge(&adm, peer, b"ok", now);
        // Not yet expired: the expiry sweep leaves it alone.
        let r = t.recheck(&adm, now, true);
        assert!(r.refused.is_empty() && r.close.is_empty());
        // After expiry the node's check runs again; the fake renews.
        let later = now + Duration::from_secs(7200);
        assert!(t.recheck(&adm, later, true).refused.is_empty());
        assert!(t.is_admitted(&peer));
        adm.refuse_all.store(true, Ordering::SeqCst);
        let r = t.recheck(&adm, later, false);
        assert_eq!(r.refused, [(peer, AdmissionRefusal::Revoked("all".into()))]);
        assert!(r.close.is_empty(), "the whole peer goes, not a connection");
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

    fn inside() -> Multiaddr {
        "/ip6/fd00:852::7/tcp/4001".parse().unwrap()
    }

    fn outside() -> Multiaddr {
        "/ip6/2001:db8::66/tcp/4001".parse().unwrap()
    }

    #[test]
    fn a_second_connection_from_outside_the_prefixes_is_refused() {
        let (mut t, peer, now) = (PeerTable::default(), PeerId::random(), SystemTime::now());
        let soon = Instant::now();
        t.connected(&Prefixed, peer, conn(1), inside(), soon, now);
        assert_eq!(
            admitted_on(t.judge(&Prefixed, peer, b"ok", now)),
            vec![conn(1)]
        );
        // The same key dials again from outside its institution's prefixes.
        assert_eq!(
            t.connected(&Prefixed, peer, conn(2), outside(), soon, now),
            Connected::Refused(AdmissionRefusal::AddressOutsidePrefixes(
                "2001:db8::66".parse().unwrap()
            ))
        );
        assert!(t.is_admitted(&peer), "the member's own connection stays");
        assert_eq!(t.admitted_from(&peer), Some(inside()));
        assert_eq!(t.refusals(), 1);
        // Once the member's own connection is gone, nothing is served.
        t.connection_closed(&peer, conn(1));
        assert_eq!(t.admitted_from(&peer), None);
    }

    #[test]
    fn connections_made_while_pending_are_judged_each_on_its_address() {
        let (mut t, peer, now) = (PeerTable::default(), PeerId::random(), SystemTime::now());
        let soon = Instant::now();
        t.connected(&Prefixed, peer, conn(1), outside(), soon, now);
        t.connected(&Prefixed, peer, conn(2), inside(), soon, now);
        let Verdict::Admitted { open, close, .. } = t.judge(&Prefixed, peer, b"ok", now) else {
            panic!("the inside connection admits the peer");
        };
        assert_eq!(open, vec![conn(2)]);
        assert_eq!(close.len(), 1);
        assert_eq!(close[0].0, conn(1));
        assert_eq!(t.admitted_from(&peer), Some(inside()));

        // Only outside connections: refused.
        let stolen = PeerId::random();
        t.connected(&Prefixed, stolen, conn(3), outside(), soon, now);
        assert!(matches!(
            t.judge(&Prefixed, stolen, b"ok", now),
            Verdict::Refused(AdmissionRefusal::AddressOutsidePrefixes(_))
        ));
    }
}
