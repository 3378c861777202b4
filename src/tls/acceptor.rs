//! The client-facing context: the proxy's certificate, the TLS policy, ALPN "postgresql",
//! no resumption unless asked for, and client-certificate verification when configured.

use std::sync::Arc;

use foreign_types::ForeignTypeRef;
use openssl::ssl::{
    AlpnError, NameType, SniError, SslAcceptor, SslContext, SslMethod, SslOptions, SslRef,
    SslSessionCacheMode, SslVerifyMode,
};

use super::ffi;
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
    /// Distinct per context, so a session resumed on one route's context (with
    /// `listen.session_tickets`) is never resumed on another's.
    pub session_id_context: String,
    /// Key-exchange groups, an OpenSSL group list ([`super::groups`]).
    pub groups: String,
}

/// Chooses another context for a connection by the server name its client sent (a route's
/// certificate and client-certificate policy), or `None` to keep the default.
pub(crate) type SniSwitch = Arc<dyn Fn(&str) -> Option<SslContext> + Send + Sync>;

/// Builds the client-facing acceptor; with `sni`, the SNI callback switches connections to
/// the context it picks.
pub(crate) fn build(
    spec: &AcceptorSpec,
    fips: bool,
    sni: Option<SniSwitch>,
) -> Result<SslAcceptor, TlsSetupError> {
    let tls12 = spec.min_tls_version == TlsVersion::V1_2;
    let mut b = if tls12 {
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?
    } else {
        SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?
    };
    apply_policy(&mut b, fips, tls12, &spec.groups)?;
    tune_records(&mut b);
    if !spec.session_tickets {
        b.set_options(SslOptions::NO_TICKET);
        b.set_num_tickets(0)?;
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    b.set_session_id_context(spec.session_id_context.as_bytes())?;
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
    if let Some(switch) = sni {
        b.set_servername_callback(move |ssl, _| {
            let Some(ctx) = ssl.servername(NameType::HOST_NAME).and_then(|n| switch(n)) else {
                return Ok(());
            };
            ssl.set_ssl_context(&ctx)
                .map_err(|_| SniError::ALERT_FATAL)?;
            apply_verify_mode(ssl, ctx.verify_mode());
            Ok(())
        });
    }
    Ok(b.build())
}

/// Gives a connection whose context was switched the new context's verify mode: OpenSSL
/// copies it only when the connection is created (stunnel re-applies it for the same
/// reason). The connection's own verify callback (the observer) is kept.
fn apply_verify_mode(ssl: &mut SslRef, mode: SslVerifyMode) {
    // SAFETY: `ssl` is live for the call; the callback pointer is the one OpenSSL holds for
    // this connection, whose state lives in the connection's own ex data.
    unsafe {
        let callback = ffi::SSL_get_verify_callback(ssl.as_ptr());
        openssl_sys::SSL_set_verify(ssl.as_ptr(), mode.bits(), callback);
    }
}
