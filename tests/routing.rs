//! Many databases behind one port: two real PostgreSQL clusters with different CAs behind one
//! proxy, chosen per connection by the server name the client connected to (SNI) or its
//! database; routes with their own certificates and client CAs; unknown names refused; cancel
//! through a route; a reload adding a route. The route table in check-config and each
//! upstream's own settings are in routing_upstreams.rs.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::clients::{psql, psql_ok, psycopg_connect, rust_tls};
use common::pki::{Ca, Validity};
use common::postgres::ALICE_PASSWORD;
use common::proxy::{Proxy, toml_path};
use common::routes::{fleet, info, routed};

#[test]
fn three_names_one_port_each_to_its_cluster() {
    let f = fleet();
    let proxy = Proxy::start(&routed(&f));
    let port_of = |host: &str, db: &str| {
        psql_ok(
            &info(&proxy, &f, host, db, "verify-full"),
            "select current_setting('port')",
        )
    };
    assert_eq!(
        port_of("orders.db.test", "postgres"),
        f.orders.port.to_string()
    );
    assert_eq!(
        port_of("ORDERS.db.test", "postgres"),
        f.orders.port.to_string()
    );
    assert_eq!(
        port_of("a.wild.test", "postgres"),
        f.billing.port.to_string()
    );
    // An IP literal sends no SNI: the database route (served with listen.certificate, which
    // covers 127.0.0.1).
    assert_eq!(port_of("127.0.0.1", "billing"), f.billing.port.to_string());
    let line = proxy.wait_log(&["session ended", "server_name=\"a.wild.test\""]);
    assert!(line.contains("route=\"billing\""), "{line}");

    // Names and databases that match nothing: FATAL 08001 after the handshake.
    let err = String::from_utf8_lossy(
        &psql(
            &info(&proxy, &f, "b.c.wild.test", "postgres", "require"),
            "select 1",
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains(
            "pgt-proxy: no route for server name \"b.c.wild.test\" and database \"postgres\""
        ),
        "a wildcard covers one label only: {err}"
    );
    let err = String::from_utf8_lossy(
        &psql(
            &info(&proxy, &f, "127.0.0.1", "postgres", "require"),
            "select 1",
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains("no route for server name none and database \"postgres\""),
        "{err}"
    );
    proxy.wait_log(&["session refused", "sqlstate=\"08001\"", "no route"]);
}

#[test]
fn direct_tls_carries_the_server_name_too() {
    let f = fleet();
    let proxy = Proxy::start(&routed(&f));
    let direct = format!(
        "{} sslnegotiation=direct",
        info(&proxy, &f, "orders.db.test", "postgres", "verify-full")
    );
    assert_eq!(psycopg_connect(&direct), Ok("alice".into()));
    proxy.wait_log(&[
        "session ended",
        "route=\"orders\"",
        "server_name=\"orders.db.test\"",
    ]);
}

#[test]
fn a_route_with_its_own_client_ca_and_the_default_with_another() {
    let f = fleet();
    let dir = f.pki.dir.path();
    let ca_a = Ca::new("Client CA A");
    let ca_b = Ca::new("Client CA B");
    let ca_a_path = ca_a.write_cert(&dir.join("client-a.pem"));
    let ca_b_path = ca_b.write_cert(&dir.join("client-b.pem"));
    let from_a = ca_a
        .issue("alice", &[], Validity::Current)
        .write(dir, "alice-a");
    let from_b = ca_b
        .issue("alice", &[], Validity::Current)
        .write(dir, "alice-b");
    let mtls = f
        .pki
        .proxy_ca
        .issue("mtls.db.test", &["DNS:mtls.db.test"], Validity::Current)
        .write(dir, "mtls");
    let config = routed(&f)
        .set("listen.client_ca", &toml_path(&ca_a_path))
        .append(&format!(
            "[[routes]]\nserver_name = \"mtls.db.test\"\nupstream = \"orders\"\ncertificate = {}\nprivate_key = {}\nclient_ca = {}\n",
            toml_path(&mtls.0),
            toml_path(&mtls.1),
            toml_path(&ca_b_path)
        ));
    let proxy = Proxy::start(&config);
    let with_cert = |host: &str, (crt, key): &(PathBuf, PathBuf)| {
        let conninfo = format!(
            "{} sslcert={} sslkey={}",
            info(&proxy, &f, host, "postgres", "verify-full"),
            crt.display(),
            key.display()
        );
        psql(&conninfo, "select 1").status.success()
    };
    assert!(
        with_cert("orders.db.test", &from_a),
        "listen.client_ca applies to orders"
    );
    assert!(
        !with_cert("orders.db.test", &from_b),
        "CA B is not trusted there"
    );
    assert!(
        with_cert("mtls.db.test", &from_b),
        "the route's own client_ca"
    );
    assert!(
        !with_cert("mtls.db.test", &from_a),
        "CA A is not trusted on that route"
    );
    proxy.wait_log(&["client certificate not accepted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_cluster_of_each_route() {
    let f = tokio::task::spawn_blocking(fleet).await.unwrap();
    let proxy = Proxy::start(&routed(&f));
    for host in ["orders.db.test", "a.wild.test"] {
        let config = format!(
            "host={host} hostaddr=127.0.0.1 port={} user=alice password={ALICE_PASSWORD} \
             dbname=postgres sslmode=require channel_binding=disable",
            proxy.port()
        );
        let (client, connection) = tokio_postgres::connect(&config, rust_tls(&f.pki))
            .await
            .unwrap();
        tokio::spawn(connection);
        let token = client.cancel_token();
        let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(rust_tls(&f.pki)).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("cancelled within 10 s")
            .unwrap()
            .unwrap_err();
        let db = err.as_db_error().expect("the server's ErrorResponse");
        assert_eq!(db.code().code(), "57014", "{host}: {}", db.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_route_while_sessions_on_others_continue() {
    let f = tokio::task::spawn_blocking(fleet).await.unwrap();
    let dir = f.pki.dir.path();
    let extra = f
        .pki
        .proxy_ca
        .issue("extra.db.test", &["DNS:extra.db.test"], Validity::Current)
        .write(dir, "extra");
    let proxy = Proxy::start(&routed(&f));
    let config = format!(
        "host=orders.db.test hostaddr=127.0.0.1 port={} user=alice password={ALICE_PASSWORD} \
         dbname=postgres sslmode=require channel_binding=disable",
        proxy.port()
    );
    let (live, connection) = tokio_postgres::connect(&config, rust_tls(&f.pki))
        .await
        .unwrap();
    tokio::spawn(connection);
    let with_extra = routed(&f).append(&format!(
        "[[routes]]\nserver_name = \"extra.db.test\"\nupstream = \"billing\"\ncertificate = {}\nprivate_key = {}\n",
        toml_path(&extra.0),
        toml_path(&extra.1)
    ));
    std::fs::write(&proxy.config_path, with_extra.render()).unwrap();
    proxy.signal(libc::SIGHUP);
    proxy.wait_log(&["configuration reloaded"]);
    let conninfo = info(&proxy, &f, "extra.db.test", "postgres", "verify-full");
    let port =
        tokio::task::spawn_blocking(move || psql_ok(&conninfo, "select current_setting('port')"))
            .await
            .unwrap();
    assert_eq!(port, f.billing.port.to_string());
    let row = live
        .query_one("select current_setting('port')", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        f.orders.port.to_string(),
        "the live session stays"
    );
}
