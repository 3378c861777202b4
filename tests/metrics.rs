//! The metrics operators watch, read from `/metrics` as a scraper does while real sessions
//! run through the proxy to a real PostgreSQL: bytes that grow while one long COPY is still
//! running (both directions), the client handshake and login histograms, sessions per route
//! going 1 then 0, a failed connect to a dead upstream counted with its route, the upstream
//! certificate's notAfter as the test CA issued it, `listen.max_connections`, and the
//! process's own `process_*` figures checked against /proc.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use openssl::asn1::Asn1Time;

use common::clients::{conninfo, psql, rust_connect};
use common::cluster::{admin_addr, metric};
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};

const FROM_CLIENT: &str = "pgt_proxy_bytes_total{direction=\"from_client\"}";
const TO_CLIENT: &str = "pgt_proxy_bytes_total{direction=\"to_client\"}";
const ENDED: &str = "pgt_proxy_sessions_total{outcome=\"authenticated\"}";
const MIB: usize = 1 << 20;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Scrapes from a blocking thread, so the runtime keeps driving the client's connection.
async fn sample(admin: SocketAddr, series: &'static str) -> f64 {
    tokio::task::spawn_blocking(move || metric(admin, series))
        .await
        .unwrap()
}

/// Waits until `series` is at least `floor`; returns the value seen.
async fn at_least(admin: SocketAddr, series: &'static str, floor: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = sample(admin, series).await;
        if v >= floor {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, below {floor}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_grow_while_one_long_copy_is_still_running() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = ProxyConfig::new(&pki, pg.port).set("admin.listen", "\"127.0.0.1:0\"");
    let proxy = Proxy::start(&config);
    let admin = admin_addr(&proxy);
    let client = rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD)
        .await
        .expect("connect");
    client
        .batch_execute("create temp table sink (line text)")
        .await
        .unwrap();
    let ended = sample(admin, ENDED).await;

    // COPY FROM STDIN: 1 MiB, a sample, 2 MiB more, a sample, and only then the end.
    let line = format!("{}\n", "x".repeat(1023));
    let chunk = bytes::Bytes::from(line.repeat(64));
    let base = sample(admin, FROM_CLIENT).await;
    let sink = client.copy_in("copy sink from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut sent = 0;
    let mut samples = Vec::new();
    for target in [MIB, 3 * MIB] {
        while sent < target {
            sink.send(chunk.clone()).await.unwrap();
            sent += chunk.len();
        }
        sink.flush().await.unwrap();
        samples.push(at_least(admin, FROM_CLIENT, base + sent as f64).await);
    }
    assert!(samples[1] > samples[0], "from_client: {samples:?}");
    assert_eq!(
        sample(admin, ENDED).await,
        ended,
        "the session is still open"
    );
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows as usize, sent / line.len());

    // COPY TO STDOUT of 64 MiB, read at the client's pace: the proxy relays only what it
    // can hand on, so the count follows what was read, long before the COPY ends.
    let base = sample(admin, TO_CLIENT).await;
    let stream = client
        .copy_out("copy (select repeat('y', 1023) from generate_series(1, 65536)) to stdout")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut read = 0;
    while read < MIB {
        read += stream.next().await.unwrap().unwrap().len();
    }
    let first = at_least(admin, TO_CLIENT, base + read as f64).await;
    // Past everything the first sample could have counted (socket buffers included).
    let beyond = (first - base) as usize + 4 * MIB;
    while read < beyond {
        read += stream.next().await.unwrap().unwrap().len();
    }
    let second = at_least(admin, TO_CLIENT, base + read as f64).await;
    assert!(
        second > first,
        "to_client did not grow during the COPY: {first} then {second}"
    );
    assert!(
        second - base < 60.0 * MIB as f64,
        "the COPY was already over"
    );
    assert_eq!(
        sample(admin, ENDED).await,
        ended,
        "the session is still open"
    );
    assert_eq!(sample(admin, "pgt_proxy_sessions_active").await, 1.0);
    println!(
        "COPY FROM: {} then {} bytes; COPY TO: {} then {} bytes, one open session",
        samples[0], samples[1], first, second
    );
}

/// notAfter as seconds since the Unix epoch.
fn unix_time(t: &openssl::asn1::Asn1TimeRef) -> f64 {
    let d = Asn1Time::from_unix(0).unwrap().diff(t).unwrap();
    f64::from(d.days) * 86_400.0 + f64::from(d.secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_handshakes_logins_limits_and_the_process_are_visible() {
    let started = now();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    // Nothing listens on the dead upstream's port.
    let dead_port = free_port();
    let config = ProxyConfig::new(&pki, pg.port)
        .set("admin.listen", "\"127.0.0.1:0\"")
        .set("listen.max_connections", "37")
        .set("listen.unrouted", "\"default\"")
        .set("upstreams.dead.host", "\"127.0.0.1\"")
        .set("upstreams.dead.port", &dead_port.to_string())
        .set("upstreams.dead.ca", &toml_path(&pki.upstream_ca_path))
        .append("[[routes]]\ndatabase = \"deaddb\"\nupstream = \"dead\"\n");
    let proxy = Proxy::start(&config);
    let admin = admin_addr(&proxy);
    let m = |series: &'static str| sample(admin, series);

    assert_eq!(m("pgt_proxy_max_connections").await, 37.0);
    let open = m("process_open_fds").await;
    let max = m("process_max_fds").await;
    let seen = common::open_fds(proxy.pid()) as f64;
    assert!(open > 0.0 && open < max, "open {open}, max {max}");
    assert!((open - seen).abs() <= 4.0, "open {open}, /proc says {seen}");
    let rss = m("process_resident_memory_bytes").await;
    assert!(rss > MIB as f64 && rss < 1e9, "rss {rss}");
    let start = m("process_start_time_seconds").await;
    // btime is in whole seconds.
    assert!(
        start >= started - 2.0 && start <= now() + 1.0,
        "start {start}, test began {started}"
    );
    // Counted in clock ticks: a proxy that has just started may have used less than one.
    let cpu = m("process_cpu_seconds_total").await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(
        cpu >= 0.0 && cpu <= (now() - start + 1.0) * cores,
        "cpu {cpu} s in {} s",
        now() - start
    );

    let handshakes = m("pgt_proxy_client_handshake_duration_seconds_count").await;
    let logins = m("pgt_proxy_auth_duration_seconds_count").await;
    let route = "pgt_proxy_route_sessions_active{route=\"default\"}";
    let client = rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD)
        .await
        .expect("connect");
    client.simple_query("select 1").await.unwrap();
    assert_eq!(m(route).await, 1.0, "one open session on the route");
    let expected = unix_time(pki.server.cert.not_after());
    assert_eq!(
        m("pgt_proxy_upstream_certificate_not_after_timestamp_seconds{route=\"default\"}").await,
        expected,
        "the upstream certificate's notAfter"
    );
    assert_eq!(
        m("pgt_proxy_client_handshake_duration_seconds_count").await - handshakes,
        1.0
    );
    assert_eq!(
        m("pgt_proxy_auth_duration_seconds_count").await - logins,
        1.0
    );
    let handshake_sum = m("pgt_proxy_client_handshake_duration_seconds_sum").await;
    let login_sum = m("pgt_proxy_auth_duration_seconds_sum").await;
    assert!(
        handshake_sum > 0.0 && handshake_sum < 5.0,
        "{handshake_sum}"
    );
    assert!(login_sum > 0.0 && login_sum < 5.0, "{login_sum}");
    drop(client);
    let closed = tokio::task::spawn_blocking(move || {
        common::wait_for(
            "the route's sessions to reach 0",
            Duration::from_secs(10),
            || (metric(admin, route) == 0.0).then_some(()),
        )
    });
    closed.await.unwrap();

    // A session to the dead upstream: refused with 08001, counted with its route.
    let failures =
        "pgt_proxy_upstream_connect_failures_total{route=\"dead\",reason=\"unreachable\"}";
    assert_eq!(m(failures).await, 0.0);
    let info =
        conninfo(&proxy, &pki, "alice", ALICE_PASSWORD).replace("dbname=postgres", "dbname=deaddb");
    let out = tokio::task::spawn_blocking(move || psql(&info, "select 1"))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("could not connect to upstream"), "{stderr}");
    assert_eq!(m(failures).await, 1.0);
    assert_eq!(
        m("pgt_proxy_route_sessions_active{route=\"dead\"}").await,
        0.0,
        "the refused session left the route"
    );
    assert_eq!(
        m("pgt_proxy_upstream_connect_seconds_count{route=\"dead\"}").await,
        0.0,
        "a failure is not timed as a connection"
    );
}
