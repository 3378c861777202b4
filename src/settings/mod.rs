//! What the proxy runs with: the user's configuration validated and resolved into parsed
//! addresses, durations and built TLS contexts.
//!
//! `run`, `check-config` and reload all go through [`Settings::from_config`], so a
//! configuration that passes `check-config` is exactly one the proxy will start with. Settings
//! hold what the user wrote, resolved; what runs from them (each upstream's verifier store)
//! is started by `crate::running`, never while a configuration is checked.
//! [`StartOnly`] holds what a reload cannot change; a reload compares it to say which keys
//! need a restart. [`tls`] turns the TLS keys into the specs the contexts are built from,
//! with the rules that span several keys.

mod auth;
mod cluster;
mod files;
pub(crate) mod listeners;
mod peer_address;
mod peer_id;
mod routes;
mod start;
#[cfg(test)]
pub(crate) mod tests_support;
mod tls;
mod upstream;

pub(crate) use auth::AuthSettings;
pub(crate) use cluster::{ClusterSettings, PEER_SNI, Peer};
pub(crate) use listeners::Listener;
pub(crate) use routes::{ClientPolicy, RouteTarget};
pub use start::StartOnly;
pub(crate) use upstream::Target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use openssl::ssl::SslAcceptor;

use crate::config::schema::{ClientCertUser, ProxyProtocol, RawConfig, Unrouted};
use crate::config::{ConfigError, LoadedConfig, Origin};
use crate::fips::ProviderInfo;
use crate::routing::RouteTable;
use crate::tls::revocation::ocsp::OcspChecker;

/// The validated configuration and the TLS contexts built from it.
pub struct Settings {
    /// What only a restart changes.
    pub start: StartOnly,
    /// Client-facing settings.
    pub listen: ListenSettings,
    /// `[upstream]`: every connection's upstream without `[[routes]]`, the default route
    /// with `listen.unrouted = "default"`; `None` when routes exist and it is not set.
    pub(crate) default: Option<Arc<Target>>,
    /// `[upstreams.NAME]`, by name.
    pub(crate) targets: BTreeMap<String, Arc<Target>>,
    /// `[cluster]`: the peers cancel requests are forwarded to.
    pub(crate) cluster: ClusterSettings,
    /// `[[routes]]` (empty without them).
    pub(crate) routes: RouteTable<Arc<RouteTarget>>,
    /// The routes as configured, for `check-config`.
    pub(crate) route_list: Vec<(String, Arc<RouteTarget>)>,
    /// Presents the proxy's certificate to clients (and switches to a route's by SNI).
    pub acceptor: SslAcceptor,
    /// `[listen]` or some route requires client certificates: handshakes then record why
    /// one failed (without, they skip that per-connection set-up).
    pub(crate) client_certs_anywhere: bool,
    /// `admin.ready_at_max_connections`: `/readyz` stays 200 at the connection limit.
    pub(crate) ready_at_max_connections: bool,
    /// Things worth telling the operator that do not stop the proxy (e.g. a certificate that
    /// expires soon).
    pub warnings: Vec<String>,
    /// The configuration file and its `conf.d` directory, watched for changes.
    pub(crate) config_files: Vec<PathBuf>,
    /// CRL files or directories in use, watched for changes.
    pub crl_paths: Vec<PathBuf>,
    /// Certificate files in use, by role (listen, route, client_ca, upstream_ca,
    /// upstream_client), for the expiry metrics.
    pub(crate) certificate_files: Vec<(&'static str, PathBuf)>,
    /// The proxy's own private key files (listen, routes, upstream client certificates).
    pub(crate) key_files: Vec<PathBuf>,
    /// How often they are checked.
    pub crl_refresh: Duration,
}

/// `[listen]`, validated: what each connection is served with.
#[derive(Debug, Clone)]
pub(crate) struct ListenSettings {
    /// `listen.direct_tls`: the opening may be a TLS ClientHello.
    pub direct_tls: bool,
    /// `listen.plaintext_cancel`: the opening may be a plaintext CancelRequest.
    pub plaintext_cancel: bool,
    /// Accept to end of client TLS handshake.
    pub handshake_timeout: Duration,
    /// End of TLS handshake to end of authentication.
    pub startup_timeout: Duration,
    /// On SIGTERM, how long the listeners keep accepting before they close.
    pub drain_delay: Duration,
    /// Drain time on SIGTERM.
    pub shutdown_timeout: Duration,
    /// Set when clients must present a certificate (`listen.client_ca`).
    pub client_certs: Option<ClientCertPolicy>,
    /// Accept an expired CRL (`tls.crl_allow_expired`).
    pub allow_expired_crl: bool,
    /// OCSP for client certificates.
    pub client_ocsp: Option<Arc<OcspChecker>>,
    /// Client address ranges that may connect.
    pub allowed_clients: Vec<ipnet::IpNet>,
    /// Most concurrent connections per client address (0: no limit).
    pub max_per_client: usize,
    /// `listen.proxy_protocol = "v2"`: every connection to `[listen]`'s addresses starts
    /// with a PROXY v2 header (a `[[listen.extra]]` socket has its own rule: [`Listener`]).
    pub proxy_v2: bool,
    /// The balancers allowed to send it, to any listener that takes one.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What is required of client certificates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientCertPolicy {
    /// Whether the StartupMessage's user must match the certificate.
    pub user: ClientCertUser,
}

/// Collects every problem found, each naming its key and where the key was set.
pub(crate) struct Problems<'a> {
    loaded: &'a LoadedConfig,
    errors: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    fn new(loaded: &'a LoadedConfig) -> Self {
        Self {
            loaded,
            errors: Vec::new(),
        }
    }

    /// Where `key` was set; a route's keys (`routes[N].x`) were set with `routes`, an extra
    /// listener's (`listen.extra[N].x`) with `listen.extra`.
    fn origin(&self, key: &str) -> Origin {
        if key.starts_with("routes[") {
            self.loaded.origin("routes")
        } else if key.starts_with("listen.extra[") {
            self.loaded.origin("listen.extra")
        } else {
            self.loaded.origin(key)
        }
    }

    /// A key's value is wrong.
    pub fn key(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::Key {
            origin: self.origin(key),
            key: key.into(),
            message: message.into(),
        });
    }

    /// A file a key names is unusable; `key` gives the origin.
    pub fn file(&mut self, key: Option<&str>, message: String) {
        let origin = key.map_or(Origin::Default, |k| self.origin(k));
        self.errors.push(ConfigError::Tls { origin, message });
    }
}

impl Settings {
    /// Validates `loaded` and builds the TLS contexts, reporting every problem found. `fips`
    /// is the provider activated at start ([`crate::fips::activate`]), if FIPS mode is on.
    pub fn from_config(
        loaded: &LoadedConfig,
        fips: Option<&ProviderInfo>,
    ) -> Result<Settings, Vec<ConfigError>> {
        let raw = &loaded.raw;
        let fips = fips.is_some();
        let mut problems = Problems::new(loaded);
        let mut warnings = Vec::new();
        let own = peer_id::resolve(raw, &mut problems);
        let start = start::start_only(raw, loaded, own.unwrap_or(0), &mut problems);
        let listen = listen(raw, &mut problems);
        let needs_default = raw.routes.is_empty() || raw.listen.unrouted == Unrouted::Default;
        let default = (needs_default || raw.upstream.host.is_some())
            .then(|| {
                upstream::target(
                    "upstream",
                    "",
                    &raw.upstream,
                    raw,
                    fips,
                    &mut problems,
                    &mut warnings,
                )
            })
            .flatten()
            .map(Arc::new);
        let mut targets = BTreeMap::new();
        for (name, u) in &raw.upstreams {
            let prefix = format!("upstreams.{name}");
            let built = upstream::target(&prefix, name, u, raw, fips, &mut problems, &mut warnings);
            if let Some(t) = built {
                targets.insert(name.clone(), Arc::new(t));
            }
        }
        let (routes, route_list, sni) = routes::table(
            raw,
            &targets,
            default.as_ref(),
            fips,
            &mut problems,
            &mut warnings,
        );
        let cluster = cluster::cluster(raw, own, fips, &mut problems);
        let sni = cluster.sni_switch(sni);
        let keys = tls::ClientKeys::listen(raw);
        let acceptor = tls::acceptor(&keys, raw, fips, sni, &mut problems, &mut warnings);
        match (acceptor, problems.errors.is_empty()) {
            (Some(acceptor), true) => Ok(Settings {
                client_certs_anywhere: listen.client_certs.is_some()
                    || cluster.accept.is_some()
                    || route_list.iter().any(|(_, r)| {
                        r.client
                            .as_ref()
                            .is_some_and(|c| c.as_policy().client_certs.is_some())
                    }),
                start,
                listen,
                cluster,
                ready_at_max_connections: raw.admin.ready_at_max_connections,
                default,
                targets,
                routes,
                route_list,
                acceptor,
                warnings,
                config_files: loaded.watched.clone(),
                crl_paths: files::crl_paths(raw),
                certificate_files: files::certificate_files(raw),
                key_files: files::key_files(raw),
                crl_refresh: raw.tls.crl_refresh,
            }),
            _ => Err(problems.errors),
        }
    }

    /// Every certificate and key file in use (the change watcher reloads when one changes).
    pub(crate) fn identity_files(&self) -> Vec<PathBuf> {
        let certs = self.certificate_files.iter().map(|(_, p)| p.clone());
        certs.chain(self.key_files.iter().cloned()).collect()
    }

    /// The upstream a connection goes to, by the route its server name found at the
    /// handshake (`by_name`) and its database: `None` when routes exist and none matches (and
    /// `listen.unrouted = "reject"`).
    pub(crate) fn route(
        &self,
        by_name: Option<&Arc<RouteTarget>>,
        database: Option<&str>,
    ) -> Option<(Arc<Target>, Option<Arc<RouteTarget>>)> {
        if !self.routes.has_routes() {
            return self.default.clone().map(|t| (t, None));
        }
        self.routes
            .route_after(by_name, database)
            .map(|r| (Arc::clone(&r.target), Some(Arc::clone(r))))
    }

    /// The client-side policy of a connection routed by `route` (its own, or `[listen]`'s).
    pub(crate) fn client_policy<'a>(&'a self, route: Option<&'a RouteTarget>) -> ClientPolicy<'a> {
        match route.and_then(|r| r.client.as_ref()) {
            Some(own) => own.as_policy(),
            None => ClientPolicy {
                client_certs: self.listen.client_certs,
                client_ocsp: self.listen.client_ocsp.as_deref(),
                context: self.acceptor.context(),
            },
        }
    }
}

/// A configuration key's name for messages and origins, made once and kept (keys of named
/// upstreams and routes are made at load time; each distinct name is kept once).
pub(crate) fn key_name(prefix: &str, name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let full = format!("{prefix}.{name}");
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = names.get(full.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(full.into_boxed_str());
    names.insert(leaked);
    leaked
}

fn listen(raw: &RawConfig, problems: &mut Problems) -> ListenSettings {
    let l = &raw.listen;
    for (key, value) in [
        ("listen.handshake_timeout", l.handshake_timeout),
        ("listen.startup_timeout", l.startup_timeout),
    ] {
        if value.is_zero() {
            problems.key(key, "must be longer than 0s");
        }
    }
    check_responder(
        problems,
        "listen.client_ocsp_responder",
        &l.client_ocsp_responder,
    );
    let trusted_proxies = cidrs("listen.trusted_proxies", &l.trusted_proxies, problems);
    let proxy_v2 = l.proxy_protocol == ProxyProtocol::V2;
    let extra_v2 = l
        .extra
        .iter()
        .position(|e| e.proxy_protocol == ProxyProtocol::V2);
    if trusted_proxies.is_empty() {
        let which = match (proxy_v2, extra_v2) {
            (true, _) => Some("listen.proxy_protocol".to_owned()),
            (false, Some(i)) => Some(format!("listen.extra[{i}].proxy_protocol")),
            (false, None) => None,
        };
        if let Some(which) = which {
            problems.key(
                "listen.trusted_proxies",
                format!(
                    "is empty while {which} = \"v2\": every connection would be refused; \
                     list the load balancers' addresses (CIDR)"
                ),
            );
        }
    }
    ListenSettings {
        allowed_clients: cidrs("listen.allowed_clients", &l.allowed_clients, problems),
        proxy_v2,
        trusted_proxies,
        max_per_client: l.max_connections_per_client as usize,
        direct_tls: l.direct_tls,
        plaintext_cancel: l.plaintext_cancel,
        handshake_timeout: l.handshake_timeout,
        startup_timeout: l.startup_timeout,
        drain_delay: l.drain_delay,
        shutdown_timeout: l.shutdown_timeout,
        client_certs: l.client_ca.as_ref().map(|_| ClientCertPolicy {
            user: l.client_cert_user,
        }),
        allow_expired_crl: raw.tls.crl_allow_expired,
        client_ocsp: OcspChecker::new(
            l.client_ocsp,
            l.client_ocsp_responder.clone(),
            raw.tls.ocsp_timeout,
        )
        .map(Arc::new),
    }
}

/// A list of CIDR ranges (`key` names it in errors).
pub(super) fn cidrs(key: &str, list: &[String], problems: &mut Problems) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::with_capacity(list.len());
    for text in list {
        // A bare address is the range of that one address, as in pg_hba.conf's samehost.
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => nets.push(ipv4_mapped_as_ipv4(net)),
            Err(_) => problems.key(
                key,
                format!("{text:?} is not a CIDR range such as \"10.0.0.0/8\" or \"::/0\""),
            ),
        }
    }
    nets
}

/// `::ffff:a.b.c.d/(96+n)` as `a.b.c.d/n`: clients are judged by their IPv4 address even when
/// they arrive on a dual-stack socket (see `client::canonical`), so a range written in the
/// mapped form, as older logs showed such clients, would otherwise never match.
fn ipv4_mapped_as_ipv4(net: ipnet::IpNet) -> ipnet::IpNet {
    if let ipnet::IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(v4net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return ipnet::IpNet::V4(v4net);
    }
    net
}

/// OCSP responses are signed; a responder is reached over plain HTTP.
pub(super) fn check_responder(problems: &mut Problems, key: &str, url: &Option<String>) {
    if let Some(url) = url
        && !url.starts_with("http://")
    {
        problems.key(
            key,
            format!("{url:?} must be an http:// URL (OCSP responses are signed; TLS is not used)"),
        );
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::*;

    #[test]
    fn ranges_in_the_ipv4_mapped_form_are_judged_as_ipv4() {
        for (written, judged) in [
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:192.0.2.7/128", "192.0.2.7/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::/0", "::/0"),
            ("2001:db8::/32", "2001:db8::/32"),
        ] {
            let net = ipv4_mapped_as_ipv4(written.parse().unwrap());
            assert_eq!(net.to_string(), judged, "{written}");
        }
    }
}
