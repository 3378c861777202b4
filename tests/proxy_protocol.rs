//! What a PROXY protocol v2 header changes at one replica (`listen.proxy_protocol`), with a
//! real PostgreSQL and no balancer: a connection straight to it (no header) is refused with
//! a message, a header from an address outside `listen.trusted_proxies` is refused, the
//! header's client is the one `max_connections_per_client` counts, LOCAL (health checks)
//! proceeds, and malformed or v1 headers are closed.

mod common;

use std::net::Ipv4Addr;

use common::cluster::{refusal, session_from, tcp_from};
use common::postgres::Postgres;
use common::proxy::{Proxy, ProxyConfig, TestPki};
use pgt_proxy::protocol::proxy::{SIGNATURE, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_takes_the_header_only_from_trusted_proxies() {
    let (pki, _pg, proxy) = tokio::task::spawn_blocking(|| {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let proxy = Proxy::start(
            &ProxyConfig::new(&pki, pg.port)
                .set("listen.proxy_protocol", "\"v2\"")
                .set("listen.trusted_proxies", "[\"127.0.0.1/32\"]")
                .set("listen.max_connections_per_client", "1"),
        );
        (pki, pg, proxy)
    })
    .await
    .unwrap();
    let port = proxy.port();
    let balancer = Ipv4Addr::new(127, 0, 0, 1);
    let outsider = Ipv4Addr::new(127, 0, 0, 9);
    let header = |client: &str| encode(client.parse().unwrap(), proxy.addr);

    // Straight to the replica from a trusted address, without a header: told why.
    let err = session_from(&pki, balancer, port, &[]).await.unwrap_err();
    let (code, message) = refusal(err);
    assert_eq!(code, "08P01");
    assert_eq!(
        message,
        "pgt-proxy: this listener expects connections through its load balancer"
    );
    proxy.wait_log(&["session refused", "sent no PROXY protocol v2 header"]);

    // From an address that is not a trusted proxy: refused, header or not.
    let err = session_from(&pki, outsider, port, &[]).await.unwrap_err();
    assert_eq!(
        refusal(err),
        ("28000".into(), "pgt-proxy: no access from 127.0.0.9".into())
    );
    let mut spoofed = header("10.1.2.3:5555");
    spoofed.extend_from_slice(&[0, 0, 0, 8, 4, 210, 22, 47]);
    let mut tcp = tcp_from(outsider, port, &spoofed).await;
    let mut answer = Vec::new();
    // Closed (a reset, since the SSLRequest behind the header is left unread).
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "no 'S' for a spoofed header: {answer:?}");
    let line =
        proxy.wait_log(&["sent a PROXY header, but 127.0.0.9 is not in listen.trusted_proxies"]);
    assert!(line.contains("client_addr=127.0.0.9:"), "{line}");
    assert!(
        !proxy.log().contains("10.1.2.3"),
        "the spoofed address is never used"
    );

    // The header's client is the one counted: a second session claiming 10.9.9.9 is over
    // the limit of 1, one claiming 10.9.9.10 is not.
    let first = session_from(&pki, balancer, port, &header("10.9.9.9:1000"))
        .await
        .unwrap();
    let err = session_from(&pki, balancer, port, &header("10.9.9.9:1001"))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(err),
        ("53300".into(), "too many connections from 10.9.9.9".into())
    );
    let other = session_from(&pki, balancer, port, &header("10.9.9.10:1000"))
        .await
        .unwrap();
    other.simple_query("select 1").await.unwrap();
    drop((first, other));
    let line = proxy.wait_log(&["client_addr=10.9.9.10:1000", "session ended"]);
    assert!(line.contains("proxy_addr=127.0.0.1:"), "{line}");

    // LOCAL (a balancer's own check) proceeds with the socket's addresses.
    let mut local = SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let client = session_from(&pki, Ipv4Addr::new(127, 0, 0, 1), port, &local)
        .await
        .unwrap();
    client.simple_query("select 1").await.unwrap();

    // A malformed header and a v1 header are closed.
    let mut bad = SIGNATURE.to_vec();
    bad.extend_from_slice(&[0x11, 0x11, 0, 0]);
    for (preface, logged) in [
        (bad, "malformed PROXY v2 header"),
        (
            b"PROXY TCP4 10.1.1.1 127.0.0.1 1 2\r\n".to_vec(),
            "PROXY protocol v1 header",
        ),
    ] {
        let mut tcp = tcp_from(balancer, port, &preface).await;
        // The proxy may have closed already (a reset, since the header's rest is unread).
        let _ = tcp.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "{logged}: {answer:?}");
        proxy.wait_log(&["session refused", logged]);
    }
}
