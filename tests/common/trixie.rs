//! A Debian 13 "trixie" root (OpenSSL 3.5, PostgreSQL 17, psql 17) made by
//! `scripts/trixie-root`, and programs run in it with `chroot`: the proxy under test (the
//! same binary, on trixie's libssl), trixie's `openssl`, psql and PostgreSQL. A chroot
//! shares the host's network, so these talk to each other and to host programs over
//! 127.0.0.1. Everything a test writes for them lives in a temporary directory inside the
//! root, and is named inside by the same path less the root's prefix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::pki::Issued;
use super::postgres::free_port;
use super::{die_with_parent, wait_for};

/// The root, made (or found cached) once per test process; panics when it cannot be made.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/trixie-root");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/trixie-root");
        assert!(out.status.success(), "scripts/trixie-root failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A temporary directory inside the root.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root().join("tmp"))
        .unwrap()
}

/// `path` (under the root) as programs inside the root name it.
pub fn inside(path: &Path) -> String {
    let rel = path
        .strip_prefix(root())
        .expect("a path inside the trixie root");
    format!("/{}", rel.display())
}

/// `program` with `args`, run inside the root as root.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root()).arg(program);
    cmd
}

/// `program`, run inside the root as its `postgres` user.
fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg("--userspec=postgres:postgres")
        .arg(root())
        .arg(program);
    cmd
}

/// The `postgres` user's ids inside the root (its /etc/passwd, not the host's).
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string(root().join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a postgres user in the trixie root");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), (uid, gid));
        }
    }
}

/// Trixie's PostgreSQL 17 (on OpenSSL 3.5) with TLS from `server`, its settings as Debian
/// ships them (`ssl_ecdh_curve` = prime256v1), trusting TLS connections from 127.0.0.1.
pub struct Postgres17 {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Postgres17 {
    pub fn start(server: &Issued) -> Postgres17 {
        let ids = postgres_ids();
        let dir = tempdir("pgt-pg17-");
        let data = dir.path().join("data");
        chown_tree(dir.path(), ids);
        let bin = "/usr/lib/postgresql/17/bin";
        let out = as_postgres(&format!("{bin}/initdb"))
            .args([
                "--no-sync",
                "-A",
                "trust",
                "-U",
                "postgres",
                "--locale=C",
                "-D",
            ])
            .arg(inside(&data))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb 17 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (cert, key) = server.write(&data, "server");
        let port = free_port();
        let conf = [
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", inside(dir.path())),
            "fsync = off".into(),
            "huge_pages = off".into(),
            "dynamic_shared_memory_type = mmap".into(),
            "ssl = on".into(),
            format!("ssl_cert_file = '{}'", inside(&cert)),
            format!("ssl_key_file = '{}'", inside(&key)),
        ];
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        chown_tree(&data, ids);
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let mut cmd = as_postgres(&format!("{bin}/postgres"));
        cmd.arg("-D")
            .arg(inside(&data))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd, libc::SIGQUIT);
        let child = cmd.spawn().expect("start PostgreSQL 17");
        let pg = Postgres17 { port, dir, child };
        wait_for(
            "PostgreSQL 17 to accept connections",
            Duration::from_secs(30),
            || {
                let out = command("/usr/bin/psql")
                    .args(["-X", "-A", "-t", "-h"])
                    .arg(inside(pg.dir.path()))
                    .args(["-p", &port.to_string(), "-U", "postgres", "-c", "select 1"])
                    .output()
                    .unwrap();
                out.status.success().then_some(())
            },
        );
        pg
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres17 {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
    }
}
