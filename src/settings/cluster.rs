//! `[cluster]`, validated: this replica's id and the peers a cancel request for another
//! replica's session is forwarded to, with the connector that verifies them (the chain
//! against `cluster.ca`, the host name against each peer's address, as for an upstream).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Problems, UpstreamSettings};
use crate::config::schema::{RawConfig, TlsNegotiation};
use crate::tls::connector::{self, Connector, ConnectorSpec};
use crate::tls::trust::TrustSpec;

/// Highest replica id: 14 bits of a cancel key's pid carry it.
pub const MAX_PEER_ID: u16 = 16383;
/// Bound on reaching a peer (connect, TLS handshake) to forward a cancel.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The replicas of the fleet.
pub(crate) struct ClusterSettings {
    /// This replica's id; 0 is no cluster (keys are relayed unchanged).
    pub peer_id: u16,
    /// The other replicas, by id.
    pub peers: BTreeMap<u16, Peer>,
    /// Verifies peers; built when there are any.
    pub connector: Option<Connector>,
}

/// One other replica.
pub(crate) struct Peer {
    /// The address as configured, for logs and `check-config`.
    pub address: String,
    /// Where it is and the name its certificate must match, as an upstream's are kept.
    pub endpoint: UpstreamSettings,
}

/// Validates `[cluster]` and builds the peers' connector.
pub(super) fn cluster(raw: &RawConfig, fips: bool, problems: &mut Problems) -> ClusterSettings {
    let c = &raw.cluster;
    if c.peer_id > MAX_PEER_ID {
        problems.key(
            "cluster.peer_id",
            format!(
                "{} is out of range: 1 to {MAX_PEER_ID}, or 0 for no cluster",
                c.peer_id
            ),
        );
    }
    if c.peer_id == 0 && !c.peers.is_empty() {
        problems.key(
            "cluster.peers",
            "are set but cluster.peer_id is 0 (no cluster): give this replica its id",
        );
    }
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
        if id == c.peer_id {
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
    let connector = (!peers.is_empty()).then(|| {
        let spec = ConnectorSpec {
            trust: TrustSpec {
                ca_key: "cluster.ca",
                ca: c.ca.clone(),
                crl: None,
                crl_check: raw.tls.crl_check,
            },
            identity: None,
        };
        connector::build(&spec, fips)
            .map_err(|e| problems.file(e.key(), e.to_string()))
            .ok()
    });
    ClusterSettings {
        peer_id: c.peer_id,
        peers,
        connector: connector.flatten(),
    }
}

/// `HOST:PORT` (`[v6]:PORT` for an IPv6 address) as a TLS endpoint named by its host.
fn endpoint(address: &str) -> Option<UpstreamSettings> {
    let (host, port) = address.trim().rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some(UpstreamSettings {
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
