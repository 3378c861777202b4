//! Who is on the other end of an accepted connection: the socket's peer, or, behind a load
//! balancer that sends a PROXY protocol v2 header (`proxy_protocol = "v2"` on the listener
//! the connection arrived on), the client the header names.
//!
//! The header is mandatory from `listen.trusted_proxies` and refused from anywhere else:
//! there is no "optional" mode, since then any client could choose its own address. The
//! first byte is peeked, not read, so a connection without a header is still a PostgreSQL
//! connection the session can refuse over TLS with a message; a header is read exactly, to
//! its last byte, so what follows is the client's own opening.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::time::{Instant, timeout_at};

use super::ClientError;
use super::socket::ClientIo;
use crate::protocol::proxy::{self, MAX_HEADER, Parsed, ProxyHeaderError};
use crate::settings::ListenSettings;

/// `addr` as the client it is: an IPv4 client of a dual-stack (`[::]`) socket, or one a
/// balancer names in an IPv6 header, arrives as `::ffff:a.b.c.d`, and is judged
/// (`trusted_proxies`, `allowed_clients`, the per-client limits) and logged as `a.b.c.d`, as
/// on an IPv4 socket; `::/0` alone never admits it.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The addresses a connection is judged and logged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addresses {
    /// The client: the header's source, else the socket's peer.
    pub(crate) client: SocketAddr,
    /// The balancer that sent a header, if one did.
    pub(crate) proxy: Option<SocketAddr>,
}

/// What [`identify`] found.
#[derive(Debug)]
pub(crate) struct Identified {
    /// Who the connection is from.
    pub(crate) addresses: Addresses,
    /// `Err` when the connection goes on only to be refused after its TLS handshake (no
    /// header, or an untrusted address without one), so the client hears why.
    pub(crate) admission: Result<(), ClientError>,
}

/// Reads the PROXY header when the listener the connection arrived on wants one
/// (`proxy_v2`); `listen` gives the trusted balancers. `Err` ends the connection now,
/// without a word: a header that is malformed or comes from an untrusted address is not a
/// PostgreSQL client's doing. On a listener without PROXY, a header is not read at all: it
/// is a malformed first packet, and the socket's peer is the client.
pub(crate) async fn identify<S: ClientIo>(
    tcp: &mut S,
    peer: SocketAddr,
    listen: &ListenSettings,
    proxy_v2: bool,
    deadline: Instant,
) -> Result<Identified, ClientError> {
    let direct = Addresses {
        client: peer,
        proxy: None,
    };
    if !proxy_v2 {
        return Ok(Identified {
            addresses: direct,
            admission: Ok(()),
        });
    }
    let within = |limit| ClientError::HandshakeTimeout(limit);
    let mut first = [0u8; 1];
    let peeked = timeout_at(deadline, tcp.peek(&mut first))
        .await
        .map_err(|_| within(listen.handshake_timeout))??;
    if peeked == 0 {
        return Err(ClientError::Empty);
    }
    let trusted = listen
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&peer.ip()));
    match proxy::parse(&first) {
        Err(ProxyHeaderError::Missing) => Ok(Identified {
            addresses: direct,
            admission: Err(if trusted {
                ClientError::MissingProxyHeader(peer.ip())
            } else {
                ClientError::UntrustedProxy(peer.ip())
            }),
        }),
        _ if !trusted => Err(ClientError::SpoofedProxyHeader(peer.ip())),
        _ => {
            let read = read_header(tcp);
            let source = timeout_at(deadline, read)
                .await
                .map_err(|_| within(listen.handshake_timeout))??;
            Ok(Identified {
                addresses: Addresses {
                    client: source.unwrap_or(peer),
                    proxy: Some(peer),
                },
                admission: Ok(()),
            })
        }
    }
}

/// Reads one header, exactly, and returns the client address it gives.
async fn read_header<S: ClientIo>(tcp: &mut S) -> Result<Option<SocketAddr>, ClientError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match proxy::parse(&buf).map_err(ClientError::ProxyHeader)? {
            Parsed::Header { source, .. } => return Ok(source.map(canonical)),
            Parsed::Incomplete { total } => {
                debug_assert!(total <= MAX_HEADER);
                let have = buf.len();
                buf.resize(total, 0);
                let n = tcp.read(&mut buf[have..]).await?;
                if n == 0 {
                    return Err(ClientError::ProxyHeader(ProxyHeaderError::Malformed(
                        format!("the connection closed after {have} bytes of the header"),
                    )));
                }
                buf.truncate(have + n);
            }
        }
    }
}
