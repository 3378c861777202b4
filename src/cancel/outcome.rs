//! What a CancelRequest is judged from and what became of it: who sent it, and the outcome
//! that the session's log line and the `result` label of `pgt_proxy_cancel_requests_total`
//! are written from.

use std::net::SocketAddr;

use super::Via;

/// What became of a CancelRequest.
#[derive(Debug)]
pub(crate) enum CancelOutcome {
    /// Sent to the server, which closed the connection as it does after a cancel.
    Forwarded {
        /// The server's address.
        addr: SocketAddr,
        /// The server's pid for the session.
        pid: i32,
    },
    /// Handed to the replica that relays the session.
    ToPeer {
        /// Its `cluster.peers` id.
        id: u16,
        /// Its address.
        addr: SocketAddr,
    },
    /// No live session has this pid and key.
    NoMatch,
    /// Not acted on (the reason is logged).
    Dropped(Dropped),
}

impl CancelOutcome {
    /// The `result` label of `pgt_proxy_cancel_requests_total`.
    pub fn result(&self) -> &'static str {
        match self {
            CancelOutcome::Forwarded { .. } => "forwarded",
            CancelOutcome::ToPeer { .. } => "to_peer",
            CancelOutcome::NoMatch => "no_match",
            CancelOutcome::Dropped(d) => d.result,
        }
    }
}

/// Why a CancelRequest was not acted on; displayed as the reason.
#[derive(Debug)]
pub(crate) struct Dropped {
    /// The metric's result: "dropped" (another replica's, not forwarded), "rate_limited"
    /// (beyond the forwarding bounds) or "not_peer" (marked as forwarded, not from a peer).
    pub result: &'static str,
    reason: String,
}

impl Dropped {
    pub(super) fn outcome(result: &'static str, reason: String) -> CancelOutcome {
        CancelOutcome::Dropped(Self { result, reason })
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Who sent a CancelRequest.
#[derive(Clone, Copy)]
pub(crate) struct Sender<'a> {
    /// The client's address (a PROXY header's, when the listener takes them).
    pub addr: SocketAddr,
    /// Pass it on to a peer in a PROXY header (when our listeners take them, so do the
    /// peers').
    pub proxy_header: bool,
    /// The connection the request came on.
    pub via: Via<'a>,
}
