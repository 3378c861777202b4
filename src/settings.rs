//! What the proxy runs with: the user's configuration validated and resolved into parsed
//! addresses, durations and built TLS contexts.
//!
//! `run`, `check-config` and (later) reload all go through [`Settings::from_config`], so a
//! configuration that passes `check-config` is exactly one the proxy will start with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslConnector};

use crate::config::schema::{ClientCertUser, LogFormat, LogTarget, OcspMode, TlsNegotiation};
use crate::config::{ConfigError, LoadedConfig};
use crate::fips::ProviderInfo;
use crate::ocsp::OcspChecker;
use crate::tls::{self, TlsSetupError};

/// The validated configuration and the TLS contexts built from it.
pub struct Settings {
    /// Client-facing settings.
    pub listen: ListenSettings,
    /// Upstream settings.
    pub upstream: UpstreamSettings,
    /// Logging filter directive (already checked to parse).
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Where logs go.
    pub log_target: LogTarget,
    /// Presents the proxy's certificate to clients.
    pub acceptor: SslAcceptor,
    /// Verifies the upstream.
    pub connector: SslConnector,
    /// Things worth telling the operator that do not stop the proxy (e.g. a certificate that
    /// expires soon).
    pub warnings: Vec<String>,
    /// CRL files or directories in use, watched for changes.
    pub crl_paths: Vec<PathBuf>,
    /// How often they are checked.
    pub crl_refresh: Duration,
    /// The FIPS provider in use, when FIPS mode is active.
    pub fips: Option<ProviderInfo>,
}

/// `[listen]`, validated.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// Addresses to bind.
    pub addresses: Vec<SocketAddr>,
    /// Accept direct TLS (ALPN "postgresql").
    pub direct_tls: bool,
    /// Accept plaintext CancelRequests.
    pub plaintext_cancel: bool,
    /// Concurrent connection limit.
    pub max_connections: usize,
    /// Accept to end of client TLS handshake.
    pub handshake_timeout: Duration,
    /// End of TLS handshake to end of authentication.
    pub startup_timeout: Duration,
    /// Drain time on SIGTERM.
    pub shutdown_timeout: Duration,
    /// Set when clients must present a certificate (`listen.client_ca`).
    pub client_certs: Option<ClientCertPolicy>,
    /// Accept an expired CRL (`tls.crl_allow_expired`).
    pub allow_expired_crl: bool,
    /// OCSP for client certificates.
    pub client_ocsp: Option<Arc<OcspChecker>>,
}

/// What is required of client certificates.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertPolicy {
    /// Whether the StartupMessage's user must match the certificate.
    pub user: ClientCertUser,
}

/// `[upstream]`, validated.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Host name or address, resolved at every connect.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Name the certificate must match.
    pub server_name: String,
    /// SSLRequest or direct TLS.
    pub negotiation: TlsNegotiation,
    /// Per-address bound on connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Accept an expired CRL (`tls.crl_allow_expired`).
    pub allow_expired_crl: bool,
    /// OCSP for the server's certificate.
    pub ocsp: Option<Arc<OcspChecker>>,
}

impl Settings {
    /// Validates `loaded` and builds the TLS contexts, reporting every problem found. `fips`
    /// is the provider activated at start ([`crate::fips::activate`]), if FIPS mode is on.
    pub fn from_config(
        loaded: &LoadedConfig,
        fips: Option<&ProviderInfo>,
    ) -> Result<Settings, Vec<ConfigError>> {
        let raw = &loaded.raw;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut key_error = |key: &str, message: String| {
            errors.push(ConfigError::Key {
                origin: loaded.origin(key),
                key: key.into(),
                message,
            })
        };

        let mut addresses = Vec::new();
        for text in &raw.listen.addresses {
            match text.parse::<SocketAddr>() {
                Ok(a) => addresses.push(a),
                Err(_) => key_error(
                    "listen.addresses",
                    format!(
                        "{text:?} is not an IP socket address such as \"0.0.0.0:5432\" or \"[::]:5432\""
                    ),
                ),
            }
        }
        if raw.listen.addresses.is_empty() {
            key_error("listen.addresses", "at least one address is needed".into());
        }
        if raw.listen.max_connections == 0 {
            key_error("listen.max_connections", "must be at least 1".into());
        }
        for (key, value) in [
            ("listen.handshake_timeout", raw.listen.handshake_timeout),
            ("listen.startup_timeout", raw.listen.startup_timeout),
            ("upstream.connect_timeout", raw.upstream.connect_timeout),
        ] {
            if value.is_zero() {
                key_error(key, "must be longer than 0s".into());
            }
        }
        let host = match raw.upstream.host.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => {
                key_error(
                    "upstream.host",
                    "not set: name the PostgreSQL server (in the config file, \
                     PGT_PROXY__UPSTREAM__HOST or --upstream-host)"
                        .into(),
                );
                String::new()
            }
        };
        if raw.listen.client_ocsp != OcspMode::Off && raw.listen.client_ca.is_none() {
            key_error(
                "listen.client_ocsp",
                "needs listen.client_ca (client certificates are not requested without it)".into(),
            );
        }
        for (key, url) in [
            (
                "listen.client_ocsp_responder",
                &raw.listen.client_ocsp_responder,
            ),
            ("upstream.ocsp_responder", &raw.upstream.ocsp_responder),
        ] {
            if let Some(url) = url
                && !url.starts_with("http://")
            {
                key_error(
                    key,
                    format!(
                        "{url:?} must be an http:// URL (OCSP responses are signed; TLS is not used)"
                    ),
                );
            }
        }
        if raw.upstream.port == 0 {
            key_error("upstream.port", "must be 1 to 65535".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            key_error(
                "log.level",
                format!("{:?} is not a level or filter: {e}", raw.log.level),
            );
        }
        let server_name = raw
            .upstream
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host.clone());

        let tls_error = |errors: &mut Vec<ConfigError>, e: TlsSetupError| {
            let origin = match &e {
                TlsSetupError::Read { key, .. } | TlsSetupError::Content { key, .. } => {
                    loaded.origin(key)
                }
                TlsSetupError::OpenSsl(_) => crate::config::Origin::Default,
            };
            errors.push(ConfigError::Tls {
                origin,
                message: e.to_string(),
            });
        };
        let acceptor = tls::build_acceptor(&raw.listen, &raw.tls, fips.is_some())
            .map_err(|e| tls_error(&mut errors, e))
            .ok();
        let connector = tls::build_connector(&raw.upstream, &raw.tls, fips.is_some())
            .map_err(|e| tls_error(&mut errors, e))
            .ok();
        if let Some(cert) = acceptor.as_ref().and_then(|a| a.context().certificate()) {
            check_validity(
                "listen.certificate",
                cert,
                loaded,
                &mut errors,
                &mut warnings,
            );
        }
        if let Some(cert) = connector.as_ref().and_then(|c| c.context().certificate()) {
            check_validity(
                "upstream.client_certificate",
                cert,
                loaded,
                &mut errors,
                &mut warnings,
            );
        }
        match (acceptor, connector, errors.is_empty()) {
            (Some(acceptor), Some(connector), true) => Ok(Settings {
                listen: ListenSettings {
                    addresses,
                    direct_tls: raw.listen.direct_tls,
                    plaintext_cancel: raw.listen.plaintext_cancel,
                    max_connections: raw.listen.max_connections as usize,
                    handshake_timeout: raw.listen.handshake_timeout,
                    startup_timeout: raw.listen.startup_timeout,
                    shutdown_timeout: raw.listen.shutdown_timeout,
                    client_certs: raw.listen.client_ca.as_ref().map(|_| ClientCertPolicy {
                        user: raw.listen.client_cert_user,
                    }),
                    allow_expired_crl: raw.tls.crl_allow_expired,
                    client_ocsp: OcspChecker::new(
                        raw.listen.client_ocsp,
                        raw.listen.client_ocsp_responder.clone(),
                        raw.tls.ocsp_timeout,
                    )
                    .map(Arc::new),
                },
                upstream: UpstreamSettings {
                    host,
                    port: raw.upstream.port,
                    server_name,
                    negotiation: raw.upstream.tls_negotiation,
                    connect_timeout: raw.upstream.connect_timeout,
                    allow_expired_crl: raw.tls.crl_allow_expired,
                    ocsp: OcspChecker::new(
                        raw.upstream.ocsp,
                        raw.upstream.ocsp_responder.clone(),
                        raw.tls.ocsp_timeout,
                    )
                    .map(Arc::new),
                },
                log_level: raw.log.level.clone(),
                log_format: raw.log.format,
                log_target: raw.log.target,
                acceptor,
                connector,
                warnings,
                crl_paths: [&raw.listen.client_crl, &raw.upstream.crl]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
                crl_refresh: raw.tls.crl_refresh,
                fips: fips.cloned(),
            }),
            _ => Err(errors),
        }
    }
}

/// An expired or not-yet-valid certificate of our own is an error (every handshake would
/// fail); one expiring within 30 days is a warning.
fn check_validity(
    key: &'static str,
    cert: &openssl::x509::X509Ref,
    loaded: &LoadedConfig,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) {
    let subject = tls::name_to_string(cert.subject_name());
    match tls::validity(cert) {
        Ok((days, _)) if days < 0 => errors.push(ConfigError::Tls {
            origin: loaded.origin(key),
            message: format!("{key}: certificate {subject} expired {} days ago", -days),
        }),
        Ok((_, false)) => errors.push(ConfigError::Tls {
            origin: loaded.origin(key),
            message: format!("{key}: certificate {subject} is not valid yet"),
        }),
        Ok((days, true)) if days < tls::EXPIRY_WARNING_DAYS => warnings.push(format!(
            "{key}: certificate {subject} expires in {days} days"
        )),
        Ok(_) => {}
        Err(e) => warnings.push(format!("{key}: cannot read validity dates: {e}")),
    }
}
