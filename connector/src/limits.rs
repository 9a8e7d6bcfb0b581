//! Per-peer budgets for what one peer can make this node write.
//!
//! A refusal is audited, and a peer that sends nothing but bad requests
//! could otherwise grow the audit log as fast as it can send. Each peer has
//! a token bucket of audit entries; a refusal beyond it is counted, and the
//! count goes into the peer's next entry (`suppressed_before`). The table
//! itself is bounded: at [`MAX_PEERS`] it forgets the peers that have
//! nothing to report, then the longest idle of those with no count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Peers whose budgets are tracked at once.
pub const MAX_PEERS: usize = 4096;

struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled: Instant,
    suppressed: u64,
}

/// Token buckets of audit entries, one per peer.
pub struct AuditBudget {
    burst: u32,
    refill: Duration,
    peers: HashMap<PeerId, Bucket>,
}

impl AuditBudget {
    /// `burst` entries at once, and one more every `refill`.
    pub fn new(burst: u32, refill: Duration) -> Self {
        AuditBudget {
            burst,
            refill,
            peers: HashMap::new(),
        }
    }

    /// Whether `peer` may have another entry now: `Some(n)` with the
    /// refusals counted but not written since its last entry, or `None`
    /// (and this one is counted).
    pub fn take(&mut self, peer: &PeerId, now: Instant) -> Option<u64> {
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
            self.make_room(now);
        }
        let (burst, refill) = (self.burst, self.refill);
        let b = self.peers.entry(*peer).or_insert(Bucket {
            tokens: burst,
            refilled: now,
            suppressed: 0,
        });
        refill_bucket(b, burst, refill, now);
        if b.tokens == 0 {
            b.suppressed = b.suppressed.saturating_add(1);
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }

    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    fn make_room(&mut self, now: Instant) {
        let (burst, refill) = (self.burst, self.refill);
        self.peers.retain(|_, b| {
            refill_bucket(b, burst, refill, now);
            b.tokens < burst || b.suppressed > 0
        });
        if self.peers.len() >= MAX_PEERS
            && let Some(idle) = self
                .peers
                .iter()
                .min_by_key(|(_, b)| (b.suppressed > 0, b.refilled))
                .map(|(p, _)| *p)
        {
            self.peers.remove(&idle);
        }
    }
}

fn refill_bucket(b: &mut Bucket, burst: u32, refill: Duration, now: Instant) {
    if refill.is_zero() {
        b.tokens = burst;
        return;
    }
    let earned = now.saturating_duration_since(b.refilled).as_nanos() / refill.as_nanos();
    if earned > 0 {
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        b.tokens = b.tokens.saturating_add(earned).min(burst);
        b.refilled = if b.tokens == burst {
            now
        } else {
            b.refilled + refill * earned
        };
    }
}

/// Failed API authentications per source address: after `max` failures
/// within `window`, the address's calls are refused without looking at
/// the token until the window has passed, so a token cannot be guessed at
/// network speed. Bounded like [`AuditBudget`]: at [`MAX_PEERS`] addresses
/// the expired windows are forgotten, then the oldest.
pub struct AuthThrottle {
    max: u32,
    window: Duration,
    sources: HashMap<std::net::IpAddr, (u32, Instant)>,
}

impl AuthThrottle {
    pub fn new(max: u32, window: Duration) -> Self {
        AuthThrottle {
            max,
            window,
            sources: HashMap::new(),
        }
    }

    /// `Err(wait)` while `source` is throttled.
    pub fn check(&mut self, source: std::net::IpAddr, now: Instant) -> Result<(), Duration> {
        match self.sources.get(&source) {
            Some(&(count, since)) if count >= self.max => {
                let passed = now.saturating_duration_since(since);
                if passed < self.window {
                    Err(self.window - passed)
                } else {
                    self.sources.remove(&source);
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `source`.
    pub fn failed(&mut self, source: std::net::IpAddr, now: Instant) {
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_PEERS {
            let window = self.window;
            self.sources
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
            if self.sources.len() >= MAX_PEERS
                && let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(ip, _)| *ip)
            {
                self.sources.remove(&oldest);
            }
        }
        let entry = self.sources.entry(source).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_and_the_rest_counted() {
        let mut budget = AuditBudget::new(3, Duration::from_secs(6));
        let (peer, t0) = (PeerId::random(), Instant::now());
        for _ in 0..3 {
            assert_eq!(budget.take(&peer, t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(budget.take(&peer, t0), None);
        }
        // Another peer has its own budget.
        assert_eq!(budget.take(&PeerId::random(), t0), Some(0));
        // Six seconds later one more entry, carrying the five counted.
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(budget.take(&peer, t1), Some(5));
        assert_eq!(budget.take(&peer, t1), None);
        // A long quiet spell refills to the burst, no further.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(budget.take(&peer, t2), Some(1));
        assert_eq!(budget.take(&peer, t2), Some(0));
        assert_eq!(budget.take(&peer, t2), Some(0));
        assert_eq!(budget.take(&peer, t2), None);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_peers_with_counts() {
        let mut budget = AuditBudget::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let noisy = PeerId::random();
        budget.take(&noisy, t0);
        assert_eq!(budget.take(&noisy, t0), None);
        for _ in 0..MAX_PEERS + 10 {
            budget.take(&PeerId::random(), t0);
        }
        assert!(budget.tracked() <= MAX_PEERS);
        assert_eq!(
            budget.take(&noisy, t0 + Duration::from_secs(60)),
            Some(1),
            "the noisy peer's count survived"
        );
    }

    #[test]
    fn failed_authentications_are_throttled_per_address() {
        let mut t = AuthThrottle::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        for _ in 0..3 {
            assert!(t.check(a, now).is_ok());
            t.failed(a, now);
        }
        let wait = t.check(a, now + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.check(b, now).is_ok(), "other addresses are not affected");
        assert!(t.check(a, now + Duration::from_secs(60)).is_ok());
        for i in 0..(MAX_PEERS as u32 + 10) {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(i));
            t.failed(ip, now);
        }
        assert!(t.sources.len() <= MAX_PEERS);
    }
}
