//! Logging to a real journal socket: the test runs the proxy in a private mount namespace
//! whose /run holds a journal socket served by a small receiver of the native journal
//! protocol, and checks the structured fields `journalctl` would index. Needs root (for the
//! namespace), like the rest of the suite.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::clients::{conninfo_at, psql_ok};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{ProxyConfig, TestPki, binary};

/// Receives journal datagrams on /run/systemd/journal/socket and appends each entry, as a
/// JSON object, to the file named by argv[1]. Handles both field encodings of the protocol.
const RECEIVER: &str = r#"
import json, os, socket, struct, sys
path = "/run/systemd/journal/socket"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
out = open(sys.argv[1], "a")
while True:
    data = s.recv(1 << 20)
    entry, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        entry[k.decode()] = v.decode(errors="replace")
    if entry:
        out.write(json.dumps(entry) + "\n")
        out.flush()
"#;

/// Starts the proxy inside a mount namespace with a private /run, with or without a
/// journal receiver.
fn start_in_namespace(config: &Path, entries: &Path, with_journal: bool, stderr: &Path) -> Child {
    let receiver = if with_journal {
        format!(
            "python3 -c '{}' {} & for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done;",
            RECEIVER.replace('\'', "'\\''"),
            entries.display()
        )
    } else {
        String::new()
    };
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && {receiver} exec {} --config {}",
        binary().display(),
        config.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(stderr).unwrap());
    common::die_with_parent(&mut cmd, libc::SIGKILL);
    cmd.spawn()
        .expect("unshare (util-linux) runs; the tests run as root")
}

fn entries(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn session_events_reach_the_journal_with_structured_fields() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config_path = pki.dir.path().join("config.toml");
    let entries_path = pki.dir.path().join("journal.jsonl");
    std::fs::write(
        &config_path,
        ProxyConfig::new(&pki, pg.port)
            .set("log.target", "\"journald\"")
            .render(),
    )
    .unwrap();
    let mut child = start_in_namespace(
        &config_path,
        &entries_path,
        true,
        &pki.dir.path().join("stderr"),
    );
    let listen = common::wait_for(
        "the ready entry in the journal",
        Duration::from_secs(20),
        || {
            let all = entries(&entries_path);
            all.iter()
                .any(|e| e["MESSAGE"].as_str().unwrap_or("").contains("ready"))
                .then_some(())?;
            all.iter()
                .find_map(|e| e["PGT_LISTEN"].as_str().map(str::to_owned))
        },
    );
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let info = conninfo_at(port, &pki, "alice", ALICE_PASSWORD);
    assert_eq!(psql_ok(&info, "select 1"), "1");
    let entry = common::wait_for("the session entry", Duration::from_secs(10), || {
        entries(&entries_path).into_iter().find(|e| {
            e["MESSAGE"]
                .as_str()
                .unwrap_or("")
                .starts_with("session ended")
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "pgt-proxy");
    assert_eq!(entry["PRIORITY"], "6", "info");
    assert_eq!(entry["PGT_USER"], "alice");
    assert_eq!(entry["PGT_DATABASE"], "postgres");
    assert_eq!(entry["PGT_TLS_VERSION"], "TLSv1.3");
    assert_eq!(entry["PGT_OUTCOME"], "authenticated");
    assert_eq!(entry["PGT_SQLSTATE"], "");
    // The host's OpenSSL 3.0 on both legs; PostgreSQL takes P-256 only.
    assert_eq!(entry["PGT_CLIENT_TLS_GROUP"], "x25519");
    assert_eq!(entry["PGT_UPSTREAM_TLS_GROUP"], "secp256r1");
    assert!(
        entry["PGT_CLIENT_ADDR"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{entry}"
    );
    assert!(entry.get("F_USER").is_none());
}

#[test]
fn a_missing_journal_falls_back_to_stderr_with_a_warning() {
    let pki = TestPki::new();
    let config_path = pki.dir.path().join("config.toml");
    let stderr = pki.dir.path().join("stderr");
    std::fs::write(
        &config_path,
        ProxyConfig::new(&pki, 5432)
            .set("log.target", "\"journald\"")
            .render(),
    )
    .unwrap();
    let mut child = start_in_namespace(&config_path, &pki.dir.path().join("none"), false, &stderr);
    let log = common::wait_for("the ready line on stderr", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        text.contains("ready").then_some(text)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("cannot reach the systemd journal"), "{log}");
    assert!(log.contains("logging to stderr instead"), "{log}");
}
