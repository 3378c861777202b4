//! Replicas that forward cancels to each other prove they are replicas, and forwarding is
//! bounded. Against a real PostgreSQL and real pgt-proxy replicas (`[cluster]`, no
//! balancer): a cancel marked as forwarded by a replica is acted on only over TLS with a
//! client certificate from `cluster.ca` (plaintext, no certificate, a certificate from
//! another CA, even a real replica configured with one: the query keeps running and the
//! owner's log says why), while the replicas' own forwards cancel; a burst of cancels for a
//! peer from one address is cut at `cluster.forward_rate` after the first went through, and
//! at most `cluster.max_concurrent_forwards` are under way; `cluster.ca = "system"` with
//! peers is refused; and a cancel that cannot be forwarded (a peer that does not answer, an
//! unknown peer id, a request forwarded already) is dropped as quietly as a forwarded one.
//!
//! Processes are started from the test's own thread: they die with the thread that started
//! them (PR_SET_PDEATHSIG), and a runtime's blocking threads come and go.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::cluster::{
    HOP, KeyedSession, PEER_SNI, admin_addr, cancel_over_tls, metric, plaintext_cancel, tcp_from,
    tls_client,
};
use common::pki::{Ca, Validity};
use common::postgres::{Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::{runtime, wait_for_sleeper};
use tokio::io::AsyncReadExt;

/// Replica `id` listening on `port`, with `peers` (id, port) on 127.0.0.1, trusting the
/// test's proxy CA as `cluster.ca` (which issued every replica's listen.certificate).
fn replica(pki: &TestPki, pg: u16, id: u16, port: u16, peers: &[(u16, u16)]) -> ProxyConfig {
    let peers: Vec<String> = peers
        .iter()
        .map(|(id, port)| format!("{id} = \"127.0.0.1:{port}\""))
        .collect();
    ProxyConfig::new(pki, pg)
        .set("listen.addresses", &format!("[\"127.0.0.1:{port}\"]"))
        .set("cluster.peer_id", &id.to_string())
        .set("cluster.ca", &toml_path(&pki.proxy_ca_path))
        .set("cluster.peers", &format!("{{ {} }}", peers.join(", ")))
}

/// How many lines of `proxy`'s log contain `needle`.
fn count(proxy: &Proxy, needle: &str) -> usize {
    proxy.log().matches(needle).count()
}

#[test]
fn a_forwarded_cancel_is_acted_on_only_from_a_peer() {
    let rt = runtime();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let owner = Proxy::start(
        &replica(&pki, pg.port, 1, p1, &[(2, p2)]).set("admin.listen", "\"127.0.0.1:0\""),
    );
    let peer = Proxy::start(&replica(&pki, pg.port, 2, p2, &[(1, p1)]));
    // A real replica whose cluster.certificate comes from another CA: it trusts replica 1
    // (cluster.ca), but replica 1 must not trust it.
    let other_ca = Ca::new("Other CA");
    let sans = ["DNS:localhost", "IP:127.0.0.1"];
    let impostor = other_ca.issue("impostor", &sans, Validity::Current);
    let (impostor_cert, impostor_key) = impostor.write(pki.dir.path(), "impostor");
    let outsider = other_ca.issue("outsider", &sans, Validity::Current);
    let stranger = Proxy::start(
        &replica(&pki, pg.port, 3, p3, &[(1, p1)])
            .set("cluster.certificate", &toml_path(&impostor_cert))
            .set("cluster.private_key", &toml_path(&impostor_key)),
    );
    let admin = admin_addr(&owner);

    let mut session = rt.block_on(KeyedSession::open(owner.addr, &pki));
    assert_eq!((session.pid >> 16) & 0x3fff, 1, "the key names replica 1");
    let (pid, key) = (session.pid, session.key.clone());
    rt.block_on(session.start_sleep(60));
    wait_for_sleeper(&pg);
    let still_running = |session: &mut KeyedSession, case: &str| {
        let ended = rt.block_on(session.ended_within(Duration::from_secs(1)));
        assert_eq!(ended, None, "{case}: the query was cancelled");
    };

    // The right key with the replicas' mark, in plaintext.
    rt.block_on(plaintext_cancel(Ipv4Addr::LOCALHOST, p1, pid | HOP, &key));
    owner.wait_log(&[
        "cancel request dropped",
        "marked as forwarded by a replica, but it came in plaintext",
    ]);
    still_running(&mut session, "plaintext");

    // Over TLS without a client certificate (the listener asks none of a client).
    let ssl = tls_client(&pki, "localhost", None);
    rt.block_on(cancel_over_tls(p1, ssl, pid | HOP, &key))
        .unwrap();
    owner.wait_log(&[
        "cancel request dropped",
        "marked as forwarded by a replica, but the connection presented no client certificate",
    ]);
    still_running(&mut session, "TLS without a certificate");

    // With the peers' server name, no certificate: the handshake is refused.
    let ssl = tls_client(&pki, PEER_SNI, None);
    let sent = rt.block_on(cancel_over_tls(p1, ssl, pid | HOP, &key));
    assert!(sent.is_err(), "the handshake went through: {sent:?}");
    owner.wait_log(&[
        "session refused",
        "certificate not accepted: no certificate presented",
    ]);
    still_running(&mut session, "peers' server name without a certificate");

    // With the peers' server name and a certificate from another CA: refused too.
    let ssl = tls_client(&pki, PEER_SNI, Some(&outsider));
    let sent = rt.block_on(cancel_over_tls(p1, ssl, pid | HOP, &key));
    assert!(sent.is_err(), "the handshake went through: {sent:?}");
    owner.wait_log(&["session refused", "certificate not accepted", "outsider"]);
    still_running(&mut session, "a certificate from another CA");

    // A real replica with such a certificate: the owner refuses its forward.
    rt.block_on(plaintext_cancel(Ipv4Addr::LOCALHOST, p3, pid, &key));
    stranger.wait_log(&[
        "cancel request dropped",
        &format!("peer 1 (127.0.0.1:{p1}) refused the forwarded cancel"),
    ]);
    owner.wait_log(&["session refused", "certificate not accepted", "impostor"]);
    still_running(&mut session, "a replica with another CA's certificate");
    assert_eq!(
        metric(
            admin,
            "pgt_proxy_cancel_requests_total{result=\"not_peer\"}"
        ),
        2.0
    );
    assert!(!owner.log().contains("cancel request forwarded"));

    // A peer with its certificate from cluster.ca: cancelled.
    rt.block_on(plaintext_cancel(Ipv4Addr::LOCALHOST, p2, pid, &key));
    let ended = rt.block_on(session.ended_within(Duration::from_secs(10)));
    assert_eq!(
        ended.as_deref(),
        Some("57014"),
        "cancelled through the peer"
    );
    peer.wait_log(&["cancel request forwarded to peer 1"]);
    let line = owner.wait_log(&[&format!(
        "cancel request forwarded to 127.0.0.1:{}",
        pg.port
    )]);
    assert!(
        line.contains("CN=localhost"),
        "the peer's certificate: {line}"
    );
    // No key reaches a log.
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    for log in [owner.log(), peer.log(), stranger.log()] {
        assert!(!log.contains(&hex), "a cancel key in a log");
    }
}

/// The forwarding replica checks the owner's certificate against the address it dialled, as
/// for an upstream: a certificate from `cluster.ca` that names another host (another fleet's
/// replica, or a peer answering at an address not its own) is not sent the key.
#[test]
fn a_peer_whose_certificate_names_another_host_is_not_sent_the_cancel() {
    let rt = runtime();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (p1, p2) = (free_port(), free_port());
    let elsewhere = pki.proxy_ca.issue(
        "pgt-proxy-0.elsewhere",
        &["DNS:pgt-proxy-0.elsewhere.svc.cluster.local"],
        Validity::Current,
    );
    let (cert, key_path) = elsewhere.write(pki.dir.path(), "elsewhere");
    let owner = Proxy::start(
        &replica(&pki, pg.port, 1, p1, &[(2, p2)])
            .set("cluster.certificate", &toml_path(&cert))
            .set("cluster.private_key", &toml_path(&key_path)),
    );
    let forwarder = Proxy::start(&replica(&pki, pg.port, 2, p2, &[(1, p1)]));

    let mut session = rt.block_on(KeyedSession::open(owner.addr, &pki));
    let (pid, key) = (session.pid, session.key.clone());
    rt.block_on(session.start_sleep(60));
    wait_for_sleeper(&pg);
    rt.block_on(plaintext_cancel(Ipv4Addr::LOCALHOST, p2, pid, &key));
    let line = forwarder.wait_log(&[
        "cancel request dropped",
        &format!("peer 1 (127.0.0.1:{p1}) could not be reached"),
    ]);
    assert!(
        line.contains("pgt-proxy-0.elsewhere.svc.cluster.local"),
        "the name check refused it: {line}"
    );
    let ended = rt.block_on(session.ended_within(Duration::from_secs(1)));
    assert_eq!(ended, None, "the query was cancelled");
    assert!(!owner.log().contains("cancel request forwarded"));
}

#[test]
fn a_burst_of_cancels_for_a_peer_is_cut_at_the_rate() {
    let rt = runtime();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (p1, p2) = (free_port(), free_port());
    let edge = Proxy::start(
        &replica(&pki, pg.port, 1, p1, &[(2, p2)])
            .set("cluster.forward_rate", "3")
            .set("admin.listen", "\"127.0.0.1:0\""),
    );
    let owner = Proxy::start(&replica(&pki, pg.port, 2, p2, &[(1, p1)]));
    let admin = admin_addr(&edge);
    let mut session = rt.block_on(KeyedSession::open(owner.addr, &pki));
    let (pid, key) = (session.pid, session.key.clone());
    rt.block_on(session.start_sleep(60));
    wait_for_sleeper(&pg);

    // The first cancel from 127.0.0.1 is within the bound and cancels.
    rt.block_on(plaintext_cancel(Ipv4Addr::LOCALHOST, p1, pid, &key));
    let ended = rt.block_on(session.ended_within(Duration::from_secs(10)));
    assert_eq!(ended.as_deref(), Some("57014"));

    // Then 20 at once from the same address, for the same peer with wrong keys.
    let wrong = vec![0u8; key.len()];
    rt.block_on(async {
        let burst: Vec<_> = (0..20)
            .map(|_| {
                let wrong = wrong.clone();
                tokio::spawn(
                    async move { plaintext_cancel(Ipv4Addr::LOCALHOST, p1, pid, &wrong).await },
                )
            })
            .collect();
        for cancel in burst {
            cancel.await.unwrap();
        }
    });
    let limited_line = "sent more than 3 cancels for other replicas within a second";
    common::wait_for("the burst's log lines", Duration::from_secs(10), || {
        let logged =
            count(&edge, limited_line) + count(&edge, "cancel request forwarded to peer 2");
        (logged == 21).then_some(())
    });
    let limited = count(&edge, limited_line);
    eprintln!("{limited} of 20 cancels beyond the first rate-limited");
    // 3 per second, and the bucket held at most 3: a burst of 20 loses at least 14.
    assert!(limited >= 14, "{limited} rate-limited");
    let line = edge.wait_log(&[limited_line]);
    assert!(line.contains("cancel request dropped"), "{line}");
    assert!(line.contains("client_addr=127.0.0.1:"), "{line}");
    assert_eq!(
        metric(
            admin,
            "pgt_proxy_cancel_requests_total{result=\"rate_limited\"}"
        ),
        limited as f64
    );
    // Another address has its own bucket.
    let other = Ipv4Addr::new(127, 0, 0, 3);
    rt.block_on(plaintext_cancel(other, p1, pid, &wrong));
    edge.wait_log(&[
        "client_addr=127.0.0.3:",
        "cancel request forwarded to peer 2",
    ]);
}

#[test]
fn forwards_under_way_are_capped() {
    let rt = runtime();
    let pki = TestPki::new();
    // A peer that takes the connection and never answers: each forward waits out its 5 s.
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = tarpit.local_addr().unwrap().port();
    let edge = Proxy::start(
        &replica(&pki, free_port(), 1, free_port(), &[(2, silent)])
            .set("cluster.max_concurrent_forwards", "2"),
    );
    let port = edge.port();
    let pid = (2 << 16) | 0x1234;
    let cancels: Vec<_> = (0..5u8)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 1 + i);
            rt.spawn(async move { plaintext_cancel(source, port, pid, &[1, 2, 3, 4]).await })
        })
        .collect();
    let capped = "2 cancels are being forwarded to peers already (cluster.max_concurrent_forwards)";
    common::wait_for("3 cancels over the cap", Duration::from_secs(4), || {
        (count(&edge, capped) == 3).then_some(())
    });
    let waiting = cancels.iter().filter(|c| !c.is_finished()).count();
    assert_eq!(waiting, 2, "two forwards under way");
    for cancel in cancels {
        rt.block_on(cancel).unwrap();
    }
    let unreachable = format!("peer 2 (127.0.0.1:{silent}) could not be reached");
    common::wait_for(
        "the two forwards to time out",
        Duration::from_secs(10),
        || (count(&edge, &unreachable) == 2).then_some(()),
    );
    drop(tarpit);
}

#[test]
fn peers_must_be_verified_by_a_private_ca() {
    let pki = TestPki::new();
    let fleet = replica(&pki, free_port(), 1, free_port(), &[(2, free_port())]);
    let log = Proxy::try_start(&fleet.clone().set("cluster.ca", "\"system\""))
        .err()
        .expect("cluster.ca = \"system\" with peers is refused");
    assert!(
        log.contains("cluster.ca")
            && log.contains("any publicly trusted certificate would pass as a replica"),
        "{log}"
    );
    let (cert, _) = pki.proxy.write(pki.dir.path(), "cluster");
    let log = Proxy::try_start(&fleet.clone().set("cluster.certificate", &toml_path(&cert)))
        .err()
        .expect("a certificate without its key is refused");
    assert!(
        log.contains("cluster.certificate") && log.contains("must be set together"),
        "{log}"
    );
    let log = Proxy::try_start(&fleet.set("cluster.forward_rate", "0"))
        .err()
        .expect("a rate of 0 is refused");
    assert!(log.contains("cluster.forward_rate"), "{log}");
    // Without peers (a fleet of one, so far), "system" stays the harmless default.
    let alone = ProxyConfig::new(&pki, free_port()).set("cluster.peer_id", "1");
    drop(Proxy::start(&alone));
}

/// A cancel for another replica's key that cannot go anywhere: a peer that does not answer,
/// a peer id not in `cluster.peers`, a request a replica forwarded already. Each is dropped
/// with a log line, and the client sees exactly what it sees for a forwarded one: the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_that_cannot_be_forwarded_are_dropped_alike() {
    let closed = free_port();
    let (_pki, proxy) = tokio::task::spawn_blocking(move || {
        let pki = TestPki::new();
        let proxy = Proxy::start(
            &ProxyConfig::new(&pki, free_port())
                .set("cluster.peer_id", "1")
                .set("cluster.ca", &toml_path(&pki.proxy_ca_path))
                .set(
                    "cluster.peers",
                    &format!("{{ 2 = \"127.0.0.1:{closed}\" }}"),
                ),
        );
        (pki, proxy)
    })
    .await
    .unwrap();
    let peer = |id: u32| ((id << 16) | 0x1234) as i32;
    for (pid, logged) in [
        (
            peer(2),
            format!("peer 2 (127.0.0.1:{closed}) could not be reached"),
        ),
        (
            peer(9),
            "names peer 9, which is not in cluster.peers".to_owned(),
        ),
        (
            peer(2) | (1 << 30),
            "a replica forwarded it already; not forwarded again".to_owned(),
        ),
    ] {
        let request = common::raw::cancel_request(pid, &[1, 2, 3, 4]);
        let mut tcp = tcp_from(Ipv4Addr::new(127, 0, 0, 1), proxy.port(), &request).await;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty(), "{logged}: {answer:?}");
        proxy.wait_log(&["cancel request dropped", &logged]);
    }
}

/// The replicas' server name switches the handshake to the cluster context (cluster.ca, not
/// the listener's client CA or CRL): under it a peer may forward a cancel, and no one may
/// start a session, whatever certificate it holds.
#[test]
fn the_peers_server_name_carries_no_session() {
    use std::pin::Pin;
    use tokio::io::AsyncWriteExt;
    let rt = runtime();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (p1, p2) = (free_port(), free_port());
    let owner = Proxy::start(&replica(&pki, pg.port, 1, p1, &[(2, p2)]));
    let answer = rt.block_on(async {
        let mut tcp = tcp_from(Ipv4Addr::LOCALHOST, p1, &common::raw::SSL_REQUEST).await;
        assert_eq!(common::raw::read_byte(&mut tcp).await, Some(b'S'));
        let ssl = tls_client(&pki, PEER_SNI, Some(&pki.proxy));
        let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        Pin::new(&mut tls).connect().await.unwrap();
        let startup = common::raw::startup(&[("user", "alice"), ("database", "postgres")]);
        tls.write_all(&startup).await.unwrap();
        common::raw::read_until_ready(&mut tls).await
    });
    let Some((b'E', body)) = answer.last() else {
        panic!("not refused: {answer:?}")
    };
    let (code, message) = common::raw::error_fields(body);
    assert_eq!(code, "28000", "{message}");
    assert!(message.contains("forwarded cancels only"), "{message}");
    owner.wait_log(&["session refused", "replicas' server name"]);
}
