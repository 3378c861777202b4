//! Forwarding a CancelRequest to the replica whose key it carries: over verified TLS, as
//! an encrypted CancelRequest, after a PROXY v2 header with the original client's address
//! when the fleet's listeners take them (the peer then judges and logs the client, not us).
//! The peer's certificate is verified like an upstream's: chain against `cluster.ca`, host
//! name against the peer's configured address. We send the peers' server name
//! (`settings`' `PEER_SNI`) and present `cluster.certificate`, which the peer verifies against
//! its `cluster.ca` before it acts on the request ([`super::proof`]).

use std::net::SocketAddr;

use zeroize::Zeroizing;

use super::lookup::{LookupError, PeerLookups};
use super::{CancelKey, Ended};
use crate::protocol::proxy;
use crate::settings::Peer;
use crate::tls::connector::Connector;
use crate::upstream::{self, UpstreamError};

/// Why a cancel did not reach a peer.
#[derive(Debug, thiserror::Error)]
pub(super) enum PeerError {
    /// No verified TLS connection to it.
    #[error("could not be reached: {0}")]
    Unreachable(#[from] UpstreamError),
    /// Its name gave no address, or was not looked up ([`super::lookup`]).
    #[error("could not be reached: {0}")]
    Unresolved(#[from] LookupError),
    /// It broke the connection off instead of closing it after the request: it refused our
    /// certificate (its log says why).
    #[error(
        "refused the forwarded cancel: {0} (is this replica's cluster.certificate issued by the peer's cluster.ca?)"
    )]
    Refused(std::io::Error),
}

/// Sends `pid` and `key` (the hop bit already set) to peer `id`, for a request from `client`
/// (its address, and whether to send it in a PROXY header), its name resolved within
/// `lookups`' bounds; the peer's address on success.
pub(super) async fn forward(
    (id, peer): (u16, &Peer),
    lookups: &PeerLookups,
    connector: &Connector,
    client: (SocketAddr, bool),
    pid: i32,
    key: &[u8],
) -> Result<SocketAddr, PeerError> {
    let (from, proxy_header) = client;
    let preface = |to: SocketAddr| {
        if proxy_header {
            proxy::encode(from, to)
        } else {
            Vec::new()
        }
    };
    let endpoint = &peer.endpoint;
    let addrs = lookups
        .resolve(id, &endpoint.host, endpoint.port, endpoint.connect_timeout)
        .await?;
    let mut reached = upstream::connect_addrs_with(addrs, endpoint, connector, preface).await?;
    let request = CancelKey {
        pid,
        key: Zeroizing::new(key.to_vec()),
    };
    let addr = reached.addr;
    let ended = super::deliver(&mut reached.stream, &request, peer.endpoint.connect_timeout)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    match ended {
        Ended::Closed => Ok(addr),
        Ended::Failed(e) => Err(PeerError::Refused(e)),
    }
}
