//! A TLS upstream that behaves badly on purpose: it answers SSLRequest, completes the
//! handshake with the given certificate chain and reads the StartupMessage; then it hangs up
//! without a word, or answers with AuthenticationOk, BackendKeyData and ReadyForQuery and
//! either never reads again (a server that has stopped reading) or resets the connection (a
//! server that vanished). Only for cases a real PostgreSQL cannot be made to play.

use std::pin::Pin;

use openssl::ssl::{SslAcceptor, SslMethod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::pki::Issued;

/// AuthenticationOk, BackendKeyData (pid 1, key 2), ReadyForQuery (idle).
const SESSION_START: &[u8] = b"R\0\0\0\x08\0\0\0\0K\0\0\0\x0c\0\0\0\x01\0\0\0\x02Z\0\0\0\x05I";

/// What the upstream does once the session has started.
#[derive(Clone, Copy)]
pub enum Then {
    /// Closes the connection instead of answering the StartupMessage.
    HangUp,
    /// Holds the connection open, unread, until the runtime ends.
    StopReading,
    /// Resets the connection (SO_LINGER 0) after 300 ms.
    Reset,
}

/// A fake server's side of a connection's start: SSLRequest answered 'S', the TLS
/// handshake, and the StartupMessage read (and ignored).
pub async fn accept_session(
    mut tcp: tokio::net::TcpStream,
    acceptor: &SslAcceptor,
) -> Option<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let mut request = [0u8; 8];
    tcp.read_exact(&mut request).await.ok()?;
    tcp.write_all(b"S").await.ok()?;
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).ok()?;
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).ok()?;
    Pin::new(&mut tls).accept().await.ok()?;
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).await.ok()?;
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).clamp(8, 10_000) - 4];
    tls.read_exact(&mut startup).await.ok()?;
    Some(tls)
}

/// Starts the upstream on 127.0.0.1 in the current runtime; returns its port.
pub async fn start(identity: &Issued, then: Then) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&identity.cert).unwrap();
    for extra in &identity.chain {
        b.add_extra_chain_cert(extra.clone()).unwrap();
    }
    b.set_private_key(&identity.key).unwrap();
    let acceptor = b.build();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let session = async move {
                let mut tls = accept_session(tcp, &acceptor).await?;
                if !matches!(then, Then::HangUp) {
                    tls.write_all(SESSION_START).await.ok()?;
                }
                Some(tls)
            };
            match (session.await, then) {
                (Some(tls), Then::HangUp) => drop(tls),
                (Some(tls), Then::StopReading) => held.push(tls),
                (Some(tls), Then::Reset) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        let _ = socket2::SockRef::from(tls.get_ref())
                            .set_linger(Some(std::time::Duration::ZERO));
                    });
                }
                (None, _) => {}
            }
        }
    });
    port
}
