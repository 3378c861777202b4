//! The auth query: the proxy's own connections to the server, as `auth.query_user` over the
//! same verified TLS leg as sessions, kept open and reused, running `auth.query` with the
//! user name as a bound parameter, never spliced into SQL.
//!
//! A connection is taken out of the pool for one exchange and put back only once the
//! server's reply has been read to its ReadyForQuery; a partial exchange (an error, a
//! timeout, a task stopped) drops it with it, so no reply is ever read for the wrong user.
//! An answer whose `username` is not the user asked for is no answer, and its connection is
//! dropped too.

use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use zeroize::Zeroizing;

use super::ScramFailure;
use super::client::ServerParams;
use super::keys::{self, ClientKey, Key};
use super::query_answer::answer_of;
use super::upstream_login::{self, LoginError, Prover};
use crate::config::schema::ChannelBindingPolicy;
use crate::framed::FrameReader;
use crate::protocol::encode;
use crate::protocol::error_response::message_of;
use crate::protocol::message::{MAX_BACKEND_STARTUP_MESSAGE, tag};
use crate::protocol::scram::Verifier;
use crate::protocol::startup::encode_startup;
use crate::tls::connector::Connector;
use crate::upstream::{self, Endpoint};

/// Longest time one fetch (connect and query included) may take.
const FETCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most PBKDF2 iterations the proxy spends on `query_user`'s own login: ten times what
/// PostgreSQL's default (4096) costs, and far past what a server needs to ask.
pub(crate) const MAX_QUERY_USER_ITERATIONS: u32 = 100_000;

/// What `[auth]` says about the query.
#[derive(Clone)]
pub(crate) struct QuerySpec {
    /// `auth.query_user`.
    pub user: String,
    /// `auth.query_database`.
    pub database: String,
    /// `auth.query`.
    pub sql: String,
    /// From `auth.query_password_file` (read and permission-checked by the caller).
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// `auth.upstream_channel_binding`, for the query user's own login.
    pub policy: ChannelBindingPolicy,
    /// `auth.query_concurrency`: most queries at once, and so most open connections.
    pub concurrency: usize,
    /// The upstream the query runs on.
    pub upstream: Endpoint,
    /// Its connector.
    pub connector: Connector,
}

/// The query and its idle connections.
pub(crate) struct AuthQuery {
    spec: QuerySpec,
    idle: std::sync::Mutex<Vec<Conn>>,
}

/// An open, logged-in connection.
struct Conn {
    stream: SslStream<TcpStream>,
    reader: FrameReader,
}

/// One complete exchange: the answer, and whether the connection may serve another.
struct Reply {
    answer: Result<Option<Verifier>, String>,
    reusable: bool,
}

/// Proves `query_user`'s password.
struct PasswordProver<'a>(Option<&'a [u8]>);

impl Prover for PasswordProver<'_> {
    async fn keys(
        &mut self,
        params: &ServerParams,
    ) -> Result<(ClientKey, Zeroizing<Key>), ScramFailure> {
        let password = self.0.ok_or_else(|| {
            ScramFailure::Lookup(
                "the server asks auth.query_user for a password and auth.query_password_file is not set"
                    .into(),
            )
        })?;
        if params.iterations > MAX_QUERY_USER_ITERATIONS {
            return Err(ScramFailure::Lookup(format!(
                "the server asks auth.query_user's SCRAM login for {} PBKDF2 iterations; the proxy \
                 spends at most {MAX_QUERY_USER_ITERATIONS} iterations (set the role's password \
                 with a lower scram_iterations)",
                params.iterations
            )));
        }
        let password = saslprep(password);
        let salt = params.salt.clone();
        let iterations = params.iterations;
        // Tens of milliseconds of PBKDF2: off the session threads.
        let keys = tokio::task::spawn_blocking(move || {
            keys::client_key_from_password(&password, &salt, iterations)
                .map(|(client, server)| (client, Zeroizing::new(server)))
        })
        .await
        .map_err(|e| ScramFailure::Lookup(format!("auth.query_user's PBKDF2 did not run: {e}")))?;
        Ok(keys?)
    }
}

/// The password as SCRAM proves it: SASLprep (RFC 4013), or the bytes as they are when they
/// are not UTF-8 or preparation refuses them, as PostgreSQL and libpq do.
fn saslprep(password: &[u8]) -> Zeroizing<Vec<u8>> {
    let prepared = std::str::from_utf8(password)
        .ok()
        .and_then(|text| stringprep::saslprep(text).ok());
    match prepared {
        Some(text) => Zeroizing::new(text.into_owned().into_bytes()),
        None => Zeroizing::new(password.to_vec()),
    }
}

impl AuthQuery {
    /// The query as configured; it connects at its first fetch.
    pub fn new(spec: QuerySpec) -> Self {
        Self {
            spec,
            idle: std::sync::Mutex::default(),
        }
    }

    /// The role the query runs as.
    pub fn user(&self) -> &str {
        &self.spec.user
    }

    /// `auth.query_concurrency`.
    pub fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    /// `user`'s verifier, or `None` when the query returns no row or a NULL verifier. A
    /// connection that was idle is tried once more on a new one when it fails (the server
    /// may have closed it meanwhile).
    pub async fn fetch(&self, user: &str) -> Result<Option<Verifier>, String> {
        let mut failure = String::new();
        for _ in 0..2 {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            match tokio::time::timeout(FETCH_LIMIT, self.run(&mut conn, user)).await {
                Ok(Ok(reply)) => {
                    if reply.reusable {
                        self.put_back(conn);
                    }
                    return reply.answer;
                }
                Ok(Err(e)) => failure = e,
                Err(_) => failure = "the auth query timed out".into(),
            }
            if !reused {
                break;
            }
        }
        Err(failure)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle().pop()
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self.idle();
        if idle.len() < self.spec.concurrency {
            idle.push(conn);
        }
    }

    /// Connects and logs in, for `check-config`.
    pub async fn check(&self) -> Result<(), String> {
        self.connect().await.map(drop)
    }

    async fn connect(&self) -> Result<Conn, String> {
        let attempt = async {
            let up = upstream::connect(&self.spec.upstream, &self.spec.connector)
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = up.stream;
            let binding = stream
                .ssl()
                .peer_certificate()
                .and_then(|c| keys::endpoint_hash(&c));
            let startup = encode_startup(&[
                ("user", &self.spec.user),
                ("database", &self.spec.database),
                ("application_name", "pgt-proxy auth query"),
            ]);
            let mut reader = FrameReader::new();
            let mut prover = PasswordProver(self.spec.password.as_deref().map(Vec::as_slice));
            upstream_login::login(
                &mut stream,
                &mut reader,
                &startup,
                binding,
                self.spec.policy,
                &mut prover,
            )
            .await
            .map_err(|e: LoginError| {
                let why = match e {
                    LoginError::Scram(ScramFailure::Lookup(why)) => why,
                    e => e.to_string(),
                };
                format!(
                    "auth.query_user \"{}\" cannot log in: {why}",
                    self.spec.user
                )
            })?;
            let mut conn = Conn { stream, reader };
            ready(&mut conn).await?;
            Ok::<_, String>(conn)
        };
        tokio::time::timeout(FETCH_LIMIT, attempt)
            .await
            .map_err(|_| "connecting for the auth query timed out".to_string())?
    }

    /// Runs the query once on `conn`, reading the reply to its ReadyForQuery; `Err` when
    /// the exchange broke off (the connection is then of no further use).
    async fn run(&self, conn: &mut Conn, user: &str) -> Result<Reply, String> {
        let mut out = Vec::new();
        encode::encode_query_with_params(&mut out, &self.spec.sql, &[user]);
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        conn.stream.flush().await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut failure = None;
        let idle = loop {
            let m = next(conn).await?;
            match m.tag {
                b'D' if rows.len() < 2 => rows.push(m.body().to_vec()),
                b'D' => {}
                tag::ERROR_RESPONSE => {
                    failure = Some(format!(
                        "the auth query failed: {}",
                        message_of(m.body()).unwrap_or_default()
                    ));
                }
                tag::READY_FOR_QUERY => break m.body() == b"I",
                _ => {}
            }
        };
        // A query error is an answer (the connection is fine); a bad row is too.
        let (answer, ours) = match (failure, rows.as_slice()) {
            (Some(e), _) => (Err(e), true),
            (None, []) => (Ok(None), true),
            (None, [row]) => answer_of(row, user),
            (None, _) => (
                Err("the auth query returned more than one row for one user".into()),
                true,
            ),
        };
        Ok(Reply {
            answer,
            reusable: idle && ours,
        })
    }
}

/// The server's next message on the query connection.
async fn next(conn: &mut Conn) -> Result<crate::framed::Message, String> {
    conn.reader
        .message(&mut conn.stream, MAX_BACKEND_STARTUP_MESSAGE)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the server closed the auth query connection".to_owned())
}

/// Reads past ParameterStatus and BackendKeyData to the first ReadyForQuery.
async fn ready(conn: &mut Conn) -> Result<(), String> {
    loop {
        let m = next(conn).await?;
        match m.tag {
            tag::READY_FOR_QUERY => return Ok(()),
            tag::ERROR_RESPONSE => {
                return Err(format!(
                    "the auth query connection was refused: {}",
                    message_of(m.body()).unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
}

/// Reads `auth.query_password_file`: the password on its first line, the file 0600 (or
/// 0640 owned by root).
pub(crate) fn read_password_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    crate::tls::identity::check_key_permissions("auth.query_password_file", path)
        .map_err(|e| e.to_string())?;
    let text = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| format!("auth.query_password_file {}: {e}", path.display()))?,
    );
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Zeroizing::new(line.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_prepared_as_postgresql_prepares_them() {
        // Mapped to nothing (soft hyphen), to a space (no-break space), and NFKC.
        assert_eq!(&saslprep("pen\u{ad}cil".as_bytes())[..], b"pencil");
        assert_eq!(&saslprep("a\u{a0}b".as_bytes())[..], b"a b");
        assert_eq!(&saslprep("query-\u{2168}".as_bytes())[..], b"query-IX");
        // Prohibited (a control character, bidi mixing) or not UTF-8: the bytes as they are.
        assert_eq!(&saslprep(b"bell\x07")[..], b"bell\x07");
        let mixed = "\u{5d0}a\u{5d1}".as_bytes();
        assert_eq!(&saslprep(mixed)[..], mixed);
        assert_eq!(&saslprep(b"\xff\xfe")[..], b"\xff\xfe");
    }
}
