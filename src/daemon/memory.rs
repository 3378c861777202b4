//! Gives memory that ended sessions freed back to the system.
//!
//! glibc's allocator keeps freed memory in its arenas, and live sessions' small objects pin
//! the heap's top: after a burst of handshakes (each needs tens of KiB for a moment) or
//! thousands of sessions closing, the proxy's RSS would stay at its peak for good.
//! `malloc_trim` hands back every free page, not only the heap's top. It walks the arenas,
//! so it runs at most once per [`PERIOD`], and only after sessions have come or gone.
//! Fewer arenas than glibc's default (eight per core) keep freed memory in fewer places.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::session::Sessions;

/// Arenas beyond one per runtime thread (a control thread and a session thread per core)
/// only scatter free memory.
const ARENAS_PER_CORE: usize = 2;

/// Caps glibc's malloc arenas; call before any thread starts.
pub(crate) fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let arenas = i32::try_from(cores * ARENAS_PER_CORE).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX is glibc's (-8).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// How often the session counters are looked at.
const PERIOD: Duration = Duration::from_secs(2);

/// Trims after any period in which sessions started or ended, until `stop` is cancelled.
pub(crate) async fn trim_while_running(sessions: Arc<Sessions>, stop: CancellationToken) {
    let mut seen = (0, 0);
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (
            sessions.active.load(Ordering::Relaxed),
            sessions.total.load(Ordering::Relaxed),
        );
        if now != seen {
            seen = now;
            // Off the runtime's threads: with a large heap the walk takes milliseconds.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Releases free heap pages to the system.
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only inspects and releases the allocator's free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
