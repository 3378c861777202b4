//! The PROXY protocol v2 header a load balancer (HAProxy, AWS NLB) sends before the client's
//! own bytes, carrying the client's address: pure functions over bytes, no IO.
//!
//! [`parse`] says how many bytes the header needs in total before it can be judged, so the
//! caller reads exactly the header and nothing of the PostgreSQL bytes behind it. The
//! header's fields are decoded by the maintained `ppp` crate; the framing, bounds and what
//! the proxy accepts are decided here. A v1 (text) header is refused: balancers that can send
//! one can send v2, and v2 has no text to mis-parse.

use std::net::SocketAddr;

use ppp::v2::{Addresses, Builder, Command, Header, Protocol, Version};

/// The v2 signature, the header's first 12 bytes.
pub const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part: signature, version and command, family and protocol, length.
pub const FIXED_LEN: usize = 16;
/// Longest header accepted (addresses plus TLVs). The format allows 64 KiB; balancers send
/// well under 300 bytes (AWS NLB's TLVs included), and a connection must not make the proxy
/// buffer more than this before a single PostgreSQL byte.
pub const MAX_HEADER: usize = FIXED_LEN + 1024;
/// How a v1 header starts.
const V1_START: &[u8] = b"PROXY ";

/// The outcome of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The header is not complete: read until the buffer holds `total` bytes (never more,
    /// since the PostgreSQL bytes follow).
    Incomplete {
        /// Bytes needed in total, from the header's first.
        total: usize,
    },
    /// A complete header of `len` bytes.
    Header {
        /// Its length: the PostgreSQL bytes start after it.
        len: usize,
        /// The client's address, for a PROXY command over IPv4 or IPv6; `None` for a LOCAL
        /// command (the balancer's own health check) or an address family without one
        /// (unspecified, UNIX), where the socket's own peer stands.
        source: Option<SocketAddr>,
    },
}

/// Why the first bytes are not an acceptable PROXY v2 header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The bytes do not start with the v2 signature (the client spoke PostgreSQL or TLS).
    #[error("no PROXY protocol v2 header")]
    Missing,
    /// A v1 (text) header.
    #[error(
        "sent a PROXY protocol v1 header; only v2 is accepted (listen.proxy_protocol = \"v2\")"
    )]
    Version1,
    /// The advertised length is beyond [`MAX_HEADER`].
    #[error("sent a PROXY header of {0} bytes, more than the {MAX_HEADER} accepted")]
    TooLong(usize),
    /// The signature is right but a field is not.
    #[error("sent a malformed PROXY v2 header: {0}")]
    Malformed(String),
}

/// Judges `buf`, the bytes read so far from a connection that must start with a header.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let head = &buf[..buf.len().min(SIGNATURE.len())];
    if !SIGNATURE.starts_with(head) {
        let v1 = &buf[..buf.len().min(V1_START.len())];
        return Err(if !v1.is_empty() && V1_START.starts_with(v1) {
            ProxyHeaderError::Version1
        } else {
            ProxyHeaderError::Missing
        });
    }
    if buf.len() < FIXED_LEN {
        return Ok(Parsed::Incomplete { total: FIXED_LEN });
    }
    let total = FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > MAX_HEADER {
        return Err(ProxyHeaderError::TooLong(total));
    }
    if buf.len() < total {
        return Ok(Parsed::Incomplete { total });
    }
    let header =
        Header::try_from(&buf[..total]).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    let source = match (header.command, header.addresses) {
        (Command::Local, _) => None,
        (Command::Proxy, Addresses::IPv4(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => None,
    };
    Ok(Parsed::Header { len: total, source })
}

/// A v2 PROXY header for a TCP connection from `source` to `destination` (both of one
/// family; an IPv4 address is mapped into IPv6 when the other is IPv6).
pub fn encode(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let pair = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => (SocketAddr::V4(s), SocketAddr::V4(d)),
        (s, d) => (v6(s), v6(d)),
    };
    let addresses: Addresses = pair.into();
    // Building a header of two addresses writes into a Vec and cannot fail; if it ever did,
    // an empty preface makes the peer refuse the connection, which is safe.
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .build()
        .unwrap_or_default()
}

fn v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::from((a.ip().to_ipv6_mapped(), a.port())),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_header_gives_the_client_address_and_its_length() {
        let mut bytes = encode(addr("192.0.2.7:40001"), addr("10.0.0.1:5432"));
        let len = bytes.len();
        bytes.extend_from_slice(&[0, 0, 0, 8, 4, 210, 22, 47]);
        let source = Some(addr("192.0.2.7:40001"));
        assert_eq!(parse(&bytes), Ok(Parsed::Header { len, source }));
        let six = encode(addr("[2001:db8::5]:1"), addr("[2001:db8::1]:5432"));
        let source = Some(addr("[2001:db8::5]:1"));
        let len = six.len();
        assert_eq!(parse(&six), Ok(Parsed::Header { len, source }));
    }

    #[test]
    fn every_prefix_asks_for_exactly_the_rest() {
        let bytes = encode(addr("192.0.2.7:40001"), addr("10.0.0.1:5432"));
        for cut in 0..bytes.len() {
            let want = if cut < FIXED_LEN {
                FIXED_LEN
            } else {
                bytes.len()
            };
            assert_eq!(
                parse(&bytes[..cut]),
                Ok(Parsed::Incomplete { total: want }),
                "{cut}"
            );
        }
    }

    #[test]
    fn local_has_no_source_and_postgres_or_v1_are_not_headers() {
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Header {
                len: 16,
                source: None
            })
        );
        let ssl_request = [0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(parse(&ssl_request), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(&[0x16, 3, 1]), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"PRO"), Err(ProxyHeaderError::Version1));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(ProxyHeaderError::Version1)
        );
    }

    #[test]
    fn bad_fields_and_lengths_are_refused() {
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong(16 + 65535)));
        let mut version = SIGNATURE.to_vec();
        version.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert!(matches!(
            parse(&version),
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), Err(ProxyHeaderError::Malformed(_))));
    }
}
