//! Key exchange in FIPS mode on Debian 13's OpenSSL 3.5 (a trixie root,
//! `scripts/trixie-root`): NIST curves only with a FIPS provider that has no ML-KEM (the test
//! provider, 3.1.2, built by `scripts/fips-provider`), SecP256r1MLKEM768 first on both legs
//! with trixie's own provider (3.5, FIPS 203), and the start log and `check-config` saying
//! which. Clients are trixie's
//! `openssl s_client` and psql 17; servers its `openssl s_server` and PostgreSQL 17.
//! Needs root (chroot).

mod common;

use common::fips_provider::{FipsProvider, fips_config_in_trixie};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::pq::{SServer, check_config, psql17, s_client};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::trixie::Postgres17;
use common::wire::Wire;

/// FIPS mode on OpenSSL 3.5 with the test provider (3.1.2, FIPS 140-3 validated, no ML-KEM):
/// the NIST curves only, and the start log and check-config say so; trixie's default client
/// and psql 17 (whose libpq offers X25519MLKEM768 and X25519 first) get P-256, PostgreSQL
/// too, and a post-quantum-only client the no-common-group line. Toward servers the other
/// NIST curves too (P-384 after a HelloRetryRequest), and a server that accepts only
/// SecP256r1MLKEM768 is refused.
#[test]
fn fips_mode_on_openssl_3_5_without_ml_kem_in_the_provider_offers_nist_curves() {
    let version = "3.1.2";
    let pki = TestPki::in_trixie();
    let conf = fips_config_in_trixie(pki.dir.path(), FipsProvider::Built(version));
    let pg = Postgres::start(&pki.server);
    let fips = |c: ProxyConfig| {
        c.set("tls.fips", "\"require\"")
            .set("tls.openssl_config", &toml_path(&conf))
    };
    let config = fips(ProxyConfig::new(&pki, pg.port));
    let (ok, text) = check_config(&config, true);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "FIPS mode: active, OpenSSL FIPS Provider {version} (build {version})"
        )),
        "{text}"
    );
    let expected = "key exchange: NIST curves only (the FIPS provider has no ML-KEM); \
                    listen.groups = P-256:P-384:P-521; upstream.groups = P-256:P-384:P-521";
    assert!(text.contains(expected), "{text}");
    let proxy = Proxy::start_in_trixie(&config);
    proxy.wait_log(&[&format!(
        "FIPS mode active: OpenSSL FIPS Provider {version}"
    )]);
    proxy.wait_log(&[expected]);
    let out = s_client(proxy.port(), &pki, None);
    assert!(out.contains("Peer Temp Key: ECDH, prime256v1,"), "{out}");
    let out = psql17(proxy.port(), &pki, "alice", ALICE_PASSWORD, "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    assert!(line.contains("client_tls_group=\"secp256r1\""), "{line}");
    assert!(line.contains("upstream_tls_group=\"secp256r1\""), "{line}");
    let _ = s_client(proxy.port(), &pki, Some("X25519MLKEM768"));
    proxy.wait_log(&[
        "no key-exchange group in common (the client offered only X25519MLKEM768; \
         listen.groups allows P-256:P-384:P-521)",
    ]);
    drop(proxy);

    for (groups, expected) in [("P-384", Some("secp384r1")), ("SecP256r1MLKEM768", None)] {
        let server = SServer::start(&pki.server, pki.dir.path(), groups);
        let wire = Wire::to(server.port);
        let proxy = Proxy::start_in_trixie(&fips(
            ProxyConfig::new(&pki, wire.port)
                .set("upstream.tls_negotiation", "\"direct\"")
                .set("listen.startup_timeout", "\"1s\""),
        ));
        let out = psql17(proxy.port(), &pki, "alice", "x", "select 1");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = proxy.wait_log(&["session refused", "upstream_tls_group="]);
        match expected {
            Some(group) => {
                let needle = format!("upstream_tls_group=\"{group}\"");
                assert!(line.contains(&needle), "{line}");
                assert_eq!(wire.hello_retries(), (1, 1), "{line}");
            }
            None => {
                assert!(
                    stderr.contains("TLS handshake with upstream server"),
                    "{stderr}"
                );
                // The DBA is told what the alert means and which key sets it.
                assert!(
                    stderr.contains(
                        "accepts none of the key-exchange groups offered, P-256:P-384:P-521"
                    ),
                    "{stderr}"
                );
                assert!(line.contains("upstream.groups sets the groups"), "{line}");
                assert!(line.contains("sqlstate=\"08001\""), "{line}");
            }
        }
    }
}

/// FIPS mode on OpenSSL 3.5 with trixie's own FIPS provider (3.5, ML-KEM per FIPS 203):
/// SecP256r1MLKEM768 first on both legs, to a client that offers it and to a server that
/// accepts only it (no HelloRetryRequest), while PostgreSQL 17 gets P-256.
#[test]
fn fips_mode_on_openssl_3_5_with_ml_kem_in_the_provider_offers_secp256r1mlkem768() {
    let pki = TestPki::in_trixie();
    let conf = fips_config_in_trixie(pki.dir.path(), FipsProvider::Trixie);
    let fips = |c: ProxyConfig| {
        c.set("tls.fips", "\"require\"")
            .set("tls.openssl_config", &toml_path(&conf))
    };
    let pg = Postgres17::start(&pki.server);
    let config = fips(ProxyConfig::new(&pki, pg.port));
    let (ok, text) = check_config(&config, true);
    assert!(ok, "{text}");
    let expected = "key exchange: post-quantum first (SecP256r1MLKEM768: the FIPS provider \
                    implements ML-KEM), then NIST curves; listen.groups = \
                    SecP256r1MLKEM768/P-256:P-384:P-521; upstream.groups = \
                    *SecP256r1MLKEM768:*P-256:P-384:P-521";
    assert!(text.contains(expected), "{text}");
    let proxy = Proxy::start_in_trixie(&config);
    proxy.wait_log(&["FIPS mode active: OpenSSL FIPS Provider 3.5"]);
    proxy.wait_log(&[expected]);
    let out = s_client(proxy.port(), &pki, Some("SecP256r1MLKEM768:P-256"));
    assert!(
        out.contains("Negotiated TLS1.3 group: SecP256r1MLKEM768"),
        "{out}"
    );
    let out = psql17(proxy.port(), &pki, "postgres", "x", "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = proxy.wait_log(&["session ended", "user=\"postgres\""]);
    assert!(line.contains("upstream_tls_group=\"secp256r1\""), "{line}");
    drop(proxy);

    // A server that accepts only SecP256r1MLKEM768.
    let server = SServer::start(&pki.server, pki.dir.path(), "SecP256r1MLKEM768");
    let wire = Wire::to(server.port);
    let proxy = Proxy::start_in_trixie(&fips(
        ProxyConfig::new(&pki, wire.port)
            .set("upstream.tls_negotiation", "\"direct\"")
            .set("listen.startup_timeout", "\"1s\""),
    ));
    let _ = psql17(proxy.port(), &pki, "alice", "x", "select 1");
    let line = proxy.wait_log(&["upstream_tls_group="]);
    assert!(
        line.contains("upstream_tls_group=\"SecP256r1MLKEM768\""),
        "{line}"
    );
    assert_eq!(wire.hello_retries(), (1, 0), "{line}");
    drop(server);
}
