//! The runtimes the proxy runs on. The control runtime (multi-threaded) runs the accept
//! loops, the admin endpoint, the service tasks, memory trimming and the refusals over
//! `listen.max_connections`. The session threads are one single-threaded runtime per core,
//! each running the sessions handed to it, so a session's two directions, its timers and its
//! wake-ups stay on one core (no work stealing, no wake-ups crossing runtime threads). The
//! accept loops hand each accepted connection to the thread running the fewest sessions:
//! counting keeps the threads' loads even, where accept loops racing on every thread would
//! leave it to whichever runtime wakes first.
//!
//! Each runtime also has threads for blocking work: name resolution (`getaddrinfo`), OCSP
//! fetches, the auth query's PBKDF2, and `malloc_trim` ([`super::memory`]). Every one of
//! them has a stack and may take a malloc arena, so they are capped
//! ([`MAX_BLOCKING_THREADS`]): a burst of connects must not start hundreds of them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio_util::task::TaskTracker;

/// Most blocking threads of the control runtime, and of the session threads together (each
/// takes its share, but at least two, so one slow OCSP responder or auth query does not
/// queue its thread's name resolutions behind it).
const MAX_BLOCKING_THREADS: usize = 8;

/// Builds the control runtime.
pub(crate) fn control() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// The session threads, each with its runtime's handle and how many sessions it runs.
pub(crate) struct SessionThreads {
    threads: Vec<SessionThread>,
}

struct SessionThread {
    handle: Handle,
    sessions: Arc<AtomicUsize>,
}

/// Gives a thread's session count back when its session ends, however it ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionThreads {
    /// One thread per core the process may use.
    pub(crate) fn per_core() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// Starts `count` threads (at least one). Each drives its runtime until `tracker` is
    /// closed and empty: a single-threaded runtime runs its tasks only while it is driven,
    /// so a thread lives until every session of the process has ended.
    pub(crate) fn start(count: usize, tracker: &TaskTracker) -> std::io::Result<Self> {
        let count = count.max(1);
        let blocking = MAX_BLOCKING_THREADS.div_ceil(count).max(2);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(blocking)
                .build()?;
            let handle = runtime.handle().clone();
            let tracker = tracker.clone();
            std::thread::Builder::new()
                .name(format!("pgt-sessions-{i}"))
                .spawn(move || runtime.block_on(tracker.wait()))?;
            threads.push(SessionThread {
                handle,
                sessions: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { threads })
    }

    /// Runs `session` on the thread with the fewest sessions, tracked by `tracker`. The
    /// connection moves to that thread's runtime before the session starts.
    pub(crate) fn spawn<F, Fut>(&self, tracker: &TaskTracker, tcp: std::net::TcpStream, session: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.sessions.load(Ordering::Relaxed))
        else {
            return;
        };
        thread.sessions.fetch_add(1, Ordering::Relaxed);
        let running = Running(Arc::clone(&thread.sessions));
        thread.handle.spawn(tracker.track_future(async move {
            let _running = running;
            match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => session(tcp).await,
                Err(e) => tracing::error!(error = %e, "a session thread cannot take a connection"),
            }
        }));
    }

    /// Whether every session thread runs a task within `within`: the watchdog is fed only
    /// while all of them do, as a stalled runtime serves none of its sessions.
    pub(crate) async fn all_respond(&self, within: Duration) -> bool {
        for thread in &self.threads {
            let answered = tokio::time::timeout(within, thread.handle.spawn(async {})).await;
            if !matches!(answered, Ok(Ok(()))) {
                return false;
            }
        }
        true
    }
}
