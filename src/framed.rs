//! Reading whole, typed protocol items from an async stream during the startup phase.
//!
//! A [`FrameReader`] owns the bytes read so far and hands out one complete item at a time,
//! using a parser from [`crate::protocol`] to find its end and to type it, so each item is
//! parsed exactly once. Bytes after the item stay buffered: when the startup phase ends they
//! are passed on to the relay, never dropped.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::ProtocolError;
use crate::protocol::message::parse_frame;

/// Why an item could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One whole tagged message as read: its type and its bytes, header included, so it can
/// be relayed unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The one-byte message type.
    pub tag: u8,
    bytes: Vec<u8>,
}

/// Tag and length.
const HEADER_LEN: usize = 5;

impl Message {
    /// The bytes after the length field.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// The whole message, as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Buffered reader of complete protocol items.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads until `parse` finds a whole item at the front of the buffer, and returns it.
    /// `parse` gets the buffered bytes and returns the item with its size, or `Ok(None)`
    /// while it needs more bytes; it must reject lengths over its limit, which is what
    /// bounds this buffer. `Ok(None)` here means the peer closed the connection cleanly
    /// between items.
    pub async fn next<R, T>(
        &mut self,
        io: &mut R,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>,
    ) -> Result<Option<T>, ReadError>
    where
        R: AsyncRead + Unpin,
    {
        loop {
            if let Some((item, n)) = parse(&self.buf)? {
                self.buf.drain(..n.min(self.buf.len()));
                return Ok(Some(item));
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

    /// Reads one tagged message of at most `max_len` bytes.
    pub async fn message<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        max_len: usize,
    ) -> Result<Option<Message>, ReadError> {
        self.next(io, |buf| {
            Ok(parse_frame(buf, max_len)?.map(|(frame, n)| {
                let message = Message {
                    tag: frame.tag,
                    bytes: buf[..n].to_vec(),
                };
                (message, n)
            }))
        })
        .await
    }

    /// The bytes read past the last item.
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_split_across_reads_and_the_rest_is_kept() {
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [&b"R\0\0"[..], b"\0\x08\0\0", b"\0\0Zextra"] {
                tx.write_all(piece).await.unwrap();
                tx.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut reader = FrameReader::new();
        let m = reader.message(&mut rx, 100).await.unwrap().unwrap();
        assert_eq!((m.tag, m.body()), (b'R', &[0u8, 0, 0, 0][..]));
        assert_eq!(m.as_bytes(), b"R\0\0\0\x08\0\0\0\0");
        writer.await.unwrap();
        // "Zextra" is not a whole message ('Z' with a length of "extr"): it stays buffered.
        assert_eq!(reader.into_rest(), b"Zextra");
    }

    #[tokio::test]
    async fn a_close_mid_message_is_an_error_and_between_messages_is_none() {
        let mut reader = FrameReader::new();
        let mut partial: &[u8] = b"R\0\0";
        assert!(matches!(
            reader.message(&mut partial, 100).await,
            Err(ReadError::Io(_))
        ));
        let mut empty: &[u8] = b"";
        assert!(matches!(
            FrameReader::new().message(&mut empty, 100).await,
            Ok(None)
        ));
    }
}
