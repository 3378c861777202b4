//! A fleet of replicas behind a real load balancer: Debian's HAProxy in `mode tcp` with
//! `send-proxy-v2`, round robin over three pgt-proxy replicas (`[cluster]`) in front of one
//! PostgreSQL. Cancels land on another replica most of the time and must work every time;
//! each replica logs the client's own address (clients bind distinct loopback sources); a
//! client outside `allowed_clients` gets 28000; and `pgbench -C` runs for 30 s without a
//! failed transaction while a replica is stopped (SIGTERM) and started again.
//!
//! What a PROXY header changes at one replica is in proxy_protocol.rs; cancels replicas
//! forward to each other, or cannot, in cluster_peers.rs.

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{conninfo_at, psycopg_connect, python, rust_tls};
use common::cluster::{refusal, session_from, tcp_from};
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
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
