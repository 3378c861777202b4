//! The real `pgt-proxy` binary, started with a generated configuration and certificates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pki::{Ca, Issued, Validity};
use super::{die_with_parent, wait_for};

/// The certificates a proxy test needs, written to a temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    /// The private CA that issued the database server's certificate.
    pub upstream_ca: Ca,
    pub upstream_ca_path: PathBuf,
    /// The database server's certificate (DNS:localhost, IP:127.0.0.1).
    pub server: Issued,
    /// The CA clients use to verify the proxy.
    pub proxy_ca: Ca,
    pub proxy_ca_path: PathBuf,
    /// The proxy's certificate (DNS:localhost, IP:127.0.0.1, IP:::1) and key.
    pub proxy: Issued,
    pub proxy_cert_path: PathBuf,
    pub proxy_key_path: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        Self::in_dir(
            tempfile::Builder::new()
                .prefix("pgt-pki-")
                .tempdir()
                .unwrap(),
        )
    }

    /// The same, written inside the trixie root ([`super::trixie`]), so programs run
    /// there can read it.
    pub fn in_trixie() -> TestPki {
        Self::in_dir(super::trixie::tempdir("pgt-pki-"))
    }

    fn in_dir(dir: tempfile::TempDir) -> TestPki {
        let upstream_ca = Ca::new("Test Upstream CA");
        let upstream_ca_path = upstream_ca.write_cert(&dir.path().join("upstream-ca.pem"));
        let server = upstream_ca.issue(
            "localhost",
            &["DNS:localhost", "IP:127.0.0.1"],
            Validity::Current,
        );
        let proxy_ca = Ca::new("Test Proxy CA");
        let proxy_ca_path = proxy_ca.write_cert(&dir.path().join("proxy-ca.pem"));
        let proxy = proxy_ca.issue(
            "localhost",
            &["DNS:localhost", "IP:127.0.0.1", "IP:::1"],
            Validity::Current,
        );
        let (proxy_cert_path, proxy_key_path) = proxy.write(dir.path(), "proxy");
        TestPki {
            dir,
            upstream_ca,
            upstream_ca_path,
            server,
            proxy_ca,
            proxy_ca_path,
            proxy,
            proxy_cert_path,
            proxy_key_path,
        }
    }
}

/// A path as a TOML string value.
pub fn toml_path(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A proxy configuration as TOML keys, with test-friendly defaults.
#[derive(Clone)]
pub struct ProxyConfig {
    keys: BTreeMap<String, BTreeMap<String, String>>,
    /// TOML appended after the sections (arrays of tables such as `[[routes]]`).
    extra: String,
}

impl ProxyConfig {
    /// Listens on a free port of 127.0.0.1, relays to 127.0.0.1:`upstream_port`.
    pub fn new(pki: &TestPki, upstream_port: u16) -> ProxyConfig {
        let q = |p: &PathBuf| toml_path(p);
        ProxyConfig {
            keys: BTreeMap::new(),
            extra: String::new(),
        }
        .set("listen.addresses", r#"["127.0.0.1:0"]"#)
        .set("listen.certificate", &q(&pki.proxy_cert_path))
        .set("listen.private_key", &q(&pki.proxy_key_path))
        .set("listen.handshake_timeout", r#""5s""#)
        .set("listen.startup_timeout", r#""10s""#)
        .set("listen.shutdown_timeout", r#""2s""#)
        .set("upstream.host", r#""127.0.0.1""#)
        .set("upstream.port", &upstream_port.to_string())
        .set("upstream.ca", &q(&pki.upstream_ca_path))
        .set("upstream.connect_timeout", r#""5s""#)
    }

    /// Sets `section.key` to a TOML value (`"\"text\""`, `5`, `true`, `[..]`).
    pub fn set(mut self, key: &str, toml_value: &str) -> ProxyConfig {
        let (section, name) = key.split_once('.').unwrap();
        self.keys
            .entry(section.into())
            .or_default()
            .insert(name.into(), toml_value.into());
        self
    }

    /// Removes `section.key`.
    pub fn unset(mut self, key: &str) -> ProxyConfig {
        let (section, name) = key.split_once('.').unwrap();
        if let Some(s) = self.keys.get_mut(section) {
            s.remove(name);
        }
        self
    }

    /// Appends raw TOML after the sections (e.g. `[[routes]]` entries).
    pub fn append(mut self, toml: &str) -> ProxyConfig {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (section, keys) in &self.keys {
            out.push_str(&format!("[{section}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out.push_str(&self.extra);
        out
    }
}

/// A running proxy; SIGTERM on drop.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Path of the binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgt-proxy"))
}

/// Runs `check-config` on `config`, written as `dir/name`, as a user would (without the
/// machine's SSL_CERT_FILE/SSL_CERT_DIR, like every proxy the tests start): whether it
/// accepted the file, and everything it printed.
pub fn check_config(dir: &std::path::Path, name: &str, config: &ProxyConfig) -> (bool, String) {
    check_config_env(dir, name, config, &[])
}

/// [`check_config`] with `env` added to its environment.
pub fn check_config_env(
    dir: &std::path::Path,
    name: &str,
    config: &ProxyConfig,
    env: &[(&str, &str)],
) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, config.render()).unwrap();
    let out = Command::new(binary())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

impl Proxy {
    /// Starts the proxy and waits until it logs that it is ready.
    pub fn start(config: &ProxyConfig) -> Proxy {
        Self::try_start(config).unwrap_or_else(|log| panic!("proxy did not start:\n{log}"))
    }

    /// Starts the proxy; on failure returns its log.
    pub fn try_start(config: &ProxyConfig) -> Result<Proxy, String> {
        Self::try_start_env(config, &[])
    }

    /// Starts the proxy with extra environment variables.
    pub fn start_env(config: &ProxyConfig, env: &[(&str, &str)]) -> Proxy {
        Self::try_start_env(config, env).unwrap_or_else(|log| panic!("proxy did not start:\n{log}"))
    }

    /// Starts the proxy with extra environment variables; on failure returns its log.
    pub fn try_start_env(config: &ProxyConfig, env: &[(&str, &str)]) -> Result<Proxy, String> {
        let dir = tempfile::Builder::new()
            .prefix("pgt-proxy-")
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config.render()).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("--config").arg(&config_path);
        Self::spawn(cmd, dir, config_path, env)
    }

    /// Starts `cmd` (the binary under a wrapper such as [`super::netns::pod_command`], its
    /// `--config config_path` given by the caller) and waits until it is ready; on failure
    /// returns its log.
    pub fn try_start_command(cmd: Command, config_path: PathBuf) -> Result<Proxy, String> {
        let dir = tempfile::Builder::new()
            .prefix("pgt-proxy-")
            .tempdir()
            .unwrap();
        Self::spawn(cmd, dir, config_path, &[])
    }

    /// Starts the same binary inside the trixie root ([`super::trixie`]), on its OpenSSL
    /// 3.5. `config`'s paths must lie inside the root (e.g. [`TestPki::in_trixie`]).
    pub fn start_in_trixie(config: &ProxyConfig) -> Proxy {
        let root = super::trixie::root();
        let dir = super::trixie::tempdir("pgt-proxy-");
        let config_path = dir.path().join("config.toml");
        let text = config.render().replace(&root.display().to_string(), "");
        std::fs::write(&config_path, text).unwrap();
        let exe = dir.path().join("pgt-proxy");
        if std::fs::hard_link(binary(), &exe).is_err() {
            std::fs::copy(binary(), &exe).unwrap();
        }
        let mut cmd = super::trixie::command(&super::trixie::inside(&exe));
        cmd.arg("--config").arg(super::trixie::inside(&config_path));
        Self::spawn(cmd, dir, config_path, &[])
            .unwrap_or_else(|log| panic!("proxy did not start in the trixie root:\n{log}"))
    }

    fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        config_path: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Proxy, String> {
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        // SSL_CERT_FILE/SSL_CERT_DIR move OpenSSL's default store, the one "system" names;
        // this machine sets them, a container never does. A test that wants them says so.
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().expect("start pgt-proxy");
        let log_path = dir.path().join("proxy.log");
        let addr = wait_for("the proxy to be ready", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!("exited with {status}:\n{text}")));
            }
            if !text.contains("ready") {
                return None;
            }
            let at = text.find("listen=")? + "listen=".len();
            let addr = text[at..].split_whitespace().next()?;
            Some(Ok(addr.parse::<SocketAddr>().unwrap()))
        })?;
        Ok(Proxy {
            child,
            addr,
            dir,
            config_path,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Waits until a log line contains every one of `needles`, and returns that line.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            if std::time::Instant::now() > deadline {
                panic!("no proxy log line with {needles:?} within 15s; the log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the proxy.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the proxy to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as above.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

/// Asserts that a session log line names the mechanisms each leg authenticated with.
pub fn assert_auth(line: &str, client: &str, upstream: &str) {
    assert!(
        line.contains(&format!("client_auth=\"{client}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("upstream_auth=\"{upstream}\"")),
        "{line}"
    );
}
