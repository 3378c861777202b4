//! What the routing tests share: two real PostgreSQL clusters with different CAs, the proxy
//! certificates for the routes' names, the routed configuration in front of them, and libpq
//! connection strings that pick a route by server name and database.

use std::path::PathBuf;

use super::pki::{Ca, Issued, Validity};
use super::postgres::{ALICE_PASSWORD, Postgres};
use super::proxy::{Proxy, ProxyConfig, TestPki, toml_path};

/// Two clusters (orders: the test PKI's upstream CA; billing: a CA of its own, with a
/// `billing` database), and certificates from the proxy CA for the routes' names.
pub struct Fleet {
    pub pki: TestPki,
    pub orders: Postgres,
    pub billing: Postgres,
    pub billing_ca: PathBuf,
    pub orders_cert: (PathBuf, PathBuf),
    pub wild_cert: (PathBuf, PathBuf),
}

pub fn fleet() -> Fleet {
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
pub fn routed(f: &Fleet) -> ProxyConfig {
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
pub fn info(proxy: &Proxy, f: &Fleet, host: &str, dbname: &str, sslmode: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user=alice password={ALICE_PASSWORD} dbname={dbname} \
         sslmode={sslmode} sslrootcert={} channel_binding=disable connect_timeout=10",
        proxy.port(),
        f.pki.proxy_ca_path.display()
    )
}
