//! The auth query against a real PostgreSQL: a lookup the client gives up on half-way does
//! not confuse the next one, an answer naming another role is not taken, and the query
//! user's own login prepares its password (SASLprep) and refuses an iteration count no
//! proxy should spend.
//!
//! The servers trust the proxy for the role under attack (pg_hba `trust`), the set-up in
//! which a wrong verifier would open a session as that role: only the proxy's check stands
//! between the client and the role.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::postgres::{ALICE_PASSWORD, PgOptions, Postgres};
use common::proxy::{Proxy, TestPki};
use common::scram::query_config;

/// The shipped function, replaced by one that answers for `who` with `whose` row after
/// `delay` seconds, and honestly for everyone else.
fn auth_function(who: &str, whose: &str, delay: u32) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION pgt_proxy.get_auth(p_username text) \
         RETURNS TABLE (username text, verifier text) \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ \
         BEGIN \
           IF p_username = '{who}' THEN \
             PERFORM pg_sleep({delay}); \
             RETURN QUERY SELECT a.rolname::text, a.rolpassword FROM pg_authid a \
               WHERE a.rolname = '{whose}'; \
           ELSE \
             RETURN QUERY SELECT a.rolname::text, a.rolpassword FROM pg_authid a \
               WHERE a.rolname = p_username; \
           END IF; \
         END $$;"
    )
}

/// PostgreSQL trusting the proxy for `bob`, with the shipped auth-query role and function,
/// and the query user's password file holding `query_password`.
fn server(pki: &TestPki, query_password: &str) -> (Postgres, PathBuf) {
    server_with(pki, query_password, Vec::new())
}

/// [`server`] with extra postgresql.conf lines.
fn server_with(pki: &TestPki, query_password: &str, conf: Vec<String>) -> (Postgres, PathBuf) {
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf,
        hba: vec!["hostssl all bob 127.0.0.1/32 trust".into()],
    });
    pg.admin(include_str!("../packaging/auth-query.sql"));
    pg.admin(&format!(
        "alter role pgt_proxy_auth password '{query_password}'"
    ));
    let path = write_secret(pki.dir.path(), query_password);
    (pg, path)
}

fn write_secret(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("auth-password");
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Logs in with tokio-postgres: `Ok(current_user)`, or `Err` with the SQLSTATE of the
/// ErrorResponse (or the client's error when there was none).
fn login(proxy: &Proxy, pki: &TestPki, user: &str, password: &str) -> Result<String, String> {
    let config = format!(
        "host=localhost port={} user={user} password={password} dbname=postgres \
         sslmode=require connect_timeout=20",
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
                    .map_err(|e| e.to_string())?;
                Ok(row.get::<_, String>(0))
            }
            Err(e) => Err(e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.code().code().to_owned())),
        }
    })
}

#[test]
fn a_lookup_cut_off_by_the_startup_deadline_does_not_answer_the_next_user() {
    let pki = TestPki::new();
    let (pg, password_file) = server(&pki, "query-pw");
    pg.admin("create role slow login password 'slow-pw'");
    pg.admin(&auth_function("slow", "slow", 4));
    let proxy = Proxy::start(
        &query_config(&pki, &pg, &password_file).set("listen.startup_timeout", "\"2s\""),
    );
    let started = Instant::now();
    let cut_off = login(&proxy, &pki, "slow", "slow-pw");
    assert!(cut_off.is_err(), "slow's lookup takes 4 s: {cut_off:?}");
    // The slow reply has arrived by now; whoever looks up next must not read it.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    assert_eq!(login(&proxy, &pki, "bob", "bob-pw"), Ok("bob".into()));
    assert_eq!(
        login(&proxy, &pki, "bob", "slow-pw"),
        Err("28P01".into()),
        "slow's password must not open a session as bob"
    );
    // The lookup ran to its end although its client had gone, and filled the cache: slow
    // now logs in within the 2 s deadline that a new 4 s query could not meet.
    assert_eq!(login(&proxy, &pki, "slow", "slow-pw"), Ok("slow".into()));
}

#[test]
fn concurrent_logins_for_one_user_share_one_query() {
    let pki = TestPki::new();
    let (pg, password_file) = server_with(&pki, "query-pw", vec!["log_statement = 'all'".into()]);
    pg.admin("create role slow login password 'slow-pw'");
    pg.admin(&auth_function("slow", "slow", 2));
    // One query at a time: five queries of 2 s each would not fit in the deadline.
    let proxy = Proxy::start(
        &query_config(&pki, &pg, &password_file)
            .set("auth.query_concurrency", "1")
            .set("listen.startup_timeout", "\"6s\""),
    );
    let results: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..5)
            .map(|_| scope.spawn(|| login(&proxy, &pki, "slow", "slow-pw")))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(results, vec![Ok::<_, String>("slow".into()); 5]);
    let asked = pg.log().matches("$1 = 'slow'").count();
    assert_eq!(
        asked,
        1,
        "the server was asked {asked} times:\n{}",
        pg.log()
    );
}

#[test]
fn an_answer_naming_another_role_is_not_taken() {
    let pki = TestPki::new();
    let (pg, password_file) = server(&pki, "query-pw");
    pg.admin(&auth_function("bob", "alice", 0));
    let proxy = Proxy::start(&query_config(&pki, &pg, &password_file));
    assert_eq!(
        login(&proxy, &pki, "bob", ALICE_PASSWORD),
        Err("28P01".into()),
        "alice's verifier must not stand for bob"
    );
    let line = proxy.wait_log(&["auth query", "\"alice\"", "\"bob\""]);
    assert!(line.contains("WARN"), "{line}");
    // The connection was dropped and a new one serves the next lookup.
    assert_eq!(
        login(&proxy, &pki, "alice", ALICE_PASSWORD),
        Ok("alice".into())
    );
}

#[test]
fn the_query_users_password_is_prepared_with_saslprep() {
    let pki = TestPki::new();
    // U+2168 ROMAN NUMERAL NINE: SASLprep (NFKC) makes it "IX", as PostgreSQL does when it
    // stores the verifier and libpq when it logs in; unprepared, the proof is wrong.
    let (pg, password_file) = server(&pki, "query-\u{2168}");
    pg.admin("create role dave login password 'dave-pw'");
    let proxy = Proxy::start(&query_config(&pki, &pg, &password_file));
    assert_eq!(login(&proxy, &pki, "dave", "dave-pw"), Ok("dave".into()));
}

/// A SCRAM verifier for `password` with `iterations`, as PostgreSQL would store it.
fn verifier(password: &str, iterations: usize) -> String {
    use openssl::hash::MessageDigest;
    let salt = b"0123456789abcdef";
    let mut salted = [0u8; 32];
    openssl::pkcs5::pbkdf2_hmac(
        password.as_bytes(),
        salt,
        iterations,
        MessageDigest::sha256(),
        &mut salted,
    )
    .unwrap();
    let hmac = |key: &[u8], data: &[u8]| {
        let pkey = openssl::pkey::PKey::hmac(key).unwrap();
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &pkey).unwrap();
        signer.sign_oneshot_to_vec(data).unwrap()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored = openssl::hash::hash(MessageDigest::sha256(), &client_key).unwrap();
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored),
        B64.encode(server_key)
    )
}

#[test]
fn a_query_user_verifier_with_too_many_iterations_is_refused() {
    let pki = TestPki::new();
    let (pg, password_file) = server(&pki, "query-pw");
    pg.admin(&format!(
        "alter role pgt_proxy_auth password '{}'",
        verifier("query-pw", 200_000)
    ));
    pg.admin("create role dave login password 'dave-pw'");
    let proxy = Proxy::start(&query_config(&pki, &pg, &password_file));
    // The lookup fails, so dave is refused; which SQLSTATE a failed lookup gets is not
    // this test's concern, the log line naming the count is.
    let refused = login(&proxy, &pki, "dave", "dave-pw");
    assert!(refused.is_err(), "{refused:?}");
    proxy.wait_log(&["200000", "100000", "iterations"]);
}

#[test]
fn query_concurrency_is_validated() {
    let pki = TestPki::new();
    let (pg, password_file) = server(&pki, "query-pw");
    for bad in ["0", "65"] {
        let log = Proxy::try_start(
            &query_config(&pki, &pg, &password_file).set("auth.query_concurrency", bad),
        )
        .err()
        .unwrap_or_else(|| panic!("query_concurrency = {bad} was accepted"));
        assert!(
            log.contains("auth.query_concurrency: must be between 1 and 64"),
            "{log}"
        );
    }
    let proxy =
        Proxy::start(&query_config(&pki, &pg, &password_file).set("auth.query_concurrency", "1"));
    assert_eq!(
        login(&proxy, &pki, "alice", ALICE_PASSWORD),
        Ok("alice".into())
    );
}
