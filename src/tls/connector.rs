//! The upstream-facing context: the TLS policy, full chain verification against the
//! configured anchors and CRLs, ALPN "postgresql", and the optional client certificate. Host
//! names are checked per connection ([`Connector::ssl_for`]). There is deliberately no way to
//! build a connector that skips certificate or host name verification.

use std::net::IpAddr;

use openssl::error::ErrorStack;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslContextRef, SslMethod, SslMode, SslOptions,
    SslVerifyMode, SslVersion,
};
use openssl::x509::verify::X509CheckFlags;

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
    /// Key-exchange groups, an OpenSSL group list ([`super::groups`]).
    pub groups: String,
}

/// A built upstream context, cheap to clone (the context is reference counted).
///
/// Not openssl's `SslConnector`: its builder always loads the system's CA bundle first, which
/// our own trust store then replaced. Parsing ~140 certificates through OpenSSL 3.0's
/// decoders cost ~19 ms of CPU per upstream at every start and reload (a second for 50
/// upstreams) for a store nobody used.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    context: SslContext,
    /// Sent as SNI on every connection instead of the server's name.
    fixed_sni: Option<&'static str>,
}

impl Connector {
    /// The context (its client certificate and trust store, for checks and OCSP).
    pub(crate) fn context(&self) -> &SslContextRef {
        &self.context
    }

    /// This connector, sending `name` as SNI on every connection (to a name or an address)
    /// while the certificate must still match the server's own name: how a replica tells a
    /// peer that the connection carries a forwarded cancel ([`crate::cancel`]).
    pub(crate) fn with_fixed_sni(self, name: &'static str) -> Self {
        Self {
            fixed_sni: Some(name),
            ..self
        }
    }

    /// A client connection to `server_name`: SNI for a name (never for an address), or the
    /// fixed one ([`Connector::with_fixed_sni`]), and the name or address the chain's leaf
    /// must match, without partial wildcards, as `SslConnector` sets them. Chain
    /// verification is on in the context and stays on.
    pub(crate) fn ssl_for(&self, server_name: &str) -> Result<Ssl, ErrorStack> {
        let mut ssl = Ssl::new(&self.context)?;
        let param = ssl.param_mut();
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        let ip = server_name.parse::<IpAddr>().ok();
        match ip {
            Some(ip) => param.set_ip(ip)?,
            None => param.set_host(server_name)?,
        }
        match (self.fixed_sni, ip) {
            (Some(sni), _) => ssl.set_hostname(sni)?,
            (None, None) => ssl.set_hostname(server_name)?,
            (None, Some(_)) => {}
        }
        Ok(ssl)
    }

    /// A connector that verifies against an empty trust store (it trusts nobody), for other
    /// modules' unit tests that need a value, never a connection.
    #[cfg(test)]
    pub(crate) fn trusting_nobody() -> Self {
        let mut b = base().expect("a client context");
        b.set_verify(SslVerifyMode::PEER);
        Self {
            context: b.build(),
            fixed_sni: None,
        }
    }
}

/// The options and modes `SslConnector` would set, without its system CA bundle: bug
/// workarounds on, compression off, and the modes tokio-openssl's partial writes need.
fn base() -> Result<SslContextBuilder, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    let options = (SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::SINGLE_DH_USE
        | SslOptions::SINGLE_ECDH_USE)
        & !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    b.set_options(options);
    b.set_mode(
        SslMode::AUTO_RETRY | SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE,
    );
    Ok(b)
}

/// Builds the upstream connector.
pub(crate) fn build(spec: &ConnectorSpec, fips: bool) -> Result<Connector, TlsSetupError> {
    let mut b = base()?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    apply_policy(&mut b, fips, true, &spec.groups)?;
    tune_records(&mut b);
    b.set_verify(SslVerifyMode::PEER);
    b.set_cert_store(spec.trust.build()?);
    // Every PostgreSQL 17+ server requires it for direct TLS; older ones ignore it.
    b.set_alpn_protos(ALPN_WIRE)?;
    if let Some(identity) = &spec.identity {
        identity.install(&mut b, fips)?;
    }
    Ok(Connector {
        context: b.build(),
        fixed_sni: None,
    })
}

#[cfg(test)]
mod tests {
    use openssl::ssl::NameType;

    use super::*;

    #[test]
    fn a_name_is_sent_as_sni_and_an_address_is_not() {
        let connector = Connector::trusting_nobody();
        let named = connector.ssl_for("db.example.com").unwrap();
        assert_eq!(
            named.servername(NameType::HOST_NAME),
            Some("db.example.com")
        );
        for address in ["10.0.0.7", "::1"] {
            let ssl = connector.ssl_for(address).unwrap();
            assert_eq!(ssl.servername(NameType::HOST_NAME), None, "{address}");
        }
        assert_eq!(connector.context().verify_mode(), SslVerifyMode::PEER);
        let fixed = connector.with_fixed_sni("peer.invalid");
        for server in ["db.example.com", "10.0.0.7"] {
            let ssl = fixed.ssl_for(server).unwrap();
            assert_eq!(ssl.servername(NameType::HOST_NAME), Some("peer.invalid"));
        }
    }
}
