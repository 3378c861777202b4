//! The client's half of a terminated login (`auth.mode = "scram"`): the proxy as the
//! client's SCRAM server, from the SASL offer's answer to a verified proof, whose ClientKey is
//! what the upstream login proves (this half is its [`Prover`]). Also the mock exchange, the
//! same messages for a user the proxy cannot check, which no proof passes.

use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

use super::error::SessionError;
use super::passthrough;
use crate::framed::FrameReader;
use crate::leg::Leg;
use crate::protocol::encode::{auth_code, encode_authentication};
use crate::protocol::message;
use crate::protocol::scram::Verifier;
use crate::scram::ScramFailure;
use crate::scram::client::ServerParams;
use crate::scram::keys::{ClientKey, Key};
use crate::scram::mock::Mock;
use crate::scram::server::ServerExchange;
use crate::scram::upstream_login::Prover;
use crate::scram::verifiers::{Source, Verifiers};

/// The client's half of the exchange, run when the upstream login needs the keys.
pub(super) struct ClientSide<'a, C> {
    pub(super) client: &'a mut C,
    pub(super) from_client: FrameReader,
    pub(super) exchange: ServerExchange,
    /// The user from the StartupMessage.
    pub(super) user: &'a str,
    /// The verifier (a mock one for a user the proxy cannot check).
    pub(super) verifier: Verifier,
    /// Where it came from; `None` for a mock verifier.
    pub(super) source: Option<Source>,
    /// The store, for a refresh when the server's verifier has changed.
    pub(super) verifiers: &'a Verifiers,
    /// The mock side: its waits, fed by real logins.
    pub(super) mock: &'a Mock,
    /// The server-final-message for the client, once its proof has verified.
    pub(super) server_final: Option<String>,
    /// A client-side failure, kept as itself (the login only carries SCRAM failures).
    pub(super) failed: Option<SessionError>,
    /// When the client was offered SASL: a mock server-first waits from then.
    pub(super) offered: Instant,
}

impl<C: AsyncRead + AsyncWrite + Unpin> ClientSide<'_, C> {
    /// Reads the client's next SASL message (mechanism and data for the first).
    async fn sasl_message(&mut self) -> Result<Vec<u8>, SessionError> {
        let m = passthrough::password_message(&mut *self.client, &mut self.from_client).await?;
        Ok(m.body().to_vec())
    }

    /// The client's SASLInitialResponse.
    pub(super) async fn receive_first(&mut self) -> Result<(), SessionError> {
        let body = self.sasl_message().await?;
        let (mechanism, data) = message::parse_sasl_initial_response(&body)
            .map_err(|e| SessionError::Protocol(Leg::Client, e.to_string()))?;
        self.exchange
            .receive_first(mechanism, data.unwrap_or_default())
            .map_err(|f| self.scram(f))
    }

    /// server-first to the client, its client-final back, and its proof checked.
    pub(super) async fn prove(&mut self) -> Result<ClientKey, SessionError> {
        let server_first = self
            .exchange
            .server_first(&self.verifier)
            .map_err(|f| self.scram(f))?;
        let mut out = Vec::new();
        encode_authentication(&mut out, auth_code::SASL_CONTINUE, server_first.as_bytes());
        passthrough::send(self.client, Leg::Client, &out).await?;
        let data = self.sasl_message().await?;
        let (key, server_final) = self
            .exchange
            .receive_final(&data, &self.verifier)
            .map_err(|f| self.scram(f))?;
        self.server_final = Some(server_final);
        Ok(key)
    }

    pub(super) fn scram(&self, failure: ScramFailure) -> SessionError {
        SessionError::Scram {
            user: self.user.to_owned(),
            failure,
        }
    }

    /// The verifier the server holds now, when it differs from ours: fetched again.
    async fn match_server(&mut self, params: &ServerParams) -> Result<(), ScramFailure> {
        let ours = &self.verifier;
        if ours.salt == params.salt && ours.iterations == params.iterations {
            return Ok(());
        }
        let fresh = match self.source {
            Some(Source::Query) => self.verifiers.refresh(self.user).await,
            _ => Ok(None),
        };
        match fresh {
            Ok(Some(v)) if v.salt == params.salt && v.iterations == params.iterations => {
                self.verifier = v;
                Ok(())
            }
            Ok(_) => Err(ScramFailure::PasswordChanged),
            Err(e) => Err(ScramFailure::Lookup(e)),
        }
    }

    /// A user the proxy cannot check: the same exchange, which no proof can pass, ending
    /// with `failure` (refused as a wrong password); the server is never asked.
    pub(super) async fn mock(&mut self, failure: ScramFailure) -> SessionError {
        match self.prove_before_telling().await {
            Err(e) if !is_wrong_password(&e) => e,
            _ => self.scram(failure),
        }
    }

    /// The client's exchange up to its proof without the server's salt (there is none, or
    /// the server refused first), its server-first sent when a real one would leave.
    pub(super) async fn prove_before_telling(&mut self) -> Result<ClientKey, SessionError> {
        // Held whatever the client sent: a malformed client-first must not be answered
        // sooner than a known user's, which waits for the server's server-first.
        let first = self.receive_first().await;
        self.mock.hold(self.offered).await;
        first?;
        self.prove().await
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Prover for ClientSide<'_, C> {
    async fn keys(
        &mut self,
        params: &ServerParams,
    ) -> Result<(ClientKey, Zeroizing<Key>), ScramFailure> {
        self.mock.observed(self.offered.elapsed());
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
            Ok(key) => Ok((key, Zeroizing::new(self.verifier.server_key))),
            Err(e) => {
                self.failed = Some(e);
                Err(ScramFailure::OutOfOrder)
            }
        }
    }
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
