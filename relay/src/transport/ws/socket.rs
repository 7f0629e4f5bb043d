//! An upgraded WebSocket connection: reads client frames through a
//! [`Decoder`] and writes shared, pre-built frames with vectored writes. It
//! copies no bytes into a write buffer (frames wait as shared `Bytes`), and
//! its read buffer lives on the stack of each poll, so an idle socket holds
//! only the decoder's leftovers.
//!
//! Writes are staged and progress in the same poll as reads
//! ([`Socket::poll_next`]): a session keeps reading, and its timers keep running,
//! while a client is slow to take its bytes.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{Decoder, FrameError, Incoming};
use super::handshake::Upgraded;
use crate::transport::{WriteProgress, poll_write_all, write_all_vectored};

/// Bytes read from the socket per poll (on the stack, not kept).
const READ_CHUNK: usize = 4096;

/// A WebSocket server connection.
pub struct Socket {
    io: Upgraded,
    decoder: Decoder,
    /// Frames staged for writing, and how far they went out (empty, with no
    /// allocation, while nothing waits).
    outbox: Vec<Bytes>,
    progress: WriteProgress,
}

/// What happened on the socket.
pub enum SocketIo {
    /// A message from the client (or why its frames broke the protocol).
    Message(Result<Incoming, FrameError>),
    /// The client closed the connection, or it broke.
    Closed,
    /// Every staged frame is out.
    Flushed,
    /// A staged write failed: the client went away, or took no bytes for
    /// the write timeout (`TimedOut`).
    WriteFailed(io::Error),
}

impl Socket {
    /// Wraps an upgraded connection whose messages may be at most
    /// `max_message` bytes. `preamble` (the `101` head of a handshake answered
    /// on the socket) is staged first, so it goes out with the first frames.
    pub fn new(io: Upgraded, max_message: usize, preamble: Option<Bytes>) -> Socket {
        Socket {
            io,
            decoder: Decoder::new(max_message),
            outbox: preamble.into_iter().collect(),
            progress: WriteProgress::default(),
        }
    }

    /// Queues frames to go out after those already staged; [`Socket::poll_next`]
    /// writes them.
    pub fn stage(&mut self, frames: Vec<Bytes>) {
        if self.outbox.is_empty() {
            self.outbox = frames;
        } else {
            self.outbox.extend(frames);
        }
    }

    /// True while staged frames wait to go out.
    pub fn is_writing(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Writes staged frames as the socket takes them and reads the client,
    /// whichever comes first; what was written or read is kept. Polled by
    /// the session loop by hand, so an idle session's task holds no future
    /// for it.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<SocketIo> {
        let Socket {
            io,
            decoder,
            outbox,
            progress,
        } = self;
        if !outbox.is_empty() {
            match poll_write_all(&mut *io, cx, outbox, progress) {
                Poll::Ready(Ok(())) => {
                    // Freed, not kept: an idle socket holds no outbox.
                    *outbox = Vec::new();
                    *progress = WriteProgress::default();
                    return Poll::Ready(SocketIo::Flushed);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(SocketIo::WriteFailed(e)),
                Poll::Pending => {}
            }
        }
        loop {
            match decoder.next() {
                Ok(Some(message)) => return Poll::Ready(SocketIo::Message(Ok(message))),
                Err(e) => return Poll::Ready(SocketIo::Message(Err(e))),
                Ok(None) => {}
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(SocketIo::Closed),
                Ok(()) => decoder.feed(buf.filled()),
                Err(_) => return Poll::Ready(SocketIo::Closed),
            }
        }
    }

    /// Drops what is staged (a client that takes nothing).
    pub fn discard_staged(&mut self) {
        self.outbox = Vec::new();
        self.progress = WriteProgress::default();
    }

    /// Writes whatever is staged, then `frames` (at the end of a session),
    /// in as few `writev` calls as the socket allows.
    pub async fn flush_then_send(&mut self, frames: &[Bytes]) -> io::Result<()> {
        self.outbox.extend_from_slice(frames);
        let Socket {
            io,
            outbox,
            progress,
            ..
        } = self;
        poll_fn(|cx| poll_write_all(&mut *io, cx, outbox, progress)).await?;
        self.outbox = Vec::new();
        self.progress = WriteProgress::default();
        Ok(())
    }

    /// Writes whole frames, in order, with as few `writev` calls as the socket allows.
    pub async fn send(&mut self, frames: &[Bytes]) -> io::Result<()> {
        write_all_vectored(&mut self.io, frames).await
    }

    /// Shuts the write side down (after a close frame).
    pub async fn shutdown(&mut self) {
        let _ = poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
    }
}
