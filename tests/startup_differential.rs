//! The same unusual StartupMessages sent straight to PostgreSQL and through the proxy: what
//! the server reports of the session (`current_user`, `current_database()`, settings) must be
//! the same both ways, or the proxy refuses the packet (a repeated key, which the server would
//! resolve by keeping the last value, so that the proxy would judge one role or database and
//! the server open another). The server trusts every TLS connection from 127.0.0.1, so
//! nothing but the packet decides who the session is.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use common::postgres::{PgOptions, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::raw::{SSL_REQUEST, error_fields, read_byte, read_until_ready};
use openssl::ssl::{SslConnector, SslMethod};
use pgt_proxy::protocol::parameters::encode_packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// What the server says of a session: its messages' tags up to ReadyForQuery (with any
/// NegotiateProtocolVersion body), then the query's row; or the ErrorResponse's code.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    Session {
        negotiated: Option<Vec<u8>>,
        row: Vec<Option<String>>,
    },
    Refused {
        code: String,
        message: String,
    },
}

const REPORT_SQL: &str = "select current_user, session_user, current_database(), \
     current_setting('search_path'), current_setting('work_mem'), \
     current_setting('application_name')";

/// A StartupMessage with protocol 3.`minor` and the given parameters, in order.
fn startup(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let params: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    encode_packet(0x0003_0000 | u32::from(minor), &params)
}

/// Opens TLS to `addr` (SSLRequest), trusting `ca` for "localhost".
async fn tls(addr: SocketAddr, ca: &Path) -> SslStream<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(read_byte(&mut tcp).await, Some(b'S'));
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca).unwrap();
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let mut s = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s
}

/// Sends `packet`, then `sql` once the session is ready, and reports what came back.
async fn report(addr: SocketAddr, ca: &Path, packet: &[u8], sql: &str) -> Report {
    let mut s = tls(addr, ca).await;
    s.write_all(packet).await.unwrap();
    let messages = read_until_ready(&mut s).await;
    if let Some((b'E', body)) = messages.last() {
        let (code, message) = error_fields(body);
        return Report::Refused { code, message };
    }
    assert_eq!(messages.last().map(|m| m.0), Some(b'Z'), "{messages:?}");
    let negotiated = messages
        .iter()
        .find(|(tag, _)| *tag == b'v')
        .map(|(_, body)| body.clone());
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    query.extend_from_slice(sql.as_bytes());
    query.push(0);
    s.write_all(&query).await.unwrap();
    let answer = read_until_ready(&mut s).await;
    let row = answer
        .iter()
        .find(|(tag, _)| *tag == b'D')
        .map(|(_, body)| data_row(body))
        .unwrap_or_else(|| panic!("no row for {sql}: {answer:?}"));
    let _ = s.write_all(&[b'X', 0, 0, 0, 4]).await;
    let _ = s.read(&mut [0u8; 1]).await;
    Report::Session { negotiated, row }
}

/// The columns of a DataRow.
fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = at + len as usize;
            out.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
            at = end;
        }
    }
    out
}

/// A 63-byte role name (the longest PostgreSQL keeps) and a 70-byte one that it cuts to it.
fn long_names() -> (String, String) {
    let kept = "l".repeat(63);
    (kept.clone(), format!("{kept}1234567"))
}

#[test]
fn unusual_startup_packets_open_the_same_session_direct_and_through_the_proxy_or_are_refused() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: vec!["wal_level = logical".into()],
        hba: vec![
            "hostssl all all 127.0.0.1/32 trust".into(),
            "hostssl replication all 127.0.0.1/32 trust".into(),
        ],
    });
    let (kept, too_long) = long_names();
    pg.admin(&format!(
        "create role victim login superuser; create role repl login replication; \
         create role \"{kept}\" login;"
    ));
    pg.admin("create database alice owner alice");
    let proxy = Proxy::start(&ProxyConfig::new(&pki, pg.port));
    let direct: SocketAddr = ([127, 0, 0, 1], pg.port).into();
    let proxied: SocketAddr = ([127, 0, 0, 1], proxy.port()).into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let same = |what: &str, packet: Vec<u8>, sql: &str| {
        let server = rt.block_on(report(direct, &pki.upstream_ca_path, &packet, sql));
        let through = rt.block_on(report(proxied, &pki.proxy_ca_path, &packet, sql));
        assert!(
            matches!(server, Report::Session { .. }),
            "{what}: the server refused it directly: {server:?}"
        );
        assert_eq!(through, server, "{what}: the proxy's session differs");
        server
    };
    let refused = |what: &str, packet: Vec<u8>, needle: &str| {
        let server = rt.block_on(report(direct, &pki.upstream_ca_path, &packet, REPORT_SQL));
        let through = rt.block_on(report(proxied, &pki.proxy_ca_path, &packet, REPORT_SQL));
        match through {
            Report::Refused { code, message } => {
                assert_eq!(code, "08P01", "{what}: {message}");
                assert!(message.contains(needle), "{what}: {message}");
            }
            other => panic!("{what}: the proxy did not refuse it: {other:?} (direct: {server:?})"),
        }
        server
    };

    // Takeover 1 of issue 21: the server keeps the last user (or database); the proxy, which
    // would have judged the first, refuses the packet and names the key.
    let server = refused(
        "user twice",
        startup(
            0,
            &[
                ("user", "alice"),
                ("database", "postgres"),
                ("user", "victim"),
            ],
        ),
        "\"user\" appears more than once",
    );
    let Report::Session { row, .. } = server else {
        panic!("direct: {server:?}")
    };
    assert_eq!(row[0].as_deref(), Some("victim"), "why it matters: {row:?}");
    refused(
        "database twice",
        startup(
            0,
            &[
                ("user", "alice"),
                ("database", "alice"),
                ("database", "postgres"),
            ],
        ),
        "\"database\" appears more than once",
    );
    refused(
        "a setting twice in two letter cases",
        startup(
            0,
            &[
                ("user", "alice"),
                ("application_name", "one"),
                ("Application_Name", "two"),
            ],
        ),
        "\"Application_Name\" appears more than once",
    );
    let upper = startup(0, &[("user", "alice"), ("DATABASE", "postgres")]);
    refused("database in capitals", upper, "only in letter case");

    // What the server decides itself, the proxy decides the same way.
    let report = same(
        "no database: the user's name",
        startup(0, &[("user", "alice")]),
        REPORT_SQL,
    );
    let Report::Session { row, .. } = report else {
        unreachable!()
    };
    assert_eq!(row[2].as_deref(), Some("alice"));
    same(
        "an empty database: the user's name",
        startup(0, &[("user", "alice"), ("database", "")]),
        REPORT_SQL,
    );
    same(
        "empty settings",
        startup(
            0,
            &[
                ("user", "alice"),
                ("database", "postgres"),
                ("application_name", ""),
            ],
        ),
        REPORT_SQL,
    );
    same(
        "options with -c",
        startup(
            0,
            &[
                ("user", "alice"),
                ("database", "postgres"),
                ("options", "-c search_path=evil,public -c work_mem=7MB"),
                ("application_name", "diff"),
            ],
        ),
        REPORT_SQL,
    );
    same(
        "a setting in capitals, once",
        startup(0, &[("user", "alice"), ("Application_Name", "caps")]),
        REPORT_SQL,
    );
    let report = same(
        "a role name past NAMEDATALEN, cut by the server",
        startup(0, &[("user", &too_long), ("database", "postgres")]),
        REPORT_SQL,
    );
    let Report::Session { row, .. } = report else {
        unreachable!()
    };
    assert_eq!(row[0].as_deref(), Some(kept.as_str()));
    let report = same(
        "an unknown _pq_ extension",
        startup(
            0,
            &[
                ("user", "alice"),
                ("database", "postgres"),
                ("_pq_.pgt_test", "1"),
            ],
        ),
        REPORT_SQL,
    );
    assert!(
        matches!(
            &report,
            Report::Session {
                negotiated: Some(_),
                ..
            }
        ),
        "the server names the unknown option: {report:?}"
    );
    same(
        "protocol 3.2",
        startup(2, &[("user", "alice"), ("database", "postgres")]),
        REPORT_SQL,
    );
    same(
        "logical replication",
        startup(
            0,
            &[
                ("user", "repl"),
                ("database", "postgres"),
                ("replication", "database"),
            ],
        ),
        "select current_user, current_database()",
    );
    same(
        "physical replication",
        startup(
            0,
            &[
                ("user", "repl"),
                ("database", "alice"),
                ("replication", "yes"),
            ],
        ),
        "IDENTIFY_SYSTEM",
    );
}

/// Takeover 1 against SCRAM termination: alice proves her own password, and a second `user`
/// would have made the trusting server open victim's session. Refused before any proof.
#[test]
fn a_second_user_after_a_proved_one_is_refused_in_scram_mode() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: Vec::new(),
        hba: vec!["hostssl all all 127.0.0.1/32 trust".into()],
    });
    pg.admin("create role victim login superuser");
    let verifier = pg.admin("select rolpassword from pg_authid where rolname = 'alice'");
    let userlist = pki.dir.path().join("userlist.txt");
    std::fs::write(&userlist, format!("\"alice\" \"{verifier}\"\n")).unwrap();
    std::fs::set_permissions(&userlist, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = ProxyConfig::new(&pki, pg.port)
        .set("auth.mode", "\"scram\"")
        .set("auth.userlist", &common::proxy::toml_path(&userlist));
    let proxy = Proxy::start(&config);
    let proxied: SocketAddr = ([127, 0, 0, 1], proxy.port()).into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let packet = startup(
        0,
        &[
            ("user", "alice"),
            ("database", "postgres"),
            ("user", "victim"),
        ],
    );
    let through = rt.block_on(report(proxied, &pki.proxy_ca_path, &packet, REPORT_SQL));
    let Report::Refused { code, message } = through else {
        panic!("not refused: {through:?}")
    };
    assert_eq!(code, "08P01");
    assert!(
        message.contains("\"user\" appears more than once"),
        "{message}"
    );
    proxy.wait_log(&[
        "session refused",
        "\"user\" appears more than once",
        "sqlstate=\"08P01\"",
    ]);
}
