//! The passthrough login (`auth.mode = "passthrough"`): the authentication exchange relayed
//! message by message. The StartupMessage goes to the server, each Authentication request
//! goes to the client and the client's answer back, until the server's ReadyForQuery
//! (success) or ErrorResponse (refusal, relayed as is). A SCRAM-terminated login ends the same
//! way ([`until_ready`]) once the proxy has let the client in.
//!
//! Generic over both streams, so it runs over TLS in production and over in-memory pipes
//! in tests. The proxy looks only at what it must act on: which requests need a client
//! answer, the SASL mechanism the client picks (SCRAM-SHA-256-PLUS cannot cross a
//! terminating proxy), and the session's cancel key.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::SessionError;
use super::startup::Startup;
use crate::cancel::{CancelKey, SessionKeys, key::own_id};
use crate::framed::{FrameReader, Message, ReadError};
use crate::leg::Leg;
use crate::protocol::encode::encode_backend_key_data;
use crate::protocol::error_response::{message_of, sqlstate_of};
use crate::protocol::message::{
    self, Authentication, MAX_BACKEND_STARTUP_MESSAGE, MAX_FRONTEND_AUTH_MESSAGE,
    SCRAM_SHA_256_PLUS, tag,
};
use crate::protocol::sqlstate::SqlState;

/// The end of a successful authentication.
#[derive(Debug)]
pub(super) struct Authenticated {
    /// BackendKeyData: the server's, and the one the client was given.
    pub(super) key: Option<SessionKeys>,
    /// Client bytes read past its last authentication message.
    pub(super) client_pending: Vec<u8>,
    /// Server bytes read past ReadyForQuery.
    pub(super) upstream_pending: Vec<u8>,
}

/// Forwards `startup` and relays the exchange until ReadyForQuery or the server's refusal.
/// `from_client` holds what the client sent after its StartupMessage.
pub(super) async fn authenticate<C, U>(
    client: &mut C,
    server: &mut U,
    startup: &Startup,
    from_client: FrameReader,
) -> Result<Authenticated, SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    send(server, Leg::Upstream, startup.as_bytes()).await?;
    let exchange = Exchange {
        from_client,
        from_server: FrameReader::new(),
        to_client: Vec::new(),
        relay_authentication: true,
        refuse_unasked_ok: false,
    };
    until_ready(client, server, exchange).await
}

/// The startup phase's state between the two legs.
pub(super) struct Exchange {
    /// What the client sent past its last message read.
    pub(super) from_client: FrameReader,
    /// What the server sent past its last message read.
    pub(super) from_server: FrameReader,
    /// Server messages for the client, written out in one go when the client must act.
    pub(super) to_client: Vec<u8>,
    /// Whether the server's Authentication requests go to the client (passthrough); with
    /// SCRAM termination the proxy has logged in already and any further one is an error.
    pub(super) relay_authentication: bool,
    /// Whether an AuthenticationOk that follows no request to the client is refused (a
    /// relayed user the proxy has not checked, let in by a server that asked nothing).
    pub(super) refuse_unasked_ok: bool,
}

/// Relays the server's messages (and the client's answers to Authentication requests)
/// until ReadyForQuery.
pub(super) async fn until_ready<C, U>(
    client: &mut C,
    server: &mut U,
    exchange: Exchange,
) -> Result<Authenticated, SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Exchange {
        mut from_client,
        mut from_server,
        mut to_client,
        relay_authentication,
        refuse_unasked_ok,
    } = exchange;
    let mut key = None;
    let mut asked = false;
    loop {
        let m = server_message(server, &mut from_server).await?;
        if m.tag != tag::BACKEND_KEY_DATA {
            to_client.extend_from_slice(m.as_bytes());
        }
        match m.tag {
            tag::AUTHENTICATION if !relay_authentication => {
                return Err(SessionError::Protocol(
                    Leg::Upstream,
                    "authentication request after AuthenticationOk".into(),
                ));
            }
            tag::AUTHENTICATION => {
                let request = message::parse_authentication(m.body()).map_err(upstream_protocol)?;
                if refuse_unasked_ok && !asked && matches!(request, Authentication::Ok) {
                    return Err(SessionError::ServerAskedNothing);
                }
                if request.expects_client_response() {
                    asked = true;
                    send(client, Leg::Client, &to_client).await?;
                    to_client.clear();
                    let answer = client_answer(client, &mut from_client, &request).await?;
                    send(server, Leg::Upstream, answer.as_bytes()).await?;
                }
            }
            tag::BACKEND_KEY_DATA => {
                let k = message::parse_backend_key_data(m.body()).map_err(upstream_protocol)?;
                let server = CancelKey {
                    pid: k.pid,
                    key: zeroize::Zeroizing::new(k.key.to_vec()),
                };
                // In a fleet the client gets a key naming this replica (crate::cancel::key).
                let issued = SessionKeys::issue(server, own_id());
                encode_backend_key_data(&mut to_client, issued.client.pid, &issued.client.key);
                key = Some(issued);
            }
            tag::READY_FOR_QUERY => {
                send(client, Leg::Client, &to_client).await?;
                return Ok(Authenticated {
                    key,
                    client_pending: from_client.into_rest(),
                    upstream_pending: from_server.into_rest(),
                });
            }
            tag::ERROR_RESPONSE => return Err(server_refused(client, &to_client, &m).await),
            // Bound what waits for the client, whatever the server sends.
            tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION
                if to_client.len() > MAX_BACKEND_STARTUP_MESSAGE =>
            {
                send(client, Leg::Client, &to_client).await?;
                to_client.clear();
            }
            tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            other => {
                return Err(SessionError::Protocol(
                    Leg::Upstream,
                    format!("unexpected message type 0x{other:02x} during authentication"),
                ));
            }
        }
    }
}

/// Relays the server's own words (its ErrorResponse, after what was waiting for the client);
/// the connection ends after them.
async fn server_refused<C: AsyncWrite + Unpin>(
    client: &mut C,
    to_client: &[u8],
    m: &Message,
) -> SessionError {
    let _ = client.write_all(to_client).await;
    let _ = client.shutdown().await;
    SessionError::ServerRefused {
        sqlstate: sqlstate_of(m.body()).as_deref().and_then(SqlState::parse),
        message: message_of(m.body()).unwrap_or_default(),
    }
}

/// The client's next authentication message: a PasswordMessage-type message (password,
/// SASLInitialResponse, SASLResponse); a Terminate is the client closing.
pub(super) async fn password_message<C: AsyncRead + Unpin>(
    client: &mut C,
    from_client: &mut FrameReader,
) -> Result<Message, SessionError> {
    let answer = match from_client.message(client, MAX_FRONTEND_AUTH_MESSAGE).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(SessionError::Closed(Leg::Client)),
        Err(ReadError::Io(e)) => return Err(SessionError::Io(Leg::Client, e)),
        Err(ReadError::Protocol(e)) => {
            return Err(SessionError::Protocol(
                Leg::Client,
                format!("invalid message during authentication: {e}"),
            ));
        }
    };
    match answer.tag {
        tag::PASSWORD_MESSAGE => Ok(answer),
        tag::TERMINATE => Err(SessionError::Closed(Leg::Client)),
        other => Err(SessionError::Protocol(
            Leg::Client,
            format!("expected an authentication response, received message type 0x{other:02x}"),
        )),
    }
}

/// The client's answer to `request`: a PasswordMessage-type message, never SCRAM-SHA-256-PLUS.
async fn client_answer<C: AsyncRead + Unpin>(
    client: &mut C,
    from_client: &mut FrameReader,
    request: &Authentication<'_>,
) -> Result<Message, SessionError> {
    let answer = password_message(client, from_client).await?;
    if matches!(request, Authentication::Sasl(_))
        && message::sasl_initial_mechanism(answer.body())
            .map_err(|e| SessionError::Protocol(Leg::Client, e.to_string()))?
            == SCRAM_SHA_256_PLUS
    {
        return Err(SessionError::ChannelBinding);
    }
    Ok(answer)
}

/// The server's next message during the startup phase.
async fn server_message<U: AsyncRead + Unpin>(
    server: &mut U,
    from_server: &mut FrameReader,
) -> Result<Message, SessionError> {
    match from_server
        .message(server, MAX_BACKEND_STARTUP_MESSAGE)
        .await
    {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(SessionError::Closed(Leg::Upstream)),
        Err(ReadError::Io(e)) => Err(SessionError::Io(Leg::Upstream, e)),
        Err(ReadError::Protocol(e)) => Err(upstream_protocol(e)),
    }
}

fn upstream_protocol(e: crate::protocol::ProtocolError) -> SessionError {
    SessionError::Protocol(Leg::Upstream, e.to_string())
}

/// Writes and flushes `bytes` to one leg.
pub(super) async fn send<S: AsyncWrite + Unpin>(
    io: &mut S,
    leg: Leg,
    bytes: &[u8],
) -> Result<(), SessionError> {
    let io_error = |e| SessionError::Io(leg, e);
    io.write_all(bytes).await.map_err(io_error)?;
    io.flush().await.map_err(io_error)
}
