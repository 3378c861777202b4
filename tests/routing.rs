//! Many databases behind one port: two real PostgreSQL clusters with different CAs behind one
//! proxy, chosen per connection by the server name the client connected to (SNI) or its
//! database; routes with their own certificates and client CAs; unknown names refused; cancel
//! through a route; a reload adding a route; the route table in check-config.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::clients::{psql, psql_ok, psycopg_connect, rust_tls};
use common::pki::{Ca, Issued, Validity};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, binary, toml_path};

/// Two clusters (orders: the test PKI's upstream CA; billing: a CA of its own, with a
/// `billing` database), and certificates from the proxy CA for the routes' names.
struct Fleet {
    pki: TestPki,
    orders: Postgres,
    billing: Postgres,
    billing_ca: PathBuf,
    orders_cert: (PathBuf, PathBuf),
    wild_cert: (PathBuf, PathBuf),
}

fn fleet() -> Fleet {
    let pki = TestPki::new();
    let orders = Postgres::start(&pki.server);
    let ca2 = Ca::new("Billing Upstream CA");
    let billing_ca = ca2.write_cert(&pki.dir.path().join("billing-ca.pem"));
    let server2: Issued = ca2.issue(
        "localhost",
        &["DNS:localhost", "IP:127.0.0.1"],
        Validity::Current,
    );
    let billing = Postgres::start(&server2);
    billing.admin("create database billing");
    let dir = pki.dir.path();
    let orders_cert = pki
        .proxy_ca
        .issue("orders.db.test", &["DNS:orders.db.test"], Validity::Current)
        .write(dir, "orders");
    let wild_cert = pki
        .proxy_ca
        .issue("*.wild.test", &["DNS:*.wild.test"], Validity::Current)
        .write(dir, "wild");
    Fleet {
        pki,
        orders,
        billing,
        billing_ca,
        orders_cert,
        wild_cert,
    }
}

/// Both upstreams, and the routes: orders.db.test (own certificate) to orders, *.wild.test
/// (own certificate) to billing, database billing to billing. No [upstream]: unrouted
/// connections are refused.
fn routed(f: &Fleet) -> ProxyConfig {
    let q = |p: &PathBuf| toml_path(p);
    ProxyConfig::new(&f.pki, f.orders.port)
        .unset("upstream.host")
        .unset("upstream.port")
        .unset("upstream.ca")
        .unset("upstream.connect_timeout")
        .set("upstreams.orders.host", "\"127.0.0.1\"")
        .set("upstreams.orders.port", &f.orders.port.to_string())
        .set("upstreams.orders.ca", &q(&f.pki.upstream_ca_path))
        .set("upstreams.billing.host", "\"127.0.0.1\"")
        .set("upstreams.billing.port", &f.billing.port.to_string())
        .set("upstreams.billing.ca", &q(&f.billing_ca))
        .append(&format!(
            "[[routes]]\nserver_name = \"orders.db.test\"\nupstream = \"orders\"\ncertificate = {}\nprivate_key = {}\n\
             [[routes]]\nserver_name = \"*.wild.test\"\nupstream = \"billing\"\ncertificate = {}\nprivate_key = {}\n\
             [[routes]]\ndatabase = \"billing\"\nupstream = \"billing\"\n",
            q(&f.orders_cert.0),
            q(&f.orders_cert.1),
            q(&f.wild_cert.0),
            q(&f.wild_cert.1)
        ))
}

/// libpq: `host` for SNI and verification, always reached at 127.0.0.1.
fn info(proxy: &Proxy, f: &Fleet, host: &str, dbname: &str, sslmode: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user=alice password={ALICE_PASSWORD} dbname={dbname} \
         sslmode={sslmode} sslrootcert={} channel_binding=disable connect_timeout=10",
        proxy.port(),
        f.pki.proxy_ca_path.display()
    )
}

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

fn check_config(config: &ProxyConfig, connect: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.render()).unwrap();
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["--config", path.to_str().unwrap(), "check-config"]);
    if connect {
        cmd.arg("--connect");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_prints_the_route_table_connects_and_catches_a_certificate_for_another_name() {
    let f = fleet();
    let (ok, text) = check_config(&routed(&f), true);
    assert!(ok, "{text}");
    // Shown with --nocapture: what an administrator sees.
    eprintln!("{text}");
    for needle in [
        "routes (",
        "orders.db.test",
        "-> orders",
        "*.wild.test",
        "database=billing",
        "anything else",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(text.contains("upstreams.orders (127.0.0.1:"), "{text}");
    assert!(
        text.contains("certificate verified for \"127.0.0.1\""),
        "{text}"
    );
    // A route served with listen.certificate (localhost) for a name it does not cover.
    let wrong =
        routed(&f).append("[[routes]]\nserver_name = \"plain.db.test\"\nupstream = \"orders\"\n");
    let (ok, text) = check_config(&wrong, false);
    assert!(!ok);
    assert!(
        text.contains("listen.certificate is not valid for \"plain.db.test\""),
        "{text}"
    );
    // An upstream that does not exist, and one that does not answer (--connect).
    let missing = routed(&f).append("[[routes]]\ndatabase = \"x\"\nupstream = \"nowhere\"\n");
    let (ok, text) = check_config(&missing, false);
    assert!(
        !ok && text.contains("\"nowhere\" is not an upstream"),
        "{text}"
    );
    let down = routed(&f).set(
        "upstreams.billing.port",
        &common::postgres::free_port().to_string(),
    );
    let (ok, text) = check_config(&down, true);
    assert!(
        !ok && text.contains("upstreams.billing") && text.contains("FAILED"),
        "{text}"
    );
}

#[test]
fn each_upstream_has_its_own_revocation_and_auth() {
    let f = fleet();
    let dir = f.pki.dir.path();
    // orders' server certificate is revoked by its CA's CRL, which only upstreams.orders uses.
    let ca = common::openssl_ca::OpenSslCa::new(&f.pki.upstream_ca, &dir.join("orders-ca"));
    let crl = dir.join("orders.crl");
    ca.revoke(&f.pki.server);
    ca.gencrl(&crl);
    // A second upstream on the billing cluster with SCRAM termination of its own.
    let verifier = f
        .billing
        .admin("select rolpassword from pg_authid where rolname = 'alice'");
    let userlist = dir.join("billing-users.txt");
    std::fs::write(&userlist, format!("\"alice\" \"{verifier}\"\n")).unwrap();
    std::fs::set_permissions(
        &userlist,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let scram_cert = f
        .pki
        .proxy_ca
        .issue("scram.db.test", &["DNS:scram.db.test"], Validity::Current)
        .write(dir, "scram");
    let config = routed(&f)
        .set("upstreams.orders.crl", &toml_path(&crl))
        .set("upstreams.billing_scram.host", "\"127.0.0.1\"")
        .set("upstreams.billing_scram.port", &f.billing.port.to_string())
        .set("upstreams.billing_scram.ca", &toml_path(&f.billing_ca))
        .set("upstreams.billing_scram.auth.mode", "\"scram\"")
        .set("upstreams.billing_scram.auth.userlist", &toml_path(&userlist))
        .append(&format!(
            "[[routes]]\nserver_name = \"scram.db.test\"\nupstream = \"billing_scram\"\ncertificate = {}\nprivate_key = {}\n",
            toml_path(&scram_cert.0),
            toml_path(&scram_cert.1)
        ));
    let proxy = Proxy::start(&config);
    let err = String::from_utf8_lossy(
        &psql(
            &info(&proxy, &f, "orders.db.test", "postgres", "verify-full"),
            "select 1",
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains("upstream server certificate revoked (CRL)"),
        "{err}"
    );
    // billing is not affected by orders' CRL.
    let billing = info(&proxy, &f, "a.wild.test", "postgres", "verify-full");
    assert_eq!(psql_ok(&billing, "select 1"), "1");
    // Only billing_scram terminates SCRAM: libpq's default channel binding works there...
    let scram = info(&proxy, &f, "scram.db.test", "postgres", "verify-full")
        .replace("channel_binding=disable", "channel_binding=require");
    assert_eq!(psql_ok(&scram, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "route=\"billing_scram\""]);
    assert!(
        line.contains("client_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    // ...and is refused with the explanation on a passthrough route.
    let passthrough = billing.replace("channel_binding=disable", "channel_binding=require");
    let err = String::from_utf8_lossy(&psql(&passthrough, "select 1").stderr).into_owned();
    assert!(err.contains("channel binding"), "{err}");
}
