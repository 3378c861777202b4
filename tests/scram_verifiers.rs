//! Where SCRAM termination's verifiers come from, with real PostgreSQL servers: the
//! userlist (replaced by a reload while live sessions continue, checked by check-config,
//! stale after a password change) and the auth query (which follows a password change and
//! gives none for expired or unknown roles).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::clients::psycopg_connect;
use common::fake_scram;
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::scram::{conninfo, login, query_config, verifier_of, with_userlist, write_userlist};

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
