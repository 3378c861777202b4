//! ErrorResponse: what the proxy tells a client it refuses ([`Refusal`], encoded by
//! [`encode_fatal`]), and reading the SQLSTATE and message of one the server sent.

use super::sqlstate::SqlState;
use super::take_cstr;

/// Field type bytes of ErrorResponse/NoticeResponse.
mod field {
    pub(super) const SEVERITY: u8 = b'S';
    pub(super) const SEVERITY_NONLOCALIZED: u8 = b'V';
    pub(super) const CODE: u8 = b'C';
    pub(super) const MESSAGE: u8 = b'M';
    pub(super) const DETAIL: u8 = b'D';
    pub(super) const HINT: u8 = b'H';
}

/// What a refused client is told: the fields of the FATAL ErrorResponse the proxy sends.
/// Every error that can end a session produces one (or says it has nothing to tell), and the
/// session's log line records the SQLSTATE of the same value, so the log and the client
/// always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The SQLSTATE (`C` field).
    pub sqlstate: SqlState,
    /// The primary message (`M`), which psql prints after `FATAL:`.
    pub message: String,
    /// Printed as `DETAIL:`.
    pub detail: Option<String>,
    /// Printed as `HINT:`.
    pub hint: Option<String>,
}

impl Refusal {
    /// A refusal with a code and a message only.
    pub fn new(sqlstate: SqlState, message: impl Into<String>) -> Self {
        Self {
            sqlstate,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds a DETAIL.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a HINT.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Encodes a refusal as a FATAL ErrorResponse (the proxy only ever sends fatal errors: each
/// one ends the connection).
pub fn encode_fatal(refusal: &Refusal) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + refusal.message.len());
    push_field(&mut body, field::SEVERITY, "FATAL");
    push_field(&mut body, field::SEVERITY_NONLOCALIZED, "FATAL");
    push_field(&mut body, field::CODE, refusal.sqlstate.code());
    push_field(&mut body, field::MESSAGE, &refusal.message);
    if let Some(detail) = &refusal.detail {
        push_field(&mut body, field::DETAIL, detail);
    }
    if let Some(hint) = &refusal.hint {
        push_field(&mut body, field::HINT, hint);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(super::message::tag::ERROR_RESPONSE);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Appends one field; a NUL inside the text would end the field early, so it is replaced.
fn push_field(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(text.bytes().map(|b| if b == 0 { b'?' } else { b }));
    out.push(0);
}

/// The SQLSTATE (`C` field) of an ErrorResponse body, if present and printable.
pub fn sqlstate_of(body: &[u8]) -> Option<String> {
    field_of(body, field::CODE)
}

/// The message (`M` field) of an ErrorResponse body.
pub fn message_of(body: &[u8]) -> Option<String> {
    field_of(body, field::MESSAGE)
}

fn field_of(body: &[u8], kind: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&k, after)) = rest.split_first() {
        if k == 0 {
            return None;
        }
        let (value, after) = take_cstr(after)?;
        if k == kind {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::parse_frame;
    use crate::protocol::sqlstate::TOO_MANY_CONNECTIONS;

    #[test]
    fn fatal_round_trip() {
        let bytes = encode_fatal(
            &Refusal::new(TOO_MANY_CONNECTIONS, "too many\0connections").hint("later"),
        );
        let (frame, used) = parse_frame(&bytes, 1000).unwrap().unwrap();
        assert_eq!((frame.tag, used), (b'E', bytes.len()));
        assert_eq!(sqlstate_of(frame.body).as_deref(), Some("53300"));
        assert_eq!(
            message_of(frame.body).as_deref(),
            Some("too many?connections")
        );
        assert!(frame.body.ends_with(b"Hlater\0\0"));
    }

    #[test]
    fn truncated_fields_yield_none() {
        assert_eq!(sqlstate_of(b"SFATAL\0C0800"), None);
        assert_eq!(sqlstate_of(b""), None);
    }
}
