//! An upgraded WebSocket connection: reads client frames through a
//! [`Decoder`] and writes shared, pre-built frames with vectored writes. It
//! keeps no write buffer, and its read buffer lives on the stack of each poll,
//! so an idle socket holds only the decoder's leftovers.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{Decoder, FrameError, Incoming};
use super::handshake::Upgraded;
use crate::transport::write_all_vectored;

/// Bytes read from the socket per poll (on the stack, not kept).
const READ_CHUNK: usize = 4096;

/// A WebSocket server connection.
pub struct Socket {
    io: Upgraded,
    decoder: Decoder,
}

impl Socket {
    /// Wraps an upgraded connection whose messages may be at most `max_message` bytes.
    pub fn new(io: Upgraded, max_message: usize) -> Socket {
        Socket {
            io,
            decoder: Decoder::new(max_message),
        }
    }

    /// The next message from the client; `None` once the connection is closed
    /// or broken. Cancel-safe: bytes read are kept by the decoder.
    pub async fn recv(&mut self) -> Option<Result<Incoming, FrameError>> {
        let Socket { io, decoder } = self;
        poll_fn(|cx| {
            loop {
                match decoder.next() {
                    Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(None) => {}
                }
                let mut chunk = [0u8; READ_CHUNK];
                let mut buf = ReadBuf::new(&mut chunk);
                match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
                    Ok(()) if buf.filled().is_empty() => return Poll::Ready(None),
                    Ok(()) => decoder.feed(buf.filled()),
                    Err(_) => return Poll::Ready(None),
                }
            }
        })
        .await
    }

    /// Writes whole frames, in order, with as few `writev` calls as the socket allows.
    pub async fn send(&mut self, frames: &[Bytes]) -> io::Result<()> {
        write_all_vectored(&mut self.io, frames).await
    }

    /// Writes one frame.
    pub async fn send_one(&mut self, frame: Bytes) -> io::Result<()> {
        self.send(std::slice::from_ref(&frame)).await
    }

    /// Shuts the write side down (after a close frame).
    pub async fn shutdown(&mut self) {
        let _ = poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
    }
}
