//! The first packet inside TLS, typed once: a StartupMessage, judged as the server will read
//! it (one value per key, the database defaulted, the names cut) and rebuilt from those values
//! for the server, or an encrypted CancelRequest (libpq 17+).

use tokio::io::AsyncRead;

use super::error::SessionError;
use crate::framed::{FrameReader, ReadError};
use crate::leg::Leg;
use crate::protocol::ProtocolError;
use crate::protocol::parameters::{ParamsError, StartupParams, judge};
use crate::protocol::startup::{CancelSecret, FirstPacket, parse_untagged};

/// What the client sent first inside TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartupPacket {
    /// A session start.
    Startup(Startup),
    /// A cancel request for another session.
    Cancel {
        /// Target backend pid.
        pid: i32,
        /// Its secret key.
        key: CancelSecret,
    },
}

/// A packet as parsed, before the kinds that are invalid inside TLS are refused.
enum Parsed {
    Packet(StartupPacket),
    /// A StartupMessage whose parameters cannot be judged.
    Unjudged(ParamsError),
    /// SSLRequest or GSSENCRequest again.
    Negotiation,
}

/// A StartupMessage as judged: the values every check reads, and the packet rebuilt from
/// them, which is all the server ever sees of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Startup {
    /// [`StartupParams::encode`] of `params`.
    bytes: Vec<u8>,
    /// The judged parameters: `params.user` as the server keeps it (never empty),
    /// `params.database` as the server opens it (the user's name when absent or empty).
    pub(super) params: StartupParams,
    /// `application_name`, for the log line.
    pub(super) application_name: Option<String>,
}

impl Startup {
    /// Judges `params` once and rebuilds the packet the server gets.
    fn new(params: StartupParams) -> Self {
        Self {
            bytes: params.encode(),
            application_name: params
                .get("application_name")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            params,
        }
    }

    /// The StartupMessage for the server: rebuilt from the judged values, never the
    /// client's bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Types the packet at the front of `buf` (its whole bytes are `buf[..size]`).
fn parse(buf: &[u8]) -> Result<Option<(Parsed, usize)>, ProtocolError> {
    let Some((packet, size)) = parse_untagged(buf)? else {
        return Ok(None);
    };
    let typed = match packet {
        FirstPacket::Startup(s) => match judge(&s) {
            Ok(params) => Parsed::Packet(StartupPacket::Startup(Startup::new(params))),
            Err(e) => Parsed::Unjudged(e),
        },
        FirstPacket::Cancel(c) => Parsed::Packet(StartupPacket::Cancel {
            pid: c.pid,
            key: CancelSecret::new(c.key),
        }),
        FirstPacket::SslRequest | FirstPacket::GssEncRequest | FirstPacket::DirectTls => {
            Parsed::Negotiation
        }
    };
    Ok(Some((typed, size)))
}

/// Reads the first packet inside TLS; bytes after it stay in `reader`.
pub(super) async fn read<C: AsyncRead + Unpin>(
    client: &mut C,
    reader: &mut FrameReader,
) -> Result<StartupPacket, SessionError> {
    match reader.next(client, parse).await {
        Ok(Some(Parsed::Negotiation)) => Err(SessionError::Protocol(
            Leg::Client,
            "SSLRequest or GSSENCRequest received inside TLS".into(),
        )),
        Ok(Some(Parsed::Packet(packet))) => Ok(packet),
        Ok(Some(Parsed::Unjudged(ParamsError::NoUser))) => Err(SessionError::NoUser),
        Ok(Some(Parsed::Unjudged(e))) => Err(SessionError::Parameters(e)),
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
        assert_eq!(s.params.user, "alice");
        assert_eq!(s.params.database, "alice", "defaults to the user");
        assert_eq!(s.application_name.as_deref(), Some("psql"));
        assert_eq!(reader.into_rest(), b"pipelined");
        // The server gets the judged values, rebuilt.
        assert_eq!(
            s.as_bytes(),
            startup(b"user\0alice\0application_name\0psql\0\0")
        );
        assert_eq!(packet_len, bytes.len() - b"pipelined".len());
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

    #[tokio::test]
    async fn a_repeated_parameter_is_refused_with_08p01_naming_it() {
        let twice = startup(b"user\0alice\0database\0postgres\0user\0victim\0\0");
        let e = read(&mut &twice[..], &mut FrameReader::new())
            .await
            .unwrap_err();
        let refusal = e.refusal().unwrap();
        assert_eq!(refusal.sqlstate.code(), "08P01");
        assert!(
            refusal.message.contains("\"user\" appears more than once"),
            "{e}"
        );
        let nobody = startup(b"database\0postgres\0\0");
        let e = read(&mut &nobody[..], &mut FrameReader::new())
            .await
            .unwrap_err();
        assert!(matches!(e, SessionError::NoUser));
    }
}
