//! Bad upstreams behind a running proxy: one that hangs up during authentication, ends an
//! idle session, stops reading (the proxy must not buffer without bound), resets mid-session,
//! or presents a chain 20 certificates deep. Each case checks what the client is told (the
//! documented error, or a close) and that the proxy neither panics nor leaks.

mod common;

use std::time::{Duration, Instant};

use common::fake_upstream::{self, Then};
use common::postgres::Postgres;
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw::{self, inside_tls, reset_on_drop};
use common::recovery::{assert_recovered, warm_baseline};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn an_upstream_that_hangs_up_during_authentication() {
    let pki = TestPki::new();
    let port = fake_upstream::start(&pki.server, Then::HangUp).await;
    let proxy = Proxy::start(&ProxyConfig::new(&pki, port));
    let (code, message) = inside_tls(
        proxy.addr,
        &pki,
        &raw::startup(&[("user", "alice"), ("database", "postgres")]),
    )
    .await;
    assert_eq!(code, "08006");
    assert!(
        message.contains("upstream server closed the connection during authentication"),
        "{message}"
    );
}

#[test]
fn idle_session_timeout_ends_the_client_at_once() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(common::postgres::PgOptions {
        tls: Some(&pki.server),
        conf: vec!["idle_session_timeout = '1s'".into()],
        hba: vec![],
    });
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut session = raw::trusted_session(proxy.addr, &pki).await;
        let start = Instant::now();
        let messages = raw::read_until_ready(&mut session).await;
        let rest = raw::read_to_close(&mut session).await;
        let (code, _) = raw::error_fields(&messages.last().expect("an ErrorResponse").1);
        assert_eq!(code, "57P05", "idle_session_timeout");
        assert!(rest.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    });
}

/// The proxy's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_reading_is_not_buffered_without_bound() {
    let pki = TestPki::new();
    let port = fake_upstream::start(&pki.server, Then::StopReading).await;
    let proxy = Proxy::start(&ProxyConfig::new(&pki, port));
    let baseline = warm_baseline(&proxy, &pki).await;
    let rss_before = rss_kib(proxy.pid());

    // 64 MiB of queries toward a server that reads none of them.
    let mut session = raw::trusted_session(proxy.addr, &pki).await;
    let mut query = b"Q\0\0\x04\x04".to_vec();
    query.resize(1029, b' ');
    query[1028] = 0;
    let chunk: Vec<u8> = query.iter().copied().cycle().take(1029 * 64).collect();
    let mut sent = 0usize;
    let writing = async {
        while sent < 64 << 20 {
            session.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(3), writing).await;
    assert!(finished.is_err(), "64 MiB went somewhere");
    let grown = rss_kib(proxy.pid()).saturating_sub(rss_before);
    assert!(
        sent < 16 << 20,
        "{sent} bytes accepted: the proxy buffers without bound"
    );
    assert!(grown < 8 * 1024, "the proxy grew by {grown} KiB");

    // The client gives up: the session ends within the close limit, nothing leaks.
    reset_on_drop(session.get_ref());
    drop(session);
    assert_recovered(&proxy, &pki, baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_chain_20_deep_verifies_and_serves() {
    let pki = TestPki::new();
    let mut ca = pki.upstream_ca.intermediate("Intermediate 1");
    for depth in 2..=19 {
        ca = ca.intermediate(&format!("Intermediate {depth}"));
    }
    let leaf = ca.issue(
        "localhost",
        &["DNS:localhost", "IP:127.0.0.1"],
        common::pki::Validity::Current,
    );
    assert_eq!(leaf.chain.len(), 19, "leaf + 19 intermediates + the root");
    let port = fake_upstream::start(&leaf, Then::StopReading).await;
    let proxy = Proxy::start(&ProxyConfig::new(&pki, port));
    let session = raw::trusted_session(proxy.addr, &pki).await;
    drop(session);
    let log = proxy.wait_log(&["session ended"]);
    assert!(!log.contains("panicked"));
}

#[tokio::test]
async fn an_upstream_that_resets_mid_session_is_reported_as_08006() {
    let pki = TestPki::new();
    let port = fake_upstream::start(&pki.server, Then::Reset).await;
    let proxy = Proxy::start(&ProxyConfig::new(&pki, port));
    let mut session = raw::trusted_session(proxy.addr, &pki).await;
    let start = Instant::now();
    let messages = raw::read_until_ready(&mut session).await;
    let (tag, body) = messages.last().expect("an ErrorResponse, not a bare close");
    assert_eq!(*tag, b'E');
    let (code, message) = raw::error_fields(body);
    assert_eq!(code, "08006", "{message}");
    assert!(message.contains("upstream connection lost"), "{message}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(raw::read_to_close(&mut session).await.is_empty());
}
