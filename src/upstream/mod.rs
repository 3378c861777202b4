//! The upstream leg: pgt-proxy as a TLS client of the PostgreSQL server.
//!
//! Resolves the host at every connect (so DNS-based failover is followed), tries each
//! address in turn, negotiates TLS the PostgreSQL way (SSLRequest, then 'S') or directly,
//! and verifies the chain and the host name. Nothing is relayed over a connection this module
//! has not verified; a failure says which check failed so the client's error is useful.

mod error;

pub(crate) use error::UpstreamError;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::SslVerifyMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;

use crate::config::schema::TlsNegotiation;
use crate::leg::Leg;
use crate::protocol::startup::SSL_REQUEST;
use crate::tls::connector::Connector;
use crate::tls::describe::describe_ssl_error;
use crate::tls::revocation::ocsp::OcspChecker;
use crate::tls::revocation::{self, Revocation};
use crate::tls::verify::VerifyObserver;

/// Where a connection is dialled and what its server must prove: an upstream's (validated
/// from `[upstream]` or `[upstreams.NAME]`) or a peer replica's.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Host name or address, resolved at every connect.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Name the certificate must match.
    pub server_name: String,
    /// SSLRequest or direct TLS.
    pub negotiation: TlsNegotiation,
    /// Per-address bound on connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Accept an expired CRL (`tls.crl_allow_expired`).
    pub allow_expired_crl: bool,
    /// OCSP for the server's certificate.
    pub ocsp: Option<Arc<OcspChecker>>,
}

/// A verified TLS connection to the upstream.
pub(crate) struct Upstream {
    /// The TLS stream, handshake done and verified.
    pub stream: SslStream<TcpStream>,
    /// The address it reached (cancel requests go to the same one).
    pub addr: SocketAddr,
}

/// Resolves the upstream and connects to the first address that gives a verified session.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    connector: &Connector,
) -> Result<Upstream, UpstreamError> {
    connect_with(endpoint, connector, |_| Vec::new()).await
}

/// [`connect`], sending `preface(address)` first on each connection (a PROXY header, when
/// a cancel is forwarded to a peer replica).
pub(crate) async fn connect_with(
    endpoint: &Endpoint,
    connector: &Connector,
    preface: impl Fn(SocketAddr) -> Vec<u8>,
) -> Result<Upstream, UpstreamError> {
    let resolve_error = |reason: String| UpstreamError::Resolve {
        host: endpoint.host.clone(),
        reason,
    };
    let addrs: Vec<SocketAddr> = timeout(
        endpoint.connect_timeout,
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| resolve_error("timed out".into()))?
    .map_err(|e| resolve_error(e.to_string()))?
    .collect();
    if addrs.is_empty() {
        return Err(resolve_error("no address found".into()));
    }
    connect_addrs_with(addrs, endpoint, connector, preface).await
}

/// [`connect_with`] to addresses resolved already (a peer's, within the cancel module's
/// bounds on lookups).
pub(crate) async fn connect_addrs_with(
    addrs: Vec<SocketAddr>,
    endpoint: &Endpoint,
    connector: &Connector,
    preface: impl Fn(SocketAddr) -> Vec<u8>,
) -> Result<Upstream, UpstreamError> {
    let mut errors = Vec::new();
    for addr in addrs {
        match connect_addr_prefaced(addr, endpoint, connector, &preface(addr)).await {
            Ok(stream) => return Ok(Upstream { stream, addr }),
            Err(e) => {
                tracing::debug!(upstream = %addr, error = %e, "upstream address failed");
                errors.push(e);
            }
        }
    }
    Err(if errors.len() == 1 {
        errors.remove(0)
    } else {
        UpstreamError::AllFailed(errors)
    })
}

/// Connects to one address, negotiates and verifies TLS, all within `connect_timeout`.
pub(crate) async fn connect_addr(
    addr: SocketAddr,
    endpoint: &Endpoint,
    connector: &Connector,
) -> Result<SslStream<TcpStream>, UpstreamError> {
    connect_addr_prefaced(addr, endpoint, connector, &[]).await
}

/// [`connect_addr`], writing `preface` before anything else.
async fn connect_addr_prefaced(
    addr: SocketAddr,
    endpoint: &Endpoint,
    connector: &Connector,
    preface: &[u8],
) -> Result<SslStream<TcpStream>, UpstreamError> {
    timeout(
        endpoint.connect_timeout,
        connect_addr_inner(addr, endpoint, connector, preface),
    )
    .await
    .unwrap_or(Err(UpstreamError::Timeout {
        addr,
        limit: endpoint.connect_timeout,
    }))
}

async fn connect_addr_inner(
    addr: SocketAddr,
    endpoint: &Endpoint,
    connector: &Connector,
    preface: &[u8],
) -> Result<SslStream<TcpStream>, UpstreamError> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    crate::socket::tune(&tcp);
    if !preface.is_empty() {
        tcp.write_all(preface)
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
    }
    if endpoint.negotiation == TlsNegotiation::Postgres {
        negotiate_ssl_request(&mut tcp, addr).await?;
    }
    let stream = handshake(
        tcp,
        addr,
        &endpoint.server_name,
        connector,
        endpoint.allow_expired_crl,
    )
    .await?;
    if let Some(ocsp) = &endpoint.ocsp {
        let context = connector.context();
        revocation::check_ocsp(ocsp, stream.ssl(), context, Leg::Upstream, Some(addr))
            .await
            .map_err(|found| UpstreamError::revocation(addr, found))?;
    }
    Ok(stream)
}

/// Sends SSLRequest and requires a lone 'S'.
async fn negotiate_ssl_request(tcp: &mut TcpStream, addr: SocketAddr) -> Result<(), UpstreamError> {
    let io_error = |source| UpstreamError::Connect { addr, source };
    tcp.write_all(&SSL_REQUEST).await.map_err(io_error)?;
    // Read more than one byte on purpose: a server (or a man in the middle) that sends
    // anything after 'S' before our ClientHello would have those bytes read as if they came
    // through TLS.
    let mut answer = [0u8; 64];
    let n = tcp.read(&mut answer).await.map_err(io_error)?;
    match (n, answer[0]) {
        (0, _) => Err(UpstreamError::NoTls {
            addr,
            answer: "nothing (it closed the connection)".into(),
        }),
        (1, b'S') => Ok(()),
        (_, b'S') => Err(UpstreamError::DataAfterTlsAnswer { addr }),
        (_, b'N') => Err(UpstreamError::NoTls {
            addr,
            answer: "'N'".into(),
        }),
        (_, b'E') => Err(UpstreamError::NoTls {
            addr,
            answer: "an error message".into(),
        }),
        (_, other) => Err(UpstreamError::NoTls {
            addr,
            answer: format!("unexpected byte 0x{other:02x}"),
        }),
    }
}

/// The TLS handshake with chain and host name verification.
async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    server_name: &str,
    connector: &Connector,
    allow_expired_crl: bool,
) -> Result<SslStream<TcpStream>, UpstreamError> {
    let openssl_error = |e: openssl::error::ErrorStack| UpstreamError::Handshake {
        addr,
        detail: e.to_string(),
    };
    let mut ssl = connector.ssl_for(server_name).map_err(openssl_error)?;
    let observer = VerifyObserver::new(allow_expired_crl, false);
    ssl.set_verify_callback(SslVerifyMode::PEER, observer.callback());
    let mut stream = SslStream::new(ssl, tcp).map_err(openssl_error)?;
    match Pin::new(&mut stream).connect().await {
        Ok(()) => Ok(stream),
        Err(e) => Err(match observer.failure() {
            Some(f) if f.is_revoked() => UpstreamError::revocation(
                addr,
                Revocation::Revoked {
                    check: "CRL",
                    cert: f.cert,
                },
            ),
            Some(f) if f.is_name_mismatch() => UpstreamError::HostnameMismatch {
                addr,
                expected: server_name.to_owned(),
                found: if f.names.is_empty() {
                    "no name".into()
                } else {
                    f.names
                },
            },
            Some(f) => UpstreamError::Untrusted {
                addr,
                reason: f.error.error_string().to_owned(),
                subject: f.cert.subject,
            },
            None => {
                let detail = describe_ssl_error(&e);
                let hint = crate::tls::groups::refused_hello_hint(stream.ssl(), &detail);
                UpstreamError::Handshake {
                    addr,
                    detail: detail + &hint,
                }
            }
        }),
    }
}
