//! A raw protocol client for the cases real drivers cannot produce: exact bytes before TLS,
//! TLS without ALPN, pipelined data, truncated packets, resets.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::{Ssl, SslConnector, SslMethod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::proxy::TestPki;

/// SSLRequest bytes.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// GSSENCRequest bytes.
pub const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// A StartupMessage (protocol 3.0) with the given parameters.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let params: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    pgt_proxy::protocol::parameters::encode_packet(0x0003_0000, &params)
}

/// A CancelRequest.
pub fn cancel_request(pid: i32, key: &[u8]) -> Vec<u8> {
    let mut out = ((12 + key.len()) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&80_877_102i32.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// A TLS client trusting the proxy CA, verifying "localhost", with the given ALPN list
/// (wire format) or none.
pub fn tls_client(pki: &TestPki, alpn: Option<&[u8]>) -> Ssl {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(&pki.proxy_ca_path).unwrap();
    if let Some(alpn) = alpn {
        b.set_alpn_protos(alpn).unwrap();
    }
    b.build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap()
}

/// TLS handshake over `tcp`.
pub async fn handshake(
    tcp: TcpStream,
    ssl: Ssl,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let mut s = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await?;
    Ok(s)
}

/// Connects, sends SSLRequest, expects 'S', handshakes.
pub async fn tls_via_ssl_request(addr: SocketAddr, pki: &TestPki) -> SslStream<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(read_byte(&mut tcp).await, Some(b'S'));
    handshake(tcp, tls_client(pki, None)).await.unwrap()
}

/// One byte, or None at EOF.
pub async fn read_byte<R: AsyncReadExt + Unpin>(r: &mut R) -> Option<u8> {
    let mut b = [0u8; 1];
    match r.read(&mut b).await {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// Reads backend messages until ReadyForQuery, ErrorResponse or EOF; returns (tag, body).
pub async fn read_until_ready<R: AsyncReadExt + Unpin>(r: &mut R) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if r.read_exact(&mut head).await.is_err() {
            return out;
        }
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        r.read_exact(&mut body).await.unwrap();
        let tag = head[0];
        out.push((tag, body));
        if tag == b'Z' || tag == b'E' {
            return out;
        }
    }
}

/// The SQLSTATE and message of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|&b| b == 0) {
        match field.first() {
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into(),
            Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into(),
            _ => {}
        }
    }
    (code, message)
}

/// Reads everything until EOF (or error) and returns it.
pub async fn read_to_close<R: AsyncReadExt + Unpin>(r: &mut R) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all).await;
    all
}

/// SHA-256 fingerprint of the certificate a TLS server at `addr` presents after SSLRequest.
pub async fn served_fingerprint(addr: SocketAddr, pki: &TestPki) -> Vec<u8> {
    let tls = tls_via_ssl_request(addr, pki).await;
    tls.ssl()
        .peer_certificate()
        .unwrap()
        .digest(openssl::hash::MessageDigest::sha256())
        .unwrap()
        .to_vec()
}

/// A session as the `trusted` role (no password), up to ReadyForQuery.
pub async fn trusted_session(addr: SocketAddr, pki: &TestPki) -> SslStream<TcpStream> {
    let mut tls = tls_via_ssl_request(addr, pki).await;
    tls.write_all(&startup(&[("user", "trusted"), ("database", "postgres")]))
        .await
        .unwrap();
    let messages = read_until_ready(&mut tls).await;
    assert_eq!(messages.last().map(|m| m.0), Some(b'Z'), "{messages:?}");
    tls
}

/// Makes the socket close with a reset (SO_LINGER 0) instead of a FIN when dropped.
pub fn reset_on_drop(tcp: &TcpStream) {
    socket2::SockRef::from(tcp)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// Writes `bytes` inside TLS after SSLRequest and returns (SQLSTATE, message) of the
/// proxy's ErrorResponse.
pub async fn inside_tls(addr: SocketAddr, pki: &TestPki, bytes: &[u8]) -> (String, String) {
    let mut tls = tls_via_ssl_request(addr, pki).await;
    tls.write_all(bytes).await.unwrap();
    let messages = read_until_ready(&mut tls).await;
    let (tag, body) = messages.last().expect("an answer");
    assert_eq!(*tag, b'E', "{messages:?}");
    error_fields(body)
}
