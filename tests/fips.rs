//! FIPS mode with a real OpenSSL FIPS provider (3.1.2, FIPS 140-3 validated, built by
//! scripts/fips-provider and loaded by the system's libcrypto, 3.0): "require" starts and
//! says so; only approved suites and groups on both legs (X25519-only and ChaCha20-only peers
//! fail, P-256 with AES-GCM works); "require" without a provider refuses to start with the
//! clear error; "auto" follows the kernel flag (a fake fips_enabled file here); keys the
//! provider cannot use are refused.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::clients::{conninfo, psql_ok, rust_refused};
use common::postgres::{ALICE_PASSWORD, PgOptions, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, binary, toml_path};
use common::raw;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};

/// The test FIPS provider's version (`scripts/fips-provider --version`).
const PROVIDER: &str = "3.1.2";

/// The OpenSSL configuration that loads the test FIPS provider (built once, cached).
fn provider_config() -> &'static PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| common::fips_provider::built_fips_config(PROVIDER))
}

fn fips_config(pki: &TestPki, upstream_port: u16) -> ProxyConfig {
    ProxyConfig::new(pki, upstream_port)
        .set("tls.fips", "\"require\"")
        .set("tls.openssl_config", &toml_path(provider_config()))
}

fn check_config(config: &ProxyConfig, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    common::proxy::check_config_env(dir.path(), "config.toml", config, env)
}

/// A TLS handshake with the proxy from a client limited to `groups` and ciphers.
fn client_handshake(
    proxy: &Proxy,
    pki: &TestPki,
    configure: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder),
) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.set_ca_file(&pki.proxy_ca_path).unwrap();
        configure(&mut b);
        let ssl = b
            .build()
            .configure()
            .unwrap()
            .into_ssl("localhost")
            .unwrap();
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        tcp.write_all(&raw::SSL_REQUEST).await.unwrap();
        assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
        raw::handshake(tcp, ssl).await.is_ok()
    })
}

#[test]
fn require_with_the_provider_serves_with_approved_algorithms_only() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = fips_config(&pki, pg.port);
    let proxy = Proxy::start(&config);
    proxy.wait_log(&[&format!(
        "FIPS mode active: OpenSSL FIPS Provider {PROVIDER}"
    )]);
    let (ok, text) = check_config(&config, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "FIPS mode: active, OpenSSL FIPS Provider {PROVIDER}"
        )),
        "{text}"
    );
    // A real session: P-256 and AES-GCM on both legs.
    assert_eq!(
        psql_ok(&conninfo(&proxy, &pki, "alice", ALICE_PASSWORD), "select 1"),
        "1"
    );
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    assert!(line.contains("AES") && !line.contains("CHACHA"), "{line}");

    // Client leg.
    assert!(client_handshake(&proxy, &pki, |b| b
        .set_groups_list("P-256")
        .unwrap()));
    assert!(
        !client_handshake(&proxy, &pki, |b| b.set_groups_list("X25519").unwrap()),
        "X25519 only"
    );
    assert!(
        !client_handshake(&proxy, &pki, |b| {
            b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
            b.set_cipher_list("ECDHE-ECDSA-CHACHA20-POLY1305").unwrap();
        }),
        "ChaCha20-Poly1305 only, TLS 1.2"
    );
    assert!(
        !client_handshake(&proxy, &pki, |b| {
            b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
            b.set_ciphersuites("TLS_CHACHA20_POLY1305_SHA256").unwrap();
        }),
        "ChaCha20-Poly1305 only, TLS 1.3"
    );
    assert!(client_handshake(&proxy, &pki, |b| {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256").unwrap();
    }));
}

#[test]
fn upstream_leg_refuses_chacha20_only_servers() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: vec![
            "ssl_ciphers = 'ECDHE-ECDSA-CHACHA20-POLY1305'".into(),
            "ssl_max_protocol_version = 'TLSv1.2'".into(),
        ],
        hba: vec![],
    });
    let proxy = Proxy::start(&fips_config(&pki, pg.port));
    let (code, message) = rust_refused(&proxy, &pki);
    assert_eq!(code, "08001");
    assert!(
        message.contains("TLS handshake with upstream server"),
        "{message}"
    );
}

/// Through a FIPS proxy to `openssl s_server` limited to `groups` (direct TLS, since
/// s_server knows no SSLRequest); returns the client's SQLSTATE and message.
fn via_s_server(groups: &str) -> (String, String) {
    let pki = TestPki::new();
    let (cert, key) = pki.server.write(pki.dir.path(), "s_server");
    let port = free_port();
    let log = pki.dir.path().join("s_server.log");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-groups",
        groups,
    ])
    .args(["-alpn", "postgresql", "-cert"])
    .arg(&cert)
    .arg("-key")
    .arg(&key)
    .stdin(Stdio::piped())
    .stdout(std::fs::File::create(&log).unwrap())
    .stderr(Stdio::null());
    common::die_with_parent(&mut cmd, libc::SIGKILL);
    let mut server = cmd.spawn().unwrap();
    common::wait_for("s_server", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ACCEPT")
            .then_some(())
    });
    let proxy = Proxy::start(
        &fips_config(&pki, port)
            .set("upstream.tls_negotiation", "\"direct\"")
            .set("listen.startup_timeout", "\"1s\""),
    );
    let refused = rust_refused(&proxy, &pki);
    let _ = server.kill();
    let _ = server.wait();
    refused
}

#[test]
fn upstream_leg_refuses_x25519_only_servers() {
    // PostgreSQL 15 cannot be limited to X25519 (ssl_ecdh_curve takes EC curves only), so
    // the upstream is `openssl s_server`.
    let (code, message) = via_s_server("X25519");
    assert_eq!(code, "08001");
    assert!(
        message.contains("TLS handshake with upstream server"),
        "{message}"
    );
    // The same server on P-256: the handshake succeeds (s_server then never authenticates,
    // so the session times out in the startup phase instead).
    let (code, message) = via_s_server("P-256");
    assert_eq!(code, "08006", "{message}");
    assert!(message.contains("listen.startup_timeout"), "{message}");
}

#[test]
fn require_without_a_provider_refuses_to_start() {
    let pki = TestPki::new();
    let config = ProxyConfig::new(&pki, 5432).set("tls.fips", "\"require\"");
    let (ok, text) = check_config(&config, &[("OPENSSL_MODULES", "/nonexistent-modules")]);
    assert!(!ok);
    for needle in [
        "tls.fips: FIPS mode required but the OpenSSL \"fips\" provider is unusable",
        "OPENSSL_MODULES: /nonexistent-modules (from the environment)",
        "OPENSSL_CONF: ",
        "Install your distribution's FIPS provider",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.render()).unwrap();
    let out = Command::new(binary())
        .args(["--config", path.to_str().unwrap()])
        .env("OPENSSL_MODULES", "/nonexistent-modules")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn auto_follows_the_kernel_flag() {
    let pki = TestPki::new();
    let flag = pki.dir.path().join("fips_enabled");
    let flag_var = "PGT_PROXY_TEST_FIPS_ENABLED_PATH";
    let auto = ProxyConfig::new(&pki, 5432).set("tls.fips", "\"auto\"");

    std::fs::write(&flag, "0\n").unwrap();
    let (ok, text) = check_config(&auto, &[(flag_var, flag.to_str().unwrap())]);
    assert!(ok && text.contains("FIPS mode: off"), "{text}");

    std::fs::write(&flag, "1\n").unwrap();
    let (ok, text) = check_config(
        &auto,
        &[
            (flag_var, flag.to_str().unwrap()),
            ("OPENSSL_MODULES", "/nonexistent-modules"),
        ],
    );
    assert!(!ok && text.contains("FIPS mode required"), "{text}");
    let (ok, text) = check_config(
        &auto.set("tls.openssl_config", &toml_path(provider_config())),
        &[(flag_var, flag.to_str().unwrap())],
    );
    assert!(ok && text.contains("FIPS mode: active"), "{text}");
}

#[test]
fn keys_the_provider_cannot_use_are_refused() {
    let pki = TestPki::new();
    let with_identity = |config: ProxyConfig, (crt, key): &(PathBuf, PathBuf)| {
        config
            .set("listen.certificate", &toml_path(crt))
            .set("listen.private_key", &toml_path(key))
    };
    let rsa1024 = common::openssl_certs::openssl_req(pki.dir.path(), "rsa1024", "rsa:1024");
    let (ok, text) = check_config(&with_identity(fips_config(&pki, 5432), &rsa1024), &[]);
    assert!(!ok);
    assert!(
        text.contains("rsa1024.key: the FIPS provider cannot use this key: RSA keys must have at least 2048 bits, this one has 1024"),
        "{text}"
    );
    // Ed25519 is fine without FIPS mode and refused in it, by its type: this provider
    // registers EdDSA as fips=no, so the certificate's public key would not even decode.
    let ed25519 = common::openssl_certs::openssl_req(pki.dir.path(), "ed25519", "ed25519");
    let plain = ProxyConfig::new(&pki, 5432).set("tls.fips", "\"off\"");
    let (ok, text) = check_config(&with_identity(plain, &ed25519), &[]);
    assert!(ok, "{text}");
    let (ok, text) = check_config(&with_identity(fips_config(&pki, 5432), &ed25519), &[]);
    assert!(!ok);
    assert!(
        text.contains("ed25519.key: the FIPS provider cannot use this key"),
        "{text}"
    );
    // Below the system's own security level, even without FIPS: named, not cryptic.
    let plain = ProxyConfig::new(&pki, 5432).set("tls.fips", "\"off\"");
    let (ok, text) = check_config(&with_identity(plain, &rsa1024), &[]);
    assert!(!ok);
    assert!(
        text.contains("rsa1024.crt: OpenSSL refuses it: ee key too small"),
        "{text}"
    );
}

#[test]
fn scram_termination_works_in_fips_mode() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let verifier = pg.admin("select rolpassword from pg_authid where rolname = 'alice'");
    let userlist = pki.dir.path().join("userlist.txt");
    std::fs::write(&userlist, format!("\"alice\" \"{verifier}\"\n")).unwrap();
    std::fs::set_permissions(
        &userlist,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let proxy = Proxy::start(
        &fips_config(&pki, pg.port)
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist)),
    );
    proxy.wait_log(&["FIPS mode active"]);
    // libpq's default channel binding, through verifier-only SCRAM (SHA-256 and HMAC from
    // the FIPS provider, no PBKDF2).
    let info =
        conninfo(&proxy, &pki, "alice", ALICE_PASSWORD).replace("channel_binding=disable", "");
    assert_eq!(psql_ok(&info, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    common::proxy::assert_auth(&line, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256-PLUS");
}
