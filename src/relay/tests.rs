//! The relay over in-memory pipes: close propagation, shutdown at a message boundary, and
//! a peer that never takes the close.

use super::*;
use std::task::Context;

use tokio::io::{AsyncWriteExt, ReadBuf, duplex};

/// Runs the relay between `client` and `upstream` in a task of its own.
fn spawn_relay<C, U>(
    mut client: C,
    mut upstream: U,
    client_pending: Vec<u8>,
    upstream_pending: Vec<u8>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<RelayOutcome>
where
    C: AsyncRead + AsyncWrite + LegIo + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + LegIo + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        relay(
            &mut client,
            &mut upstream,
            client_pending,
            upstream_pending,
            &stop,
        )
        .await
    })
}

#[tokio::test]
async fn server_end_delivers_everything_then_closes_the_client() {
    let (client_side, mut client_peer) = duplex(64);
    let (upstream_side, mut upstream_peer) = duplex(64);
    let task = spawn_relay(
        client_side,
        upstream_side,
        b"early".to_vec(),
        b"hello ".to_vec(),
        CancellationToken::new(),
    );
    let mut got = Vec::new();
    let write = async {
        upstream_peer.write_all(&[7u8; 100_000]).await.unwrap();
        upstream_peer.shutdown().await.unwrap();
    };
    let (_, read) = tokio::join!(write, client_peer.read_to_end(&mut got));
    read.unwrap();
    assert_eq!(got.len(), 6 + 100_000);
    assert!(got.starts_with(b"hello "));
    drop(client_peer);
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.ended, Ended::ByServer));
    assert_eq!(outcome.to_client, 100_006);
    let mut early = Vec::new();
    upstream_peer.read_to_end(&mut early).await.unwrap();
    assert_eq!(early, b"early");
}

#[tokio::test]
async fn client_end_closes_upstream() {
    let (client_side, mut client_peer) = duplex(64);
    let (upstream_side, mut upstream_peer) = duplex(64);
    let task = spawn_relay(
        client_side,
        upstream_side,
        Vec::new(),
        Vec::new(),
        CancellationToken::new(),
    );
    client_peer.write_all(b"X\0\0\0\x04").await.unwrap();
    client_peer.shutdown().await.unwrap();
    let mut got = Vec::new();
    upstream_peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"X\0\0\0\x04");
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.ended, Ended::ByClient));
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_flight_then_sends_57p01() {
    let (client_side, mut client_peer) = duplex(1024);
    let (upstream_side, mut upstream_peer) = duplex(1024);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = spawn_relay(client_side, upstream_side, Vec::new(), Vec::new(), token);
    // A DataRow of 10 body bytes, of which the server has sent only 7 so far.
    let row = [b"D\0\0\0\x0e".as_slice(), b"0123456789"].concat();
    upstream_peer.write_all(&row[..12]).await.unwrap();
    let mut first = [0u8; 12];
    client_peer.read_exact(&mut first).await.unwrap();
    stop.cancel();
    // The rest of the row, and more that must not reach the client.
    upstream_peer.write_all(&row[12..]).await.unwrap();
    upstream_peer
        .write_all(b"C\0\0\0\x0dSELECT 1\0")
        .await
        .unwrap();
    let mut rest = Vec::new();
    client_peer.read_to_end(&mut rest).await.unwrap();
    assert_eq!(&rest[..3], &row[12..]);
    let (frame, used) = crate::protocol::message::parse_frame(&rest[3..], 1000)
        .unwrap()
        .unwrap();
    assert_eq!(frame.tag, b'E');
    assert_eq!(used, rest.len() - 3, "nothing after the ErrorResponse");
    assert_eq!(
        crate::protocol::error_response::sqlstate_of(frame.body).as_deref(),
        Some("57P01")
    );
    assert!(matches!(task.await.unwrap().ended, Ended::Shutdown));
}

/// A peer that takes writes but never completes a shutdown, and never sends.
struct NeverCloses;

impl LegIo for NeverCloses {
    fn release_idle(&mut self) {}
    fn peer_error(&self) -> Option<io::Error> {
        None
    }
}

impl LegIo for tokio::io::DuplexStream {
    fn release_idle(&mut self) {}
    fn peer_error(&self) -> Option<io::Error> {
        None
    }
}

impl AsyncRead for NeverCloses {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for NeverCloses {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_takes_the_close_cannot_hold_the_session() {
    let (client_side, mut client_peer) = duplex(64);
    let upstream = NeverCloses;
    let task = spawn_relay(
        client_side,
        upstream,
        Vec::new(),
        Vec::new(),
        CancellationToken::new(),
    );
    client_peer.write_all(b"X\0\0\0\x04").await.unwrap();
    client_peer.shutdown().await.unwrap();
    let started = tokio::time::Instant::now();
    let outcome = task.await.unwrap();
    assert!(
        matches!(outcome.ended, Ended::CloseTimedOut),
        "{:?}",
        outcome.ended
    );
    assert_eq!(started.elapsed(), CLOSE_LIMIT);
}

/// An in-memory leg that counts how often the relay gives its buffers back.
struct Counted {
    inner: tokio::io::DuplexStream,
    released: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LegIo for Counted {
    fn release_idle(&mut self) {
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn peer_error(&self) -> Option<io::Error> {
        None
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Buffers go back once a session is quiet, also when it never relays a byte after the
/// login (what the login left behind), and not while messages keep coming.
#[tokio::test(start_paused = true)]
async fn a_quiet_session_gives_its_buffers_back_and_a_busy_one_keeps_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let released = Arc::new(AtomicUsize::new(0));
    let (client_side, mut client_peer) = duplex(1024);
    let (upstream_side, mut upstream_peer) = duplex(1024);
    let leg = |inner| Counted {
        inner,
        released: Arc::clone(&released),
    };
    let task = spawn_relay(
        leg(client_side),
        leg(upstream_side),
        Vec::new(),
        b"Z\0\0\0\x05I".to_vec(),
        CancellationToken::new(),
    );
    let mut ready = [0u8; 6];
    client_peer.read_exact(&mut ready).await.unwrap();
    tokio::time::sleep(IDLE_RELEASE * 2 + Duration::from_millis(10)).await;
    assert_eq!(released.load(Ordering::Relaxed), 2, "both legs, once");
    // Busy: a query every 100 ms for 3 s, and nothing is given back meanwhile.
    let mut query = [0u8; 5];
    for _ in 0..30 {
        client_peer.write_all(b"S\0\0\0\x04").await.unwrap();
        upstream_peer.read_exact(&mut query).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(released.load(Ordering::Relaxed), 2, "released while busy");
    tokio::time::sleep(IDLE_RELEASE * 2 + Duration::from_millis(10)).await;
    assert_eq!(
        released.load(Ordering::Relaxed),
        4,
        "not released once quiet again"
    );
    drop(client_peer);
    assert!(matches!(task.await.unwrap().ended, Ended::ByClient));
}
