//! A rollout as a balancer sees it: two replicas behind Debian's HAProxy (`mode tcp`,
//! `send-proxy-v2`, an HTTP check of each replica's `/readyz` on its admin port), a client
//! that opens 50 full TLS sessions a second through it (tokio-postgres, `select 1`, each
//! its own connection), and one replica given SIGTERM in the middle. With
//! `listen.drain_delay` longer than HAProxy takes to see `/readyz` turn 503, no connection
//! is lost; with `drain_delay = "0s"` the listeners close before HAProxy notices, and the
//! connections it sends meanwhile are refused: the case that shows the test can fail.
//!
//! The check runs every 300 ms and needs two failures (`fall 2`), so HAProxy notices between
//! 300 and 600 ms after the signal, never at once: round robin sends the stopped replica
//! one connection in two, every 40 ms, so without the delay at least 7 land in the gap.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::rust_tls;
use common::cluster::{admin_addr, metric};
use common::postgres::{PgOptions, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use tokio::net::TcpStream;
use tokio_postgres::tls::MakeTlsConnect;

/// New sessions a second.
const RATE: u32 = 50;
/// How long the client runs, and when in that time the replica gets SIGTERM.
const RUN: Duration = Duration::from_secs(5);
const SIGTERM_AT: Duration = Duration::from_millis(1500);
/// Longer than HAProxy's detection (600 ms at most, see above) with room for a loaded
/// machine's slow checks; the client still runs when it ends (at 4.5 s), so the close
/// itself is tested too.
const DRAIN_DELAY: &str = "3s";

/// HAProxy in the foreground; killed on drop.
struct Haproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Round robin over `replicas` (`(listen, admin)` addresses) with PROXY v2, each taken
    /// out when its `/readyz` fails twice. No retry and no redispatch: as an NLB, a
    /// connection sent to a replica that refuses it is lost.
    fn start(replicas: &[(SocketAddr, SocketAddr)]) -> Haproxy {
        let found = Command::new("sh")
            .args(["-c", "command -v haproxy"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "haproxy is not installed: run scripts/setup-deps (Debian package haproxy)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
             timeout server 30s\n    timeout check 1s\n    retries 0\n\
             frontend pg\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance roundrobin\n    option httpchk\n    \
             http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host haproxy\n    \
             http-check expect status 200\n"
        );
        for (i, (listen, admin)) in replicas.iter().enumerate() {
            config.push_str(&format!(
                "    server r{i} {listen} send-proxy-v2 check port {} inter 300ms fall 2 rise 1\n",
                admin.port()
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log);
        common::die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().expect("start haproxy");
        common::wait_for("haproxy to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Haproxy { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica behind the balancer, with `listen.drain_delay = drain_delay`.
fn replica(pki: &TestPki, pg: &Postgres, drain_delay: &str) -> (Proxy, SocketAddr) {
    let config = ProxyConfig::new(pki, pg.port)
        .set("admin.listen", "\"127.0.0.1:0\"")
        .set("listen.proxy_protocol", "\"v2\"")
        .set("listen.trusted_proxies", "[\"127.0.0.1/32\"]")
        .set("listen.drain_delay", &format!("{drain_delay:?}"))
        .set("listen.shutdown_timeout", "\"5s\"");
    let proxy = Proxy::start(&config);
    let admin = admin_addr(&proxy);
    (proxy, admin)
}

/// `trusted` logs in without a password (PostgreSQL's `trust` over TLS): the sessions
/// measure the proxy's connection handling, not SCRAM's key stretching.
fn config() -> tokio_postgres::Config {
    "host=localhost user=trusted dbname=postgres sslmode=require"
        .parse()
        .unwrap()
}

/// One full session through the balancer: TLS, login, `select 1`, Terminate.
async fn session(port: u16, tls: postgres_openssl::MakeTlsConnector) -> Result<(), String> {
    let mut tls = tls;
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = MakeTlsConnect::<TcpStream>::make_tls_connect(&mut tls, "localhost")
        .map_err(|e| e.to_string())?;
    let (client, connection) =
        config()
            .connect_raw(tcp, tls)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("login: {} {}", db.code().code(), db.message()),
                None => format!("login: {e}"),
            })?;
    let connection = tokio::spawn(connection);
    let rows = client
        .simple_query("select 1")
        .await
        .map_err(|e| format!("select 1: {e}"))?;
    let one = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    drop(client);
    let _ = connection.await;
    (one.as_deref() == Some("1"))
        .then_some(())
        .ok_or_else(|| format!("select 1 answered {one:?}"))
}

/// What one rollout did.
struct Figures {
    attempted: usize,
    lost: Vec<String>,
    /// Sessions the stopped replica ended after the signal (served in its drain).
    served_after_sigterm: usize,
    /// How long sessions took, end to end.
    median: Duration,
    slowest: Duration,
}

/// Two replicas with `drain_delay` behind HAProxy; the client runs for [`RUN`] and the first
/// replica gets SIGTERM at [`SIGTERM_AT`].
async fn rollout(pki: &TestPki, pg: &Postgres, drain_delay: &str) -> Figures {
    let (stopped, stopped_admin) = replica(pki, pg, drain_delay);
    let (kept, kept_admin) = replica(pki, pg, drain_delay);
    for admin in [stopped_admin, kept_admin] {
        let ready = move || (metric_status(admin, "/readyz") == 200).then_some(());
        tokio::task::spawn_blocking(move || {
            common::wait_for("/readyz to answer 200", Duration::from_secs(10), ready)
        })
        .await
        .unwrap();
    }
    let haproxy = Haproxy::start(&[(stopped.addr, stopped_admin), (kept.addr, kept_admin)]);
    let tls = rust_tls(pki);
    // Both replicas up in HAProxy's eyes: each has served a session through it.
    let warm_up = Instant::now();
    while [stopped_admin, kept_admin]
        .iter()
        .any(|&a| served(a) == 0.0)
    {
        assert!(
            warm_up.elapsed() < Duration::from_secs(10),
            "HAProxy did not use both replicas:\n{}",
            haproxy.log()
        );
        let _ = session(haproxy.port, tls.clone()).await;
    }

    let port = haproxy.port;
    let mut attempts = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
    let begun = Instant::now();
    let mut signalled = None;
    while begun.elapsed() < RUN {
        ticks.tick().await;
        if signalled.is_none() && begun.elapsed() >= SIGTERM_AT {
            stopped.signal(libc::SIGTERM);
            signalled = Some(stopped.log().len());
        }
        let tls = tls.clone();
        attempts.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(10), session(port, tls))
                .await
                .unwrap_or_else(|_| Err("no answer within 10 s".into()));
            (r, t.elapsed())
        }));
    }
    let attempted = attempts.len();
    let mut lost = Vec::new();
    let mut took = Vec::new();
    for attempt in attempts {
        let (result, elapsed) = attempt.await.unwrap();
        took.push(elapsed);
        if let Err(e) = result {
            lost.push(e);
        }
    }
    took.sort();
    let after = stopped.log().split_off(signalled.unwrap_or(0));
    let served_after_sigterm = after.matches("session ended").count();
    drop(haproxy);
    drop(kept);
    Figures {
        attempted,
        lost,
        served_after_sigterm,
        median: took[took.len() / 2],
        slowest: took[took.len() - 1],
    }
}

/// Authenticated sessions a replica has ended.
fn served(admin: SocketAddr) -> f64 {
    metric(admin, "pgt_proxy_sessions_total{outcome=\"authenticated\"}")
}

/// The status of a GET on the admin endpoint.
fn metric_status(admin: SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_loses_no_connection_with_drain_delay_and_some_without() {
    let pki = TestPki::new();
    // Room for the sessions a loaded machine has open at once at 50 a second.
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: vec!["max_connections = 200".into()],
        hba: Vec::new(),
    });
    let with = rollout(&pki, &pg, DRAIN_DELAY).await;
    let without = rollout(&pki, &pg, "0s").await;
    println!(
        "rollout at {RATE}/s for {RUN:?}, SIGTERM at {SIGTERM_AT:?}: \
         drain_delay = \"{DRAIN_DELAY}\": {} attempted, {} lost ({} served by the stopped \
         replica after SIGTERM; sessions took {:?} median, {:?} at most); \
         drain_delay = \"0s\": {} attempted, {} lost ({:?} median, {:?} at most; {:?})",
        with.attempted,
        with.lost.len(),
        with.served_after_sigterm,
        with.median,
        with.slowest,
        without.attempted,
        without.lost.len(),
        without.median,
        without.slowest,
        without.lost.first(),
    );
    assert!(with.attempted >= 150 && without.attempted >= 150);
    assert!(
        with.lost.is_empty(),
        "with drain_delay, lost {} of {}: {:?}",
        with.lost.len(),
        with.attempted,
        with.lost
    );
    assert!(
        !without.lost.is_empty(),
        "without drain_delay no connection was lost: the test cannot tell the difference"
    );
    assert!(
        without.lost.iter().all(|e| e.starts_with("login:")),
        "the losses are connections refused behind the balancer: {:?}",
        without.lost
    );
}
