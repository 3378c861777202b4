//! The proxy's own login to the server, for a terminated session and for the auth query:
//! the StartupMessage, then SCRAM-SHA-256(-PLUS) as the server asks, up to
//! AuthenticationOk. What the proxy proves comes from a [`Prover`]: the ClientKey recovered
//! from a client's proof, or one derived from `auth.query_password_file`.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use super::ScramFailure;
use super::client::{ClientExchange, ServerParams};
use super::keys::{ClientKey, Key};
use crate::config::schema::ChannelBindingPolicy;
use crate::framed::{FrameReader, Message, ReadError};
use crate::protocol::encode::{encode, encode_sasl_initial_response};
use crate::protocol::error_response::{message_of, sqlstate_of};
use crate::protocol::message::{self, Authentication, MAX_BACKEND_STARTUP_MESSAGE, tag};
use crate::protocol::sqlstate::SqlState;

/// Supplies the keys of one login once the server has named its salt and iterations.
pub(crate) trait Prover {
    /// The ClientKey to prove and the ServerKey the server must prove it holds (both
    /// zeroed when dropped).
    async fn keys(
        &mut self,
        params: &ServerParams,
    ) -> Result<(ClientKey, Zeroizing<Key>), ScramFailure>;
}

/// How the server let the proxy in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// SCRAM, with the mechanism used.
    Scram(&'static str),
    /// No password asked: trust, or the proxy's client certificate.
    NoPassword,
}

/// Why the login failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// SCRAM failed on either side.
    #[error("{0}")]
    Scram(#[from] ScramFailure),
    /// The server refused with an ErrorResponse (its bytes, to relay).
    #[error("server refused the login: {} {message}", .sqlstate.map(|s| s.to_string()).unwrap_or_default())]
    Refused {
        /// Its SQLSTATE.
        sqlstate: Option<SqlState>,
        /// Its message.
        message: String,
        /// The whole ErrorResponse.
        raw: Vec<u8>,
    },
    /// The server broke the protocol.
    #[error("upstream server protocol violation: {0}")]
    Protocol(String),
    /// The server closed the connection.
    #[error("upstream server closed the connection during authentication")]
    Closed,
    /// The connection failed.
    #[error("upstream connection error: {0}")]
    Io(std::io::Error),
}

/// Sends `startup` and logs in; `binding` is the server certificate's
/// tls-server-end-point hash.
pub(crate) async fn login<U, P>(
    server: &mut U,
    reader: &mut FrameReader,
    startup: &[u8],
    binding: Option<Vec<u8>>,
    policy: ChannelBindingPolicy,
    prover: &mut P,
) -> Result<Method, LoginError>
where
    U: AsyncRead + AsyncWrite + Unpin,
    P: Prover,
{
    send(server, startup).await?;
    let m = next(server, reader).await?;
    let mechanisms = match request(&m)? {
        Authentication::Ok => return Ok(Method::NoPassword),
        Authentication::Sasl(list) => {
            message::sasl_mechanisms(list).map_err(|e| LoginError::Protocol(e.to_string()))?
        }
        other => return Err(ScramFailure::UpstreamMethod(method_name(&other).into()).into()),
    };
    let mut exchange = ClientExchange::new(&mechanisms, binding, policy)?;
    let mut out = Vec::new();
    encode_sasl_initial_response(
        &mut out,
        exchange.mechanism(),
        exchange.client_first().as_bytes(),
    );
    send(server, &out).await?;
    let m = next(server, reader).await?;
    let Authentication::SaslContinue(data) = request(&m)? else {
        return Err(LoginError::Protocol(
            "expected AuthenticationSASLContinue".into(),
        ));
    };
    let params = exchange.receive_server_first(data)?;
    let (client_key, server_key) = prover.keys(&params).await?;
    let client_final = exchange.client_final(&client_key)?;
    drop(client_key);
    // The proof stays in zeroed buffers up to the TLS stream: sized up front, so the
    // message is never reallocated.
    let mut out = Zeroizing::new(Vec::with_capacity(5 + client_final.len()));
    encode(&mut out, tag::PASSWORD_MESSAGE, client_final.as_bytes());
    drop(client_final);
    send(server, &out).await?;
    let m = next(server, reader).await?;
    let Authentication::SaslFinal(data) = request(&m)? else {
        return Err(LoginError::Protocol(
            "expected AuthenticationSASLFinal".into(),
        ));
    };
    exchange.verify_server_final(data, &server_key)?;
    let m = next(server, reader).await?;
    match request(&m)? {
        Authentication::Ok => Ok(Method::Scram(exchange.mechanism())),
        _ => Err(LoginError::Protocol("expected AuthenticationOk".into())),
    }
}

/// How a method the proxy cannot answer is named to the client.
fn method_name(request: &Authentication<'_>) -> &'static str {
    match request {
        Authentication::Md5Password => "md5 password authentication",
        Authentication::CleartextPassword => "a cleartext password",
        Authentication::Gss | Authentication::GssContinue => "GSSAPI authentication",
        Authentication::Sspi => "SSPI authentication",
        _ => "an unexpected authentication step",
    }
}

/// The Authentication request in `m`, or the server's refusal.
fn request(m: &Message) -> Result<Authentication<'_>, LoginError> {
    match m.tag {
        tag::AUTHENTICATION => {
            message::parse_authentication(m.body()).map_err(|e| LoginError::Protocol(e.to_string()))
        }
        tag::ERROR_RESPONSE => Err(LoginError::Refused {
            sqlstate: sqlstate_of(m.body()).as_deref().and_then(SqlState::parse),
            message: message_of(m.body()).unwrap_or_default(),
            raw: m.as_bytes().to_vec(),
        }),
        other => Err(LoginError::Protocol(format!(
            "unexpected message type 0x{other:02x} during authentication"
        ))),
    }
}

async fn next<U: AsyncRead + Unpin>(
    server: &mut U,
    reader: &mut FrameReader,
) -> Result<Message, LoginError> {
    match reader.message(server, MAX_BACKEND_STARTUP_MESSAGE).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(LoginError::Closed),
        Err(ReadError::Io(e)) => Err(LoginError::Io(e)),
        Err(ReadError::Protocol(e)) => Err(LoginError::Protocol(e.to_string())),
    }
}

async fn send<U: AsyncWrite + Unpin>(server: &mut U, bytes: &[u8]) -> Result<(), LoginError> {
    server.write_all(bytes).await.map_err(LoginError::Io)?;
    server.flush().await.map_err(LoginError::Io)
}
