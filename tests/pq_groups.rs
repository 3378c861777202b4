//! Key exchange that follows the library, on the client leg: the same binary on the host's
//! OpenSSL 3.0 and on Debian 13's OpenSSL 3.5 (a trixie root, `scripts/trixie-root`), with
//! trixie's own clients (`openssl s_client`, psql 17). What a user checks: the group the
//! client leg negotiated in the session log line and the metrics, no HelloRetryRequest where
//! the lists promise none (seen on the wire by a relay), `check-config`'s account, and the log
//! line of a client that shares no group with the proxy. The upstream leg is in
//! tests/pq_upstream.rs, FIPS mode in tests/pq_fips.rs. Needs root (chroot).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::clients::psql_ok;
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::pq::{check_config, psql17, s_client};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::wire::Wire;

/// The admin endpoint's /metrics.
fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Trixie's `openssl s_client` offering only X25519MLKEM768, and psql 17 as it comes, get
/// X25519MLKEM768 from the proxy on OpenSSL 3.5; the host's PostgreSQL (on 3.0, P-256
/// only) gets P-256 upstream. The log lines and the metrics say so.
#[test]
fn trixie_clients_get_x25519mlkem768_from_a_proxy_on_openssl_3_5() {
    let pki = TestPki::in_trixie();
    let pg = Postgres::start(&pki.server);
    let admin = free_port();
    let proxy = Proxy::start_in_trixie(
        &ProxyConfig::new(&pki, pg.port).set("admin.listen", &format!("\"127.0.0.1:{admin}\"")),
    );
    proxy.wait_log(&["key exchange: post-quantum first (X25519MLKEM768"]);

    let out = s_client(proxy.port(), &pki, Some("X25519MLKEM768"));
    assert!(
        out.contains("Negotiated TLS1.3 group: X25519MLKEM768"),
        "{out}"
    );
    // s_client closes after its handshake, before a StartupMessage: no upstream yet.
    proxy.wait_log(&["client_tls_group=\"X25519MLKEM768\"", "session refused"]);

    let out = psql17(proxy.port(), &pki, "alice", ALICE_PASSWORD, "select 'ok'");
    assert!(
        out.status.success(),
        "psql 17: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    assert!(
        line.contains("client_tls_group=\"X25519MLKEM768\""),
        "{line}"
    );
    assert!(line.contains("upstream_tls_group=\"secp256r1\""), "{line}");

    let text = metrics(admin);
    for sample in [
        "pgt_proxy_tls_groups_total{leg=\"client\",group=\"X25519MLKEM768\"} 2",
        "pgt_proxy_tls_groups_total{leg=\"upstream\",group=\"secp256r1\"} 1",
    ] {
        assert!(text.contains(sample), "{sample} missing from:\n{text}");
    }
}

/// The same binary on the host's OpenSSL 3.0 keeps today's lists: check-config says so, and
/// trixie's default client (shares for X25519MLKEM768 and X25519) gets X25519 with no retry.
/// On 3.5, check-config names the post-quantum lists.
#[test]
fn on_openssl_3_0_the_groups_are_todays() {
    let pki = TestPki::in_trixie();
    let config = ProxyConfig::new(&pki, 5432);
    let (ok, text) = check_config(&config, false);
    assert!(ok, "{text}");
    assert!(
        text.contains("key exchange: classical only (OpenSSL 3.0"),
        "{text}"
    );
    assert!(
        text.contains("listen.groups = X25519:P-256:P-384;"),
        "{text}"
    );
    assert!(
        text.contains("upstream.groups = P-256:X25519:P-384"),
        "{text}"
    );
    let (ok, text) = check_config(&config, true);
    assert!(ok, "{text}");
    assert!(
        text.contains("key exchange: post-quantum first (X25519MLKEM768, then classical)"),
        "{text}"
    );
    assert!(
        text.contains("listen.groups = X25519MLKEM768/X25519:P-256:P-384;"),
        "{text}"
    );
    assert!(
        text.contains("upstream.groups = *X25519MLKEM768:*P-256:X25519:P-384"),
        "{text}"
    );

    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let wire = Wire::to(proxy.port());
    let out = s_client(wire.port, &pki, None);
    assert!(out.contains("Peer Temp Key: X25519,"), "{out}");
    assert!(!out.contains("X25519MLKEM768"), "{out}");
    assert_eq!(wire.hello_retries(), (1, 0), "{out}");
    proxy.wait_log(&["client_tls_group=\"x25519\"", "session refused"]);
    // psql on the host (libpq on 3.0) through the same proxy: unchanged.
    let conninfo = common::clients::conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    assert_eq!(psql_ok(&conninfo, "select 1"), "1");
    proxy.wait_log(&[
        "session ended",
        "client_tls_group=\"x25519\"",
        "upstream_tls_group=\"secp256r1\"",
    ]);
}

/// A client whose groups the proxy does not allow is told in the log which groups it
/// offered and which the listener allows: on OpenSSL 3.0 a post-quantum-only client, on
/// 3.5 an X25519-only client when `listen.groups` allows P-384 only.
#[test]
fn a_client_with_no_group_in_common_gets_a_clear_log_line() {
    let pki = TestPki::in_trixie();
    let proxy = Proxy::start(&ProxyConfig::new(&pki, free_port()));
    let out = s_client(proxy.port(), &pki, Some("X25519MLKEM768"));
    assert!(out.contains("Cipher is (NONE)"), "{out}");
    proxy.wait_log(&[
        "client TLS handshake failed: no key-exchange group in common (the client offered \
         only X25519MLKEM768; listen.groups allows X25519:P-256:P-384)",
    ]);
    drop(proxy);

    let proxy = Proxy::start_in_trixie(
        &ProxyConfig::new(&pki, free_port()).set("listen.groups", "\"P-384\""),
    );
    let _ = s_client(proxy.port(), &pki, Some("X25519"));
    proxy.wait_log(&[
        "no key-exchange group in common (the client offered only x25519; listen.groups \
         allows P-384)",
    ]);
    // Its own group is accepted.
    let out = s_client(proxy.port(), &pki, Some("P-384"));
    assert!(out.contains("Peer Temp Key: ECDH, secp384r1,"), "{out}");
}

/// `listen.groups` and `upstream.groups` (and `[upstreams.NAME]`'s) naming a group the
/// library lacks are check-config errors that name it; the same list is fine on 3.5.
#[test]
fn a_group_the_library_lacks_is_a_check_config_error() {
    let pki = TestPki::in_trixie();
    let config = ProxyConfig::new(&pki, 5432)
        .set("listen.groups", "\"X25519MLKEM768:X25519\"")
        .set("upstream.groups", "\"P-256:NoSuchGroup\"")
        .append(&format!(
            "[upstreams.billing]\nhost = \"127.0.0.1\"\nca = {}\ngroups = \"Bogus1:P-256:Bogus2\"\n",
            toml_path(&pki.upstream_ca_path)
        ));
    let (ok, text) = check_config(&config, false);
    assert!(!ok, "{text}");
    for needle in [
        "listen.groups",
        "names group X25519MLKEM768, which OpenSSL 3.0",
        "upstream.groups",
        "names group NoSuchGroup,",
        "upstreams.billing.groups",
        "names groups Bogus1, Bogus2,",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let fine = ProxyConfig::new(&pki, 5432).set("listen.groups", "\"X25519MLKEM768:X25519\"");
    let (ok, text) = check_config(&fine, true);
    assert!(ok, "{text}");
    assert!(
        text.contains("listen.groups = X25519MLKEM768:X25519;"),
        "{text}"
    );
}
