//! One upstream, validated: `[upstream]` or `[upstreams.NAME]`, with its connector (trust,
//! CRLs, client certificate), its OCSP policy, and its `[auth]` (with
//! `[upstreams.NAME.auth]`'s overrides).

use std::sync::Arc;

use super::auth::{self, AuthSettings};
use super::{Problems, check_responder, key_name, tls};
use crate::config::schema::{RawAuth, RawConfig, RawUpstream};
use crate::tls::connector::Connector;
use crate::tls::revocation::ocsp::OcspChecker;
use crate::upstream::Endpoint;

/// Where connections of a route (or of the whole proxy) go.
pub(crate) struct Target {
    /// `[upstreams.NAME]`'s NAME; empty for `[upstream]`.
    pub name: String,
    /// Where it is dialled: host, port, names, timeouts, OCSP.
    pub upstream: Endpoint,
    /// Verifies this upstream.
    pub connector: Connector,
    /// How clients of this upstream log in.
    pub auth: AuthSettings,
}

impl Target {
    /// The name logs and errors use: NAME, or "default" for `[upstream]`.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            "default"
        } else {
            &self.name
        }
    }
}

/// Validates one upstream's keys (under `prefix`: "upstream" or "upstreams.NAME") and builds
/// its connector; `None` when something is wrong (recorded in `problems`).
pub(super) fn target(
    prefix: &str,
    name: &str,
    u: &RawUpstream,
    raw: &RawConfig,
    fips: bool,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<Target> {
    let upstream = endpoint(prefix, u, raw, problems);
    let connector = tls::connector(prefix, u, raw, fips, problems, warnings);
    let merged = merge_auth(&raw.auth, u);
    let has_cert = u.client_certificate.is_some();
    let auth = auth::auth(
        &merged,
        &upstream,
        connector.as_ref(),
        has_cert,
        problems,
        warnings,
    );
    Some(Target {
        name: name.to_owned(),
        upstream,
        connector: connector?,
        auth,
    })
}

/// `[auth]` with the keys `[upstreams.NAME.auth]` sets instead.
fn merge_auth(auth: &RawAuth, u: &RawUpstream) -> RawAuth {
    let mut merged = auth.clone();
    if let Some(o) = &u.auth {
        if let Some(mode) = o.mode {
            merged.mode = mode;
        }
        if o.userlist.is_some() {
            merged.userlist.clone_from(&o.userlist);
        }
        if o.query_user.is_some() {
            merged.query_user.clone_from(&o.query_user);
        }
    }
    merged
}

/// The upstream's host, port, names, timeout and OCSP policy.
fn endpoint(p: &str, u: &RawUpstream, raw: &RawConfig, problems: &mut Problems) -> Endpoint {
    if u.connect_timeout.is_zero() {
        problems.key(key_name(p, "connect_timeout"), "must be longer than 0s");
    }
    let host = match u.host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => {
            let hint = if p == "upstream" {
                " (in the config file, PGT_PROXY__UPSTREAM__HOST or --upstream-host)"
            } else {
                ""
            };
            problems.key(
                key_name(p, "host"),
                format!("not set: name the PostgreSQL server{hint}"),
            );
            String::new()
        }
    };
    check_responder(problems, key_name(p, "ocsp_responder"), &u.ocsp_responder);
    if u.port == 0 {
        problems.key(key_name(p, "port"), "must be 1 to 65535");
    }
    Endpoint {
        server_name: u.tls_server_name.clone().unwrap_or_else(|| host.clone()),
        host,
        port: u.port,
        negotiation: u.tls_negotiation,
        connect_timeout: u.connect_timeout,
        allow_expired_crl: raw.tls.crl_allow_expired,
        ocsp: OcspChecker::new(u.ocsp, u.ocsp_responder.clone(), raw.tls.ocsp_timeout)
            .map(Arc::new),
    }
}
