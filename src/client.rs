//! The client leg: pgt-proxy as a TLS server for PostgreSQL clients.
//!
//! Reads the first packet in plaintext and answers it the way PostgreSQL does (SSLRequest ->
//! 'S', GSSENCRequest -> 'N'), refuses plaintext sessions with a message that says how to
//! connect, detects direct TLS, and runs the TLS handshake. Nothing after the handshake lives
//! here: that is [`crate::session`].

use std::io;
use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::{Ssl, SslAcceptor, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::prefixed::PrefixedIo;
use crate::protocol::ProtocolError;
use crate::protocol::error_response::encode_fatal;
use crate::protocol::sqlstate::{INVALID_AUTHORIZATION, PROTOCOL_VIOLATION, SqlState};
use crate::protocol::startup::{FirstPacket, MAX_STARTUP_PACKET, parse_first_packet};
use crate::settings::ListenSettings;
use crate::tls::{ALPN_POSTGRESQL, VerifyObserver, describe_ssl_error};

/// A client connection after its TLS handshake.
pub type ClientStream = SslStream<PrefixedIo<TcpStream>>;

/// How long a refusal may take to write; a client that does not read gets cut off.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// What the first packet asked for, when the connection goes on.
#[derive(Debug)]
pub enum Opening {
    /// TLS follows: `prefix` holds bytes already read that belong to the ClientHello.
    Tls {
        /// Read-ahead bytes to replay to OpenSSL (direct TLS only).
        prefix: Vec<u8>,
        /// The client started with a ClientHello instead of an SSLRequest.
        direct: bool,
    },
    /// A plaintext CancelRequest.
    PlainCancel {
        /// Target backend pid.
        pid: i32,
        /// Its secret key.
        key: Vec<u8>,
    },
}

/// Why a client connection ended before or during its TLS handshake.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connected and closed without a byte: a TCP health check, logged at debug only.
    #[error("closed the connection without sending anything")]
    Empty,
    /// Closed in the middle of its first packet.
    #[error("closed the connection after {0} bytes of an incomplete first packet")]
    Truncated(usize),
    /// The first bytes are not PostgreSQL (HTTP, SSH, a bad length...).
    #[error("sent an invalid first packet: {0}")]
    Invalid(#[from] ProtocolError),
    /// A plaintext StartupMessage; the client was told to use TLS.
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
    /// The client's certificate was missing or did not verify (the handshake was refused).
    #[error("client certificate not accepted: {reason} (subject {subject}, serial {serial})")]
    Certificate {
        /// OpenSSL's verify reason, or "no certificate presented".
        reason: String,
        /// The certificate's subject, if any.
        subject: String,
        /// Its serial, if any.
        serial: String,
    },
    /// The client's certificate is revoked (told with FATAL 28000 after the handshake).
    #[error("client certificate revoked (CRL): subject {subject}, serial {serial}")]
    Revoked {
        /// The certificate's subject.
        subject: String,
        /// Its serial.
        serial: String,
    },
    /// `listen.handshake_timeout` ran out before the handshake completed.
    #[error("did not complete its TLS handshake within {}", humantime::format_duration(*.0))]
    HandshakeTimeout(Duration),
    /// A socket error.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

/// Reads the plaintext first packet(s) and answers them, up to the start of TLS.
pub async fn negotiate(
    tcp: &mut TcpStream,
    listen: &ListenSettings,
) -> Result<Opening, ClientError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut answered_gssenc = false;
    loop {
        let (packet, used) = match parse_first_packet(&buf)? {
            Some(found) => found,
            None => {
                let room = (MAX_STARTUP_PACKET - buf.len()).min(chunk.len());
                let n = tcp.read(&mut chunk[..room]).await?;
                if n == 0 {
                    return Err(if buf.is_empty() && !answered_gssenc {
                        ClientError::Empty
                    } else {
                        ClientError::Truncated(buf.len())
                    });
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
        };
        let pipelined = buf.len() > used;
        match packet {
            FirstPacket::SslRequest => {
                if pipelined {
                    refuse(
                        tcp,
                        PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                        None,
                        Some("This may indicate a man-in-the-middle attack."),
                    )
                    .await;
                    return Err(ClientError::DataAfterSslRequest);
                }
                tcp.write_all(b"S").await?;
                return Ok(Opening::Tls {
                    prefix: Vec::new(),
                    direct: false,
                });
            }
            FirstPacket::GssEncRequest => {
                if answered_gssenc || pipelined {
                    return Err(ClientError::RepeatedGssEnc);
                }
                answered_gssenc = true;
                tcp.write_all(b"N").await?;
                buf.clear();
            }
            FirstPacket::Cancel(c) => {
                if !listen.plaintext_cancel {
                    return Err(ClientError::PlaintextCancelDisabled);
                }
                return Ok(Opening::PlainCancel {
                    pid: c.pid,
                    key: c.key.to_vec(),
                });
            }
            FirstPacket::Startup(s) => {
                let user = s.get("user").unwrap_or_default();
                let database = s.get("database").unwrap_or_else(|| user.clone());
                refuse(
                    tcp,
                    INVALID_AUTHORIZATION,
                    "pgt-proxy accepts TLS connections only",
                    Some("The client connected without TLS (sslmode=disable, allow or prefer without TLS)."),
                    Some("Connect with sslmode=verify-full, e.g. psql \"host=... sslmode=verify-full\"."),
                )
                .await;
                return Err(ClientError::Plaintext { user, database });
            }
            FirstPacket::DirectTls => {
                if !listen.direct_tls {
                    return Err(ClientError::DirectTlsDisabled);
                }
                return Ok(Opening::Tls {
                    prefix: buf,
                    direct: true,
                });
            }
        }
    }
}

/// Runs the TLS handshake; for direct TLS, requires that ALPN "postgresql" was negotiated;
/// when client certificates are required, requires a valid, unrevoked one.
pub async fn accept_tls(
    tcp: TcpStream,
    prefix: Vec<u8>,
    direct: bool,
    acceptor: &SslAcceptor,
    listen: &ListenSettings,
) -> Result<ClientStream, ClientError> {
    let handshake_error = |e: openssl::error::ErrorStack| ClientError::Handshake(e.to_string());
    let mut ssl = Ssl::new(acceptor.context()).map_err(handshake_error)?;
    let observer = listen.client_certs.map(|_| {
        let observer = VerifyObserver::new(listen.allow_expired_crl, true);
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            observer.callback(),
        );
        observer
    });
    let mut stream = SslStream::new(ssl, PrefixedIo::new(prefix, tcp)).map_err(handshake_error)?;
    if let Err(e) = Pin::new(&mut stream).accept().await {
        let failure = observer.as_ref().and_then(VerifyObserver::failure);
        return Err(match failure {
            Some(f) => ClientError::Certificate {
                reason: f.error.error_string().to_owned(),
                subject: f.subject,
                serial: f.serial,
            },
            None if observer.is_some() && stream.ssl().peer_certificate().is_none() => {
                ClientError::Certificate {
                    reason: format!("no certificate presented ({})", describe_ssl_error(&e)),
                    subject: String::new(),
                    serial: String::new(),
                }
            }
            None => ClientError::Handshake(describe_ssl_error(&e)),
        });
    }
    if let Some(f) = observer.as_ref().and_then(VerifyObserver::failure) {
        // Only a revocation lets the handshake finish (see VerifyObserver).
        refuse(
            &mut stream,
            INVALID_AUTHORIZATION,
            &format!(
                "client certificate revoked (CRL): subject {}, serial {}",
                f.subject, f.serial
            ),
            None,
            Some("Use a certificate that has not been revoked."),
        )
        .await;
        return Err(ClientError::Revoked {
            subject: f.subject,
            serial: f.serial,
        });
    }
    if direct && stream.ssl().selected_alpn_protocol() != Some(ALPN_POSTGRESQL) {
        refuse(
            &mut stream,
            PROTOCOL_VIOLATION,
            "received direct SSL connection request without ALPN protocol negotiation extension",
            None,
            Some("Direct TLS (sslnegotiation=direct) needs a client that offers ALPN \"postgresql\" (libpq 17 or later)."),
        )
        .await;
        return Err(ClientError::DirectTlsWithoutAlpn);
    }
    Ok(stream)
}

/// Sends a FATAL ErrorResponse and closes the write side; bounded in time, errors ignored
/// (the client may already be gone, and the refusal is logged by the caller either way).
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    code: SqlState,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let bytes = encode_fatal(code, message, detail, hint);
    let _ = tokio::time::timeout(REFUSAL_WRITE_LIMIT, async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
}
