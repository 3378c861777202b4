//! The client's opening and TLS handshake, run beside the upstream connect, and what is
//! checked of the client before the startup packet: its certificate's revocation (CRL,
//! OCSP) and, once the user is known, that the certificate names that user.

use std::sync::Arc;

use openssl::ssl::NameType;
use openssl::x509::X509;
use tokio::time::{Instant, timeout_at};

use super::error::SessionError;
use crate::client::{self, ClientError, ClientIo, ClientStream, Opening};
use crate::config::schema::ClientCertUser;
use crate::leg::Leg;
use crate::prefixed::PrefixedIo;
use crate::settings::{RouteTarget, Settings, Target};
use crate::tls::revocation;
use crate::upstream::{self, Upstream, UpstreamError};

/// The plaintext opening, within the handshake deadline.
pub(super) async fn opening<S: ClientIo>(
    tcp: &mut S,
    settings: &Settings,
    deadline: Instant,
) -> Result<Opening, ClientError> {
    let listen = &settings.listen;
    let rules = client::Rules {
        direct_tls: listen.direct_tls,
        plaintext_cancel: listen.plaintext_cancel,
    };
    timeout_at(deadline, client::negotiate(tcp, rules))
        .await
        .map_err(|_| ClientError::HandshakeTimeout(listen.handshake_timeout))?
}

/// The client's connection once its handshake is done.
pub(super) struct ClientLeg<S> {
    /// The TLS stream.
    pub(super) stream: ClientStream<S>,
    /// The route its server name found (looked up once, here: the handshake already chose
    /// that route's certificate and client CA).
    pub(super) route: Option<Arc<RouteTarget>>,
    /// The checks after the handshake (the certificate's CRL and OCSP, direct TLS's ALPN):
    /// `Err` when the client must be refused, over `stream`.
    pub(super) tls_checks: Result<(), ClientError>,
}

/// The upstream leg as the handshake phase leaves it.
pub(super) enum UpstreamLeg {
    /// Connected (or failed) while the client's handshake ran.
    Done(Result<Upstream, UpstreamError>),
    /// Not attempted: the client was refused first.
    NotStarted,
}

/// Runs the client's TLS handshake and the upstream connect. Both at once: the added
/// connect latency is the slower of the two, not the sum. With client certificates
/// required, nobody reaches the upstream before their certificate has verified. A failed
/// upstream is reported to the client once its TLS is up, so the leg's result is carried as
/// a value; a failed client handshake returns at once and drops the upstream. `connect`:
/// admission would let this connection start a session (a refused client, or one over a
/// limit that may only cancel, makes no upstream connection).
pub(super) async fn both_legs<S: ClientIo>(
    io: S,
    prefix: Vec<u8>,
    direct: bool,
    settings: &Settings,
    deadline: Instant,
    connect: bool,
) -> Result<(ClientLeg<S>, UpstreamLeg), ClientError> {
    let client_leg = client_leg(io, prefix, direct, settings, deadline);
    if !connect {
        return Ok((Box::pin(client_leg).await?, UpstreamLeg::NotStarted));
    }
    // With routes, the upstream is known only from the server name or the database.
    let Some(target) = settings
        .default
        .as_ref()
        .filter(|_| !settings.routes.has_routes())
    else {
        return Ok((Box::pin(client_leg).await?, UpstreamLeg::NotStarted));
    };
    let upstream_leg = async { Ok::<_, ClientError>(connect_upstream(target).await) };
    if settings.listen.client_certs.is_none() {
        let (client, upstream) =
            Box::pin(async { tokio::try_join!(client_leg, upstream_leg) }).await?;
        return Ok((client, UpstreamLeg::Done(upstream)));
    }
    let client = Box::pin(client_leg).await?;
    if client.tls_checks.is_err() {
        return Ok((client, UpstreamLeg::NotStarted));
    }
    let upstream = Box::pin(upstream_leg).await?;
    Ok((client, UpstreamLeg::Done(upstream)))
}

/// Connects to `target`'s upstream, timed for `pgt_proxy_upstream_connect_seconds`, a
/// failure counted by its route and reason, and the server certificate's notAfter
/// published for the route.
pub(super) async fn connect_upstream(target: &Target) -> Result<Upstream, UpstreamError> {
    let started = std::time::Instant::now();
    let result = upstream::connect(&target.upstream, &target.connector).await;
    let m = crate::metrics::get();
    let route = target.label().to_owned();
    match &result {
        Ok(upstream) => {
            let seconds = started.elapsed().as_secs_f64();
            let not_after = upstream
                .stream
                .ssl()
                .peer_certificate()
                .and_then(|c| crate::tls::dates::unix_time(c.not_after()));
            let route = crate::metrics::Route { route };
            m.upstream_connect.get_or_create(&route).observe(seconds);
            if let Some(t) = not_after {
                m.upstream_not_after.get_or_create(&route).set(t as f64);
            }
        }
        Err(e) => {
            let reason = super::error::upstream_reason(e);
            let labels = crate::metrics::RouteReason { route, reason };
            m.upstream_connect_failures.get_or_create(&labels).inc();
        }
    }
    result
}

/// The handshake, then the client certificate's OCSP check when configured.
async fn client_leg<S: ClientIo>(
    tcp: S,
    prefix: Vec<u8>,
    direct: bool,
    settings: &Settings,
    deadline: Instant,
) -> Result<ClientLeg<S>, ClientError> {
    let listen = &settings.listen;
    let began = std::time::Instant::now();
    let accepted = timeout_at(
        deadline,
        client::accept_tls(
            PrefixedIo::new(prefix, tcp),
            direct,
            &settings.acceptor,
            settings.client_certs_anywhere,
            listen.allow_expired_crl,
        ),
    )
    .await
    .map_err(|_| ClientError::HandshakeTimeout(listen.handshake_timeout))??;
    let seconds = began.elapsed().as_secs_f64();
    crate::metrics::get().client_handshake.observe(seconds);
    let mut tls_checks = accepted.tls_checks;
    let ssl = accepted.stream.ssl();
    let route = settings
        .routes
        .by_server_name(ssl.servername(NameType::HOST_NAME))
        .cloned();
    let policy = settings.client_policy(route.as_deref());
    if tls_checks.is_ok()
        && let Some(ocsp) = policy.client_ocsp
    {
        let context = policy.context;
        tls_checks = Box::pin(revocation::check_ocsp(
            ocsp,
            ssl,
            context,
            Leg::Client,
            None,
        ))
        .await
        .map_err(ClientError::Revocation);
    }
    Ok(ClientLeg {
        stream: accepted.stream,
        route,
        tls_checks,
    })
}

/// `listen.client_cert_user`: the user must be the certificate's CN (PostgreSQL's
/// clientcert=verify-full) or one of its e-mail SANs.
pub(super) fn check_certificate_user(
    rule: ClientCertUser,
    cert: Option<&X509>,
    user: &str,
) -> Result<(), SessionError> {
    let Some(cert) = cert else {
        return Ok(());
    };
    let (field, names): (&'static str, Vec<String>) = match rule {
        ClientCertUser::Off => return Ok(()),
        ClientCertUser::Cn => (
            "CN",
            // The first CN only, as PostgreSQL's clientcert=verify-full reads it: a
            // subject "CN=attacker, CN=victim" is attacker's.
            cert.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok())
                .into_iter()
                .collect(),
        ),
        ClientCertUser::SanEmail => (
            "e-mail address",
            cert.subject_alt_names()
                .map(|sans| {
                    sans.iter()
                        .filter_map(|n| n.email().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        ),
    };
    if names.iter().any(|n| n == user) {
        return Ok(());
    }
    Err(SessionError::CertificateUser {
        user: user.to_owned(),
        field,
        found: if names.is_empty() {
            "missing".into()
        } else {
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}
