//! SCRAM termination for one session (`auth.mode = "scram"`): both exchanges over the
//! network, pipelined so termination adds at most one upstream round trip.
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
use zeroize::Zeroizing;

use super::auth::{self, Authenticated, Exchange};
use super::error::SessionError;
use super::startup::Startup;
use crate::config::schema::ChannelBindingPolicy;
use crate::config::schema::UnknownUser;
use crate::framed::FrameReader;
use crate::leg::Leg;
use crate::protocol::encode::{self, auth_code, encode_authentication};
use crate::protocol::message;
use crate::protocol::scram::Verifier;
use crate::protocol::sqlstate::INVALID_PASSWORD;
use crate::scram::ScramFailure;
use crate::scram::client::ServerParams;
use crate::scram::keys::{ClientKey, Key};
use crate::scram::login::{self, LoginError, Method, Prover};
use crate::scram::mock::Mock;
use crate::scram::server::ServerExchange;
use crate::scram::verifiers::{Source, Verifiers};
use crate::settings::AuthSettings;

/// What the terminated login used on each leg, for the log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mechanisms {
    /// SCRAM-SHA-256-PLUS or SCRAM-SHA-256.
    pub client: &'static str,
    /// The upstream login's method.
    pub upstream: Method,
}

/// What one terminated login needs.
struct Terminate<'a> {
    /// The user from the StartupMessage.
    pub user: &'a str,
    /// The verifier (a mock one when `mocked` is set).
    pub verifier: Verifier,
    /// Where it came from; `None` for a mock verifier.
    pub source: Option<Source>,
    /// For a mock verifier: what the exchange ends with, for the log.
    pub mocked: Option<ScramFailure>,
    /// The store, for a refresh when the server's verifier has changed.
    pub verifiers: &'a Verifiers,
    /// The mock side: its waits, fed by real logins.
    pub mock: &'a Mock,
    /// The tls-server-end-point hash of the certificate the client saw.
    pub client_binding: Option<Vec<u8>>,
    /// The same of the server's certificate.
    pub server_binding: Option<Vec<u8>>,
    /// `auth.upstream_channel_binding`.
    pub policy: ChannelBindingPolicy,
}

/// The client's half of the exchange, run when the upstream login needs the keys.
struct ClientSide<'a, 'b, C> {
    client: &'a mut C,
    from_client: FrameReader,
    exchange: ServerExchange,
    login: &'a mut Terminate<'b>,
    /// The server-final-message for the client, once its proof has verified.
    server_final: Option<String>,
    /// A client-side failure, kept as itself (the login only carries SCRAM failures).
    failed: Option<SessionError>,
    /// When the client was offered SASL: a mock server-first waits from then.
    offered: Instant,
}

impl<C: AsyncRead + AsyncWrite + Unpin> ClientSide<'_, '_, C> {
    /// Reads the client's next SASL message (mechanism and data for the first).
    async fn sasl_message(&mut self) -> Result<Vec<u8>, SessionError> {
        let m = auth::password_message(&mut *self.client, &mut self.from_client).await?;
        Ok(m.body().to_vec())
    }

    /// The client's SASLInitialResponse.
    async fn receive_first(&mut self) -> Result<(), SessionError> {
        let body = self.sasl_message().await?;
        let (mechanism, data) = message::parse_sasl_initial_response(&body)
            .map_err(|e| SessionError::Protocol(Leg::Client, e.to_string()))?;
        self.exchange
            .receive_first(mechanism, data.unwrap_or_default())
            .map_err(|f| self.scram(f))
    }

    /// server-first to the client, its client-final back, and its proof checked.
    async fn prove(&mut self) -> Result<ClientKey, SessionError> {
        let server_first = self
            .exchange
            .server_first(&self.login.verifier)
            .map_err(|f| self.scram(f))?;
        let mut out = Vec::new();
        encode_authentication(&mut out, auth_code::SASL_CONTINUE, server_first.as_bytes());
        auth::send(self.client, Leg::Client, &out).await?;
        let data = self.sasl_message().await?;
        let (key, server_final) = self
            .exchange
            .receive_final(&data, &self.login.verifier)
            .map_err(|f| self.scram(f))?;
        self.server_final = Some(server_final);
        Ok(key)
    }

    fn scram(&self, failure: ScramFailure) -> SessionError {
        SessionError::Scram {
            user: self.login.user.to_owned(),
            failure,
        }
    }

    /// The verifier the server holds now, when it differs from ours: fetched again.
    async fn match_server(&mut self, params: &ServerParams) -> Result<(), ScramFailure> {
        let ours = &self.login.verifier;
        if ours.salt == params.salt && ours.iterations == params.iterations {
            return Ok(());
        }
        let fresh = match self.login.source {
            Some(Source::Query) => self.login.verifiers.refresh(self.login.user).await,
            _ => Ok(None),
        };
        match fresh {
            Ok(Some(v)) if v.salt == params.salt && v.iterations == params.iterations => {
                self.login.verifier = v;
                Ok(())
            }
            Ok(_) => Err(ScramFailure::PasswordChanged),
            Err(e) => Err(ScramFailure::Lookup(e)),
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Prover for ClientSide<'_, '_, C> {
    async fn keys(
        &mut self,
        params: &ServerParams,
    ) -> Result<(ClientKey, Zeroizing<Key>), ScramFailure> {
        self.login.mock.observed(self.offered.elapsed());
        let result = async {
            self.receive_first().await?;
            // A stale verifier is told only after the proof, as a wrong password is.
            let stale = self.match_server(params).await.err();
            let proved = self.prove().await;
            match (stale, proved) {
                (Some(failure), Ok(_)) => Err(self.scram(failure)),
                (Some(failure), Err(e)) if is_wrong_password(&e) => Err(self.scram(failure)),
                (_, proved) => proved,
            }
        }
        .await;
        match result {
            Ok(key) => Ok((key, Zeroizing::new(self.login.verifier.server_key))),
            Err(e) => {
                self.failed = Some(e);
                Err(ScramFailure::OutOfOrder)
            }
        }
    }
}

/// The login for `auth.mode = "scram"`: terminated with the user's verifier, or relayed
/// when the user has none and `auth.unknown_user = "passthrough"` (then no mechanisms are
/// returned).
pub(super) async fn scram_login<C, U>(
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
    let user = startup.user.as_deref().unwrap_or_default();
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
    let login = Terminate {
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
        terminate(client, server, startup, from_client, login).await?;
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
    auth::send(server, Leg::Upstream, startup.as_bytes()).await?;
    let exchange = Exchange {
        from_client,
        from_server: FrameReader::new(),
        to_client: Vec::new(),
        relay_authentication: true,
        refuse_unasked_ok: !settings.passthrough_trust && !settings.upstream_certificate,
    };
    auth::until_ready(client, server, exchange).await
}

/// Whether `e` is the client's wrong proof.
fn is_wrong_password(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::Scram {
            failure: ScramFailure::WrongPassword,
            ..
        }
    )
}

/// Authenticates the client with its verifier and logs in upstream with the same proof.
async fn terminate<C, U>(
    client: &mut C,
    server: &mut U,
    startup: &Startup,
    from_client: FrameReader,
    mut login: Terminate<'_>,
) -> Result<(Authenticated, Mechanisms), SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = ServerExchange::new(login.client_binding.take());
    let mut out = Vec::new();
    encode::encode_authentication_sasl(&mut out, &exchange.mechanisms());
    auth::send(client, Leg::Client, &out).await?;
    let offered = Instant::now();
    let mocked = login.mocked.take();
    let server_binding = login.server_binding.take();
    let policy = login.policy;
    let user = login.user.to_owned();
    let mut side = ClientSide {
        client,
        from_client,
        exchange,
        login: &mut login,
        server_final: None,
        failed: None,
        offered,
    };
    if let Some(failure) = mocked {
        return Err(side.mock(failure).await);
    }
    let mut from_server = FrameReader::new();
    let method = side
        .log_in_upstream(
            server,
            &mut from_server,
            startup,
            server_binding,
            policy,
            &user,
        )
        .await?;
    side.finish(server, from_server, method).await
}

impl<C: AsyncRead + AsyncWrite + Unpin> ClientSide<'_, '_, C> {
    /// A user the proxy cannot check: the same exchange, which no proof can pass, ending
    /// with `failure` (refused as a wrong password); the server is never asked.
    async fn mock(&mut self, failure: ScramFailure) -> SessionError {
        match self.prove_before_telling().await {
            Err(e) if !is_wrong_password(&e) => e,
            _ => self.scram(failure),
        }
    }

    /// The client's exchange up to its proof without the server's salt (there is none, or
    /// the server refused first), its server-first sent when a real one would leave.
    async fn prove_before_telling(&mut self) -> Result<ClientKey, SessionError> {
        self.receive_first().await?;
        self.login.mock.hold(self.offered).await;
        self.prove().await
    }

    /// The proxy's login to the server, which asks this side for the keys.
    async fn log_in_upstream<U: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        server: &mut U,
        from_server: &mut FrameReader,
        startup: &Startup,
        server_binding: Option<Vec<u8>>,
        policy: ChannelBindingPolicy,
        user: &str,
    ) -> Result<Method, SessionError> {
        let bytes = startup.as_bytes();
        let result = login::login(server, from_server, bytes, server_binding, policy, self).await;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        match result {
            Ok(method) => Ok(method),
            // Refused before the client proved anything: what the server said must not tell
            // it this user exists, so the client proves its password first.
            Err(e) if self.server_final.is_none() => match self.prove_before_telling().await {
                Ok(_) => Err(upstream_failure(self, user, e).await),
                Err(refused) => Err(refused),
            },
            Err(e) => Err(upstream_failure(self, user, e).await),
        }
    }

    /// The client's SASLFinal and AuthenticationOk, then the rest of the startup phase.
    async fn finish<U: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        server: &mut U,
        from_server: FrameReader,
        method: Method,
    ) -> Result<(Authenticated, Mechanisms), SessionError> {
        if self.server_final.is_none() {
            // No proof asked upstream (trust, or the proxy's certificate): the client still
            // proves its password to the proxy.
            self.login.mock.observed(self.offered.elapsed());
            self.receive_first().await?;
            self.prove().await?;
        }
        let mechanisms = Mechanisms {
            client: self.exchange.mechanism(),
            upstream: method,
        };
        let mut to_client = Vec::new();
        let server_final = self.server_final.take().unwrap_or_default();
        encode_authentication(
            &mut to_client,
            auth_code::SASL_FINAL,
            server_final.as_bytes(),
        );
        encode_authentication(&mut to_client, auth_code::OK, &[]);
        let exchange = Exchange {
            from_client: self.from_client,
            from_server,
            to_client,
            relay_authentication: false,
            refuse_unasked_ok: false,
        };
        let authenticated = auth::until_ready(self.client, server, exchange).await?;
        Ok((authenticated, mechanisms))
    }
}

/// What a failed upstream login means for the client.
async fn upstream_failure<C: AsyncRead + AsyncWrite + Unpin>(
    side: &mut ClientSide<'_, '_, C>,
    user: &str,
    e: LoginError,
) -> SessionError {
    match e {
        // The server rejected a proof the verifier accepted: its password has changed.
        LoginError::Refused { sqlstate, .. } if sqlstate == Some(INVALID_PASSWORD) => {
            side.login.verifiers.forget(user);
            side.scram(ScramFailure::PasswordChanged)
        }
        LoginError::Refused {
            sqlstate,
            message,
            raw,
        } => {
            // The server's own words (pg_hba refusals, a missing database...).
            let _ = auth::send(side.client, Leg::Client, &raw).await;
            SessionError::ServerRefused { sqlstate, message }
        }
        LoginError::Scram(failure) => side.scram(failure),
        LoginError::Protocol(what) => SessionError::Protocol(Leg::Upstream, what),
        LoginError::Closed => SessionError::Closed(Leg::Upstream),
        LoginError::Io(e) => SessionError::Io(Leg::Upstream, e),
    }
}
