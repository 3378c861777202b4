//! `pgt-proxy check-config`: the effective configuration, where each value came from, what
//! the certificates say, and every error, as a report for a human.

use std::fmt::Write;

mod connect;
mod fleet;

pub(crate) use connect::connect_all;
use fleet::{describe_fleet, list};

use crate::config::{ConfigError, LoadedConfig};
use crate::fips::ProviderInfo;
use std::sync::Arc;

use crate::scram::query::AuthQuery;
use crate::settings::{Settings, Target};
use crate::tls::describe::{certificate_names, name_to_string, validity};
use crate::tls::groups::{self, Defaults};

/// Key names whose values are secret and printed masked. None of today's keys hold a secret
/// (keys are referenced by path), but a future password-like key must not leak here.
fn is_secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret")
}

/// Builds the report; the boolean is true when the configuration is usable. `fips` is
/// `Some(provider in use, or None)` once FIPS mode was decided.
pub(crate) fn report(
    loaded: Result<&LoadedConfig, &[ConfigError]>,
    settings: Option<Result<&Settings, &[ConfigError]>>,
    fips: Option<Option<&ProviderInfo>>,
) -> (String, bool) {
    let mut out = String::new();
    let loaded = match loaded {
        Ok(l) => l,
        Err(errors) => {
            print_errors(&mut out, errors);
            return (out, false);
        }
    };
    let _ = writeln!(
        out,
        "pgt-proxy {} with {}",
        env!("CARGO_PKG_VERSION"),
        openssl::version::version()
    );
    if loaded.files.is_empty() {
        let _ = writeln!(
            out,
            "configuration files: none (defaults, environment and flags only)"
        );
    } else {
        let _ = writeln!(out, "configuration files, in order:");
        for f in &loaded.files {
            let _ = writeln!(out, "  {}", f.display());
        }
    }
    let _ = writeln!(out, "\neffective configuration:");
    match toml::Table::try_from(&loaded.raw) {
        Ok(table) => {
            for (section, value) in &table {
                let _ = writeln!(out, "[{section}]");
                if let toml::Value::Table(keys) = value {
                    for (name, value) in keys {
                        let key = format!("{section}.{name}");
                        let shown = if is_secret(&key) {
                            "\"********\"".to_owned()
                        } else {
                            value.to_string()
                        };
                        let line = format!("{name} = {shown}");
                        let _ = writeln!(out, "{line:<60} # {}", loaded.origin(&key));
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  (cannot display: {e})");
        }
    }
    let ok = match settings {
        Some(Ok(settings)) => {
            let _ = writeln!(out, "\ncertificates:");
            if let Some(cert) = settings.acceptor.context().certificate() {
                describe_cert(&mut out, "listen.certificate", cert);
            }
            for (prefix, target) in targets(settings) {
                if let Some(cert) = target.connector.context().certificate() {
                    describe_cert(&mut out, &format!("{prefix}.client_certificate"), cert);
                }
            }
            if settings.default.is_some() {
                let _ = writeln!(out, "  upstream.ca: {}", loaded.raw.upstream.ca);
            }
            for (name, u) in &loaded.raw.upstreams {
                let _ = writeln!(out, "  upstreams.{name}.ca: {}", u.ca);
            }
            describe_routes(&mut out, settings);
            describe_fleet(&mut out, settings, &loaded.raw.cluster.ca);
            match fips {
                Some(Some(provider)) => {
                    let _ = writeln!(out, "FIPS mode: active, {provider}");
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "FIPS mode: off (tls.fips = {:?}; kernel FIPS mode {})",
                        String::from(loaded.raw.tls.fips),
                        if crate::fips::kernel_fips_enabled() {
                            "on"
                        } else {
                            "off"
                        }
                    );
                }
            }
            let _ = writeln!(out, "{}", key_exchange(settings, fips.flatten().is_some()));
            describe_auth(&mut out, settings);
            for w in &settings.warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            let _ = writeln!(out, "\nconfiguration OK");
            true
        }
        Some(Err(errors)) => {
            out.push('\n');
            print_errors(&mut out, errors);
            false
        }
        None => true,
    };
    (out, ok)
}

fn describe_cert(out: &mut String, key: &str, cert: &openssl::x509::X509Ref) {
    let subject = name_to_string(cert.subject_name());
    let issuer = name_to_string(cert.issuer_name());
    let names = certificate_names(cert).join(", ");
    let days = validity(cert).map(|(d, _)| d).unwrap_or(0);
    let _ = writeln!(
        out,
        // Settings exist only when the key matched its certificate (IdentitySpec::load).
        "  {key}: subject {subject}; issuer {issuer}; names {names}; expires {} ({days} days); key matches",
        cert.not_after()
    );
}

/// Each upstream with the config prefix of its keys: `[upstream]` first.
/// Which key exchange the legs offer and their lists, for `check-config` and the start log.
pub(crate) fn key_exchange(settings: &Settings, fips: bool) -> String {
    let mut line = format!(
        "key exchange: {}",
        Defaults::for_library(fips).describe(fips)
    );
    let listen = groups::configured(settings.acceptor.context()).unwrap_or("?");
    let _ = write!(line, "; listen.groups = {listen}");
    for (prefix, target) in targets(settings) {
        let list = groups::configured(target.connector.context()).unwrap_or("?");
        let _ = write!(line, "; {prefix}.groups = {list}");
    }
    line
}

fn targets(settings: &Settings) -> Vec<(String, &Arc<Target>)> {
    let mut all: Vec<(String, &Arc<Target>)> = settings
        .default
        .iter()
        .map(|t| ("upstream".to_owned(), t))
        .collect();
    all.extend(
        settings
            .targets
            .iter()
            .map(|(n, t)| (format!("upstreams.{n}"), t)),
    );
    all
}

/// The route table, in the order routes are tried.
fn describe_routes(out: &mut String, settings: &Settings) {
    if settings.route_list.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "
routes (exact server names, then wildcards, then databases):"
    );
    let mut rows: Vec<_> = settings.route_list.iter().collect();
    rows.sort_by_key(|(m, _)| (m.starts_with("database="), m.starts_with("*."), m.clone()));
    for (matches, route) in rows {
        let served = match &route.client {
            Some(_) => "its own certificate and client policy",
            None => "listen.certificate",
        };
        let admits = match &route.allowed_clients {
            Some(nets) => format!("; admits {}", list(nets)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {matches:<40} -> {} ({}:{}); serves {served}{admits}",
            route.target.label(),
            route.target.upstream.host,
            route.target.upstream.port
        );
    }
    let fallback = match &settings.default {
        Some(t) if settings.routes.route(None, None).is_some() => {
            format!("-> default ({}:{})", t.upstream.host, t.upstream.port)
        }
        _ => "refused with 08001 (listen.unrouted = \"reject\")".into(),
    };
    let _ = writeln!(out, "  {:<40} {fallback}", "anything else");
}

/// Comma-separated ranges.
/// The auth mode, the userlist's size, and whether the auth query's user can log in.
fn describe_auth(out: &mut String, settings: &Settings) {
    for (prefix, target) in targets(settings) {
        describe_target_auth(out, settings, &prefix, target);
    }
}

fn describe_target_auth(out: &mut String, settings: &Settings, prefix: &str, target: &Target) {
    let auth = &target.auth;
    let label = if prefix == "upstream" {
        String::new()
    } else {
        format!(" ({prefix})")
    };
    let _ = writeln!(out, "auth{label}: mode {:?}", String::from(auth.mode));
    if auth.mode != crate::config::schema::AuthMode::Scram {
        return;
    }
    let _ = writeln!(
        out,
        "  auth.userlist: {} verifier(s)",
        auth.verifiers.userlist.len()
    );
    if let Some(query) = auth_query(target) {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(query.check()));
        let _ = match result {
            Ok(()) => writeln!(
                out,
                "  auth.query_user \"{}\": logs in (verified TLS)",
                query.user()
            ),
            Err(e) => writeln!(
                out,
                "  auth.query_user \"{}\": cannot log in: {e}",
                query.user()
            ),
        };
    }
    let binding = settings
        .acceptor
        .context()
        .certificate()
        .and_then(crate::scram::keys::endpoint_hash);
    let _ = writeln!(
        out,
        "  channel binding to clients: {}",
        if binding.is_some() {
            "SCRAM-SHA-256-PLUS offered"
        } else {
            "not offered (listen.certificate's signature has no tls-server-end-point hash)"
        }
    );
}

/// The auth query of `target`, set up to be tried once (no process serves with it).
fn auth_query(target: &Target) -> Option<AuthQuery> {
    target.auth.verifiers.query.clone().map(AuthQuery::new)
}

fn print_errors(out: &mut String, errors: &[ConfigError]) {
    let _ = writeln!(out, "{} error(s):", errors.len());
    for e in errors {
        let _ = writeln!(out, "error: {e}");
    }
}
