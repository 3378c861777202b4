//! Faults the daemon must ride out: running out of file descriptors (accept errors are
//! logged with back-off and the proxy serves again once descriptors free up; it never exits),
//! and a reload every 200 ms during a pgbench run (zero failed transactions).

mod common;

use std::process::Command;
use std::time::Duration;

use common::postgres::{ALICE_PASSWORD, Postgres, bindir};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw;

#[test]
fn descriptor_exhaustion_is_survived() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    // Lower the running proxy's descriptor limit to just above what it uses now.
    let limit = common::open_fds(proxy.pid()) + 8;
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", proxy.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Idle connections until the proxy cannot accept more (the kernel still completes
        // the TCP handshakes into the backlog).
        let mut held = Vec::new();
        for _ in 0..40 {
            held.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
        }
        proxy.wait_log(&["accept failed", "retrying in"]);
        drop(held);
    });
    // Descriptors free up: real sessions work again.
    let info = common::clients::conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    common::wait_for("the proxy to serve again", Duration::from_secs(20), || {
        common::clients::psql(&info, "select 1")
            .status
            .success()
            .then_some(())
    });
    rt.block_on(async { drop(raw::trusted_session(proxy.addr, &pki).await) });
    assert!(!proxy.log().contains("panicked"));
}

#[test]
fn reloads_during_load_lose_nothing() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let info = common::clients::conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    let init = Command::new(bindir().join("pgbench"))
        .args(["-i", "-s", "1", "-q", &info])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let bench = Command::new(bindir().join("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-T", "4", &info])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..18 {
        std::thread::sleep(Duration::from_millis(200));
        proxy.signal(libc::SIGHUP);
    }
    let out = bench.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("number of failed transactions: 0"),
        "{report}"
    );
    let reloads = proxy.log().matches("configuration reloaded").count();
    assert!(reloads >= 10, "only {reloads} reloads");
}
