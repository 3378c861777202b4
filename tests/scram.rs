//! SCRAM termination (`auth.mode = "scram"`) with real PostgreSQL servers and real clients:
//! default libpq clients (channel_binding=prefer), channel_binding=require, psycopg with
//! require_auth, tokio-postgres; verifiers from a userlist and from the auth query; password
//! changes; refusals with PostgreSQL's own answers; and the cases only a raw client or a fake
//! SCRAM server can play.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::clients::{psql, psql_ok, psycopg_connect};
use common::fake_scram;
use common::postgres::{ALICE_PASSWORD, PgOptions, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::raw;

/// A libpq connection string through the proxy, verify-full, with libpq's default
/// channel binding (prefer) unless `extra` says otherwise.
fn conninfo(port: u16, ca: &Path, user: &str, password: &str, extra: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={user} password={password} \
         dbname=postgres sslmode=verify-full sslrootcert={} connect_timeout=10 {extra}",
        ca.display()
    )
}

/// Logs in with tokio-postgres (channel_binding=prefer, so -PLUS when offered) and returns
/// `Ok(current_user)` or the ErrorResponse's `(SQLSTATE, message)`: the codes a user's
/// program sees.
fn login(
    proxy: &Proxy,
    pki: &TestPki,
    user: &str,
    password: &str,
) -> Result<String, (String, String)> {
    let config = format!(
        "host=localhost port={} user={user} password={password} dbname=postgres sslmode=require",
        proxy.port()
    );
    let tls = common::clients::rust_tls(pki);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match tokio_postgres::connect(&config, tls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                let row = client
                    .query_one("select current_user::text", &[])
                    .await
                    .unwrap();
                Ok(row.get::<_, String>(0))
            }
            Err(e) => {
                let db = e
                    .as_db_error()
                    .unwrap_or_else(|| panic!("not an ErrorResponse: {e}"));
                Err((
                    db.code().code().to_owned(),
                    format!("{} {}", db.message(), db.hint().unwrap_or("")),
                ))
            }
        }
    })
}

/// Writes a userlist with 0600 permissions.
fn write_userlist(dir: &Path, lines: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("userlist.txt");
    let text: String = lines
        .iter()
        .map(|(u, v)| format!("\"{u}\" \"{v}\"\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The server's verifier of `role` (pg_authid.rolpassword).
fn verifier_of(pg: &Postgres, role: &str) -> String {
    pg.admin(&format!(
        "select rolpassword from pg_authid where rolname = '{role}'"
    ))
}

/// PostgreSQL, and a proxy terminating SCRAM with a userlist holding alice's verifier.
fn with_userlist() -> (TestPki, Postgres, Proxy) {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let userlist = write_userlist(pki.dir.path(), &[("alice", &verifier_of(&pg, "alice"))]);
    let config = ProxyConfig::new(&pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist));
    let proxy = Proxy::start(&config);
    (pki, pg, proxy)
}

#[test]
fn default_psql_logs_in_with_channel_binding_on_both_legs() {
    let (pki, _pg, proxy) = with_userlist();
    let ca = &pki.proxy_ca_path;
    // No channel_binding option at all: libpq's default, prefer, picks -PLUS.
    let info = conninfo(proxy.port(), ca, "alice", ALICE_PASSWORD, "");
    assert_eq!(psql_ok(&info, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    common::proxy::assert_auth(&line, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256-PLUS");
    // channel_binding=require works too, with psql and with psycopg (libpq 18) when only
    // SCRAM is acceptable to it.
    let require = conninfo(
        proxy.port(),
        ca,
        "alice",
        ALICE_PASSWORD,
        "channel_binding=require",
    );
    assert_eq!(psql_ok(&require, "select 1"), "1");
    let strict = format!("{require} require_auth=scram-sha-256");
    assert_eq!(psycopg_connect(&strict), Ok("alice".into()));
    assert!(
        !proxy.log().contains(ALICE_PASSWORD),
        "the password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_with_channel_binding_required() {
    let (pki, _pg, proxy) = tokio::task::spawn_blocking(with_userlist).await.unwrap();
    let config = format!(
        "host=localhost port={} user=alice password={ALICE_PASSWORD} dbname=postgres \
         sslmode=require channel_binding=require",
        proxy.port()
    );
    let (client, connection) = tokio_postgres::connect(&config, common::clients::rust_tls(&pki))
        .await
        .expect("tokio-postgres logs in with SCRAM-SHA-256-PLUS through the proxy");
    tokio::spawn(connection);
    let row = client.query_one("select current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
}

#[test]
fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let userlist = write_userlist(pki.dir.path(), &[("alice", &verifier_of(&pg, "alice"))]);
    let config = ProxyConfig::new(&pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist))
        .set("auth.unknown_user", "\"refuse\"");
    let proxy = Proxy::start(&config);
    let wrong = login(&proxy, &pki, "alice", "wrong").unwrap_err();
    let unknown = login(&proxy, &pki, "mallory", "x").unwrap_err();
    assert_eq!(wrong.0, "28P01");
    assert!(
        wrong
            .1
            .contains("password authentication failed for user \"alice\""),
        "{}",
        wrong.1
    );
    assert_eq!(unknown.0, wrong.0);
    assert_eq!(unknown.1.replace("mallory", "alice"), wrong.1);
    // libpq prints the same words.
    let ca = &pki.proxy_ca_path;
    let libpq_wrong =
        psycopg_connect(&conninfo(proxy.port(), ca, "alice", "wrong", "")).unwrap_err();
    let libpq_unknown =
        psycopg_connect(&conninfo(proxy.port(), ca, "mallory", "x", "")).unwrap_err();
    let strip = |m: &str| {
        m.split("failed: ")
            .last()
            .unwrap_or_default()
            .replace("mallory", "alice")
    };
    assert_eq!(strip(&libpq_unknown.1), strip(&libpq_wrong.1));
    // The unknown user never reached the server.
    assert!(!pg.log().contains("mallory"), "{}", pg.log());
}

/// A raw TLS session to `addr` (the proxy, or PostgreSQL itself) trusting `ca`, up to its
/// AuthenticationSASL, then `first` as the SASLInitialResponse; returns the answer to it.
async fn after_initial_response(
    addr: std::net::SocketAddr,
    ca: &Path,
    mechanism: &str,
    first: &str,
) -> (tokio_openssl::SslStream<tokio::net::TcpStream>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&raw::SSL_REQUEST).await.unwrap();
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.unwrap();
    assert_eq!(s[0], b'S');
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    connector.set_ca_file(ca).unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let mut tls = raw::handshake(tcp, ssl).await.unwrap();
    tls.write_all(&raw::startup(&[
        ("user", "alice"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    let offer = read_message(&mut tls).await;
    assert_eq!(offer[0], b'R');
    assert!(
        offer.windows(18).any(|w| w == b"SCRAM-SHA-256-PLUS"),
        "-PLUS offered"
    );
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first.as_bytes());
    tls.write_all(&message(b'p', &body)).await.unwrap();
    let answer = read_message(&mut tls).await;
    (tls, answer)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

async fn read_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut m = head.to_vec();
    m.resize(len + 1, 0);
    s.read_exact(&mut m[5..]).await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_and_a_wrong_binding_are_refused_with_28000() {
    let (pki, pg, proxy) = tokio::task::spawn_blocking(with_userlist).await.unwrap();
    let ca = &pki.proxy_ca_path;
    // "y": the client can bind but was told the server cannot, though -PLUS was offered.
    let downgrade = "y,,n=,r=abcdef";
    let (_tls, answer) = after_initial_response(proxy.addr, ca, "SCRAM-SHA-256", downgrade).await;
    let (code, text) = raw::error_fields(&answer[5..]);
    assert_eq!(answer[0], b'E');
    assert_eq!(code, "28000");
    assert!(
        text.contains("SCRAM channel binding negotiation error"),
        "{text}"
    );
    // PostgreSQL answers the same downgrade with the same SQLSTATE and words
    // (auth-scram.c: ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, not 08P01).
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], pg.port));
    let (_tls, direct) =
        after_initial_response(server, &pki.upstream_ca_path, "SCRAM-SHA-256", downgrade).await;
    assert_eq!(direct[0], b'E');
    assert_eq!(raw::error_fields(&direct[5..]), (code, text));
    proxy.wait_log(&["session refused", "gs2 flag \"y\"", "a downgrade"]);

    // -PLUS with channel-binding data that is not this connection's certificate.
    let first = "p=tls-server-end-point,,n=,r=abcdef";
    let (mut tls, answer) =
        after_initial_response(proxy.addr, ca, "SCRAM-SHA-256-PLUS", first).await;
    assert_eq!(answer[0], b'R', "server-first");
    let server_first = String::from_utf8_lossy(&answer[9..]).into_owned();
    let nonce = server_first
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("r=");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut cbind = b"p=tls-server-end-point,,".to_vec();
    cbind.extend_from_slice(&[0u8; 32]);
    let fin = format!(
        "c={},r={nonce},p={}",
        b64.encode(&cbind),
        b64.encode([0u8; 32])
    );
    use tokio::io::AsyncWriteExt;
    tls.write_all(&message(b'p', fin.as_bytes())).await.unwrap();
    let answer = read_message(&mut tls).await;
    let (code, text) = raw::error_fields(&answer[5..]);
    assert_eq!((answer[0], code.as_str()), (b'E', "28000"));
    assert!(
        text.contains("SCRAM channel binding check failed"),
        "{text}"
    );
    proxy.wait_log(&["session refused", "channel binding does not match"]);
}

/// PostgreSQL with the shipped auth-query function and its role.
fn with_auth_query(pki: &TestPki) -> (Postgres, PathBuf) {
    let pg = Postgres::start(&pki.server);
    pg.admin(include_str!("../packaging/auth-query.sql"));
    pg.admin("alter role pgt_proxy_auth password 'query-pw'");
    let password_file = pki.dir.path().join("auth-password");
    std::fs::write(&password_file, "query-pw\n").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (pg, password_file)
}

fn query_config(pki: &TestPki, pg: &Postgres, password_file: &Path) -> ProxyConfig {
    ProxyConfig::new(pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.query_user", "\"pgt_proxy_auth\"")
        .set("auth.query_password_file", &toml_path(password_file))
        .set("auth.unknown_user", "\"refuse\"")
}

#[test]
fn the_auth_query_follows_a_password_change() {
    let pki = TestPki::new();
    let (pg, password_file) = with_auth_query(&pki);
    pg.admin("create role dave login password 'first-pw'");
    let proxy = Proxy::start(&query_config(&pki, &pg, &password_file));
    let ca = &pki.proxy_ca_path;
    let libpq = |pw: &str| psycopg_connect(&conninfo(proxy.port(), ca, "dave", pw, ""));
    assert_eq!(libpq("first-pw"), Ok("dave".into()));
    pg.admin("alter role dave password 'second-pw'");
    // The cached verifier is stale: the server's salt differs, so it is fetched again.
    assert_eq!(libpq("second-pw"), Ok("dave".into()));
    assert_eq!(
        login(&proxy, &pki, "dave", "first-pw").unwrap_err().0,
        "28P01"
    );
    let line = proxy.wait_log(&["session ended", "user=\"dave\""]);
    assert!(
        line.contains("upstream_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
}

#[test]
fn expired_and_unknown_roles_get_no_verifier_from_the_query() {
    let pki = TestPki::new();
    let (pg, password_file) = with_auth_query(&pki);
    pg.admin("create role erin login password 'erin-pw' valid until '2000-01-01'");
    let proxy = Proxy::start(&query_config(&pki, &pg, &password_file));
    let expired = login(&proxy, &pki, "erin", "erin-pw").unwrap_err();
    assert_eq!(expired.0, "28P01", "{}", expired.1);
    let nobody = login(&proxy, &pki, "nobody", "x").unwrap_err();
    assert_eq!(nobody.0, "28P01", "{}", nobody.1);
    assert!(
        !pg.log().contains("erin"),
        "the server was never asked about erin"
    );
}

#[test]
fn an_upstream_asking_for_md5_is_named() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: Vec::new(),
        hba: vec!["hostssl all carol 127.0.0.1/32 md5".into()],
    });
    pg.admin("set password_encryption = 'md5'; create role carol login password 'carol-pw'");
    // The proxy holds a SCRAM verifier for carol (as it would after a migration).
    let userlist = write_userlist(
        pki.dir.path(),
        &[("carol", &fake_scram::verifier("carol-pw"))],
    );
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist)),
    );
    let (code, text) = login(&proxy, &pki, "carol", "carol-pw").unwrap_err();
    assert_eq!(code, "08001", "{text}");
    assert!(
        text.contains("md5") && text.contains("SCRAM verifiers"),
        "{text}"
    );
}

/// A proxy in front of the fake SCRAM server (which offers SCRAM-SHA-256 only).
fn with_fake_upstream(
    rt: &tokio::runtime::Runtime,
    behaviour: fake_scram::Behaviour,
    binding: &str,
) -> (TestPki, Proxy) {
    let pki = TestPki::new();
    let port = rt.block_on(fake_scram::start(&pki.server, "eve-pw", behaviour));
    let userlist = write_userlist(pki.dir.path(), &[("eve", &fake_scram::verifier("eve-pw"))]);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, port)
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist))
            .set("auth.upstream_channel_binding", binding),
    );
    (pki, proxy)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_upstream_without_channel_binding_is_refused_or_accepted_as_configured() {
    let rt = runtime();
    let honest = fake_scram::Behaviour {
        wrong_signature: false,
    };
    let (pki, proxy) = with_fake_upstream(&rt, honest, "\"require\"");
    let (code, text) = login(&proxy, &pki, "eve", "eve-pw").unwrap_err();
    assert_eq!(code, "08001");
    assert!(text.contains("offered no SCRAM channel binding"), "{text}");

    let (pki, proxy) = with_fake_upstream(&rt, honest, "\"prefer\"");
    let info = conninfo(proxy.port(), &pki.proxy_ca_path, "eve", "eve-pw", "");
    assert_eq!(psql_ok(&info, "select 'ok'"), "ok");
    let line = proxy.wait_log(&["session ended", "user=\"eve\""]);
    assert!(
        line.contains("client_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    assert!(line.contains("upstream_auth=\"SCRAM-SHA-256\""), "{line}");
}

#[test]
fn an_upstream_with_a_wrong_server_signature_is_refused() {
    let rt = runtime();
    let forger = fake_scram::Behaviour {
        wrong_signature: true,
    };
    let (pki, proxy) = with_fake_upstream(&rt, forger, "\"prefer\"");
    let (code, text) = login(&proxy, &pki, "eve", "eve-pw").unwrap_err();
    assert_eq!(code, "08001");
    assert!(text.contains("signature does not match"), "{text}");
}

#[test]
fn an_ed25519_proxy_certificate_offers_plain_scram_only() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let userlist = write_userlist(pki.dir.path(), &[("alice", &verifier_of(&pg, "alice"))]);
    let (crt, key) = common::openssl_certs::openssl_req(pki.dir.path(), "ed25519", "ed25519");
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.certificate", &toml_path(&crt))
            .set("listen.private_key", &toml_path(&key))
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist)),
    );
    let info = conninfo(proxy.port(), &crt, "alice", ALICE_PASSWORD, "");
    assert_eq!(psql_ok(&info, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    assert!(line.contains("client_auth=\"SCRAM-SHA-256\""), "{line}");
    assert!(
        line.contains("upstream_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    // A client that insists on binding cannot have it here, and says so.
    let require = conninfo(
        proxy.port(),
        &crt,
        "alice",
        ALICE_PASSWORD,
        "channel_binding=require",
    );
    assert!(!psql(&require, "select 1").status.success());
}

#[test]
fn rsa_pss_certificates_bind_on_both_legs_as_postgresql_hashes_them() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    // PostgreSQL's certificate signed with RSA-PSS over SHA-384, the proxy's over SHA-512:
    // the tls-server-end-point hash uses the digest in the signature's parameters.
    let (server_ca, server) = common::openssl_certs::openssl_rsa_pss(dir, "pg", "sha384");
    let (proxy_ca, proxy_leaf) = common::openssl_certs::openssl_rsa_pss(dir, "proxy", "sha512");
    let (proxy_crt, proxy_key) = proxy_leaf.write(dir, "proxy-pss");
    let pg = Postgres::start(&server);
    // libpq binds to PostgreSQL's RSA-PSS certificate directly: what the proxy's upstream
    // leg must compute the same way.
    let direct = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=alice password={ALICE_PASSWORD} \
         dbname=postgres sslmode=verify-full sslrootcert={} channel_binding=require",
        pg.port,
        server_ca.display()
    );
    assert_eq!(psql_ok(&direct, "select current_user"), "alice");
    let userlist = write_userlist(dir, &[("alice", &verifier_of(&pg, "alice"))]);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.certificate", &toml_path(&proxy_crt))
            .set("listen.private_key", &toml_path(&proxy_key))
            .set("upstream.ca", &toml_path(&server_ca))
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist))
            .set("auth.upstream_channel_binding", "\"require\""),
    );
    let info = conninfo(
        proxy.port(),
        &proxy_ca,
        "alice",
        ALICE_PASSWORD,
        "channel_binding=require",
    );
    assert_eq!(psql_ok(&info, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    common::proxy::assert_auth(&line, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256-PLUS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_userlist_and_live_sessions_continue() {
    let (pki, pg, proxy) = tokio::task::spawn_blocking(with_userlist).await.unwrap();
    let bob = verifier_of(&pg, "bob");
    let connect = |user: &'static str, password: &'static str| {
        let config = format!(
            "host=localhost port={} user={user} password={password} dbname=postgres \
             sslmode=require channel_binding=require",
            proxy.port()
        );
        let tls = common::clients::rust_tls(&pki);
        async move {
            let (client, connection) = tokio_postgres::connect(&config, tls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let live = connect("alice", ALICE_PASSWORD).await.unwrap();
    assert!(
        connect("bob", "bob-pw").await.is_err(),
        "bob is not in the userlist yet"
    );
    write_userlist(pki.dir.path(), &[("bob", &bob)]);
    proxy.signal(libc::SIGHUP);
    proxy.wait_log(&["configuration reloaded"]);
    let bob_client = connect("bob", "bob-pw")
        .await
        .expect("bob, from the new userlist");
    let row = bob_client
        .query_one("select current_user", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "bob");
    let row = live.query_one("select current_user", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "alice",
        "the live session is untouched"
    );
}

#[test]
fn check_config_reports_the_mode_and_refuses_md5_lines() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let good = fake_scram::verifier("x");
    let userlist = write_userlist(
        dir,
        &[
            ("alice", &good),
            ("bob", "md5a3556571e93b0d20722ba62be61e8c2d"),
        ],
    );
    let config = ProxyConfig::new(&pki, 5999)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist));
    let path = dir.join("config.toml");
    std::fs::write(&path, config.render()).unwrap();
    let run = || {
        let out = std::process::Command::new(common::proxy::binary())
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = run();
    assert!(!ok, "{text}");
    assert!(
        text.contains("auth.userlist") && text.contains("line 2 (user \"bob\"): an md5"),
        "{text}"
    );
    write_userlist(dir, &[("alice", &good)]);
    let (ok, text) = run();
    assert!(ok, "{text}");
    assert!(text.contains("auth: mode \"scram\""), "{text}");
    assert!(text.contains("auth.userlist: 1 verifier(s)"), "{text}");
}

#[test]
fn a_stale_userlist_gets_28p01_and_the_log_says_the_password_changed() {
    let (pki, pg, proxy) = with_userlist();
    pg.admin("alter role alice password 'a-new-password'");
    let (code, text) = login(&proxy, &pki, "alice", "a-new-password").unwrap_err();
    assert_eq!(code, "28P01");
    assert!(
        text.contains("password authentication failed for user \"alice\""),
        "{text}"
    );
    // Changed by issue 21: the client used to get a hint that the password was changed,
    // which told anyone, before any proof, that the user exists. The client now gets a
    // wrong password's answer exactly (tests/unknown_users.rs compares the bytes); why
    // is in the log.
    assert_eq!(
        text.trim_end(),
        "password authentication failed for user \"alice\""
    );
    let line = proxy.wait_log(&["session refused", "user=\"alice\""]);
    assert!(
        line.contains("password changed"),
        "the log says why: {line}"
    );
}

/// Runs a Python script (psycopg's venv) with the proxy's port and CA in the environment.
fn python_driver(script: &str, proxy: &Proxy, pki: &TestPki) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .env("PGT_PORT", proxy.port().to_string())
        .env("PGT_CA", &pki.proxy_ca_path)
        .env("PGT_PASSWORD", ALICE_PASSWORD)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn pg8000_and_asyncpg_log_in() {
    let (pki, _pg, proxy) = with_userlist();
    // pg8000 always picks SCRAM-SHA-256-PLUS when offered: it cannot log in through a
    // passthrough proxy at all.
    let pg8000 = python_driver(
        r#"
import os, ssl, pg8000.native
ctx = ssl.create_default_context(cafile=os.environ["PGT_CA"])
c = pg8000.native.Connection("alice", host="localhost", port=int(os.environ["PGT_PORT"]),
    password=os.environ["PGT_PASSWORD"], database="postgres", ssl_context=ctx)
print(c.run("select current_user")[0][0])
"#,
        &proxy,
        &pki,
    );
    assert_eq!(pg8000, "alice");
    let line = proxy.wait_log(&["session ended", "application_name=\"\"", "user=\"alice\""]);
    assert!(
        line.contains("client_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    let asyncpg = python_driver(
        r#"
import asyncio, os, ssl, asyncpg
async def main():
    ctx = ssl.create_default_context(cafile=os.environ["PGT_CA"])
    c = await asyncpg.connect(host="localhost", port=int(os.environ["PGT_PORT"]), user="alice",
        password=os.environ["PGT_PASSWORD"], database="postgres", ssl=ctx)
    print(await c.fetchval("select current_user"))
    await c.close()
asyncio.run(main())
"#,
        &proxy,
        &pki,
    );
    assert_eq!(asyncpg, "alice");
}
