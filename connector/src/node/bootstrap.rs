//! Keeping the bootstrap peers connected. A node dials them at start; when
//! one restarts or the link drops, nothing else would bring the connection
//! back (a restarted peer dials only its own bootstrap list), and messages
//! waiting in the negotiation outbox could not reach it. So every bootstrap
//! peer that is not admitted is dialled again, with back-off per peer.

use std::collections::HashMap;
use std::time::Duration;

use crate::p2p::Client;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

/// First delay before re-dialling a missing peer; it doubles per failed
/// attempt up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// How often the admitted set is looked at.
const TICK: Duration = Duration::from_millis(500);

/// The back-off of one peer: the next moment to try and the current delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    next: Instant,
    delay: Duration,
}

impl Backoff {
    fn new(now: Instant) -> Self {
        Backoff {
            next: now,
            delay: FIRST_DELAY,
        }
    }

    fn failed(&mut self, now: Instant) {
        self.next = now + self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
    }
}

/// The PeerId a bootstrap address ends with (`load` refuses others).
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Runs until the swarm is gone.
pub async fn keep_connected(client: Client, bootstrap: Vec<Multiaddr>) {
    if bootstrap.is_empty() {
        return;
    }
    let mut backoff: HashMap<PeerId, Backoff> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let admitted = match client.admitted_peers().await {
            Ok(peers) => peers,
            // The swarm has shut down.
            Err(_) => return,
        };
        let now = Instant::now();
        for addr in &bootstrap {
            let Some(peer) = peer_of(addr) else { continue };
            if admitted.iter().any(|p| p.peer_id == peer) {
                backoff.remove(&peer);
                continue;
            }
            let b = backoff.entry(peer).or_insert_with(|| Backoff::new(now));
            if b.next > now {
                continue;
            }
            match client.dial(addr.clone()).await {
                Ok(_) => {
                    tracing::info!(%peer, "re-connected to bootstrap peer {addr}");
                    // Admission follows; if it fails the peer is missing
                    // again at the next tick and the back-off grows.
                    b.failed(now);
                }
                Err(e) => {
                    tracing::debug!(%peer, "bootstrap peer {addr} still unreachable: {e}");
                    b.failed(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = Backoff::new(t0);
        assert_eq!(b.next, t0);
        b.failed(t0);
        assert_eq!(b.next, t0 + FIRST_DELAY);
        for _ in 0..20 {
            b.failed(t0);
        }
        assert_eq!(b.delay, MAX_DELAY);
        assert_eq!(b.next, t0 + MAX_DELAY);
    }

    #[test]
    fn the_peer_is_the_last_component() {
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip6/::1/tcp/4001/p2p/{peer}").parse().unwrap();
        assert_eq!(peer_of(&addr), Some(peer));
        assert_eq!(peer_of(&"/ip6/::1/tcp/4001".parse().unwrap()), None);
    }
}
