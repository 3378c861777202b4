//! One client connection from accept to close, as a sequence of small phases:
//!
//! 1. [`admission`]: who the client is and what it may do, decided once for every path
//!    (a session or a cancel, within the connection limit or over it).
//! 2. [`handshake`]: the plaintext opening (SSLRequest, GSSENCRequest, direct TLS, a
//!    plaintext CancelRequest), then the client's TLS handshake beside the upstream connect,
//!    and the checks on the client's certificate.
//! 3. [`startup`]: the first packet inside TLS, typed and judged once (StartupMessage or an
//!    encrypted CancelRequest); the server only ever gets the packet rebuilt from it.
//!    A CancelRequest, plaintext or encrypted, is forwarded by [`cancel`] instead.
//! 4. [`login`](mod@login): the authentication exchange, relayed ([`passthrough`]) or
//!    SCRAM terminated ([`scram_login`]).
//! 5. [`crate::relay`]: bytes both ways until one side ends.
//!
//! Generic over the client's socket ([`ClientIo`]), so in-process tests run the same driver.
//! Every phase returns a [`SessionError`] when it fails; [`refuse`] tells the client what
//! [`SessionError::refusal`] says (the one place that decides it), and [`log`] writes the
//! one line per connection from the same [`Outcome`]. Nothing is relayed until both legs are
//! verified.

mod admission;
#[cfg(test)]
mod admission_tests;
mod cancel;
mod client_proof;
mod error;
mod handshake;
mod log;
mod login;
mod passthrough;
mod scram_login;
mod sessions;
mod startup;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use openssl::ssl::NameType;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};

use self::admission::Admission;
use self::handshake::{ClientLeg, UpstreamLeg};
use self::log::{Outcome, Record};
use self::login::{LoginEnds, Plan, login};
use self::passthrough::Authenticated;
use self::startup::StartupPacket;
use crate::client::{self, ClientIo, ClientStream, Opening};
use crate::framed::FrameReader;
use crate::relay;
use crate::running::Running;
use crate::settings::{Listener, Settings};
use crate::upstream::Upstream;

pub(crate) use self::admission::Limit;
pub(crate) use self::error::SessionError;
pub(crate) use self::sessions::Sessions;

/// Serves one accepted connection, from `peer` to `listener` (whose rule says whether a PROXY
/// header comes first), with `settings`, the snapshot taken at accept, among the process's
/// live `sessions`. `limit`: whether the accept loop found a slot under
/// `listen.max_connections` (held by `permit`); over it, the connection is still admitted
/// the same way, and only a cancel is served.
pub(crate) async fn serve<S: ClientIo>(
    io: S,
    (peer, listener): (SocketAddr, Listener),
    settings: Arc<Running>,
    sessions: Arc<Sessions>,
    permit: OwnedSemaphorePermit,
    limit: Limit,
) {
    let counted = limit == Limit::Within;
    if counted {
        sessions.active.fetch_add(1, Ordering::Relaxed);
        sessions.total.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().sessions_active.inc();
    }
    let mut record = Record::new(peer);
    let outcome = connection(io, listener, &settings, &sessions, &mut record, limit).await;
    log::session_end(&record, &outcome);
    log::count(&record, &outcome);
    if counted {
        crate::metrics::get().sessions_active.dec();
        sessions.active.fetch_sub(1, Ordering::Relaxed);
    }
    drop(permit);
}

/// Admission, then the session or the cancel it allows; what admission holds (the
/// per-address claim) is held until the connection ends.
async fn connection<S: ClientIo>(
    mut io: S,
    listener: Listener,
    settings: &Running,
    sessions: &Arc<Sessions>,
    record: &mut Record,
    limit: Limit,
) -> Outcome {
    let deadline = Instant::now() + settings.listen.handshake_timeout;
    let arrival = (listener, limit);
    let begun = Admission::begin(&mut io, sessions, settings, record, deadline, arrival);
    let mut admission = match begun.await {
        Ok(admission) => admission,
        Err(e) => return Outcome::Refused(e.into()),
    };
    let established = establish(io, sessions, settings, record, deadline, &mut admission);
    match Box::pin(established).await {
        Ok(established) => relay(*established, sessions, record).await,
        Err(outcome) => outcome,
    }
}

/// Tells the client what `error` says it should hear (if anything), and makes it the
/// outcome.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, error: SessionError) -> Outcome {
    if let Some(refusal) = error.refusal() {
        client::tell(stream, &refusal).await;
    }
    Outcome::Refused(error)
}

/// An authenticated session, ready to relay.
struct Established<S> {
    client: ClientStream<S>,
    server: tokio_openssl::SslStream<TcpStream>,
    auth: Authenticated,
    addr: SocketAddr,
    /// Where the session's route leads (cancels go there).
    target: Arc<crate::settings::Target>,
}

/// Everything before the relay. Its future is large (handshakes, timers, the startup
/// exchange) and is freed once it is done, so a long idle session keeps only the relay's
/// small state. `Err` is how the connection ended instead.
async fn establish<S: ClientIo>(
    mut io: S,
    sessions: &Sessions,
    settings: &Running,
    record: &mut Record,
    deadline: Instant,
    admission: &mut Admission,
) -> Result<Box<Established<S>>, Outcome> {
    let (prefix, direct) = match handshake::opening(&mut io, settings, deadline).await {
        Ok(Opening::Tls { prefix, direct }) => (prefix, direct),
        // The client's connection stays open until the cancel has been handed over: its
        // close is what tells libpq it was delivered. A refused one hears nothing: the
        // protocol has no answer to a CancelRequest.
        Ok(Opening::PlainCancel { pid, key }) => {
            let cancel = cancel::plaintext(sessions, settings, admission, pid, &key, record);
            return Err(Box::pin(cancel).await);
        }
        Err(e) => return Err(refuse(&mut io, e.into()).await),
    };
    let connect = admission.may_connect();
    let legs = handshake::both_legs(io, prefix, direct, settings, deadline, connect);
    let (client, upstream) = match Box::pin(legs).await {
        Ok(legs) => legs,
        Err(e) => return Err(Outcome::Refused(e.into())),
    };
    Box::pin(over_tls(
        client, upstream, sessions, settings, record, admission,
    ))
    .await
}

/// Everything once the client's TLS is up: admission, the startup packet, the login. A
/// failure is told to the client over its TLS connection.
async fn over_tls<S: ClientIo>(
    client: ClientLeg<S>,
    upstream: UpstreamLeg,
    sessions: &Sessions,
    settings: &Running,
    record: &mut Record,
    admission: &mut Admission,
) -> Result<Box<Established<S>>, Outcome> {
    let ClientLeg {
        stream: mut client,
        route,
        tls_checks,
    } = client;
    record.client_tls(client.ssl());
    let mut reader = FrameReader::new();
    let deadline = Instant::now() + settings.listen.startup_timeout;
    let checks = Checks {
        tls_checks,
        admission,
        route,
    };
    let judged = judge(
        &mut client,
        &mut reader,
        checks,
        upstream,
        settings,
        deadline,
        record,
    );
    let (mut upstream, startup, target) = match Box::pin(judged).await {
        Ok(Granted::Session(upstream, startup, target)) => (upstream, startup, target),
        Ok(Granted::Cancel { pid, key }) => {
            let cancel = cancel::over_tls(&mut client, sessions, settings, pid, &key, record);
            return Err(Box::pin(cancel).await);
        }
        Err(e) => return Err(refuse(&mut client, e).await),
    };
    let ends = LoginEnds {
        deadline,
        limit: settings.listen.startup_timeout,
        stop: &sessions.stop,
    };
    let plan = Plan::for_session(&target, settings, &upstream, client.ssl());
    let login_began = std::time::Instant::now();
    let login = login(
        &mut client,
        &mut upstream.stream,
        &startup,
        reader,
        ends,
        plan,
    );
    match Box::pin(login).await.map(|(auth, used)| {
        record.auth_used(used, &target.auth);
        let seconds = login_began.elapsed().as_secs_f64();
        crate::metrics::get().auth.observe(seconds);
        auth
    }) {
        Ok(auth) => Ok(Box::new(Established {
            client,
            server: upstream.stream,
            auth,
            addr: upstream.addr,
            target,
        })),
        Err(e) => Err(refuse(&mut client, e).await),
    }
}

/// What the client is granted once its TLS is up: a session, or the cancel its first packet
/// asked for.
enum Granted {
    /// Log in: the verified upstream, the judged StartupMessage, and where its route leads.
    Session(
        Upstream,
        Box<startup::Startup>,
        Arc<crate::settings::Target>,
    ),
    /// Its first packet was an encrypted CancelRequest.
    Cancel {
        pid: i32,
        key: crate::protocol::startup::CancelSecret,
    },
}

/// What the handshake phase leaves for admission to judge.
struct Checks<'a> {
    /// The checks after the handshake (the certificate's CRL and OCSP, direct TLS's ALPN).
    tls_checks: Result<(), client::ClientError>,
    /// The connection's admission.
    admission: &'a mut Admission,
    /// The route its server name found.
    route: Option<Arc<crate::settings::RouteTarget>>,
}

/// The checks between the client's handshake and the authentication exchange, in order:
/// the certificate, the address, the first packet (a cancel needs no more), then the
/// limits, the route and the certificate's user, and the upstream leg's result.
async fn judge<S: ClientIo>(
    client: &mut ClientStream<S>,
    reader: &mut FrameReader,
    checks: Checks<'_>,
    upstream: UpstreamLeg,
    settings: &Settings,
    deadline: Instant,
    record: &mut Record,
) -> Result<Granted, SessionError> {
    let Checks {
        tls_checks,
        admission,
        route,
    } = checks;
    tls_checks?;
    admission.cancel()?;
    let listen = &settings.listen;
    let startup = match timeout_at(deadline, startup::read(client, reader)).await {
        Ok(packet) => packet?,
        Err(_) => return Err(SessionError::StartupTimeout(listen.startup_timeout)),
    };
    let startup = match startup {
        StartupPacket::Startup(s) => s,
        StartupPacket::Cancel { pid, key } => return Ok(Granted::Cancel { pid, key }),
    };
    record.user = Some(startup.params.user.clone());
    record.database = Some(startup.params.database.clone());
    record
        .application_name
        .clone_from(&startup.application_name);
    admission.session()?;
    let server_name = client
        .ssl()
        .servername(NameType::HOST_NAME)
        .map(str::to_owned);
    record.server_name.clone_from(&server_name);
    // That name switches the handshake to the replicas' context (cluster.ca, no listener
    // CRL or client CA): it may carry a forwarded cancel, never a session.
    if server_name
        .as_deref()
        .is_some_and(|n| crate::routing::normalize(n) == crate::settings::PEER_SNI)
    {
        return Err(SessionError::PeerNameSession);
    }
    let cert = client.ssl().peer_certificate();
    let target = admission.route(
        settings,
        route.as_ref(),
        server_name.as_deref(),
        &startup,
        cert.as_ref(),
    )?;
    record.route = Some(target.label().to_owned());
    record.route_active = Some(crate::metrics::RouteActive::begin(target.label()));
    let upstream = match upstream {
        UpstreamLeg::Done(result) => result?,
        UpstreamLeg::NotStarted => handshake::connect_upstream(&target).await?,
    };
    record.upstream = Some(upstream.addr);
    record.upstream_tls = Some(crate::tls::describe::describe_tls(upstream.stream.ssl()));
    record.upstream_tls_group = crate::tls::groups::negotiated(upstream.stream.ssl());
    Ok(Granted::Session(upstream, Box::new(startup), target))
}

/// Relays an authenticated session until one side ends; its cancel key is registered
/// meanwhile.
async fn relay<S: ClientIo>(
    established: Established<S>,
    sessions: &Sessions,
    record: &mut Record,
) -> Outcome {
    let Established {
        mut client,
        mut server,
        auth,
        addr,
        target,
    } = established;
    record.backend_pid = auth.key.as_ref().map(|k| k.server.pid);
    let _registration = auth
        .key
        .map(|keys| sessions.cancels.register(keys, addr, Arc::clone(&target)));
    let outcome = relay::relay(
        &mut client,
        &mut server,
        auth.client_pending,
        auth.upstream_pending,
        &sessions.stop,
    )
    .await;
    record.from_client = outcome.from_client;
    record.to_client = outcome.to_client;
    Outcome::Relayed(outcome.ended)
}
