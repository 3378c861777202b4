//! SQLSTATE codes that pgt-proxy sends to clients, with the names PostgreSQL's documentation
//! (Appendix A) gives them.

/// A five-character SQLSTATE code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(pub &'static str);

impl SqlState {
    /// The code as text, e.g. `"08001"`.
    pub fn code(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// 08001 sqlclient_unable_to_establish_sqlconnection: the upstream leg failed.
pub const UNABLE_TO_CONNECT: SqlState = SqlState("08001");
/// 08P01 protocol_violation: the client or server broke the protocol.
pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
/// 28000 invalid_authorization_specification: refused before authentication.
pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
/// 53300 too_many_connections.
pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
/// 57P01 admin_shutdown.
pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
/// 0A000 feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
/// 08006 connection_failure: a leg timed out or broke during start-up.
pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
/// XX000 internal_error.
pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
