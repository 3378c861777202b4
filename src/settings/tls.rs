//! The TLS keys turned into the specs both contexts are built from, with every rule that
//! spans several keys (a CRL needs its CA, a client certificate needs its key), and the
//! validity check of the proxy's own certificates.

use openssl::ssl::{SslAcceptor, SslConnector};
use openssl::x509::X509Ref;

use super::Problems;
use crate::config::schema::{OcspMode, RawConfig};
use crate::tls::acceptor::{self, AcceptorSpec};
use crate::tls::connector::{self, ConnectorSpec};
use crate::tls::describe::{name_to_string, validity};
use crate::tls::files::{KeyedPath, TlsSetupError};
use crate::tls::identity::IdentitySpec;
use crate::tls::trust::TrustSpec;

/// A certificate that expires sooner than this is worth a warning.
const EXPIRY_WARNING_DAYS: i32 = 30;

/// Builds both contexts, or records why not.
pub(super) fn contexts(
    raw: &RawConfig,
    fips: bool,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<(SslAcceptor, SslConnector)> {
    let acceptor = acceptor_spec(raw, problems).and_then(|spec| {
        acceptor::build(&spec, fips)
            .map_err(|e| tls_problem(problems, e))
            .ok()
    });
    let connector = connector_spec(raw, problems).and_then(|spec| {
        connector::build(&spec, fips)
            .map_err(|e| tls_problem(problems, e))
            .ok()
    });
    if let Some(cert) = acceptor.as_ref().and_then(|a| a.context().certificate()) {
        check_validity("listen.certificate", cert, problems, warnings);
    }
    if let Some(cert) = connector.as_ref().and_then(|c| c.context().certificate()) {
        check_validity("upstream.client_certificate", cert, problems, warnings);
    }
    Some((acceptor?, connector?))
}

fn tls_problem(problems: &mut Problems, e: TlsSetupError) {
    problems.file(e.key(), e.to_string());
}

fn acceptor_spec(raw: &RawConfig, problems: &mut Problems) -> Option<AcceptorSpec> {
    let l = &raw.listen;
    if l.client_ocsp != OcspMode::Off && l.client_ca.is_none() {
        problems.key(
            "listen.client_ocsp",
            "needs listen.client_ca (client certificates are not requested without it)",
        );
    }
    let client_trust = match (&l.client_ca, &l.client_crl) {
        (Some(ca), crl) => Some(TrustSpec {
            ca_key: "listen.client_ca",
            ca: ca.clone(),
            crl: crl.clone().map(|path| KeyedPath {
                key: "listen.client_crl",
                path,
            }),
            crl_check: raw.tls.crl_check,
        }),
        (None, Some(crl)) => {
            tls_problem(
                problems,
                TlsSetupError::Content {
                    key: "listen.client_crl",
                    path: crl.clone(),
                    message: "listen.client_crl needs listen.client_ca (client certificates \
                              are not requested without it)"
                        .into(),
                },
            );
            return None;
        }
        (None, None) => None,
    };
    Some(AcceptorSpec {
        identity: IdentitySpec {
            certificate: KeyedPath {
                key: "listen.certificate",
                path: l.certificate.clone(),
            },
            private_key: KeyedPath {
                key: "listen.private_key",
                path: l.private_key.clone(),
            },
        },
        min_tls_version: l.min_tls_version,
        session_tickets: l.session_tickets,
        client_trust,
    })
}

fn connector_spec(raw: &RawConfig, problems: &mut Problems) -> Option<ConnectorSpec> {
    let u = &raw.upstream;
    let identity = match (&u.client_certificate, &u.client_private_key) {
        (Some(cert), Some(key)) => Some(IdentitySpec {
            certificate: KeyedPath {
                key: "upstream.client_certificate",
                path: cert.clone(),
            },
            private_key: KeyedPath {
                key: "upstream.client_private_key",
                path: key.clone(),
            },
        }),
        (None, None) => None,
        (Some(path), None) | (None, Some(path)) => {
            tls_problem(
                problems,
                TlsSetupError::Content {
                    key: "upstream.client_certificate",
                    path: path.clone(),
                    message: "upstream.client_certificate and upstream.client_private_key \
                              must be set together"
                        .into(),
                },
            );
            return None;
        }
    };
    Some(ConnectorSpec {
        trust: TrustSpec {
            ca_key: "upstream.ca",
            ca: u.ca.clone(),
            crl: u.crl.clone().map(|path| KeyedPath {
                key: "upstream.crl",
                path,
            }),
            crl_check: raw.tls.crl_check,
        },
        identity,
    })
}

/// An expired or not-yet-valid certificate of our own is an error (every handshake would
/// fail); one expiring within 30 days is a warning.
fn check_validity(
    key: &'static str,
    cert: &X509Ref,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) {
    let subject = name_to_string(cert.subject_name());
    match validity(cert) {
        Ok((days, _)) if days < 0 => problems.file(
            Some(key),
            format!("{key}: certificate {subject} expired {} days ago", -days),
        ),
        Ok((_, false)) => problems.file(
            Some(key),
            format!("{key}: certificate {subject} is not valid yet"),
        ),
        Ok((days, true)) if days < EXPIRY_WARNING_DAYS => warnings.push(format!(
            "{key}: certificate {subject} expires in {days} days"
        )),
        Ok(_) => {}
        Err(e) => warnings.push(format!("{key}: cannot read validity dates: {e}")),
    }
}
