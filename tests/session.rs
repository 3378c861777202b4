//! Sessions through the proxy with real clients against a real PostgreSQL: verify-full login,
//! the channel-binding refusal, relaying large COPY data byte-exactly, the connection limit,
//! server-ended sessions, and the session log line.

mod common;

use std::time::{Duration, Instant};

use common::clients::{conninfo, psql_err, psql_ok, psycopg_connect, python, rust_connect};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};

fn setup() -> (TestPki, Postgres, Proxy) {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    (pki, pg, proxy)
}

#[test]
fn psql_verify_full_through_the_proxy() {
    let (pki, pg, proxy) = setup();
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    // The server sees a TLS session from the proxy, and the query runs as alice.
    let out = psql_ok(
        &info,
        "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()",
    );
    assert_eq!(out, "alice|t");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    for field in [
        "client_addr=127.0.0.1:",
        "client_tls=\"TLSv1.3",
        "upstream_tls=\"TLSv1.3",
        "database=\"postgres\"",
        "application_name=\"psql\"",
        "backend_pid=",
        "outcome=authenticated",
        "duration_ms=",
        "bytes_from_client=",
        "bytes_to_client=",
    ] {
        assert!(line.contains(field), "no {field} in {line}");
    }
    assert!(
        !proxy.log().contains(ALICE_PASSWORD),
        "the password reached the log"
    );
    drop(pg);
}

#[test]
fn wrong_password_is_the_servers_error() {
    let (pki, _pg, proxy) = setup();
    let err = psql_err(&conninfo(&proxy, &pki, "alice", "wrong"), "select 1");
    assert!(
        err.contains("password authentication failed for user \"alice\""),
        "{err}"
    );
    proxy.wait_log(&["session refused", "sqlstate=\"28P01\""]);
}

#[test]
fn default_channel_binding_gets_the_explanatory_error() {
    let (pki, _pg, proxy) = setup();
    // libpq's default channel_binding=prefer picks SCRAM-SHA-256-PLUS when the server
    // offers it, which PostgreSQL does over TLS.
    let info =
        conninfo(&proxy, &pki, "alice", ALICE_PASSWORD).replace("channel_binding=disable", "");
    let err = psql_err(&info, "select 1");
    assert!(err.contains("channel binding"), "{err}");
    assert!(err.contains("channel_binding=disable"), "{err}");
    proxy.wait_log(&[
        "session refused",
        "SCRAM-SHA-256-PLUS",
        "sqlstate=\"28000\"",
    ]);
}

#[test]
fn psycopg_with_libpq_18_connects() {
    let (pki, _pg, proxy) = setup();
    let out = python(
        r#"
import os, psycopg
print(psycopg.pq.version())
with psycopg.connect(os.environ["PGT_CONNINFO"]) as conn:
    print(conn.execute("select current_user").fetchone()[0])
"#,
        &conninfo(&proxy, &pki, "alice", ALICE_PASSWORD),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let libpq: u32 = lines.next().unwrap().parse().unwrap();
    assert!(
        libpq >= 170000,
        "psycopg bundles libpq {libpq}, expected 17+"
    );
    assert_eq!(lines.next(), Some("alice"));
}

#[tokio::test]
async fn rust_client_and_a_100_mb_copy_round_trip() {
    let (pki, _pg, proxy) = setup();
    let client = rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD)
        .await
        .expect("connect");
    client
        .batch_execute("create table blob (line text)")
        .await
        .unwrap();
    // 100 MB of varied lines, written with COPY FROM STDIN and read back with COPY TO STDOUT.
    use futures_util::SinkExt;
    let mut sent = Vec::with_capacity(100 << 20);
    let mut i: u64 = 0;
    while sent.len() < 100 << 20 {
        sent.extend_from_slice(format!("{i:020}-{}\n", "abcdefghij".repeat(10)).as_bytes());
        i += 1;
    }
    let sink = client.copy_in("copy blob from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in sent.chunks(64 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, i);
    use futures_util::StreamExt;
    let stream = client.copy_out("copy blob to stdout").await.unwrap();
    futures_util::pin_mut!(stream);
    let mut received = Vec::with_capacity(sent.len());
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "COPY data differs after the round trip");
}

#[test]
fn max_connections_refuses_with_53300() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port).set("listen.max_connections", "1"));
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    // Hold the one slot with a session that sleeps.
    let holder = std::process::Command::new("psql")
        .args(["-X", "-d", &info, "-c", "select pg_sleep(30)"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("the first session", Duration::from_secs(10), || {
        (pg.admin("select count(*) from pg_stat_activity where query like 'select pg_sleep%'")
            == "1")
            .then_some(())
    });
    let out = common::clients::psql(&info, "select 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("too many connections"), "{err}");
    proxy.wait_log(&["session refused", "outcome=53300", "sqlstate=\"53300\""]);
    // Cancels still get through at the limit, when they matter most: Ctrl-C in the psql
    // that holds the only slot cancels its query.
    let sent = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(holder.id() as i32, libc::SIGINT) };
    let out = holder.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    // The slot frees once the holder is gone.
    common::wait_for("the slot to free", Duration::from_secs(10), || {
        common::clients::psql(&info, "select 1")
            .status
            .success()
            .then_some(())
    });
}

#[test]
fn server_ended_session_reaches_the_client_and_closes_it() {
    let (pki, pg, proxy) = setup();
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    let script = r#"
import os, time, psycopg
conn = psycopg.connect(os.environ["PGT_CONNINFO"], autocommit=True)
print(conn.info.backend_pid, flush=True)
input()
start = time.monotonic()
try:
    conn.execute("select 1")
    print("no error")
except psycopg.OperationalError as e:
    print("error:", e.sqlstate, str(e).splitlines()[0])
conn.close()
print("closed in", round(time.monotonic() - start, 3))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .env("PGT_CONNINFO", &info)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::{BufRead, Write};
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut pid = String::new();
    stdout.read_line(&mut pid).unwrap();
    let pid = pid.trim();
    assert_eq!(
        pg.admin(&format!("select pg_terminate_backend({pid})")),
        "t"
    );
    // The proxy must close the client's connection as soon as the server ends the session.
    proxy.wait_log(&["session ended: server closed"]);
    let started = Instant::now();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        rest.contains("error: 57P01 terminating connection due to administrator command"),
        "{rest}"
    );
    assert!(rest.contains("closed in"), "{rest}");
}

#[test]
fn protocol_3_2_is_negotiated_through_the_proxy() {
    // libpq 18 asks for protocol 3.2; PostgreSQL 15 answers NegotiateProtocolVersion, which
    // the proxy relays like any other startup message.
    let (pki, _pg, proxy) = setup();
    let info = format!(
        "{} max_protocol_version=latest",
        conninfo(&proxy, &pki, "alice", ALICE_PASSWORD)
    );
    assert_eq!(psycopg_connect(&info), Ok("alice".to_owned()));
}
