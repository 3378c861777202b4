//! Bounds on forwarding cancels to peers. A CancelRequest whose key names a peer costs this
//! replica a TLS connection to that peer whatever its key, so a 16-byte packet must not buy
//! one without limit: each client address (an IPv6 /64, which one host gets) has a token
//! bucket of `cluster.forward_rate` per second, holding as many; the buckets live in a map
//! of bounded size; and at most `cluster.max_concurrent_forwards` forwards run at once.
//! State only, no IO; the clock is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most client addresses with a bucket. Idle buckets (full again) are forgotten when the map
/// is full; beyond that, new addresses are refused until some are.
pub(crate) const MAX_TRACKED: usize = 4096;

/// `cluster.forward_rate` and `cluster.max_concurrent_forwards`, validated (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForwardLimits {
    /// Forwards per second per client address, and the burst allowed at once.
    pub rate: u32,
    /// Forwards under way at once, from all clients.
    pub concurrent: usize,
}

/// Why a cancel for a peer was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Limited {
    /// The client's bucket is empty.
    #[error(
        "{client} sent more than {rate} cancels for other replicas within a second (cluster.forward_rate)"
    )]
    Rate {
        /// The client's address.
        client: IpAddr,
        /// The limit.
        rate: u32,
    },
    /// As many forwards as allowed are under way.
    #[error(
        "{limit} cancels are being forwarded to peers already (cluster.max_concurrent_forwards)"
    )]
    Concurrency {
        /// The limit.
        limit: usize,
    },
    /// The map of buckets is full of clients that are still limited.
    #[error("{MAX_TRACKED} other client addresses are being rate-limited already")]
    Tracked,
}

/// The buckets and the count of forwards under way; shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct ForwardLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    in_flight: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens at `now`, refilled at `rate` per second up to `rate`.
    fn refilled(self, rate: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(rate)
    }
}

/// A forward under way; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Slot {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a bucket is kept for: IPv4 as is (also when mapped into IPv6), IPv6 by /64.
fn bucket_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl ForwardLimiter {
    /// A place for one forward from `client` at `now`, or why not. A refusal takes nothing
    /// from the client's bucket unless the bucket was what refused it.
    pub fn admit(
        &self,
        client: IpAddr,
        limits: ForwardLimits,
        now: Instant,
    ) -> Result<Slot, Limited> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot {
            in_flight: Arc::clone(&self.in_flight),
        };
        if before >= limits.concurrent {
            return Err(Limited::Concurrency {
                limit: limits.concurrent,
            });
        }
        let rate = f64::from(limits.rate.max(1));
        let key = bucket_key(client);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| b.refilled(rate, now) < rate);
            if buckets.len() >= MAX_TRACKED {
                return Err(Limited::Tracked);
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let tokens = bucket.refilled(rate, now);
        *bucket = Bucket { tokens, at: now };
        if tokens < 1.0 {
            return Err(Limited::Rate {
                client,
                rate: limits.rate,
            });
        }
        bucket.tokens = tokens - 1.0;
        Ok(slot)
    }

    /// Forwards under way.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: ForwardLimits = ForwardLimits {
        rate: 3,
        concurrent: 2,
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_its_rate() {
        let limiter = ForwardLimiter::default();
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            drop(limiter.admit(a, LIMITS, t0).unwrap());
        }
        assert_eq!(
            limiter.admit(a, LIMITS, t0).unwrap_err(),
            Limited::Rate { client: a, rate: 3 }
        );
        // Another address has its own bucket.
        drop(limiter.admit(ip("10.0.0.2"), LIMITS, t0).unwrap());
        // A third of a second later, one more.
        let later = t0 + Duration::from_millis(340);
        drop(limiter.admit(a, LIMITS, later).unwrap());
        assert!(limiter.admit(a, LIMITS, later).is_err());
        // Idle for long, the bucket holds no more than the rate.
        let much_later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            drop(limiter.admit(a, LIMITS, much_later).unwrap());
        }
        assert!(limiter.admit(a, LIMITS, much_later).is_err());
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn an_ipv6_host_is_one_client_across_its_64() {
        let limiter = ForwardLimiter::default();
        let t0 = Instant::now();
        for last in 1..=3 {
            let addr = ip(&format!("2001:db8:1:2::{last:x}"));
            drop(limiter.admit(addr, LIMITS, t0).unwrap());
        }
        assert!(
            limiter
                .admit(ip("2001:db8:1:2:ffff::1"), LIMITS, t0)
                .is_err()
        );
        assert!(limiter.admit(ip("2001:db8:1:3::1"), LIMITS, t0).is_ok());
        assert_eq!(bucket_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn forwards_under_way_are_capped_and_freed_when_done() {
        let limiter = ForwardLimiter::default();
        let t0 = Instant::now();
        let first = limiter.admit(ip("10.0.0.1"), LIMITS, t0).unwrap();
        let second = limiter.admit(ip("10.0.0.2"), LIMITS, t0).unwrap();
        assert_eq!(
            limiter.admit(ip("10.0.0.3"), LIMITS, t0).unwrap_err(),
            Limited::Concurrency { limit: 2 }
        );
        assert_eq!(limiter.in_flight(), 2);
        drop(first);
        let third = limiter.admit(ip("10.0.0.3"), LIMITS, t0).unwrap();
        drop((second, third));
        assert_eq!(limiter.in_flight(), 0);
        // The refused attempt took nothing from 10.0.0.3's bucket: 3 - 1 left.
        for _ in 0..2 {
            drop(limiter.admit(ip("10.0.0.3"), LIMITS, t0).unwrap());
        }
        assert!(limiter.admit(ip("10.0.0.3"), LIMITS, t0).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_forgets_idle_clients_first() {
        let limiter = ForwardLimiter::default();
        let limits = ForwardLimits {
            rate: 1,
            concurrent: usize::MAX,
        };
        let t0 = Instant::now();
        let addr = |i: usize| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_TRACKED {
            drop(limiter.admit(addr(i), limits, t0).unwrap());
        }
        assert_eq!(
            limiter.admit(addr(MAX_TRACKED), limits, t0).unwrap_err(),
            Limited::Tracked
        );
        // A second later every bucket is full again: they are forgotten to make room.
        let later = t0 + Duration::from_secs(1);
        drop(limiter.admit(addr(MAX_TRACKED), limits, later).unwrap());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
