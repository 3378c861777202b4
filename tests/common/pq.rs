//! The programs the key-exchange tests (tests/pq_*.rs) drive: trixie's `openssl s_client`,
//! psql 17 and `openssl s_server` (OpenSSL 3.5), and `pgt-proxy check-config` on either
//! library.

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use super::pki::Issued;
use super::postgres::free_port;
use super::proxy::{ProxyConfig, TestPki, binary};
use super::trixie::{self, inside};
use super::{die_with_parent, wait_for};

/// `openssl s_client` of trixie (3.5) through the proxy with `groups` (OpenSSL's default
/// list when `None`); its output.
pub fn s_client(proxy_port: u16, pki: &TestPki, groups: Option<&str>) -> String {
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
pub fn psql17(proxy_port: u16, pki: &TestPki, user: &str, password: &str, sql: &str) -> Output {
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

/// Trixie's `openssl s_server` (3.5) on a free port with `server`'s certificate, accepting
/// only `groups`; it never answers a StartupMessage. Killed when dropped.
pub struct SServer {
    pub port: u16,
    child: Child,
}

impl SServer {
    /// `dir` lies inside the root (e.g. [`TestPki::in_trixie`]'s).
    pub fn start(server: &Issued, dir: &Path, groups: &str) -> SServer {
        let (cert, key) = server.write(dir, "s_server");
        let port = free_port();
        let log = dir.join("s_server.log");
        let mut cmd = trixie::command("/usr/bin/openssl");
        cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-groups", groups, "-alpn", "postgresql", "-cert"])
            .arg(inside(&cert))
            .arg("-key")
            .arg(inside(&key))
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().unwrap();
        wait_for("s_server", Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ACCEPT")
                .then_some(())
        });
        SServer { port, child }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pgt-proxy check-config` of `config`, on the host (`in_trixie` false) or in the root.
pub fn check_config(config: &ProxyConfig, in_trixie: bool) -> (bool, String) {
    let dir = trixie::tempdir("pgt-check-");
    if !in_trixie {
        return super::proxy::check_config(dir.path(), "config.toml", config);
    }
    let path = dir.path().join("config.toml");
    let root = trixie::root().display().to_string();
    std::fs::write(&path, config.render().replace(&root, "")).unwrap();
    let exe = dir.path().join("pgt-proxy");
    if std::fs::hard_link(binary(), &exe).is_err() {
        std::fs::copy(binary(), &exe).unwrap();
    }
    let out = trixie::command(&inside(&exe))
        .args(["--config", &inside(&path), "check-config"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
