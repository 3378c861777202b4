//! The upstream-facing context: the TLS policy, full chain verification against the
//! configured anchors and CRLs, ALPN "postgresql", and the optional client certificate. Host
//! names are checked per connection ([`crate::upstream`]). There is deliberately no way to
//! build a connector that skips certificate or host name verification.

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};

use super::files::TlsSetupError;
use super::identity::IdentitySpec;
use super::policy::{ALPN_WIRE, apply_policy};
use super::records::tune_records;
use super::trust::TrustSpec;

/// What the connector is built from, validated by [`crate::settings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectorSpec {
    /// Trust for the server's certificate.
    pub trust: TrustSpec,
    /// A client certificate to present, if the server wants one.
    pub identity: Option<IdentitySpec>,
}

/// Builds the upstream connector.
pub(crate) fn build(spec: &ConnectorSpec, fips: bool) -> Result<SslConnector, TlsSetupError> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    apply_policy(&mut b, fips, true, crate::leg::Leg::Upstream)?;
    tune_records(&mut b);
    b.set_verify(SslVerifyMode::PEER);
    b.set_cert_store(spec.trust.build()?);
    // Every PostgreSQL 17+ server requires it for direct TLS; older ones ignore it.
    b.set_alpn_protos(ALPN_WIRE)?;
    if let Some(identity) = &spec.identity {
        identity.install(&mut b, fips)?;
    }
    Ok(b.build())
}
