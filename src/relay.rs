//! The relay after authentication: bytes both ways until either side ends.
//!
//! One task polls both directions (no locks, no split of the TLS streams). The session ends
//! as soon as one side does: when the server ends it, everything it sent (its final
//! ErrorResponse included) is written to the client before the client's connection is
//! closed; when the client ends it, the upstream connection is closed at once. Leaving one
//! leg open is what makes drivers hang in close().
//!
//! On a shutdown past `listen.shutdown_timeout`, the relay finishes the server message the
//! client is in the middle of receiving, sends FATAL 57P01 and closes both legs: the
//! ErrorResponse lands between messages, never inside one.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::protocol::error_response::encode_fatal;
use crate::protocol::message::MessageTracker;
use crate::protocol::sqlstate::{ADMIN_SHUTDOWN, CONNECTION_FAILURE};

/// One TLS record's worth of plaintext: a write makes at most one record.
const BUFFER_SIZE: usize = 16 * 1024;
/// After the server ends a session, how long to read (and drop) what the client still sends,
/// so closing does not reset the connection before the client has read the final message.
const LINGER: Duration = Duration::from_secs(1);
/// The most bytes dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;
/// On shutdown, how long the server may take to complete the message in flight.
const FINISH_MESSAGE_LIMIT: Duration = Duration::from_secs(2);
/// Once one side has ended, how long handing its last bytes and the close to the other side
/// may take: a peer that is alive but not reading must not hold the session forever.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// While a writer holds back, how often the side not being read is checked for a reset.
const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// PostgreSQL's own text for 57P01.
pub const ADMIN_SHUTDOWN_MESSAGE: &str = "terminating connection due to administrator command";

/// Which side ended the session.
#[derive(Debug)]
pub enum Ended {
    /// The client closed its side.
    ByClient,
    /// The server closed its side.
    ByServer,
    /// A read or write on the client's connection failed.
    ClientError(io::Error),
    /// A read or write on the upstream connection failed.
    ServerError(io::Error),
    /// The proxy is shutting down; the client was sent FATAL 57P01.
    Shutdown,
    /// One side ended and the other did not take the close within the limit.
    CloseTimedOut,
}

/// What the relay did.
#[derive(Debug)]
pub struct RelayOutcome {
    /// How it ended.
    pub ended: Ended,
    /// Bytes read from the client and written upstream.
    pub from_client: u64,
    /// Bytes read from upstream and written to the client.
    pub to_client: u64,
}

/// What the relay needs from a leg beyond reading and writing.
pub trait Leg {
    /// Called when a read found nothing to do; the session may now idle for hours, so
    /// memory held for the traffic can go back.
    fn release_idle(&mut self);
    /// The error the peer has left on the connection (a reset), found without reading.
    fn peer_error(&self) -> Option<io::Error>;
}

impl<S: AsFd> Leg for tokio_openssl::SslStream<S> {
    fn release_idle(&mut self) {
        crate::tls::release_idle_buffers(self.ssl());
    }

    fn peer_error(&self) -> Option<io::Error> {
        crate::socket::pending_error(self.get_ref())
    }
}

/// Which end of a direction failed.
enum PipeError {
    Read(io::Error),
    Write(io::Error),
}

thread_local! {
    /// Each runtime thread's read buffer. Sessions read into it and write straight out of
    /// it, so an idle session holds no buffer at all, and a busy one only while its writer
    /// pushes back (then the unwritten rest moves to the pipe's own `stash`). It also keeps
    /// the bytes relayed by all sessions of a thread in one cache-warm place.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUFFER_SIZE].into_boxed_slice());
}

/// One direction: the bytes the writer has not taken yet, and whether the reader has ended.
struct Pipe {
    /// Read but not yet written. Empty, without an allocation, except under back-pressure
    /// (and for the bytes read during the startup phase).
    stash: Vec<u8>,
    /// How much of `stash` is written.
    pos: usize,
    eof: bool,
    need_flush: bool,
    total: u64,
    /// Message boundaries of what was written, for the direction toward the client.
    tracker: Option<MessageTracker>,
}

impl Pipe {
    /// A pipe whose first bytes to write are `pending` (read during the startup phase).
    fn new(pending: Vec<u8>) -> Self {
        Self {
            stash: pending,
            pos: 0,
            eof: false,
            need_flush: false,
            total: 0,
            tracker: None,
        }
    }

    /// Accounts for `bytes`, just written.
    fn wrote(tracker: &mut Option<MessageTracker>, total: &mut u64, bytes: &[u8]) {
        if let Some(tracker) = tracker {
            tracker.feed(bytes);
        }
        *total += bytes.len() as u64;
    }

    /// Copies until the reader ends (then flushes and shuts the writer down) or an error.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + Leg + Unpin + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            while self.pos < self.stash.len() {
                ready!(self.poll_write_stash(cx, writer.as_mut(), self.stash.len()))?;
            }
            self.stash.clear();
            self.pos = 0;
            if self.eof {
                ready!(writer.as_mut().poll_shutdown(cx)).map_err(PipeError::Write)?;
                return Poll::Ready(Ok(()));
            }
            let step = SCRATCH.with_borrow_mut(|scratch| {
                self.poll_relay_once(cx, reader.as_mut(), writer.as_mut(), scratch)
            });
            if step.is_pending() {
                if self.stash.is_empty() {
                    // Idle: give the buffers back and push out what was written.
                    self.stash = Vec::new();
                    reader.as_mut().get_mut().release_idle();
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx)).map_err(PipeError::Write)?;
                        self.need_flush = false;
                    }
                }
                return Poll::Pending;
            }
            ready!(step)?;
        }
    }

    /// Reads what is ready (several TLS records when they have arrived together, up to one
    /// buffer) into `scratch` and writes it; what the writer does not take is stashed.
    /// Pending with an empty stash means the reader has nothing.
    fn poll_relay_once<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        scratch: &mut [u8],
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let mut filled = 0;
        while filled < scratch.len() {
            let mut read_buf = ReadBuf::new(&mut scratch[filled..]);
            match reader.as_mut().poll_read(cx, &mut read_buf) {
                Poll::Ready(Ok(())) if read_buf.filled().is_empty() => {
                    self.eof = true;
                    break;
                }
                Poll::Ready(Ok(())) => filled += read_buf.filled().len(),
                // Deliver what came before the error; the next read reports it.
                Poll::Ready(Err(_)) if filled > 0 => break,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(PipeError::Read(e))),
                Poll::Pending if filled > 0 => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut written = 0;
        while written < filled {
            match writer.as_mut().poll_write(cx, &scratch[written..filled]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(PipeError::Write(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => {
                    Self::wrote(
                        &mut self.tracker,
                        &mut self.total,
                        &scratch[written..written + n],
                    );
                    written += n;
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(PipeError::Write(e))),
                Poll::Pending => {
                    // The scratch buffer belongs to the thread: keep the rest ourselves.
                    self.stash.extend_from_slice(&scratch[written..filled]);
                    self.pos = 0;
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Copies only until the writer's side is at a message boundary, then flushes.
    fn poll_to_boundary<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            let (at_boundary, limit) = match &self.tracker {
                Some(t) => (t.at_boundary(), t.until_boundary()),
                None => (true, 0),
            };
            if at_boundary {
                ready!(writer.as_mut().poll_flush(cx)).map_err(PipeError::Write)?;
                return Poll::Ready(Ok(()));
            }
            if self.pos == self.stash.len() {
                // A shutdown path: stash everything read, the write below takes only part.
                let n = ready!(SCRATCH.with_borrow_mut(|scratch| {
                    let mut read_buf = ReadBuf::new(scratch);
                    ready!(reader.as_mut().poll_read(cx, &mut read_buf))?;
                    let n = read_buf.filled().len();
                    self.stash.clear();
                    self.stash.extend_from_slice(read_buf.filled());
                    Poll::Ready(Ok::<_, io::Error>(n))
                }))
                .map_err(PipeError::Read)?;
                self.pos = 0;
                if n == 0 {
                    return Poll::Ready(Err(PipeError::Read(io::ErrorKind::UnexpectedEof.into())));
                }
            }
            let end = self.stash.len().min(self.pos + limit);
            ready!(self.poll_write_stash(cx, writer.as_mut(), end))?;
        }
    }

    /// One write of the stashed bytes from `pos` up to `end`.
    fn poll_write_stash<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: Pin<&mut W>,
        end: usize,
    ) -> Poll<Result<(), PipeError>> {
        let n =
            ready!(writer.poll_write(cx, &self.stash[self.pos..end])).map_err(PipeError::Write)?;
        if n == 0 {
            return Poll::Ready(Err(PipeError::Write(io::ErrorKind::WriteZero.into())));
        }
        Self::wrote(
            &mut self.tracker,
            &mut self.total,
            &self.stash[self.pos..self.pos + n],
        );
        self.pos += n;
        self.need_flush = true;
        Poll::Ready(Ok(()))
    }
}

/// Relays until one side ends or `terminate` is cancelled. `client_pending` and
/// `upstream_pending` are bytes each side sent that were read during the startup phase and
/// are still to be delivered; `upstream_pending` starts at a message boundary.
pub async fn relay<C, U>(
    client: &mut C,
    upstream: &mut U,
    client_pending: Vec<u8>,
    upstream_pending: Vec<u8>,
    terminate: &CancellationToken,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Leg + Unpin,
    U: AsyncRead + AsyncWrite + Leg + Unpin,
{
    let mut up = Pipe::new(client_pending);
    let mut down = Pipe::new(upstream_pending);
    down.tracker = Some(MessageTracker::default());
    let terminated = terminate.cancelled();
    let mut terminated = std::pin::pin!(terminated);
    // Armed when either side reaches end of stream.
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Armed while either direction's writer holds back.
    let mut probe: Option<tokio::time::Interval> = None;
    let ended = poll_fn(|cx| {
        // First, so that data arriving with the signal is not relayed past a boundary.
        if terminated.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Shutdown);
        }
        if let Poll::Ready(r) = down.poll_copy(cx, Pin::new(&mut *upstream), Pin::new(&mut *client))
        {
            return Poll::Ready(match r {
                Ok(()) => Ended::ByServer,
                Err(PipeError::Read(e)) => Ended::ServerError(e),
                Err(PipeError::Write(e)) => Ended::ClientError(e),
            });
        }
        if let Poll::Ready(r) = up.poll_copy(cx, Pin::new(&mut *client), Pin::new(&mut *upstream)) {
            return Poll::Ready(match r {
                Ok(()) => Ended::ByClient,
                Err(PipeError::Read(e)) => Ended::ClientError(e),
                Err(PipeError::Write(e)) => Ended::ServerError(e),
            });
        }
        // After the pipes, so the poll that sees end of stream also registers the timer.
        if closing.is_none() && (up.eof || down.eof) {
            closing = Some(Box::pin(tokio::time::sleep(CLOSE_LIMIT)));
        }
        if let Some(deadline) = closing.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Ended::CloseTimedOut);
        }
        // A side whose bytes the other side does not take is not read meanwhile (that is
        // what bounds the buffering), so its reset would go unseen: look for it now and then.
        if up.stash.is_empty() && down.stash.is_empty() {
            probe = None;
        } else {
            let tick = probe.get_or_insert_with(|| {
                tokio::time::interval_at(tokio::time::Instant::now() + PROBE_PERIOD, PROBE_PERIOD)
            });
            while tick.poll_tick(cx).is_ready() {
                if !up.stash.is_empty()
                    && let Some(e) = client.peer_error()
                {
                    return Poll::Ready(Ended::ClientError(e));
                }
                if !down.stash.is_empty()
                    && let Some(e) = upstream.peer_error()
                {
                    return Poll::Ready(Ended::ServerError(e));
                }
            }
        }
        Poll::Pending
    })
    .await;
    match &ended {
        Ended::ByServer => linger(client).await,
        // The upstream vanished (reset, keepalive or retransmission timeout): tell the client
        // which leg failed, where a message may start, instead of a bare close.
        Ended::ServerError(e)
            if down
                .tracker
                .as_ref()
                .is_some_and(MessageTracker::at_boundary) =>
        {
            let fatal = encode_fatal(
                CONNECTION_FAILURE,
                &format!("pgt-proxy: upstream connection lost: {e}"),
                None,
                None,
            );
            let _ = tokio::time::timeout(FINISH_MESSAGE_LIMIT, async {
                client.write_all(&fatal).await?;
                client.shutdown().await
            })
            .await;
        }
        Ended::Shutdown => {
            let finished = tokio::time::timeout(
                FINISH_MESSAGE_LIMIT,
                poll_fn(|cx| {
                    down.poll_to_boundary(cx, Pin::new(&mut *upstream), Pin::new(&mut *client))
                }),
            )
            .await;
            // Mid-message with no way to finish it: closing is all that is left.
            if let Ok(Ok(())) = finished {
                let fatal = encode_fatal(ADMIN_SHUTDOWN, ADMIN_SHUTDOWN_MESSAGE, None, None);
                let _ = tokio::time::timeout(FINISH_MESSAGE_LIMIT, async {
                    client.write_all(&fatal).await?;
                    client.shutdown().await
                })
                .await;
            }
            let _ = tokio::time::timeout(FINISH_MESSAGE_LIMIT, upstream.shutdown()).await;
        }
        _ => {}
    }
    RelayOutcome {
        ended,
        from_client: up.total,
        to_client: down.total,
    }
}

/// Reads and drops what the client still sends, briefly, so that closing the socket with
/// unread data does not send a reset that could destroy the final message in flight.
async fn linger<C: AsyncRead + Unpin>(client: &mut C) {
    let _ = tokio::time::timeout(LINGER, async {
        // On the heap: an array here would sit in every session's relay future for its
        // whole life.
        let mut sink = vec![0u8; 1024];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, duplex};

    /// Runs the relay between `client` and `upstream` in a task of its own.
    fn spawn_relay<C, U>(
        mut client: C,
        mut upstream: U,
        client_pending: Vec<u8>,
        upstream_pending: Vec<u8>,
        terminate: CancellationToken,
    ) -> tokio::task::JoinHandle<RelayOutcome>
    where
        C: AsyncRead + AsyncWrite + Leg + Unpin + Send + 'static,
        U: AsyncRead + AsyncWrite + Leg + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            relay(
                &mut client,
                &mut upstream,
                client_pending,
                upstream_pending,
                &terminate,
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
        let terminate = CancellationToken::new();
        let token = terminate.clone();
        let task = spawn_relay(client_side, upstream_side, Vec::new(), Vec::new(), token);
        // A DataRow of 10 body bytes, of which the server has sent only 7 so far.
        let row = [b"D\0\0\0\x0e".as_slice(), b"0123456789"].concat();
        upstream_peer.write_all(&row[..12]).await.unwrap();
        let mut first = [0u8; 12];
        client_peer.read_exact(&mut first).await.unwrap();
        terminate.cancel();
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

    impl Leg for NeverCloses {
        fn release_idle(&mut self) {}
        fn peer_error(&self) -> Option<io::Error> {
            None
        }
    }

    impl Leg for tokio::io::DuplexStream {
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
}
