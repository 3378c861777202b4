//! The first packet of a connection: what a client sends before any TLS.
//!
//! A client opens with one of four untagged packets (length, 4-byte code, body) or, for
//! PostgreSQL 17's `sslnegotiation=direct`, straight away with a TLS ClientHello. This module
//! tells them apart and parses the packet; it does not decide what to do with it.
//!
//! The same parsers read the first message inside TLS (a StartupMessage or an encrypted
//! CancelRequest), which has the same untagged layout.

use super::{ProtocolError, be_i32, take_cstr};

/// Request code of SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0, the version every current client speaks.
pub const PROTOCOL_3_0: i32 = 0x0003_0000;
/// The longest startup-phase packet accepted, as PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// The first byte of a TLS handshake record: a direct-TLS ClientHello starts with it. No valid
/// packet does, since it would give a length above [`MAX_STARTUP_PACKET`].
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Shortest and longest cancel keys (protocol 3.0 uses 4 bytes, 3.2 allows up to 256).
pub const CANCEL_KEY_LEN: std::ops::RangeInclusive<usize> = 4..=256;

/// The 8 bytes of an SSLRequest, as the proxy sends it to the upstream.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// One parsed first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket<'a> {
    /// SSLRequest: the client wants TLS negotiated the PostgreSQL way.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption (answered 'N').
    GssEncRequest,
    /// CancelRequest: cancel the query running on another connection.
    Cancel(CancelRequest<'a>),
    /// StartupMessage: a session start (in plaintext, the client did not ask for TLS).
    Startup(StartupMessage<'a>),
    /// The first byte of a TLS record: a direct-TLS ClientHello. No bytes are consumed.
    DirectTls,
}

/// A CancelRequest's target: backend pid and secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest<'a> {
    /// Process id of the backend whose query should be cancelled.
    pub pid: i32,
    /// The secret key from that session's BackendKeyData.
    pub key: &'a [u8],
}

/// A CancelRequest's secret key, owned: zeroed when dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelSecret(zeroize::Zeroizing<Vec<u8>>);

impl CancelSecret {
    /// Copies `key` out of a packet.
    pub fn new(key: &[u8]) -> Self {
        Self(zeroize::Zeroizing::new(key.to_vec()))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for CancelSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelSecret({} bytes)", self.0.len())
    }
}

/// A StartupMessage: protocol version and the parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage<'a> {
    /// Major protocol version (3).
    pub major: u16,
    /// Minor protocol version (0 or 2 today; the server negotiates others down).
    pub minor: u16,
    /// The raw `name\0value\0...\0` list, already checked to be well formed.
    params: &'a [u8],
}

impl<'a> StartupMessage<'a> {
    /// The parameters in the order the client sent them.
    pub fn params(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut rest = self.params;
        std::iter::from_fn(move || {
            let (name, after) = take_cstr(rest)?;
            if name.is_empty() {
                return None;
            }
            let (value, after) = take_cstr(after)?;
            rest = after;
            Some((name, value))
        })
    }

    /// The value of parameter `name`, lossily decoded for logging and messages.
    pub fn get(&self, name: &str) -> Option<String> {
        self.params()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Parses the first packet in `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, or the packet and how many bytes it used
/// (0 for [`FirstPacket::DirectTls`], whose bytes belong to the TLS handshake).
pub fn parse_first_packet(buf: &[u8]) -> Result<Option<(FirstPacket<'_>, usize)>, ProtocolError> {
    match buf.first() {
        None => return Ok(None),
        Some(&TLS_HANDSHAKE_RECORD) => return Ok(Some((FirstPacket::DirectTls, 0))),
        Some(_) => {}
    }
    parse_untagged(buf)
}

/// Parses an untagged startup-phase packet (everything but the direct-TLS case).
///
/// Inside TLS the client may send a StartupMessage or a CancelRequest; callers reject the other
/// kinds there.
pub fn parse_untagged(buf: &[u8]) -> Result<Option<(FirstPacket<'_>, usize)>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = be_i32(buf, 0);
    if length < 8 || length as usize > MAX_STARTUP_PACKET {
        return Err(ProtocolError::InvalidLength {
            length: length.into(),
            min: 8,
            max: MAX_STARTUP_PACKET,
        });
    }
    let length = length as usize;
    if buf.len() < length {
        return Ok(None);
    }
    let code = be_i32(buf, 4);
    let body = &buf[8..length];
    let packet = match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if !body.is_empty() {
                return Err(ProtocolError::Malformed {
                    what: "SSLRequest/GSSENCRequest",
                    reason: "length must be 8",
                });
            }
            if code == SSL_REQUEST_CODE {
                FirstPacket::SslRequest
            } else {
                FirstPacket::GssEncRequest
            }
        }
        CANCEL_REQUEST_CODE => {
            if body.len() < 4 || !CANCEL_KEY_LEN.contains(&(body.len() - 4)) {
                return Err(ProtocolError::Malformed {
                    what: "CancelRequest",
                    reason: "the key must be 4 to 256 bytes",
                });
            }
            FirstPacket::Cancel(CancelRequest {
                pid: be_i32(body, 0),
                key: &body[4..],
            })
        }
        _ => {
            let major = (code as u32 >> 16) as u16;
            let minor = (code as u32 & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            check_params(body)?;
            FirstPacket::Startup(StartupMessage {
                major,
                minor,
                params: body,
            })
        }
    };
    Ok(Some((packet, length)))
}

/// Checks that `body` is `(name\0 value\0)* \0` with nothing after the terminator.
fn check_params(body: &[u8]) -> Result<(), ProtocolError> {
    const fn bad(reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            what: "StartupMessage",
            reason,
        }
    }
    let mut rest = body;
    loop {
        let (name, after) = take_cstr(rest).ok_or(bad("missing terminator"))?;
        if name.is_empty() {
            return if after.is_empty() {
                Ok(())
            } else {
                Err(bad("bytes after the terminator"))
            };
        }
        let (_value, after) = take_cstr(after).ok_or(bad("parameter without a value"))?;
        rest = after;
    }
}

/// Encodes a protocol 3.0 StartupMessage with `params` (name, value pairs).
pub fn encode_startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0; 4];
    out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (name, value) in params {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Encodes a CancelRequest for the upstream.
pub fn encode_cancel_request(pid: i32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.len());
    out.extend_from_slice(&((12 + key.len()) as i32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A StartupMessage as psql 15 sends it (user, database, application_name, client_encoding).
    const PSQL_STARTUP: &[u8] = b"\x00\x00\x00\x54\x00\x03\x00\x00user\0alice\0database\0app\0\
application_name\0psql\0client_encoding\0UTF8\0\0";

    fn startup_bytes(version: i32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Every strict prefix of a valid packet must ask for more bytes, never misparse.
    fn check_all_prefixes(packet: &[u8]) {
        for n in 0..packet.len() {
            assert_eq!(
                parse_first_packet(&packet[..n]),
                Ok(None),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn ssl_request() {
        check_all_prefixes(&SSL_REQUEST);
        assert_eq!(
            parse_first_packet(&SSL_REQUEST),
            Ok(Some((FirstPacket::SslRequest, 8)))
        );
    }

    #[test]
    fn gssenc_request() {
        let p = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(
            parse_first_packet(&p),
            Ok(Some((FirstPacket::GssEncRequest, 8)))
        );
    }

    #[test]
    fn startup_message_from_psql() {
        let mut len_fixed = PSQL_STARTUP.to_vec();
        let n = len_fixed.len() as i32;
        len_fixed[..4].copy_from_slice(&n.to_be_bytes());
        check_all_prefixes(&len_fixed);
        let (packet, used) = parse_first_packet(&len_fixed).unwrap().unwrap();
        assert_eq!(used, len_fixed.len());
        let FirstPacket::Startup(s) = packet else {
            panic!("not a startup: {packet:?}")
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.get("user").as_deref(), Some("alice"));
        assert_eq!(s.get("application_name").as_deref(), Some("psql"));
        assert_eq!(s.get("nothing"), None);
        assert_eq!(s.params().count(), 4);
    }

    #[test]
    fn protocol_3_2_startup_is_accepted() {
        let p = startup_bytes(0x0003_0002, b"user\0bob\0\0");
        let (FirstPacket::Startup(s), _) = parse_first_packet(&p).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((s.major, s.minor), (3, 2));
    }

    #[test]
    fn cancel_requests_of_both_key_sizes() {
        let p = encode_cancel_request(4242, &[1, 2, 3, 4]);
        check_all_prefixes(&p);
        assert_eq!(
            parse_first_packet(&p),
            Ok(Some((
                FirstPacket::Cancel(CancelRequest {
                    pid: 4242,
                    key: &[1, 2, 3, 4]
                }),
                16
            )))
        );
        let long = encode_cancel_request(7, &[9; 32]);
        let (FirstPacket::Cancel(c), used) = parse_first_packet(&long).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!((c.pid, c.key.len(), used), (7, 32, 44));
        let short = encode_cancel_request(7, &[9; 3]);
        assert!(parse_first_packet(&short).is_err());
    }

    #[test]
    fn direct_tls_needs_one_byte_and_consumes_none() {
        assert_eq!(
            parse_first_packet(&[0x16]),
            Ok(Some((FirstPacket::DirectTls, 0)))
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        for len in [0i32, 4, 7, -1, i32::MIN, 10_001, i32::MAX] {
            let mut p = len.to_be_bytes().to_vec();
            p.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
            assert!(
                matches!(
                    parse_first_packet(&p),
                    Err(ProtocolError::InvalidLength { .. })
                ),
                "length {len}"
            );
        }
    }

    #[test]
    fn unknown_versions_and_codes_are_errors() {
        for code in [0x0002_0000, 0x0004_0000, (1234 << 16) | 5681, 0] {
            let p = startup_bytes(code, b"user\0a\0\0");
            assert!(
                matches!(
                    parse_first_packet(&p),
                    Err(ProtocolError::UnsupportedProtocol { .. })
                ),
                "code {code:#x}"
            );
        }
    }

    #[test]
    fn malformed_startup_parameters_are_errors() {
        for body in [
            &b"user\0alice\0"[..],
            b"user\0alice",
            b"user\0alice\0\0extra",
            b"user\0",
            b"",
        ] {
            let p = startup_bytes(PROTOCOL_3_0, body);
            assert!(
                matches!(parse_first_packet(&p), Err(ProtocolError::Malformed { .. })),
                "body {body:?}"
            );
        }
    }

    #[test]
    fn ssl_request_with_a_body_is_an_error() {
        let p = startup_bytes(SSL_REQUEST_CODE, b"xx");
        assert!(parse_first_packet(&p).is_err());
    }

    #[test]
    fn http_and_ssh_are_errors() {
        assert!(parse_first_packet(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        assert!(parse_first_packet(b"SSH-2.0-OpenSSH_9.2\r\n").is_err());
    }
}
