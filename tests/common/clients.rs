//! Real clients: psql (the system's libpq), psycopg with its bundled recent libpq, and
//! tokio-postgres with postgres-openssl.

use std::process::{Command, Output};

use super::proxy::{Proxy, TestPki};

/// A libpq connection string for `user` through the proxy, verify-full against the proxy CA,
/// with channel binding disabled (it cannot cross a TLS-terminating proxy).
pub fn conninfo(proxy: &Proxy, pki: &TestPki, user: &str, password: &str) -> String {
    conninfo_at(proxy.port(), pki, user, password)
}

/// [`conninfo`] for a proxy listening on 127.0.0.1:`port`.
pub fn conninfo_at(port: u16, pki: &TestPki, user: &str, password: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={user} password={password} dbname=postgres \
         sslmode=verify-full sslrootcert={} channel_binding=disable connect_timeout=10",
        pki.proxy_ca_path.display()
    )
}

/// Runs psql with `conninfo` and one SQL command; unaligned, tuples only, no psqlrc.
pub fn psql(conninfo: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ])
        .output()
        .expect("psql is installed (Debian package postgresql-client)")
}

/// psql's stdout, asserting success.
pub fn psql_ok(conninfo: &str, sql: &str) -> String {
    let out = psql(conninfo, sql);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// psql's stderr, asserting failure.
pub fn psql_err(conninfo: &str, sql: &str) -> String {
    let out = psql(conninfo, sql);
    assert!(
        !out.status.success(),
        "psql unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a Python script with psycopg importable; `PGT_CONNINFO` carries the connection string.
pub fn python(script: &str, conninfo: &str) -> Output {
    Command::new("python3")
        .args(["-c", script])
        .env("PGT_CONNINFO", conninfo)
        .output()
        .expect("python3 is installed")
}

/// A tokio-postgres TLS connector trusting only the proxy CA.
pub fn rust_tls(pki: &TestPki) -> postgres_openssl::MakeTlsConnector {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_ca_file(&pki.proxy_ca_path).unwrap();
    postgres_openssl::MakeTlsConnector::new(b.build())
}

/// Connects with tokio-postgres and drives the connection in a task.
pub async fn rust_connect(
    proxy: &Proxy,
    pki: &TestPki,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let config = format!(
        "host=localhost port={} user={user} password={password} dbname=postgres sslmode=require channel_binding=disable",
        proxy.port()
    );
    let (client, connection) = tokio_postgres::connect(&config, rust_tls(pki)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with psycopg (libpq 18) and returns `Ok(current_user)` or `Err((sqlstate, message))`.
pub fn psycopg_connect(conninfo: &str) -> Result<String, (String, String)> {
    let out = python(
        r#"
import os, sys, psycopg
try:
    with psycopg.connect(os.environ["PGT_CONNINFO"]) as conn:
        print("ok", conn.execute("select current_user").fetchone()[0])
except psycopg.OperationalError as e:
    print("error", e.sqlstate or "")
    print(str(e))
"#,
        conninfo,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (first, rest) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    match first.split_once(' ') {
        Some(("ok", user)) => Ok(user.to_owned()),
        Some(("error", code)) => Err((code.to_owned(), rest.to_owned())),
        _ if first == "error" => Err((String::new(), rest.to_owned())),
        _ => panic!("unexpected output {stdout}"),
    }
}

/// Connects with the Rust client expecting a refusal; returns the FATAL ErrorResponse's
/// SQLSTATE and its message followed by its hint.
pub fn rust_refused(proxy: &Proxy, pki: &TestPki) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(rust_connect(
            proxy,
            pki,
            "alice",
            super::postgres::ALICE_PASSWORD,
        ))
        .expect_err("the connection must be refused");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not an ErrorResponse: {err}"));
    assert_eq!(db.severity(), "FATAL");
    (
        db.code().code().to_owned(),
        format!("{} {}", db.message(), db.hint().unwrap_or("")),
    )
}
