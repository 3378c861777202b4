//! The client-facing context: the proxy's certificate, the TLS policy, ALPN "postgresql",
//! no resumption unless asked for, and client-certificate verification when configured.

use openssl::ssl::{
    AlpnError, SslAcceptor, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode,
};

use super::files::TlsSetupError;
use super::identity::IdentitySpec;
use super::policy::{ALPN_WIRE, apply_policy};
use super::records::tune_records;
use super::trust::TrustSpec;
use crate::config::schema::TlsVersion;

/// What the acceptor is built from, validated by [`crate::settings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptorSpec {
    /// The proxy's certificate and key.
    pub identity: IdentitySpec,
    /// Lowest TLS version accepted.
    pub min_tls_version: TlsVersion,
    /// Offer session resumption (tickets and the session cache).
    pub session_tickets: bool,
    /// Trust for client certificates; when set, every client must present one.
    pub client_trust: Option<TrustSpec>,
}

/// Builds the client-facing acceptor.
pub(crate) fn build(spec: &AcceptorSpec, fips: bool) -> Result<SslAcceptor, TlsSetupError> {
    let tls12 = spec.min_tls_version == TlsVersion::V1_2;
    let mut b = if tls12 {
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?
    } else {
        SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?
    };
    apply_policy(&mut b, fips, tls12)?;
    tune_records(&mut b);
    if !spec.session_tickets {
        b.set_options(SslOptions::NO_TICKET);
        b.set_num_tickets(0)?;
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    spec.identity.install(&mut b, fips)?;
    if let Some(trust) = &spec.client_trust {
        b.set_cert_store(trust.build()?);
        // Enforced here for every connection; the client leg adds a per-connection callback
        // that records why a certificate failed.
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    // PostgreSQL 17's rule: a client that offers ALPN must offer "postgresql". A client that
    // offers none is let through here; direct TLS then refuses it after the handshake.
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(ALPN_WIRE, client).ok_or(AlpnError::ALERT_FATAL)
    });
    Ok(b.build())
}
