//! The state of the whole process: the running settings, the live sessions, and what tells
//! systemd and a balancer whether the proxy serves (accept loops running, draining).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

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
}

impl Shared {
    /// Starts what `settings` run with, with no sessions and zeroed counters.
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(Running::start(settings)),
            sessions: Arc::default(),
            accepting: AtomicUsize::new(0),
            listeners: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        })
    }

    /// Whether a balancer should send new connections: the listeners are bound, every one's
    /// accept loop is running, and no shutdown has begun.
    pub(crate) fn ready(&self) -> bool {
        let listeners = self.listeners.load(Ordering::Relaxed);
        !self.draining.load(Ordering::Relaxed)
            && listeners > 0
            && self.accepting.load(Ordering::Relaxed) == listeners
    }
}
