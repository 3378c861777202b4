//! One direction of the relay: read what is ready, write it on, and keep only what the
//! writer has not taken yet (bounded: a side whose bytes are not taken is not read).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::LegIo;
use crate::protocol::message::MessageTracker;

/// One TLS record's worth of plaintext: a write makes at most one record.
const BUFFER_SIZE: usize = 16 * 1024;

/// How a relayed read ended, when everything read was written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The buffer filled (or the reader ended): read again.
    More,
    /// The reader had no more bytes and is registered to be woken for the next.
    Dry,
}

/// Which end of a direction failed.
pub(super) enum PipeError {
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
pub(super) struct Pipe {
    /// Read but not yet written. Empty, without an allocation, except under back-pressure
    /// (and for the bytes read during the startup phase).
    pub(super) stash: Vec<u8>,
    /// How much of `stash` is written.
    pub(super) pos: usize,
    pub(super) eof: bool,
    pub(super) need_flush: bool,
    pub(super) total: u64,
    /// Bytes were read since the relay last looked (it gives the legs' buffers back once
    /// neither direction has moved for a while).
    pub(super) active: bool,
    /// Message boundaries of what was written, for the direction toward the client.
    pub(super) tracker: Option<MessageTracker>,
}

impl Pipe {
    /// A pipe whose first bytes to write are `pending` (read during the startup phase).
    pub(super) fn new(pending: Vec<u8>) -> Self {
        Self {
            stash: pending,
            pos: 0,
            eof: false,
            need_flush: false,
            total: 0,
            // The relay's start counts: buffers the handshake and the login left behind go
            // back once the session is quiet, even if it never reads again.
            active: true,
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
    pub(super) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + LegIo + Unpin + ?Sized,
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
            // Dry: the reader found nothing more and has registered for the next bytes, so
            // reading again before that wake-up would only go through OpenSSL to learn the
            // same (two SSL_read calls per message relayed instead of three).
            let dry = match step {
                Poll::Ready(Ok(Read::Dry)) => true,
                Poll::Ready(Ok(Read::More)) => false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => true,
            };
            if dry {
                if self.stash.is_empty() {
                    // Idle: give the stash back and push out what was written.
                    self.stash = Vec::new();
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx)).map_err(PipeError::Write)?;
                        self.need_flush = false;
                    }
                }
                return Poll::Pending;
            }
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
    ) -> Poll<Result<Read, PipeError>>
    where
        R: AsyncRead + LegIo + Unpin + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let mut filled = 0;
        let mut read = Read::More;
        while filled < scratch.len() {
            if !reader.as_mut().get_mut().poll_may_read(cx) {
                if filled == 0 {
                    return Poll::Pending;
                }
                read = Read::Dry;
                break;
            }
            let mut read_buf = ReadBuf::new(&mut scratch[filled..]);
            match reader.as_mut().poll_read(cx, &mut read_buf) {
                Poll::Ready(Ok(())) if read_buf.filled().is_empty() => {
                    self.eof = true;
                    break;
                }
                Poll::Ready(Ok(())) => {
                    filled += read_buf.filled().len();
                    self.active = true;
                }
                // Deliver what came before the error; the next read reports it.
                Poll::Ready(Err(_)) if filled > 0 => break,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(PipeError::Read(e))),
                Poll::Pending if filled > 0 => {
                    read = Read::Dry;
                    break;
                }
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
        Poll::Ready(Ok(read))
    }

    /// Copies only until the writer's side is at a message boundary, then flushes.
    pub(super) fn poll_to_boundary<R, W>(
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
