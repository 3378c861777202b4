//! The upstream leg: every verification failure reaches the client as FATAL 08001 with the
//! reason, and the ways of reaching a server (direct TLS, several addresses, a client
//! certificate) work.

mod common;

use common::clients::{conninfo, psql_ok, psycopg_connect, rust_refused};
use common::pki::{Ca, Validity};
use common::postgres::{ALICE_PASSWORD, PgOptions, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};

/// The client's refusal (SQLSTATE, message and hint), checking that psycopg's libpq shows
/// the same message a DBA would read.
fn refused(proxy: &Proxy, pki: &TestPki) -> (String, String) {
    let (code, text) = rust_refused(proxy, pki);
    let (_, psycopg_message) =
        psycopg_connect(&conninfo(proxy, pki, "alice", ALICE_PASSWORD)).unwrap_err();
    // The message starts the text (the hint follows it).
    let start = &text[..text.len().min(50)];
    assert!(
        psycopg_message.contains(start),
        "{psycopg_message} vs {text}"
    );
    (code, text)
}

/// `upstream.ca = "system"` is OpenSSL's default store and nothing more. With none of the
/// machine's SSL_CERT_FILE/SSL_CERT_DIR (common::proxy removes them), this host's store has
/// no private CA, so the test server is refused; with SSL_CERT_FILE naming a store that holds
/// its CA (OpenSSL's own way to point the default store elsewhere), it is verified. The
/// image's store, from Debian's packages, is judged by tests/image.sh.
#[test]
fn system_store_trusts_what_it_holds_and_nothing_else() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = ProxyConfig::new(&pki, pg.port).set("upstream.ca", "\"system\"");
    let proxy = Proxy::start(&config);
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("unable to get local issuer certificate"),
        "{message}"
    );
    drop(proxy);
    let store = pki.dir.path().join("store.pem");
    std::fs::copy(&pki.upstream_ca_path, &store).unwrap();
    let proxy = Proxy::start_env(&config, &[("SSL_CERT_FILE", store.to_str().unwrap())]);
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    assert_eq!(psql_ok(&info, "select 1"), "1");
}

#[test]
fn untrusted_upstream_ca() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let other = Ca::new("Some Other CA").write_cert(&pki.dir.path().join("other.pem"));
    let proxy =
        Proxy::start(&ProxyConfig::new(&pki, pg.port).set("upstream.ca", &toml_path(&other)));
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("upstream server certificate not trusted"),
        "{message}"
    );
    assert!(
        message.contains("unable to get local issuer certificate"),
        "{message}"
    );
    assert!(message.contains("CN=localhost"), "{message}");
    assert!(
        message.contains("upstream.ca"),
        "the hint names the key: {message}"
    );
    proxy.wait_log(&["session refused", "not trusted", "sqlstate=\"08001\""]);
}

#[test]
fn host_name_mismatch() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port).set("upstream.tls_server_name", "\"db.example.com\""),
    );
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains(
            "expected \"db.example.com\", certificate is for DNS:localhost, IP:127.0.0.1"
        ),
        "{message}"
    );
}

#[test]
fn address_mismatch() {
    // An address as the server name is matched against the certificate's IP entries.
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port).set("upstream.tls_server_name", "\"127.0.0.2\""),
    );
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("expected \"127.0.0.2\", certificate is for DNS:localhost, IP:127.0.0.1"),
        "{message}"
    );
}

#[test]
fn expired_upstream_certificate() {
    let pki = TestPki::new();
    let expired = pki.upstream_ca.issue(
        "localhost",
        &["DNS:localhost", "IP:127.0.0.1"],
        Validity::Expired,
    );
    let pg = Postgres::start(&expired);
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(message.contains("certificate has expired"), "{message}");
}

#[test]
fn upstream_without_tls() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: None,
        conf: vec![],
        hba: vec![],
    });
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("upstream server does not support TLS"),
        "{message}"
    );
    assert!(message.contains("answered 'N'"), "{message}");
}

#[test]
fn upstream_down() {
    let pki = TestPki::new();
    let port = free_port();
    let proxy = Proxy::start(&ProxyConfig::new(&pki, port));
    let (code, message) = refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains(&format!(
            "could not connect to upstream server 127.0.0.1:{port}"
        )),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");
}

#[tokio::test]
async fn unencrypted_bytes_after_the_servers_s_are_refused() {
    // A hostile upstream (CVE-2021-23222 pattern): 'S' plus bytes in the same packet.
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut req = [0u8; 8];
            if s.read_exact(&mut req).await.is_ok() {
                let _ = s.write_all(b"SR\0\0\0\x08\0\0\0\0").await;
            }
        }
    });
    let proxy = Proxy::start(&ProxyConfig::new(&pki, port));
    let (code, message) = tokio::task::spawn_blocking(move || refused(&proxy, &pki))
        .await
        .unwrap();
    assert_eq!(code, "08001");
    assert!(
        message.contains("sent unencrypted data after accepting TLS"),
        "{message}"
    );
}

#[test]
fn several_addresses_are_tried_in_turn() {
    // "localhost" resolves to ::1 and 127.0.0.1; the server listens on 127.0.0.1 only.
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let proxy =
        Proxy::start(&ProxyConfig::new(&pki, pg.port).set("upstream.host", "\"localhost\""));
    assert_eq!(
        psql_ok(&conninfo(&proxy, &pki, "alice", ALICE_PASSWORD), "select 1"),
        "1"
    );
}

#[test]
fn direct_tls_negotiation_to_the_upstream() {
    // PostgreSQL 15 has no direct TLS, so the upstream here is a second pgt-proxy, which
    // accepts direct TLS with ALPN exactly as PostgreSQL 17 does.
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let inner = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let outer = Proxy::start(
        &ProxyConfig::new(&pki, inner.port())
            .set("upstream.tls_negotiation", "\"direct\"")
            .set("upstream.tls_server_name", "\"localhost\"")
            .set("upstream.ca", &toml_path(&pki.proxy_ca_path)),
    );
    assert_eq!(
        psql_ok(
            &conninfo(&outer, &pki, "alice", ALICE_PASSWORD),
            "select current_user"
        ),
        "alice"
    );
    // The inner proxy saw a direct-TLS client (no SSLRequest) and accepted it.
    inner.wait_log(&["session ended", "user=\"alice\""]);
    assert!(!inner.log().contains("without ALPN"));
}

#[test]
fn client_certificate_for_the_upstream() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: vec![format!("ssl_ca_file = '{}'", {
            // The server must be able to read the CA file: put a copy in its directory.
            pki.upstream_ca_path.display()
        })],
        hba: vec!["hostssl all bob 127.0.0.1/32 cert clientcert=verify-full".into()],
    });
    let client_cert = pki.upstream_ca.issue("bob", &[], Validity::Current);
    let (cert, key) = client_cert.write(pki.dir.path(), "bob");
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("upstream.client_certificate", &toml_path(&cert))
            .set("upstream.client_private_key", &toml_path(&key)),
    );
    // bob has no password login: the server accepts him by the proxy's client certificate.
    assert_eq!(
        psql_ok(
            &conninfo(&proxy, &pki, "bob", "unused"),
            "select current_user"
        ),
        "bob"
    );
}

#[tokio::test]
async fn a_stalled_upstream_is_bounded_by_connect_timeout() {
    // Accepts TCP connections and never answers the SSLRequest.
    let pki = TestPki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let proxy =
        Proxy::start(&ProxyConfig::new(&pki, port).set("upstream.connect_timeout", "\"1s\""));
    let started = std::time::Instant::now();
    let (code, message) = tokio::task::spawn_blocking(move || rust_refused(&proxy, &pki))
        .await
        .unwrap();
    assert_eq!(code, "08001");
    assert!(
        message.contains(&format!(
            "timed out after 1s connecting to upstream server 127.0.0.1:{port}"
        )),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// PostgreSQL up to 17 accepts only its `ssl_ecdh_curve` (prime256v1 by default) for TLS 1.3
/// key exchange, and OpenSSL 3.0 sends a key share for its first group only: the upstream leg
/// must offer P-256 first, or every connect pays a HelloRetryRequest (a second ClientHello,
/// one more round trip). The upstream is `openssl s_server -groups P-256 -msg`, which logs
/// every handshake message it receives.
#[test]
fn the_upstream_handshake_needs_no_hello_retry_with_a_p256_only_server() {
    let pki = TestPki::new();
    let (cert, key) = pki.server.write(pki.dir.path(), "s_server");
    let port = free_port();
    let log = pki.dir.path().join("s_server.log");
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-groups", "P-256", "-msg", "-alpn", "postgresql", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null());
    common::die_with_parent(&mut cmd, libc::SIGKILL);
    let mut server = cmd.spawn().unwrap();
    common::wait_for("s_server", std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ACCEPT")
            .then_some(())
    });
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, port)
            .set("upstream.tls_negotiation", "\"direct\"")
            .set("listen.startup_timeout", "\"1s\""),
    );
    // s_server never answers the StartupMessage: the session ends in the startup phase,
    // after a complete handshake.
    let (code, _) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08006");
    let _ = server.kill();
    let _ = server.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let hellos = text.lines().filter(|l| l.contains("ClientHello")).count();
    assert_eq!(hellos, 1, "one ClientHello, no HelloRetryRequest:\n{text}");
}
