//! The TLS keys turned into the specs the contexts are built from, with every rule that
//! spans several keys (a CRL needs its CA, a client certificate needs its key), and the
//! validity check of the proxy's own certificates. The same rules apply to `[listen]` and
//! each route (client side), and to `[upstream]` and each `[upstreams.NAME]`.

use std::path::PathBuf;

use openssl::ssl::SslAcceptor;
use openssl::x509::X509Ref;

use super::{Problems, key_name};
use crate::config::schema::{OcspMode, RawConfig, RawUpstream};
use crate::tls::acceptor::{self, AcceptorSpec, SniSwitch};
use crate::tls::connector::{self, Connector, ConnectorSpec};
use crate::tls::describe::{name_to_string, validity};
use crate::tls::files::{KeyedPath, TlsSetupError};
use crate::tls::groups::{self, Defaults};
use crate::tls::identity::IdentitySpec;
use crate::tls::trust::TrustSpec;

/// A certificate that expires sooner than this is worth a warning.
const EXPIRY_WARNING_DAYS: i32 = 30;

/// The client-side keys of `[listen]` or of one route (with `[listen]`'s as defaults).
pub(super) struct ClientKeys<'a> {
    /// `listen` or `routes[N]`, for messages.
    pub prefix: &'a str,
    pub certificate: &'a PathBuf,
    pub private_key: &'a PathBuf,
    pub client_ca: Option<&'a String>,
    pub client_crl: Option<&'a PathBuf>,
    pub client_ocsp: OcspMode,
}

impl<'a> ClientKeys<'a> {
    /// `[listen]`'s.
    pub fn listen(raw: &'a RawConfig) -> Self {
        let l = &raw.listen;
        Self {
            prefix: "listen",
            certificate: &l.certificate,
            private_key: &l.private_key,
            client_ca: l.client_ca.as_ref(),
            client_crl: l.client_crl.as_ref(),
            client_ocsp: l.client_ocsp,
        }
    }
}

/// Builds a client-facing acceptor, or records why not; `sni` switches to a route's context
/// by the server name the client sends.
pub(super) fn acceptor(
    keys: &ClientKeys<'_>,
    raw: &RawConfig,
    fips: bool,
    sni: Option<SniSwitch>,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<SslAcceptor> {
    let spec = acceptor_spec(keys, raw, fips, problems)?;
    let built = acceptor::build(&spec, fips, sni)
        .map_err(|e| tls_problem(problems, e))
        .ok()?;
    if let Some(cert) = built.context().certificate() {
        check_validity(
            key_name(keys.prefix, "certificate"),
            cert,
            problems,
            warnings,
        );
    }
    Some(built)
}

/// Builds the connector of `[upstream]` or `[upstreams.NAME]` (`prefix`), or records why not.
pub(super) fn connector(
    prefix: &str,
    u: &RawUpstream,
    raw: &RawConfig,
    fips: bool,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<Connector> {
    let spec = connector_spec(prefix, u, raw, fips, problems)?;
    let built = connector::build(&spec, fips)
        .map_err(|e| tls_problem(problems, e))
        .ok()?;
    if let Some(cert) = built.context().certificate() {
        let key = key_name(prefix, "client_certificate");
        check_validity(key, cert, problems, warnings);
    }
    Some(built)
}

fn tls_problem(problems: &mut Problems, e: TlsSetupError) {
    problems.file(e.key(), e.to_string());
}

/// `key`'s group list: as configured, or the default; `None` (with the problem recorded
/// when `report`) for a list the library refuses.
fn groups(
    key: &'static str,
    configured: Option<&String>,
    default: &str,
    report: bool,
    problems: &mut Problems,
) -> Option<String> {
    let Some(list) = configured else {
        return Some(default.to_owned());
    };
    match groups::check_list(list) {
        Ok(()) => Some(list.trim().to_owned()),
        Err(e) => {
            if report {
                problems.key(key, e);
            }
            None
        }
    }
}

fn acceptor_spec(
    keys: &ClientKeys<'_>,
    raw: &RawConfig,
    fips: bool,
    problems: &mut Problems,
) -> Option<AcceptorSpec> {
    let p = keys.prefix;
    if keys.client_ocsp != OcspMode::Off && keys.client_ca.is_none() {
        problems.key(
            key_name(p, "client_ocsp"),
            format!("needs {p}.client_ca (client certificates are not requested without it)"),
        );
    }
    // Every route's context takes `listen.groups`; the listener's own reports a bad list.
    let groups = groups(
        "listen.groups",
        raw.listen.groups.as_ref(),
        Defaults::for_library(fips).client,
        p == "listen",
        problems,
    )?;
    let client_trust = match (keys.client_ca, keys.client_crl) {
        (Some(ca), crl) => Some(TrustSpec {
            ca_key: key_name(p, "client_ca"),
            ca: ca.clone(),
            crl: crl.cloned().map(|path| KeyedPath {
                key: key_name(p, "client_crl"),
                path,
            }),
            crl_check: raw.tls.crl_check,
        }),
        (None, Some(crl)) => {
            tls_problem(
                problems,
                TlsSetupError::Content {
                    key: key_name(p, "client_crl"),
                    path: crl.clone(),
                    message: format!(
                        "{p}.client_crl needs {p}.client_ca (client certificates are not \
                         requested without it)"
                    ),
                },
            );
            return None;
        }
        (None, None) => None,
    };
    Some(AcceptorSpec {
        identity: IdentitySpec {
            certificate: KeyedPath {
                key: key_name(p, "certificate"),
                path: keys.certificate.clone(),
            },
            private_key: KeyedPath {
                key: key_name(p, "private_key"),
                path: keys.private_key.clone(),
            },
        },
        min_tls_version: raw.listen.min_tls_version,
        session_tickets: raw.listen.session_tickets,
        client_trust,
        session_id_context: format!("pgt-proxy {p}"),
        groups,
    })
}

fn connector_spec(
    p: &str,
    u: &RawUpstream,
    raw: &RawConfig,
    fips: bool,
    problems: &mut Problems,
) -> Option<ConnectorSpec> {
    let identity = match (&u.client_certificate, &u.client_private_key) {
        (Some(cert), Some(key)) => Some(IdentitySpec {
            certificate: KeyedPath {
                key: key_name(p, "client_certificate"),
                path: cert.clone(),
            },
            private_key: KeyedPath {
                key: key_name(p, "client_private_key"),
                path: key.clone(),
            },
        }),
        (None, None) => None,
        (Some(path), None) | (None, Some(path)) => {
            tls_problem(
                problems,
                TlsSetupError::Content {
                    key: key_name(p, "client_certificate"),
                    path: path.clone(),
                    message: format!(
                        "{p}.client_certificate and {p}.client_private_key must be set together"
                    ),
                },
            );
            return None;
        }
    };
    Some(ConnectorSpec {
        trust: TrustSpec {
            ca_key: key_name(p, "ca"),
            ca: u.ca.clone(),
            crl: u.crl.clone().map(|path| KeyedPath {
                key: key_name(p, "crl"),
                path,
            }),
            crl_check: raw.tls.crl_check,
        },
        identity,
        groups: groups(
            key_name(p, "groups"),
            u.groups.as_ref(),
            Defaults::for_library(fips).upstream,
            true,
            problems,
        )?,
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
