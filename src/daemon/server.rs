//! The accept loop: listening sockets, the connection limit and graceful shutdown. Nothing
//! here reads a byte of a connection: the accept loop only decides where a connection runs
//! and whether it is within the limit, so that a slow or hostile client can never hold up
//! the next accept.
//!
//! Every accepted connection runs in its own task on one of the session threads
//! ([`super::runtimes`]), tracked so shutdown can wait for them.
//! The limit is a semaphore: a connection that gets no permit is answered FATAL 53300 by a
//! small, separately bounded pool of refusal tasks, so a flood can neither exceed the limit
//! nor pile up refusals. Accept errors (EMFILE, ENFILE, ENOBUFS) never stop the proxy: they
//! are logged and retried with back-off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::runtimes::SessionThreads;
use super::shared::Shared;
use crate::session;
use crate::settings::Listener;

/// Most connections being refused (over the limit) at once; beyond it they are closed
/// without a message, which only happens under a flood.
const MAX_CONCURRENT_REFUSALS: usize = 64;
/// Longest pause after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// After `shutdown_timeout`, how long sessions get to deliver their 57P01 and close.
const TERMINATE_LIMIT: Duration = Duration::from_secs(5);

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub(crate) struct BindError {
    /// The address.
    pub(crate) addr: SocketAddr,
    /// The socket error.
    pub(crate) source: std::io::Error,
}

/// Binds every configured address, each tagged with the listener it belongs to, with
/// SO_REUSEPORT when `reuse_port` (so several processes can share them); any failure is
/// fatal at start. An IPv6 wildcard takes IPv6 only (IPV6_V6ONLY) when an IPv4 address is
/// bound on its port too, as PostgreSQL's `listen_addresses = '*'` does: dual-stack, it
/// would claim the IPv4 port (EADDRINUSE beside `0.0.0.0`). Alone it stays dual-stack.
pub(crate) async fn bind(
    addresses: &[(SocketAddr, Listener)],
    reuse_port: bool,
) -> Result<Vec<(TcpListener, Listener)>, BindError> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for &(addr, listener) in addresses {
        let bound = (|| {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            if ipv6_only(addr, addresses) {
                socket2::SockRef::from(&socket).set_only_v6(true)?;
            }
            socket.set_reuseaddr(true)?;
            if reuse_port {
                socket.set_reuseport(true)?;
            }
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        listeners.push((
            bound.map_err(|source| BindError { addr, source })?,
            listener,
        ));
    }
    Ok(listeners)
}

/// Whether `addr` is an IPv6 wildcard whose port an IPv4 address of `all` is bound on too
/// (an IPv4-mapped one counts: it is an IPv4 address to the kernel).
fn ipv6_only(addr: SocketAddr, all: &[(SocketAddr, Listener)]) -> bool {
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && addr.port() != 0
        && all
            .iter()
            .any(|(a, _)| a.port() == addr.port() && a.ip().to_canonical().is_ipv4())
}

/// Serves until `shutdown` resolves, keeps accepting for `listen.drain_delay` (while
/// balancers, told by `/readyz`, stop sending), then stops accepting, lets sessions run for up
/// to `listen.shutdown_timeout`, and then ends the remaining ones with FATAL 57P01. Sessions
/// run on `threads`, tracked by `tracker` (the one the threads were started with).
/// `started` runs once every accept loop is running (not merely spawned), unless the
/// shutdown comes first: what tells systemd and balancers the proxy is ready waits for it.
pub(crate) async fn run(
    listeners: Vec<(TcpListener, Listener)>,
    shared: Arc<Shared>,
    threads: Arc<SessionThreads>,
    tracker: TaskTracker,
    started: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) {
    let token = CancellationToken::new();
    let limit = Arc::clone(&shared.limit);
    let refusals = Arc::new(Semaphore::new(MAX_CONCURRENT_REFUSALS));
    let loops = listeners.len();
    let (running_tx, mut running_rx) = tokio::sync::mpsc::channel(loops.max(1));
    for (listener, kind) in listeners {
        let acceptor = Acceptor {
            listener,
            kind,
            shared: Arc::clone(&shared),
            limit: Arc::clone(&limit),
            refusals: Arc::clone(&refusals),
            token: token.clone(),
            tracker: tracker.clone(),
            threads: Arc::clone(&threads),
        };
        // Tracked, so shutdown also waits for the sessions it starts from its backlog.
        tracker.spawn(acceptor.run(running_tx.clone()));
    }
    drop(running_tx);
    tokio::spawn(super::memory::trim_while_running(
        Arc::clone(&shared.sessions),
        token.clone(),
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    let all_running = async {
        for _ in 0..loops {
            if running_rx.recv().await.is_none() {
                // A loop ended before it ran: never ready, which the watchdog reports.
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        () = &mut shutdown => {}
        () = all_running => {
            started();
            shutdown.await;
        }
    }
    let delay = shared.settings.load().listen.drain_delay;
    if !delay.is_zero() {
        tracing::info!(
            "draining: /readyz answers 503; still accepting new connections for {} \
             (listen.drain_delay)",
            humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
    }
    token.cancel();
    tracker.close();
    let grace = shared.settings.load().listen.shutdown_timeout;
    let active = shared.sessions.active.load(Ordering::Relaxed);
    tracing::info!(
        active,
        "shutting down: no new connections; sessions may finish within {}",
        humantime::format_duration(grace)
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        let left = shared.sessions.active.load(Ordering::Relaxed);
        tracing::warn!(
            sessions = left,
            "listen.shutdown_timeout reached; ending the remaining sessions with FATAL 57P01"
        );
        shared.sessions.stop.cancel();
        if tokio::time::timeout(TERMINATE_LIMIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still open after 57P01; closing them");
        }
    }
}

/// One listening socket's accept loop and what it needs to start sessions.
struct Acceptor {
    /// The bound socket.
    listener: TcpListener,
    /// Which configured listener it is: whether its connections start with a PROXY header.
    kind: Listener,
    /// The process's state: the settings each connection starts with, the live sessions.
    shared: Arc<Shared>,
    /// `listen.max_connections` permits, shared by all listeners.
    limit: Arc<Semaphore>,
    /// Bounds the tasks that answer 53300.
    refusals: Arc<Semaphore>,
    /// Cancelled on shutdown.
    token: CancellationToken,
    /// Tracks session tasks so shutdown can wait for them.
    tracker: TaskTracker,
    /// Where sessions run.
    threads: Arc<SessionThreads>,
}

impl Acceptor {
    /// Accepts until shutdown; counts itself in `Shared::accepting` while it runs, and says
    /// so on `running` once counted.
    async fn run(self, running: tokio::sync::mpsc::Sender<()>) {
        // The watchdog pings, and /readyz answers 200, only while every accept loop runs:
        // one that ended means the proxy no longer serves that address, and systemd
        // should restart it.
        struct Running<'a>(&'a Shared);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.accepting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.shared.accepting.fetch_add(1, Ordering::Relaxed);
        let _running = Running(&self.shared);
        // The channel has room for every loop, so this never waits.
        let _ = running.try_send(());
        drop(running);
        let local = self.listener.local_addr().ok();
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = self.token.cancelled() => {
                    self.serve_backlog().await;
                    return;
                }
                accepted = self.listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => {
                    backoff = Duration::from_millis(5);
                    conn
                }
                Err(e) => {
                    tracing::error!(listen = ?local, error = %e, "accept failed; retrying in {} ms", backoff.as_millis());
                    tokio::select! {
                        _ = self.token.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            self.start(tcp, peer);
        }
    }

    /// Serves the connections the kernel completed but we had not accepted yet when the
    /// shutdown began: closing the socket would reset them, after a load balancer had
    /// already counted them as connected (too late for its retry). New ones are refused
    /// by the closed port, which a balancer does retry elsewhere.
    async fn serve_backlog(&self) {
        loop {
            let accepted = tokio::select! {
                biased;
                accepted = self.listener.accept() => accepted,
                () = std::future::ready(()) => return,
            };
            match accepted {
                Ok((tcp, peer)) => self.start(tcp, peer),
                Err(_) => return,
            }
        }
    }

    /// Starts a session (or, over the limit, its refusal) for an accepted connection.
    fn start(&self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        crate::socket::tune(&tcp);
        let peer = crate::client::canonical(peer);
        let settings = self.shared.settings.load_full();
        let sessions = Arc::clone(&self.shared.sessions);
        let listener = self.kind;
        match Arc::clone(&self.limit).try_acquire_owned() {
            Ok(permit) => match tcp.into_std() {
                Ok(tcp) => self.threads.spawn(&self.tracker, tcp, move |tcp| {
                    let limit = session::Limit::Within;
                    session::serve(tcp, (peer, listener), settings, sessions, permit, limit)
                }),
                Err(e) => {
                    tracing::error!(client_addr = %peer, error = %e, "connection closed: it could not be handed to a session thread");
                }
            },
            Err(_) => match Arc::clone(&self.refusals).try_acquire_owned() {
                Ok(permit) => {
                    self.tracker.spawn(session::serve(
                        tcp,
                        (peer, listener),
                        settings,
                        sessions,
                        permit,
                        session::Limit::Over,
                    ));
                }
                Err(_) => {
                    tracing::warn!(client_addr = %peer, "connection closed: over listen.max_connections and too many refusals in progress");
                }
            },
        }
    }
}
