//! The SCRAM-terminated login (`auth.mode = "scram"`): both exchanges of one session over
//! the network, pipelined so termination adds at most one upstream round trip. The client's
//! half is [`super::client_proof`]; this file drives it and the upstream half.
//!
//! 1. The client is offered SASL at once; while its client-first is on the way, the proxy
//!    sends the server the StartupMessage and its own client-first, and reads the
//!    server-first.
//! 2. With the server's salt in (it must be the verifier's, else the verifier is stale and is
//!    fetched again), the client gets its server-first; its client-final yields the
//!    ClientKey, which the proxy proves upstream. The server must prove it holds the
//!    verifier.
//! 3. Only then does the client get SASLFinal and AuthenticationOk, and the rest of the
//!    startup phase is relayed as in passthrough mode.
//!
//! Up to the client's proof nothing tells a user the proxy can check from one it cannot: an
//! unknown user, a failed lookup, a stale verifier and a server that refused before the
//! proof all go through the same exchange (a mock one, `crate::scram::mock`, where there is
//! no verifier), whose server-first leaves when a real one would, and end with the wrong
//! password's answer; the log line says which it was. A user relayed unchecked
//! (`auth.unknown_user = "passthrough"`) must be asked for a password by the server.

use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

use super::client_proof::ClientSide;
use super::error::SessionError;
use super::passthrough::{self, Authenticated, Exchange};
use super::startup::Startup;
use crate::config::schema::ChannelBindingPolicy;
use crate::config::schema::UnknownUser;
use crate::framed::FrameReader;
use crate::leg::Leg;
use crate::protocol::encode::{self, auth_code, encode_authentication};
use crate::protocol::scram::Verifier;
use crate::protocol::sqlstate::INVALID_PASSWORD;
use crate::scram::ScramFailure;
use crate::scram::mock::Mock;
use crate::scram::server::ServerExchange;
use crate::scram::upstream_login::{self, LoginError, Method};
use crate::scram::verifiers::{Source, Verifiers};
use crate::settings::AuthSettings;

/// What the terminated login used on each leg, for the log line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mechanisms {
    /// SCRAM-SHA-256-PLUS or SCRAM-SHA-256.
    pub(super) client: &'static str,
    /// The upstream login's method.
    pub(super) upstream: Method,
}

/// What one terminated login needs.
struct ScramLogin<'a> {
    /// The user from the StartupMessage.
    user: &'a str,
    /// The verifier (a mock one when `mocked` is set).
    verifier: Verifier,
    /// Where it came from; `None` for a mock verifier.
    source: Option<Source>,
    /// For a mock verifier: what the exchange ends with, for the log.
    mocked: Option<ScramFailure>,
    /// The store, for a refresh when the server's verifier has changed.
    verifiers: &'a Verifiers,
    /// The mock side: its waits, fed by real logins.
    mock: &'a Mock,
    /// The tls-server-end-point hash of the certificate the client saw.
    client_binding: Option<Vec<u8>>,
    /// The same of the server's certificate.
    server_binding: Option<Vec<u8>>,
    /// `auth.upstream_channel_binding`.
    policy: ChannelBindingPolicy,
}

/// The login for `auth.mode = "scram"`: terminated with the user's verifier, or relayed
/// when the user has none and `auth.unknown_user = "passthrough"` (then no mechanisms are
/// returned).
pub(super) async fn login<C, U>(
    client: &mut C,
    server: &mut U,
    startup: &Startup,
    from_client: FrameReader,
    (settings, verifiers): (&AuthSettings, &Verifiers),
    (client_binding, server_binding): (Option<Vec<u8>>, Option<Vec<u8>>),
) -> Result<(Authenticated, Option<Mechanisms>), SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let user = startup.params.user.as_str();
    let scram = |failure| SessionError::Scram {
        user: user.to_owned(),
        failure,
    };
    let mock = |failure| match settings.mock.verifier(user) {
        Ok(v) => Ok((v, None, Some(failure))),
        Err(e) => Err(scram(e.into())),
    };
    let (verifier, source, mocked) = match verifiers.lookup(user).await {
        Ok(Some((verifier, source))) => (verifier, Some(source), None),
        Ok(None) if settings.unknown_user == UnknownUser::Passthrough => {
            let authenticated = relay(client, server, startup, from_client, settings).await?;
            return Ok((authenticated, None));
        }
        Ok(None) => mock(ScramFailure::UnknownUser)?,
        Err(e) => mock(ScramFailure::Lookup(e))?,
    };
    let login = ScramLogin {
        user,
        verifier,
        source,
        mocked,
        mock: &settings.mock,
        verifiers,
        client_binding,
        server_binding,
        policy: settings.upstream_channel_binding,
    };
    let (authenticated, mechanisms) =
        terminated(client, server, startup, from_client, login).await?;
    Ok((authenticated, Some(mechanisms)))
}

/// A user without a verifier, relayed: the server must ask them for a password (or let the
/// proxy in by its certificate), unless `auth.passthrough_trust` accepts its trust.
async fn relay<C, U>(
    client: &mut C,
    server: &mut U,
    startup: &Startup,
    from_client: FrameReader,
    settings: &AuthSettings,
) -> Result<Authenticated, SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    passthrough::send(server, Leg::Upstream, startup.as_bytes()).await?;
    let exchange = Exchange {
        from_client,
        from_server: FrameReader::new(),
        to_client: Vec::new(),
        relay_authentication: true,
        refuse_unasked_ok: !settings.passthrough_trust && !settings.upstream_certificate,
    };
    passthrough::until_ready(client, server, exchange).await
}

/// Authenticates the client with its verifier and logs in upstream with the same proof.
async fn terminated<C, U>(
    client: &mut C,
    server: &mut U,
    startup: &Startup,
    from_client: FrameReader,
    login: ScramLogin<'_>,
) -> Result<(Authenticated, Mechanisms), SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = ServerExchange::new(login.client_binding);
    let mut out = Vec::new();
    encode::encode_authentication_sasl(&mut out, &exchange.mechanisms());
    passthrough::send(client, Leg::Client, &out).await?;
    let mut side = ClientSide {
        client,
        from_client,
        exchange,
        user: login.user,
        verifier: login.verifier,
        source: login.source,
        verifiers: login.verifiers,
        mock: login.mock,
        server_final: None,
        failed: None,
        offered: Instant::now(),
    };
    if let Some(failure) = login.mocked {
        return Err(side.mock(failure).await);
    }
    let mut from_server = FrameReader::new();
    let (binding, policy) = (login.server_binding, login.policy);
    let method = log_in_upstream(
        &mut side,
        server,
        &mut from_server,
        startup,
        binding,
        policy,
    );
    let method = method.await?;
    finish(side, server, from_server, method).await
}

/// The proxy's login to the server, which asks the client's side for the keys.
/// `binding`: the server certificate's tls-server-end-point hash.
async fn log_in_upstream<C, U>(
    side: &mut ClientSide<'_, C>,
    server: &mut U,
    from_server: &mut FrameReader,
    startup: &Startup,
    binding: Option<Vec<u8>>,
    policy: ChannelBindingPolicy,
) -> Result<Method, SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = startup.as_bytes();
    let result = upstream_login::login(server, from_server, bytes, binding, policy, side).await;
    if let Some(e) = side.failed.take() {
        return Err(e);
    }
    match result {
        Ok(method) => Ok(method),
        // Refused before the client proved anything: what the server said must not tell
        // it this user exists, so the client proves its password first.
        Err(e) if side.server_final.is_none() => match side.prove_before_telling().await {
            Ok(_) => Err(upstream_failure(side, e).await),
            Err(refused) => Err(refused),
        },
        Err(e) => Err(upstream_failure(side, e).await),
    }
}

/// The client's SASLFinal and AuthenticationOk, then the rest of the startup phase.
async fn finish<C, U>(
    mut side: ClientSide<'_, C>,
    server: &mut U,
    from_server: FrameReader,
    method: Method,
) -> Result<(Authenticated, Mechanisms), SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if side.server_final.is_none() {
        // No proof asked upstream (trust, or the proxy's certificate): the client still
        // proves its password to the proxy.
        side.mock.observed(side.offered.elapsed());
        side.receive_first().await?;
        side.prove().await?;
    }
    let mechanisms = Mechanisms {
        client: side.exchange.mechanism(),
        upstream: method,
    };
    let mut to_client = Vec::new();
    let server_final = side.server_final.take().unwrap_or_default();
    encode_authentication(
        &mut to_client,
        auth_code::SASL_FINAL,
        server_final.as_bytes(),
    );
    encode_authentication(&mut to_client, auth_code::OK, &[]);
    let exchange = Exchange {
        from_client: side.from_client,
        from_server,
        to_client,
        relay_authentication: false,
        refuse_unasked_ok: false,
    };
    let authenticated = passthrough::until_ready(side.client, server, exchange).await?;
    Ok((authenticated, mechanisms))
}

/// What a failed upstream login means for the client.
async fn upstream_failure<C: AsyncRead + AsyncWrite + Unpin>(
    side: &mut ClientSide<'_, C>,
    e: LoginError,
) -> SessionError {
    match e {
        // The server rejected a proof the verifier accepted: its password has changed.
        LoginError::Refused { sqlstate, .. } if sqlstate == Some(INVALID_PASSWORD) => {
            side.verifiers.forget(side.user);
            side.scram(ScramFailure::PasswordChanged)
        }
        LoginError::Refused {
            sqlstate,
            message,
            raw,
        } => {
            // The server's own words (pg_hba refusals, a missing database...).
            let _ = passthrough::send(side.client, Leg::Client, &raw).await;
            SessionError::ServerRefused { sqlstate, message }
        }
        LoginError::Scram(failure) => side.scram(failure),
        LoginError::Protocol(what) => SessionError::Protocol(Leg::Upstream, what),
        LoginError::Closed => SessionError::Closed(Leg::Upstream),
        LoginError::Io(e) => SessionError::Io(Leg::Upstream, e),
    }
}
