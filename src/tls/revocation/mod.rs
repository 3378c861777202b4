//! Revocation of a verified peer certificate, on either leg: CRLs (`crl`, checked by
//! OpenSSL during verification) and OCSP ([`ocsp`], asked after the handshake), and the one
//! verdict both legs act on (`Revocation`).

pub(crate) mod crl;
pub mod ocsp;

use std::fmt;
use std::net::SocketAddr;

use openssl::ssl::{SslContextRef, SslRef};

use self::ocsp::{OcspChecker, OcspError, OcspMode};
use crate::leg::Leg;
use crate::tls::describe::CertSummary;

/// Why a verified peer certificate is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// A CRL or the OCSP responder says it is revoked.
    Revoked {
        /// "CRL" or "OCSP".
        check: &'static str,
        /// The revoked certificate.
        cert: CertSummary,
    },
    /// OCSP could not say it is good, and the policy is hard-fail.
    Unknown {
        /// Why.
        reason: String,
        /// The certificate.
        cert: CertSummary,
    },
}

impl fmt::Display for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revocation::Revoked { check, cert } => write!(
                f,
                "revoked ({check}): subject {}, serial {}",
                cert.subject, cert.serial
            ),
            Revocation::Unknown { reason, cert } => write!(
                f,
                "revocation status unknown (OCSP): {reason}: subject {}, serial {}",
                cert.subject, cert.serial
            ),
        }
    }
}

/// Asks OCSP about the peer certificate of a verified handshake on `leg` and applies the
/// leg's policy: revoked is refused; unknown is refused in hard-fail, and logged and
/// accepted in soft-fail. `context` holds the trust store the chain was verified with.
pub(crate) async fn check_ocsp(
    checker: &OcspChecker,
    ssl: &SslRef,
    context: &SslContextRef,
    leg: Leg,
    peer: Option<SocketAddr>,
) -> Result<(), Revocation> {
    let count = |result| {
        let labels = crate::metrics::LegResult {
            leg: if leg == Leg::Client {
                "client"
            } else {
                "upstream"
            },
            result,
        };
        crate::metrics::get().ocsp.get_or_create(&labels).inc();
    };
    let (error, cert) = match checker.check(ssl, context).await {
        Ok(()) => {
            count("good");
            return Ok(());
        }
        Err(found) => found,
    };
    count(match error {
        OcspError::Revoked => "revoked",
        OcspError::Unknown(_) => "unknown",
    });
    match error {
        OcspError::Revoked => Err(Revocation::Revoked {
            check: "OCSP",
            cert,
        }),
        OcspError::Unknown(reason) if checker.mode() == OcspMode::HardFail => {
            Err(Revocation::Unknown { reason, cert })
        }
        OcspError::Unknown(reason) => {
            let (subject, serial) = (cert.subject.as_str(), cert.serial.as_str());
            match (leg, peer) {
                (Leg::Upstream, Some(addr)) => tracing::warn!(
                    upstream = %addr, subject, serial,
                    "upstream certificate revocation status unknown (OCSP): {reason}; accepted (upstream.ocsp = \"soft-fail\")"
                ),
                _ => tracing::warn!(
                    subject,
                    serial,
                    "{leg} certificate revocation status unknown (OCSP): {reason}; accepted ({} = \"soft-fail\")",
                    leg.ocsp_key()
                ),
            }
            Ok(())
        }
    }
}
