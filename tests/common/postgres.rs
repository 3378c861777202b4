//! A real PostgreSQL server per test: initdb into a temporary directory, TLS with a
//! certificate from the test PKI, scram-sha-256 over hostssl, started as the `postgres` user
//! when the tests run as root (PostgreSQL refuses to run as root).

use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pki::Issued;
use super::{die_with_parent, wait_for};

/// Password of the `alice` role (scram-sha-256).
pub const ALICE_PASSWORD: &str = "alice-pw";

/// What the test needs of its server.
pub struct PgOptions<'a> {
    /// Server certificate and key; `None` runs the server without TLS.
    pub tls: Option<&'a Issued>,
    /// Extra postgresql.conf lines.
    pub conf: Vec<String>,
    /// pg_hba.conf lines placed before the standard ones.
    pub hba: Vec<String>,
}

/// A running server, stopped on drop.
pub struct Postgres {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub socket_dir: PathBuf,
    child: Child,
}

/// Directory holding initdb and postgres (Debian: /usr/lib/postgresql/<major>/bin).
pub fn bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PGT_TEST_PG_BINDIR") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server is not installed (/usr/lib/postgresql missing): run scripts/test, which installs it")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn postgres_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a 'postgres' user (created by Debian's postgresql package)");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Some((uid, gid))
}

fn as_postgres(cmd: &mut Command) {
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
}

fn chown_tree(path: &Path, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        chown(path, Some(uid), Some(gid)).unwrap();
        if path.is_dir() {
            for e in std::fs::read_dir(path).unwrap() {
                chown_tree(&e.unwrap().path(), ids);
            }
        }
    }
}

impl Postgres {
    /// Starts a server with TLS from `server` and the standard roles.
    pub fn start(server: &Issued) -> Postgres {
        Self::start_with(PgOptions {
            tls: Some(server),
            conf: Vec::new(),
            hba: Vec::new(),
        })
    }

    /// Starts a server as `options` say.
    pub fn start_with(options: PgOptions<'_>) -> Postgres {
        let ids = postgres_ids();
        let dir = tempfile::Builder::new()
            .prefix("pgt-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        chown_tree(dir.path(), ids);
        let mut initdb = Command::new(bindir().join("initdb"));
        initdb
            .args([
                "--no-sync",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_postgres(&mut initdb);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", dir.path().display()),
            "fsync = off".into(),
            "password_encryption = 'scram-sha-256'".into(),
            "max_connections = 40".into(),
            "log_connections = on".into(),
        ];
        if let Some(tls) = options.tls {
            let (cert, key) = tls.write(&data, "server");
            chown_tree(&cert, ids);
            chown_tree(&key, ids);
            conf.push("ssl = on".into());
            conf.push(format!("ssl_cert_file = '{}'", cert.display()));
            conf.push(format!("ssl_key_file = '{}'", key.display()));
        }
        conf.extend(options.conf);
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        // `trusted` logs in without a password over TLS (for raw-protocol tests); everyone
        // else uses scram-sha-256 over TLS; plaintext TCP is rejected.
        let mut hba = options.hba.join("\n");
        hba.push('\n');
        std::fs::write(
            data.join("pg_hba.conf"),
            hba + "local all all trust\n\
             hostssl all trusted 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             host all trusted 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        chown_tree(&data, ids);

        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let mut cmd = Command::new(bindir().join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        as_postgres(&mut cmd);
        die_with_parent(&mut cmd, libc::SIGQUIT);
        let child = cmd.spawn().expect("start postgres");
        let pg = Postgres {
            port,
            socket_dir: dir.path().to_owned(),
            dir,
            child,
        };
        wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || pg.try_admin("select 1").ok(),
        );
        pg.admin(&format!(
            "create role alice login password '{ALICE_PASSWORD}'; create role trusted login; \
             create role bob login password 'bob-pw'; grant create on schema public to public;"
        ));
        pg
    }

    fn try_admin(&self, sql: &str) -> Result<String, String> {
        let conninfo = format!(
            "host={} port={} user=postgres dbname=postgres",
            self.socket_dir.display(),
            self.port
        );
        let out = super::clients::psql(&conninfo, sql);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL as the superuser over the Unix socket and returns the unaligned output.
    pub fn admin(&self, sql: &str) -> String {
        self.try_admin(sql)
            .unwrap_or_else(|e| panic!("admin SQL {sql:?} failed: {e}"))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
    }
}
