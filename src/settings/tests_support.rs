//! Values for other modules' unit tests.

use std::sync::Arc;
use std::time::Duration;

use super::{AuthSettings, Target};
use crate::config::schema::TlsNegotiation;
use crate::config::schema::{AuthMode, ChannelBindingPolicy, UnknownUser};
use crate::scram::verifiers::Sources;
use crate::upstream::Endpoint;

/// An upstream at 127.0.0.1:5432 with a default connector and passthrough auth.
pub(crate) fn target() -> Arc<Target> {
    let connector = crate::tls::connector::Connector::trusting_nobody();
    Arc::new(Target {
        name: String::new(),
        upstream: Endpoint {
            host: "127.0.0.1".into(),
            port: 5432,
            server_name: "localhost".into(),
            negotiation: TlsNegotiation::Postgres,
            connect_timeout: Duration::from_secs(1),
            allow_expired_crl: false,
            ocsp: None,
        },
        connector,
        auth: AuthSettings {
            mode: AuthMode::Passthrough,
            unknown_user: UnknownUser::Passthrough,
            passthrough_trust: false,
            mock: crate::scram::mock::Mock::new(None, 4096, "127.0.0.1:5432"),
            upstream_channel_binding: ChannelBindingPolicy::Prefer,
            verifiers: Sources {
                userlist: Arc::default(),
                query: None,
                cache_ttl: Duration::from_secs(60),
            },
            upstream_certificate: false,
        },
    })
}
