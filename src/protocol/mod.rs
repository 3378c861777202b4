//! The PostgreSQL wire protocol as far as pgt-proxy needs it: pure functions over bytes.
//!
//! Nothing here performs IO or knows about tokio, so every parser can be unit-tested, property
//! tested and fuzzed on plain byte slices. Parsers return `Ok(None)` when they need more bytes,
//! `Ok(Some(..))` with the number of bytes consumed when a whole item is present, and a
//! [`ProtocolError`] when the bytes can never become valid.
//!
//! - [`startup`]: the first packet a client sends (SSLRequest, GSSENCRequest, CancelRequest,
//!   StartupMessage, or the first byte of a direct-TLS ClientHello).
//! - [`parameters`]: a StartupMessage's parameters judged as the server reads them, and the
//!   packet rebuilt from them.
//! - [`message`]: tagged message framing in both directions and the few startup-phase messages
//!   the proxy must understand (Authentication*, BackendKeyData, SASLInitialResponse).
//! - [`encode`]: the startup-phase messages the proxy writes itself (SCRAM termination, its
//!   own logins and the auth query).
//! - [`scram`]: SCRAM-SHA-256 messages and the verifier format.
//! - [`error_response`]: encoding the ErrorResponse the proxy sends, and reading the SQLSTATE of
//!   one the server sent.
//! - [`sqlstate`]: the SQLSTATE codes the proxy uses.
//! - [`proxy`]: the PROXY protocol v2 header a load balancer sends first (not PostgreSQL, but
//!   the first bytes of a connection behind one).

pub mod encode;
pub mod error_response;
pub mod message;
pub mod parameters;
pub mod proxy;
pub mod scram;
pub mod sqlstate;
pub mod startup;

/// Why a byte sequence can never be a valid protocol item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length field is outside the range the protocol (or our limit) allows.
    #[error("invalid length {length} (allowed {min} to {max})")]
    InvalidLength {
        /// The length as sent.
        length: i64,
        /// Smallest valid length.
        min: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// The 4-byte request code of a startup-phase packet is not one we know.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol {
        /// Major protocol version (high 16 bits of the code).
        major: u16,
        /// Minor protocol version (low 16 bits of the code).
        minor: u16,
    },
    /// The packet's body does not follow the documented layout.
    #[error("invalid {what} layout: {reason}")]
    Malformed {
        /// Which packet or message.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Reads a big-endian `i32` at `at`; the caller has checked the bounds.
fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Splits a NUL-terminated string off the front of `buf`, returning it and the rest.
fn take_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}
