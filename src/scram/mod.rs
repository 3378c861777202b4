//! SCRAM termination (`auth.mode = "scram"`): the proxy authenticates the client itself with
//! SCRAM-SHA-256(-PLUS), bound to its own certificate, and logs in to the server with
//! SCRAM-SHA-256(-PLUS), bound to the server's certificate, from the user's verifier alone:
//! the ClientKey recovered from the client's proof is what it proves upstream. No password
//! is stored anywhere.
//!
//! - [`keys`]: the cryptography (OpenSSL), keys zeroed after use.
//! - [`server`]: the client leg's exchange; [`client`]: the upstream leg's.
//! - [`verifiers`]: where verifiers come from (`auth.userlist`, the auth query), cached
//!   ([`cache`]), each query a unit no client can cut off ([`flights`]).
//! - [`mock`]: the stand-in exchange for a user the proxy cannot check; `timer`: the fine
//!   timer its waits use.
//! - [`upstream_login`]: the proxy's own login to the server (StartupMessage, then SCRAM),
//!   for a terminated session and for the auth query.
//! - [`query`]: the proxy's own connections to the server that run the auth query.
//!
//! The session phase that drives both exchanges over the network is
//! `crate::session::scram_login`.

pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod flights;
pub(crate) mod keys;
pub(crate) mod mock;
pub(crate) mod query;
mod query_answer;
pub(crate) mod server;
#[cfg(test)]
mod tests;
mod timer;
pub(crate) mod upstream_login;
pub(crate) mod verifiers;

use crate::protocol::error_response::Refusal;
use crate::protocol::scram::ScramError;
use crate::protocol::sqlstate::{
    INTERNAL_ERROR, INVALID_AUTHORIZATION, INVALID_PASSWORD, PROTOCOL_VIOLATION, UNABLE_TO_CONNECT,
};

/// Why a terminated SCRAM login failed, on either leg.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScramFailure {
    /// The client's message is malformed or asks for something unsupported.
    #[error("client SCRAM error: {0}")]
    Client(ScramError),
    /// The client can bind but was told the proxy cannot, though the proxy offered -PLUS:
    /// 28000, PostgreSQL's code for it (ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION).
    #[error("client sent gs2 flag \"y\" although SCRAM-SHA-256-PLUS was offered (a downgrade)")]
    Downgrade,
    /// The client's channel-binding data is not this connection's certificate.
    #[error("client's SCRAM channel binding does not match the proxy's certificate")]
    BindingMismatch,
    /// The client's proof is wrong.
    #[error("wrong password (SCRAM proof does not match the verifier)")]
    WrongPassword,
    /// The user has no verifier (`auth.unknown_user = "refuse"`): a mock exchange was run.
    #[error("no verifier for this user (auth.unknown_user = \"refuse\"); a mock exchange was run")]
    UnknownUser,
    /// The verifier the proxy holds is not the server's any more.
    #[error(
        "the server's verifier differs from the proxy's (password changed on the server): \
         update auth.userlist, or wait for auth.cache_ttl"
    )]
    PasswordChanged,
    /// The server offered no -PLUS and `auth.upstream_channel_binding = "require"`.
    #[error(
        "upstream server offered no SCRAM channel binding (auth.upstream_channel_binding = \"require\")"
    )]
    UpstreamNoBinding,
    /// The server asked for a method the proxy cannot answer from a verifier.
    #[error("upstream server asked for {0}; the proxy holds only SCRAM verifiers")]
    UpstreamMethod(String),
    /// The server's SCRAM message is malformed.
    #[error("upstream server SCRAM error: {0}")]
    UpstreamProtocol(ScramError),
    /// The server answered the proof with an `e=` error.
    #[error("upstream server refused the SCRAM proof: {0}")]
    UpstreamRejected(String),
    /// The server's signature does not match the verifier: it does not hold it.
    #[error("upstream server's SCRAM signature does not match the user's verifier")]
    UpstreamSignature,
    /// The verifier could not be fetched.
    #[error("cannot fetch the user's SCRAM verifier: {0}")]
    Lookup(String),
    /// A step was taken out of order (a bug, never a peer's doing).
    #[error("SCRAM exchange steps out of order")]
    OutOfOrder,
    /// OpenSSL failed.
    #[error("SCRAM cryptography failed: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

impl ScramFailure {
    /// What the client is told, with PostgreSQL's words where PostgreSQL has them. Whatever
    /// tells a user the proxy cannot check (unknown, stale, not fetched) gets the wrong
    /// password's answer, byte for byte; the log line says which it was.
    pub(crate) fn refusal(&self, user: &str) -> Refusal {
        let wrong_password = || {
            Refusal::new(
                INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            )
        };
        match self {
            ScramFailure::Client(e) => {
                let r = Refusal::new(e.sqlstate, e.message);
                match &e.detail {
                    Some(d) => r.detail(d.clone()),
                    None => r,
                }
            }
            ScramFailure::Downgrade => Refusal::new(INVALID_AUTHORIZATION, "SCRAM channel binding negotiation error")
                .detail("The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding."),
            ScramFailure::BindingMismatch => {
                Refusal::new(INVALID_AUTHORIZATION, "SCRAM channel binding check failed")
            }
            ScramFailure::WrongPassword
            | ScramFailure::UnknownUser
            | ScramFailure::PasswordChanged
            | ScramFailure::Lookup(_) => wrong_password(),
            ScramFailure::UpstreamMethod(_) => Refusal::new(UNABLE_TO_CONNECT, format!("pgt-proxy: {self}"))
                .hint("With auth.mode = \"scram\" the server must use scram-sha-256 (or cert/trust) in pg_hba.conf for this user."),
            ScramFailure::UpstreamNoBinding
            | ScramFailure::UpstreamProtocol(_)
            | ScramFailure::UpstreamRejected(_)
            | ScramFailure::UpstreamSignature => Refusal::new(UNABLE_TO_CONNECT, format!("pgt-proxy: {self}")),
            ScramFailure::OutOfOrder => Refusal::new(PROTOCOL_VIOLATION, format!("pgt-proxy: {self}")),
            ScramFailure::Crypto(_) => Refusal::new(INTERNAL_ERROR, format!("pgt-proxy: {self}")),
        }
    }
}
