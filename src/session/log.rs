//! The one log line per connection, and the metrics of how it ended: the facts gathered
//! while serving it ([`Record`]) and how it ended ([`Outcome`]). Never holds passwords or
//! query text.

use std::net::SocketAddr;
use std::time::Instant;

use openssl::ssl::SslRef;

use crate::cancel::CancelOutcome;
use crate::client::ClientError;
use crate::relay::Ended;
use crate::tls::describe::{CertSummary, describe_tls};

use super::error::SessionError;
use super::scram_login::Mechanisms;
use crate::scram::upstream_login::Method;
use crate::settings::AuthSettings;

/// How a connection ended: the one value the log line is written from.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Authenticated, and relayed until one side ended.
    Relayed(Ended),
    /// A cancel request, forwarded or dropped.
    Cancel(CancelOutcome),
    /// Refused or failed before relaying; the client was told where the protocol allows.
    Refused(SessionError),
}

/// Facts gathered for the session's log line.
#[derive(Debug)]
pub(super) struct Record {
    /// The client: the socket's peer, or the client a PROXY header names.
    pub(super) peer: SocketAddr,
    /// The load balancer that sent the PROXY header, if any.
    pub(super) proxy: Option<SocketAddr>,
    pub(super) started: Instant,
    pub(super) client_cert: Option<CertSummary>,
    pub(super) client_tls: Option<String>,
    pub(super) client_tls_version: Option<&'static str>,
    /// The key-exchange group of the client's handshake.
    pub(super) client_tls_group: Option<String>,
    pub(super) upstream: Option<SocketAddr>,
    pub(super) upstream_tls: Option<String>,
    /// The key-exchange group of the upstream handshake.
    pub(super) upstream_tls_group: Option<String>,
    pub(super) user: Option<String>,
    pub(super) database: Option<String>,
    pub(super) application_name: Option<String>,
    pub(super) backend_pid: Option<i32>,
    pub(super) from_client: u64,
    pub(super) to_client: u64,
    /// The server name the client sent (SNI).
    pub(super) server_name: Option<String>,
    /// The upstream its route led to.
    pub(super) route: Option<String>,
    /// How the client authenticated (SCRAM-SHA-256-PLUS, SCRAM-SHA-256, passthrough).
    pub(super) client_auth: Option<&'static str>,
    /// How the proxy logged in upstream (the same, or trust, cert, passthrough).
    pub(super) upstream_auth: Option<&'static str>,
    /// Counts the connection in its route's active sessions from the route's choice on.
    pub(super) route_active: Option<crate::metrics::RouteActive>,
}

impl Record {
    /// A record for a connection from `peer`, accepted now.
    pub(super) fn new(peer: SocketAddr) -> Self {
        Self {
            peer,
            proxy: None,
            started: Instant::now(),
            client_cert: None,
            client_tls: None,
            client_tls_version: None,
            client_tls_group: None,
            upstream: None,
            upstream_tls: None,
            upstream_tls_group: None,
            user: None,
            database: None,
            application_name: None,
            backend_pid: None,
            from_client: 0,
            to_client: 0,
            server_name: None,
            route: None,
            client_auth: None,
            upstream_auth: None,
            route_active: None,
        }
    }

    /// Notes who the connection is from, once a PROXY header (if any) has been read.
    pub(super) fn identified(&mut self, addresses: crate::client::Addresses) {
        self.peer = addresses.client;
        self.proxy = addresses.proxy;
    }

    /// Notes the client's TLS connection and certificate.
    pub(super) fn client_tls(&mut self, ssl: &SslRef) {
        self.client_tls = Some(describe_tls(ssl));
        self.client_tls_version = Some(ssl.version_str());
        self.client_tls_group = crate::tls::groups::negotiated(ssl);
        self.client_cert = ssl.peer_certificate().map(|c| CertSummary::of(&c));
    }
}

impl Record {
    /// Notes the mechanisms of a login; `None` is a relayed (passthrough) login.
    pub(super) fn auth_used(&mut self, used: Option<Mechanisms>, auth: &AuthSettings) {
        let (client, upstream) = match used {
            None => ("passthrough", "passthrough"),
            Some(m) => (
                m.client,
                match m.upstream {
                    Method::Scram(mechanism) => mechanism,
                    Method::NoPassword if auth.upstream_certificate => "cert",
                    Method::NoPassword => "trust",
                },
            ),
        };
        self.client_auth = Some(client);
        self.upstream_auth = Some(upstream);
    }
}

/// How an ended session is described.
fn describe(outcome: &Outcome) -> (tracing::Level, String, String, String) {
    use tracing::Level;
    let (level, outcome_field, sqlstate, message) = match outcome {
        Outcome::Relayed(ended) => {
            let how = match ended {
                Ended::ByClient => "client closed".to_string(),
                Ended::ByServer => "server closed".to_string(),
                Ended::ClientError(e) => format!("client connection lost: {e}"),
                Ended::ServerError(e) => format!("upstream connection lost: {e}"),
                Ended::Shutdown => "proxy shutting down (57P01 sent)".to_string(),
                Ended::CloseTimedOut => {
                    "one side ended and the other did not take the close in time".to_string()
                }
            };
            let message = format!("session ended: {how}");
            (Level::INFO, "authenticated".into(), String::new(), message)
        }
        Outcome::Cancel(CancelOutcome::Forwarded { addr, .. }) => (
            Level::INFO,
            "cancel forwarded".into(),
            String::new(),
            format!("cancel request forwarded to {addr}"),
        ),
        Outcome::Cancel(CancelOutcome::ToPeer { id, addr }) => (
            Level::INFO,
            "cancel forwarded to peer".into(),
            String::new(),
            format!("cancel request forwarded to peer {id} at {addr} (its session)"),
        ),
        Outcome::Cancel(CancelOutcome::Dropped(reason)) => (
            Level::WARN,
            "cancel dropped".into(),
            String::new(),
            format!("cancel request dropped: {reason}"),
        ),
        Outcome::Cancel(CancelOutcome::NoMatch) => (
            Level::WARN,
            "cancel dropped".into(),
            String::new(),
            "cancel request matches no live session; not forwarded".into(),
        ),
        Outcome::Refused(e) => {
            let sqlstate = e.sqlstate().map(|s| s.to_string()).unwrap_or_default();
            let outcome = if sqlstate.is_empty() {
                "refused".to_string()
            } else {
                sqlstate.clone()
            };
            (
                Level::WARN,
                outcome,
                sqlstate,
                format!("session refused: {e}"),
            )
        }
    };
    (level, outcome_field, sqlstate, message)
}

/// Writes the line for a connection that ended with `outcome`.
pub(super) fn session_end(r: &Record, outcome: &Outcome) {
    if let Outcome::Refused(SessionError::Client(ClientError::Empty)) = outcome {
        // Health checks connect and close; keep them out of the log.
        tracing::debug!(client_addr = %r.peer, proxy_addr = %proxy_addr(r), "connection closed without data");
        return;
    }
    let (level, outcome, sqlstate, message) = describe(outcome);
    let duration_ms = r.started.elapsed().as_millis() as u64;
    let client_tls = r.client_tls.as_deref().unwrap_or("none");
    let tls_version = r.client_tls_version.unwrap_or("none");
    let cert = r.client_cert.as_ref();
    let client_cert_subject = cert.map(|c| c.subject.as_str()).unwrap_or("");
    let client_cert_serial = cert.map(|c| c.serial.as_str()).unwrap_or("");
    let client_cert_issuer = cert.map(|c| c.issuer.as_str()).unwrap_or("");
    let upstream_tls = r.upstream_tls.as_deref().unwrap_or("none");
    let client_tls_group = r.client_tls_group.as_deref().unwrap_or("none");
    let upstream_tls_group = r.upstream_tls_group.as_deref().unwrap_or("none");
    let upstream = r.upstream.map(|a| a.to_string()).unwrap_or_default();
    let user = r.user.as_deref().unwrap_or("");
    let database = r.database.as_deref().unwrap_or("");
    let application_name = r.application_name.as_deref().unwrap_or("");
    let backend_pid = r.backend_pid.unwrap_or(0);
    let client_auth = r.client_auth.unwrap_or("");
    let route = r.route.as_deref().unwrap_or("");
    let server_name = r.server_name.as_deref().unwrap_or("");
    let upstream_auth = r.upstream_auth.unwrap_or("");
    let sqlstate = sqlstate.as_str();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                client_addr = %r.peer, proxy_addr = %proxy_addr(r), tls_version, client_tls,
                client_tls_group, client_cert_subject, client_cert_serial, client_cert_issuer,
                upstream = %upstream, upstream_tls, upstream_tls_group, user,
                database, application_name, backend_pid, client_auth, upstream_auth, route,
                server_name,
                outcome = %outcome,
                sqlstate, duration_ms, bytes_from_client = r.from_client,
                bytes_to_client = r.to_client, "{}", message
            )
        };
    }
    if level == tracing::Level::INFO {
        line!(info);
    } else {
        line!(warn);
    }
}

/// The balancer's address for the log, empty without one.
fn proxy_addr(r: &Record) -> String {
    r.proxy.map(|a| a.to_string()).unwrap_or_default()
}

/// Adds a connection that ended with `outcome` to the metrics.
pub(super) fn count(r: &Record, outcome: &Outcome) {
    let m = crate::metrics::get();
    let label = match outcome {
        Outcome::Relayed(_) => "authenticated".to_owned(),
        Outcome::Cancel(_) => "cancel".to_owned(),
        Outcome::Refused(e) => e
            .sqlstate()
            .map_or_else(|| "refused".to_owned(), |s| s.to_string()),
    };
    if let Outcome::Refused(e) = outcome
        && let Some((leg, reason)) = e.handshake_failure()
    {
        let labels = crate::metrics::LegReason { leg, reason };
        m.handshake_failures.get_or_create(&labels).inc();
    }
    if let Outcome::Cancel(c) = outcome {
        let result = c.result();
        m.cancels
            .get_or_create(&crate::metrics::ResultLabel { result })
            .inc();
    }
    m.sessions
        .get_or_create(&crate::metrics::Outcome { outcome: label })
        .inc();
    for (leg, group) in [
        ("client", &r.client_tls_group),
        ("upstream", &r.upstream_tls_group),
    ] {
        if let Some(group) = group {
            let group = crate::tls::groups::label(group);
            m.tls_groups
                .get_or_create(&crate::metrics::LegGroup { leg, group })
                .inc();
        }
    }
    m.session_duration
        .observe(r.started.elapsed().as_secs_f64());
}
