//! Watching a handshake's chain verification, so a refusal can say which certificate failed
//! and why instead of OpenSSL's bare alert.

use std::sync::{Arc, Mutex};

use openssl::x509::{X509StoreContextRef, X509VerifyResult};

use super::describe::{CertSummary, certificate_names};

/// The first thing that went wrong while verifying a peer's chain.
#[derive(Debug, Clone)]
pub(crate) struct VerifyFailure {
    /// OpenSSL's verify error.
    pub(crate) error: X509VerifyResult,
    /// The certificate concerned.
    pub(crate) cert: CertSummary,
    /// Its DNS/IP names (or CN).
    pub(crate) names: String,
}

impl VerifyFailure {
    /// Whether the certificate was found revoked.
    pub(crate) fn is_revoked(&self) -> bool {
        self.error.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED
    }

    /// Whether the chain is fine but names another host.
    pub(crate) fn is_name_mismatch(&self) -> bool {
        let raw = self.error.as_raw();
        raw == openssl_sys::X509_V_ERR_HOSTNAME_MISMATCH
            || raw == openssl_sys::X509_V_ERR_IP_ADDRESS_MISMATCH
    }
}

/// Watches one handshake's chain verification: records the first failure, forgives an
/// expired CRL when `crl_allow_expired` says so, and (for clients) lets a revoked
/// certificate finish the handshake so the refusal can be a PostgreSQL error (28000) instead
/// of a bare alert. The connection is refused either way.
#[derive(Clone, Default)]
pub(crate) struct VerifyObserver {
    failure: Arc<Mutex<Option<VerifyFailure>>>,
    allow_expired_crl: bool,
    defer_revoked: bool,
}

impl VerifyObserver {
    /// An observer; see the type's documentation for the two switches.
    pub(crate) fn new(allow_expired_crl: bool, defer_revoked: bool) -> Self {
        Self {
            failure: Arc::default(),
            allow_expired_crl,
            defer_revoked,
        }
    }

    /// The callback for `set_verify_callback`.
    pub(crate) fn callback(
        &self,
    ) -> impl Fn(bool, &mut X509StoreContextRef) -> bool + Send + Sync + 'static {
        let this = self.clone();
        move |ok, ctx| {
            if ok {
                return true;
            }
            let error = ctx.error();
            if this.allow_expired_crl && error.as_raw() == openssl_sys::X509_V_ERR_CRL_HAS_EXPIRED {
                return true;
            }
            let mut slot = this.failure.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                let cert = ctx.current_cert();
                *slot = Some(VerifyFailure {
                    error,
                    cert: cert.map(CertSummary::of).unwrap_or_default(),
                    names: cert
                        .map(|c| certificate_names(c).join(", "))
                        .unwrap_or_default(),
                });
            }
            this.defer_revoked && error.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED
        }
    }

    /// The first failure seen, if any.
    pub(crate) fn failure(&self) -> Option<VerifyFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
