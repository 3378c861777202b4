//! What the proxy judges about itself: whether it is alive (every accept loop runs, every
//! session thread answers), the one judgement the systemd watchdog and `/healthz` share, so
//! a probe fails exactly when systemd would restart the proxy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::runtimes::SessionThreads;
use super::shared::Shared;

/// Why the proxy is not alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unhealthy {
    /// Fewer accept loops run than listeners were bound (before the drain).
    #[error("an accept loop is not running")]
    AcceptLoop,
    /// A session thread did not run a task within the wait.
    #[error("a session thread does not answer")]
    SessionThread,
}

/// Checks that every accept loop runs (unless the drain has closed them on purpose) and
/// that every session thread runs a task within `within`.
pub(crate) async fn check(
    shared: &Shared,
    threads: &SessionThreads,
    within: Duration,
) -> Result<(), Unhealthy> {
    let listeners = shared.listeners.load(Ordering::Relaxed);
    let draining = shared.draining.load(Ordering::Relaxed);
    if !draining && shared.accepting.load(Ordering::Relaxed) != listeners {
        return Err(Unhealthy::AcceptLoop);
    }
    if !threads.all_respond(within).await {
        return Err(Unhealthy::SessionThread);
    }
    Ok(())
}
