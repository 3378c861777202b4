//! Query cancellation through the proxy: psql's Ctrl-C (a plaintext CancelRequest from
//! libpq 15), libpq 18's encrypted cancel (through psycopg), tokio-postgres's cancel token,
//! and a CancelRequest with a wrong key, which must not be forwarded.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{conninfo, python, rust_connect, rust_tls};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw;
use tokio::io::AsyncWriteExt;

fn setup() -> (TestPki, Postgres, Proxy) {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    (pki, pg, proxy)
}

fn wait_for_sleeper(pg: &Postgres) -> String {
    common::wait_for("pg_sleep to run", Duration::from_secs(10), || {
        let pid = pg.admin("select pid from pg_stat_activity where query like 'select pg_sleep%' and state = 'active'");
        (!pid.is_empty()).then_some(pid)
    })
}

#[test]
fn psql_ctrl_c_cancels_through_the_proxy() {
    let (pki, pg, proxy) = setup();
    let psql = Command::new("psql")
        .args([
            "-X",
            "-d",
            &conninfo(&proxy, &pki, "alice", ALICE_PASSWORD),
            "-c",
            "select pg_sleep(60)",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_sleeper(&pg);
    let sent = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(psql.id() as i32, libc::SIGINT) };
    let out = psql.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    // libpq 15 sends it in plaintext: no TLS on the cancel connection.
    proxy.wait_log(&["cancel request forwarded", "client_tls=\"none\""]);
}

#[test]
fn libpq_18_encrypted_cancel() {
    let (pki, pg, proxy) = setup();
    let script = r#"
import os, threading, time, psycopg
conn = psycopg.connect(os.environ["PGT_CONNINFO"])
def cancel():
    while True:
        with psycopg.connect(os.environ["PGT_CONNINFO"]) as c:
            if c.execute("select count(*) from pg_stat_activity where query like 'select pg_sleep%' and state='active'").fetchone()[0]:
                break
        time.sleep(0.05)
    global sent
    sent = time.monotonic()
    conn.cancel_safe()   # libpq 17+: PQcancelCreate, over TLS like the session
threading.Thread(target=cancel).start()
try:
    conn.execute("select pg_sleep(60)")
    print("not cancelled")
except psycopg.errors.QueryCanceled:
    print("cancelled after", round(time.monotonic() - sent, 3))
"#;
    let start = Instant::now();
    let out = python(script, &conninfo(&proxy, &pki, "alice", ALICE_PASSWORD));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("cancelled after"), "{stdout}");
    let after: f64 = stdout.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(after < 1.0, "cancel took {after}s");
    assert!(start.elapsed() < Duration::from_secs(30));
    proxy.wait_log(&["cancel request forwarded", "client_tls=\"TLSv1.3"]);
    drop(pg);
}

#[test]
fn tokio_postgres_cancel_token() {
    let (pki, pg, proxy) = setup();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD))
        .unwrap();
    let token = client.cancel_token();
    let query = rt.spawn(async move { client.simple_query("select pg_sleep(60)").await });
    wait_for_sleeper(&pg);
    let sent = Instant::now();
    rt.block_on(token.cancel_query(rust_tls(&pki))).unwrap();
    let err = rt.block_on(query).unwrap().expect_err("cancelled");
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
}

#[test]
fn a_cancel_with_a_wrong_key_is_not_forwarded() {
    let (pki, pg, proxy) = setup();
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    let sleeper = std::thread::spawn(move || common::clients::psql(&info, "select pg_sleep(2)"));
    let pid: i32 = wait_for_sleeper(&pg).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The server's real pid with a guessed key, in plaintext and inside TLS.
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&raw::cancel_request(pid, &[1, 2, 3, 4]))
            .await
            .unwrap();
        assert_eq!(raw::read_to_close(&mut tcp).await, b"");
        let mut tls = raw::tls_via_ssl_request(proxy.addr, &pki).await;
        tls.write_all(&raw::cancel_request(pid, &[5, 6, 7, 8]))
            .await
            .unwrap();
        assert_eq!(raw::read_to_close(&mut tls).await, b"");
    });
    // The query was not cancelled: it ran its full two seconds.
    let out = sleeper.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = proxy.log();
    assert_eq!(
        log.matches("cancel request matches no live session; not forwarded")
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("cancel request forwarded"));
}
