//! Admission: what a connection may do, decided in one place and once, before anything of it
//! is forwarded. Every path goes through it, a cancel (plaintext or encrypted, within the
//! limit or over it) as much as a session:
//!
//! 1. [`Admission::begin`], before TLS: who the client is (the PROXY header, on a listener
//!    that takes one and only from `listen.trusted_proxies`), `listen.allowed_clients`, and
//!    whether a session would be over `listen.max_connections` or
//!    `listen.max_connections_per_client`.
//! 2. [`Admission::cancel`]: a cancel needs the address checks only. Over a limit it is still
//!    served, as PostgreSQL serves one at `max_connections`: that is when every slot may be
//!    running a query someone needs to stop.
//! 3. [`Admission::session`] and [`Admission::route`], once the StartupMessage is judged: the
//!    limits, then the route (looked up once, from the route the server name found at the
//!    handshake and the judged database), its `allowed_clients`, and the client certificate
//!    against the judged user.

use std::net::IpAddr;
use std::sync::Arc;

use openssl::x509::X509;
use tokio::time::Instant;

use super::error::SessionError;
use super::handshake::check_certificate_user;
use super::log::Record;
use super::sessions::{ClientClaim, Sessions};
use super::startup::Startup;
use crate::client::{self, ClientError, ClientIo};
use crate::settings::{Listener, RouteTarget, Settings, Target};

/// Whether the accept loop found room under `listen.max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A slot was free.
    Within,
    /// Every slot is taken: only a cancel is served.
    Over,
}

/// What one connection may do.
pub(super) struct Admission {
    /// The client's address, as judged (the PROXY header's source when one was trusted).
    client: IpAddr,
    /// Why the connection may do nothing (no PROXY header from a balancer, an address outside
    /// `listen.allowed_clients`); told over TLS when the handshake gets that far.
    refused: Option<ClientError>,
    /// Why a session may not start though a cancel may: a limit.
    full: Option<SessionError>,
    /// The place under `listen.max_connections_per_client`, held until the connection ends.
    _claim: Option<ClientClaim>,
}

impl Admission {
    /// The checks before TLS, for a connection that arrived on `listener` (which says
    /// whether a PROXY header comes first). `Err` ends the connection at once without a
    /// word (a PROXY header that is malformed or sent from an untrusted address).
    pub(super) async fn begin<S: ClientIo>(
        io: &mut S,
        sessions: &Arc<Sessions>,
        settings: &Settings,
        record: &mut Record,
        deadline: Instant,
        (listener, limit): (Listener, Limit),
    ) -> Result<Admission, ClientError> {
        let listen = &settings.listen;
        let proxy_v2 = listener.proxy_v2(listen);
        let identified = client::identify(io, record.peer, listen, proxy_v2, deadline).await?;
        record.identified(identified.addresses);
        let client = record.peer.ip();
        let mut refused = identified.admission.err();
        if refused.is_none() && !listen.allowed_clients.iter().any(|n| n.contains(&client)) {
            refused = Some(ClientError::NoAccess(client));
        }
        let claim = match limit {
            Limit::Within => sessions.claim(client, listen.max_per_client),
            Limit::Over => None,
        };
        let full = match (limit, &claim) {
            (Limit::Over, _) => Some(SessionError::TooManyConnections),
            (Limit::Within, None) => Some(
                ClientError::TooManyFromAddress {
                    address: client,
                    limit: listen.max_per_client,
                }
                .into(),
            ),
            (Limit::Within, Some(_)) => None,
        };
        Ok(Admission {
            client,
            refused,
            full,
            _claim: claim,
        })
    }

    /// Whether the upstream may be connected before the first packet is known: only for a
    /// connection that would be admitted as a session.
    pub(super) fn may_connect(&self) -> bool {
        self.refused.is_none() && self.full.is_none()
    }

    /// May the connection go on at all (a cancel needs no more than this).
    pub(super) fn cancel(&mut self) -> Result<(), SessionError> {
        match self.refused.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// May the connection start a session: the address checks, then the limits.
    pub(super) fn session(&mut self) -> Result<(), SessionError> {
        self.cancel()?;
        match self.full.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The route of an admitted session, found once from `by_name` (the route its server
    /// name found at the handshake) and the judged database; then the route's
    /// `allowed_clients`, and the client certificate against the judged user.
    pub(super) fn route(
        &self,
        settings: &Settings,
        by_name: Option<&Arc<RouteTarget>>,
        server_name: Option<&str>,
        startup: &Startup,
        certificate: Option<&X509>,
    ) -> Result<Arc<Target>, SessionError> {
        let database = startup.params.database.as_str();
        let (target, route) =
            settings
                .route(by_name, Some(database))
                .ok_or_else(|| SessionError::NoRoute {
                    server_name: server_name.map(str::to_owned),
                    database: database.to_owned(),
                })?;
        if let Some(route) = &route
            && !route.admits(self.client)
        {
            return Err(ClientError::NoAccess(self.client).into());
        }
        if let Some(policy) = settings.client_policy(route.as_deref()).client_certs {
            check_certificate_user(policy.user, certificate, &startup.params.user)?;
        }
        Ok(target)
    }
}
