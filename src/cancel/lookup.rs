//! Resolving a peer's name before a cancel is forwarded to it, within bounds. Any client can
//! send a key naming any peer id, and with `cluster.peer_address` every id has a name, so
//! a lookup must not be bought for free: a failed one is remembered per peer id for
//! [`FAILURE_TTL`] (a forged id costs one lookup per interval), and at most
//! [`MAX_IN_FLIGHT`] run at once in the process, others waiting for their turn up to the
//! same time limit (a lookup then has the whole limit, so a wait is never remembered as the
//! name's failure). The permit is held by the blocking task itself until getaddrinfo
//! returns, also after the forward gave up waiting, so slow DNS can never take more than
//! that many of the blocking threads that upstream connects resolve their servers on (a
//! runtime has at least two, `daemon::runtimes`).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long a failed lookup of a peer's name stands before the name is looked up again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Peer lookups under way at once, counting those abandoned after their timeout: one, so
/// every runtime keeps a blocking thread for its sessions whatever DNS does.
pub(crate) const MAX_IN_FLIGHT: usize = 1;
/// Failures remembered before expired ones are swept (ids are at most 16383, so the map
/// is bounded anyway).
const SWEEP_AT: usize = 1024;

/// Why a peer's name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupError {
    /// The lookup failed now.
    #[error("its name did not resolve: {reason}")]
    Failed {
        /// What the resolver said.
        reason: String,
    },
    /// It failed less than [`FAILURE_TTL`] ago.
    #[error(
        "its name did not resolve {}s ago ({reason}); a failed name is looked up again after {}s",
        ago.as_secs(),
        FAILURE_TTL.as_secs()
    )]
    Remembered {
        /// What the resolver said then.
        reason: String,
        /// How long ago.
        ago: Duration,
    },
    /// [`MAX_IN_FLIGHT`] lookups are under way already.
    #[error(
        "its name was not looked up: another lookup of a peer's name held the resolver for {}s (slow DNS?)",
        limit.as_secs_f32()
    )]
    Busy {
        /// How long it waited for its turn.
        limit: Duration,
    },
}

/// The failures remembered and the permits for lookups; kept across reloads.
#[derive(Debug)]
pub(crate) struct PeerLookups {
    failed: Mutex<HashMap<u16, (Instant, String)>>,
    permits: Arc<Semaphore>,
}

impl Default for PeerLookups {
    fn default() -> Self {
        Self {
            failed: Mutex::default(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

impl PeerLookups {
    /// Peer `id`'s addresses for `host`:`port`, resolved by the system within `limit`.
    pub async fn resolve(
        &self,
        id: u16,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<Vec<SocketAddr>, LookupError> {
        // An address needs no resolver (a `cluster.peers` entry such as "10.0.0.7:5432").
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = (host.to_owned(), port);
        self.resolve_with(id, limit, move || {
            name.to_socket_addrs().map(Iterator::collect)
        })
        .await
    }

    /// [`Self::resolve`] with `lookup` as the blocking resolver.
    async fn resolve_with(
        &self,
        id: u16,
        limit: Duration,
        lookup: impl FnOnce() -> std::io::Result<Vec<SocketAddr>> + Send + 'static,
    ) -> Result<Vec<SocketAddr>, LookupError> {
        let now = Instant::now();
        if let Some((at, reason)) = self.lock().get(&id) {
            let ago = now.saturating_duration_since(*at);
            if ago < FAILURE_TTL {
                return Err(LookupError::Remembered {
                    reason: reason.clone(),
                    ago,
                });
            }
        }
        let turn = tokio::time::timeout(limit, Arc::clone(&self.permits).acquire_owned());
        let Ok(Ok(permit)) = turn.await else {
            return Err(LookupError::Busy { limit });
        };
        let task = tokio::task::spawn_blocking(move || {
            let _held_until_the_resolver_returns = permit;
            lookup()
        });
        // The lookup gets its whole limit from its turn: time spent waiting for another
        // lookup is not this name's failure, and must not be remembered against its id.
        let reason = match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(addrs))) if !addrs.is_empty() => {
                self.lock().remove(&id);
                return Ok(addrs);
            }
            Ok(Ok(Ok(_))) => "no address found".to_owned(),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => format!("the lookup failed: {e}"),
            Err(_) => format!("timed out after {}s", limit.as_secs_f32()),
        };
        let mut failed = self.lock();
        if failed.len() >= SWEEP_AT {
            failed.retain(|_, (at, _)| now.saturating_duration_since(*at) < FAILURE_TTL);
        }
        failed.insert(id, (Instant::now(), reason.clone()));
        Err(LookupError::Failed { reason })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, (Instant, String)>> {
        // Every update is one insert, remove or retain: a poisoned map is consistent.
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(50);

    fn refused() -> std::io::Result<Vec<SocketAddr>> {
        Err(std::io::Error::other("NXDOMAIN"))
    }

    #[tokio::test]
    async fn a_failure_is_remembered_per_id_and_a_success_forgets_it() {
        let lookups = PeerLookups::default();
        let first = lookups.resolve_with(10, LIMIT, refused).await;
        assert!(
            matches!(first, Err(LookupError::Failed { .. })),
            "{first:?}"
        );
        let again = lookups
            .resolve_with(10, LIMIT, || panic!("looked up again"))
            .await;
        assert!(
            matches!(&again, Err(LookupError::Remembered { reason, .. }) if reason == "NXDOMAIN"),
            "{again:?}"
        );
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let other = lookups.resolve_with(11, LIMIT, move || Ok(vec![addr]));
        assert_eq!(other.await, Ok(vec![addr]));
        // Once the interval is over, the name is looked up again.
        lookups.lock().get_mut(&10).unwrap().0 -= FAILURE_TTL;
        let later = lookups.resolve_with(10, LIMIT, move || Ok(vec![addr]));
        assert_eq!(later.await, Ok(vec![addr]));
        assert!(lookups.lock().is_empty());
    }

    /// A lookup that got its turn late (another held the resolver) still gets its whole
    /// limit: the time spent waiting is not the name's failure, and must not be remembered
    /// against it (forged cancels that keep the resolver busy would otherwise mark a real
    /// peer's name as failed for the interval).
    #[tokio::test]
    async fn a_lookup_that_waited_for_its_turn_gets_its_whole_limit() {
        const LIMIT: Duration = Duration::from_millis(1000);
        let lookups = PeerLookups::default();
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let first = lookups.resolve_with(1, LIMIT, move || {
            let _ = stalled.recv();
            refused()
        });
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let late = async {
            // Queued behind the first, which holds the permit until it is released.
            while lookups.permits.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
            lookups
                .resolve_with(2, LIMIT, move || {
                    std::thread::sleep(LIMIT * 6 / 10);
                    Ok(vec![addr])
                })
                .await
        };
        let releaser = async {
            tokio::time::sleep(LIMIT * 7 / 10).await;
            release.send(()).unwrap();
        };
        let (_, late, ()) = tokio::join!(first, late, releaser);
        assert_eq!(late, Ok(vec![addr]));
        assert!(!lookups.lock().contains_key(&2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn abandoned_lookups_keep_their_permits_until_the_resolver_returns() {
        let lookups = PeerLookups::default();
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let stalled = Arc::new(Mutex::new(stalled));
        for id in 1..=MAX_IN_FLIGHT as u16 {
            let stalled = Arc::clone(&stalled);
            let slow = move || {
                let _ = stalled.lock().unwrap().recv();
                refused()
            };
            let timed_out = lookups.resolve_with(id, LIMIT, slow).await;
            assert!(
                matches!(&timed_out, Err(LookupError::Failed { reason, .. }) if reason.contains("timed out")),
                "{timed_out:?}"
            );
        }
        let busy = lookups
            .resolve_with(100, LIMIT, || panic!("a lookup beyond the bound ran"))
            .await;
        assert!(matches!(busy, Err(LookupError::Busy { .. })), "{busy:?}");
        for _ in 0..MAX_IN_FLIGHT {
            release.send(()).unwrap();
        }
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let freed = async {
            loop {
                match lookups
                    .resolve_with(100, LIMIT, move || Ok(vec![addr]))
                    .await
                {
                    Err(LookupError::Busy { .. }) => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        };
        let freed = tokio::time::timeout(Duration::from_secs(5), freed).await;
        assert_eq!(freed.unwrap(), Ok(vec![addr]));
    }
}
