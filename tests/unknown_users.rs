//! Users the proxy cannot check, with `auth.mode = "scram"` and real PostgreSQL servers: a
//! relayed user is never let in by a server that asks for nothing (takeover 3 of issue 21),
//! nothing before the proof tells an unknown user, a stale verifier or a failed lookup from
//! a wrong password (compared byte for byte by a raw client), the mock salt is stable
//! across restarts with `auth.mock_secret_file`, and `check-config --connect` names a
//! server that trusts the proxy.

mod common;

use common::clients::rust_connect;
use common::fake_scram;
use common::postgres::{ALICE_PASSWORD, PgOptions, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::sasl;
use common::scram::{verifier_of, write_secret, write_userlist};

/// Runs `f` to completion on a runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// tokio-postgres's login: `Ok(current_user)` or the ErrorResponse's `(SQLSTATE, message)`.
fn login(proxy: &Proxy, pki: &TestPki, user: &str, pw: &str) -> Result<String, (String, String)> {
    block_on(login_async(proxy, pki, user, pw))
}

async fn login_async(
    proxy: &Proxy,
    pki: &TestPki,
    user: &str,
    pw: &str,
) -> Result<String, (String, String)> {
    match rust_connect(proxy, pki, user, pw).await {
        Ok(client) => {
            let row = client
                .query_one("select current_user::text", &[])
                .await
                .unwrap();
            Ok(row.get(0))
        }
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not an ErrorResponse: {e}"));
            Err((db.code().code().to_owned(), db.message().to_owned()))
        }
    }
}

/// A server that trusts 127.0.0.1 for `bob` (a role not in the proxy's userlist), and a
/// proxy configuration terminating SCRAM for alice.
fn trusting_bob(pki: &TestPki) -> (Postgres, ProxyConfig) {
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: Vec::new(),
        hba: vec!["hostssl all bob 127.0.0.1/32 trust".into()],
    });
    let userlist = write_userlist(pki.dir.path(), &[("alice", &verifier_of(&pg, "alice"))]);
    let config = ProxyConfig::new(pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist));
    (pg, config)
}

#[test]
fn a_relayed_user_is_never_let_in_by_a_server_that_asks_for_nothing() {
    let pki = TestPki::new();
    let (pg, config) = trusting_bob(&pki);

    // The default, "refuse": bob has no verifier; a wrong password's answer, and the server
    // is never asked.
    let proxy = Proxy::start(&config);
    let refused = login(&proxy, &pki, "bob", "anything").unwrap_err();
    assert_eq!(refused.0, "28P01", "{}", refused.1);
    assert_eq!(refused.1, "password authentication failed for user \"bob\"");
    proxy.wait_log(&[
        "session refused",
        "user=\"bob\"",
        "no verifier for this user",
    ]);
    assert!(!pg.log().contains("user=bob"), "{}", pg.log());
    assert_eq!(
        login(&proxy, &pki, "alice", ALICE_PASSWORD),
        Ok("alice".into())
    );
    drop(proxy);

    // "passthrough": relayed, and the server lets bob in without asking: refused.
    let passthrough = config.clone().set("auth.unknown_user", "\"passthrough\"");
    let proxy = Proxy::start(&passthrough);
    let (code, message) = login(&proxy, &pki, "bob", "x").unwrap_err();
    assert_eq!(code, "28P01", "{message}");
    assert!(message.contains("asked for no password"), "{message}");
    let line = proxy.wait_log(&["session refused", "user=\"bob\""]);
    assert!(
        line.contains("trusts the proxy's address") && line.contains("passthrough_trust"),
        "the log says the server asked for nothing: {line}"
    );
    // A relayed user the server does ask for a password still logs in (psql's passthrough).
    pg.admin("create role carol login password 'carol-pw'");
    let info = common::clients::conninfo(&proxy, &pki, "carol", "carol-pw");
    assert_eq!(
        common::clients::psql_ok(&info, "select current_user"),
        "carol"
    );
    drop(proxy);

    // The operator accepts the server's trust.
    let trusting = passthrough.set("auth.passthrough_trust", "true");
    let proxy = Proxy::start(&trusting);
    assert_eq!(login(&proxy, &pki, "bob", "x"), Ok("bob".into()));
}

#[test]
fn users_the_proxy_cannot_check_get_a_wrong_passwords_answer_byte_for_byte() {
    let pki = TestPki::new();
    let (pg, proxy) = {
        {
            let pg = Postgres::start(&pki.server);
            pg.admin(include_str!("../packaging/auth-query.sql"));
            pg.admin("alter role pgt_proxy_auth password 'query-pw'");
            let password = write_secret(pki.dir.path(), "auth-password", b"query-pw\n", 0o600);
            // alice and bob from the userlist; alice's is stale once her password changes.
            let userlist = write_userlist(
                pki.dir.path(),
                &[
                    ("alice", &verifier_of(&pg, "alice")),
                    ("bob", &verifier_of(&pg, "bob")),
                ],
            );
            pg.admin("alter role alice password 'a-new-password'");
            // A role, so that the query's WHERE runs (and fails) for it.
            pg.admin("create role broken login password 'broken-pw'");
            let secret = write_secret(pki.dir.path(), "mock-secret", &[42u8; 32], 0o600);
            // The query fails (division by zero) for six-letter names.
            let config = ProxyConfig::new(&pki, pg.port)
                .set("auth.mode", "\"scram\"")
                .set("auth.userlist", &toml_path(&userlist))
                .set("auth.query_user", "\"pgt_proxy_auth\"")
                .set("auth.query_password_file", &toml_path(&password))
                .set(
                    "auth.query",
                    "\"SELECT username, verifier FROM pgt_proxy.get_auth($1) WHERE 1 / (length($1) - 6) IS NOT NULL\"",
                )
                .set("auth.mock_secret_file", &toml_path(&secret));
            (pg, Proxy::start(&config))
        }
    };
    let wrong = block_on(sasl::attempt(proxy.addr, &pki, "bob"));
    let cases = [
        ("unknown", "mallory", "no verifier for this user"),
        ("stale", "alice", "differs from the proxy's"),
        (
            "failed lookup",
            "broken",
            "cannot fetch the user's SCRAM verifier",
        ),
    ];
    let reference = wrong.server_first();
    assert_eq!(reference.iterations, 4096);
    for (case, user, logged) in cases {
        let t = block_on(sasl::attempt(proxy.addr, &pki, user));
        assert_eq!(t.offer, wrong.offer, "{case}: the SASL offer");
        let first = t.server_first();
        assert_eq!(first.iterations, reference.iterations, "{case}: iterations");
        assert_eq!(
            first.salt.len(),
            reference.salt.len(),
            "{case}: salt length"
        );
        assert_eq!(
            first.server_nonce.len(),
            reference.server_nonce.len(),
            "{case}: nonce length"
        );
        assert_eq!(
            t.first_answer.len(),
            wrong.first_answer.len(),
            "{case}: server-first length"
        );
        assert_eq!(
            String::from_utf8_lossy(&t.last),
            String::from_utf8_lossy(&wrong.last),
            "{case}: the ErrorResponse"
        );
        assert_eq!(t.after, wrong.after, "{case}: nothing after it");
        proxy.wait_log(&["session refused", &format!("user=\"{user}\""), logged]);
    }
    assert!(String::from_utf8_lossy(&wrong.last).contains("C28P01\0"));
    let log = proxy.log();
    assert!(
        !log.contains("query-pw"),
        "the query user's password reached the log"
    );
    // The server never heard of the unknown user from a session (only the auth query ran).
    assert!(!pg.log().contains("user=mallory"), "{}", pg.log());
}

/// A proxy terminating SCRAM with a userlist whose verifiers mostly use 8192 iterations.
fn with_secret(pki: &TestPki, pg: &Postgres, secret: &std::path::Path) -> ProxyConfig {
    let fake = fake_scram::verifier("x").replace("$4096:", "$8192:");
    let userlist = write_userlist(
        pki.dir.path(),
        &[
            ("alice", &verifier_of(pg, "alice")),
            ("u1", &fake),
            ("u2", &fake),
        ],
    );
    ProxyConfig::new(pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist))
        .set("auth.mock_secret_file", &toml_path(secret))
}

/// The server-first-message `user` gets.
fn server_first(proxy: &Proxy, pki: &TestPki, user: &str) -> sasl::ServerFirst {
    block_on(sasl::attempt(proxy.addr, pki, user)).server_first()
}

#[test]
fn the_mock_salt_survives_a_restart_and_is_the_users_own() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let secret = write_secret(pki.dir.path(), "mock-secret", &[1u8; 32], 0o600);
    let other = write_secret(pki.dir.path(), "other-secret", &[2u8; 40], 0o600);
    let config = with_secret(&pki, &pg, &secret);
    let proxy = Proxy::start(&config);
    let mallory = server_first(&proxy, &pki, "mallory");
    assert_eq!(mallory.iterations, 8192, "the userlist's most common count");
    assert_eq!(server_first(&proxy, &pki, "mallory").salt, mallory.salt);
    let trudy = server_first(&proxy, &pki, "trudy");
    assert_ne!(trudy.salt, mallory.salt, "another user, another salt");
    drop(proxy);

    let restarted = Proxy::start(&config);
    let again = server_first(&restarted, &pki, "mallory");
    assert_eq!(again.salt, mallory.salt, "the same salt after a restart");
    drop(restarted);

    // A replica with another secret gives other salts; one without any, too.
    let replica = Proxy::start(&with_secret(&pki, &pg, &other));
    let there = server_first(&replica, &pki, "mallory");
    assert_ne!(there.salt, mallory.salt);
    drop(replica);

    // An unusable secret file is a configuration error.
    let dir = pki.dir.path();
    for (name, bytes, mode, says) in [
        ("open", &[3u8; 32][..], 0o644, "group or world access"),
        ("short", &[3u8; 16][..], 0o600, "holds 16 bytes"),
    ] {
        let path = write_secret(dir, name, bytes, mode);
        let log = Proxy::try_start(&with_secret(&pki, &pg, &path))
            .err()
            .expect("refused to start");
        assert!(
            log.contains("auth.mock_secret_file") && log.contains(says),
            "{log}"
        );
    }
    let missing = with_secret(&pki, &pg, &dir.join("absent"));
    let log = Proxy::try_start(&missing).err().expect("refused to start");
    assert!(log.contains("auth.mock_secret_file"), "{log}");
}

/// `pgt-proxy check-config --connect` with `config`: success and the report.
fn check_connect(config: &ProxyConfig, dir: &std::path::Path) -> (bool, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, config.render()).unwrap();
    let out = std::process::Command::new(common::proxy::binary())
        .args([
            "--config",
            path.to_str().unwrap(),
            "check-config",
            "--connect",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_config_connect_names_an_upstream_that_trusts_the_proxy() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let trusting = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: Vec::new(),
        hba: vec!["hostssl all all 127.0.0.1/32 trust".into()],
    });
    let userlist = write_userlist(dir, &[("alice", &verifier_of(&trusting, "alice"))]);
    let scram = ProxyConfig::new(&pki, trusting.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist));

    let (ok, text) = check_connect(&scram, dir);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: upstream upstream trusts the proxy's address (pg_hba trust)"),
        "{text}"
    );
    assert!(
        text.contains("warning: auth.mock_secret_file is unset"),
        "{text}"
    );

    let relaying = scram.clone().set("auth.unknown_user", "\"passthrough\"");
    let (ok, text) = check_connect(&relaying, dir);
    assert!(
        !ok,
        "relaying unchecked users to a trusting server is an error: {text}"
    );
    assert!(
        text.contains("FAILED: upstream upstream trusts the proxy's address"),
        "{text}"
    );

    let accepted = relaying.set("auth.passthrough_trust", "true");
    let (ok, text) = check_connect(&accepted, dir);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: auth.passthrough_trust = true"),
        "{text}"
    );

    // A server that asks every role for a password.
    let asking = Postgres::start(&pki.server);
    let (ok, text) = check_connect(&ProxyConfig::new(&pki, asking.port), dir);
    assert!(ok, "{text}");
    assert!(
        text.contains("asks a role it does not know for SCRAM"),
        "{text}"
    );
    assert!(
        !text.contains("trusts the proxy's address (pg_hba trust)"),
        "{text}"
    );
}
