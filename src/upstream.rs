//! The upstream leg: pgt-proxy as a TLS client of the PostgreSQL server.
//!
//! Resolves the host at every connect (so DNS-based failover is followed), tries each
//! address in turn, negotiates TLS the PostgreSQL way (SSLRequest, then 'S') or directly,
//! and verifies the chain and the host name. Nothing is relayed over a connection this module
//! has not verified; a failure says which check failed so the client's error is useful.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::SslVerifyMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;

use crate::config::schema::TlsNegotiation;
use crate::leg::Leg;
use crate::protocol::error_response::Refusal;
use crate::protocol::sqlstate::UNABLE_TO_CONNECT;
use crate::protocol::startup::SSL_REQUEST;
use crate::settings::UpstreamSettings;
use crate::tls::connector::Connector;
use crate::tls::describe::describe_ssl_error;
use crate::tls::revocation::{self, Revocation};
use crate::tls::verify::VerifyObserver;

/// A verified TLS connection to the upstream.
pub(crate) struct Upstream {
    /// The TLS stream, handshake done and verified.
    pub stream: SslStream<TcpStream>,
    /// The address it reached (cancel requests go to the same one).
    pub addr: SocketAddr,
}

/// Why the upstream leg could not be set up. The client receives FATAL 08001 with this text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// DNS resolution failed or gave no address.
    #[error("could not resolve upstream host \"{host}\": {reason}")]
    Resolve {
        /// The configured host.
        host: String,
        /// Resolver's answer.
        reason: String,
    },
    /// TCP connect failed.
    #[error("could not connect to upstream server {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The attempt did not finish within `upstream.connect_timeout`.
    #[error("timed out after {} connecting to upstream server {addr}", humantime::format_duration(*limit))]
    Timeout {
        /// The address tried.
        addr: SocketAddr,
        /// The configured limit.
        limit: Duration,
    },
    /// The server answered the SSLRequest with something other than 'S'.
    #[error("upstream server does not support TLS ({addr} answered {answer} to SSLRequest)")]
    NoTls {
        /// The server.
        addr: SocketAddr,
        /// What it answered, described.
        answer: String,
    },
    /// Bytes followed the server's 'S' before the handshake (CVE-2021-23222 pattern).
    #[error(
        "upstream server {addr} sent unencrypted data after accepting TLS; refusing the connection (possible man-in-the-middle)"
    )]
    DataAfterTlsAnswer {
        /// The server.
        addr: SocketAddr,
    },
    /// The certificate chain did not verify.
    #[error(
        "upstream server certificate not trusted ({addr}): {reason} (certificate subject: {subject})"
    )]
    Untrusted {
        /// The server.
        addr: SocketAddr,
        /// OpenSSL's verify reason.
        reason: String,
        /// Subject of the certificate that failed.
        subject: String,
    },
    /// A certificate in the server's chain is revoked.
    #[error(
        "upstream server certificate revoked ({check}) ({addr}): subject {subject}, serial {serial}"
    )]
    Revoked {
        /// The server.
        addr: SocketAddr,
        /// Which check found it: "CRL" or "OCSP".
        check: &'static str,
        /// Subject of the revoked certificate.
        subject: String,
        /// Its serial number.
        serial: String,
    },
    /// OCSP could not establish that the server's certificate is good (hard-fail).
    #[error(
        "upstream server certificate revocation status unknown (OCSP) ({addr}): {reason} (subject {subject}, serial {serial})"
    )]
    OcspUnknown {
        /// The server.
        addr: SocketAddr,
        /// Why.
        reason: String,
        /// Subject of the certificate.
        subject: String,
        /// Its serial.
        serial: String,
    },
    /// The certificate is valid but for another name.
    #[error(
        "upstream server certificate does not match the expected host name ({addr}): expected \"{expected}\", certificate is for {found}"
    )]
    HostnameMismatch {
        /// The server.
        addr: SocketAddr,
        /// `upstream.tls_server_name` (or `upstream.host`).
        expected: String,
        /// The names in the certificate.
        found: String,
    },
    /// The TLS handshake failed for another reason (protocol, cipher, alert, EOF).
    #[error("TLS handshake with upstream server {addr} failed: {detail}")]
    Handshake {
        /// The server.
        addr: SocketAddr,
        /// OpenSSL's description.
        detail: String,
    },
    /// Every resolved address failed.
    #[error("{}", Joined(.0))]
    AllFailed(Vec<UpstreamError>),
}

struct Joined<'a>(&'a [UpstreamError]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl UpstreamError {
    /// What the client is told: FATAL 08001 with this error's text and a hint for the DBA.
    pub fn refusal(&self) -> Refusal {
        let refusal = Refusal::new(UNABLE_TO_CONNECT, self.to_string());
        match self.hint() {
            Some(hint) => refusal.hint(hint),
            None => refusal,
        }
    }

    /// The error for a revocation found on the server's certificate at `addr`.
    fn revocation(addr: SocketAddr, found: Revocation) -> Self {
        match found {
            Revocation::Revoked { check, cert } => UpstreamError::Revoked {
                addr,
                check,
                subject: cert.subject,
                serial: cert.serial,
            },
            Revocation::Unknown { reason, cert } => UpstreamError::OcspUnknown {
                addr,
                reason,
                subject: cert.subject,
                serial: cert.serial,
            },
        }
    }

    /// A hint for the DBA reading the client's error.
    fn hint(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Untrusted { .. } => Some(
                "Check upstream.ca in the pgt-proxy configuration: it must hold the CA that issued the server's certificate.",
            ),
            UpstreamError::Revoked { .. } => Some(
                "The server's certificate (or one of its CAs) is revoked; it needs a new certificate.",
            ),
            UpstreamError::HostnameMismatch { .. } => Some(
                "Set upstream.tls_server_name to a name the server's certificate carries, or reissue the certificate.",
            ),
            UpstreamError::NoTls { .. } => Some(
                "Enable ssl on the PostgreSQL server; pgt-proxy only connects with verified TLS.",
            ),
            UpstreamError::AllFailed(all) => all.last().and_then(UpstreamError::hint),
            _ => None,
        }
    }
}

/// Resolves the upstream and connects to the first address that gives a verified session.
pub(crate) async fn connect(
    settings: &UpstreamSettings,
    connector: &Connector,
) -> Result<Upstream, UpstreamError> {
    connect_with(settings, connector, |_| Vec::new()).await
}

/// [`connect`], sending `preface(address)` first on each connection (a PROXY header, when
/// a cancel is forwarded to a peer replica).
pub(crate) async fn connect_with(
    settings: &UpstreamSettings,
    connector: &Connector,
    preface: impl Fn(SocketAddr) -> Vec<u8>,
) -> Result<Upstream, UpstreamError> {
    let resolve_error = |reason: String| UpstreamError::Resolve {
        host: settings.host.clone(),
        reason,
    };
    let addrs: Vec<SocketAddr> = timeout(
        settings.connect_timeout,
        tokio::net::lookup_host((settings.host.as_str(), settings.port)),
    )
    .await
    .map_err(|_| resolve_error("timed out".into()))?
    .map_err(|e| resolve_error(e.to_string()))?
    .collect();
    if addrs.is_empty() {
        return Err(resolve_error("no address found".into()));
    }
    let mut errors = Vec::new();
    for addr in addrs {
        match connect_addr_prefaced(addr, settings, connector, &preface(addr)).await {
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
    settings: &UpstreamSettings,
    connector: &Connector,
) -> Result<SslStream<TcpStream>, UpstreamError> {
    connect_addr_prefaced(addr, settings, connector, &[]).await
}

/// [`connect_addr`], writing `preface` before anything else.
async fn connect_addr_prefaced(
    addr: SocketAddr,
    settings: &UpstreamSettings,
    connector: &Connector,
    preface: &[u8],
) -> Result<SslStream<TcpStream>, UpstreamError> {
    timeout(
        settings.connect_timeout,
        connect_addr_inner(addr, settings, connector, preface),
    )
    .await
    .unwrap_or(Err(UpstreamError::Timeout {
        addr,
        limit: settings.connect_timeout,
    }))
}

async fn connect_addr_inner(
    addr: SocketAddr,
    settings: &UpstreamSettings,
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
    if settings.negotiation == TlsNegotiation::Postgres {
        negotiate_ssl_request(&mut tcp, addr).await?;
    }
    let stream = handshake(
        tcp,
        addr,
        &settings.server_name,
        connector,
        settings.allow_expired_crl,
    )
    .await?;
    if let Some(ocsp) = &settings.ocsp {
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
            None => UpstreamError::Handshake {
                addr,
                detail: describe_ssl_error(&e),
            },
        }),
    }
}
