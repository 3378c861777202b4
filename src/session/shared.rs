//! What every session shares: the running settings, the cancel registry, the counters, and
//! the signal that ends sessions at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::cancel::CancelRegistry;
use crate::running::Running;
use crate::settings::Settings;

/// Shared by the accept loops, every session and the service tasks.
pub struct Shared {
    /// The running configuration. A reload swaps it whole; each connection takes the
    /// snapshot current at accept and keeps it to the end, so a reload never changes a live
    /// session.
    pub settings: ArcSwap<Running>,
    /// Live sessions' cancel keys.
    pub(crate) cancels: Arc<CancelRegistry>,
    /// Sessions currently open.
    pub active: AtomicUsize,
    /// Sessions served since start.
    pub total: AtomicU64,
    /// Cancelled when `listen.shutdown_timeout` has run out: remaining sessions get FATAL
    /// 57P01 and end.
    pub terminate: CancellationToken,
    /// Accept loops running, counted by each loop itself once it runs (the watchdog pings,
    /// and `/readyz` answers 200, only while all are).
    pub accepting: AtomicUsize,
    /// Listening sockets bound at start (all must accept for `/readyz`).
    pub listeners: AtomicUsize,
    /// Set on SIGTERM: `/readyz` answers 503 from then on, while sessions drain.
    pub draining: AtomicBool,
    /// Open connections per client address (`listen.max_connections_per_client`).
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in the per-address count; dropping it gives the place back.
pub(crate) struct ClientClaim {
    shared: Arc<Shared>,
    address: IpAddr,
}

impl Drop for ClientClaim {
    fn drop(&mut self) {
        let mut clients = self
            .shared
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

impl Shared {
    /// Counts a connection from `address`; `None` when it has `limit` already (0: none).
    /// Bounded by `listen.max_connections`: one entry per address with a live connection.
    pub(crate) fn claim(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<ClientClaim> {
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
            shared: Arc::clone(self),
            address,
        })
    }

    /// Whether a balancer should send new connections: the listeners are bound, every one's
    /// accept loop is running, and no shutdown has begun.
    pub fn ready(&self) -> bool {
        let listeners = self.listeners.load(Ordering::Relaxed);
        !self.draining.load(Ordering::Relaxed)
            && listeners > 0
            && self.accepting.load(Ordering::Relaxed) == listeners
    }

    /// Starts what `settings` run with, beside an empty registry and zeroed counters.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(Running::start(settings)),
            cancels: Arc::default(),
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            terminate: CancellationToken::new(),
            accepting: AtomicUsize::new(0),
            listeners: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            clients: Mutex::default(),
        })
    }
}
