//! What the live sessions of one process have in common: their cancel keys, how many there
//! are and from which addresses, and the signal that ends them at shutdown. The daemon holds
//! one and lends it to every connection; nothing here knows of listeners, threads or
//! systemd.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::cancel::CancelRegistry;

/// The live sessions, counted and reachable by cancel key.
#[derive(Default)]
pub(crate) struct Sessions {
    /// Live sessions' cancel keys.
    pub(super) cancels: Arc<CancelRegistry>,
    /// Sessions currently open.
    pub(crate) active: AtomicUsize,
    /// Sessions served since start.
    pub(crate) total: AtomicU64,
    /// Cancelled when a shutdown's `listen.shutdown_timeout` has run out: every remaining
    /// session gets FATAL 57P01 and stops.
    pub(crate) stop: CancellationToken,
    /// Open connections per client address (`listen.max_connections_per_client`). Here and
    /// not in the daemon: only admission reads it, and a connection's claim lives and dies
    /// with the connection.
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in the per-address count; dropping it gives the place back.
pub(super) struct ClientClaim {
    sessions: Arc<Sessions>,
    address: IpAddr,
}

impl Drop for ClientClaim {
    fn drop(&mut self) {
        let mut clients = self
            .sessions
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = clients.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.address);
            }
        }
    }
}

impl Sessions {
    /// Counts a connection from `address`; `None` when it has `limit` already (0: none).
    /// Bounded by `listen.max_connections`: one entry per address with a live connection.
    pub(super) fn claim(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<ClientClaim> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = clients.entry(address).or_insert(0);
        if limit > 0 && *n >= limit {
            if *n == 0 {
                clients.remove(&address);
            }
            return None;
        }
        *n += 1;
        Some(ClientClaim {
            sessions: Arc::clone(self),
            address,
        })
    }
}
