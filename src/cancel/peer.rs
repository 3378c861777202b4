//! Forwarding a CancelRequest to the replica whose key it carries: over verified TLS, as
//! an encrypted CancelRequest, after a PROXY v2 header with the original client's address
//! when the fleet's listeners take them (the peer then judges and logs the client, not us).
//! The peer's certificate is verified like an upstream's: chain against `cluster.ca`, host
//! name against the peer's configured address.

use std::net::SocketAddr;

use zeroize::Zeroizing;

use super::CancelKey;
use crate::protocol::proxy;
use crate::settings::Peer;
use crate::tls::connector::Connector;
use crate::upstream::{self, UpstreamError};

/// Sends `pid` and `key` (the hop bit already set) to `peer`, for a request from `client`
/// (its address, and whether to send it in a PROXY header); the peer's address on success.
pub(super) async fn forward(
    peer: &Peer,
    connector: &Connector,
    client: (SocketAddr, bool),
    pid: i32,
    key: &[u8],
) -> Result<SocketAddr, UpstreamError> {
    let (from, proxy_header) = client;
    let preface = |to: SocketAddr| {
        if proxy_header {
            proxy::encode(from, to)
        } else {
            Vec::new()
        }
    };
    let mut reached = upstream::connect_with(&peer.endpoint, connector, preface).await?;
    let request = CancelKey {
        pid,
        key: Zeroizing::new(key.to_vec()),
    };
    let addr = reached.addr;
    super::deliver(&mut reached.stream, &request, peer.endpoint.connect_timeout)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    Ok(addr)
}
