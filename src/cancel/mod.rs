//! Query cancellation: the registry of live sessions' cancel keys, and forwarding a matching
//! CancelRequest to the server that runs the session, or, in a fleet (`[cluster]`), to the
//! replica that relays it ([`peer`]), which the key names ([`key`]).
//!
//! A CancelRequest is forwarded only when its pid and key match a session this proxy relays,
//! and always to the address that session reached (a DNS failover must not send it elsewhere).
//! One marked as forwarded by a replica is acted on only when it comes from a peer that
//! proved it is one ([`proof`]); one for a peer is forwarded within per-client and global
//! bounds ([`limit`]), its name looked up within bounds of its own ([`lookup`]). Anything else
//! is dropped without a word: answering differently for a wrong key would make the proxy an
//! oracle for guessing keys.

pub(crate) mod key;
mod limit;
mod lookup;
mod outcome;
mod peer;
mod proof;

pub(crate) use outcome::{CancelOutcome, Dropped, Sender};
pub(crate) use proof::Via;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use self::key::Owner;
use self::limit::{ForwardLimiter, ForwardLimits};
use self::lookup::PeerLookups;
use crate::protocol::startup::encode_cancel_request;
use crate::settings::{ClusterSettings, Target};
use crate::upstream::{self, UpstreamError};

/// A BackendKeyData's pid and secret key. The key is zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CancelKey {
    /// The pid.
    pub pid: i32,
    /// The secret.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CancelKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelKey({}, {} bytes)", self.pid, self.key.len())
    }
}

/// A session's keys: the server's, and the one its client was given (the same without a
/// cluster).
#[derive(Debug, Clone)]
pub(crate) struct SessionKeys {
    /// What the server sent, and what a cancel is forwarded with.
    pub server: CancelKey,
    /// What the client received, and what its CancelRequest carries.
    pub client: CancelKey,
}

impl SessionKeys {
    /// The keys for a session whose server sent `server`, on replica `peer_id` (0: no
    /// cluster, the client gets the server's key).
    pub fn issue(server: CancelKey, peer_id: u16) -> Self {
        let mut random = Zeroizing::new(vec![0u8; 2 + server.key.len()]);
        let client = if peer_id == 0 || openssl::rand::rand_bytes(&mut random).is_err() {
            // Without randomness the server's own key still cancels through this replica.
            server.clone()
        } else {
            CancelKey {
                pid: key::issue_pid(peer_id, [random[0], random[1]]),
                key: Zeroizing::new(random[2..].to_vec()),
            }
        };
        Self { server, client }
    }
}

/// Live sessions' cancel keys, by backend pid, and the bounds on forwarding to peers (kept
/// across reloads, like the sessions).
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    sessions: Mutex<HashMap<i32, Vec<Entry>>>,
    next_id: AtomicU64,
    forwards: ForwardLimiter,
    lookups: PeerLookups,
}

struct Entry {
    id: u64,
    /// The client's key (looked up) and the server's (forwarded).
    keys: SessionKeys,
    upstream: SocketAddr,
    /// The upstream the session's route leads to (its connector verifies the cancel's leg).
    target: Arc<Target>,
}

impl std::fmt::Debug for Entry {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({}, {:?}, {})", self.id, self.keys, self.upstream)
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

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Entry>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (every update
        // is a single insert or retain), so a poisoned lock is safe to use.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session's keys, with the address and upstream it reached.
    pub fn register(
        self: &Arc<Self>,
        keys: SessionKeys,
        upstream: SocketAddr,
        target: Arc<Target>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = keys.client.pid;
        self.lock().entry(pid).or_default().push(Entry {
            id,
            keys,
            upstream,
            target,
        });
        Registration {
            registry: Arc::clone(self),
            pid,
            id,
        }
    }

    /// The server's key, address and upstream of the live session whose client was given
    /// this pid and key.
    pub fn lookup(&self, pid: i32, key: &[u8]) -> Option<(CancelKey, SocketAddr, Arc<Target>)> {
        self.lock().get(&pid)?.iter().find_map(|e| {
            let given = &e.keys.client.key;
            // Constant-time comparison: timing must not reveal how much of a key matched.
            (given.len() == key.len() && openssl::memcmp::eq(given, key))
                .then(|| (e.keys.server.clone(), e.upstream, Arc::clone(&e.target)))
        })
    }
}

/// Where a CancelRequest from `sender` goes: to our server when the key is ours (and, when a
/// replica marked it as forwarded, the sender proves it is a peer), to the owning peer (once,
/// within the forwarding bounds) when a peer's, nowhere otherwise. `own` is this replica's
/// id, fixed at start.
pub(crate) async fn dispatch(
    registry: &CancelRegistry,
    own: u16,
    cluster: &ClusterSettings,
    sender: Sender<'_>,
    pid: i32,
    key: &[u8],
) -> Result<CancelOutcome, UpstreamError> {
    match key::owner(pid, own) {
        Owner::Us {
            pid,
            forwarded: false,
        } => forward(registry, pid, key).await,
        Owner::Us {
            pid,
            forwarded: true,
        } => match proof::peer(cluster, sender.via) {
            Ok(_) => forward(registry, pid, key).await,
            Err(why) => Ok(Dropped::outcome(
                "not_peer",
                format!("it is marked as forwarded by a replica, but {why}; not acted on"),
            )),
        },
        Owner::Invalid => Ok(CancelOutcome::NoMatch),
        Owner::Peer {
            id,
            forwarded: true,
        } => Ok(Dropped::outcome(
            "dropped",
            format!(
                "its key names peer {id} and a replica forwarded it already; not forwarded again"
            ),
        )),
        Owner::Peer { id, .. } => {
            let peer = match cluster.peer(id) {
                Ok(peer) => peer,
                Err(why) => {
                    return Ok(Dropped::outcome(
                        "dropped",
                        format!("its key names peer {id}, which {why}"),
                    ));
                }
            };
            let Some(connector) = &cluster.connector else {
                return Ok(Dropped::outcome(
                    "dropped",
                    format!("its key names peer {id}, but no connector to peers was built"),
                ));
            };
            let client = sender.addr.ip();
            let _slot = match registry
                .forwards
                .admit(client, limits(cluster), Instant::now())
            {
                Ok(slot) => slot,
                Err(limited) => {
                    return Ok(Dropped::outcome(
                        "rate_limited",
                        format!("its key names peer {id}, but {limited}; not forwarded"),
                    ));
                }
            };
            let client = (sender.addr, sender.proxy_header);
            let to = (id, &peer);
            let lookups = &registry.lookups;
            let sent = peer::forward(
                to,
                lookups,
                connector,
                client,
                key::mark_forwarded(pid),
                key,
            );
            Ok(match sent.await {
                Ok(addr) => CancelOutcome::ToPeer { id, addr },
                Err(e) => Dropped::outcome("dropped", format!("peer {id} ({}) {e}", peer.address)),
            })
        }
    }
}

/// `cluster.forward_rate` and `cluster.max_concurrent_forwards`, as the limiter takes them.
fn limits(cluster: &ClusterSettings) -> ForwardLimits {
    ForwardLimits {
        rate: cluster.forward_rate,
        concurrent: cluster.max_concurrent_forwards,
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
    let Some((server, addr, target)) = registry.lookup(pid, key) else {
        return Ok(CancelOutcome::NoMatch);
    };
    let settings = &target;
    let mut stream = upstream::connect_addr(addr, &settings.upstream, &settings.connector).await?;
    // PostgreSQL ends the connection without a TLS close_notify once it has taken the
    // cancel, so the way it ends says nothing.
    deliver(&mut stream, &server, settings.upstream.connect_timeout)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    Ok(CancelOutcome::Forwarded {
        addr,
        pid: server.pid,
    })
}

/// How the other end ended a connection that delivered a CancelRequest.
enum Ended {
    /// Closed (or did not within the limit): it has acted on it, or is still at it.
    Closed,
    /// Broke the connection off, e.g. with a TLS alert: a peer that refused us does so.
    Failed(std::io::Error),
}

/// Sends a CancelRequest and waits, up to `limit`, for the other end to close: a server (or
/// a peer) closes once it has acted on it.
async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &CancelKey,
    limit: Duration,
) -> std::io::Result<Ended> {
    let request = Zeroizing::new(encode_cancel_request(key.pid, &key.key));
    stream.write_all(&request).await?;
    stream.flush().await?;
    let ended = tokio::time::timeout(limit, async {
        let mut sink = [0u8; 64];
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ended::Closed,
                Ok(_) => {}
                Err(e) => return Ended::Failed(e),
            }
        }
    })
    .await;
    Ok(ended.unwrap_or(Ended::Closed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target for registry tests: only its identity matters.
    fn target() -> Arc<Target> {
        crate::settings::tests_support::target()
    }

    fn keys(pid: i32, key: &[u8]) -> SessionKeys {
        let server = CancelKey {
            pid,
            key: Zeroizing::new(key.to_vec()),
        };
        SessionKeys::issue(server, 0)
    }

    #[test]
    fn only_exact_pid_and_key_match_and_drop_unregisters() {
        let registry = Arc::new(CancelRegistry::default());
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:5432".parse().unwrap();
        let a = registry.register(keys(10, &[1, 2, 3, 4]), addr, target());
        let b = registry.register(keys(10, &[5; 32]), other, target());
        let found = |pid, key: &[u8]| registry.lookup(pid, key).map(|(_, addr, _)| addr);
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

    #[test]
    fn a_cluster_key_is_looked_up_by_what_the_client_got_and_gives_the_servers() {
        let registry = Arc::new(CancelRegistry::default());
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let server = CancelKey {
            pid: 4242,
            key: Zeroizing::new(vec![9; 4]),
        };
        let issued = SessionKeys::issue(server.clone(), 7);
        let client = issued.client.clone();
        assert_ne!(client.pid, server.pid);
        assert_eq!(client.key.len(), 4);
        assert_eq!(
            key::owner(client.pid, 7),
            Owner::Us {
                pid: client.pid,
                forwarded: false
            }
        );
        let _kept = registry.register(issued, addr, target());
        assert!(registry.lookup(server.pid, &server.key).is_none());
        let (found, _, _) = registry.lookup(client.pid, &client.key).unwrap();
        assert_eq!(found, server);
        // Protocol 3.2's longer keys: the client's is as long, and random.
        let long = CancelKey {
            pid: 4243,
            key: Zeroizing::new(vec![7; 32]),
        };
        let issued = SessionKeys::issue(long.clone(), 7);
        assert_eq!(issued.client.key.len(), 32);
        assert_ne!(issued.client.key, long.key);
    }
}
