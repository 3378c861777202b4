//! The open-files limit: raising it at start, and how many sessions it leaves room for.
//!
//! Each session needs two descriptors (client and upstream socket). The default soft limit
//! of 1024 would cap the proxy near 500 sessions, so the soft limit is raised to the hard
//! one at start, as nginx and Go do. `listen.max_connections` left at its default is fitted
//! to what the hard limit allows, so a stock machine never starts with a warning; a value
//! the administrator set is kept, with a warning when it cannot fit.

/// Descriptors each session needs.
const FDS_PER_SESSION: u64 = 2;
/// Room for listeners, logs, OCSP and CRL files.
const FD_MARGIN: u64 = 64;

/// The soft and hard open-files limits.
pub(crate) fn limits() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// How many sessions the hard limit leaves room for (`None`: unknown, or unlimited).
pub(crate) fn sessions_allowed() -> Option<usize> {
    let hard = limits()?.rlim_max;
    if hard == libc::RLIM_INFINITY {
        return None;
    }
    let room = hard.saturating_sub(FD_MARGIN) / FDS_PER_SESSION;
    Some(usize::try_from(room).unwrap_or(usize::MAX).max(1))
}

/// Raises the soft limit to the hard one. Returns a warning when even that cannot hold
/// `max_connections` sessions.
pub(crate) fn raise(max_connections: usize) -> Option<String> {
    let mut limit = limits()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = max_connections as u64 * FDS_PER_SESSION + FD_MARGIN;
    (limit.rlim_cur < needed).then(|| {
        format!(
            "the open-files limit ({}) is below the {needed} that listen.max_connections = \
             {max_connections} needs; raise LimitNOFILE or lower listen.max_connections",
            limit.rlim_cur
        )
    })
}
