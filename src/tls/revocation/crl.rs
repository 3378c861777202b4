//! CRLs: loading every PEM CRL of a file or directory into a verification store, and turning
//! CRL checking on for the leaf or the whole chain. OpenSSL then refuses a revoked
//! certificate during verification; [`crate::tls::verify`] records which one it was.

use foreign_types::ForeignTypeRef;
use openssl::x509::X509Crl;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::verify::X509VerifyFlags;

use crate::config::schema::CrlCheck;
use crate::tls::ffi;
use crate::tls::files::{
    KeyedPath, TlsSetupError, content, none_found, pem_blocks, pem_files, read,
};

/// Loads every PEM CRL in `source` (a file, or a directory of files) into `store` and
/// turns on CRL checking.
pub(crate) fn add_crls(
    store: &mut X509StoreBuilderRef,
    source: &KeyedPath,
    check: CrlCheck,
) -> Result<(), TlsSetupError> {
    let (key, path) = (source.key, source.path.as_path());
    let mut count = 0;
    for file in pem_files(key, path)? {
        let pem = read(key, &file)?;
        for block in pem_blocks(&pem, "X509 CRL") {
            let crl = X509Crl::from_pem(block).map_err(|e| content(key, &file, e))?;
            // SAFETY: both pointers are valid; X509_STORE_add_crl takes its own reference.
            let rc = unsafe { ffi::X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
            if rc != 1 {
                return Err(openssl::error::ErrorStack::get().into());
            }
            count += 1;
        }
    }
    if count == 0 {
        return Err(none_found(key, path, "CRL"));
    }
    store.set_flags(match check {
        CrlCheck::Chain => X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL,
        CrlCheck::Leaf => X509VerifyFlags::CRL_CHECK,
    })?;
    Ok(())
}
