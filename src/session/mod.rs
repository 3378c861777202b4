//! One client connection from accept to close, as a sequence of small phases:
//!
//! 1. [`handshake`]: the plaintext opening (SSLRequest, GSSENCRequest, direct TLS, a
//!    plaintext CancelRequest), then the client's TLS handshake beside the upstream connect,
//!    and the checks on the client's certificate.
//! 2. [`startup`]: the first packet inside TLS, typed once (StartupMessage or an encrypted
//!    CancelRequest).
//! 3. [`auth`]: the authentication exchange relayed message by message.
//! 4. [`crate::relay`]: bytes both ways until one side ends.
//!
//! Every phase returns a [`SessionError`] when it fails; [`refuse`] tells the client what
//! [`SessionError::refusal`] says (the one place that decides it), and [`log`] writes the
//! one line per connection from the same [`Outcome`]. Nothing is relayed until both legs are
//! verified.

mod auth;
mod error;
mod handshake;
mod log;
mod login;
mod shared;
mod startup;
mod terminate;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use openssl::ssl::NameType;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};

use self::auth::Authenticated;
use self::handshake::{ClientLeg, UpstreamLeg};
use self::log::Record;
use self::login::{LoginEnds, Plan, login};
use self::startup::StartupPacket;
use crate::cancel::{self, CancelOutcome};
use crate::client::{self, ClientStream, Opening};
use crate::framed::FrameReader;
use crate::relay::{self, Ended};
use crate::settings::Settings;
use crate::upstream::Upstream;

pub(crate) use self::error::SessionError;
pub use self::shared::Shared;

/// How a connection ended: the one value the log line is written from.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Authenticated, and relayed until one side ended.
    Relayed(Ended),
    /// A cancel request, forwarded or dropped.
    Cancel(CancelOutcome),
    /// Refused or failed before relaying; the client was told where the protocol allows.
    Refused(SessionError),
}

/// Serves one accepted connection; `permit` holds its place under `listen.max_connections`.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    shared.active.fetch_add(1, Ordering::Relaxed);
    shared.total.fetch_add(1, Ordering::Relaxed);
    crate::metrics::get().sessions_active.inc();
    let mut record = Record::new(peer);
    let outcome = admitted_session(tcp, &shared, &mut record).await;
    log::session_end(&record, &outcome);
    log::count(&record, &outcome);
    crate::metrics::get().sessions_active.dec();
    shared.active.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// Who the connection is from (a PROXY header's client), the address checks on it, and the
/// session; the per-address claim is held until the session ends.
async fn admitted_session(
    mut tcp: TcpStream,
    shared: &Arc<Shared>,
    record: &mut Record,
) -> Outcome {
    let settings = shared.settings.load_full();
    let listen = &settings.listen;
    let deadline = Instant::now() + listen.handshake_timeout;
    let identified = match client::identify(&mut tcp, record.peer, listen, deadline).await {
        Ok(identified) => identified,
        Err(e) => return Outcome::Refused(e.into()),
    };
    record.identified(identified.addresses);
    let client = record.peer.ip();
    let claim = shared.claim(client, listen.max_per_client);
    let before_tls = identified.admission.and_then(|()| {
        if !listen
            .allowed_clients
            .iter()
            .any(|net| net.contains(&client))
        {
            Err(client::ClientError::NoAccess(client))
        } else if claim.is_none() {
            Err(client::ClientError::TooManyFromAddress {
                address: client,
                limit: listen.max_per_client,
            })
        } else {
            Ok(())
        }
    });
    let established = establish(tcp, shared, &settings, record, deadline, before_tls);
    let outcome = match Box::pin(established).await {
        Ok(established) => relay(*established, shared, record).await,
        Err(outcome) => outcome,
    };
    drop(claim);
    outcome
}

/// Answers a connection over the limit: TLS as usual, then FATAL 53300 (no upstream leg).
/// Cancels are served at the limit too: that is exactly when every slot may be running a
/// query someone wants to stop (PostgreSQL does the same).
pub(crate) async fn refuse_too_many(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let mut record = Record::new(peer);
    let settings = shared.settings.load_full();
    let deadline = Instant::now() + settings.listen.handshake_timeout;
    let identified = client::identify(&mut tcp, peer, &settings.listen, deadline).await;
    let outcome = match identified {
        Ok(identified) => {
            record.identified(identified.addresses);
            match opening(&mut tcp, &shared, &settings, &mut record, deadline).await {
                Ok((prefix, direct)) => {
                    let over_limit =
                        over_limit(tcp, prefix, direct, &shared, &settings, &mut record);
                    Box::pin(over_limit).await
                }
                Err(outcome) => outcome,
            }
        }
        Err(e) => Outcome::Refused(e.into()),
    };
    log::session_end(&record, &outcome);
    log::count(&record, &outcome);
    drop(permit);
}

async fn over_limit(
    tcp: TcpStream,
    prefix: Vec<u8>,
    direct: bool,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
) -> Outcome {
    let listen = &settings.listen;
    let accept = client::accept_tls(
        crate::prefixed::PrefixedIo::new(prefix, tcp),
        direct,
        &settings.acceptor,
        settings.client_certs_anywhere,
        listen.allow_expired_crl,
    );
    let deadline = Instant::now() + listen.handshake_timeout;
    let mut client = match timeout_at(deadline, accept).await {
        Ok(Ok(accepted)) => accepted.stream,
        Ok(Err(e)) => return Outcome::Refused(e.into()),
        Err(_) => {
            let e = client::ClientError::HandshakeTimeout(listen.handshake_timeout);
            return Outcome::Refused(e.into());
        }
    };
    record.client_tls(client.ssl());
    let deadline = Instant::now() + listen.startup_timeout;
    let first = timeout_at(
        deadline,
        startup::read(&mut client, &mut FrameReader::new()),
    )
    .await;
    if let Ok(Ok(StartupPacket::Cancel { pid, key })) = first {
        let via = cancel::Via::Tls(client.ssl());
        let outcome = Box::pin(forward_cancel(shared, settings, via, pid, &key, record)).await;
        let _ = client.shutdown().await;
        return outcome;
    }
    refuse(&mut client, SessionError::TooManyConnections).await
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
struct Established {
    client: ClientStream,
    server: tokio_openssl::SslStream<TcpStream>,
    auth: Authenticated,
    addr: SocketAddr,
    /// Where the session's route leads (cancels go there).
    target: Arc<crate::settings::Target>,
}

/// Everything before the relay. Its future is large (handshakes, timers, the startup
/// exchange) and is freed once it is done, so a long idle session keeps only the relay's
/// small state. `Err` is how the connection ended instead.
async fn establish(
    tcp: TcpStream,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
    deadline: Instant,
    before_tls: Result<(), client::ClientError>,
) -> Result<Box<Established>, Outcome> {
    let mut tcp = tcp;
    let (prefix, direct) = opening(&mut tcp, shared, settings, record, deadline).await?;
    let (client, upstream) = match Box::pin(handshake::both_legs(
        tcp, prefix, direct, settings, deadline, before_tls,
    ))
    .await
    {
        Ok(legs) => legs,
        Err(e) => return Err(Outcome::Refused(e.into())),
    };
    Box::pin(over_tls(client, upstream, shared, settings, record)).await
}

/// Everything once the client's TLS is up: admission, the startup packet, the login. A
/// failure is told to the client over its TLS connection.
async fn over_tls(
    client: ClientLeg,
    upstream: UpstreamLeg,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
) -> Result<Box<Established>, Outcome> {
    let ClientLeg {
        stream: mut client,
        admitted,
    } = client;
    record.client_tls(client.ssl());
    let mut reader = FrameReader::new();
    let deadline = Instant::now() + settings.listen.startup_timeout;
    let admit = admit(
        &mut client,
        &mut reader,
        admitted,
        upstream,
        settings,
        deadline,
        record,
    );
    let (mut upstream, startup, target) = match Box::pin(admit).await {
        Ok(Admitted::Session(upstream, startup, target)) => (upstream, startup, target),
        Ok(Admitted::Cancel { pid, key }) => {
            let via = cancel::Via::Tls(client.ssl());
            let outcome = Box::pin(forward_cancel(shared, settings, via, pid, &key, record)).await;
            let _ = client.shutdown().await;
            return Err(outcome);
        }
        Err(e) => return Err(refuse(&mut client, e).await),
    };
    let ends = LoginEnds {
        deadline,
        limit: settings.listen.startup_timeout,
        terminate: &shared.terminate,
    };
    let plan = Plan::for_session(&target, &upstream, client.ssl());
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

/// The plaintext opening: TLS next (with any read-ahead bytes), or a plaintext cancel
/// served, or a refusal told in plaintext.
async fn opening(
    tcp: &mut TcpStream,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
    deadline: Instant,
) -> Result<(Vec<u8>, bool), Outcome> {
    match handshake::opening(tcp, settings, deadline).await {
        Ok(Opening::Tls { prefix, direct }) => Ok((prefix, direct)),
        // The client's connection stays open (with the caller) until the cancel has been
        // handed over: its close is what tells libpq it was delivered.
        Ok(Opening::PlainCancel { pid, key }) => {
            let via = cancel::Via::Plaintext;
            Err(Box::pin(forward_cancel(shared, settings, via, pid, &key, record)).await)
        }
        Err(e) => Err(refuse(tcp, e.into()).await),
    }
}

/// What the client may do once its TLS is up.
enum Admitted {
    /// Log in: the verified upstream, the client's StartupMessage, and where its route leads.
    Session(Upstream, startup::Startup, Arc<crate::settings::Target>),
    /// Its first packet was an encrypted CancelRequest.
    Cancel { pid: i32, key: Vec<u8> },
}

/// The checks between the client's handshake and the authentication exchange: the
/// certificate's admission, the startup packet, the user, and the upstream leg's result.
async fn admit(
    client: &mut ClientStream,
    reader: &mut FrameReader,
    admitted: Result<(), client::ClientError>,
    upstream: UpstreamLeg,
    settings: &Settings,
    deadline: Instant,
    record: &mut Record,
) -> Result<Admitted, SessionError> {
    admitted?;
    let listen = &settings.listen;
    let startup = match timeout_at(deadline, startup::read(client, reader)).await {
        Ok(packet) => packet?,
        Err(_) => return Err(SessionError::StartupTimeout(listen.startup_timeout)),
    };
    let startup = match startup {
        StartupPacket::Startup(s) => s,
        StartupPacket::Cancel { pid, key } => return Ok(Admitted::Cancel { pid, key }),
    };
    record.user.clone_from(&startup.user);
    record.database.clone_from(&startup.database);
    record
        .application_name
        .clone_from(&startup.application_name);
    let user = startup.user.as_deref().filter(|u| !u.is_empty());
    let user = user.ok_or(SessionError::NoUser)?;
    let server_name = client
        .ssl()
        .servername(NameType::HOST_NAME)
        .map(str::to_owned);
    record.server_name.clone_from(&server_name);
    let database = startup.database.as_deref();
    let (target, route) = settings
        .route(server_name.as_deref(), database)
        .ok_or_else(|| SessionError::NoRoute {
            server_name: server_name.clone(),
            database: database.unwrap_or_default().to_owned(),
        })?;
    record.route = Some(target.label().to_owned());
    if let Some(route) = &route
        && !route.admits(record.peer.ip())
    {
        return Err(client::ClientError::NoAccess(record.peer.ip()).into());
    }
    if let Some(policy) = settings.client_policy(route.as_deref()).client_certs {
        let cert = client.ssl().peer_certificate();
        handshake::check_certificate_user(policy.user, cert.as_ref(), user)?;
    }
    let upstream = match upstream {
        UpstreamLeg::Done(result) => result?,
        UpstreamLeg::NotStarted => handshake::connect_upstream(&target).await?,
    };
    record.upstream = Some(upstream.addr);
    record.upstream_tls = Some(crate::tls::describe::describe_tls(upstream.stream.ssl()));
    Ok(Admitted::Session(upstream, startup, target))
}

/// Relays an authenticated session until one side ends; its cancel key is registered
/// meanwhile.
async fn relay(established: Established, shared: &Shared, record: &mut Record) -> Outcome {
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
        .map(|keys| shared.cancels.register(keys, addr, Arc::clone(&target)));
    let outcome = relay::relay(
        &mut client,
        &mut server,
        auth.client_pending,
        auth.upstream_pending,
        &shared.terminate,
    )
    .await;
    record.from_client = outcome.from_client;
    record.to_client = outcome.to_client;
    Outcome::Relayed(outcome.ended)
}

/// Forwards a CancelRequest that matches a live session; `via` is the connection it came on.
async fn forward_cancel(
    shared: &Shared,
    settings: &Settings,
    via: cancel::Via<'_>,
    pid: i32,
    key: &[u8],
    record: &mut Record,
) -> Outcome {
    let sender = cancel::Sender {
        addr: record.peer,
        proxy_header: settings.listen.proxy_v2,
        via,
    };
    let own = cancel::key::own_id();
    let dispatched = cancel::dispatch(&shared.cancels, own, &settings.cluster, sender, pid, key);
    match dispatched.await {
        Ok(outcome) => {
            if let CancelOutcome::Forwarded { pid, .. } = outcome {
                record.backend_pid = Some(pid);
            }
            Outcome::Cancel(outcome)
        }
        Err(e) => {
            let failed = crate::metrics::Result_ { result: "failed" };
            crate::metrics::get().cancels.get_or_create(&failed).inc();
            Outcome::Refused(SessionError::Upstream(e))
        }
    }
}
