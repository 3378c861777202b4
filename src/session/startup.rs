//! The first packet inside TLS, typed once: a StartupMessage (with the parameters the
//! session needs) or an encrypted CancelRequest (libpq 17+).

use tokio::io::AsyncRead;

use super::error::SessionError;
use crate::framed::{FrameReader, ReadError};
use crate::leg::Leg;
use crate::protocol::ProtocolError;
use crate::protocol::startup::{FirstPacket, parse_untagged};

/// What the client sent first inside TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartupPacket {
    /// A session start.
    Startup(Startup),
    /// A cancel request for another session.
    Cancel {
        /// Target backend pid.
        pid: i32,
        /// Its secret key.
        key: Vec<u8>,
    },
}

/// A packet as parsed, before the kinds that are invalid inside TLS are refused.
enum Parsed {
    Packet(StartupPacket),
    /// SSLRequest or GSSENCRequest again.
    Negotiation,
}

/// A StartupMessage: its bytes, forwarded unchanged, and the parameters the proxy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Startup {
    bytes: Vec<u8>,
    /// `user`.
    pub user: Option<String>,
    /// `database` (PostgreSQL's default is the user name).
    pub database: Option<String>,
    /// `application_name`.
    pub application_name: Option<String>,
}

impl Startup {
    /// The packet as the client sent it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Types the packet at the front of `buf` (its whole bytes are `buf[..size]`).
fn parse(buf: &[u8]) -> Result<Option<(Parsed, usize)>, ProtocolError> {
    let Some((packet, size)) = parse_untagged(buf)? else {
        return Ok(None);
    };
    let typed = match packet {
        FirstPacket::Startup(s) => {
            let user = s.get("user");
            Parsed::Packet(StartupPacket::Startup(Startup {
                bytes: buf[..size].to_vec(),
                database: s.get("database").or_else(|| user.clone()),
                application_name: s.get("application_name"),
                user,
            }))
        }
        FirstPacket::Cancel(c) => Parsed::Packet(StartupPacket::Cancel {
            pid: c.pid,
            key: c.key.to_vec(),
        }),
        FirstPacket::SslRequest | FirstPacket::GssEncRequest | FirstPacket::DirectTls => {
            Parsed::Negotiation
        }
    };
    Ok(Some((typed, size)))
}

/// Reads the first packet inside TLS; bytes after it stay in `reader`.
pub(crate) async fn read<C: AsyncRead + Unpin>(
    client: &mut C,
    reader: &mut FrameReader,
) -> Result<StartupPacket, SessionError> {
    match reader.next(client, parse).await {
        Ok(Some(Parsed::Negotiation)) => Err(SessionError::Protocol(
            Leg::Client,
            "SSLRequest or GSSENCRequest received inside TLS".into(),
        )),
        Ok(Some(Parsed::Packet(packet))) => Ok(packet),
        Ok(None) => Err(SessionError::Closed(Leg::Client)),
        Err(ReadError::Io(e)) => Err(SessionError::Io(Leg::Client, e)),
        Err(ReadError::Protocol(ProtocolError::UnsupportedProtocol { major, minor })) => {
            Err(SessionError::UnsupportedProtocol(major, minor))
        }
        Err(ReadError::Protocol(e)) => Err(SessionError::Protocol(
            Leg::Client,
            format!("invalid startup packet: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[u8]) -> Vec<u8> {
        let mut p = ((8 + params.len()) as i32).to_be_bytes().to_vec();
        p.extend_from_slice(&0x0003_0000i32.to_be_bytes());
        p.extend_from_slice(params);
        p
    }

    #[tokio::test]
    async fn a_startup_is_typed_once_and_what_follows_stays_buffered() {
        let mut bytes = startup(b"user\0alice\0application_name\0psql\0\0");
        let packet_len = bytes.len();
        bytes.extend_from_slice(b"pipelined");
        let mut reader = FrameReader::new();
        let packet = read(&mut &bytes[..], &mut reader).await.unwrap();
        let StartupPacket::Startup(s) = packet else {
            panic!("not a startup: {packet:?}");
        };
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.database.as_deref(), Some("alice"), "defaults to the user");
        assert_eq!(s.application_name.as_deref(), Some("psql"));
        assert_eq!(s.as_bytes(), &bytes[..packet_len]);
        assert_eq!(reader.into_rest(), b"pipelined");
    }

    #[tokio::test]
    async fn negotiation_inside_tls_and_other_versions_are_refused() {
        let ssl = crate::protocol::startup::SSL_REQUEST;
        let e = read(&mut &ssl[..], &mut FrameReader::new())
            .await
            .unwrap_err();
        assert_eq!(e.refusal().unwrap().sqlstate.code(), "08P01");
        let mut v4 = startup(b"\0");
        v4[4..8].copy_from_slice(&0x0004_0000i32.to_be_bytes());
        let e = read(&mut &v4[..], &mut FrameReader::new())
            .await
            .unwrap_err();
        assert!(matches!(e, SessionError::UnsupportedProtocol(4, 0)));
        assert_eq!(e.refusal().unwrap().sqlstate.code(), "0A000");
    }
}
