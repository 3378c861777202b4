//! Why the upstream leg could not be set up, as the client is told it (FATAL 08001 with a
//! hint for the DBA) and the log records it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::error_response::Refusal;
use crate::protocol::sqlstate::UNABLE_TO_CONNECT;
use crate::tls::revocation::Revocation;

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
    pub(super) fn revocation(addr: SocketAddr, found: Revocation) -> Self {
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
