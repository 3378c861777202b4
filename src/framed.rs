//! Reading whole protocol items from an async stream during the startup phase.
//!
//! A [`FrameReader`] owns the bytes read so far and hands out one complete item at a time,
//! using a parser from [`crate::protocol`] to find its end. Bytes after the item stay buffered:
//! when the startup phase ends they are passed on to the relay, never dropped.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::ProtocolError;

/// Why an item could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Buffered reader of complete protocol items.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads until `size_of` finds a whole item at the front of the buffer, then returns its
    /// bytes. `size_of` returns `Ok(None)` while it needs more bytes; it must reject lengths
    /// over its limit, which is what bounds this buffer. `Ok(None)` here means the peer closed
    /// the connection cleanly between items.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        size_of: impl Fn(&[u8]) -> Result<Option<usize>, ProtocolError>,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(n) = size_of(&self.buf)? {
                let rest = self.buf.split_off(n);
                return Ok(Some(std::mem::replace(&mut self.buf, rest)));
            }
            let mut chunk = [0u8; 4096];
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a message",
                    )
                    .into())
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The bytes read past the last item.
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}
