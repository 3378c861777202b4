//! Shared test harness: a throwaway PKI, a real PostgreSQL server per test, the real
//! `pgt-proxy` binary, and real clients (psql, psycopg with libpq 18, tokio-postgres).
//!
//! Nothing is mocked. Each test starts its own cluster and proxy on free ports; both are
//! stopped when the test's values drop, and also (via PR_SET_PDEATHSIG) if the test thread
//! dies, so a failed run leaves no server behind.
#![allow(dead_code)]

pub mod clients;
pub mod cluster;
pub mod fake_scram;
pub mod fake_upstream;
pub mod fips_provider;
pub mod netns;
pub mod openssl_ca;
pub mod openssl_certs;
pub mod pki;
pub mod pod_dns;
pub mod postgres;
pub mod pq;
pub mod proxy;
pub mod raw;
pub mod recovery;
pub mod routes;
pub mod sasl;
pub mod scram;
pub mod statefulset;
pub mod trixie;
pub mod wire;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Makes the child receive `signal` when the thread that spawned it exits.
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The multi-threaded runtime the async parts of a test run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until the server runs one `pg_sleep`: a cancel that came earlier would find no query
/// to cancel, and a test of "not cancelled" would prove nothing.
pub fn wait_for_sleeper(pg: &postgres::Postgres) {
    wait_for("pg_sleep to run", Duration::from_secs(10), || {
        let count = pg.admin(
            "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'",
        );
        (count.trim() == "1").then_some(())
    });
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Number of open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}
