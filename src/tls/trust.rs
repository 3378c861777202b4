//! Verification stores: the trust anchors a leg verifies its peer against ("system", a PEM
//! file, or a directory of PEM files), with the CRLs that go with them.

use std::path::Path;

use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509PurposeId};

use super::files::{KeyedPath, TlsSetupError, content, none_found, pem_files, read};
use super::revocation::crl;
use crate::config::schema::CrlCheck;

/// Where a leg's trust comes from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustSpec {
    /// The key naming the anchors, e.g. `upstream.ca`.
    pub(crate) ca_key: &'static str,
    /// "system", a PEM file, or a directory of PEM files.
    pub(crate) ca: String,
    /// CRLs checked against the chain, if any.
    pub(crate) crl: Option<KeyedPath>,
    /// Which certificates the CRLs are checked for.
    pub(crate) crl_check: CrlCheck,
}

impl TrustSpec {
    /// Loads the anchors and the CRLs into a store.
    pub(super) fn build(&self) -> Result<X509Store, TlsSetupError> {
        Ok(self.builder()?.build())
    }

    /// [`TrustSpec::build`], for verifying a TLS client's chain outside the handshake (which
    /// sets the purpose itself): the chain must be fit for TLS client authentication.
    pub(crate) fn build_for_clients(&self) -> Result<X509Store, TlsSetupError> {
        let mut store = self.builder()?;
        store.set_purpose(X509PurposeId::SSL_CLIENT)?;
        Ok(store.build())
    }

    fn builder(&self) -> Result<X509StoreBuilder, TlsSetupError> {
        let mut store = anchors(self.ca_key, &self.ca)?;
        if let Some(crl) = &self.crl {
            crl::add_crls(&mut store, crl, self.crl_check)?;
        }
        Ok(store)
    }
}

/// The trust anchors `spec` names, in a store still open for CRLs and flags.
fn anchors(key: &'static str, spec: &str) -> Result<X509StoreBuilder, TlsSetupError> {
    let mut store = X509StoreBuilder::new()?;
    if spec == "system" {
        store.set_default_paths()?;
        return Ok(store);
    }
    let path = Path::new(spec);
    let mut count = 0;
    for file in &pem_files(key, path)? {
        let pem = read(key, file)?;
        for cert in X509::stack_from_pem(&pem).map_err(|e| content(key, file, e))? {
            store.add_cert(cert)?;
            count += 1;
        }
    }
    if count == 0 {
        return Err(none_found(key, path, "certificate"));
    }
    Ok(store)
}
