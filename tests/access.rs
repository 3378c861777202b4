//! Who may connect, and how many at once: `listen.allowed_clients` (28000 after the TLS
//! handshake), `listen.max_connections_per_client` (53300 for the one over), and
//! `listen.reuse_port` (two processes share a port and both serve).

mod common;

use std::time::Duration;

use common::clients::{conninfo, psql, psql_err, psql_ok, rust_connect};
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki};

fn refused(proxy: &Proxy, pki: &TestPki) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(rust_connect(proxy, pki, "alice", ALICE_PASSWORD))
        .expect_err("refused");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not an ErrorResponse: {err}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

#[test]
fn a_client_outside_allowed_clients_gets_28000_after_its_handshake() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.allowed_clients", r#"["10.0.0.0/8", "::1/128"]"#),
    );
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "28000");
    assert_eq!(message, "pgt-proxy: no access from 127.0.0.1");
    proxy.wait_log(&["session refused", "not in listen.allowed_clients"]);
    assert!(
        !pg.log().contains("user=alice"),
        "nothing reached the server"
    );

    let allowed = Proxy::start(
        &ProxyConfig::new(&pki, pg.port).set("listen.allowed_clients", r#"["127.0.0.0/8"]"#),
    );
    assert_eq!(
        psql_ok(
            &conninfo(&allowed, &pki, "alice", ALICE_PASSWORD),
            "select 1"
        ),
        "1"
    );
}

/// A dual-stack listener (`[::]`) receives an IPv4 client as `::ffff:127.0.0.1`: it is judged,
/// counted and logged as the IPv4 address it is, so the IPv4 ranges of `allowed_clients`
/// admit it, and `::/0` alone (IPv6 clients) does not.
#[test]
fn an_ipv4_client_of_a_dual_stack_listener_is_judged_by_its_ipv4_address() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let dual = |allowed: &str| {
        ProxyConfig::new(&pki, pg.port)
            .set("listen.addresses", r#"["[::]:0"]"#)
            .set("listen.allowed_clients", allowed)
    };
    let proxy = Proxy::start(&dual(r#"["127.0.0.1/32"]"#));
    assert_eq!(
        psql_ok(
            &conninfo(&proxy, &pki, "alice", ALICE_PASSWORD),
            "select 'v4 ' || 1"
        ),
        "v4 1"
    );
    let line = proxy.wait_log(&["session ended", "application_name=\"psql\""]);
    assert!(line.contains("client_addr=127.0.0.1:"), "{line}");

    let v6_only = Proxy::start(&dual(r#"["::/0"]"#));
    let err = psql_err(
        &conninfo(&v6_only, &pki, "alice", ALICE_PASSWORD),
        "select 1",
    );
    assert!(
        err.contains("FATAL:  pgt-proxy: no access from 127.0.0.1\n"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_over_the_per_client_limit_gets_53300() {
    let (pki, _pg, proxy) = tokio::task::spawn_blocking(|| {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let proxy = Proxy::start(
            &ProxyConfig::new(&pki, pg.port).set("listen.max_connections_per_client", "1"),
        );
        (pki, pg, proxy)
    })
    .await
    .unwrap();
    let first = rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD)
        .await
        .unwrap();
    let err = rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD)
        .await
        .expect_err("over the limit");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.message(), "too many connections from 127.0.0.1");
    drop(first);
    // The place is given back when the first session ends.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = again.expect("a new session once the first has closed");
    let row = again.query_one("select 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[test]
fn reuse_port_lets_two_processes_share_a_port() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let port = free_port();
    let shared = ProxyConfig::new(&pki, pg.port)
        .set("listen.addresses", &format!("[\"127.0.0.1:{port}\"]"))
        .set("listen.reuse_port", "true");
    let a = Proxy::start(&shared);
    let b = Proxy::start(&shared);
    assert_eq!((a.port(), b.port()), (port, port));
    let info = conninfo(&a, &pki, "alice", ALICE_PASSWORD);
    for _ in 0..8 {
        assert_eq!(psql_ok(&info, "select 1"), "1");
    }
    // Both take connections (the kernel spreads them); one stopping leaves the other serving.
    common::wait_for("both processes to serve", Duration::from_secs(10), || {
        let _ = psql(&info, "select 1");
        (a.log().contains("session ended") && b.log().contains("session ended")).then_some(())
    });
    a.stop();
    assert_eq!(psql_ok(&info, "select 1"), "1");
    // Without reuse_port, a second process cannot bind.
    let alone = shared.set("listen.reuse_port", "false");
    assert!(Proxy::try_start(&alone).is_err(), "the port is taken");
}
