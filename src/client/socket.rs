//! What the client leg runs over: a TCP connection from the accept loop, or one end of a Unix
//! socket pair in the in-process tests. The session is generic over it, so those tests drive
//! admission, routing and cancels through the same code the daemon runs.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

use crate::prefixed::ReadReady;

/// A connected client socket.
pub(crate) trait ClientIo:
    AsyncRead + AsyncWrite + AsFd + ReadReady + Unpin + Send + 'static
{
    /// Reads into `buf` without consuming, as `recv(MSG_PEEK)`: a PROXY header is told from
    /// a PostgreSQL opening by its first byte, which must stay for whoever reads next.
    fn peek<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl ClientIo for TcpStream {
    fn peek<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        TcpStream::peek(self, buf)
    }
}

impl ClientIo for UnixStream {
    async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.readable().await?;
            let fd = self.as_raw_fd();
            let peeked = self.try_io(Interest::READABLE, || {
                // SAFETY: `fd` is this socket's, open for the borrow; `buf` is valid for
                // `buf.len()` bytes of writes.
                let n =
                    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match peeked {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl ReadReady for UnixStream {
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}
