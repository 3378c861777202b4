//! Which login a session gets (relayed, or SCRAM terminated by the proxy), bounded by the
//! startup deadline and ended by shutdown.

use openssl::ssl::SslRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::error::SessionError;
use super::passthrough::{self, Authenticated};
use super::scram_login::{self, Mechanisms};
use super::startup::Startup;
use crate::config::schema::AuthMode;
use crate::framed::FrameReader;
use crate::running::Running;
use crate::scram::keys::endpoint_hash;
use crate::scram::verifiers::Verifiers;
use crate::settings::{AuthSettings, Target};
use crate::upstream::Upstream;

/// What ends an authentication exchange early.
pub(super) struct LoginEnds<'a> {
    /// The startup deadline.
    pub(super) deadline: Instant,
    /// `listen.startup_timeout`, which set it.
    pub(super) limit: std::time::Duration,
    /// Shutdown past `listen.shutdown_timeout`.
    pub(super) stop: &'a CancellationToken,
}

/// Which login a session gets.
pub(super) enum Plan<'a> {
    /// The server authenticates the client through the proxy.
    Passthrough,
    /// The proxy terminates SCRAM (`auth.mode = "scram"`) with the upstream's running
    /// verifier store; `server_binding` is the server certificate's tls-server-end-point hash.
    Scram {
        auth: &'a AuthSettings,
        verifiers: &'a Verifiers,
        client_binding: Option<Vec<u8>>,
        server_binding: Option<Vec<u8>>,
    },
}

impl<'a> Plan<'a> {
    /// What `auth.mode` asks for a session to `target` (one of `running`'s upstreams) over
    /// `upstream`, whose client was served over `client` (channel binding uses the
    /// certificate it was actually served).
    pub(super) fn for_session(
        target: &'a Target,
        running: &'a Running,
        upstream: &Upstream,
        client: &SslRef,
    ) -> Self {
        match target.auth.mode {
            AuthMode::Passthrough => Plan::Passthrough,
            AuthMode::Scram => Plan::Scram {
                auth: &target.auth,
                verifiers: running.verifiers(target),
                client_binding: client.certificate().and_then(endpoint_hash),
                server_binding: upstream
                    .stream
                    .ssl()
                    .peer_certificate()
                    .and_then(|c| endpoint_hash(&c)),
            },
        }
    }
}

/// The authentication exchange, bounded by the startup deadline and ended by shutdown.
/// Returns the mechanisms a terminated login used (`None`: relayed).
pub(super) async fn login<C, U>(
    client: &mut C,
    server: &mut U,
    startup: &Startup,
    reader: FrameReader,
    ends: LoginEnds<'_>,
    plan: Plan<'_>,
) -> Result<(Authenticated, Option<Mechanisms>), SessionError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        match plan {
            Plan::Passthrough => passthrough::authenticate(client, server, startup, reader)
                .await
                .map(|a| (a, None)),
            Plan::Scram {
                auth,
                verifiers,
                client_binding,
                server_binding,
            } => {
                let bindings = (client_binding, server_binding);
                let auth = (auth, verifiers);
                scram_login::login(client, server, startup, reader, auth, bindings).await
            }
        }
    };
    tokio::select! {
        auth = timeout_at(ends.deadline, exchange) => {
            auth.unwrap_or(Err(SessionError::StartupTimeout(ends.limit)))
        }
        _ = ends.stop.cancelled() => Err(SessionError::Shutdown),
    }
}
