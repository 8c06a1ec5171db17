//! A per-address backoff for failed authentication: after a few wrong tokens, an address's
//! calls are refused without looking at their credentials for a while that doubles with
//! each further failure, so guessing the token runs at a handful of tries a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures an address may have before it is slowed down (a misconfigured client shows its
/// real error at once).
pub const FREE_FAILURES: u32 = 5;
/// The first backoff; it doubles with each further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// An address without failures for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses remembered at most (a flood of addresses cannot grow the table).
const MAX_PEERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Failed authentications by peer address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    peers: HashMap<IpAddr, Failures>,
}

impl AuthThrottle {
    /// How long calls from `peer` are still refused at `now` (None: check them).
    pub fn refusing(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.peers.get(&peer)?.until?;
        (until > now).then(|| until - now)
    }

    /// A call from `peer` presented wrong or no credentials at `now`.
    pub fn failed(&mut self, peer: IpAddr, now: Instant) {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.prune(now);
        }
        let f = self.peers.entry(peer).or_insert(Failures {
            count: 0,
            last: now,
            until: None,
        });
        if now.duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        f.until = (f.count > FREE_FAILURES).then(|| {
            let doublings = (f.count - FREE_FAILURES - 1).min(16);
            now + (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
        });
    }

    /// A call from `peer` authenticated: its failures are forgotten.
    pub fn succeeded(&mut self, peer: IpAddr) {
        self.peers.remove(&peer);
    }

    /// Forgets quiet addresses; if all are recent, the one that failed longest ago.
    fn prune(&mut self, now: Instant) {
        self.peers
            .retain(|_, f| now.duration_since(f.last) <= FORGET_AFTER);
        if self.peers.len() >= MAX_PEERS
            && let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(p, _)| *p)
        {
            self.peers.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_after_the_free_failures_and_forgets_on_success() {
        let mut t = AuthThrottle::default();
        let peer: IpAddr = [10, 0, 0, 7].into();
        let other: IpAddr = [10, 0, 0, 8].into();
        let t0 = Instant::now();
        for i in 0..FREE_FAILURES {
            t.failed(peer, t0 + Duration::from_millis(u64::from(i)));
            assert_eq!(t.refusing(peer, t0 + Duration::from_millis(10)), None);
        }
        let t1 = t0 + Duration::from_secs(1);
        t.failed(peer, t1);
        assert_eq!(t.refusing(peer, t1), Some(FIRST_BACKOFF));
        assert_eq!(t.refusing(other, t1), None, "per address");
        assert_eq!(t.refusing(peer, t1 + FIRST_BACKOFF), None);
        // doubling, up to the most
        t.failed(peer, t1);
        assert_eq!(t.refusing(peer, t1), Some(FIRST_BACKOFF * 2));
        for _ in 0..20 {
            t.failed(peer, t1);
        }
        assert_eq!(t.refusing(peer, t1), Some(MAX_BACKOFF));
        t.succeeded(peer);
        assert_eq!(t.refusing(peer, t1), None);
        // a quiet minute starts afresh
        for _ in 0..=FREE_FAILURES {
            t.failed(other, t0);
        }
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        t.failed(other, later);
        assert_eq!(t.refusing(other, later), None);
    }

    #[test]
    fn a_flood_of_addresses_stays_bounded() {
        let mut t = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.peers.len() <= MAX_PEERS);
    }
}
