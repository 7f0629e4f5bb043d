//! An upgraded WebSocket connection: reads client frames through a
//! [`Decoder`] and writes shared, pre-built frames with vectored writes. It
//! keeps no write buffer, and its read buffer lives on the stack of each poll,
//! so an idle socket holds only the decoder's leftovers.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{Decoder, FrameError, Incoming};
use super::handshake::Upgraded;

/// Bytes read from the socket per poll (on the stack, not kept).
const READ_CHUNK: usize = 4096;
/// Most frames handed to one `writev`.
const MAX_SLICES: usize = 64;

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
        let io = &mut self.io;
        let (mut index, mut offset) = (0, 0);
        poll_fn(|cx| {
            while index < frames.len() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slot, frame) in slices.iter_mut().zip(&frames[index..]) {
                    let skip = if count == 0 { offset } else { 0 };
                    *slot = IoSlice::new(&frame[skip..]);
                    count += 1;
                }
                let mut written =
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                // Step over what went out: whole frames, then part of one.
                while written > 0 {
                    let left = frames[index].len() - offset;
                    if written >= left {
                        written -= left;
                        index += 1;
                        offset = 0;
                    } else {
                        offset += written;
                        written = 0;
                    }
                }
            }
            Pin::new(&mut *io).poll_flush(cx)
        })
        .await
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
