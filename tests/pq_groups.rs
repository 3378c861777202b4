//! Key exchange that follows the library: the same binary on the host's OpenSSL 3.0 and on
//! Debian 13's OpenSSL 3.5 (a trixie root, `scripts/trixie-root`), with trixie's own
//! clients (`openssl s_client`, psql 17) and servers (`openssl s_server`, PostgreSQL 17).
//! What a user checks: the group each leg negotiated in the session log line and the
//! metrics, no HelloRetryRequest where the lists promise none (seen on the wire by a relay
//! between the two), `check-config`'s account, and the log line of a client that shares no
//! group with the proxy. Needs root (chroot).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::psql_ok;
use common::postgres::{ALICE_PASSWORD, Postgres, free_port};
use common::proxy::{Proxy, ProxyConfig, TestPki, binary, toml_path};
use common::trixie::{self, Postgres17, inside};

/// A HelloRetryRequest is a ServerHello with this random (RFC 8446, 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// A TCP relay to 127.0.0.1:`target` that keeps the first bytes each server sends, where a
/// HelloRetryRequest would be. At most 8 connections, 64 KiB each.
struct Wire {
    port: u16,
    from_server: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Wire {
    fn to(target: u16) -> Wire {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let from_server = Arc::new(Mutex::new(Vec::new()));
        let seen = from_server.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().take(8) {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let slot = {
                    let mut all = seen.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = server.read(&mut buf) {
                        if n == 0 || client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let mut all = seen.lock().unwrap();
                        let kept = &mut all[slot];
                        let room = 65536usize.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Wire { port, from_server }
    }

    /// (connections relayed, HelloRetryRequests among them).
    fn hello_retries(&self) -> (usize, usize) {
        let all = self.from_server.lock().unwrap();
        let retries = all
            .iter()
            .filter(|bytes| bytes.windows(32).any(|w| w == HRR_RANDOM))
            .count();
        (all.len(), retries)
    }
}

/// `openssl s_client` of trixie (3.5) through the proxy with `groups` (OpenSSL's default
/// list when `None`); its output.
fn s_client(proxy_port: u16, pki: &TestPki, groups: Option<&str>) -> String {
    let mut cmd = trixie::command("/usr/bin/openssl");
    cmd.args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("127.0.0.1:{proxy_port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(inside(&pki.proxy_ca_path));
    if let Some(groups) = groups {
        cmd.args(["-groups", groups]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// psql 17 of trixie (libpq on OpenSSL 3.5) through the proxy, verify-full.
fn psql17(proxy_port: u16, pki: &TestPki, user: &str, password: &str, sql: &str) -> Output {
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={proxy_port} user={user} password={password} \
         dbname=postgres sslmode=verify-full sslrootcert={} channel_binding=disable \
         connect_timeout=10",
        inside(&pki.proxy_ca_path)
    );
    trixie::command("/usr/bin/psql")
        .args(["-X", "-A", "-t", "-d", &conninfo, "-c", sql])
        .output()
        .unwrap()
}

/// `pgt-proxy check-config` of `config`, on the host (`in_trixie` false) or in the root.
fn check_config(config: &ProxyConfig, in_trixie: bool) -> (bool, String) {
    let dir = trixie::tempdir("pgt-check-");
    let path = dir.path().join("config.toml");
    let root = trixie::root().display().to_string();
    let out = if in_trixie {
        std::fs::write(&path, config.render().replace(&root, "")).unwrap();
        let exe = dir.path().join("pgt-proxy");
        if std::fs::hard_link(binary(), &exe).is_err() {
            std::fs::copy(binary(), &exe).unwrap();
        }
        trixie::command(&inside(&exe))
            .args(["--config", &inside(&path), "check-config"])
            .output()
    } else {
        std::fs::write(&path, config.render()).unwrap();
        Command::new(binary())
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
    }
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

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

/// Upstream on OpenSSL 3.5: a server that accepts only X25519MLKEM768 (`openssl s_server`)
/// gets it, and trixie's PostgreSQL 17 (Debian's settings: prime256v1 only) gets P-256,
/// neither with a HelloRetryRequest. The relay that sees no retry does see one when the
/// proxy is told to send an X25519 share first (so it can tell).
#[test]
fn upstreams_on_openssl_3_5_get_their_group_without_a_hello_retry() {
    let pki = TestPki::in_trixie();
    // A post-quantum-only server.
    let (cert, key) = pki.server.write(pki.dir.path(), "s_server");
    let port = free_port();
    let log = pki.dir.path().join("s_server.log");
    let mut cmd = trixie::command("/usr/bin/openssl");
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-groups", "X25519MLKEM768", "-alpn", "postgresql", "-cert"])
        .arg(inside(&cert))
        .arg("-key")
        .arg(inside(&key))
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
    let wire = Wire::to(port);
    let proxy = Proxy::start_in_trixie(
        &ProxyConfig::new(&pki, wire.port)
            .set("upstream.tls_negotiation", "\"direct\"")
            .set("listen.startup_timeout", "\"1s\""),
    );
    // s_server never answers the StartupMessage: the session ends after both handshakes.
    let _ = psql17(proxy.port(), &pki, "alice", "x", "select 1");
    let line = proxy.wait_log(&["upstream_tls_group="]);
    assert!(
        line.contains("upstream_tls_group=\"X25519MLKEM768\""),
        "{line}"
    );
    assert_eq!(wire.hello_retries(), (1, 0), "{line}");
    let _ = server.kill();
    let _ = server.wait();
    drop(proxy);

    // PostgreSQL 17 of trixie, as Debian ships it.
    let pg = Postgres17::start(&pki.server);
    let wire = Wire::to(pg.port);
    let proxy = Proxy::start_in_trixie(&ProxyConfig::new(&pki, wire.port));
    let out = psql17(proxy.port(), &pki, "postgres", "x", "select version()");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PostgreSQL 17"),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        pg.log()
    );
    let line = proxy.wait_log(&["session ended", "user=\"postgres\""]);
    assert!(line.contains("upstream_tls_group=\"secp256r1\""), "{line}");
    assert!(
        line.contains("client_tls_group=\"X25519MLKEM768\""),
        "{line}"
    );
    assert_eq!(wire.hello_retries(), (1, 0), "{line}");
    drop(proxy);

    // The control: an X25519 share first costs PostgreSQL 17 a retry, and the relay sees it.
    let wire = Wire::to(pg.port);
    let proxy = Proxy::start_in_trixie(
        &ProxyConfig::new(&pki, wire.port).set("upstream.groups", "\"X25519:P-256\""),
    );
    let out = psql17(proxy.port(), &pki, "postgres", "x", "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wire.hello_retries(), (1, 1));
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

/// An OpenSSL configuration in `dir` that loads a FIPS provider for trixie's OpenSSL 3.5:
/// the test one (`scripts/fips-provider`: 3.0.8, no ML-KEM) with `test_provider`, else
/// trixie's own (`openssl-provider-fips` 3.5, with ML-KEM), installed by its `fipsinstall`.
fn fips_config_in_trixie(dir: &std::path::Path, test_provider: bool) -> std::path::PathBuf {
    let module = if test_provider {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fips-provider");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/fips-provider failed");
        let host_conf = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let module = dir.join("fips.so");
        std::fs::copy(host_conf.with_file_name("fips.so"), &module).unwrap();
        inside(&module)
    } else {
        "/usr/lib/x86_64-linux-gnu/ossl-modules/fips.so".to_owned()
    };
    let fipsmodule = dir.join("fipsmodule.cnf");
    let out = trixie::command("/usr/bin/openssl")
        .args([
            "fipsinstall",
            "-module",
            &module,
            "-out",
            &inside(&fipsmodule),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fipsinstall on 3.5: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = dir.join("openssl-fips.cnf");
    let text = format!(
        "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n\
         [provider_sect]\nfips = fips_sect\nbase = base_sect\n[base_sect]\nactivate = 1\n\n{}\
         module = {module}\n",
        std::fs::read_to_string(&fipsmodule).unwrap(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

/// FIPS mode on OpenSSL 3.5 with a FIPS provider that has no ML-KEM: the NIST curves only,
/// and the start log and check-config say so; trixie's default client gets P-256, a
/// post-quantum-only one the no-common-group line.
#[test]
fn fips_mode_on_openssl_3_5_without_ml_kem_in_the_provider_offers_nist_curves() {
    let pki = TestPki::in_trixie();
    let conf = fips_config_in_trixie(pki.dir.path(), true);
    let pg = Postgres::start(&pki.server);
    let config = ProxyConfig::new(&pki, pg.port)
        .set("tls.fips", "\"require\"")
        .set("tls.openssl_config", &toml_path(&conf));
    let (ok, text) = check_config(&config, true);
    assert!(ok, "{text}");
    assert!(
        text.contains("key exchange: NIST curves only (the FIPS provider has no ML-KEM)"),
        "{text}"
    );
    let proxy = Proxy::start_in_trixie(&config);
    proxy.wait_log(&["FIPS mode active: OpenSSL FIPS Provider 3.0.8"]);
    proxy.wait_log(&[
        "key exchange: NIST curves only (the FIPS provider has no ML-KEM); listen.groups = \
         P-256:P-384:P-521; upstream.groups = P-256:P-384:P-521",
    ]);
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
}

/// FIPS mode on OpenSSL 3.5 with trixie's own FIPS provider (3.5, ML-KEM per FIPS 203):
/// SecP256r1MLKEM768 first on both legs, to a client that offers it and to a server that
/// accepts only it (no HelloRetryRequest), while PostgreSQL 17 gets P-256.
#[test]
fn fips_mode_on_openssl_3_5_with_ml_kem_in_the_provider_offers_secp256r1mlkem768() {
    let pki = TestPki::in_trixie();
    let conf = fips_config_in_trixie(pki.dir.path(), false);
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
    let (cert, key) = pki.server.write(pki.dir.path(), "s_server");
    let port = free_port();
    let log = pki.dir.path().join("s_server.log");
    let mut cmd = trixie::command("/usr/bin/openssl");
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args([
            "-groups",
            "SecP256r1MLKEM768",
            "-alpn",
            "postgresql",
            "-cert",
        ])
        .arg(inside(&cert))
        .arg("-key")
        .arg(inside(&key))
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
    let wire = Wire::to(port);
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
    let _ = server.kill();
    let _ = server.wait();
}
