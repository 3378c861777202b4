//! OCSP against real `openssl ocsp` responders: good, revoked, unknown and down, in
//! soft-fail and hard-fail, on the upstream leg (FATAL 08001) and the client leg (FATAL
//! 28000); the responder named by the certificate's AIA; answers cached until nextUpdate.

mod common;

use std::time::{Duration, Instant};

use common::clients::{conninfo, psql, psql_ok, rust_refused};
use common::openssl_ca::OpenSslCa;
use common::pki::{Ca, Validity};
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};

fn connects(proxy: &Proxy, pki: &TestPki) -> bool {
    psql(&conninfo(proxy, pki, "alice", ALICE_PASSWORD), "select 1")
        .status
        .success()
}

/// A server, the upstream CA as an `openssl ca` directory, and a proxy with `upstream.ocsp`
/// = `mode` asking the responder on `port`.
fn setup(mode: &str, port: u16, register_server: bool) -> (TestPki, Postgres, OpenSslCa, Proxy) {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let ca = OpenSslCa::new(&pki.upstream_ca, &pki.dir.path().join("upstream-ca"));
    if register_server {
        ca.register(&pki.server);
    }
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("upstream.ocsp", &format!("{mode:?}"))
            .set(
                "upstream.ocsp_responder",
                &format!("\"http://127.0.0.1:{port}\""),
            )
            .set("tls.ocsp_timeout", "\"2s\""),
    );
    (pki, pg, ca, proxy)
}

#[test]
fn good_is_accepted_and_cached_until_next_update() {
    let port = free_port();
    let (pki, _pg, ca, proxy) = setup("hard-fail", port, true);
    // This responder answers one request, then exits.
    let mut responder = ca.responder(port, 1, Some(1));
    for _ in 0..5 {
        assert!(connects(&proxy, &pki));
    }
    common::wait_for(
        "the responder to have answered",
        Duration::from_secs(5),
        || responder.exited().then_some(()),
    );
    // Within nextUpdate (one minute) nobody asks again; after it, the proxy asks again.
    let answered = Instant::now();
    std::thread::sleep(Duration::from_secs(62).saturating_sub(answered.elapsed()));
    let mut second = ca.responder(port, 1, Some(1));
    assert!(connects(&proxy, &pki));
    common::wait_for(
        "the second responder's request",
        Duration::from_secs(5),
        || second.exited().then_some(()),
    );
}

#[test]
fn revoked_is_refused_in_both_modes() {
    for mode in ["soft-fail", "hard-fail"] {
        let port = free_port();
        let (pki, _pg, ca, proxy) = setup(mode, port, true);
        ca.revoke(&pki.server);
        let _responder = ca.responder(port, 5, None);
        let (code, message) = rust_refused(&proxy, &pki);
        assert_eq!(code, "08001", "{mode}");
        assert!(
            message.contains("upstream server certificate revoked (OCSP)"),
            "{mode}: {message}"
        );
        assert!(message.contains("subject CN=localhost"), "{message}");
    }
}

#[test]
fn responder_down_soft_fail_accepts_hard_fail_refuses() {
    let port = free_port();
    let (pki, _pg, _ca, proxy) = setup("soft-fail", port, true);
    assert!(connects(&proxy, &pki));
    proxy.wait_log(&[
        "revocation status unknown (OCSP)",
        "unreachable",
        "soft-fail",
    ]);
    let (pki, _pg, _ca, proxy) = setup("hard-fail", port, true);
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("revocation status unknown (OCSP)"),
        "{message}"
    );
    assert!(
        message.contains(&format!("responder http://127.0.0.1:{port} unreachable")),
        "{message}"
    );
}

#[test]
fn unknown_certificate_soft_fail_accepts_hard_fail_refuses() {
    let port = free_port();
    // The server's certificate is not in the CA's database: the responder says "unknown".
    let (pki, _pg, ca, proxy) = setup("hard-fail", port, false);
    let _responder = ca.responder(port, 5, None);
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("does not know the certificate"),
        "{message}"
    );
    drop(proxy);
    let port2 = free_port();
    let (pki, _pg, ca, proxy) = setup("soft-fail", port2, false);
    let _responder = ca.responder(port2, 5, None);
    assert!(connects(&proxy, &pki));
}

#[test]
fn the_responder_named_in_the_certificate_is_used() {
    let port = free_port();
    let pki = TestPki::new();
    let server = pki.upstream_ca.issue_with_ocsp(
        "localhost",
        &["DNS:localhost", "IP:127.0.0.1"],
        &format!("http://127.0.0.1:{port}"),
    );
    let pg = Postgres::start(&server);
    let ca = OpenSslCa::new(&pki.upstream_ca, &pki.dir.path().join("upstream-ca"));
    ca.revoke(&server);
    let mut responder = ca.responder(port, 5, Some(1));
    let proxy =
        Proxy::start(&ProxyConfig::new(&pki, pg.port).set("upstream.ocsp", "\"hard-fail\""));
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(message.contains("revoked (OCSP)"), "{message}");
    common::wait_for(
        "the responder to have answered",
        Duration::from_secs(5),
        || responder.exited().then_some(()),
    );
}

#[test]
fn client_certificate_revoked_by_ocsp_gets_28000() {
    let port = free_port();
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let client_ca = Ca::new("Test Client CA");
    let client_ca_path = client_ca.write_cert(&pki.dir.path().join("client-ca.pem"));
    let ca = OpenSslCa::new(&client_ca, &pki.dir.path().join("client-ca"));
    let alice = client_ca.issue("alice", &[], Validity::Current);
    let mallory = client_ca.issue("mallory", &[], Validity::Current);
    ca.register(&alice);
    ca.revoke(&mallory);
    let _responder = ca.responder(port, 5, None);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.client_ca", &toml_path(&client_ca_path))
            .set("listen.client_ocsp", "\"hard-fail\"")
            .set(
                "listen.client_ocsp_responder",
                &format!("\"http://127.0.0.1:{port}\""),
            ),
    );
    let with_cert = |issued: &common::pki::Issued, name: &str| {
        let (crt, key) = issued.write(pki.dir.path(), name);
        format!(
            "{} sslcert={} sslkey={}",
            conninfo(&proxy, &pki, "alice", ALICE_PASSWORD),
            crt.display(),
            key.display()
        )
    };
    assert_eq!(
        psql_ok(&with_cert(&alice, "alice"), "select current_user"),
        "alice"
    );
    let out = psql(&with_cert(&mallory, "mallory"), "select 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("client certificate revoked (OCSP): subject CN=mallory"),
        "{err}"
    );
    proxy.wait_log(&["session refused", "revoked (OCSP)", "sqlstate=\"28000\""]);
}
