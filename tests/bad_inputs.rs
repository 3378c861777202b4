//! Bad inputs against a running proxy with a real upstream. Each case checks the client's
//! answer (the documented error, or a close); at the end the proxy's open descriptors are
//! back to their baseline and a normal client is still served.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw::{self, SSL_REQUEST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Makes the socket close with a reset (SO_LINGER 0) instead of a FIN when dropped.
fn reset_on_drop(tcp: &TcpStream) {
    socket2::SockRef::from(tcp)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// Closes with a reset.
fn reset(tcp: TcpStream) {
    reset_on_drop(&tcp);
}

/// Writes `bytes` inside TLS after SSLRequest and returns (SQLSTATE, message) of the
/// proxy's ErrorResponse.
async fn inside_tls(addr: SocketAddr, pki: &TestPki, bytes: &[u8]) -> (String, String) {
    let mut tls = raw::tls_via_ssl_request(addr, pki).await;
    tls.write_all(bytes).await.unwrap();
    let messages = raw::read_until_ready(&mut tls).await;
    let (tag, body) = messages.last().expect("an answer");
    assert_eq!(*tag, b'E', "{messages:?}");
    raw::error_fields(body)
}

fn startup_with_version(major: u16, minor: u16, params: &[u8]) -> Vec<u8> {
    let mut body = ((u32::from(major) << 16) | u32::from(minor))
        .to_be_bytes()
        .to_vec();
    body.extend_from_slice(params);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_of_bad_clients() {
    let pki = TestPki::new();
    let pg = tokio::task::spawn_blocking({
        let server = pki.server.cert.clone();
        let key = pki.server.key.clone();
        move || {
            Postgres::start(&common::pki::Issued {
                cert: server,
                key,
                chain: vec![],
            })
        }
    })
    .await
    .unwrap();
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.handshake_timeout", "\"2s\"")
            .set("listen.startup_timeout", "\"2s\""),
    );
    let addr = proxy.addr;
    // Warm up, so lazily opened descriptors are in the baseline.
    drop(raw::trusted_session(addr, &pki).await);
    proxy.wait_log(&["session ended"]);
    let baseline = common::open_fds(proxy.pid());

    // Resets in every phase.
    reset(TcpStream::connect(addr).await.unwrap());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    reset(tcp);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50, 0x01])
        .await
        .unwrap(); // a ClientHello's start
    reset(tcp);
    let tls = raw::tls_via_ssl_request(addr, &pki).await;
    reset_on_drop(tls.get_ref());
    drop(tls);
    let mut tls = raw::tls_via_ssl_request(addr, &pki).await;
    tls.write_all(&raw::startup(&[
        ("user", "alice"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    let mut first = [0u8; 1];
    tls.read_exact(&mut first).await.unwrap(); // the server's SASL request: mid-authentication
    reset_on_drop(tls.get_ref());
    drop(tls);
    let mut session = raw::trusted_session(addr, &pki).await;
    session
        .write_all(b"Q\0\0\0\x19select pg_sleep(30)\0")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_on_drop(session.get_ref()); // during the relay, mid-query
    drop(session);

    // SSLRequest twice: the second one arrives where the ClientHello should.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    let answer = raw::read_to_close(&mut tcp).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}"); // close or TLS alert
    // SSLRequest again inside TLS.
    let (code, message) = inside_tls(addr, &pki, &SSL_REQUEST).await;
    assert_eq!(code, "08P01", "{message}");
    // A CancelRequest of the wrong length, in plaintext.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 14, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    assert_eq!(raw::read_to_close(&mut tcp).await, b"");
    // Inside TLS: missing terminator, 10,001 bytes, protocols 2.0 and 4.0, a zero length.
    let (code, _) = inside_tls(addr, &pki, &startup_with_version(3, 0, b"user\0alice\0")).await;
    assert_eq!(code, "08P01");
    let mut big = b"user\0alice\0options\0".to_vec();
    big.resize(10_001 - 8 - 2, b'x');
    big.extend_from_slice(b"\0\0");
    let packet = startup_with_version(3, 0, &big);
    assert_eq!(packet.len(), 10_001);
    let (code, message) = inside_tls(addr, &pki, &packet).await;
    assert_eq!(code, "08P01", "{message}");
    for (major, minor) in [(2, 0), (4, 0)] {
        let (code, message) = inside_tls(
            addr,
            &pki,
            &startup_with_version(major, minor, b"user\0a\0\0"),
        )
        .await;
        assert_eq!(code, "0A000", "{major}.{minor}: {message}");
    }
    let (code, _) = inside_tls(addr, &pki, &[0, 0, 0, 0]).await;
    assert_eq!(code, "08P01");
    // Protocol 3.99 is the server's to negotiate: PostgreSQL answers NegotiateProtocolVersion.
    let mut tls = raw::tls_via_ssl_request(addr, &pki).await;
    tls.write_all(&startup_with_version(
        3,
        99,
        b"user\0trusted\0database\0postgres\0\0",
    ))
    .await
    .unwrap();
    let messages = raw::read_until_ready(&mut tls).await;
    assert!(messages.iter().any(|m| m.0 == b'v'), "{messages:?}");
    assert_eq!(messages.last().unwrap().0, b'Z');
    drop(tls);
    // A TLS record of garbage after 'S'.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    tcp.write_all(&[0x16, 0x03, 0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let answer = raw::read_to_close(&mut tcp).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");

    // Slowloris: one byte a second is dropped at handshake_timeout; others are unaffected.
    let slow = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        for b in SSL_REQUEST {
            if tcp.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let _ = raw::read_to_close(&mut tcp).await;
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served_at = Instant::now();
    drop(raw::trusted_session(addr, &pki).await);
    assert!(
        served_at.elapsed() < Duration::from_secs(1),
        "a normal client waited"
    );
    let slow_for = slow.await.unwrap();
    assert!(
        slow_for < Duration::from_secs(5),
        "slowloris held {slow_for:?}"
    );

    // Everything is released, and the proxy still serves.
    common::wait_for(
        "descriptors back to baseline",
        Duration::from_secs(15),
        || (common::open_fds(proxy.pid()) <= baseline).then_some(()),
    );
    drop(raw::trusted_session(addr, &pki).await);
    assert!(!proxy.log().contains("panicked"));
    drop(pg);
}

#[tokio::test]
async fn an_upstream_that_hangs_up_during_authentication() {
    // A TLS upstream that accepts SSLRequest and the handshake, reads the StartupMessage,
    // then closes without a word.
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut b =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_certificate(&pki.server.cert).unwrap();
    b.set_private_key(&pki.server.key).unwrap();
    let acceptor = b.build();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                tcp.read_exact(&mut req).await.ok()?;
                tcp.write_all(b"S").await.ok()?;
                let ssl = openssl::ssl::Ssl::new(acceptor.context()).ok()?;
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).ok()?;
                std::pin::Pin::new(&mut tls).accept().await.ok()?;
                let mut startup = [0u8; 256];
                let _ = tls.read(&mut startup).await;
                Some(())
            });
        }
    });
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
