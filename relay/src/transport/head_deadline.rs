//! One deadline for a connection's whole request head: the relay first waits
//! for a new connection's first bytes (to pick the direct SSE path), then
//! hands it to hyper; without this wrapper hyper's own head timeout started
//! afresh at that point, so a client sending its first byte just before the
//! handshake timeout got a second full one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A connection whose reads fail once `deadline` passes before its first
/// request head has been read (signalled through [`HeadRead`]).
pub struct HeadDeadline {
    inner: TcpStream,
    /// Dropped once the head is read, so a long-lived connection holds no timer.
    timer: Option<Pin<Box<Sleep>>>,
    head_read: Arc<AtomicBool>,
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

impl HeadDeadline {
    /// Wraps `inner` with the head's `deadline`; the returned [`HeadRead`] ends it.
    pub fn new(inner: TcpStream, deadline: Instant) -> (HeadDeadline, HeadRead) {
        let flag = HeadRead::default();
        (
            HeadDeadline {
                inner,
                timer: Some(Box::pin(tokio::time::sleep_until(deadline))),
                head_read: flag.0.clone(),
            },
            flag,
        )
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.head_read.load(Ordering::Relaxed) {
            this.timer = None;
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

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
