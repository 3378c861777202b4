//! `[cluster]`, validated: this replica's id ([`super::peer_id`]), the peers a cancel
//! request for another replica's session is forwarded to (a table, or one address template,
//! [`super::peer_address`]), the connector that reaches them (their chain verified
//! against `cluster.ca`, the host name against each peer's address, as for an upstream, and
//! our `cluster.certificate` presented as a client), the context a peer's forwarded cancel
//! is accepted under (our certificate, theirs required from `cluster.ca`), and the bounds on
//! forwarding.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::SslContext;
use openssl::x509::store::X509Store;

use super::Problems;
use super::peer_address::PeerAddress;
use crate::config::schema::{RawConfig, TlsNegotiation};
use crate::tls::acceptor::{self, AcceptorSpec, SniSwitch};
use crate::tls::connector::{self, Connector, ConnectorSpec};
use crate::tls::files::KeyedPath;
use crate::tls::groups::Defaults;
use crate::tls::identity::IdentitySpec;
use crate::tls::trust::TrustSpec;
use crate::upstream::Endpoint;

/// The server name a replica sends when it forwards a cancel to a peer. `.invalid` is
/// reserved (RFC 6761): no client or route has a real use for it.
pub(crate) const PEER_SNI: &str = "pgt-proxy-peer.invalid";
/// Highest replica id: 14 bits of a cancel key's pid carry it.
pub const MAX_PEER_ID: u16 = 16383;
/// Bound on reaching a peer (connect, TLS handshake) to forward a cancel.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The replicas of the fleet.
pub(crate) struct ClusterSettings {
    /// This replica's id; 0 is no cluster (keys are relayed unchanged).
    pub peer_id: u16,
    /// The other replicas, by id (`cluster.peers`).
    pub peers: BTreeMap<u16, Peer>,
    /// Or any peer's address from its id (`cluster.peer_address`).
    pub peer_address: Option<PeerAddress>,
    /// Verifies peers and presents `cluster.certificate` to them; built when there are any.
    pub connector: Option<Connector>,
    /// How peers' forwarded cancels are accepted; built when there are peers.
    pub accept: Option<PeerAcceptance>,
    /// `cluster.forward_rate`: forwards per second per client address (at least 1).
    pub forward_rate: u32,
    /// `cluster.max_concurrent_forwards`: forwards under way at once (at least 1).
    pub max_concurrent_forwards: usize,
}

/// What a forwarded cancel is accepted with.
pub(crate) struct PeerAcceptance {
    /// The context a connection that sent [`PEER_SNI`] is switched to: our
    /// `cluster.certificate`, and a client certificate from `cluster.ca` required.
    pub context: SslContext,
    /// `cluster.ca` alone, for TLS clients: what a forwarding peer's chain is verified
    /// against.
    pub store: X509Store,
}

/// One other replica.
#[derive(Clone)]
pub(crate) struct Peer {
    /// The address as configured, for logs and `check-config`.
    pub address: String,
    /// Where it is and the name its certificate must match, as an upstream's are kept.
    pub endpoint: Endpoint,
}

impl ClusterSettings {
    /// Peer `id`'s address and endpoint: from `cluster.peers`, or built from
    /// `cluster.peer_address` (resolved when it is dialled); why not, when neither names it.
    pub(crate) fn peer(&self, id: u16) -> Result<Peer, String> {
        if let Some(peer) = self.peers.get(&id) {
            return Ok(peer.clone());
        }
        let Some(template) = &self.peer_address else {
            return Err("is not in cluster.peers".into());
        };
        let address = template.render(id);
        match endpoint(&address) {
            Some(endpoint) => Ok(Peer { address, endpoint }),
            None => Err(format!(
                "has no usable address: cluster.peer_address gives {address:?}, not HOST:PORT"
            )),
        }
    }

    /// The listener's server-name switch: [`PEER_SNI`] to the cluster context (when peers
    /// are configured), any other name to `routes`' (a route's certificate and policy).
    pub(super) fn sni_switch(&self, routes: Option<SniSwitch>) -> Option<SniSwitch> {
        let Some(accept) = &self.accept else {
            return routes;
        };
        let context = accept.context.clone();
        Some(Arc::new(move |name: &str| {
            // Compared as routes compare names (case, one trailing dot), so no spelling of it
            // escapes either the switch or the session refusal that relies on it.
            if crate::routing::normalize(name) == PEER_SNI {
                return Some(context.clone());
            }
            routes.as_ref().and_then(|switch| switch(name))
        }))
    }
}

/// Validates `[cluster]` and builds the peers' connector. `own` is this replica's id
/// ([`super::peer_id`]), `None` when it could not be found (the problem is recorded).
pub(super) fn cluster(
    raw: &RawConfig,
    own: Option<u16>,
    fips: bool,
    problems: &mut Problems,
) -> ClusterSettings {
    let c = &raw.cluster;
    let found_before = problems.errors.len();
    let peer_id = own.unwrap_or(0);
    if own == Some(0) {
        for (key, verb, set) in [
            ("cluster.peers", "are", !c.peers.is_empty()),
            ("cluster.peer_address", "is", c.peer_address.is_some()),
        ] {
            if set {
                problems.key(
                    key,
                    format!(
                        "{verb} set but cluster.peer_id is 0 (no cluster): give this replica its id"
                    ),
                );
            }
        }
    }
    let peer_address = peer_address(raw, problems);
    let mut peers = BTreeMap::new();
    for (id_text, address) in &c.peers {
        let key = super::key_name("cluster.peers", id_text);
        let Some(id) = id_text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|id| (1..=MAX_PEER_ID).contains(id))
        else {
            problems.key(
                key,
                format!("{id_text:?} is not a peer id (1 to {MAX_PEER_ID})"),
            );
            continue;
        };
        if id == peer_id {
            problems.key(
                key,
                format!("{id} is this replica's own cluster.peer_id; list only the others"),
            );
            continue;
        }
        let Some(endpoint) = endpoint(address) else {
            problems.key(
                key,
                format!("{address:?} is not HOST:PORT, e.g. \"pgt-proxy-2.internal:5432\""),
            );
            continue;
        };
        if peers
            .insert(
                id,
                Peer {
                    address: address.clone(),
                    endpoint,
                },
            )
            .is_some()
        {
            problems.key(key, format!("peer id {id} is listed twice"));
        }
    }
    let (forward_rate, max_concurrent_forwards) = limits(raw, problems);
    if (!peers.is_empty() || peer_address.is_some()) && c.ca.trim() == "system" {
        problems.key(
            "cluster.ca",
            "is \"system\" while cluster.peers or cluster.peer_address are set: any publicly trusted certificate would \
             pass as a replica; name the private CA that issues the replicas' \
             cluster.certificate (a PEM file or directory)",
        );
    }
    let identity = identity(raw, problems);
    let no_peers = peers.is_empty() && peer_address.is_none();
    let (connector, accept) = match (&identity, no_peers) {
        (Some(identity), false) if problems.errors.len() == found_before => {
            build(raw, identity, fips, problems).unzip()
        }
        _ => (None, None),
    };
    ClusterSettings {
        peer_id,
        peers,
        peer_address,
        connector,
        accept,
        forward_rate,
        max_concurrent_forwards,
    }
}

/// `cluster.peer_address`, checked; refused beside `cluster.peers` (one way to name the
/// peers, so no replica is reached at an address the operator did not mean).
fn peer_address(raw: &RawConfig, problems: &mut Problems) -> Option<PeerAddress> {
    let c = &raw.cluster;
    let text = c.peer_address.as_deref()?;
    if !c.peers.is_empty() {
        problems.key(
            "cluster.peer_address",
            "and cluster.peers are both set: name the peers one way, a table of fixed \
             addresses or one address template",
        );
        return None;
    }
    PeerAddress::parse(text, |a| endpoint(a).is_some())
        .map_err(|why| problems.key("cluster.peer_address", why))
        .ok()
}

/// `cluster.forward_rate` and `cluster.max_concurrent_forwards`.
fn limits(raw: &RawConfig, problems: &mut Problems) -> (u32, usize) {
    let c = &raw.cluster;
    for (key, value) in [
        ("cluster.forward_rate", c.forward_rate),
        ("cluster.max_concurrent_forwards", c.max_concurrent_forwards),
    ] {
        if value == 0 {
            problems.key(
                key,
                "must be at least 1 (every cancel for a peer would be dropped)",
            );
        }
    }
    (
        c.forward_rate.max(1),
        c.max_concurrent_forwards.max(1) as usize,
    )
}

/// `cluster.certificate` and `cluster.private_key`, set together or defaulting together to
/// the listener's.
fn identity(raw: &RawConfig, problems: &mut Problems) -> Option<IdentitySpec> {
    let c = &raw.cluster;
    let l = &raw.listen;
    let keyed = |key, path: &PathBuf| KeyedPath {
        key,
        path: path.clone(),
    };
    match (&c.certificate, &c.private_key) {
        (Some(cert), Some(key)) => Some(IdentitySpec {
            certificate: keyed("cluster.certificate", cert),
            private_key: keyed("cluster.private_key", key),
        }),
        (None, None) => Some(IdentitySpec {
            certificate: keyed("listen.certificate", &l.certificate),
            private_key: keyed("listen.private_key", &l.private_key),
        }),
        (Some(_), None) | (None, Some(_)) => {
            problems.key(
                "cluster.certificate",
                "and cluster.private_key must be set together (or neither, for the listener's)",
            );
            None
        }
    }
}

/// The peers' connector (presenting `identity`, sending [`PEER_SNI`]) and the context their
/// forwarded cancels are accepted under, or `None` with the problem recorded.
fn build(
    raw: &RawConfig,
    identity: &IdentitySpec,
    fips: bool,
    problems: &mut Problems,
) -> Option<(Connector, PeerAcceptance)> {
    let trust = TrustSpec {
        ca_key: "cluster.ca",
        ca: raw.cluster.ca.clone(),
        crl: None,
        crl_check: raw.tls.crl_check,
    };
    let spec = ConnectorSpec {
        trust: trust.clone(),
        identity: Some(identity.clone()),
        groups: Defaults::for_library(fips).upstream.to_owned(),
    };
    let acceptor_spec = AcceptorSpec {
        identity: identity.clone(),
        min_tls_version: raw.listen.min_tls_version,
        session_tickets: false,
        client_trust: Some(trust.clone()),
        session_id_context: "pgt-proxy cluster".into(),
        groups: Defaults::for_library(fips).client.to_owned(),
    };
    let built = connector::build(&spec, fips).and_then(|connector| {
        let context = acceptor::build(&acceptor_spec, fips, None)?;
        let store = trust.build_for_clients()?;
        let accept = PeerAcceptance {
            context: context.into_context(),
            store,
        };
        Ok((connector.with_fixed_sni(PEER_SNI), accept))
    });
    built
        .map_err(|e| {
            // The listener's own files are reported once, by the listener.
            if !e.key().is_some_and(|key| key.starts_with("listen.")) {
                problems.file(e.key(), e.to_string());
            }
        })
        .ok()
}

/// `HOST:PORT` (`[v6]:PORT` for an IPv6 address) as a TLS endpoint named by its host.
fn endpoint(address: &str) -> Option<Endpoint> {
    let (host, port) = address.trim().rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some(Endpoint {
        host: host.to_owned(),
        port,
        server_name: host.to_owned(),
        negotiation: TlsNegotiation::Postgres,
        connect_timeout: PEER_CONNECT_TIMEOUT,
        allow_expired_crl: false,
        ocsp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn peer_addresses_are_host_and_port() {
        let e = endpoint("pgt-proxy-2.internal:5432").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("pgt-proxy-2.internal", 5432));
        let e = endpoint("[::1]:6432").unwrap();
        assert_eq!((e.server_name.as_str(), e.port), ("::1", 6432));
        for bad in ["pgt-proxy-2", ":5432", "host:0", "host:x", "a b:1"] {
            assert!(endpoint(bad).is_none(), "{bad}");
        }
    }
}
