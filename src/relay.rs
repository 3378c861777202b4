//! The relay after authentication: bytes both ways until either side ends.
//!
//! One task polls both directions (no locks, no split of the TLS streams). The session ends
//! as soon as one side does: when the server ends it, everything it sent (its final
//! ErrorResponse included) is written to the client before the client's connection is
//! closed; when the client ends it, the upstream connection is closed at once. Leaving one
//! leg open is what makes drivers hang in close().

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// One TLS record's worth of plaintext: a read fills at most one record, a write makes one.
const BUFFER_SIZE: usize = 16 * 1024;
/// After the server ends a session, how long to read (and drop) what the client still sends,
/// so closing does not reset the connection before the client has read the final message.
const LINGER: Duration = Duration::from_secs(1);
/// The most bytes dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;

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

/// Which end of a direction failed.
enum PipeError {
    Read(io::Error),
    Write(io::Error),
}

/// One direction: a buffer, how much of it is still to be written, and whether the reader
/// has ended.
struct Pipe {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    need_flush: bool,
    total: u64,
}

impl Pipe {
    /// A pipe whose first bytes to write are `pending` (read during the startup phase).
    fn new(pending: Vec<u8>) -> Self {
        let mut buf = pending;
        let cap = buf.len();
        buf.resize(cap.max(BUFFER_SIZE), 0);
        Self {
            buf: buf.into_boxed_slice(),
            pos: 0,
            cap,
            eof: false,
            need_flush: false,
            total: 0,
        }
    }

    /// Copies until the reader ends (then flushes and shuts the writer down) or an error.
    fn poll_copy<R, W>(
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
            if self.pos == self.cap && !self.eof {
                self.pos = 0;
                self.cap = 0;
                let mut read_buf = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            self.cap = n;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(PipeError::Read(e))),
                    Poll::Pending => {
                        // Nothing more to read for now: push out what was written.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(PipeError::Write)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.cap])
                )
                .map_err(PipeError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(PipeError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.eof {
                ready!(writer.as_mut().poll_shutdown(cx)).map_err(PipeError::Write)?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Relays until one side ends. `client_pending` and `upstream_pending` are bytes each side
/// sent that were read during the startup phase and are still to be delivered.
pub async fn relay<C, U>(
    client: &mut C,
    upstream: &mut U,
    client_pending: Vec<u8>,
    upstream_pending: Vec<u8>,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Pipe::new(client_pending);
    let mut down = Pipe::new(upstream_pending);
    let ended = poll_fn(|cx| {
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
        Poll::Pending
    })
    .await;
    if matches!(ended, Ended::ByServer) {
        linger(client).await;
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
        let mut sink = [0u8; 1024];
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

    #[tokio::test]
    async fn server_end_delivers_everything_then_closes_the_client() {
        let (mut client_side, mut client_peer) = duplex(64);
        let (mut upstream_side, mut upstream_peer) = duplex(64);
        let task = tokio::spawn(async move {
            relay(
                &mut client_side,
                &mut upstream_side,
                b"early".to_vec(),
                b"hello ".to_vec(),
            )
            .await
        });
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
        let (mut client_side, mut client_peer) = duplex(64);
        let (mut upstream_side, mut upstream_peer) = duplex(64);
        let task = tokio::spawn(async move {
            relay(&mut client_side, &mut upstream_side, Vec::new(), Vec::new()).await
        });
        client_peer.write_all(b"X\0\0\0\x04").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"X\0\0\0\x04");
        let outcome = task.await.unwrap();
        assert!(matches!(outcome.ended, Ended::ByClient));
    }
}
