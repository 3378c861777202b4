//! What the SCRAM termination tests share: the userlist and secret files they write, the
//! server's own verifiers, a proxy terminating SCRAM with alice's verifier, libpq connection
//! strings with a channel-binding option, tokio-postgres's login as a program sees it, and
//! the configuration for verifiers from the auth query.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::postgres::Postgres;
use super::proxy::{Proxy, ProxyConfig, TestPki, toml_path};

/// Writes a userlist with 0600 permissions.
pub fn write_userlist(dir: &Path, lines: &[(&str, &str)]) -> PathBuf {
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
pub fn verifier_of(pg: &Postgres, role: &str) -> String {
    pg.admin(&format!(
        "select rolpassword from pg_authid where rolname = '{role}'"
    ))
}

/// A file of `bytes` with `mode`.
pub fn write_secret(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// PostgreSQL, and a proxy terminating SCRAM with a userlist holding alice's verifier.
pub fn with_userlist() -> (TestPki, Postgres, Proxy) {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let userlist = write_userlist(pki.dir.path(), &[("alice", &verifier_of(&pg, "alice"))]);
    let config = ProxyConfig::new(&pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &toml_path(&userlist));
    let proxy = Proxy::start(&config);
    (pki, pg, proxy)
}

/// A libpq connection string through the proxy, verify-full, with libpq's default
/// channel binding (prefer) unless `extra` says otherwise.
pub fn conninfo(port: u16, ca: &Path, user: &str, password: &str, extra: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={user} password={password} \
         dbname=postgres sslmode=verify-full sslrootcert={} connect_timeout=10 {extra}",
        ca.display()
    )
}

/// Logs in with tokio-postgres (channel_binding=prefer, so -PLUS when offered) and returns
/// `Ok(current_user)` or the ErrorResponse's `(SQLSTATE, message and hint)`: what a user's
/// program sees.
pub fn login(
    proxy: &Proxy,
    pki: &TestPki,
    user: &str,
    password: &str,
) -> Result<String, (String, String)> {
    let config = format!(
        "host=localhost port={} user={user} password={password} dbname=postgres sslmode=require",
        proxy.port()
    );
    let tls = super::clients::rust_tls(pki);
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

/// A proxy terminating SCRAM with verifiers from the auth query, as the shipped
/// packaging/auth-query.sql's role `pgt_proxy_auth` with its password in `password_file`.
pub fn query_config(pki: &TestPki, pg: &Postgres, password_file: &Path) -> ProxyConfig {
    ProxyConfig::new(pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.query_user", "\"pgt_proxy_auth\"")
        .set("auth.query_password_file", &toml_path(password_file))
        .set("auth.unknown_user", "\"refuse\"")
}
