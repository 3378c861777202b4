//! Bad clients against a running proxy with a real upstream: resets in every phase, broken
//! and oversized startup packets, slowloris, and hostile TLS handshakes (a huge SNI, 10,000
//! cipher suites, renegotiation). Each case checks the client's answer (the documented
//! error, or a close); at the end the proxy's open descriptors are back to their baseline
//! and a normal client is still served. Bad upstreams are in bad_upstreams.rs.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw::{self, SSL_REQUEST, inside_tls, reset_on_drop};
use common::recovery::{assert_recovered, warm_baseline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Closes with a reset.
fn reset(tcp: TcpStream) {
    reset_on_drop(&tcp);
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

/// PostgreSQL with the test PKI's server certificate, started off the async runtime.
async fn start_postgres(pki: &TestPki) -> Postgres {
    let identity = common::pki::Issued {
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        chain: vec![],
    };
    tokio::task::spawn_blocking(move || Postgres::start(&identity))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_of_bad_clients() {
    let pki = TestPki::new();
    let pg = start_postgres(&pki).await;
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.handshake_timeout", "\"2s\"")
            .set("listen.startup_timeout", "\"2s\""),
    );
    let addr = proxy.addr;
    let baseline = warm_baseline(&proxy, &pki).await;

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
    assert_recovered(&proxy, &pki, baseline).await;
    drop(pg);
}

/// A TLS 1.2 ClientHello (after SSLRequest) with the given SNI host name and cipher suites,
/// split into records of at most 16 KiB as a real client would.
fn client_hello(sni: &[u8], suites: &[u16]) -> Vec<u8> {
    fn u16be(n: usize) -> [u8; 2] {
        (n as u16).to_be_bytes()
    }
    let mut ext = Vec::new();
    if !sni.is_empty() {
        ext.extend([0, 0]);
        ext.extend(u16be(sni.len() + 5));
        ext.extend(u16be(sni.len() + 3));
        ext.push(0);
        ext.extend(u16be(sni.len()));
        ext.extend(sni);
    }
    // supported_groups (x25519, P-256), ec_point_formats, signature_algorithms (ECDSA P-256).
    ext.extend([0, 0x0a, 0, 6, 0, 4, 0, 0x1d, 0, 0x17]);
    ext.extend([0, 0x0b, 0, 2, 1, 0]);
    ext.extend([0, 0x0d, 0, 4, 0, 2, 4, 3]);
    let mut body = vec![3, 3];
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend(u16be(suites.len() * 2));
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // null compression only
    body.extend(u16be(ext.len()));
    body.extend(ext);
    let mut handshake = vec![1];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut out = Vec::new();
    for fragment in handshake.chunks(16_384) {
        out.extend([0x16, 3, 1]);
        out.extend(u16be(fragment.len()));
        out.extend(fragment);
    }
    out
}

/// Sends `hello` after SSLRequest and returns the first byte of the answer (None: closed).
async fn answer_to_hello(addr: SocketAddr, hello: &[u8]) -> Option<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    // The proxy may answer (and close) before it has read everything.
    let _ = tcp.write_all(hello).await;
    tokio::time::timeout(Duration::from_secs(5), raw::read_byte(&mut tcp))
        .await
        .expect("an answer or a close within 5 s")
}

unsafe extern "C" {
    fn SSL_renegotiate(ssl: *mut openssl_sys::SSL) -> std::os::raw::c_int;
    fn SSL_do_handshake(ssl: *mut openssl_sys::SSL) -> std::os::raw::c_int;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_huge_sni_10000_suites_renegotiation() {
    use foreign_types::ForeignTypeRef;
    let pki = TestPki::new();
    let pg = start_postgres(&pki).await;
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let addr = proxy.addr;
    let baseline = warm_baseline(&proxy, &pki).await;

    // An SNI of 16,000 bytes (the limit is 255): a fatal alert.
    let answer = answer_to_hello(addr, &client_hello(&[b'a'; 16_000], &[0xc02b])).await;
    assert_eq!(answer, Some(0x15), "a TLS alert");
    // 10,000 cipher suites, one of them acceptable, over two records: the handshake goes on.
    let mut suites: Vec<u16> = (0..9_999).map(|i| 0x0a00 + (i % 0x0500) as u16).collect();
    suites.push(0xc02b);
    let answer = answer_to_hello(addr, &client_hello(b"localhost", &suites)).await;
    assert_eq!(answer, Some(0x16), "a ServerHello");

    // A TLS 1.2 session that asks to renegotiate: refused, and the proxy goes on serving.
    let ca = pki.proxy_ca_path.clone();
    let renegotiated = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(&SSL_REQUEST).unwrap();
        let mut s = [0u8; 1];
        tcp.read_exact(&mut s).unwrap();
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
        b.set_ca_file(&ca).unwrap();
        b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        let mut tls = b.build().connect("localhost", tcp).unwrap();
        tls.write_all(&raw::startup(&[
            ("user", "trusted"),
            ("database", "postgres"),
        ]))
        .unwrap();
        // Up to ReadyForQuery, so the session is in the relay.
        loop {
            let mut head = [0u8; 5];
            tls.read_exact(&mut head).unwrap();
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            tls.read_exact(&mut body).unwrap();
            if head[0] == b'Z' {
                break;
            }
        }
        // SAFETY: the SSL object is live and owned by `tls` for both calls.
        let result = unsafe {
            SSL_renegotiate(tls.ssl().as_ptr());
            SSL_do_handshake(tls.ssl().as_ptr())
        };
        (result, openssl::error::ErrorStack::get().to_string())
    })
    .await
    .unwrap();
    // The proxy answers with a no_renegotiation alert (not silence: that would be a timeout).
    assert_ne!(renegotiated.0, 1, "the renegotiation completed");
    assert!(
        renegotiated.1.contains("no renegotiation"),
        "{}",
        renegotiated.1
    );

    assert_recovered(&proxy, &pki, baseline).await;
    drop(pg);
}
