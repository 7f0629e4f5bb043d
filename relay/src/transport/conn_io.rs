//! The socket under hyper (HTTP, SSE streams, upgraded WebSockets), with two
//! deadlines of its own:
//! - one for the connection's whole request head: the relay first waits for
//!   a new connection's first bytes (to pick the direct SSE path), then hands
//!   it to hyper, whose own head timeout would start afresh there;
//! - one for a stalled write: a write that makes no progress for the write
//!   timeout fails (`TimedOut`), so a client that stops reading is cut
//!   instead of holding its session in a write forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A connection whose reads fail once its head deadline passes before the
/// first request head has been read (signalled through [`HeadRead`]), and
/// whose writes fail after making no progress for the write timeout.
pub struct ConnIo {
    inner: TcpStream,
    /// Dropped once the head is read, so a long-lived connection holds no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// Set by the service once the head is read; dropped with the timer.
    head_read: Option<Arc<AtomicBool>>,
    write_timeout: Duration,
    /// Armed only while a write waits for the socket.
    stalled: Option<Pin<Box<Sleep>>>,
}

/// Set by the service when the first request arrives: its head was read.
#[derive(Clone, Debug, Default)]
pub struct HeadRead(Arc<AtomicBool>);

impl HeadRead {
    /// Marks the head as read; the deadline no longer applies.
    pub fn done(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ConnIo {
    /// Wraps a connection whose request head was already read (a WebSocket
    /// handshake answered on the socket): only the write deadline applies.
    pub fn established(inner: TcpStream, write_timeout: Duration) -> ConnIo {
        ConnIo {
            inner,
            timer: None,
            head_read: None,
            write_timeout,
            stalled: None,
        }
    }

    /// Wraps `inner` with the head's `deadline` (the returned [`HeadRead`]
    /// ends it) and the `write_timeout` for writes that make no progress.
    pub fn new(inner: TcpStream, deadline: Instant, write_timeout: Duration) -> (ConnIo, HeadRead) {
        let flag = HeadRead::default();
        (
            ConnIo {
                inner,
                timer: Some(Box::pin(tokio::time::sleep_until(deadline))),
                head_read: Some(flag.0.clone()),
                write_timeout,
                stalled: None,
            },
            flag,
        )
    }

    /// Passes a write's poll through, failing it once the socket has taken
    /// nothing for the write timeout.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    return Poll::Ready(Err(stalled_write()));
                }
                Poll::Pending
            }
        }
    }
}

/// The error of a write that made no progress for the write timeout.
pub fn stalled_write() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client took no bytes for the write timeout",
    )
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this
            .head_read
            .as_ref()
            .is_some_and(|read| read.load(Ordering::Relaxed))
        {
            this.timer = None;
            this.head_read = None;
        }
        if let Some(timer) = this.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete within the handshake timeout",
            )));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
