//! A fleet of replicas behind a real load balancer: Debian's HAProxy in `mode tcp` with
//! `send-proxy-v2`, round robin over three pgt-proxy replicas (`[cluster]`) in front of one
//! PostgreSQL. Cancels land on another replica most of the time and must work every time;
//! each replica logs the client's own address (clients bind distinct loopback sources); a
//! client outside `allowed_clients` gets 28000; and `pgbench -C` runs for 30 s without a
//! failed transaction while a replica is stopped (SIGTERM) and started again.
//!
//! And, without the balancer, what a PROXY header changes at one replica: a connection
//! straight to it (no header) is refused with a message, a header from an untrusted address
//! is refused, the header's client is the one `max_connections_per_client` counts, LOCAL
//! (health checks) proceeds, and malformed or v1 headers are closed.

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{conninfo_at, psycopg_connect, python, rust_tls};
use common::cluster::tcp_from;
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use pgt_proxy::protocol::proxy::{SIGNATURE, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::tls::MakeTlsConnect;

/// HAProxy in the foreground; killed on drop.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Round robin over `backends` (ports on 127.0.0.1) with PROXY v2, health checks every
    /// 200 ms, and retries that go to another replica when one refuses.
    fn start(backends: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    \
             retries 3\n    option redispatch 1\n\
             frontend pg\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            config.push_str(&format!(
                "    server r{} 127.0.0.1:{b} send-proxy-v2 check inter 200ms fall 1 rise 1\n",
                i + 1
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        common::die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().expect(
            "haproxy is installed (Debian package haproxy; scripts/setup-deps installs it)",
        );
        common::wait_for("haproxy to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Haproxy {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replica `id` of the fleet on `ports` (ids 1..=n), trusting the balancer on 127.0.0.1.
fn replica(pki: &TestPki, pg: &Postgres, id: usize, ports: &[u16]) -> ProxyConfig {
    let peers: Vec<String> = (1..=ports.len())
        .filter(|&p| p != id)
        .map(|p| format!("{p} = \"127.0.0.1:{}\"", ports[p - 1]))
        .collect();
    ProxyConfig::new(pki, pg.port)
        .set(
            "listen.addresses",
            &format!("[\"127.0.0.1:{}\"]", ports[id - 1]),
        )
        .set("listen.proxy_protocol", "\"v2\"")
        .set("listen.trusted_proxies", "[\"127.0.0.1\"]")
        // 127.0.0.0 to 127.0.0.7: the test's clients, and not 127.0.0.20.
        .set("listen.allowed_clients", "[\"127.0.0.0/29\"]")
        .set("cluster.peer_id", &id.to_string())
        .set("cluster.ca", &toml_path(&pki.proxy_ca_path))
        .set("cluster.peers", &format!("{{ {} }}", peers.join(", ")))
}

fn client_config() -> tokio_postgres::Config {
    format!(
        "host=localhost user=alice password={ALICE_PASSWORD} dbname=postgres sslmode=require channel_binding=disable"
    )
    .parse()
    .unwrap()
}

/// A tokio-postgres session from `source` to 127.0.0.1:`port` (after `preface`).
async fn session_from(
    pki: &TestPki,
    source: Ipv4Addr,
    port: u16,
    preface: &[u8],
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tcp = tcp_from(source, port, preface).await;
    let tls =
        MakeTlsConnect::<TcpStream>::make_tls_connect(&mut rust_tls(pki), "localhost").unwrap();
    let (client, connection) = client_config().connect_raw(tcp, tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn refusal(e: tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not an ErrorResponse: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Every replica's log, joined.
fn logs(replicas: &[Proxy]) -> String {
    replicas.iter().map(Proxy::log).collect()
}

/// Waits until `watcher` sees a `pg_sleep` running.
async fn wait_for_sleeper(watcher: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = watcher
            .query_one(
                "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "pg_sleep did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `rounds` encrypted cancels (tokio-postgres's cancel token, over TLS), each from its own
/// loopback source through the balancer; returns how many cancelled their query.
async fn encrypted_cancels(pki: &TestPki, port: u16, rounds: usize) -> usize {
    let watcher = session_from(pki, Ipv4Addr::new(127, 0, 0, 1), port, &[])
        .await
        .unwrap();
    let mut cancelled = 0;
    for i in 0..rounds {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 5) as u8);
        let client = session_from(pki, source, port, &[]).await.unwrap();
        let token = client.cancel_token();
        let query = tokio::spawn(async move { client.simple_query("select pg_sleep(20)").await });
        wait_for_sleeper(&watcher).await;
        let tcp = tcp_from(source, port, &[]).await;
        let tls =
            MakeTlsConnect::<TcpStream>::make_tls_connect(&mut rust_tls(pki), "localhost").unwrap();
        token.cancel_query_raw(tcp, tls).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), query).await {
            Ok(Ok(Err(e))) if e.code().is_some_and(|c| c.code() == "57014") => cancelled += 1,
            other => eprintln!("round {i}: not cancelled: {other:?}"),
        }
    }
    cancelled
}

/// `rounds` plaintext cancels (psycopg's `cancel()`, libpq's PQcancel) through the balancer;
/// returns how many cancelled their query.
fn plaintext_cancels(conninfo: &str, rounds: usize) -> usize {
    let script = format!(
        r#"
import os, threading, time, psycopg
info = os.environ["PGT_CONNINFO"]
watcher = psycopg.connect(info, autocommit=True)
cancelled = 0
for i in range({rounds}):
    conn = psycopg.connect(info)
    def cancel():
        while not watcher.execute("select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'").fetchone()[0]:
            time.sleep(0.02)
        conn.cancel()
    t = threading.Thread(target=cancel); t.start()
    try:
        conn.execute("select pg_sleep(20)")
    except psycopg.errors.QueryCanceled:
        cancelled += 1
    t.join()
    conn.close()
print(cancelled)
"#
    );
    let out = python(&script, conninfo);
    assert!(
        out.status.success(),
        "psycopg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Processes are started from the test's own thread: they die with the thread that started
/// them (PR_SET_PDEATHSIG), and a runtime's blocking threads come and go.
#[test]
fn three_replicas_behind_haproxy_act_as_one_proxy() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut replicas: Vec<Proxy> = (1..=3)
        .map(|id| Proxy::start(&replica(&pki, &pg, id, &ports)))
        .collect();
    let haproxy = Haproxy::start(&ports);
    let port = haproxy.port;

    // Each replica's log names the client's own address, and the balancer's.
    for last in [5u8, 6, 7] {
        let source = Ipv4Addr::new(127, 0, 0, last);
        rt.block_on(async {
            let client = session_from(&pki, source, port, &[]).await.unwrap();
            let row = client.query_one("select 1", &[]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), 1);
        });
        let needle = format!("client_addr=127.0.0.{last}:");
        common::wait_for("the session's log line", Duration::from_secs(10), || {
            let all = logs(&replicas);
            all.lines()
                .find(|l| l.contains(&needle) && l.contains("session ended"))
                .map(|l| assert!(l.contains("proxy_addr=127.0.0.1:"), "{l}"))
        });
    }

    // Direct TLS (libpq 17+'s sslnegotiation=direct) through the balancer too.
    let direct = format!(
        "{} sslnegotiation=direct",
        conninfo_at(port, &pki, "alice", ALICE_PASSWORD)
    );
    assert_eq!(psycopg_connect(&direct), Ok("alice".to_owned()));

    // allowed_clients judges the header's address: 127.0.0.20 is outside 127.0.0.0/29.
    let err = rt
        .block_on(session_from(&pki, Ipv4Addr::new(127, 0, 0, 20), port, &[]))
        .expect_err("outside allowed_clients");
    assert_eq!(
        refusal(err),
        (
            "28000".into(),
            "pgt-proxy: no access from 127.0.0.20".into()
        )
    );

    // Cancels work every time, although most land on another replica.
    let encrypted = rt.block_on(encrypted_cancels(&pki, port, 20));
    let plaintext = plaintext_cancels(&conninfo_at(port, &pki, "alice", ALICE_PASSWORD), 20);
    let all = logs(&replicas);
    let via_peer = all.matches("cancel request forwarded to peer").count();
    let to_server = all
        .matches("cancel request forwarded to 127.0.0.1:")
        .count();
    eprintln!(
        "cancels: {encrypted}/20 encrypted and {plaintext}/20 plaintext cancelled; \
         {via_peer} forwarded to the owning peer, {to_server} delivered to the server"
    );
    assert_eq!((encrypted, plaintext), (20, 20));
    assert!(
        via_peer >= 10,
        "most cancels land on another replica: {via_peer}"
    );
    assert_eq!(to_server, 40, "every cancel reached the server once");
    assert!(!all.contains("cancel request dropped"), "{all}");
    // The owner judged and logged the client the forwarded cancel came from, not the peer.
    let from_clients = all
        .lines()
        .filter(|l| l.contains("cancel request forwarded to 127.0.0.1:"))
        .filter(|l| (2..=6).any(|n| l.contains(&format!("client_addr=127.0.0.{n}:"))))
        .count();
    assert_eq!(from_clients, 20, "the encrypted cancels' own sources");

    // pgbench -C for 30 s while replica 2 is stopped (SIGTERM) and started again.
    let script = pki.dir.path().join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    let pgbench = Command::new("pgbench")
        .args(["-n", "-C", "-T", "30", "-c", "2", "-f"])
        .arg(&script)
        .arg(conninfo_at(port, &pki, "alice", ALICE_PASSWORD))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgbench is installed (Debian package postgresql-client)");
    std::thread::sleep(Duration::from_secs(8));
    let status = replicas.remove(1).stop();
    assert!(status.success(), "replica 2 drained and exited: {status}");
    std::thread::sleep(Duration::from_secs(6));
    let restarted = Proxy::start(&replica(&pki, &pg, 2, &ports));
    let out = pgbench.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("pgbench through HAProxy:\n{stdout}{stderr}");
    assert!(out.status.success(), "pgbench failed:\n{stdout}{stderr}");
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("pgbench's transaction count");
    assert!(processed > 100, "{processed} transactions");
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{stdout}"
    );
    assert!(!stderr.contains("aborted"), "{stderr}");
    // HAProxy's checks put the restarted replica back.
    common::wait_for(
        "the restarted replica to serve",
        Duration::from_secs(20),
        || restarted.log().contains("session ended").then_some(()),
    );
}

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
