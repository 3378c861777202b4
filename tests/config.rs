//! The binary's configuration behaviour as an operator meets it: layers and their origins in
//! `check-config`, every kind of error naming its file, variable or flag, the private-key
//! permission rule, certificate checks, `--version` and exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::pki::Validity;
use common::proxy::{ProxyConfig, TestPki, binary, toml_path};

/// Runs the binary with `args`, a clean environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `config` and runs check-config on it; returns (success, all output).
fn check_config(pki: &TestPki, config: &ProxyConfig) -> (bool, String) {
    let path = write_config(pki, config);
    let out = run(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    (out.status.success(), text(&out))
}

fn write_config(pki: &TestPki, config: &ProxyConfig) -> std::path::PathBuf {
    let path = pki.dir.path().join("config.toml");
    std::fs::write(&path, config.render()).unwrap();
    path
}

#[test]
fn check_config_shows_each_layer_and_origin() {
    let pki = TestPki::new();
    let path = write_config(&pki, &ProxyConfig::new(&pki, 5432));
    let conf_d = pki.dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("10-timeouts.toml"),
        "[listen]\nstartup_timeout = \"30s\"\n",
    )
    .unwrap();
    std::fs::write(
        conf_d.join("20-more.toml"),
        "[listen]\nstartup_timeout = \"45s\"\n",
    )
    .unwrap();
    std::fs::write(conf_d.join("README"), "not toml, ignored").unwrap();
    let out = run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--upstream-port",
            "6543",
            "check-config",
        ],
        &[("PGT_PROXY__LISTEN__MAX_CONNECTIONS", "7")],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let line = |key: &str| {
        t.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {t}"))
            .to_owned()
    };
    assert!(
        line("startup_timeout").contains("\"45s\"")
            && line("startup_timeout").ends_with("conf.d/20-more.toml")
    );
    assert!(
        line("max_connections").contains("7")
            && line("max_connections")
                .ends_with("environment variable PGT_PROXY__LISTEN__MAX_CONNECTIONS")
    );
    assert!(line("port").contains("6543") && line("port").ends_with("flag --upstream-port"));
    assert!(line("host").ends_with(path.to_str().unwrap()));
    assert!(line("direct_tls").ends_with("# default"));
    assert!(
        t.contains("listen.certificate: subject CN=localhost"),
        "{t}"
    );
    assert!(t.contains("configuration OK"), "{t}");
}

#[test]
fn errors_name_their_origin_and_key() {
    let pki = TestPki::new();
    let path = write_config(
        &pki,
        &ProxyConfig::new(&pki, 5432).set("listen.max_conections", "5"),
    );
    let conf_d = pki.dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(conf_d.join("50-bad.toml"), "[upstream]\nport = \"five\"\n").unwrap();
    let out = run(
        &[
            "--config",
            path.to_str().unwrap(),
            "--log-format",
            "xml",
            "check-config",
        ],
        &[("PGT_PROXY__LISTEN__HANDSHAKE_TIMEOUT", "soon")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for expected in [
        format!("error: {}: listen.max_conections: unknown field", path.display()),
        format!("error: {}: upstream.port:", conf_d.join("50-bad.toml").display()),
        "error: environment variable PGT_PROXY__LISTEN__HANDSHAKE_TIMEOUT: listen.handshake_timeout:".into(),
        "error: flag --log-format: log.format: \"xml\" is not one of: text, json".into(),
    ] {
        assert!(t.contains(&expected), "missing {expected:?} in\n{t}");
    }
    // `run` refuses with EX_CONFIG and the same errors on stderr.
    let out = run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out).contains("listen.max_conections: unknown field"));
}

#[test]
fn missing_upstream_host_and_bad_addresses() {
    let pki = TestPki::new();
    let path = write_config(
        &pki,
        &ProxyConfig::new(&pki, 5432)
            .unset("upstream.host")
            .set("listen.addresses", "[\"localhost:5432\"]"),
    );
    let out = run(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.contains("error: default: upstream.host: not set"), "{t}");
    assert!(
        t.contains("listen.addresses: \"localhost:5432\" is not an IP socket address"),
        "{t}"
    );
}

#[test]
fn private_key_permission_rule() {
    let pki = TestPki::new();
    let path = write_config(&pki, &ProxyConfig::new(&pki, 5432));
    let key = &pki.proxy_key_path;
    let set_mode =
        |mode| std::fs::set_permissions(key, std::fs::Permissions::from_mode(mode)).unwrap();
    let check = || run(&["--config", path.to_str().unwrap(), "check-config"], &[]);

    set_mode(0o644);
    let out = check();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("private key file has group or world access (mode 0644)"),
        "{t}"
    );
    assert!(t.contains("listen.private_key"), "{t}");
    let out = run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(78), "run refuses too");

    // 0640 is allowed only for a root-owned file, as PostgreSQL's rule.
    set_mode(0o640);
    let root_owned = std::fs::metadata(key)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap();
    assert_eq!(check().status.success(), root_owned);

    set_mode(0o600);
    assert!(check().status.success());
}

#[test]
fn certificate_problems_are_named() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    // A key that belongs to another certificate.
    let other = pki
        .proxy_ca
        .issue("other", &["DNS:other"], Validity::Current);
    let (_, other_key) = other.write(dir, "other");
    let config = ProxyConfig::new(&pki, 5432).set("listen.private_key", &toml_path(&other_key));
    let (_, t) = check_config(&pki, &config);
    assert!(
        t.contains("private key does not match the certificate"),
        "{t}"
    );

    // An expired certificate of our own.
    let expired = pki
        .proxy_ca
        .issue("localhost", &["DNS:localhost"], Validity::Expired);
    let (cert, key) = expired.write(dir, "expired");
    let config = ProxyConfig::new(&pki, 5432)
        .set("listen.certificate", &toml_path(&cert))
        .set("listen.private_key", &toml_path(&key));
    let (_, t) = check_config(&pki, &config);
    assert!(
        t.contains("listen.certificate: certificate CN=localhost expired"),
        "{t}"
    );

    // A missing CA file and a file that is not PEM.
    std::fs::write(dir.join("junk.pem"), "hello").unwrap();
    let config = ProxyConfig::new(&pki, 5432).set("upstream.ca", &toml_path(&dir.join("junk.pem")));
    let (_, t) = check_config(&pki, &config);
    assert!(
        t.contains("upstream.ca") && t.contains("no PEM certificate found"),
        "{t}"
    );
    let config = ProxyConfig::new(&pki, 5432).set("upstream.ca", "\"/nonexistent/ca.pem\"");
    let (_, t) = check_config(&pki, &config);
    assert!(
        t.contains("upstream.ca /nonexistent/ca.pem: cannot read"),
        "{t}"
    );
}

/// The values are accepted; what "system" trusts is judged by tests/upstream.rs and, in the
/// image, tests/image.sh. `run` clears the environment, so no SSL_CERT_FILE/SSL_CERT_DIR.
#[test]
fn ca_directory_and_system_store_are_accepted() {
    let pki = TestPki::new();
    let cas = pki.dir.path().join("cas");
    std::fs::create_dir(&cas).unwrap();
    std::fs::copy(&pki.upstream_ca_path, cas.join("a.pem")).unwrap();
    for ca in [toml_path(&cas), "\"system\"".to_owned()] {
        let (ok, t) = check_config(&pki, &ProxyConfig::new(&pki, 5432).set("upstream.ca", &ca));
        assert!(ok, "{ca}: {t}");
    }
}

#[test]
fn environment_and_pgt_proxy_flags_alone_can_configure_it() {
    let pki = TestPki::new();
    let out = run(
        &[
            "--config",
            "/nonexistent-is-fine-only-when-default/config.toml",
            "check-config",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "an explicit --config must exist"
    );
    assert!(text(&out).contains("cannot read"));
    let p = |p: &Path| p.display().to_string();
    let out = run(
        &[
            "check-config",
            "--server-certificate-path",
            &p(&pki.proxy_cert_path),
            "--server-private-key-path",
            &p(&pki.proxy_key_path),
            "--server-port",
            "6432",
            "--client-connection-host-or-ip",
            "db.internal",
            "--client-connection-port",
            "5433",
            "--client-tls-validation-host",
            "db.example.com",
            "--client-ca-roots-path",
            &p(&pki.upstream_ca_path),
        ],
        &[("PGT_PROXY__LOG__LEVEL", "debug")],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("addresses = [\"0.0.0.0:6432\"]"), "{t}");
    assert!(t.contains("tls_server_name = \"db.example.com\""), "{t}");
    assert!(t.contains("level = \"debug\""), "{t}");
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], &[]);
    let t = text(&out);
    assert!(out.status.success());
    assert!(
        t.starts_with("pgt-proxy ") && t.contains("OpenSSL 3."),
        "{t}"
    );
    let out = run(&["--help"], &[]);
    let t = text(&out);
    for section in [
        "check-config",
        "CONFIGURATION",
        "EXAMPLES",
        "FILES",
        "EXIT STATUS",
        "--client-ca-roots-path",
    ] {
        assert!(t.contains(section), "--help lacks {section}");
    }
    assert_eq!(run(&["--no-such-flag"], &[]).status.code(), Some(2));
}

#[test]
fn check_config_validates_the_fleet_keys_and_prints_the_cluster_table() {
    let pki = TestPki::new();
    let base = ProxyConfig::new(&pki, 5432);
    let (ok, out) = check_config(
        &pki,
        &base
            .clone()
            .set("listen.proxy_protocol", "\"v2\"")
            .set("listen.trusted_proxies", "[\"10.0.0.0/33\", \"192.0.2.1\"]")
            .set("listen.allowed_clients", "[\"everyone\"]")
            .set("cluster.peer_id", "2")
            .set(
                "cluster.peers",
                r#"{ 2 = "me:5432", 3 = "p3", 16384 = "p:1", 02x = "p:1", 4 = "p4:5432", 04 = "p4b:5432" }"#,
            ),
    );
    assert!(!ok, "{out}");
    for expected in [
        r#"listen.trusted_proxies: "10.0.0.0/33" is not a CIDR range"#,
        r#"listen.allowed_clients: "everyone" is not a CIDR range"#,
        "cluster.peers.2: 2 is this replica's own cluster.peer_id",
        r#"cluster.peers.3: "p3" is not HOST:PORT"#,
        r#"cluster.peers.16384: "16384" is not a peer id (1 to 16383)"#,
        r#"cluster.peers.02x: "02x" is not a peer id"#,
        "peer id 4 is listed twice",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    let (ok, out) = check_config(
        &pki,
        &base
            .clone()
            .set("listen.proxy_protocol", "\"v2\"")
            .set("cluster.peer_id", "20000"),
    );
    assert!(!ok);
    assert!(
        out.contains("listen.trusted_proxies: is empty while listen.proxy_protocol = \"v2\""),
        "{out}"
    );
    assert!(
        out.contains("cluster.peer_id: 20000 is out of range: 1 to 16383"),
        "{out}"
    );
    let (ok, out) = check_config(
        &pki,
        &base.clone().set("cluster.peers", r#"{ 2 = "p2:5432" }"#),
    );
    assert!(!ok);
    assert!(
        out.contains("cluster.peers: are set but cluster.peer_id is 0"),
        "{out}"
    );

    let (ok, out) = check_config(
        &pki,
        &base
            .set("listen.proxy_protocol", "\"v2\"")
            .set("listen.trusted_proxies", "[\"10.0.0.0/8\"]")
            .set("cluster.peer_id", "1")
            .set("cluster.ca", &toml_path(&pki.proxy_ca_path))
            .set(
                "cluster.peers",
                r#"{ 2 = "pgt-proxy-2.internal:5432", 3 = "[2001:db8::3]:5432" }"#,
            ),
    );
    assert!(ok, "{out}");
    for expected in [
        "from a PROXY v2 header, required from 10.0.0.0/8 (listen.trusted_proxies); others refused",
        "cluster: this replica is peer 1 of 3",
        "  1        this replica",
        "  2        pgt-proxy-2.internal:5432 (certificate must match \"pgt-proxy-2.internal\")",
        "  3        [2001:db8::3]:5432 (certificate must match \"2001:db8::3\")",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
}
