//! A raw SCRAM client that records what the proxy sends, byte for byte, up to its answer to
//! a proof (always a wrong one): for comparing the answers users get whom the proxy cannot
//! check with a wrong password's.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proxy::TestPki;
use super::raw;

/// The client nonce every attempt sends.
pub const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";

/// What the proxy sent to one attempt.
#[derive(Debug)]
pub struct Transcript {
    /// The whole AuthenticationSASL message.
    pub offer: Vec<u8>,
    /// The whole answer to the client-first-message (server-first, or an error).
    pub first_answer: Vec<u8>,
    /// The answer to the proof: its tag and body (no length), the user name replaced by
    /// `USER`.
    pub last: Vec<u8>,
    /// Anything after it, until the proxy closed the connection.
    pub after: Vec<u8>,
    /// From the client-first-message sent to its answer received.
    pub latency: Duration,
}

/// A server-first-message's parts.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFirst {
    /// The server's part of the nonce.
    pub server_nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

impl Transcript {
    /// The server-first-message, parsed (panics if the answer was not one).
    pub fn server_first(&self) -> ServerFirst {
        let m = &self.first_answer;
        assert_eq!(m[0], b'R', "not an Authentication message: {m:?}");
        assert_eq!(&m[5..9], &11i32.to_be_bytes(), "not SASLContinue");
        let text = std::str::from_utf8(&m[9..]).unwrap();
        let mut parts = text.split(',');
        let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
        let salt = parts.next().unwrap().strip_prefix("s=").unwrap();
        let iterations = parts.next().unwrap().strip_prefix("i=").unwrap();
        assert_eq!(parts.next(), None, "{text}");
        ServerFirst {
            server_nonce: nonce.strip_prefix(CLIENT_NONCE).unwrap().to_owned(),
            salt: B64.decode(salt).unwrap(),
            iterations: iterations.parse().unwrap(),
        }
    }
}

/// Logs in as `user` with SCRAM-SHA-256 and a proof that matches nothing.
pub async fn attempt(addr: std::net::SocketAddr, pki: &TestPki, user: &str) -> Transcript {
    let mut tls = raw::tls_via_ssl_request(addr, pki).await;
    tls.write_all(&raw::startup(&[("user", user), ("database", "postgres")]))
        .await
        .unwrap();
    let offer = read_message(&mut tls).await;
    let first = format!("n,,n=,r={CLIENT_NONCE}");
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first.as_bytes());
    let sent = Instant::now();
    tls.write_all(&message(b'p', &body)).await.unwrap();
    let first_answer = read_message(&mut tls).await;
    let latency = sent.elapsed();
    if first_answer[0] != b'R' {
        // Refused before the proof (what must not happen for the users compared).
        let after = raw::read_to_close(&mut tls).await;
        return Transcript {
            offer,
            last: first_answer.clone(),
            first_answer,
            after,
            latency,
        };
    }
    let nonce = std::str::from_utf8(&first_answer[9..])
        .ok()
        .and_then(|t| t.split(',').next())
        .and_then(|r| r.strip_prefix("r="))
        .unwrap_or_default()
        .to_owned();
    let fin = format!("c=biws,r={nonce},p={}", B64.encode([0u8; 32]));
    tls.write_all(&message(b'p', fin.as_bytes())).await.unwrap();
    let last = read_message(&mut tls).await;
    let quoted = format!("\"{user}\"");
    let mut named = vec![last[0]];
    named.extend_from_slice(
        String::from_utf8_lossy(&last[5..])
            .replace(&quoted, "\"USER\"")
            .as_bytes(),
    );
    let after = raw::read_to_close(&mut tls).await;
    Transcript {
        offer,
        first_answer,
        last: named,
        after,
        latency,
    }
}

/// A protocol message: `tag`, its length, `body`.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// One whole protocol message, tag and length included.
pub async fn read_message<S: AsyncReadExt + Unpin>(s: &mut S) -> Vec<u8> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut m = head.to_vec();
    m.resize(len + 1, 0);
    s.read_exact(&mut m[5..]).await.unwrap();
    m
}
