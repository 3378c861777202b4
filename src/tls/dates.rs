//! The dates a monitor watches in the files a configuration uses, reported to the metrics:
//! each certificate file's earliest notAfter and each CRL file's earliest nextUpdate.

use std::path::PathBuf;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{X509, X509Crl};

use super::files::{list_files, pem_blocks};

/// Reads every certificate file (`(role, path)`: a file or a directory of files) and every
/// CRL file in use and publishes their dates; a file without a readable date is left out.
pub(crate) fn publish(certificates: &[(&'static str, PathBuf)], crls: &[PathBuf]) {
    let mut not_after = Vec::new();
    for (role, path) in certificates {
        for file in list_files(path).unwrap_or_default() {
            let certs = std::fs::read(&file)
                .ok()
                .and_then(|pem| X509::stack_from_pem(&pem).ok())
                .unwrap_or_default();
            let earliest = certs.iter().filter_map(|c| unix_time(c.not_after())).min();
            if let Some(t) = earliest {
                not_after.push((*role, file.display().to_string(), t));
            }
        }
    }
    let mut next_update = Vec::new();
    for path in crls {
        for file in list_files(path).unwrap_or_default() {
            let pem = std::fs::read(&file).unwrap_or_default();
            let earliest = pem_blocks(&pem, "X509 CRL")
                .into_iter()
                .filter_map(|b| X509Crl::from_pem(b).ok())
                .filter_map(|c| c.next_update().and_then(unix_time))
                .min();
            if let Some(t) = earliest {
                next_update.push((file.display().to_string(), t));
            }
        }
    }
    crate::metrics::publish_dates(&not_after, &next_update);
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}
