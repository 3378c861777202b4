//! `[[routes]]`, validated into the route table: each route's match (a server name or a
//! database), the upstream it leads to, and, when it sets any, its own client-side policy
//! (certificate, client CA and CRL, certificate-user rule, OCSP) in a context of its own,
//! which the SNI callback switches to.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use openssl::ssl::{SslAcceptor, SslContextRef};

use super::tls::{self, ClientKeys};
use super::{ClientCertPolicy, Problems, Target, key_name};
use crate::config::schema::{RawConfig, RawRoute};
use crate::routing::{self, Route, RouteTable};
use crate::tls::acceptor::SniSwitch;
use crate::tls::revocation::ocsp::OcspChecker;

/// What a route leads to.
pub(crate) struct RouteTarget {
    /// The upstream.
    pub target: Arc<Target>,
    /// Its own client-side policy, when it sets any key of one.
    pub client: Option<OwnPolicy>,
    /// `allowed_clients` of the route, within `listen.allowed_clients`; `None`: no narrower.
    pub allowed_clients: Option<Vec<ipnet::IpNet>>,
}

impl RouteTarget {
    /// Whether the route admits a client from `ip` (`[listen]` has admitted it already).
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        self.allowed_clients
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

/// A route's own client-side policy.
pub(crate) struct OwnPolicy {
    acceptor: SslAcceptor,
    client_certs: Option<ClientCertPolicy>,
    client_ocsp: Option<Arc<OcspChecker>>,
}

impl OwnPolicy {
    /// As a [`ClientPolicy`].
    pub fn as_policy(&self) -> ClientPolicy<'_> {
        ClientPolicy {
            client_certs: self.client_certs,
            client_ocsp: self.client_ocsp.as_deref(),
            context: self.acceptor.context(),
        }
    }
}

/// The client-side checks a connection gets, from `[listen]` or its route.
pub(crate) struct ClientPolicy<'a> {
    /// Client certificates required, and the user rule.
    pub client_certs: Option<ClientCertPolicy>,
    /// OCSP for them.
    pub client_ocsp: Option<&'a OcspChecker>,
    /// The context the connection was served with (its trust store checks OCSP answers).
    pub context: &'a SslContextRef,
}

/// The route table, the routes in order (for `check-config`), and the SNI switch to the
/// routes' own contexts.
pub(super) type Built = (
    RouteTable<Arc<RouteTarget>>,
    Vec<(String, Arc<RouteTarget>)>,
    Option<SniSwitch>,
);

/// Validates every route and builds the table.
pub(super) fn table(
    raw: &RawConfig,
    targets: &BTreeMap<String, Arc<Target>>,
    default: Option<&Arc<Target>>,
    fips: bool,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Built {
    let mut routes = Vec::new();
    let mut list = Vec::new();
    let mut names = HashSet::new();
    let mut databases = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        let Some(matches) = check_match(&p, r, &mut names, &mut databases, problems) else {
            continue;
        };
        let Some(target) = targets.get(&r.upstream) else {
            problems.key(
                key_name(&p, "upstream"),
                format!(
                    "{:?} is not an upstream: define [upstreams.{}]",
                    r.upstream, r.upstream
                ),
            );
            continue;
        };
        let client = own_policy(&p, r, raw, fips, problems, warnings);
        check_certificate_covers(&p, r, client.as_ref(), raw, problems);
        let allowed_clients = r
            .allowed_clients
            .as_ref()
            .map(|list| super::cidrs(key_name(&p, "allowed_clients"), list, problems));
        let route = Arc::new(RouteTarget {
            target: Arc::clone(target),
            client,
            allowed_clients,
        });
        routes.push(Route {
            server_name: r.server_name.as_deref().map(routing::normalize),
            database: r.database.clone(),
            target: Arc::clone(&route),
        });
        list.push((matches, route));
    }
    let default_route = (raw.listen.unrouted == crate::config::schema::Unrouted::Default)
        .then(|| default.cloned())
        .flatten()
        .map(|target| {
            Arc::new(RouteTarget {
                target,
                client: None,
                allowed_clients: None,
            })
        });
    let table = RouteTable::new(&routes, default_route);
    let switch_table = table.clone();
    let sni: Option<SniSwitch> = routes.iter().any(|r| r.target.client.is_some()).then(|| {
        Arc::new(move |name: &str| {
            let route = switch_table.by_server_name(Some(name))?;
            route
                .client
                .as_ref()
                .map(|c| c.acceptor.context().to_owned())
        }) as SniSwitch
    });
    (table, list, sni)
}

/// Checks what a route matches; returns it as shown in the route table.
fn check_match(
    p: &str,
    r: &RawRoute,
    names: &mut HashSet<String>,
    databases: &mut HashSet<String>,
    problems: &mut Problems,
) -> Option<String> {
    match (&r.server_name, &r.database) {
        (Some(name), None) => {
            if !routing::valid_pattern(name.strip_suffix('.').unwrap_or(name)) {
                problems.key(
                    key_name(p, "server_name"),
                    format!("{name:?} is not a host name or \"*.\" followed by one"),
                );
                return None;
            }
            if !names.insert(routing::normalize(name)) {
                problems.key(
                    key_name(p, "server_name"),
                    format!("{name:?} has a route already"),
                );
                return None;
            }
            Some(name.clone())
        }
        (None, Some(db)) => {
            if !databases.insert(db.clone()) {
                problems.key(
                    key_name(p, "database"),
                    format!("{db:?} has a route already"),
                );
                return None;
            }
            Some(format!("database={db}"))
        }
        _ => {
            problems.key(
                key_name(p, "server_name"),
                "a route matches either a server_name or a database: set exactly one",
            );
            None
        }
    }
}

/// The route's own context, when it sets a certificate or any client-certificate key.
fn own_policy(
    p: &str,
    r: &RawRoute,
    raw: &RawConfig,
    fips: bool,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<OwnPolicy> {
    let l = &raw.listen;
    let sets_any = r.certificate.is_some()
        || r.private_key.is_some()
        || r.client_ca.is_some()
        || r.client_crl.is_some()
        || r.client_cert_user.is_some()
        || r.client_ocsp.is_some();
    if !sets_any {
        return None;
    }
    if r.server_name.is_none() {
        problems.key(
            key_name(p, "database"),
            "only a server_name route can have its own certificate or client-certificate keys: \
             the TLS handshake is over before the database is known",
        );
        return None;
    }
    let (certificate, private_key) = match (&r.certificate, &r.private_key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => (&l.certificate, &l.private_key),
        _ => {
            problems.key(
                key_name(p, "certificate"),
                format!("{p}.certificate and {p}.private_key must be set together"),
            );
            return None;
        }
    };
    // A route with its own CA has its own CRLs (or none); one without inherits both.
    let (client_ca, client_crl) = match &r.client_ca {
        Some(ca) => (Some(ca), r.client_crl.as_ref()),
        None => (
            l.client_ca.as_ref(),
            r.client_crl.as_ref().or(l.client_crl.as_ref()),
        ),
    };
    let client_ocsp = r.client_ocsp.unwrap_or(l.client_ocsp);
    let keys = ClientKeys {
        prefix: p,
        certificate,
        private_key,
        client_ca,
        client_crl,
        client_ocsp,
    };
    let acceptor = tls::acceptor(&keys, raw, fips, None, problems, warnings)?;
    Some(OwnPolicy {
        acceptor,
        client_certs: client_ca.map(|_| ClientCertPolicy {
            user: r.client_cert_user.unwrap_or(l.client_cert_user),
        }),
        client_ocsp: OcspChecker::new(
            client_ocsp,
            l.client_ocsp_responder.clone(),
            raw.tls.ocsp_timeout,
        )
        .map(Arc::new),
    })
}

/// The certificate a server-name route serves (its own, or `listen.certificate`) must be
/// valid for that name, or every verify-full client of the route fails.
fn check_certificate_covers(
    p: &str,
    r: &RawRoute,
    own: Option<&OwnPolicy>,
    raw: &RawConfig,
    problems: &mut Problems,
) {
    let Some(name) = &r.server_name else { return };
    let cert = match own {
        Some(own) => own.acceptor.context().certificate().map(|c| c.to_owned()),
        None => std::fs::read(&raw.listen.certificate)
            .ok()
            .and_then(|pem| openssl::x509::X509::from_pem(&pem).ok()),
    };
    let Some(cert) = cert else { return };
    // A wildcard route is checked with a name of its one label.
    let sample = match name.strip_prefix("*.") {
        Some(suffix) => format!("pgt-check.{suffix}"),
        None => name.clone(),
    };
    if !crate::tls::describe::covers_host(&cert, routing::normalize(&sample).as_str()) {
        let which = if own.is_some_and(|_| r.certificate.is_some()) {
            format!("{p}.certificate")
        } else {
            "listen.certificate".into()
        };
        let names = crate::tls::describe::certificate_names(&cert).join(", ");
        problems.key(
            key_name(p, "server_name"),
            format!("{which} is not valid for {name:?} (it is for {names}): verify-full clients would refuse it"),
        );
    }
}
