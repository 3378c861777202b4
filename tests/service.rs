//! The daemon as systemd sees it: the sd_notify sequence (READY, RELOADING with
//! MONOTONIC_USEC, STOPPING, WATCHDOG), reload on SIGHUP (new certificate for new
//! connections, live sessions untouched, a broken certificate keeps the old one), and the
//! graceful stop (sessions may finish within shutdown_timeout, the rest get 57P01, exit 0).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::clients::{conninfo, rust_connect};
use common::pki::Validity;
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw;

/// Reads notification datagrams until one contains `needle`; returns all read.
fn recv_until(socket: &UnixDatagram, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.contains(needle);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no notification with {needle:?}; got {seen:?}");
}

#[test]
fn sd_notify_sequence_and_watchdog() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let socket_path = pki.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let proxy = Proxy::start_env(
        &ProxyConfig::new(&pki, pg.port),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let first = recv_until(&socket, "READY=1");
    assert_eq!(
        first.len(),
        1,
        "READY=1 must be the first notification: {first:?}"
    );
    assert!(
        first[0].contains("STATUS=0 active sessions, 0 served"),
        "{first:?}"
    );
    // WATCHDOG=1 at half of WATCHDOG_USEC: several within a second.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(1) {
        pings += recv_until(&socket, "WATCHDOG=1").len().min(1);
    }
    assert!(pings >= 3, "{pings} watchdog pings in a second");

    proxy.signal(libc::SIGHUP);
    let reload = recv_until(&socket, "RELOADING=1");
    let reloading = reload.last().unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = recv_until(&socket, "READY=1");
    assert!(
        ready.last().unwrap().contains("last reload: ok"),
        "{ready:?}"
    );

    // A broken certificate: the reload fails, the proxy says so in STATUS and keeps serving.
    std::fs::write(&pki.proxy_cert_path, "garbage").unwrap();
    proxy.signal(libc::SIGHUP);
    recv_until(&socket, "RELOADING=1");
    let ready = recv_until(&socket, "READY=1");
    let status = ready.last().unwrap();
    assert!(status.contains("last reload: reload failed: "), "{status}");
    assert!(status.contains("listen.certificate"), "{status}");

    proxy.signal(libc::SIGTERM);
    recv_until(&socket, "STOPPING=1");
    assert!(proxy.wait().success());
}

#[test]
fn reload_swaps_the_certificate_for_new_connections_only() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = rt.block_on(raw::served_fingerprint(proxy.addr, &pki));
    assert_eq!(before, pki.proxy.fingerprint());
    // A session opened before the reload.
    let client = rt
        .block_on(rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD))
        .unwrap();

    // A renewed certificate, written over the old files, and SIGHUP.
    let renewed = pki.proxy_ca.issue(
        "localhost",
        &["DNS:localhost", "IP:127.0.0.1"],
        Validity::Current,
    );
    renewed.write(pki.dir.path(), "proxy");
    proxy.signal(libc::SIGHUP);
    proxy.wait_log(&["configuration reloaded"]);
    let after = rt.block_on(raw::served_fingerprint(proxy.addr, &pki));
    assert_eq!(
        after,
        renewed.fingerprint(),
        "new connections see the new certificate"
    );
    let row = rt.block_on(client.query_one("select 40 + 2", &[])).unwrap();
    assert_eq!(row.get::<_, i32>(0), 42, "the old session keeps working");

    // A broken certificate on reload: the proxy keeps serving the last good one.
    std::fs::write(&pki.proxy_cert_path, "not a certificate").unwrap();
    proxy.signal(libc::SIGHUP);
    proxy.wait_log(&["reload failed", "listen.certificate"]);
    assert_eq!(
        rt.block_on(raw::served_fingerprint(proxy.addr, &pki)),
        renewed.fingerprint()
    );
    assert_eq!(
        common::clients::psql_ok(&conninfo(&proxy, &pki, "alice", ALICE_PASSWORD), "select 1"),
        "1"
    );
}

#[test]
fn graceful_stop_lets_sessions_finish_then_sends_57p01() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy =
        Proxy::start(&ProxyConfig::new(&pki, pg.port).set("listen.shutdown_timeout", "\"3s\""));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let finisher = rt
        .block_on(rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD))
        .unwrap();
    // An idle session, read with a raw client to see exactly what the proxy sends.
    let mut lingerer = rt.block_on(raw::trusted_session(proxy.addr, &pki));
    rt.block_on(finisher.batch_execute("begin; create temp table t (x int)"))
        .unwrap();

    let stopped_at = Instant::now();
    proxy.signal(libc::SIGTERM);
    proxy.wait_log(&["shutting down"]);
    // No new connections...
    assert!(std::net::TcpStream::connect(proxy.addr).is_err());
    // ...but the open transaction may finish.
    rt.block_on(finisher.batch_execute("insert into t values (1); commit"))
        .unwrap();
    drop(finisher);
    // The idle session is ended with 57P01 once shutdown_timeout has run out, then closed.
    let (messages, rest) = rt.block_on(async {
        let messages = raw::read_until_ready(&mut lingerer).await;
        (messages, raw::read_to_close(&mut lingerer).await)
    });
    let ended_after = stopped_at.elapsed();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].0, b'E');
    let (code, message) = raw::error_fields(&messages[0].1);
    assert_eq!(code, "57P01");
    assert_eq!(
        message,
        "terminating connection due to administrator command"
    );
    assert!(rest.is_empty(), "nothing after the ErrorResponse");
    assert!(
        ended_after >= Duration::from_secs(3) && ended_after < Duration::from_secs(8),
        "{ended_after:?}"
    );
    assert!(proxy.wait().success(), "exit code 0");
}
