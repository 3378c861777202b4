//! Cancel keys that name the replica which owns the session, so a fleet behind a load
//! balancer can route a CancelRequest (a new connection, which the balancer may send to any
//! replica) to the one that relays it: pure functions, no IO.
//!
//! With `cluster.peer_id` set, a client gets the proxy's own BackendKeyData, never the
//! server's: the pid is `0 | hop (1 bit) | peer id (14 bits) | 16 random bits`, the key as
//! many random bytes as the server's (4 in protocol 3.0, up to 256 in 3.2), so 48 or more
//! random bits in all, more than a PostgreSQL 3.0 key has. The hop bit is set only by a
//! replica forwarding the request to a peer, and a request with it set is never forwarded
//! again (pgbouncer's peering marks its TTL the same way), so a misconfigured fleet cannot
//! bounce a cancel around; the owner acts on one only from a peer that proves it is one
//! ([`super::proof`]).

use std::sync::atomic::{AtomicU16, Ordering};

/// This process's `cluster.peer_id`, fixed at start: every key it hands out names it, so a
/// reload cannot change it (a reload that tries says a restart is needed).
static OWN_ID: AtomicU16 = AtomicU16::new(0);

/// Sets this replica's id; called once at start.
pub(crate) fn set_own_id(id: u16) {
    OWN_ID.store(id, Ordering::Relaxed);
}

/// This replica's id (0: no cluster).
pub(crate) fn own_id() -> u16 {
    OWN_ID.load(Ordering::Relaxed)
}

/// The bit a forwarding replica sets.
const HOP: u32 = 1 << 30;
/// Where the peer id sits.
const ID_SHIFT: u32 = 16;
/// Its 14 bits.
const ID_MASK: u32 = 0x3fff;

/// Whose session a CancelRequest's pid names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This replica's (or no cluster: keys are the server's own).
    Us {
        /// The pid to look up, with the hop bit cleared.
        pid: i32,
        /// A replica forwarded it (only a peer that proves it is one may).
        forwarded: bool,
    },
    /// Another replica's.
    Peer {
        /// Its id.
        id: u16,
        /// A replica forwarded it already.
        forwarded: bool,
    },
    /// Not a key any replica issues (sign bit or id 0).
    Invalid,
}

/// The pid a session's client is given, from this replica's id and two random bytes.
pub(crate) fn issue_pid(peer_id: u16, random: [u8; 2]) -> i32 {
    let id = u32::from(peer_id) & ID_MASK;
    ((id << ID_SHIFT) | u32::from(u16::from_be_bytes(random))) as i32
}

/// Whose session `pid` names, for a replica with id `own` (0: no cluster).
pub(crate) fn owner(pid: i32, own: u16) -> Owner {
    if own == 0 {
        return Owner::Us {
            pid,
            forwarded: false,
        };
    }
    let bits = pid as u32;
    if bits & (1 << 31) != 0 {
        return Owner::Invalid;
    }
    let id = ((bits >> ID_SHIFT) & ID_MASK) as u16;
    match id {
        0 => Owner::Invalid,
        id if id == own => Owner::Us {
            pid: (bits & !HOP) as i32,
            forwarded: bits & HOP != 0,
        },
        id => Owner::Peer {
            id,
            forwarded: bits & HOP != 0,
        },
    }
}

/// `pid` as a forwarding replica sends it on.
pub(crate) fn mark_forwarded(pid: i32) -> i32 {
    ((pid as u32) | HOP) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_issued_pid_names_its_replica_once_forwarded_or_not(
            id in 1u16..=16383, own in 1u16..=16383, random in any::<[u8; 2]>(),
        ) {
            let pid = issue_pid(id, random);
            prop_assert!(pid > 0);
            prop_assert_eq!(owner(pid, id), Owner::Us { pid, forwarded: false });
            prop_assert_eq!(owner(mark_forwarded(pid), id), Owner::Us { pid, forwarded: true });
            if own != id {
                prop_assert_eq!(owner(pid, own), Owner::Peer { id, forwarded: false });
                prop_assert_eq!(owner(mark_forwarded(pid), own), Owner::Peer { id, forwarded: true });
            }
        }

        #[test]
        fn without_a_cluster_every_pid_is_ours_unchanged(pid in any::<i32>()) {
            prop_assert_eq!(owner(pid, 0), Owner::Us { pid, forwarded: false });
        }

        #[test]
        fn any_pid_is_judged_without_panicking(pid in any::<i32>(), own in 1u16..=16383) {
            let judged = owner(pid, own);
            if pid < 0 || (pid as u32 >> 16) & 0x3fff == 0 {
                prop_assert_eq!(judged, Owner::Invalid);
            }
        }
    }
}
