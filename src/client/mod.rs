//! The client leg up to the end of its TLS handshake: pgt-proxy as a TLS server for
//! PostgreSQL clients.
//!
//! [`negotiate`] reads the plaintext first packet(s) and answers them the way PostgreSQL
//! does (SSLRequest -> 'S', GSSENCRequest -> 'N'), detects direct TLS, and returns what comes
//! next; [`accept_tls`] runs the handshake. Neither writes a refusal: they return a
//! [`ClientError`], whose [`ClientError::refusal`] says what the client is told, and the
//! session tells it. Nothing after the handshake lives here: that is [`crate::session`].

mod proxied;
mod socket;
#[cfg(test)]
mod tests;

pub(crate) use proxied::{Addresses, canonical, identify};
pub(crate) use socket::ClientIo;

use std::io;
use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::{Ssl, SslAcceptor, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::prefixed::PrefixedIo;
use crate::protocol::ProtocolError;
use crate::protocol::error_response::Refusal;
use crate::protocol::proxy::ProxyHeaderError;
use crate::protocol::sqlstate::{INVALID_AUTHORIZATION, PROTOCOL_VIOLATION};
use crate::protocol::startup::{CancelSecret, FirstPacket, MAX_STARTUP_PACKET, parse_first_packet};
use crate::tls::describe::describe_ssl_error;
use crate::tls::policy::ALPN_POSTGRESQL;
use crate::tls::revocation::Revocation;
use crate::tls::verify::VerifyObserver;

/// A client connection after its TLS handshake.
pub(crate) type ClientStream<S = TcpStream> = SslStream<PrefixedIo<S>>;

/// What the first packet asked for, when the connection goes on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// TLS follows.
    Tls {
        /// Bytes already read that belong to the ClientHello, to replay to OpenSSL in a
        /// [`PrefixedIo`] (direct TLS only; empty after an SSLRequest).
        prefix: Vec<u8>,
        /// The client started with a ClientHello instead of an SSLRequest.
        direct: bool,
    },
    /// A plaintext CancelRequest.
    PlainCancel {
        /// Target backend pid.
        pid: i32,
        /// Its secret key.
        key: CancelSecret,
    },
}

/// What [`negotiate`] accepts, from `[listen]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Accept direct TLS.
    pub(crate) direct_tls: bool,
    /// Accept plaintext CancelRequests.
    pub(crate) plaintext_cancel: bool,
}

/// Why a client connection ended before or during its TLS handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Connected and closed without a byte: a TCP health check, logged at debug only.
    #[error("closed the connection without sending anything")]
    Empty,
    /// Closed in the middle of its first packet.
    #[error("closed the connection after {0} bytes of an incomplete first packet")]
    Truncated(usize),
    /// The first bytes are not PostgreSQL (HTTP, SSH, a bad length...).
    #[error("sent an invalid first packet: {0}")]
    Invalid(#[from] ProtocolError),
    /// A plaintext StartupMessage.
    #[error(
        "sent a plaintext StartupMessage (user \"{user}\", database \"{database}\"); refused: TLS is required"
    )]
    Plaintext {
        /// `user` parameter.
        user: String,
        /// `database` parameter.
        database: String,
    },
    /// Bytes pipelined after SSLRequest (CVE-2021-23214 pattern).
    #[error("sent unencrypted data after its SSLRequest; refused (possible man-in-the-middle)")]
    DataAfterSslRequest,
    /// A second GSSENCRequest, or data pipelined after one.
    #[error("sent a second GSSENCRequest or data after one")]
    RepeatedGssEnc,
    /// A ClientHello while `listen.direct_tls = false`.
    #[error("started direct TLS, which is disabled (listen.direct_tls = false)")]
    DirectTlsDisabled,
    /// Direct TLS without ALPN "postgresql".
    #[error("started direct TLS without ALPN \"postgresql\"; refused as PostgreSQL does")]
    DirectTlsWithoutAlpn,
    /// A plaintext CancelRequest while `listen.plaintext_cancel = false`.
    #[error("sent a plaintext CancelRequest, which is disabled (listen.plaintext_cancel = false)")]
    PlaintextCancelDisabled,
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The TLS handshake failed: the client offered no key-exchange group this side allows.
    #[error(
        "TLS handshake failed: no key-exchange group in common (the client offered only \
         {offered}; listen.groups allows {allowed})"
    )]
    NoCommonGroup {
        /// The groups the client offered, by name.
        offered: String,
        /// The list the listener was given.
        allowed: String,
    },
    /// The client's certificate was missing or did not verify (the handshake was refused).
    #[error("certificate not accepted: {reason} (subject {subject}, serial {serial})")]
    Certificate {
        /// OpenSSL's verify reason, or "no certificate presented".
        reason: String,
        /// The certificate's subject, if any.
        subject: String,
        /// Its serial, if any.
        serial: String,
    },
    /// The client's verified certificate is revoked (CRL or OCSP) or, with OCSP hard-fail,
    /// not known to be good.
    #[error("certificate {0}")]
    Revocation(Revocation),
    /// The client's address is outside `listen.allowed_clients` (told after its handshake).
    #[error("from {0} is not in listen.allowed_clients")]
    NoAccess(std::net::IpAddr),
    /// The client's address has `listen.max_connections_per_client` connections already.
    #[error("from {address} has {limit} connections already (listen.max_connections_per_client)")]
    TooManyFromAddress {
        /// The address.
        address: std::net::IpAddr,
        /// The limit.
        limit: usize,
    },
    /// On a listener with `proxy_protocol = "v2"`, a connection from an address outside
    /// `listen.trusted_proxies` (told after its handshake).
    #[error(
        "from {0}, which is not in listen.trusted_proxies (proxy_protocol = \"v2\" on the listener it reached)"
    )]
    UntrustedProxy(std::net::IpAddr),
    /// On a listener with `proxy_protocol = "v2"`, a connection from a trusted address that
    /// started with PostgreSQL or TLS instead of a PROXY header (told after its handshake).
    #[error(
        "from {0} sent no PROXY protocol v2 header (proxy_protocol = \"v2\" on the listener it reached); a client connected around the load balancer?"
    )]
    MissingProxyHeader(std::net::IpAddr),
    /// A PROXY header from an address outside `listen.trusted_proxies`: a client trying to
    /// choose its own address. Closed without a word.
    #[error("sent a PROXY header, but {0} is not in listen.trusted_proxies; refused")]
    SpoofedProxyHeader(std::net::IpAddr),
    /// A PROXY header that is malformed, v1, too long or cut short. Closed without a word:
    /// the peer is a balancer, not a PostgreSQL client.
    #[error("{0}")]
    ProxyHeader(ProxyHeaderError),
    /// `listen.handshake_timeout` ran out before the handshake completed.
    #[error("did not complete its TLS handshake within {}", humantime::format_duration(*.0))]
    HandshakeTimeout(Duration),
    /// A socket error.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

impl ClientError {
    /// What the client is told, where the protocol lets the proxy tell it anything: before
    /// TLS, only the answers PostgreSQL itself gives in plaintext; after the handshake, over
    /// TLS. Handshake failures end with OpenSSL's alert.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            ClientError::Plaintext { .. } => {
                Refusal::new(INVALID_AUTHORIZATION, "pgt-proxy accepts TLS connections only")
                    .detail("The client connected without TLS (sslmode=disable, allow or prefer without TLS).")
                    .hint("Connect with sslmode=verify-full, e.g. psql \"host=... sslmode=verify-full\".")
            }
            ClientError::DataAfterSslRequest => Refusal::new(
                PROTOCOL_VIOLATION,
                "received unencrypted data after SSL request",
            )
            .hint("This may indicate a man-in-the-middle attack."),
            ClientError::DirectTlsWithoutAlpn => Refusal::new(
                PROTOCOL_VIOLATION,
                "received direct SSL connection request without ALPN protocol negotiation extension",
            )
            .hint("Direct TLS (sslnegotiation=direct) needs a client that offers ALPN \"postgresql\" (libpq 17 or later)."),
            ClientError::NoAccess(address) => Refusal::new(
                INVALID_AUTHORIZATION,
                format!("pgt-proxy: no access from {address}"),
            ),
            ClientError::UntrustedProxy(address) => Refusal::new(
                INVALID_AUTHORIZATION,
                format!("pgt-proxy: no access from {address}"),
            )
            .detail("This listener accepts connections only through its load balancer (listen.trusted_proxies).")
            .hint("Connect to the load balancer's address."),
            ClientError::MissingProxyHeader(_) => Refusal::new(
                PROTOCOL_VIOLATION,
                "pgt-proxy: this listener expects connections through its load balancer",
            )
            .detail("The connection did not start with a PROXY protocol v2 header (listen.proxy_protocol = \"v2\").")
            .hint("Connect to the load balancer's address, not to a replica's."),
            ClientError::TooManyFromAddress { address, limit } => Refusal::new(
                crate::protocol::sqlstate::TOO_MANY_CONNECTIONS,
                format!("too many connections from {address}"),
            )
            .detail(format!(
                "pgt-proxy allows {limit} connections per client address (listen.max_connections_per_client)."
            )),
            ClientError::Revocation(r) => {
                let refusal = Refusal::new(INVALID_AUTHORIZATION, format!("client certificate {r}"));
                match r {
                    Revocation::Revoked { .. } => {
                        refusal.hint("Use a certificate that has not been revoked.")
                    }
                    Revocation::Unknown { .. } => refusal,
                }
            }
            _ => return None,
        })
    }
}

/// Reads the plaintext first packet(s) and answers them, up to the start of TLS.
pub(crate) async fn negotiate<S>(io: &mut S, rules: Rules) -> Result<Opening, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut answered_gssenc = false;
    loop {
        let Some((packet, used)) = parse_first_packet(&buf)? else {
            let room = (MAX_STARTUP_PACKET - buf.len()).min(chunk.len());
            let n = io.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Err(if buf.is_empty() && !answered_gssenc {
                    ClientError::Empty
                } else {
                    ClientError::Truncated(buf.len())
                });
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let pipelined = buf.len() > used;
        match packet {
            FirstPacket::SslRequest if pipelined => return Err(ClientError::DataAfterSslRequest),
            FirstPacket::SslRequest => {
                io.write_all(b"S").await?;
                return Ok(Opening::Tls {
                    prefix: Vec::new(),
                    direct: false,
                });
            }
            FirstPacket::GssEncRequest if answered_gssenc || pipelined => {
                return Err(ClientError::RepeatedGssEnc);
            }
            FirstPacket::GssEncRequest => {
                answered_gssenc = true;
                io.write_all(b"N").await?;
                buf.clear();
            }
            FirstPacket::Cancel(_) if !rules.plaintext_cancel => {
                return Err(ClientError::PlaintextCancelDisabled);
            }
            FirstPacket::Cancel(c) => {
                return Ok(Opening::PlainCancel {
                    pid: c.pid,
                    key: CancelSecret::new(c.key),
                });
            }
            FirstPacket::Startup(s) => {
                let user = s.get("user").unwrap_or_default();
                let database = s.get("database").unwrap_or_else(|| user.clone());
                return Err(ClientError::Plaintext { user, database });
            }
            FirstPacket::DirectTls if !rules.direct_tls => {
                return Err(ClientError::DirectTlsDisabled);
            }
            FirstPacket::DirectTls => {
                return Ok(Opening::Tls {
                    prefix: buf,
                    direct: true,
                });
            }
        }
    }
}

/// A finished handshake, and whether the client may go on over it.
pub(crate) struct Accepted<S> {
    /// The TLS stream.
    pub(crate) stream: ClientStream<S>,
    /// `Err` when the client must be refused over this stream: a revoked certificate
    /// (CRL), or direct TLS without ALPN.
    pub(crate) tls_checks: Result<(), ClientError>,
}

/// Runs the TLS handshake over `io` (which replays any read-ahead bytes). When the context
/// (the acceptor's, or the route's its SNI switched to) requires client certificates, a
/// valid one is required; `observe` (some context may ask for one) records why one failed,
/// and `allow_expired_crl` forgives a CRL past its nextUpdate.
pub(crate) async fn accept_tls<S>(
    io: PrefixedIo<S>,
    direct: bool,
    acceptor: &SslAcceptor,
    observe: bool,
    allow_expired_crl: bool,
) -> Result<Accepted<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake_error = |e: openssl::error::ErrorStack| ClientError::Handshake(e.to_string());
    let mut ssl = Ssl::new(acceptor.context()).map_err(handshake_error)?;
    // Installed always, with the context's mode: an SNI switch to a route's context changes
    // the mode and keeps this callback.
    let observer = observe.then(|| {
        let observer = VerifyObserver::new(allow_expired_crl, true);
        ssl.set_verify_callback(acceptor.context().verify_mode(), observer.callback());
        observer
    });
    let mut stream = SslStream::new(ssl, io).map_err(handshake_error)?;
    let wants_cert = |s: &ClientStream<S>| s.ssl().verify_mode().contains(SslVerifyMode::PEER);
    if let Err(e) = Pin::new(&mut stream).accept().await {
        let failure = observer.as_ref().and_then(VerifyObserver::failure);
        return Err(match failure {
            Some(f) => ClientError::Certificate {
                reason: f.error.error_string().to_owned(),
                subject: f.cert.subject,
                serial: f.cert.serial,
            },
            None if wants_cert(&stream) && stream.ssl().peer_certificate().is_none() => {
                ClientError::Certificate {
                    reason: format!("no certificate presented ({})", describe_ssl_error(&e)),
                    subject: String::new(),
                    serial: String::new(),
                }
            }
            None => match crate::tls::groups::no_common_group(stream.ssl()) {
                Some((offered, allowed)) => ClientError::NoCommonGroup { offered, allowed },
                None => ClientError::Handshake(describe_ssl_error(&e)),
            },
        });
    }
    // Only a revocation lets the handshake finish with a failure (see VerifyObserver).
    let tls_checks = match observer.as_ref().and_then(VerifyObserver::failure) {
        Some(f) => Err(ClientError::Revocation(Revocation::Revoked {
            check: "CRL",
            cert: f.cert,
        })),
        None if direct && stream.ssl().selected_alpn_protocol() != Some(ALPN_POSTGRESQL) => {
            Err(ClientError::DirectTlsWithoutAlpn)
        }
        None => Ok(()),
    };
    Ok(Accepted { stream, tls_checks })
}

/// How long a refusal may take to write; a client that does not read gets cut off.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// Sends a refusal as a FATAL ErrorResponse and closes the write side; bounded in time,
/// errors ignored (the client may already be gone, and the refusal is logged either way).
pub(crate) async fn tell<S: AsyncWrite + Unpin>(stream: &mut S, refusal: &Refusal) {
    let bytes = crate::protocol::error_response::encode_fatal(refusal);
    let _ = tokio::time::timeout(REFUSAL_WRITE_LIMIT, async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
}
