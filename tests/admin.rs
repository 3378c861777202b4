//! The admin endpoint: `/metrics` parsed as Prometheus' text format while real sessions move
//! the counters, OpenMetrics on request, and `/readyz` turning 503 when a SIGTERM drain
//! begins while `/healthz` stays 200.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::clients::{conninfo, psql, psql_ok};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};

fn admin_proxy(pki: &TestPki, pg: &Postgres) -> (Proxy, SocketAddr) {
    let proxy =
        Proxy::start(&ProxyConfig::new(pki, pg.port).set("admin.listen", "\"127.0.0.1:0\""));
    let line = proxy.wait_log(&["admin endpoint listening"]);
    let addr = line
        .split("admin=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line}"));
    (proxy, addr)
}

/// One HTTP/1.1 GET; returns the status code, headers and body.
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Parses the text exposition format: every line a comment (`# HELP`/`# TYPE`) or a sample
/// `name{labels} value`; returns the samples by their name with labels.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "unexpected comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad metric name in {line:?}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, head, body) = get(addr, "/metrics", None);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse(&body)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_move_with_real_sessions() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (proxy, admin) = admin_proxy(&pki, &pg);
    let before = scrape(admin);
    assert_eq!(value(&before, "pgt_proxy_fips_mode"), 0.0);
    let build = before
        .iter()
        .find(|(k, _)| k.starts_with("pgt_proxy_build_info{"))
        .map(|(k, v)| (k.clone(), *v))
        .expect("build_info");
    assert!(
        build.0.contains("version=\"0.1.0\"") && build.0.contains("openssl=\"OpenSSL 3"),
        "{build:?}"
    );
    assert_eq!(build.1, 1.0);
    let not_after = before
        .iter()
        .find(|(k, _)| {
            k.starts_with("pgt_proxy_certificate_not_after_timestamp_seconds{role=\"listen\"")
        })
        .map(|(_, v)| *v)
        .expect("the listen certificate's expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(not_after > now, "{not_after} vs {now}");

    assert_eq!(
        psql_ok(&conninfo(&proxy, &pki, "alice", ALICE_PASSWORD), "select 1"),
        "1"
    );
    proxy.wait_log(&["session ended"]);
    let plaintext = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD)
        .replace("sslmode=verify-full", "sslmode=disable");
    assert!(!psql(&plaintext, "select 1").status.success());
    proxy.wait_log(&["session refused", "sqlstate=\"28000\""]);

    let after = scrape(admin);
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        delta("pgt_proxy_sessions_total{outcome=\"authenticated\"}"),
        1.0
    );
    assert_eq!(delta("pgt_proxy_sessions_total{outcome=\"28000\"}"), 1.0);
    assert_eq!(
        delta("pgt_proxy_handshake_failures_total{leg=\"client\",reason=\"no_tls\"}"),
        1.0
    );
    assert_eq!(
        delta("pgt_proxy_upstream_connect_seconds_count{route=\"default\"}"),
        1.0
    );
    assert!(delta("pgt_proxy_bytes_total{direction=\"to_client\"}") > 0.0);
    assert!(delta("pgt_proxy_bytes_total{direction=\"from_client\"}") > 0.0);
    assert_eq!(delta("pgt_proxy_session_duration_seconds_count"), 2.0);
    assert_eq!(value(&after, "pgt_proxy_sessions_active"), 0.0);
    // No label carries a user name or an address.
    assert!(
        after
            .keys()
            .all(|k| !k.contains("alice") && !k.contains("127.0.0.1"))
    );

    let (status, head, body) = get(
        admin,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert_eq!(get(admin, "/nothing", None).0, 404);
}

#[test]
fn readyz_turns_503_when_the_drain_begins_and_healthz_stays_200() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (proxy, admin) = admin_proxy(&pki, &pg);
    // As a balancer does: the admin endpoint may answer before the accept loops run, and
    // /readyz says 200 only once they do.
    common::wait_for("/readyz to answer 200", Duration::from_secs(10), || {
        (get(admin, "/readyz", None).0 == 200).then_some(())
    });
    assert_eq!(get(admin, "/healthz", None).0, 200);
    // A session that outlives the signal keeps the proxy draining for shutdown_timeout (2 s).
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    let session = std::thread::spawn(move || psql(&info, "select pg_sleep(5)"));
    common::wait_for("the session to start", Duration::from_secs(10), || {
        (value(&scrape(admin), "pgt_proxy_sessions_active") >= 1.0).then_some(())
    });
    proxy.signal(libc::SIGTERM);
    common::wait_for("/readyz to answer 503", Duration::from_secs(2), || {
        (get(admin, "/readyz", None).0 == 503).then_some(())
    });
    assert_eq!(get(admin, "/healthz", None).0, 200, "alive while draining");
    let _ = session.join();
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) from a kept-alive
/// connection; returns the status code.
fn read_response(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        // read_exact retries when a signal interrupts the read (the tests' children exit).
        s.read_exact(&mut byte)
            .unwrap_or_else(|e| panic!("connection closed mid-response: {e}"));
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A TCP connection to `addr` from the loopback address `source`.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// One address cannot hold the endpoint's slots against the others: a client that opens
/// many idle connections keeps only a few, and a probe from another address (the kubelet's
/// node, Prometheus) is answered within the kubelet's default probe timeout of 1 s, so a
/// pod that can reach the port cannot fail the others' liveness probes into restarts.
#[test]
fn one_address_cannot_hold_every_admin_slot() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (_proxy, admin) = admin_proxy(&pki, &pg);
    let hog = Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<TcpStream> = (0..32).map(|_| connect_from(hog, admin)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (status, _, _) = get(admin, "/healthz", None);
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_secs(1),
        "the probe waited {waited:?} behind one address's idle connections"
    );
    // The hog's own connections beyond its share were closed at once.
    let closed = idle
        .into_iter()
        .filter(|mut s| {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            match s.read(&mut [0u8; 1]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .count();
    assert!(closed >= 16, "only {closed} of 32 closed");
}

#[test]
fn idle_keep_alive_connections_cannot_hold_the_admin_slots() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (_proxy, admin) = admin_proxy(&pki, &pg);
    // As many idle clients as the endpoint has slots: half asked once and kept the
    // connection open, half never sent a byte. Each from an address of its own, since one
    // address gets only a few of the slots (one_address_cannot_hold_every_admin_slot).
    let opened = std::time::Instant::now();
    let mut idle = Vec::new();
    for i in 0..16 {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 1, 10 + i), admin);
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        if i % 2 == 0 {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut s), 200, "kept-alive request {i}");
        }
        idle.push(s);
    }
    // A probe now waits for a slot in the backlog, and is served once idle ones are closed.
    let mut probe = TcpStream::connect(admin).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        probe,
        "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut probe), 200);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "served after {waited:?}: the 16 slots were not all held, so this proves nothing"
    );
    assert!(
        waited < Duration::from_secs(9),
        "the probe waited {waited:?} behind idle connections"
    );
    // Every idle connection was closed by the endpoint (EOF, not our read timeout).
    for (i, mut s) in idle.into_iter().enumerate() {
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "idle connection {i}: {read:?} {rest:?}"
        );
    }
    let closed = opened.elapsed();
    assert!(
        closed < Duration::from_secs(9),
        "idle connections still open after {closed:?}"
    );
}
