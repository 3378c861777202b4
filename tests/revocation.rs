//! CRLs on both legs: a revoked upstream certificate refused with FATAL 08001 naming the CRL
//! check, subject and serial; an expired CRL refused unless allowed; a CRL replaced on disk
//! taking effect without a restart (sessions continue); and client certificates (mTLS):
//! missing, from another CA, revoked (FATAL 28000), CN and e-mail mismatches, a good one
//! accepted and logged.

mod common;

use common::clients::{conninfo, psql, psql_ok, rust_connect, rust_refused};
use common::openssl_ca::OpenSslCa;
use common::pki::{Ca, Validity};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};

#[test]
fn upstream_revoked_by_crl_is_refused_naming_the_check() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let ca = OpenSslCa::new(&pki.upstream_ca, &pki.dir.path().join("upstream-ca"));
    let crl = pki.dir.path().join("upstream.crl");
    ca.revoke(&pki.server);
    ca.gencrl(&crl);
    let proxy =
        Proxy::start(&ProxyConfig::new(&pki, pg.port).set("upstream.crl", &toml_path(&crl)));
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("upstream server certificate revoked (CRL)"),
        "{message}"
    );
    assert!(message.contains("subject CN=localhost"), "{message}");
    assert!(
        message.contains(&format!("serial {}", pki.server.serial_hex())),
        "{message}"
    );
}

#[test]
fn expired_crl_fails_unless_allowed() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let ca = OpenSslCa::new(&pki.upstream_ca, &pki.dir.path().join("upstream-ca"));
    let crl = pki.dir.path().join("expired.crl");
    ca.gencrl_expired(&crl);
    let config = ProxyConfig::new(&pki, pg.port).set("upstream.crl", &toml_path(&crl));
    let proxy = Proxy::start(&config);
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(message.contains("CRL has expired"), "{message}");
    drop(proxy);
    let proxy = Proxy::start(&config.set("tls.crl_allow_expired", "true"));
    assert_eq!(
        psql_ok(&conninfo(&proxy, &pki, "alice", ALICE_PASSWORD), "select 1"),
        "1"
    );
}

#[test]
fn a_crl_replaced_on_disk_applies_without_restart() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let ca = OpenSslCa::new(&pki.upstream_ca, &pki.dir.path().join("upstream-ca"));
    let crl = pki.dir.path().join("upstream.crl");
    ca.gencrl(&crl);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("upstream.crl", &toml_path(&crl))
            .set("tls.crl_refresh", "\"200ms\""),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = rt
        .block_on(rust_connect(&proxy, &pki, "alice", ALICE_PASSWORD))
        .unwrap();

    // The CA revokes the server's certificate and publishes a new CRL over the old file.
    ca.revoke(&pki.server);
    let fresh = pki.dir.path().join("upstream.crl.new");
    ca.gencrl(&fresh);
    std::fs::rename(&fresh, &crl).unwrap();
    proxy.wait_log(&["CRL files changed"]);
    proxy.wait_log(&["configuration reloaded"]);
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(message.contains("revoked (CRL)"), "{message}");
    // The session that was already open is not dropped.
    let row = rt.block_on(session.query_one("select 1", &[])).unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

/// A client CA with certificates for alice (CN and e-mail) and a revoked one.
struct ClientPki {
    ca: Ca,
    ca_path: std::path::PathBuf,
    openssl: OpenSslCa,
    crl: std::path::PathBuf,
}

fn client_pki(pki: &TestPki) -> ClientPki {
    let ca = Ca::new("Test Client CA");
    let ca_path = ca.write_cert(&pki.dir.path().join("client-ca.pem"));
    let openssl = OpenSslCa::new(&ca, &pki.dir.path().join("client-ca"));
    let crl = pki.dir.path().join("client.crl");
    openssl.gencrl(&crl);
    ClientPki {
        ca,
        ca_path,
        openssl,
        crl,
    }
}

/// psql with a client certificate (or none), returning (success, stdout + stderr).
fn psql_cert(
    proxy: &Proxy,
    pki: &TestPki,
    user: &str,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> (bool, String) {
    let mut info = conninfo(proxy, pki, user, ALICE_PASSWORD);
    match cert {
        Some((c, k)) => info.push_str(&format!(" sslcert={} sslkey={}", c.display(), k.display())),
        None => info.push_str(" sslcert=/nonexistent sslkey=/nonexistent"),
    }
    let out = psql(&info, "select current_user");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn mtls_proxy(pki: &TestPki, pg: &Postgres, client: &ClientPki, user_rule: &str) -> Proxy {
    Proxy::start(
        &ProxyConfig::new(pki, pg.port)
            .set("listen.client_ca", &toml_path(&client.ca_path))
            .set("listen.client_crl", &toml_path(&client.crl))
            .set("listen.client_cert_user", &format!("{user_rule:?}")),
    )
}

#[test]
fn client_certificates_good_missing_foreign_and_revoked() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let client = client_pki(&pki);
    let alice = client
        .ca
        .issue("alice", &["email:alice@example.com"], Validity::Current);
    let (alice_crt, alice_key) = alice.write(pki.dir.path(), "alice");
    let proxy = mtls_proxy(&pki, &pg, &client, "off");

    let (ok, out) = psql_cert(&proxy, &pki, "alice", Some((&alice_crt, &alice_key)));
    assert!(ok, "{out}");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    assert!(line.contains("client_cert_subject=\"CN=alice\""), "{line}");
    assert!(
        line.contains(&format!("client_cert_serial=\"{}\"", alice.serial_hex())),
        "{line}"
    );
    assert!(
        line.contains("client_cert_issuer=\"CN=Test Client CA\""),
        "{line}"
    );

    let (ok, out) = psql_cert(&proxy, &pki, "alice", None);
    assert!(!ok, "{out}");
    proxy.wait_log(&["client certificate not accepted: no certificate presented"]);

    let foreign = Ca::new("Another CA").issue("alice", &[], Validity::Current);
    let (crt, key) = foreign.write(pki.dir.path(), "foreign");
    let (ok, out) = psql_cert(&proxy, &pki, "alice", Some((&crt, &key)));
    assert!(!ok, "{out}");
    proxy.wait_log(&["client certificate not accepted", "subject CN=alice"]);

    // Revoked: the CA revokes mallory's certificate and the proxy reloads its CRL.
    let mallory = client.ca.issue("mallory", &[], Validity::Current);
    let (crt, key) = mallory.write(pki.dir.path(), "mallory");
    client.openssl.revoke(&mallory);
    client.openssl.gencrl(&client.crl);
    proxy.signal(libc::SIGHUP);
    proxy.wait_log(&["configuration reloaded"]);
    let (ok, out) = psql_cert(&proxy, &pki, "alice", Some((&crt, &key)));
    assert!(!ok);
    assert!(
        out.contains("client certificate revoked (CRL): subject CN=mallory"),
        "{out}"
    );
    proxy.wait_log(&[
        "session refused",
        "client certificate revoked",
        "sqlstate=\"28000\"",
    ]);
    // alice still gets in.
    assert!(psql_cert(&proxy, &pki, "alice", Some((&alice_crt, &alice_key))).0);
}

#[test]
fn client_certificate_user_rules() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    pg.admin("create role \"alice@example.com\" login password 'alice-pw'");
    let client = client_pki(&pki);
    let alice = client
        .ca
        .issue("alice", &["email:alice@example.com"], Validity::Current);
    let (crt, key) = alice.write(pki.dir.path(), "alice");

    let proxy = mtls_proxy(&pki, &pg, &client, "cn");
    assert!(psql_cert(&proxy, &pki, "alice", Some((&crt, &key))).0);
    let (ok, out) = psql_cert(&proxy, &pki, "bob", Some((&crt, &key)));
    assert!(!ok);
    assert!(
        out.contains("certificate authentication failed for user \"bob\": the client certificate's CN is \"alice\""),
        "{out}"
    );
    proxy.wait_log(&["session refused", "user=\"bob\"", "sqlstate=\"28000\""]);
    drop(proxy);

    let proxy = mtls_proxy(&pki, &pg, &client, "san-email");
    assert!(psql_cert(&proxy, &pki, "alice@example.com", Some((&crt, &key))).0);
    let (ok, out) = psql_cert(&proxy, &pki, "alice", Some((&crt, &key)));
    assert!(!ok);
    assert!(
        out.contains("the client certificate's e-mail address is \"alice@example.com\""),
        "{out}"
    );
}
