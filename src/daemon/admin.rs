//! The admin endpoint (`admin.listen`): plain HTTP/1.1 on a listener of its own, never the
//! PostgreSQL port. `GET /metrics` (Prometheus' text format 0.0.4, or OpenMetrics when the
//! scraper asks for it), `GET /healthz` (200 while the proxy is alive by the watchdog's own
//! checks, [`super::health`], draining included; 503 and the reason otherwise), `GET /readyz`
//! (200 once every listener's accept loop runs; 503 once SIGTERM has begun the drain, so a
//! balancer stops sending connections before the listeners close, and while the proxy is at
//! `listen.max_connections` unless `admin.ready_at_max_connections`). Bounded: at most
//! [`MAX_CONNECTIONS`] at once and [`MAX_PER_ADDRESS`] of them from one address, each with a
//! header deadline (which also closes a kept-alive connection that sends no next request)
//! and a lifetime limit, so idle clients cannot hold the slots.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::runtimes::SessionThreads;
use super::server::BindError;
use super::shared::Shared;

/// Scrapers and probes at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// Of those, from one address: the kubelet's probes (from the node), the scrapers and a
/// balancer's health checks each keep their own, so one client that can reach the port
/// cannot hold every slot until the probes time out and the pod is restarted. Beyond it a
/// connection is closed at once.
const MAX_PER_ADDRESS: usize = 4;
/// A request's headers must arrive within this, counted from the connection's start or the
/// previous response: hyper's header timer runs while it waits for the next request head,
/// so an idle keep-alive connection is closed after this too.
const HEADER_LIMIT: Duration = Duration::from_secs(5);
/// A connection (keep-alive included) lasts at most this.
const CONNECTION_LIMIT: Duration = Duration::from_secs(60);
/// `/healthz`: how long each session thread may take to run a task; within a probe's
/// usual one-second timeout.
const THREAD_ANSWER_LIMIT: Duration = Duration::from_millis(500);

/// Serves the endpoint on `listener` until `stop` is cancelled; `/healthz` asks `threads`.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    threads: Arc<SessionThreads>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(share) = Share::take(&per_address, peer.ip().to_canonical()) else {
            tracing::debug!(client_addr = %peer, "admin connection closed: {MAX_PER_ADDRESS} from this address already");
            continue;
        };
        let (shared, threads) = (Arc::clone(&shared), Arc::clone(&threads));
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (shared, threads) = (Arc::clone(&shared), Arc::clone(&threads));
                async move { Ok::<_, Infallible>(respond(&req, &shared, &threads).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_LIMIT)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, connection).await;
            drop(share);
            drop(permit);
        });
    }
}

/// Connections open per client address (only those holding a slot, so at most
/// [`MAX_CONNECTIONS`] entries).
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in its address's share; given back when dropped.
struct Share {
    counts: PerAddress,
    address: IpAddr,
}

impl Share {
    /// A place for a connection from `address`, unless it has [`MAX_PER_ADDRESS`] already.
    fn take(counts: &PerAddress, address: IpAddr) -> Option<Share> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.entry(address).or_insert(0);
        if *open >= MAX_PER_ADDRESS {
            return None;
        }
        *open += 1;
        Some(Share {
            counts: Arc::clone(counts),
            address,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = map.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// Binds the endpoint; a failure is fatal at start, like the PostgreSQL listeners'.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

async fn respond(
    req: &Request<Incoming>,
    shared: &Shared,
    threads: &SessionThreads,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let (body, kind) = if openmetrics {
                (
                    crate::metrics::get().encode(true),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    crate::metrics::get().encode(false),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        "/healthz" => match super::health::check(shared, threads, THREAD_ANSWER_LIMIT).await {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(e) => unavailable(&e.to_string()),
        },
        "/readyz" => match shared.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => unavailable(why),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
        ),
    }
}

fn unavailable(why: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{why}\n"))));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}
