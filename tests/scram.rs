//! SCRAM termination (`auth.mode = "scram"`) with real PostgreSQL servers and real clients:
//! default libpq clients (channel_binding=prefer), channel_binding=require, psycopg with
//! require_auth, tokio-postgres, pg8000 and asyncpg; and a wrong password and an unknown
//! user, who get the same answer. Channel binding's refusals and certificate types are in
//! scram_binding.rs, where verifiers come from in scram_verifiers.rs, the upstream leg in
//! scram_upstream.rs.

mod common;

use common::clients::{psql_ok, psycopg_connect};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::scram::{conninfo, login, verifier_of, with_userlist, write_userlist};

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
