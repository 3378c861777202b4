//! What a session reports while it runs, not only when it ends: the bytes it relays
//! ([`Meter`], added as they move so `rate()` follows a long session) and its place in its
//! route's active sessions ([`RouteActive`]). On the relay's hot path that is one relaxed
//! atomic add per direction that moved since its last wake-up, on counters looked up once
//! at start, never a family's lock.

use prometheus_client::metrics::gauge::Gauge;

use super::{Metrics, Route, get};

/// Adds a session's relayed bytes to `pgt_proxy_bytes_total` as they move: the relay calls
/// [`Meter::catch_up`] with its running totals, and only the growth since the last call is
/// added (so a long session shows in `rate()`, not only when it ends).
pub(crate) struct Meter {
    metrics: &'static Metrics,
    from_client: u64,
    to_client: u64,
}

impl Meter {
    /// A meter for a session that has relayed nothing yet.
    pub(crate) fn new() -> Self {
        Self {
            metrics: get(),
            from_client: 0,
            to_client: 0,
        }
    }

    /// The session has relayed `from_client` and `to_client` bytes in all.
    pub(crate) fn catch_up(&mut self, from_client: u64, to_client: u64) {
        if from_client > self.from_client {
            let added = from_client - self.from_client;
            self.metrics.bytes_from_client.inc_by(added);
            self.from_client = from_client;
        }
        if to_client > self.to_client {
            let added = to_client - self.to_client;
            self.metrics.bytes_to_client.inc_by(added);
            self.to_client = to_client;
        }
    }
}

/// A connection counted in `route_sessions_active{route}` until this is dropped (so every
/// way a session ends, a panic's unwinding included, takes it off).
#[derive(Debug)]
pub(crate) struct RouteActive(Gauge);

impl RouteActive {
    /// Counts a connection on `route` from now.
    pub(crate) fn begin(route: &str) -> Self {
        let labels = Route {
            route: route.to_owned(),
        };
        let gauge = get().route_sessions_active.get_or_create(&labels).clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for RouteActive {
    fn drop(&mut self) {
        self.0.dec();
    }
}
