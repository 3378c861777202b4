//! SQLSTATE codes: the ones pgt-proxy sends to clients, with the names PostgreSQL's
//! documentation (Appendix A) gives them, and codes read from a server's ErrorResponse.

use std::fmt;

/// A five-character SQLSTATE code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// A code from its text; a constant with the wrong length does not compile.
    pub const fn new(code: &'static str) -> Self {
        let b = code.as_bytes();
        assert!(b.len() == 5, "a SQLSTATE has five characters");
        Self([b[0], b[1], b[2], b[3], b[4]])
    }

    /// A code received from a peer: five ASCII letters or digits, else `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let b: [u8; 5] = text.as_bytes().try_into().ok()?;
        b.iter().all(u8::is_ascii_alphanumeric).then_some(Self(b))
    }

    /// The code as text, e.g. `"08001"`.
    pub fn code(&self) -> &str {
        // Always ASCII: `new` takes a &str and `parse` checks.
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.code())
    }
}

/// 08001 sqlclient_unable_to_establish_sqlconnection: the upstream leg failed.
pub const UNABLE_TO_CONNECT: SqlState = SqlState::new("08001");
/// 08P01 protocol_violation: the client or server broke the protocol.
pub const PROTOCOL_VIOLATION: SqlState = SqlState::new("08P01");
/// 28000 invalid_authorization_specification: refused before authentication.
pub const INVALID_AUTHORIZATION: SqlState = SqlState::new("28000");
/// 53300 too_many_connections.
pub const TOO_MANY_CONNECTIONS: SqlState = SqlState::new("53300");
/// 57P01 admin_shutdown.
pub const ADMIN_SHUTDOWN: SqlState = SqlState::new("57P01");
/// 0A000 feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState::new("0A000");
/// 28P01 invalid_password: a wrong password (PostgreSQL's answer, which the proxy gives too).
pub const INVALID_PASSWORD: SqlState = SqlState::new("28P01");
/// XX000 internal_error.
pub const INTERNAL_ERROR: SqlState = SqlState::new("XX000");
/// 08006 connection_failure: a leg timed out or broke during start-up.
pub const CONNECTION_FAILURE: SqlState = SqlState::new("08006");
/// 22023 invalid_parameter_value: a startup parameter the server would refuse too.
pub const INVALID_PARAMETER_VALUE: SqlState = SqlState::new("22023");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_codes_only() {
        assert_eq!(
            SqlState::parse("28P01").map(|s| s.to_string()),
            Some("28P01".into())
        );
        assert_eq!(SqlState::parse("2800"), None);
        assert_eq!(SqlState::parse("28\0P1"), None);
        assert_eq!(SqlState::parse("é2800"), None);
    }
}
