//! Tagged messages (`tag`, 4-byte length, body) in both directions, and the startup-phase
//! messages the proxy reads: Authentication*, BackendKeyData, SASLInitialResponse.
//!
//! The proxy relays every message unchanged; it parses only what it must act on (which
//! authentication step needs a client answer, which SASL mechanism the client chose, the
//! session's cancel key).

use super::{ProtocolError, be_i32, take_cstr};

/// Message tags the proxy looks at.
pub mod tag {
    /// Backend: Authentication* (request code in the body).
    pub const AUTHENTICATION: u8 = b'R';
    /// Backend: BackendKeyData (pid and cancel key).
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// Backend: ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// Backend: NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// Backend: ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// Backend: ReadyForQuery, the end of the startup phase.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// Backend: NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// Frontend: PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse.
    pub const PASSWORD_MESSAGE: u8 = b'p';
    /// Frontend: Terminate.
    pub const TERMINATE: u8 = b'X';
}

/// The longest frontend message accepted during authentication: PostgreSQL's
/// `PG_MAX_AUTH_TOKEN_LENGTH` (65,535) plus header room.
pub const MAX_FRONTEND_AUTH_MESSAGE: usize = 65_540;
/// The longest backend message accepted during the startup phase. Servers send short
/// messages here (ParameterStatus, notices, errors); 1 MiB bounds a broken or hostile one.
pub const MAX_BACKEND_STARTUP_MESSAGE: usize = 1 << 20;

/// The SASL mechanism whose channel binding cannot cross a TLS-terminating proxy.
pub const SCRAM_SHA_256_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// A framed message: its tag and its body (length field excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The one-byte message type.
    pub tag: u8,
    /// The bytes after the length field.
    pub body: &'a [u8],
}

/// Splits one tagged message off the front of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, or the frame and its total size. A length
/// below 4 or above `max_len` is an error, so a hostile peer cannot make the proxy buffer more.
pub fn parse_frame(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(Frame<'_>, usize)>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let length = be_i32(buf, 1);
    if length < 4 || length as usize > max_len {
        return Err(ProtocolError::InvalidLength {
            length: length.into(),
            min: 4,
            max: max_len,
        });
    }
    let total = length as usize + 1;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            tag: buf[0],
            body: &buf[5..total],
        },
        total,
    )))
}

/// An Authentication* request from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// AuthenticationOk (0).
    Ok,
    /// AuthenticationCleartextPassword (3).
    CleartextPassword,
    /// AuthenticationMD5Password (5).
    Md5Password,
    /// AuthenticationGSS (7).
    Gss,
    /// AuthenticationGSSContinue (8).
    GssContinue,
    /// AuthenticationSSPI (9).
    Sspi,
    /// AuthenticationSASL (10) with its raw mechanism list.
    Sasl(&'a [u8]),
    /// AuthenticationSASLContinue (11) with the server-first-message.
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal (12) with the server-final-message.
    SaslFinal(&'a [u8]),
}

impl Authentication<'_> {
    /// Whether the client answers this request with a message of its own.
    pub fn expects_client_response(&self) -> bool {
        !matches!(self, Authentication::Ok | Authentication::SaslFinal(_))
    }
}

/// Parses the body of an Authentication* message.
pub fn parse_authentication(body: &[u8]) -> Result<Authentication<'_>, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "Authentication",
        reason: "unknown or truncated request",
    };
    if body.len() < 4 {
        return Err(BAD);
    }
    Ok(match be_i32(body, 0) {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => Authentication::Md5Password,
        7 => Authentication::Gss,
        8 => Authentication::GssContinue,
        9 => Authentication::Sspi,
        10 => Authentication::Sasl(&body[4..]),
        11 => Authentication::SaslContinue(&body[4..]),
        12 => Authentication::SaslFinal(&body[4..]),
        _ => return Err(BAD),
    })
}

/// Splits an AuthenticationSASL mechanism list (`name\0 ... \0`) into its names.
pub fn sasl_mechanisms(list: &[u8]) -> Result<Vec<&[u8]>, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "SASL mechanism list",
        reason: "missing terminator",
    };
    let mut names = Vec::new();
    let mut rest = list;
    loop {
        let (name, after) = take_cstr(rest).ok_or(BAD)?;
        if name.is_empty() {
            return Ok(names);
        }
        names.push(name);
        rest = after;
    }
}

/// The mechanism a SASLInitialResponse body selects.
pub fn sasl_initial_mechanism(body: &[u8]) -> Result<&[u8], ProtocolError> {
    take_cstr(body)
        .map(|(name, _)| name)
        .ok_or(ProtocolError::Malformed {
            what: "SASLInitialResponse",
            reason: "missing mechanism name",
        })
}

/// A SASLInitialResponse: the chosen mechanism and its initial data (`None` when the
/// client sent a length of -1).
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&[u8], Option<&[u8]>), ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "SASLInitialResponse",
        reason: "missing mechanism or bad data length",
    };
    let (mechanism, rest) = take_cstr(body).ok_or(BAD)?;
    if rest.len() < 4 {
        return Err(BAD);
    }
    let length = be_i32(rest, 0);
    let data = &rest[4..];
    match length {
        -1 if data.is_empty() => Ok((mechanism, None)),
        n if n >= 0 && n as usize == data.len() => Ok((mechanism, Some(data))),
        _ => Err(BAD),
    }
}

/// The columns of a DataRow body (`None` for NULL).
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "DataRow",
        reason: "column lengths do not match the message",
    };
    if body.len() < 2 {
        return Err(BAD);
    }
    let count = i16::from_be_bytes([body[0], body[1]]);
    let mut rest = &body[2..];
    let mut columns = Vec::new();
    for _ in 0..count.max(0) {
        if rest.len() < 4 {
            return Err(BAD);
        }
        let len = be_i32(rest, 0);
        rest = &rest[4..];
        if len < 0 {
            columns.push(None);
            continue;
        }
        let len = len as usize;
        if rest.len() < len {
            return Err(BAD);
        }
        columns.push(Some(&rest[..len]));
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(BAD);
    }
    Ok(columns)
}

/// A session's cancel credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData<'a> {
    /// Backend process id.
    pub pid: i32,
    /// Secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
    pub key: &'a [u8],
}

/// Parses the body of a BackendKeyData message.
pub fn parse_backend_key_data(body: &[u8]) -> Result<BackendKeyData<'_>, ProtocolError> {
    if body.len() < 4 || !super::startup::CANCEL_KEY_LEN.contains(&(body.len() - 4)) {
        return Err(ProtocolError::Malformed {
            what: "BackendKeyData",
            reason: "the key must be 4 to 256 bytes",
        });
    }
    Ok(BackendKeyData {
        pid: be_i32(body, 0),
        key: &body[4..],
    })
}

/// Follows message boundaries in a relayed byte stream without buffering it.
///
/// The relay feeds it every byte it writes toward the client; at shutdown it tells whether
/// the client has received whole messages only, and how many more bytes complete the current
/// one, so an ErrorResponse can be inserted between messages and never inside one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageTracker {
    /// Header bytes (tag and length) seen of the current message: 0 to 4; 0 with no body
    /// left means the stream is at a boundary.
    header_seen: u8,
    /// The length field's bytes so far.
    length: [u8; 4],
    /// Body bytes still to come of the current message.
    body_left: usize,
}

impl MessageTracker {
    /// Accounts for `data`, the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            if self.header_seen > 0 {
                self.length[usize::from(self.header_seen) - 1] = data[0];
            }
            self.header_seen += 1;
            data = &data[1..];
            if self.header_seen == 5 {
                // A length below 4 is a protocol violation; count it as an empty body so the
                // tracker stays well defined (the client will report the error).
                let length = i32::from_be_bytes(self.length).max(4) as usize;
                self.body_left = length - 4;
                self.header_seen = 0;
            }
        }
    }

    /// Whether every message so far is complete.
    pub fn at_boundary(&self) -> bool {
        self.header_seen == 0 && self.body_left == 0
    }

    /// How many more bytes can be written without passing the next boundary: the rest of the
    /// body, or of the header (whose length field is not known yet).
    pub fn until_boundary(&self) -> usize {
        if self.header_seen > 0 {
            5 - usize::from(self.header_seen)
        } else {
            self.body_left
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_and_their_prefixes() {
        let m = msg(b'R', &[0, 0, 0, 0]);
        for n in 0..m.len() {
            assert_eq!(parse_frame(&m[..n], 100), Ok(None));
        }
        let (f, used) = parse_frame(&m, 100).unwrap().unwrap();
        assert_eq!((f.tag, f.body, used), (b'R', &[0u8, 0, 0, 0][..], 9));
    }

    #[test]
    fn frame_length_limits() {
        assert!(parse_frame(&[b'R', 0, 0, 0, 3], 100).is_err());
        assert!(parse_frame(&[b'R', 0xff, 0xff, 0xff, 0xff], 100).is_err());
        assert!(parse_frame(&[b'R', 0, 0, 0, 101], 100).is_err());
        assert_eq!(parse_frame(&[b'R', 0, 0, 0, 100], 100), Ok(None));
    }

    #[test]
    fn authentication_requests() {
        let sasl = b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        let Authentication::Sasl(list) = parse_authentication(sasl).unwrap() else {
            panic!()
        };
        assert_eq!(
            sasl_mechanisms(list).unwrap(),
            vec![&b"SCRAM-SHA-256-PLUS"[..], b"SCRAM-SHA-256"]
        );
        assert_eq!(parse_authentication(&[0, 0, 0, 0]), Ok(Authentication::Ok));
        assert!(!Authentication::Ok.expects_client_response());
        assert!(!Authentication::SaslFinal(b"").expects_client_response());
        assert!(Authentication::SaslContinue(b"").expects_client_response());
        assert!(parse_authentication(&[0, 0, 0, 6]).is_err());
        assert!(parse_authentication(&[0, 0]).is_err());
        assert!(sasl_mechanisms(b"SCRAM").is_err());
    }

    #[test]
    fn sasl_initial_response_mechanism() {
        let body = b"SCRAM-SHA-256-PLUS\0\0\0\0\x05p=tls";
        assert_eq!(sasl_initial_mechanism(body), Ok(SCRAM_SHA_256_PLUS));
        assert!(sasl_initial_mechanism(b"SCRAM").is_err());
    }

    #[test]
    fn tracker_finds_boundaries_whatever_the_split() {
        let stream = [msg(b'D', b"hello"), msg(b'C', b""), msg(b'Z', b"I")].concat();
        let boundaries = [0, 10, 15, 21];
        for split in 0..=stream.len() {
            let mut t = MessageTracker::default();
            t.feed(&stream[..split]);
            assert_eq!(
                t.at_boundary(),
                boundaries.contains(&split),
                "split at {split}"
            );
            // Writing until_boundary() bytes repeatedly always lands on the next boundary.
            let mut at = split;
            while !t.at_boundary() {
                let n = t.until_boundary();
                assert!(n > 0);
                t.feed(&stream[at..at + n]);
                at += n;
            }
            assert!(boundaries.contains(&at), "split {split} reached {at}");
            t.feed(&stream[at..]);
            assert!(t.at_boundary());
        }
    }

    #[test]
    fn backend_key_data_both_versions() {
        let k = parse_backend_key_data(&[0, 0, 0x10, 0, 1, 2, 3, 4]).unwrap();
        assert_eq!((k.pid, k.key), (4096, &[1u8, 2, 3, 4][..]));
        let long = [[0u8, 0, 0, 1].as_slice(), &[7; 32]].concat();
        assert_eq!(parse_backend_key_data(&long).unwrap().key.len(), 32);
        assert!(parse_backend_key_data(&[0, 0, 0, 1, 2]).is_err());
    }
}
