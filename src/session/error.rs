//! Why a session ended before or instead of relaying, and the one place that decides what
//! the client is told: [`SessionError::refusal`]. The session's log line takes its SQLSTATE
//! from the same value ([`SessionError::sqlstate`]), so the log says what the client saw.

use std::time::Duration;

use crate::client::ClientError;
use crate::leg::Leg;
use crate::protocol::error_response::Refusal;
use crate::protocol::parameters::ParamsError;
use crate::protocol::sqlstate::{
    CONNECTION_FAILURE, FEATURE_NOT_SUPPORTED, INVALID_AUTHORIZATION, INVALID_PARAMETER_VALUE,
    INVALID_PASSWORD, PROTOCOL_VIOLATION, SqlState, TOO_MANY_CONNECTIONS, UNABLE_TO_CONNECT,
};
use crate::upstream::UpstreamError;

/// Why a session ended before relaying. Each variant knows what the client is told (if
/// anything) and with which SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The client leg failed up to the end of its TLS handshake, or its certificate was
    /// refused.
    #[error("client {0}")]
    Client(#[from] ClientError),
    /// The upstream leg could not be set up.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// `listen.startup_timeout` ran out before authentication completed.
    #[error("authentication did not complete within {} (listen.startup_timeout)", humantime::format_duration(*.0))]
    StartupTimeout(Duration),
    /// A peer sent something invalid during the startup phase (inside TLS).
    #[error("{} protocol violation: {}", leg_name(*.0), .1)]
    Protocol(Leg, String),
    /// A peer closed its connection during authentication without an error message.
    #[error("{} closed the connection during authentication", leg_name(*.0))]
    Closed(Leg),
    /// A leg's connection failed after TLS.
    #[error("{0} connection error: {1}")]
    Io(Leg, std::io::Error),
    /// The client asked for a protocol version other than 3.x.
    #[error("unsupported frontend protocol {0}.{1}: pgt-proxy supports 3.x")]
    UnsupportedProtocol(u16, u16),
    /// No `user` in the StartupMessage.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// The StartupMessage could be read two ways (a repeated key) or names what the proxy
    /// cannot judge; nothing was forwarded.
    #[error("client sent an invalid startup packet: {0}")]
    Parameters(crate::protocol::parameters::ParamsError),
    /// The client chose SCRAM-SHA-256-PLUS.
    #[error(
        "client selected SCRAM-SHA-256-PLUS (channel binding), which cannot work through a TLS-terminating proxy"
    )]
    ChannelBinding,
    /// The server refused the session with an ErrorResponse (relayed to the client as is).
    #[error("server refused the session: {} {message}", .sqlstate.map(|s| s.to_string()).unwrap_or_default())]
    ServerRefused {
        /// The server's SQLSTATE, when it sent a valid one.
        sqlstate: Option<SqlState>,
        /// The server's message.
        message: String,
    },
    /// More than `listen.max_connections` clients.
    #[error("refused: too many connections (listen.max_connections)")]
    TooManyConnections,
    /// The StartupMessage's user does not match the client certificate
    /// (`listen.client_cert_user`).
    #[error(
        "certificate authentication failed for user \"{user}\": the client certificate's {field} is {found}"
    )]
    CertificateUser {
        /// The user the client asked for.
        user: String,
        /// "CN" or "e-mail address".
        field: &'static str,
        /// What the certificate carries.
        found: String,
    },
    /// SCRAM termination failed (`auth.mode = "scram"`).
    #[error("SCRAM authentication of user \"{user}\" failed: {failure}")]
    Scram {
        /// The user from the StartupMessage.
        user: String,
        /// What failed.
        failure: crate::scram::ScramFailure,
    },
    /// No route matches (with `listen.unrouted = "reject"`).
    #[error("no route for server name {} and database \"{database}\"", .server_name.as_ref().map(|n| format!("\"{n}\"")).unwrap_or_else(|| "none".into()))]
    NoRoute {
        /// The SNI the client sent, if any.
        server_name: Option<String>,
        /// The StartupMessage's database.
        database: String,
    },
    /// A CancelRequest from a connection admission refused (not forwarded; the protocol
    /// has no answer to a cancel).
    #[error("cancel request not forwarded: {0}")]
    CancelRefused(Box<SessionError>),
    /// A relayed user the proxy has not checked was let in by a server that asked for no
    /// password (`auth.unknown_user = "passthrough"` without `auth.passthrough_trust`).
    #[error(
        "upstream server let the user in without asking for a password or certificate: it \
         trusts the proxy's address (pg_hba trust); refused (auth.passthrough_trust is off)"
    )]
    ServerAskedNothing,
    /// A StartupMessage over a connection made under the replicas' reserved server name.
    #[error(
        "client sent a StartupMessage under the replicas' server name {}: that name carries forwarded cancels only",
        crate::settings::PEER_SNI
    )]
    PeerNameSession,
    /// The proxy is shutting down and `listen.shutdown_timeout` has run out.
    #[error("proxy shutting down (listen.shutdown_timeout reached)")]
    Shutdown,
}

/// How messages name a leg: "client" and "upstream server".
fn leg_name(leg: Leg) -> &'static str {
    match leg {
        Leg::Client => "client",
        Leg::Upstream => "upstream server",
    }
}

impl SessionError {
    /// What the proxy tells the client, or `None` when it sends nothing: the client has
    /// gone, the handshake failed (OpenSSL's alert said it), or the server's own
    /// ErrorResponse was relayed.
    pub(super) fn refusal(&self) -> Option<Refusal> {
        let message = || self.to_string();
        Some(match self {
            SessionError::Client(e) => return e.refusal(),
            SessionError::Upstream(e) => e.refusal(),
            SessionError::StartupTimeout(_)
            | SessionError::Protocol(Leg::Upstream, _)
            | SessionError::Closed(Leg::Upstream)
            | SessionError::Io(Leg::Upstream, _) => Refusal::new(CONNECTION_FAILURE, message()),
            SessionError::Protocol(Leg::Client, what) => {
                Refusal::new(PROTOCOL_VIOLATION, what.clone())
            }
            SessionError::UnsupportedProtocol(..) => {
                Refusal::new(FEATURE_NOT_SUPPORTED, message())
            }
            SessionError::Parameters(ParamsError::BadReplication(_)) => {
                Refusal::new(INVALID_PARAMETER_VALUE, message())
            }
            SessionError::Parameters(_) => Refusal::new(PROTOCOL_VIOLATION, message()),
            SessionError::NoUser
            | SessionError::CertificateUser { .. }
            | SessionError::PeerNameSession => {
                Refusal::new(INVALID_AUTHORIZATION, message())
            }
            SessionError::ChannelBinding => Refusal::new(
                INVALID_AUTHORIZATION,
                "channel binding (SCRAM-SHA-256-PLUS) cannot work through pgt-proxy, a TLS-terminating proxy",
            )
            .detail("The client chose SCRAM-SHA-256-PLUS, which binds the login to the TLS certificate the client sees. That is the proxy's certificate, not the server's, so the server would reject the login.")
            .hint("Connect with channel_binding=disable (psql: \"host=... sslmode=verify-full channel_binding=disable\"), or use certificate authentication."),
            SessionError::Shutdown => crate::relay::admin_shutdown(),
            SessionError::ServerAskedNothing => Refusal::new(
                INVALID_PASSWORD,
                "pgt-proxy: the upstream server asked for no password: it trusts the proxy's address",
            )
            .hint("pgt-proxy has no verifier for this user; it relays such users only to a server that asks them for a password (or set auth.passthrough_trust)."),
            SessionError::Scram { user, failure } => failure.refusal(user),
            SessionError::NoRoute { .. } => Refusal::new(UNABLE_TO_CONNECT, format!("pgt-proxy: {self}"))
                .hint("The name the client connected to (its SNI) and its database match no [[routes]] entry of pgt-proxy."),
            SessionError::TooManyConnections => {
                Refusal::new(TOO_MANY_CONNECTIONS, "too many connections")
                    .detail("pgt-proxy is serving listen.max_connections clients already.")
            }
            SessionError::ServerRefused { .. }
            | SessionError::CancelRefused(_)
            | SessionError::Closed(Leg::Client)
            | SessionError::Io(Leg::Client, _) => return None,
        })
    }

    /// For a refusal at a TLS or certificate check, the leg and a reason from a small fixed
    /// set (the metrics' labels): untrusted, hostname, expired, revoked, no_tls, timeout,
    /// unreachable, protocol, no_common_group.
    pub(super) fn handshake_failure(&self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            SessionError::Upstream(e) => ("upstream", upstream_reason(e)),
            SessionError::Client(e) => ("client", client_reason(e)?),
            _ => return None,
        })
    }

    /// The SQLSTATE the client received: the proxy's refusal, or the server's own error.
    pub(super) fn sqlstate(&self) -> Option<SqlState> {
        match self {
            SessionError::ServerRefused { sqlstate, .. } => *sqlstate,
            other => other.refusal().map(|r| r.sqlstate),
        }
    }
}

/// An upstream error's reason label (for several addresses, the last one's).
pub(super) fn upstream_reason(e: &UpstreamError) -> &'static str {
    use crate::upstream::UpstreamError as U;
    match e {
        U::Untrusted { reason, .. } if reason.contains("expired") => "expired",
        U::Untrusted { .. } => "untrusted",
        U::HostnameMismatch { .. } => "hostname",
        U::Revoked { .. } | U::OcspUnknown { .. } => "revoked",
        U::NoTls { .. } => "no_tls",
        U::Timeout { .. } => "timeout",
        U::Resolve { .. } | U::Connect { .. } => "unreachable",
        U::DataAfterTlsAnswer { .. } | U::Handshake { .. } => "protocol",
        U::AllFailed(all) => all.last().map_or("unreachable", upstream_reason),
    }
}

/// A client-leg error's reason label, for errors that are TLS or certificate refusals.
fn client_reason(e: &ClientError) -> Option<&'static str> {
    Some(match e {
        ClientError::Certificate { reason, .. } if reason.contains("expired") => "expired",
        ClientError::Certificate { .. } => "untrusted",
        ClientError::Revocation(_) => "revoked",
        ClientError::Plaintext { .. } => "no_tls",
        ClientError::HandshakeTimeout(_) => "timeout",
        ClientError::NoCommonGroup { .. } => "no_common_group",
        ClientError::ProxyHeader(_) | ClientError::SpoofedProxyHeader(_) => "proxy_header",
        ClientError::Handshake(_)
        | ClientError::DataAfterSslRequest
        | ClientError::DirectTlsWithoutAlpn
        | ClientError::DirectTlsDisabled
        | ClientError::Invalid(_)
        | ClientError::RepeatedGssEnc => "protocol",
        _ => return None,
    })
}
