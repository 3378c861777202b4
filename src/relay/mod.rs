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

mod pipe;
#[cfg(test)]
mod tests;

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use self::pipe::{Pipe, PipeError};
use crate::prefixed::ReadReady;
use crate::protocol::error_response::{Refusal, encode_fatal};
use crate::protocol::message::MessageTracker;
use crate::protocol::sqlstate::{ADMIN_SHUTDOWN, CONNECTION_FAILURE};

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
/// How long a session keeps its legs' record buffers after its last bytes: a busy session
/// reuses them for every message instead of allocating and freeing four 17 KiB buffers per
/// round trip; one that stays quiet gives them back within twice this.
const IDLE_RELEASE: Duration = Duration::from_millis(500);
/// What a session ended by the proxy's shutdown is told: PostgreSQL's own words for 57P01.
pub(crate) fn admin_shutdown() -> Refusal {
    Refusal::new(
        ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    )
}

/// Which side ended the session.
#[derive(Debug)]
pub(crate) enum Ended {
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
pub(crate) struct RelayOutcome {
    /// How it ended.
    pub(crate) ended: Ended,
    /// Bytes read from the client and written upstream.
    pub(crate) from_client: u64,
    /// Bytes read from upstream and written to the client.
    pub(crate) to_client: u64,
}

/// What the relay needs from a leg beyond reading and writing.
pub(crate) trait LegIo {
    /// Called once the session has been quiet for a while; it may now idle for hours, so
    /// memory held for the traffic can go back.
    fn release_idle(&mut self);
    /// Called when the relay starts: keep the buffers between messages (the relay gives
    /// them back itself, with `release_idle`, once the session goes quiet).
    fn keep_buffers(&mut self) {}
    /// The error the peer has left on the connection (a reset), found without reading.
    fn peer_error(&self) -> Option<io::Error>;
    /// Whether a read may find bytes; when not, the task is registered to be woken when it
    /// may. Lets the relay skip a read that would only go through OpenSSL to learn that
    /// nothing came (the other direction's wake-up, or the read after a short one).
    fn poll_may_read(&mut self, _cx: &mut std::task::Context<'_>) -> bool {
        true
    }
}

impl<S: AsFd + ReadReady> LegIo for tokio_openssl::SslStream<S> {
    fn release_idle(&mut self) {
        crate::tls::records::release_idle_buffers(self.ssl());
    }

    fn keep_buffers(&mut self) {
        crate::tls::records::keep_buffers(self.ssl());
    }

    fn poll_may_read(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        // Records OpenSSL has read ahead are readable whatever the socket says.
        crate::tls::records::has_pending(self.ssl())
            || self.get_ref().poll_read_ready(cx).is_ready()
    }

    fn peer_error(&self) -> Option<io::Error> {
        crate::socket::pending_error(self.get_ref())
    }
}

/// Relays until one side ends or `stop` is cancelled. `client_pending` and
/// `upstream_pending` are bytes each side sent that were read during the startup phase and
/// are still to be delivered; `upstream_pending` starts at a message boundary.
pub(crate) async fn relay<C, U>(
    client: &mut C,
    upstream: &mut U,
    client_pending: Vec<u8>,
    upstream_pending: Vec<u8>,
    stop: &CancellationToken,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + LegIo + Unpin,
    U: AsyncRead + AsyncWrite + LegIo + Unpin,
{
    client.keep_buffers();
    upstream.keep_buffers();
    let mut up = Pipe::new(client_pending);
    let mut down = Pipe::new(upstream_pending);
    down.tracker = Some(MessageTracker::default());
    let stopped = stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    // Polled once, to register the wake-up; after that the token is only looked at (a poll
    // of the registered future takes its waiter list's lock on every wake-up).
    let mut stop_registered = false;
    // Armed when either side reaches end of stream.
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Armed while either direction's writer holds back.
    let mut probe: Option<tokio::time::Interval> = None;
    let mut meter = crate::metrics::Meter::new();
    // Armed while the legs hold buffers that traffic may have left behind.
    let mut quiet: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let ended = poll_fn(|cx| {
        // First, so that data arriving with the signal is not relayed past a boundary.
        if stop_registered {
            if stop.is_cancelled() {
                return Poll::Ready(Ended::Shutdown);
            }
        } else if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Shutdown);
        } else {
            stop_registered = true;
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
        give_back_when_quiet(cx, &mut quiet, &mut up, &mut down, client, upstream);
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
        meter.catch_up(up.total, down.total);
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
            let fatal = encode_fatal(&Refusal::new(
                CONNECTION_FAILURE,
                format!("pgt-proxy: upstream connection lost: {e}"),
            ));
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
                let fatal = encode_fatal(&admin_shutdown());
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
    meter.catch_up(up.total, down.total);
    RelayOutcome {
        ended,
        from_client: up.total,
        to_client: down.total,
    }
}

/// Gives both legs' buffers back once neither direction has read anything for
/// `IDLE_RELEASE`: a timer armed at the first bytes, looked at when it fires, re-armed while
/// bytes keep coming (one timer per `IDLE_RELEASE` at most, however many messages), and
/// dropped with the buffers. The timer is polled only when armed (which registers the
/// wake-up); other wake-ups only read whether it has fired.
fn give_back_when_quiet<C: LegIo, U: LegIo>(
    cx: &mut std::task::Context<'_>,
    quiet: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    up: &mut Pipe,
    down: &mut Pipe,
    client: &mut C,
    upstream: &mut U,
) {
    loop {
        match quiet {
            None if up.active || down.active => {
                up.active = false;
                down.active = false;
                let timer = quiet.insert(Box::pin(tokio::time::sleep(IDLE_RELEASE)));
                if timer.as_mut().poll(cx).is_pending() {
                    return;
                }
            }
            None => return,
            Some(timer) => {
                if !timer.is_elapsed() {
                    return;
                }
                if up.active || down.active {
                    up.active = false;
                    down.active = false;
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_RELEASE);
                    if timer.as_mut().poll(cx).is_pending() {
                        return;
                    }
                } else {
                    client.release_idle();
                    upstream.release_idle();
                    *quiet = None;
                    return;
                }
            }
        }
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
