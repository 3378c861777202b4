//! The client leg before and during TLS: what each kind of first packet gets, direct TLS and
//! ALPN, the CVE-2021-23214 pattern, garbage, truncation, and the handshake timeout.

mod common;

use std::time::{Duration, Instant};

use common::clients::{conninfo, psql_err, psycopg_connect};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw::{self, GSSENC_REQUEST, SSL_REQUEST};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn setup_with(f: impl FnOnce(ProxyConfig) -> ProxyConfig) -> (TestPki, Postgres, Proxy) {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&f(ProxyConfig::new(&pki, pg.port)));
    (pki, pg, proxy)
}

fn setup() -> (TestPki, Postgres, Proxy) {
    setup_with(|c| c)
}

#[test]
fn plaintext_client_is_told_to_use_tls() {
    let (pki, _pg, proxy) = setup();
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD)
        .replace("sslmode=verify-full", "sslmode=disable");
    let err = psql_err(&info, "select 1");
    assert!(
        err.contains("pgt-proxy accepts TLS connections only"),
        "{err}"
    );
    assert!(err.contains("sslmode=verify-full"), "{err}");
    proxy.wait_log(&[
        "session refused",
        "plaintext StartupMessage",
        "user \"alice\"",
        "sqlstate=\"28000\"",
    ]);
}

#[tokio::test]
async fn gssenc_then_ssl_fallback_authenticates() {
    let (pki, _pg, proxy) = setup();
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&GSSENC_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'N'));
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    let mut tls = raw::handshake(tcp, raw::tls_client(&pki, None))
        .await
        .unwrap();
    tls.write_all(&raw::startup(&[
        ("user", "trusted"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    let messages = raw::read_until_ready(&mut tls).await;
    assert_eq!(
        messages.first().map(|m| (m.0, m.1.clone())),
        Some((b'R', vec![0, 0, 0, 0]))
    );
    assert_eq!(messages.last().map(|m| m.0), Some(b'Z'));
    assert!(messages.iter().any(|m| m.0 == b'K'), "no BackendKeyData");
}

#[tokio::test]
async fn gssenc_twice_is_closed() {
    let (_pki, _pg, proxy) = setup();
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&GSSENC_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'N'));
    tcp.write_all(&GSSENC_REQUEST).await.unwrap();
    assert_eq!(raw::read_to_close(&mut tcp).await, b"");
}

#[test]
fn direct_tls_with_alpn_is_accepted() {
    let (pki, _pg, proxy) = setup();
    let info = format!(
        "{} sslnegotiation=direct",
        conninfo(&proxy, &pki, "alice", ALICE_PASSWORD)
    );
    assert_eq!(psycopg_connect(&info), Ok("alice".to_owned()));
}

#[tokio::test]
async fn direct_tls_without_alpn_is_refused() {
    let (pki, _pg, proxy) = setup();
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    // The handshake itself completes; the proxy then refuses over TLS, as PostgreSQL 17 does.
    let mut tls = raw::handshake(tcp, raw::tls_client(&pki, None))
        .await
        .unwrap();
    let messages = raw::read_until_ready(&mut tls).await;
    let (tag, body) = messages.last().expect("an ErrorResponse");
    assert_eq!(*tag, b'E');
    let (code, message) = raw::error_fields(body);
    assert_eq!(code, "08P01");
    assert!(message.contains("without ALPN"), "{message}");
    proxy.wait_log(&["session refused", "without ALPN"]);
}

#[tokio::test]
async fn direct_tls_with_another_alpn_fails_the_handshake() {
    let (pki, _pg, proxy) = setup();
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let err = raw::handshake(tcp, raw::tls_client(&pki, Some(b"\x08http/1.1")))
        .await
        .expect_err("handshake must fail");
    assert!(err.to_string().contains("no application protocol"), "{err}");
}

#[tokio::test]
async fn direct_tls_can_be_disabled() {
    let (pki, _pg, proxy) = setup_with(|c| c.set("listen.direct_tls", "false"));
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        raw::handshake(tcp, raw::tls_client(&pki, Some(b"\x0apostgresql")))
            .await
            .is_err()
    );
    proxy.wait_log(&["direct TLS, which is disabled"]);
}

#[tokio::test]
async fn data_pipelined_after_ssl_request_is_refused() {
    let (_pki, _pg, proxy) = setup();
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    // SSLRequest immediately followed by a plaintext StartupMessage, in one write.
    let mut bytes = SSL_REQUEST.to_vec();
    bytes.extend(raw::startup(&[("user", "alice")]));
    tcp.write_all(&bytes).await.unwrap();
    let answer = raw::read_to_close(&mut tcp).await;
    assert_eq!(
        answer.first(),
        Some(&b'E'),
        "expected an ErrorResponse, got {answer:?}"
    );
    let (code, message) = raw::error_fields(&answer[5..]);
    assert_eq!(code, "08P01");
    assert!(
        message.contains("unencrypted data after SSL request"),
        "{message}"
    );
    proxy.wait_log(&["session refused", "unencrypted data after its SSLRequest"]);
}

#[tokio::test]
async fn garbage_and_truncated_first_packets_leak_nothing() {
    let (pki, _pg, proxy) = setup();
    // One real session first, so lazily opened descriptors are counted in the baseline.
    let tls = raw::trusted_session(proxy.addr, &pki).await;
    drop(tls);
    proxy.wait_log(&["session ended"]);
    let baseline = common::open_fds(proxy.pid());

    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: db\r\n\r\n".to_vec(),
        b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec(),
        vec![0, 0, 0, 0],
        vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        vec![0, 0, 0x27, 0x12, 0, 3, 0, 0], // 10,002 bytes announced
        vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0], // cancel, truncated
        vec![0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0], // SSLRequest with a body
        vec![0, 0, 0, 8, 0x04, 0xd2, 0x16], // truncated SSLRequest
        vec![0, 0, 0, 12, 0, 2, 0, 0, 0, 0, 0, 0], // protocol 2.0
        vec![0, 0, 0, 12, 0, 4, 0, 0, 0, 0, 0, 0], // protocol 4.0
        raw::startup(&[("user", "x")])[..10].to_vec(), // truncated startup
        vec![0x16, 3, 1, 0, 5, 1, 2, 3],    // a TLS record of garbage
    ];
    for case in &cases {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(case).await.unwrap();
        let _ = tcp.shutdown().await;
        let answer = raw::read_to_close(&mut tcp).await;
        assert!(
            answer.is_empty() || answer[0] == b'E' || answer[0] == 0x15,
            "case {case:?} got {answer:?}"
        );
    }
    // Plus a connection that sends nothing at all.
    drop(TcpStream::connect(proxy.addr).await.unwrap());

    common::wait_for(
        "descriptors back to baseline",
        Duration::from_secs(10),
        || (common::open_fds(proxy.pid()) <= baseline).then_some(()),
    );
    // Still serving.
    raw::trusted_session(proxy.addr, &pki).await;
    assert!(!proxy.log().contains("panicked"));
}

#[tokio::test]
async fn a_client_stalled_in_its_ssl_request_is_dropped_at_handshake_timeout() {
    let (_pki, _pg, proxy) = setup_with(|c| c.set("listen.handshake_timeout", "\"1s\""));
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST[..1]).await.unwrap();
    let start = Instant::now();
    let answer = raw::read_to_close(&mut tcp).await;
    let waited = start.elapsed();
    assert!(answer.is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    proxy.wait_log(&["did not complete its TLS handshake within 1s"]);
}

#[tokio::test]
async fn an_empty_connection_is_logged_at_debug_only() {
    let (_pki, _pg, proxy) = setup();
    drop(TcpStream::connect(proxy.addr).await.unwrap());
    // A second, garbage connection is logged, and proves the first one had its turn.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    raw::read_to_close(&mut tcp).await;
    proxy.wait_log(&["invalid first packet"]);
    assert!(
        !proxy.log().contains("without sending anything"),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn a_client_that_never_authenticates_is_dropped_at_startup_timeout() {
    let (pki, _pg, proxy) = setup_with(|c| c.set("listen.startup_timeout", "\"1s\""));
    let mut tls = raw::tls_via_ssl_request(proxy.addr, &pki).await;
    let start = Instant::now();
    let messages = raw::read_until_ready(&mut tls).await;
    let waited = start.elapsed();
    let (tag, body) = messages.last().expect("an ErrorResponse");
    assert_eq!(*tag, b'E');
    let (code, message) = raw::error_fields(body);
    assert_eq!(code, "08006");
    assert!(message.contains("listen.startup_timeout"), "{message}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn plaintext_cancel_can_be_disabled() {
    let (_pki, _pg, proxy) = setup_with(|c| c.set("listen.plaintext_cancel", "false"));
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&raw::cancel_request(1234, &[1, 2, 3, 4]))
        .await
        .unwrap();
    assert_eq!(raw::read_to_close(&mut tcp).await, b"");
    proxy.wait_log(&["plaintext CancelRequest, which is disabled"]);
    assert!(
        !proxy
            .log()
            .contains("cancel request matches no live session")
    );
}
