//! Query cancellation: the registry of live sessions' cancel keys, and forwarding a matching
//! CancelRequest to the server that runs the session.
//!
//! A CancelRequest is forwarded only when its pid and key match a session this proxy relays,
//! and always to the address that session reached (a DNS failover must not send it elsewhere).
//! Anything else is dropped without a word: answering differently for a wrong key would make
//! the proxy an oracle for guessing keys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::protocol::startup::encode_cancel_request;
use crate::settings::Target;
use crate::upstream::{self, UpstreamError};

/// Live sessions' cancel keys, by backend pid.
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    sessions: Mutex<HashMap<i32, Vec<Entry>>>,
    next_id: AtomicU64,
}

struct Entry {
    id: u64,
    key: Box<[u8]>,
    upstream: SocketAddr,
    /// The upstream the session's route leads to (its connector verifies the cancel's leg).
    target: Arc<Target>,
}

impl std::fmt::Debug for Entry {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({}, {})", self.id, self.upstream)
    }
}

/// Keeps a session's key registered; dropping it removes the key.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<CancelRegistry>,
    pid: i32,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock();
        if let Some(entries) = sessions.get_mut(&self.pid) {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                sessions.remove(&self.pid);
            }
        }
    }
}

/// What became of a CancelRequest.
#[derive(Debug)]
pub(crate) enum CancelOutcome {
    /// Sent to the server, which closed the connection as it does after a cancel.
    Forwarded(SocketAddr),
    /// No live session has this pid and key.
    NoMatch,
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Entry>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (every update
        // is a single insert or retain), so a poisoned lock is safe to use.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session's BackendKeyData, with the address and upstream it reached.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        key: &[u8],
        upstream: SocketAddr,
        target: Arc<Target>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(pid).or_default().push(Entry {
            id,
            key: key.into(),
            upstream,
            target,
        });
        Registration {
            registry: Arc::clone(self),
            pid,
            id,
        }
    }

    /// The upstream address and upstream of the live session with this pid and key.
    pub fn lookup(&self, pid: i32, key: &[u8]) -> Option<(SocketAddr, Arc<Target>)> {
        self.lock().get(&pid)?.iter().find_map(|e| {
            // Constant-time comparison: timing must not reveal how much of a key matched.
            (e.key.len() == key.len() && openssl::memcmp::eq(&e.key, key))
                .then(|| (e.upstream, Arc::clone(&e.target)))
        })
    }
}

/// Forwards a CancelRequest over a new verified TLS connection when it matches a live
/// session, and waits for the server to close that connection (it does so once the cancel is
/// delivered), so the client's own close means the cancel was handed over.
pub(crate) async fn forward(
    registry: &CancelRegistry,
    pid: i32,
    key: &[u8],
) -> Result<CancelOutcome, UpstreamError> {
    let Some((addr, target)) = registry.lookup(pid, key) else {
        return Ok(CancelOutcome::NoMatch);
    };
    let settings = &target;
    let mut stream = upstream::connect_addr(addr, &settings.upstream, &settings.connector).await?;
    let io_error = |source| UpstreamError::Connect { addr, source };
    stream
        .write_all(&encode_cancel_request(pid, key))
        .await
        .map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let _ = tokio::time::timeout(settings.upstream.connect_timeout, async {
        let mut sink = [0u8; 64];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(CancelOutcome::Forwarded(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target for registry tests: only its identity matters.
    fn target() -> Arc<Target> {
        crate::settings::tests_support::target()
    }

    #[test]
    fn only_exact_pid_and_key_match_and_drop_unregisters() {
        let registry = Arc::new(CancelRegistry::default());
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:5432".parse().unwrap();
        let a = registry.register(10, &[1, 2, 3, 4], addr, target());
        let b = registry.register(10, &[5; 32], other, target());
        let found = |pid, key: &[u8]| registry.lookup(pid, key).map(|(addr, _)| addr);
        assert_eq!(found(10, &[1, 2, 3, 4]), Some(addr));
        assert_eq!(found(10, &[5; 32]), Some(other));
        assert_eq!(found(10, &[1, 2, 3, 5]), None);
        assert_eq!(found(10, &[1, 2, 3]), None);
        assert_eq!(found(11, &[1, 2, 3, 4]), None);
        drop(a);
        assert_eq!(found(10, &[1, 2, 3, 4]), None);
        assert_eq!(found(10, &[5; 32]), Some(other));
        drop(b);
        assert!(registry.lock().is_empty());
    }
}
