//! Rollouts and probes as a balancer and a kubelet see them, over real sockets: with
//! `listen.drain_delay`, SIGTERM turns `/readyz` to 503 at once while new logins are still
//! served until the delay ends, and only then does the port refuse (at once without it);
//! `/readyz` is 503 while the proxy is at `listen.max_connections` (unless
//! `admin.ready_at_max_connections`); `/healthz` is 503 while a session thread is stopped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::clients::{conninfo, psql, psql_ok};
use common::cluster::{admin_addr, metric};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};

/// One HTTP/1.1 GET; the status code and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    (status.unwrap_or(0), body.to_owned())
}

fn config(pki: &TestPki, pg: &Postgres) -> ProxyConfig {
    ProxyConfig::new(pki, pg.port).set("admin.listen", "\"127.0.0.1:0\"")
}

/// Starts the proxy and waits until a balancer would send it connections.
fn ready_proxy(config: &ProxyConfig) -> (Proxy, SocketAddr) {
    let proxy = Proxy::start(config);
    let admin = admin_addr(&proxy);
    common::wait_for("/readyz to answer 200", Duration::from_secs(10), || {
        (get(admin, "/readyz").0 == 200).then_some(())
    });
    (proxy, admin)
}

/// A session that runs `select pg_sleep(seconds)`, started and counted by the proxy.
fn held_session(
    proxy: &Proxy,
    pki: &TestPki,
    admin: SocketAddr,
    seconds: u32,
) -> std::thread::JoinHandle<std::process::Output> {
    let info = conninfo(proxy, pki, "alice", ALICE_PASSWORD);
    let sql = format!("select pg_sleep({seconds})");
    let session = std::thread::spawn(move || psql(&info, &sql));
    common::wait_for("the session to start", Duration::from_secs(10), || {
        (metric(admin, "pgt_proxy_sessions_active") >= 1.0).then_some(())
    });
    session
}

fn refuses(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn drain_delay_serves_new_logins_after_sigterm_then_the_port_refuses() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = config(&pki, &pg)
        .set("listen.drain_delay", "\"2s\"")
        .set("listen.shutdown_timeout", "\"10s\"");
    let (proxy, admin) = ready_proxy(&config);
    // Keeps the process in its shutdown_timeout drain after the listeners close, so a
    // refused port below is the closed listener, not an exited process.
    let session = held_session(&proxy, &pki, admin, 6);
    proxy.signal(libc::SIGTERM);
    let sigterm = Instant::now();
    common::wait_for("/readyz to answer 503", Duration::from_millis(500), || {
        (get(admin, "/readyz").0 == 503).then_some(())
    });
    assert!(get(admin, "/readyz").1.contains("draining"));
    // A balancer that has not deregistered the pod yet: a new connection 1 s later is
    // served end to end, a real login and a query through to PostgreSQL.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(sigterm.elapsed()));
    assert!(!refuses(proxy.addr), "refused 1 s into a 2 s drain_delay");
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    assert_eq!(psql_ok(&info, "select 40 + 2"), "42");
    assert!(
        sigterm.elapsed() < Duration::from_secs(2),
        "the login was late"
    );
    // After the delay the listeners close while the process still runs.
    let refused_at = common::wait_for("the port to refuse", Duration::from_secs(4), || {
        refuses(proxy.addr).then(|| sigterm.elapsed())
    });
    assert!(
        refused_at >= Duration::from_millis(1900),
        "the port refused after {refused_at:?}, before drain_delay ran out"
    );
    assert_eq!(get(admin, "/healthz").0, 200, "alive while draining");
    assert!(
        proxy.log().contains("listen.drain_delay"),
        "{}",
        proxy.log()
    );
    let held = session.join().unwrap();
    assert!(
        held.status.success(),
        "the held session was not allowed to finish: {}",
        String::from_utf8_lossy(&held.stderr)
    );
}

#[test]
fn without_drain_delay_the_port_refuses_at_once() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = config(&pki, &pg)
        .set("listen.drain_delay", "\"0s\"")
        .set("listen.shutdown_timeout", "\"10s\"");
    let (proxy, admin) = ready_proxy(&config);
    let _session = held_session(&proxy, &pki, admin, 4);
    proxy.signal(libc::SIGTERM);
    common::wait_for("the port to refuse", Duration::from_millis(500), || {
        refuses(proxy.addr).then_some(())
    });
    assert_eq!(get(admin, "/readyz").0, 503);
    assert_eq!(get(admin, "/healthz").0, 200, "alive while draining");
}

#[test]
fn readyz_is_503_at_max_connections_unless_ready_at_max_connections() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = config(&pki, &pg).set("listen.max_connections", "1");
    let (proxy, admin) = ready_proxy(&config);
    let session = held_session(&proxy, &pki, admin, 3);
    let (status, body) = get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_connections"), "{body}");
    assert_eq!(get(admin, "/healthz").0, 200, "full is not dead");
    assert!(session.join().unwrap().status.success());
    common::wait_for(
        "/readyz to answer 200 again",
        Duration::from_secs(5),
        || (get(admin, "/readyz").0 == 200).then_some(()),
    );
    drop(proxy);

    let config = config.set("admin.ready_at_max_connections", "true");
    let (proxy, admin) = ready_proxy(&config);
    let session = held_session(&proxy, &pki, admin, 2);
    assert_eq!(
        get(admin, "/readyz").0,
        200,
        "ready_at_max_connections = true"
    );
    assert!(session.join().unwrap().status.success());
}

/// The thread id of the proxy's thread named `name`.
fn thread_id(pid: u32, name: &str) -> libc::pid_t {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no thread {name} in process {pid}");
}

#[test]
fn healthz_is_503_while_a_session_thread_is_stopped() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let (proxy, admin) = ready_proxy(&config(&pki, &pg));
    assert_eq!(get(admin, "/healthz").0, 200);
    // Stop one session thread alone (a ptrace stop, not the process's group stop): the
    // rest of the process, the admin endpoint included, keeps running, as when one
    // thread hangs.
    let tid = thread_id(proxy.pid(), "pgt-sessions-0");
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: ptrace and waitpid on our own child's thread; no memory is shared.
    unsafe {
        assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, tid, null, null), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
    }
    let (status, body) = get(admin, "/healthz");
    // SAFETY: as above; the thread is in its ptrace stop.
    let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, null, null) };
    assert_eq!(detached, 0);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("session thread"), "{body}");
    common::wait_for(
        "/healthz to answer 200 again",
        Duration::from_secs(5),
        || (get(admin, "/healthz").0 == 200).then_some(()),
    );
}
