//! What every session shares: the running settings, the cancel registry, the counters, and
//! the signal that ends sessions at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::cancel::CancelRegistry;
use crate::settings::Settings;

/// Shared by the accept loops, every session and the service tasks.
pub struct Shared {
    /// The running configuration. A reload swaps it whole; each connection takes the
    /// snapshot current at accept and keeps it to the end, so a reload never changes a live
    /// session.
    pub settings: ArcSwap<Settings>,
    /// Live sessions' cancel keys.
    pub(crate) cancels: Arc<CancelRegistry>,
    /// Sessions currently open.
    pub active: AtomicUsize,
    /// Sessions served since start.
    pub total: AtomicU64,
    /// Cancelled when `listen.shutdown_timeout` has run out: remaining sessions get FATAL
    /// 57P01 and end.
    pub terminate: CancellationToken,
    /// Accept loops running (the watchdog pings only while all are).
    pub accepting: AtomicUsize,
    /// Listening sockets bound at start (all must accept for `/readyz`).
    pub listeners: AtomicUsize,
    /// Set on SIGTERM: `/readyz` answers 503 from then on, while sessions drain.
    pub draining: AtomicBool,
}

impl Shared {
    /// Whether a balancer should send new connections: every listener accepts and no
    /// shutdown has begun.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self.accepting.load(Ordering::Relaxed) == self.listeners.load(Ordering::Relaxed)
    }

    /// Wraps settings with an empty registry and zeroed counters.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(settings),
            cancels: Arc::default(),
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            terminate: CancellationToken::new(),
            accepting: AtomicUsize::new(0),
            listeners: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        })
    }
}
