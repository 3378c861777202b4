//! The state of the whole process: the running settings, the live sessions, and what tells
//! systemd and a balancer whether the proxy serves (accept loops running, draining, room
//! under the connection limit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::running::Running;
use crate::session::Sessions;
use crate::settings::Settings;

/// Shared by the accept loops, the service tasks and the admin endpoint.
pub(crate) struct Shared {
    /// The running configuration. A reload swaps it whole; each connection is given the
    /// snapshot current at accept and keeps it to the end, so a reload never changes a live
    /// session.
    pub(crate) settings: ArcSwap<Running>,
    /// What every live session shares: the cancel keys, the counts, the stop signal.
    pub(crate) sessions: Arc<Sessions>,
    /// Accept loops running, counted by each loop itself once it runs (the watchdog pings,
    /// and `/readyz` answers 200, only while all are).
    pub(crate) accepting: AtomicUsize,
    /// Listening sockets bound at start (all must accept for `/readyz`).
    pub(crate) listeners: AtomicUsize,
    /// Set on SIGTERM: `/readyz` answers 503 from then on, while sessions drain.
    pub(crate) draining: AtomicBool,
    /// `listen.max_connections` permits, shared by all listeners: a session holds one.
    pub(crate) limit: Arc<Semaphore>,
}

impl Shared {
    /// Starts what `settings` run with, with no sessions and zeroed counters.
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        let limit = Arc::new(Semaphore::new(settings.start.max_connections));
        Arc::new(Self {
            limit,
            settings: ArcSwap::from_pointee(Running::start(settings)),
            sessions: Arc::default(),
            accepting: AtomicUsize::new(0),
            listeners: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        })
    }

    /// Whether a balancer should send new connections: the listeners are bound, every one's
    /// accept loop is running, no shutdown has begun, and (unless
    /// `admin.ready_at_max_connections`) a session would get a permit; else why not.
    pub(crate) fn ready(&self) -> Result<(), &'static str> {
        let listeners = self.listeners.load(Ordering::Relaxed);
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining: shutting down");
        }
        if listeners == 0 || self.accepting.load(Ordering::Relaxed) != listeners {
            return Err("not accepting on every listener");
        }
        if self.limit.available_permits() == 0 && !self.settings.load().ready_at_max_connections {
            return Err("at listen.max_connections");
        }
        Ok(())
    }
}
