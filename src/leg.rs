//! Which side of the proxy something happened on: the client's connection to the proxy, or
//! the proxy's connection to the PostgreSQL server. Errors that can come from either side
//! carry it, so every message says which leg failed.

use std::fmt;

/// One of the proxy's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leg {
    /// The client's connection to the proxy.
    Client,
    /// The proxy's connection to the server.
    Upstream,
}

impl Leg {
    /// The key that sets this leg's OCSP policy.
    pub fn ocsp_key(self) -> &'static str {
        match self {
            Leg::Client => "listen.client_ocsp",
            Leg::Upstream => "upstream.ocsp",
        }
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Client => "client",
            Leg::Upstream => "upstream",
        })
    }
}
