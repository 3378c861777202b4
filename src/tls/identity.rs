//! The proxy's own certificates and keys (the one it presents to clients, and the optional
//! one it presents to the upstream): loading, the key-file permission rule, the key-matches
//! check, the FIPS key check, and installing them in a context.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::ssl::SslContextBuilder;
use openssl::x509::X509;

use super::describe::openssl_errors;
use super::files::{KeyedPath, TlsSetupError, content, none_found, read};

/// A certificate chain file and its key file, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentitySpec {
    /// PEM chain, leaf first.
    pub(crate) certificate: KeyedPath,
    /// PEM private key of the leaf.
    pub(crate) private_key: KeyedPath,
}

/// A loaded certificate chain and its key, checked to match.
pub(super) struct Identity {
    /// Leaf first, then intermediates.
    pub(super) chain: Vec<X509>,
    /// The leaf's private key.
    pub(super) key: PKey<Private>,
}

impl IdentitySpec {
    /// Loads both files and installs them in `b`.
    pub(super) fn install(
        &self,
        b: &mut SslContextBuilder,
        fips: bool,
    ) -> Result<(), TlsSetupError> {
        let identity = self.load(fips)?;
        let (cert, key) = (&self.certificate, &self.private_key);
        let refused = |e| rejected(cert.key, &cert.path, e);
        b.set_certificate(&identity.chain[0]).map_err(refused)?;
        for extra in &identity.chain[1..] {
            b.add_extra_chain_cert(extra.clone()).map_err(refused)?;
        }
        b.set_private_key(&identity.key)
            .map_err(|e| rejected(key.key, &key.path, e))?;
        b.check_private_key().map_err(refused)?;
        Ok(())
    }

    /// Loads the chain and its key, enforcing the key permission rule and that the key
    /// belongs to the leaf.
    pub(super) fn load(&self, fips: bool) -> Result<Identity, TlsSetupError> {
        let (cert, key) = (&self.certificate, &self.private_key);
        let pem = read(cert.key, &cert.path)?;
        let chain = X509::stack_from_pem(&pem).map_err(|e| content(cert.key, &cert.path, e))?;
        let Some(leaf) = chain.first() else {
            return Err(none_found(cert.key, &cert.path, "certificate"));
        };
        check_key_permissions(key.key, &key.path)?;
        let key_pem = read(key.key, &key.path)?;
        let private =
            PKey::private_key_from_pem(&key_pem).map_err(|e| content(key.key, &key.path, e))?;
        // The key's type is judged before the certificate's public key is decoded: under
        // fips=yes a provider that does not approve the algorithm (3.1's registers EdDSA as
        // fips=no) cannot decode that key at all.
        if fips && let Err(why) = fips_usable_key(&private) {
            return Err(TlsSetupError::Content {
                key: key.key,
                path: key.path.clone(),
                message: format!("the FIPS provider cannot use this key: {why}"),
            });
        }
        let public = leaf.public_key().map_err(|e| TlsSetupError::Content {
            key: cert.key,
            path: cert.path.clone(),
            message: format!(
                "OpenSSL cannot decode the certificate's public key{}: {}",
                if fips { " (FIPS mode)" } else { "" },
                openssl_errors(&e)
            ),
        })?;
        if !private.public_eq(&*public) {
            return Err(TlsSetupError::Content {
                key: key.key,
                path: key.path.clone(),
                message: format!(
                    "private key does not match the certificate in {}",
                    cert.path.display()
                ),
            });
        }
        Ok(Identity {
            chain,
            key: private,
        })
    }
}

/// Keys a FIPS 140 provider can sign with: RSA of 2048 bits or more, ECDSA on P-256, P-384
/// or P-521.
fn fips_usable_key(key: &PKey<Private>) -> Result<(), String> {
    use openssl::pkey::Id;
    match key.id() {
        Id::RSA if key.bits() >= 2048 => Ok(()),
        Id::RSA => Err(format!(
            "RSA keys must have at least 2048 bits, this one has {}",
            key.bits()
        )),
        Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .and_then(|nid| nid.short_name().ok())
                .unwrap_or("unknown");
            match curve {
                "prime256v1" | "secp384r1" | "secp521r1" => Ok(()),
                other => Err(format!(
                    "EC keys must be on P-256, P-384 or P-521, not {other}"
                )),
            }
        }
        other => Err(format!(
            "{other:?} keys are not approved; use RSA (2048+) or ECDSA (P-256/384/521)"
        )),
    }
}

/// PostgreSQL's rule for its own key file: no group or other access, except group read
/// when the file is owned by root (so root:pgt-proxy 0640 works for a service user).
pub(crate) fn check_key_permissions(key: &'static str, path: &Path) -> Result<(), TlsSetupError> {
    let meta = fs::metadata(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.into(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    let allowed_extra = if meta.uid() == 0 { 0o040 } else { 0 };
    if mode & 0o077 & !allowed_extra != 0 {
        return Err(TlsSetupError::Content {
            key,
            path: path.into(),
            message: format!(
                "private key file has group or world access (mode {mode:04o}); it must be \
                 u=rw (0600) or less, or u=rw,g=r (0640) or less when owned by root"
            ),
        });
    }
    Ok(())
}

/// OpenSSL would not use a certificate or key (e.g. below the system's security level).
fn rejected(key: &'static str, path: &Path, e: openssl::error::ErrorStack) -> TlsSetupError {
    TlsSetupError::Content {
        key,
        path: path.into(),
        message: format!(
            "OpenSSL refuses it: {} (the system's OpenSSL security level may require a larger key)",
            openssl_errors(&e)
        ),
    }
}
