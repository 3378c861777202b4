//! One client connection from accept to close: negotiate, run both legs, relay the
//! authentication exchange message by message, then relay bytes; and the one log line that
//! says how it went.
//!
//! The steps are small async functions run in sequence (`serve` -> `open` -> `authenticate`
//! -> [`relay`]). The upstream leg starts as soon as the client's first packet asks for TLS
//! and runs concurrently with the client's handshake; nothing is relayed until both legs are
//! verified.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use openssl::ssl::SslRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use crate::cancel::{self, CancelOutcome, CancelRegistry};
use crate::client::{self, ClientError, ClientStream, Opening};
use crate::config::schema::ClientCertUser;
use crate::framed::{FrameReader, ReadError};
use crate::protocol::ProtocolError;
use crate::protocol::error_response::{message_of, sqlstate_of};
use crate::protocol::message::{
    self, Authentication, MAX_BACKEND_STARTUP_MESSAGE, MAX_FRONTEND_AUTH_MESSAGE,
    SCRAM_SHA_256_PLUS, parse_frame, tag,
};
use crate::protocol::sqlstate::{self, SqlState};
use crate::protocol::startup::{FirstPacket, parse_untagged};
use crate::relay::{self, Ended};
use crate::settings::Settings;
use crate::upstream::{self, Upstream, UpstreamError};

/// What every session shares: settings, the cancel registry, counters, and the signal that
/// ends sessions at shutdown.
pub struct Shared {
    /// The running configuration. A reload swaps it whole; each connection takes the
    /// snapshot current at accept and keeps it to the end, so a reload never changes a live
    /// session.
    pub settings: ArcSwap<Settings>,
    /// Live sessions' cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Sessions currently open.
    pub active: AtomicUsize,
    /// Sessions served since start.
    pub total: AtomicU64,
    /// Cancelled when `listen.shutdown_timeout` has run out: remaining sessions get FATAL
    /// 57P01 and end.
    pub terminate: CancellationToken,
    /// Accept loops running (the watchdog pings only while all are).
    pub accepting: AtomicUsize,
}

impl Shared {
    /// Wraps settings with an empty registry and zeroed counters.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(settings),
            cancels: Arc::default(),
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            terminate: CancellationToken::new(),
            accepting: AtomicUsize::new(0),
        })
    }
}

/// Why a session ended before or instead of relaying. Each variant knows what the client is
/// told (if anything) and with which SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client leg failed before TLS was up (already answered where the protocol allows).
    #[error("client {0}")]
    Client(#[from] ClientError),
    /// The upstream leg failed.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// `listen.startup_timeout` ran out before authentication completed.
    #[error("authentication did not complete within {} (listen.startup_timeout)", humantime::format_duration(*.0))]
    StartupTimeout(Duration),
    /// The client sent something invalid inside TLS.
    #[error("client protocol violation: {0}")]
    ClientProtocol(String),
    /// The client asked for a protocol version other than 3.x.
    #[error("unsupported frontend protocol {0}.{1}: pgt-proxy supports 3.x")]
    UnsupportedProtocol(u16, u16),
    /// No `user` in the StartupMessage.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// The client chose SCRAM-SHA-256-PLUS.
    #[error(
        "client selected SCRAM-SHA-256-PLUS (channel binding), which cannot work through a TLS-terminating proxy"
    )]
    ChannelBinding,
    /// The server sent something invalid during the startup phase.
    #[error("upstream server protocol violation: {0}")]
    UpstreamProtocol(String),
    /// The server closed the connection during authentication without an error message.
    #[error("upstream server closed the connection during authentication")]
    UpstreamClosed,
    /// The server refused the session with an ErrorResponse (relayed to the client).
    #[error("server refused the session: {sqlstate} {message}")]
    ServerRefused {
        /// The server's SQLSTATE.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// The client went away during authentication.
    #[error("client closed the connection during authentication")]
    ClientClosed,
    /// The client's connection failed after TLS.
    #[error("client connection error: {0}")]
    ClientIo(std::io::Error),
    /// The upstream connection failed after TLS.
    #[error("upstream connection error: {0}")]
    UpstreamIo(std::io::Error),
    /// More than `listen.max_connections` clients.
    #[error("refused: too many connections (listen.max_connections)")]
    TooManyConnections,
    /// OCSP says the client's certificate is revoked, or (hard-fail) could not say it is good.
    #[error("client certificate {problem}: subject {subject}, serial {serial}")]
    ClientCertificateOcsp {
        /// What OCSP found.
        problem: String,
        /// The certificate's subject.
        subject: String,
        /// Its serial.
        serial: String,
    },
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
    /// The proxy is shutting down and `listen.shutdown_timeout` has run out.
    #[error("proxy shutting down (listen.shutdown_timeout reached)")]
    Shutdown,
}

impl SessionError {
    /// The SQLSTATE and texts the client receives, if the proxy sends an error for this.
    fn client_error(&self) -> Option<(SqlState, String, Option<&'static str>, Option<String>)> {
        Some(match self {
            SessionError::Upstream(e) => (e.sqlstate(), e.to_string(), None, e.hint().map(Into::into)),
            SessionError::StartupTimeout(_) => (sqlstate::CONNECTION_FAILURE, self.to_string(), None, None),
            SessionError::ClientProtocol(m) => (sqlstate::PROTOCOL_VIOLATION, m.clone(), None, None),
            SessionError::UnsupportedProtocol(..) => {
                (sqlstate::FEATURE_NOT_SUPPORTED, self.to_string(), None, None)
            }
            SessionError::NoUser
            | SessionError::CertificateUser { .. }
            | SessionError::ClientCertificateOcsp { .. } => {
                (sqlstate::INVALID_AUTHORIZATION, self.to_string(), None, None)
            }
            SessionError::ChannelBinding => (
                sqlstate::INVALID_AUTHORIZATION,
                "channel binding (SCRAM-SHA-256-PLUS) cannot work through pgt-proxy, a TLS-terminating proxy".into(),
                Some("The client chose SCRAM-SHA-256-PLUS, which binds the login to the TLS certificate the client sees. That is the proxy's certificate, not the server's, so the server would reject the login."),
                Some("Connect with channel_binding=disable (psql: \"host=... sslmode=verify-full channel_binding=disable\"), or use certificate authentication.".into()),
            ),
            SessionError::UpstreamProtocol(_) | SessionError::UpstreamClosed | SessionError::UpstreamIo(_) => (
                sqlstate::CONNECTION_FAILURE,
                self.to_string(),
                None,
                None,
            ),
            SessionError::Shutdown => (
                sqlstate::ADMIN_SHUTDOWN,
                relay::ADMIN_SHUTDOWN_MESSAGE.into(),
                None,
                None,
            ),
            SessionError::TooManyConnections => (
                sqlstate::TOO_MANY_CONNECTIONS,
                "too many connections".into(),
                Some("pgt-proxy is serving listen.max_connections clients already."),
                None,
            ),
            SessionError::Client(_)
            | SessionError::ServerRefused { .. }
            | SessionError::ClientClosed
            | SessionError::ClientIo(_) => return None,
        })
    }

    /// The SQLSTATE recorded as this session's outcome.
    fn outcome_sqlstate(&self) -> Option<String> {
        match self {
            SessionError::ServerRefused { sqlstate, .. } => Some(sqlstate.clone()),
            SessionError::Client(ClientError::Plaintext { .. } | ClientError::Revoked { .. }) => {
                Some(sqlstate::INVALID_AUTHORIZATION.to_string())
            }
            SessionError::Client(
                ClientError::DataAfterSslRequest | ClientError::DirectTlsWithoutAlpn,
            ) => Some(sqlstate::PROTOCOL_VIOLATION.to_string()),
            other => other.client_error().map(|(code, ..)| code.to_string()),
        }
    }
}

/// Facts gathered for the session's log line. Never holds passwords or query text.
#[derive(Debug, Default)]
struct Record {
    client_cert: Option<CertIdentity>,
    client_tls: Option<String>,
    client_tls_version: Option<&'static str>,
    upstream: Option<SocketAddr>,
    upstream_tls: Option<String>,
    user: Option<String>,
    database: Option<String>,
    application_name: Option<String>,
    backend_pid: Option<i32>,
    from_client: u64,
    to_client: u64,
}

/// A client certificate as the session log names it.
#[derive(Debug, Default)]
struct CertIdentity {
    subject: String,
    serial: String,
    issuer: String,
}

impl CertIdentity {
    fn of(cert: &openssl::x509::X509Ref) -> Self {
        Self {
            subject: crate::tls::name_to_string(cert.subject_name()),
            serial: crate::tls::serial_hex(cert),
            issuer: crate::tls::name_to_string(cert.issuer_name()),
        }
    }
}

/// OCSP for a verified client certificate: revoked is refused; unknown is refused in
/// hard-fail and logged in soft-fail.
async fn check_client_ocsp(
    ocsp: &crate::ocsp::OcspChecker,
    client: &ClientStream,
    settings: &Settings,
) -> Result<(), SessionError> {
    use crate::ocsp::{OcspError, OcspMode};
    match ocsp.check(client.ssl(), settings.acceptor.context()).await {
        Ok(()) => Ok(()),
        Err((OcspError::Unknown(reason), who)) if ocsp.mode() == OcspMode::SoftFail => {
            tracing::warn!(
                subject = who.subject,
                serial = who.serial,
                "client certificate revocation status unknown (OCSP): {reason}; accepted (listen.client_ocsp = \"soft-fail\")"
            );
            Ok(())
        }
        Err((e, who)) => Err(SessionError::ClientCertificateOcsp {
            problem: e.to_string(),
            subject: who.subject,
            serial: who.serial,
        }),
    }
}

/// `listen.client_cert_user`: the user must be the certificate's CN (PostgreSQL's
/// clientcert=verify-full) or one of its e-mail SANs.
fn check_certificate_user(
    rule: ClientCertUser,
    ssl: &SslRef,
    user: &str,
) -> Result<(), SessionError> {
    let Some(cert) = ssl.peer_certificate() else {
        return Ok(());
    };
    let (field, names): (&'static str, Vec<String>) = match rule {
        ClientCertUser::Off => return Ok(()),
        ClientCertUser::Cn => (
            "CN",
            cert.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .filter_map(|e| e.data().to_string().ok())
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

/// How a session that did not fail ended.
enum Finish {
    /// A cancel request, forwarded or dropped.
    Cancel(CancelOutcome),
    /// An authenticated session, relayed until one side ended.
    Relayed(Ended),
}

/// Serves one accepted connection; `permit` holds its place under `listen.max_connections`.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    shared.active.fetch_add(1, Ordering::Relaxed);
    shared.total.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut record = Record::default();
    let settings = shared.settings.load_full();
    let result = open(tcp, &shared, &settings, &mut record).await;
    log_end(peer, started, &record, &result);
    shared.active.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// Answers a connection over the limit: TLS as usual, then FATAL 53300 (no upstream leg).
pub async fn refuse_too_many(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let mut record = Record::default();
    let settings = shared.settings.load_full();
    let result = refuse_over_limit(tcp, &shared, &settings, &mut record).await;
    log_end(peer, started, &record, &result);
    drop(permit);
}

async fn refuse_over_limit(
    mut tcp: TcpStream,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
) -> Result<Finish, SessionError> {
    let deadline = tokio::time::Instant::now() + settings.listen.handshake_timeout;
    let timed_out = || ClientError::HandshakeTimeout(settings.listen.handshake_timeout);
    // Cancels are served at the limit too: that is exactly when every slot may be running a
    // query someone wants to stop (PostgreSQL does the same).
    let (prefix, direct) = match opening(&mut tcp, shared, settings, record, deadline).await? {
        Next::Tls { prefix, direct } => (prefix, direct),
        Next::Finished(finish) => return Ok(finish),
    };
    let mut client = timeout_at(
        deadline,
        client::accept_tls(tcp, prefix, direct, &settings.acceptor, &settings.listen),
    )
    .await
    .map_err(|_| timed_out())??;
    record.client_tls = Some(describe_tls(client.ssl()));
    record.client_tls_version = Some(client.ssl().version_str());
    let startup_deadline = tokio::time::Instant::now() + settings.listen.startup_timeout;
    let first = timeout_at(
        startup_deadline,
        read_startup(&mut client, &mut FrameReader::new()),
    )
    .await;
    if let Ok(Ok(StartupPacket::Cancel { pid, key })) = first {
        let result = Box::pin(cancel_request(shared, settings, pid, &key, record)).await;
        let _ = client.shutdown().await;
        return result;
    }
    fail(&mut client, SessionError::TooManyConnections).await
}

/// Negotiates with the client, connects upstream and authenticates: everything before the
/// relay. Its future is large (handshakes, timers, the startup exchange) and is freed once
/// it is done, so a long idle session keeps only the relay's small state.
async fn establish(
    mut tcp: TcpStream,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
) -> Result<Opened, SessionError> {
    let listen = &settings.listen;
    let handshake_deadline = tokio::time::Instant::now() + listen.handshake_timeout;
    let timed_out = || ClientError::HandshakeTimeout(listen.handshake_timeout);
    let (prefix, direct) = match Box::pin(opening(
        &mut tcp,
        shared,
        settings,
        record,
        handshake_deadline,
    ))
    .await?
    {
        Next::Tls { prefix, direct } => (prefix, direct),
        Next::Finished(finish) => return Ok(Opened::Finished(finish)),
    };

    // Both legs at once: the added connect latency is the slower of the two, not the sum. A
    // failed upstream is reported to the client once its TLS is up, so the leg's result is
    // carried as a value; a failed client handshake returns at once and drops the upstream.
    let client_leg = async {
        timeout_at(
            handshake_deadline,
            client::accept_tls(tcp, prefix, direct, &settings.acceptor, listen),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()))
    };
    let upstream_leg = async {
        Ok::<_, ClientError>(upstream::connect(&settings.upstream, &settings.connector).await)
    };
    let (mut client, upstream) = if listen.client_certs.is_some() {
        // With client certificates required, nobody reaches the upstream before their
        // certificate has verified.
        let mut client = Box::pin(client_leg).await?;
        if let Some(ocsp) = &listen.client_ocsp
            && let Err(e) = Box::pin(check_client_ocsp(ocsp, &client, settings)).await
        {
            record.client_cert = client
                .ssl()
                .peer_certificate()
                .map(|c| CertIdentity::of(&c));
            return fail(&mut client, e).await.map(Opened::Finished);
        }
        (client, Box::pin(upstream_leg).await?)
    } else {
        Box::pin(async { tokio::try_join!(client_leg, upstream_leg) }).await?
    };
    record.client_tls = Some(describe_tls(client.ssl()));
    record.client_tls_version = Some(client.ssl().version_str());
    if let Some(cert) = client.ssl().peer_certificate() {
        record.client_cert = Some(CertIdentity::of(&cert));
    }

    let startup_deadline = tokio::time::Instant::now() + listen.startup_timeout;
    let startup_timeout = SessionError::StartupTimeout(listen.startup_timeout);
    let mut from_client = FrameReader::new();
    let startup = match timeout_at(
        startup_deadline,
        read_startup(&mut client, &mut from_client),
    )
    .await
    {
        Ok(Ok(packet)) => packet,
        Ok(Err(e)) => return fail(&mut client, e).await.map(Opened::Finished),
        Err(_) => {
            return fail(&mut client, startup_timeout)
                .await
                .map(Opened::Finished);
        }
    };
    let StartupPacket::Startup(startup) = startup else {
        let StartupPacket::Cancel { pid, key } = startup else {
            unreachable!("read_startup returns only these two")
        };
        drop(upstream);
        let result = Box::pin(cancel_request(shared, settings, pid, &key, record)).await;
        let _ = client.shutdown().await;
        return result.map(Opened::Finished);
    };
    let parsed = match parse_untagged(&startup) {
        Ok(Some((FirstPacket::Startup(s), _))) => s,
        _ => unreachable!("read_startup checked the packet"),
    };
    record.user = parsed.get("user");
    record.database = parsed.get("database").or_else(|| record.user.clone());
    record.application_name = parsed.get("application_name");
    if record.user.as_deref().is_none_or(str::is_empty) {
        return fail(&mut client, SessionError::NoUser)
            .await
            .map(Opened::Finished);
    }
    if let (Some(policy), Some(user)) = (listen.client_certs, record.user.as_deref())
        && let Err(e) = check_certificate_user(policy.user, client.ssl(), user)
    {
        return fail(&mut client, e).await.map(Opened::Finished);
    }

    let Upstream {
        stream: mut server,
        addr,
    } = match upstream {
        Ok(u) => u,
        Err(e) => {
            return fail(&mut client, SessionError::Upstream(e))
                .await
                .map(Opened::Finished);
        }
    };
    record.upstream = Some(addr);
    record.upstream_tls = Some(describe_tls(server.ssl()));

    let auth = tokio::select! {
        auth = timeout_at(
            startup_deadline,
            Box::pin(authenticate(&mut client, &mut server, &startup, from_client)),
        ) => auth,
        _ = shared.terminate.cancelled() => return fail(&mut client, SessionError::Shutdown).await.map(Opened::Finished),
    };
    let auth = match auth {
        Ok(Ok(auth)) => auth,
        Ok(Err(e)) => return fail(&mut client, e).await.map(Opened::Finished),
        Err(_) => {
            return fail(&mut client, startup_timeout)
                .await
                .map(Opened::Finished);
        }
    };
    Ok(Opened::Relay(Box::new(Established {
        client,
        server,
        auth,
        addr,
    })))
}

/// How the phase before the relay ended.
enum Opened {
    /// Authenticated: relay next.
    Relay(Box<Established>),
    /// Ended before any relay (a cancel request, or a refusal already sent).
    Finished(Finish),
}

/// An authenticated session, ready to relay.
struct Established {
    client: ClientStream,
    server: tokio_openssl::SslStream<TcpStream>,
    auth: Authenticated,
    addr: SocketAddr,
}

/// Serves one connection: everything up to authentication, then the relay.
async fn open(
    tcp: TcpStream,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
) -> Result<Finish, SessionError> {
    let Established {
        mut client,
        mut server,
        auth,
        addr,
    } = match Box::pin(establish(tcp, shared, settings, record)).await? {
        Opened::Relay(established) => *established,
        Opened::Finished(finish) => return Ok(finish),
    };
    record.backend_pid = auth.key.as_ref().map(|(pid, _)| *pid);
    let _registration = auth
        .key
        .as_ref()
        .map(|(pid, key)| shared.cancels.register(*pid, key, addr));

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
    Ok(Finish::Relayed(outcome.ended))
}

/// What follows the plaintext opening.
enum Next {
    /// TLS: the handshake comes next.
    Tls { prefix: Vec<u8>, direct: bool },
    /// A plaintext CancelRequest, served.
    Finished(Finish),
}

/// The plaintext opening, within the handshake deadline: negotiates with the client and
/// serves a plaintext CancelRequest. The client's connection stays open (with the caller)
/// until a cancel has been handed over: its close is what tells libpq it was delivered.
async fn opening(
    tcp: &mut TcpStream,
    shared: &Shared,
    settings: &Settings,
    record: &mut Record,
    deadline: tokio::time::Instant,
) -> Result<Next, SessionError> {
    let opening = timeout_at(deadline, client::negotiate(tcp, &settings.listen))
        .await
        .map_err(|_| ClientError::HandshakeTimeout(settings.listen.handshake_timeout))??;
    Ok(match opening {
        Opening::PlainCancel { pid, key } => {
            Next::Finished(cancel_request(shared, settings, pid, &key, record).await?)
        }
        Opening::Tls { prefix, direct } => Next::Tls { prefix, direct },
    })
}

/// The first packet inside TLS.
enum StartupPacket {
    /// A StartupMessage's raw bytes (checked to parse).
    Startup(Vec<u8>),
    /// An encrypted CancelRequest (libpq 17+).
    Cancel { pid: i32, key: Vec<u8> },
}

async fn read_startup(
    client: &mut ClientStream,
    reader: &mut FrameReader,
) -> Result<StartupPacket, SessionError> {
    let size = |b: &[u8]| parse_untagged(b).map(|o| o.map(|(_, n)| n));
    let raw = match reader.next(client, size).await {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(SessionError::ClientClosed),
        Err(ReadError::Io(e)) => return Err(SessionError::ClientIo(e)),
        Err(ReadError::Protocol(ProtocolError::UnsupportedProtocol { major, minor })) => {
            return Err(SessionError::UnsupportedProtocol(major, minor));
        }
        Err(ReadError::Protocol(e)) => {
            return Err(SessionError::ClientProtocol(format!(
                "invalid startup packet: {e}"
            )));
        }
    };
    let packet = match parse_untagged(&raw) {
        Ok(Some((packet, _))) => packet,
        _ => unreachable!("the reader returned a whole packet"),
    };
    match packet {
        FirstPacket::Startup(_) => Ok(StartupPacket::Startup(raw)),
        FirstPacket::Cancel(c) => Ok(StartupPacket::Cancel {
            pid: c.pid,
            key: c.key.to_vec(),
        }),
        FirstPacket::SslRequest | FirstPacket::GssEncRequest | FirstPacket::DirectTls => Err(
            SessionError::ClientProtocol("SSLRequest or GSSENCRequest received inside TLS".into()),
        ),
    }
}

/// The end of a successful authentication.
struct Authenticated {
    /// BackendKeyData: pid and cancel key.
    key: Option<(i32, Vec<u8>)>,
    /// Client bytes read past its last authentication message.
    client_pending: Vec<u8>,
    /// Server bytes read past ReadyForQuery.
    upstream_pending: Vec<u8>,
}

/// Forwards the StartupMessage and relays the authentication exchange message by message,
/// until the server's ReadyForQuery (success) or ErrorResponse (refusal, relayed as is).
async fn authenticate(
    client: &mut ClientStream,
    server: &mut tokio_openssl::SslStream<TcpStream>,
    startup: &[u8],
    mut from_client: FrameReader,
) -> Result<Authenticated, SessionError> {
    let server_io = SessionError::UpstreamIo;
    let client_io = SessionError::ClientIo;
    server.write_all(startup).await.map_err(server_io)?;
    server.flush().await.map_err(server_io)?;

    let mut from_server = FrameReader::new();
    // Server messages for the client, written out in one go when the client must act.
    let mut to_client = Vec::new();
    let mut key = None;
    let backend_size =
        |b: &[u8]| parse_frame(b, MAX_BACKEND_STARTUP_MESSAGE).map(|o| o.map(|(_, n)| n));
    let frontend_size =
        |b: &[u8]| parse_frame(b, MAX_FRONTEND_AUTH_MESSAGE).map(|o| o.map(|(_, n)| n));
    loop {
        let raw = match from_server.next(server, backend_size).await {
            Ok(Some(raw)) => raw,
            Ok(None) => return Err(SessionError::UpstreamClosed),
            Err(ReadError::Io(e)) => return Err(SessionError::UpstreamIo(e)),
            Err(ReadError::Protocol(e)) => {
                return Err(SessionError::UpstreamProtocol(e.to_string()));
            }
        };
        let frame = whole_frame(&raw);
        to_client.extend_from_slice(&raw);
        match frame.tag {
            tag::AUTHENTICATION => {
                let request = message::parse_authentication(frame.body)
                    .map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
                if !request.expects_client_response() {
                    continue;
                }
                client.write_all(&to_client).await.map_err(client_io)?;
                client.flush().await.map_err(client_io)?;
                to_client.clear();
                let answer = match from_client.next(client, frontend_size).await {
                    Ok(Some(raw)) => raw,
                    Ok(None) => return Err(SessionError::ClientClosed),
                    Err(ReadError::Io(e)) => return Err(SessionError::ClientIo(e)),
                    Err(ReadError::Protocol(e)) => {
                        return Err(SessionError::ClientProtocol(format!(
                            "invalid message during authentication: {e}"
                        )));
                    }
                };
                let reply = whole_frame(&answer);
                match reply.tag {
                    tag::PASSWORD_MESSAGE => {}
                    tag::TERMINATE => return Err(SessionError::ClientClosed),
                    other => {
                        return Err(SessionError::ClientProtocol(format!(
                            "expected an authentication response, received message type 0x{other:02x}"
                        )));
                    }
                }
                if matches!(request, Authentication::Sasl(_))
                    && message::sasl_initial_mechanism(reply.body)
                        .map_err(|e| SessionError::ClientProtocol(e.to_string()))?
                        == SCRAM_SHA_256_PLUS
                {
                    return Err(SessionError::ChannelBinding);
                }
                server.write_all(&answer).await.map_err(server_io)?;
                server.flush().await.map_err(server_io)?;
            }
            tag::BACKEND_KEY_DATA => {
                let k = message::parse_backend_key_data(frame.body)
                    .map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
                key = Some((k.pid, k.key.to_vec()));
            }
            tag::READY_FOR_QUERY => {
                client.write_all(&to_client).await.map_err(client_io)?;
                client.flush().await.map_err(client_io)?;
                return Ok(Authenticated {
                    key,
                    client_pending: from_client.into_rest(),
                    upstream_pending: from_server.into_rest(),
                });
            }
            tag::ERROR_RESPONSE => {
                // Relay the server's own words; the connection ends after them.
                let _ = client.write_all(&to_client).await;
                let _ = client.shutdown().await;
                return Err(SessionError::ServerRefused {
                    sqlstate: sqlstate_of(frame.body).unwrap_or_default(),
                    message: message_of(frame.body).unwrap_or_default(),
                });
            }
            tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {
                // Bound what waits for the client, whatever the server sends.
                if to_client.len() > MAX_BACKEND_STARTUP_MESSAGE {
                    client.write_all(&to_client).await.map_err(client_io)?;
                    to_client.clear();
                }
            }
            other => {
                return Err(SessionError::UpstreamProtocol(format!(
                    "unexpected message type 0x{other:02x} during authentication"
                )));
            }
        }
    }
}

/// A frame the reader already found whole.
fn whole_frame(raw: &[u8]) -> message::Frame<'_> {
    message::Frame {
        tag: raw[0],
        body: &raw[5..],
    }
}

/// Tells the client why (when there is something to tell) and returns the error.
async fn fail(client: &mut ClientStream, error: SessionError) -> Result<Finish, SessionError> {
    send_error(client, &error).await;
    Err(error)
}

async fn send_error(client: &mut ClientStream, error: &SessionError) {
    if let Some((code, message, detail, hint)) = error.client_error() {
        client::refuse(client, code, &message, detail, hint.as_deref()).await;
    }
}

async fn cancel_request(
    shared: &Shared,
    settings: &Settings,
    pid: i32,
    key: &[u8],
    record: &mut Record,
) -> Result<Finish, SessionError> {
    record.backend_pid = Some(pid);
    match cancel::forward(&shared.cancels, settings, pid, key).await {
        Ok(outcome) => Ok(Finish::Cancel(outcome)),
        Err(e) => Err(SessionError::Upstream(e)),
    }
}

fn describe_tls(ssl: &SslRef) -> String {
    let cipher = ssl.current_cipher().map(|c| c.name()).unwrap_or("none");
    format!("{} {}", ssl.version_str(), cipher)
}

/// The one line per connection.
fn log_end(peer: SocketAddr, started: Instant, r: &Record, result: &Result<Finish, SessionError>) {
    let duration_ms = started.elapsed().as_millis() as u64;
    let client_tls = r.client_tls.as_deref().unwrap_or("none");
    let tls_version = r.client_tls_version.unwrap_or("none");
    let cert = r.client_cert.as_ref();
    let client_cert_subject = cert.map(|c| c.subject.as_str()).unwrap_or("");
    let client_cert_serial = cert.map(|c| c.serial.as_str()).unwrap_or("");
    let client_cert_issuer = cert.map(|c| c.issuer.as_str()).unwrap_or("");
    let upstream_tls = r.upstream_tls.as_deref().unwrap_or("none");
    let upstream = r.upstream.map(|a| a.to_string()).unwrap_or_default();
    let user = r.user.as_deref().unwrap_or("");
    let database = r.database.as_deref().unwrap_or("");
    let application_name = r.application_name.as_deref().unwrap_or("");
    let backend_pid = r.backend_pid.unwrap_or(0);
    macro_rules! line {
        ($level:ident, $outcome:expr, $sqlstate:expr, $msg:expr) => {
            tracing::$level!(
                client_addr = %peer, tls_version, client_tls, client_cert_subject,
                client_cert_serial, client_cert_issuer, upstream = %upstream, upstream_tls, user,
                database, application_name, backend_pid, outcome = %$outcome,
                sqlstate = $sqlstate, duration_ms, bytes_from_client = r.from_client,
                bytes_to_client = r.to_client, "{}", $msg
            )
        };
    }
    match result {
        Ok(Finish::Relayed(ended)) => {
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
            line!(
                info,
                "authenticated",
                "",
                format_args!("session ended: {how}")
            );
        }
        Ok(Finish::Cancel(CancelOutcome::Forwarded(addr))) => {
            line!(
                info,
                "cancel forwarded",
                "",
                format_args!("cancel request forwarded to {addr}")
            );
        }
        Ok(Finish::Cancel(CancelOutcome::NoMatch)) => {
            line!(
                warn,
                "cancel dropped",
                "",
                "cancel request matches no live session; not forwarded"
            );
        }
        Err(SessionError::Client(ClientError::Empty)) => {
            // Health checks connect and close; keep them out of the log.
            tracing::debug!(client_addr = %peer, "connection closed without data");
        }
        Err(e) => {
            let sqlstate = e.outcome_sqlstate().unwrap_or_default();
            let outcome = if sqlstate.is_empty() {
                "refused"
            } else {
                sqlstate.as_str()
            };
            line!(
                warn,
                outcome,
                sqlstate.as_str(),
                format_args!("session refused: {e}")
            );
        }
    }
}
