//! Addresses a node listens on: libp2p multiaddrs and gRPC sockets.
//!
//! Multiaddrs are handled in their string form so that this crate does not
//! depend on libp2p; the connector parses the rendered strings with
//! libp2p's own `Multiaddr`. Only the forms Bayspace uses are accepted:
//!
//! - TCP: `/ip6/ADDR/tcp/PORT`
//! - QUIC: `/ip6/ADDR/udp/PORT/quic-v1`
//! - link-local: `/ip6zone/ZONE/ip6/fe80::…/…` (the zone names the
//!   interface; without it a link-local address is ambiguous)
//! - `/ip4/…` in the same two shapes, only where IPv4 is allowed.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The transports a node listens on; the same port number serves both,
/// TCP on the one side and UDP on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Quic,
}

/// What kind of address a node is asked to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// `::` (or `0.0.0.0`): every interface.
    Unspecified,
    /// `::1` (or `127.0.0.0/8`).
    Loopback,
    /// `fc00::/7` (for IPv4, the RFC 1918 private ranges).
    UniqueLocal,
    /// `fe80::/10` (for IPv4, `169.254.0.0/16`).
    LinkLocal,
    /// Everything else that is unicast.
    Global,
}

/// Why an address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0} is an IPv4 address (or IPv4-mapped) and IPv4 is not allowed")]
    Ipv4NotAllowed(IpAddr),
    #[error("{0} is a multicast or broadcast address: a node listens on unicast addresses")]
    NotUnicast(IpAddr),
    #[error(
        "link-local address {0} needs a zone naming the interface: /ip6zone/<interface>/ip6/{0}/… or [{0}%<index>]:<port>"
    )]
    LinkLocalWithoutZone(Ipv6Addr),
    #[error("zone `{zone}` given for {addr}, which is not link-local")]
    ZoneNotLinkLocal { addr: IpAddr, zone: String },
    #[error("zone `{0}` is not an interface name")]
    BadZone(String),
    #[error(
        "multiaddr `{input}`: {reason} (expected /ip6/ADDR/tcp/PORT or /ip6/ADDR/udp/PORT/quic-v1)"
    )]
    BadMultiaddr { input: String, reason: String },
    #[error("socket address `{input}`: {reason} (expected [ADDR]:PORT)")]
    BadSocketAddr { input: String, reason: String },
}

/// Classifies `addr` for listening; multicast and broadcast are refused, and
/// IPv4 (including IPv4-mapped IPv6) unless `allow_ipv4`.
pub fn classify(addr: IpAddr, allow_ipv4: bool) -> Result<AddressClass, AddrError> {
    match addr.to_canonical() {
        IpAddr::V6(a) => {
            if a.is_multicast() {
                return Err(AddrError::NotUnicast(addr));
            }
            Ok(if a.is_unspecified() {
                AddressClass::Unspecified
            } else if a.is_loopback() {
                AddressClass::Loopback
            } else if a.is_unique_local() {
                AddressClass::UniqueLocal
            } else if a.is_unicast_link_local() {
                AddressClass::LinkLocal
            } else {
                AddressClass::Global
            })
        }
        IpAddr::V4(a) => {
            if !allow_ipv4 {
                return Err(AddrError::Ipv4NotAllowed(addr));
            }
            if a.is_multicast() || a.is_broadcast() {
                return Err(AddrError::NotUnicast(addr));
            }
            Ok(if a.is_unspecified() {
                AddressClass::Unspecified
            } else if a.is_loopback() {
                AddressClass::Loopback
            } else if a.is_private() {
                AddressClass::UniqueLocal
            } else if a.is_link_local() {
                AddressClass::LinkLocal
            } else {
                AddressClass::Global
            })
        }
    }
}

/// An interface name as it may appear in `/ip6zone/…`: the characters
/// Linux allows in interface names (`IFNAMSIZ` is 16 with the NUL), or
/// a numeric index.
fn check_zone(zone: &str) -> Result<(), AddrError> {
    let ok = !zone.is_empty()
        && zone.len() <= 15
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(AddrError::BadZone(zone.to_owned()))
    }
}

/// A checked libp2p listen address. Its `Display` is the multiaddr.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    addr: IpAddr,
    zone: Option<String>,
    port: u16,
    transport: Transport,
    class: AddressClass,
}

impl ListenAddr {
    /// Checks the address: unicast, IPv4 only if allowed, and a zone if and
    /// only if the address is IPv6 link-local. Port 0 (let the system pick)
    /// is accepted because tests and ephemeral nodes need it.
    pub fn new(
        addr: IpAddr,
        zone: Option<&str>,
        port: u16,
        transport: Transport,
        allow_ipv4: bool,
    ) -> Result<Self, AddrError> {
        let class = classify(addr, allow_ipv4)?;
        let link_local_v6 = class == AddressClass::LinkLocal && addr.is_ipv6();
        match (zone, link_local_v6, addr) {
            (None, true, IpAddr::V6(a)) => return Err(AddrError::LinkLocalWithoutZone(a)),
            (Some(z), false, _) => {
                return Err(AddrError::ZoneNotLinkLocal {
                    addr,
                    zone: z.to_owned(),
                });
            }
            (Some(z), true, _) => check_zone(z)?,
            _ => {}
        }
        Ok(ListenAddr {
            addr,
            zone: zone.map(str::to_owned),
            port,
            transport,
            class,
        })
    }

    /// TCP and QUIC on the same address and port, the pair a node listens on.
    pub fn both(
        addr: IpAddr,
        zone: Option<&str>,
        port: u16,
        allow_ipv4: bool,
    ) -> Result<[Self; 2], AddrError> {
        Ok([
            Self::new(addr, zone, port, Transport::Tcp, allow_ipv4)?,
            Self::new(addr, zone, port, Transport::Quic, allow_ipv4)?,
        ])
    }

    /// Parses one of the forms listed in the module documentation.
    pub fn parse_multiaddr(input: &str, allow_ipv4: bool) -> Result<Self, AddrError> {
        let bad = |reason: String| AddrError::BadMultiaddr {
            input: input.to_owned(),
            reason,
        };
        let rest = input
            .strip_prefix('/')
            .ok_or_else(|| bad("does not start with `/`".into()))?;
        let mut parts: Vec<&str> = rest.split('/').collect();
        let zone = if parts.first() == Some(&"ip6zone") {
            let z = *parts
                .get(1)
                .ok_or_else(|| bad("`ip6zone` without a zone".into()))?;
            parts.drain(..2);
            if parts.first() != Some(&"ip6") {
                return Err(bad("`ip6zone` must be followed by `ip6`".into()));
            }
            Some(z)
        } else {
            None
        };
        let (proto, addr, transport_part, port, tail) = match parts.as_slice() {
            [p, a, t, port, tail @ ..] => (*p, *a, *t, *port, tail),
            _ => return Err(bad("too few components".into())),
        };
        let addr: IpAddr = match proto {
            "ip6" => addr
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| bad(format!("`{addr}` is not an IPv6 address")))?,
            "ip4" => addr
                .parse::<std::net::Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| bad(format!("`{addr}` is not an IPv4 address")))?,
            other => return Err(bad(format!("unsupported protocol `{other}`"))),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad(format!("`{port}` is not a port number")))?;
        let transport = match (transport_part, tail) {
            ("tcp", []) => Transport::Tcp,
            ("udp", ["quic-v1"]) => Transport::Quic,
            ("udp", []) => return Err(bad("plain UDP is not a libp2p transport".into())),
            ("udp", ["quic"]) => {
                return Err(bad(
                    "`quic` (draft-29) is not supported: use `quic-v1`".into()
                ));
            }
            ("tcp" | "udp", more) => {
                return Err(bad(format!("unsupported trailing `/{}`", more.join("/"))));
            }
            (other, _) => return Err(bad(format!("unsupported transport `{other}`"))),
        };
        Self::new(addr, zone, port, transport, allow_ipv4)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn class(&self) -> AddressClass {
        self.class
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(zone) = &self.zone {
            write!(f, "/ip6zone/{zone}")?;
        }
        match self.addr {
            IpAddr::V6(a) => write!(f, "/ip6/{a}")?,
            IpAddr::V4(a) => write!(f, "/ip4/{a}")?,
        }
        match self.transport {
            Transport::Tcp => write!(f, "/tcp/{}", self.port),
            Transport::Quic => write!(f, "/udp/{}/quic-v1", self.port),
        }
    }
}

/// A checked gRPC listen address. Its `Display` is `[ADDR]:PORT` (or
/// `[fe80::…%INDEX]:PORT`; `ADDR:PORT` for IPv4).
///
/// Link-local addresses carry a numeric scope id here rather than a name,
/// because that is what a socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcAddr(SocketAddr);

impl GrpcAddr {
    pub fn new(socket: SocketAddr, allow_ipv4: bool) -> Result<Self, AddrError> {
        let class = classify(socket.ip(), allow_ipv4)?;
        if let SocketAddr::V6(v6) = socket {
            let link_local = class == AddressClass::LinkLocal;
            if link_local && v6.scope_id() == 0 {
                return Err(AddrError::LinkLocalWithoutZone(*v6.ip()));
            }
            if !link_local && v6.scope_id() != 0 {
                return Err(AddrError::ZoneNotLinkLocal {
                    addr: socket.ip(),
                    zone: v6.scope_id().to_string(),
                });
            }
        }
        Ok(GrpcAddr(socket))
    }

    pub fn parse(input: &str, allow_ipv4: bool) -> Result<Self, AddrError> {
        let socket: SocketAddr = input.parse().map_err(|_| AddrError::BadSocketAddr {
            input: input.to_owned(),
            reason: "not an address and port".to_owned(),
        })?;
        Self::new(socket, allow_ipv4)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }
}

impl fmt::Display for GrpcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_addresses() {
        let cases = [
            ("::", AddressClass::Unspecified),
            ("::1", AddressClass::Loopback),
            ("fd00:5a::1", AddressClass::UniqueLocal),
            ("fc00::1", AddressClass::UniqueLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("fec0::1", AddressClass::Global),
            ("2001:db8::1", AddressClass::Global),
        ];
        for (a, class) in cases {
            assert_eq!(classify(ip(a), false), Ok(class), "{a}");
        }
        assert_eq!(
            classify(ip("ff02::1"), false),
            Err(AddrError::NotUnicast(ip("ff02::1")))
        );
        for v4 in ["10.0.0.1", "::ffff:10.0.0.1", "0.0.0.0"] {
            assert_eq!(
                classify(ip(v4), false),
                Err(AddrError::Ipv4NotAllowed(ip(v4)))
            );
        }
        assert_eq!(
            classify(ip("10.0.0.1"), true),
            Ok(AddressClass::UniqueLocal)
        );
        assert_eq!(classify(ip("127.0.0.1"), true), Ok(AddressClass::Loopback));
        assert_eq!(
            classify(ip("169.254.1.1"), true),
            Ok(AddressClass::LinkLocal)
        );
        assert_eq!(classify(ip("8.8.8.8"), true), Ok(AddressClass::Global));
        assert!(classify(ip("224.0.0.1"), true).is_err());
        assert!(classify(ip("255.255.255.255"), true).is_err());
    }

    #[test]
    fn multiaddr_round_trips() {
        for s in [
            "/ip6/::/tcp/4710",
            "/ip6/::/udp/4710/quic-v1",
            "/ip6/::1/tcp/0",
            "/ip6/fd00:5a::7/udp/65535/quic-v1",
            "/ip6/2001:db8::1/tcp/4710",
            "/ip6zone/eth0/ip6/fe80::1/tcp/4710",
            "/ip6zone/enp3s0/ip6/fe80::1/udp/4710/quic-v1",
        ] {
            let a = ListenAddr::parse_multiaddr(s, false).unwrap();
            assert_eq!(a.to_string(), s);
        }
        let a = ListenAddr::parse_multiaddr("/ip6/fd00:5a::7/udp/4711/quic-v1", false).unwrap();
        assert_eq!(
            (a.addr(), a.port(), a.transport(), a.class()),
            (
                ip("fd00:5a::7"),
                4711,
                Transport::Quic,
                AddressClass::UniqueLocal
            )
        );
        let a = ListenAddr::parse_multiaddr("/ip6zone/eth0/ip6/fe80::1/tcp/1", false).unwrap();
        assert_eq!(a.zone(), Some("eth0"));
        let v4 = ListenAddr::parse_multiaddr("/ip4/10.0.0.1/tcp/4710", true).unwrap();
        assert_eq!(v4.to_string(), "/ip4/10.0.0.1/tcp/4710");
    }

    #[test]
    fn renders_both_transports() {
        let [tcp, quic] = ListenAddr::both(ip("fd00:5a::7"), None, 4710, false).unwrap();
        assert_eq!(tcp.to_string(), "/ip6/fd00:5a::7/tcp/4710");
        assert_eq!(quic.to_string(), "/ip6/fd00:5a::7/udp/4710/quic-v1");
    }

    #[test]
    fn multiaddr_refusals() {
        let refused = [
            ("/ip4/10.0.0.1/tcp/4710", "IPv4"),
            ("/ip6/::ffff:10.0.0.1/tcp/4710", "IPv4"),
            ("/ip6/fe80::1/tcp/4710", "needs a zone"),
            ("/ip6zone/eth0/ip6/fd00::1/tcp/4710", "not link-local"),
            (
                "/ip6zone/eth0/ip4/10.0.0.1/tcp/4710",
                "must be followed by `ip6`",
            ),
            ("/ip6zone/a b/ip6/fe80::1/tcp/4710", "not an interface name"),
            ("/ip6zone//ip6/fe80::1/tcp/4710", "not an interface name"),
            ("/ip6/ff02::1/tcp/4710", "multicast"),
            ("/ip6/fd00::1/udp/4710", "plain UDP"),
            ("/ip6/fd00::1/udp/4710/quic", "quic-v1"),
            (
                "/ip6/fd00::1/tcp/4710/p2p/12D3KooW",
                "trailing `/p2p/12D3KooW`",
            ),
            ("/ip6/fd00::1/tcp/4710/ws", "trailing `/ws`"),
            ("/ip6/fd00::1/tcp/65536", "not a port number"),
            ("/ip6/fd00::1/tcp/-1", "not a port number"),
            ("/ip6/10.0.0.1/tcp/4710", "not an IPv6 address"),
            ("/ip6/fd00::1/sctp/4710", "unsupported transport `sctp`"),
            ("/dns6/example.org/tcp/4710", "unsupported protocol `dns6`"),
            ("/ip6/fd00::1/tcp", "too few components"),
            ("ip6/fd00::1/tcp/4710", "does not start with `/`"),
            ("", "does not start with `/`"),
        ];
        for (s, why) in refused {
            let e = ListenAddr::parse_multiaddr(s, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
        assert!(matches!(
            ListenAddr::new(ip("fe80::1"), None, 1, Transport::Tcp, false),
            Err(AddrError::LinkLocalWithoutZone(_))
        ));
    }

    #[test]
    fn grpc_socket_addresses() {
        for s in [
            "[::1]:7410",
            "[fd00:5a::7]:7410",
            "[fe80::1%2]:7410",
            "[::]:0",
        ] {
            let g = GrpcAddr::parse(s, false).unwrap();
            assert_eq!(g.to_string(), s);
        }
        assert_eq!(
            GrpcAddr::parse("10.0.0.1:7410", true).unwrap().to_string(),
            "10.0.0.1:7410"
        );
        let refused = [
            ("10.0.0.1:7410", "IPv4"),
            ("[::ffff:10.0.0.1]:7410", "IPv4"),
            ("[fe80::1]:7410", "needs a zone"),
            ("[fd00::1%2]:7410", "not link-local"),
            ("[ff02::1]:7410", "multicast"),
            ("fd00::1:7410", "expected [ADDR]:PORT"),
            ("[fd00::1]", "expected [ADDR]:PORT"),
            ("[fe80::1%eth0]:7410", "expected [ADDR]:PORT"),
        ];
        for (s, why) in refused {
            let e = GrpcAddr::parse(s, false).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
