//! What the fleet tests share: connections from chosen loopback sources, raw sessions that
//! keep their BackendKeyData (the key a client of a `[cluster]` replica is given), raw
//! cancels over TLS with or without a client certificate, tokio-postgres sessions from a
//! chosen source and the refusals they get, and the admin endpoint's metrics.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::{Ssl, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_openssl::SslStream;
use tokio_postgres::tls::MakeTlsConnect;

use super::clients::rust_tls;
use super::pki::Issued;
use super::postgres::ALICE_PASSWORD;
use super::proxy::{Proxy, TestPki};
use super::raw;

/// The server name replicas send each other when forwarding a cancel (src/cancel/proof.rs).
pub const PEER_SNI: &str = "pgt-proxy-peer.invalid";
/// The bit of a cancel key's pid that a forwarding replica sets (src/cancel/key.rs).
pub const HOP: i32 = 1 << 30;

/// A TCP connection to 127.0.0.1:`port` from `source`, with `preface` written first.
pub async fn tcp_from(source: Ipv4Addr, port: u16, preface: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    tcp.write_all(preface).await.unwrap();
    tcp
}

/// alice's tokio-postgres configuration, without channel binding (the passthrough mode).
pub fn client_config() -> tokio_postgres::Config {
    format!(
        "host=localhost user=alice password={ALICE_PASSWORD} dbname=postgres sslmode=require channel_binding=disable"
    )
    .parse()
    .unwrap()
}

/// A tokio-postgres session from `source` to 127.0.0.1:`port` (after `preface`).
pub async fn session_from(
    pki: &TestPki,
    source: Ipv4Addr,
    port: u16,
    preface: &[u8],
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tcp = tcp_from(source, port, preface).await;
    let tls =
        MakeTlsConnect::<TcpStream>::make_tls_connect(&mut rust_tls(pki), "localhost").unwrap();
    let (client, connection) = client_config().connect_raw(tcp, tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A refused session's `(SQLSTATE, message)`; panics if `e` is not an ErrorResponse.
pub fn refusal(e: tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not an ErrorResponse: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// A raw session as the `trusted` role with the cancel key its proxy gave it.
pub struct KeyedSession {
    pub tls: SslStream<TcpStream>,
    pub pid: i32,
    pub key: Vec<u8>,
}

impl KeyedSession {
    /// Logs in to the proxy at `addr` up to ReadyForQuery.
    pub async fn open(addr: SocketAddr, pki: &TestPki) -> KeyedSession {
        let mut tls = raw::tls_via_ssl_request(addr, pki).await;
        tls.write_all(&raw::startup(&[
            ("user", "trusted"),
            ("database", "postgres"),
        ]))
        .await
        .unwrap();
        let messages = raw::read_until_ready(&mut tls).await;
        assert_eq!(messages.last().map(|m| m.0), Some(b'Z'), "{messages:?}");
        let body = messages
            .iter()
            .find(|m| m.0 == b'K')
            .map(|m| m.1.clone())
            .expect("BackendKeyData");
        let pid = i32::from_be_bytes(body[..4].try_into().unwrap());
        KeyedSession {
            tls,
            pid,
            key: body[4..].to_vec(),
        }
    }

    /// Starts `select pg_sleep(seconds)` without waiting for it.
    pub async fn start_sleep(&mut self, seconds: u32) {
        let sql = format!("select pg_sleep({seconds})\0");
        let mut query = vec![b'Q'];
        query.extend_from_slice(&((sql.len() + 4) as i32).to_be_bytes());
        query.extend_from_slice(sql.as_bytes());
        self.tls.write_all(&query).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// The SQLSTATE the running query ended with, or `None` while it still runs after
    /// `wait`.
    pub async fn ended_within(&mut self, wait: Duration) -> Option<String> {
        let read = tokio::time::timeout(wait, raw::read_until_ready(&mut self.tls)).await;
        let messages = read.ok()?;
        let error = messages.iter().find(|m| m.0 == b'E');
        Some(error.map_or_else(|| "00000".into(), |e| raw::error_fields(&e.1).0))
    }
}

/// A TLS client trusting the proxy CA (verifying "localhost"), sending `sni`, presenting
/// `identity` if given.
pub fn tls_client(pki: &TestPki, sni: &str, identity: Option<&Issued>) -> Ssl {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(&pki.proxy_ca_path).unwrap();
    if let Some(identity) = identity {
        b.set_certificate(&identity.cert).unwrap();
        b.set_private_key(&identity.key).unwrap();
    }
    b.set_verify(SslVerifyMode::PEER);
    let mut ssl = Ssl::new(&b.build().into_context()).unwrap();
    ssl.param_mut().set_host("localhost").unwrap();
    ssl.set_hostname(sni).unwrap();
    ssl
}

/// Sends a CancelRequest over TLS made with `ssl` (after SSLRequest) and waits for the
/// proxy to close; `Err` when the handshake or the exchange failed (the proxy refused).
pub async fn cancel_over_tls(port: u16, ssl: Ssl, pid: i32, key: &[u8]) -> Result<(), String> {
    let mut tcp = tcp_from(Ipv4Addr::LOCALHOST, port, &raw::SSL_REQUEST).await;
    assert_eq!(raw::read_byte(&mut tcp).await, Some(b'S'));
    let mut tls = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut tls)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(&raw::cancel_request(pid, key))
        .await
        .map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .await
        .map_err(|e| e.to_string())?;
    assert!(rest.is_empty(), "a cancel is answered with the close only");
    Ok(())
}

/// Sends a plaintext CancelRequest from `source` and waits for the close.
pub async fn plaintext_cancel(source: Ipv4Addr, port: u16, pid: i32, key: &[u8]) {
    let mut tcp = tcp_from(source, port, &raw::cancel_request(pid, key)).await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{answer:?}");
}

/// The admin endpoint's address, from the proxy's log (with `admin.listen` set).
pub fn admin_addr(proxy: &Proxy) -> SocketAddr {
    let line = proxy.wait_log(&["admin endpoint listening"]);
    line.split("admin=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line}"))
}

/// One sample of `/metrics` (0 when absent), e.g.
/// `pgt_proxy_cancel_requests_total{result="rate_limited"}`.
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
