//! The auth query: the proxy's own connection to the server, as `auth.query_user` over the
//! same verified TLS leg as sessions, kept open and reused (reconnected once when it
//! fails), running `auth.query` with the user name as a bound parameter, never spliced
//! into SQL.

use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use zeroize::Zeroizing;

use super::ScramFailure;
use super::client::ServerParams;
use super::keys::{self, ClientKey, Key};
use super::login::{self, LoginError, Prover};
use crate::config::schema::ChannelBindingPolicy;
use crate::framed::FrameReader;
use crate::protocol::encode;
use crate::protocol::error_response::message_of;
use crate::protocol::message::{self, MAX_BACKEND_STARTUP_MESSAGE, tag};
use crate::protocol::scram::{Verifier, parse_verifier};
use crate::protocol::startup::encode_startup;
use crate::settings::UpstreamSettings;
use crate::tls::connector::Connector;
use crate::upstream;

/// Longest time one fetch (connect and query included) may take.
const FETCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `[auth]` says about the query.
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
    /// The upstream the query runs on.
    pub upstream: UpstreamSettings,
    /// Its connector.
    pub connector: Connector,
}

/// The query and its connection, kept open between fetches.
pub(crate) struct AuthQuery {
    spec: QuerySpec,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

/// An open, logged-in connection.
struct Conn {
    stream: SslStream<TcpStream>,
    reader: FrameReader,
}

/// Proves `query_user`'s password.
struct PasswordProver<'a>(Option<&'a [u8]>);

impl Prover for PasswordProver<'_> {
    async fn keys(&mut self, params: &ServerParams) -> Result<(ClientKey, Key), ScramFailure> {
        let password = self.0.ok_or_else(|| {
            ScramFailure::Lookup(
                "the server asks auth.query_user for a password and auth.query_password_file is not set"
                    .into(),
            )
        })?;
        Ok(keys::client_key_from_password(
            password,
            &params.salt,
            params.iterations,
        )?)
    }
}

impl AuthQuery {
    /// The query as configured; it connects at its first fetch.
    pub fn new(spec: QuerySpec) -> Self {
        Self {
            spec,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The role the query runs as.
    pub fn user(&self) -> &str {
        &self.spec.user
    }

    /// `user`'s verifier, or `None` when the query returns no row or a NULL verifier.
    pub async fn fetch(&self, user: &str) -> Result<Option<Verifier>, String> {
        let mut conn = self.conn.lock().await;
        for attempt in 0..2 {
            if conn.is_none() {
                *conn = Some(self.connect().await?);
            }
            let Some(c) = conn.as_mut() else { continue };
            match tokio::time::timeout(FETCH_LIMIT, self.run(c, user)).await {
                Ok(Ok(answer)) => return answer,
                Ok(Err(e)) if attempt == 1 => return Err(e),
                Err(_) if attempt == 1 => return Err("the auth query timed out".into()),
                _ => *conn = None,
            }
        }
        Err("the auth query failed".into())
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
            login::login(
                &mut stream,
                &mut reader,
                &startup,
                binding,
                self.spec.policy,
                &mut prover,
            )
            .await
            .map_err(|e: LoginError| {
                format!("auth.query_user \"{}\" cannot log in: {e}", self.spec.user)
            })?;
            let mut conn = Conn { stream, reader };
            ready(&mut conn).await?;
            Ok::<_, String>(conn)
        };
        tokio::time::timeout(FETCH_LIMIT, attempt)
            .await
            .map_err(|_| "connecting for the auth query timed out".to_string())?
    }

    /// Runs the query once on `conn`.
    async fn run(
        &self,
        conn: &mut Conn,
        user: &str,
    ) -> Result<Result<Option<Verifier>, String>, String> {
        let mut out = Vec::new();
        encode::encode_query_with_params(&mut out, &self.spec.sql, &[user]);
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        conn.stream.flush().await.map_err(|e| e.to_string())?;
        let mut found = None;
        let mut failure = None;
        loop {
            let m = next(conn).await?;
            match m.tag {
                b'D' if found.is_none() => found = Some(verifier_of(m.body())),
                tag::ERROR_RESPONSE => {
                    failure = Some(format!(
                        "the auth query failed: {}",
                        message_of(m.body()).unwrap_or_default()
                    ));
                }
                tag::READY_FOR_QUERY => break,
                _ => {}
            }
        }
        // A query error is an answer (the connection is fine); a bad row is too.
        Ok(match (failure, found) {
            (Some(e), _) => Err(e),
            (None, None) => Ok(None),
            (None, Some(v)) => v,
        })
    }
}

/// The second column of a row: NULL is no verifier; anything but SCRAM-SHA-256 an error.
fn verifier_of(body: &[u8]) -> Result<Option<Verifier>, String> {
    let columns = message::parse_data_row(body).map_err(|e| e.to_string())?;
    match columns.get(1) {
        Some(None) => Ok(None),
        Some(Some(text)) => parse_verifier(&String::from_utf8_lossy(text))
            .map(Some)
            .map_err(|e| format!("the auth query returned {e}")),
        None => Err("the auth query must return two columns: username, verifier".into()),
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
