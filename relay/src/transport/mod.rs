//! Transports: thin adapters that move the hub's events onto WebSocket frames,
//! SSE frames or HTTP responses, and client input back to the hub.

pub mod clock;
pub mod conn_io;
pub mod driver;
pub mod http;
pub mod sse;
pub mod sse_direct;
pub mod ws;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// Most buffers handed to one `writev`.
const MAX_SLICES: usize = 64;

/// Writes whole buffers, in order, with as few `writev` calls as the socket
/// allows: shared frames go out without being copied into a write buffer.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    bufs: &[Bytes],
) -> io::Result<()> {
    let mut progress = WriteProgress::default();
    poll_fn(|cx| poll_write_all(&mut *io, cx, bufs, &mut progress)).await
}

/// How far a series of buffers has been written: the buffer, and the bytes
/// of it already out.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteProgress {
    /// 32-bit, as every idle socket holds one: a batch holds fewer frames,
    /// and a frame fewer bytes.
    index: u32,
    offset: u32,
}

/// Polls the writing of `bufs` from `progress` on: ready once all are out
/// and flushed, pending (with `progress` kept) while the socket is full.
pub fn poll_write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut std::task::Context<'_>,
    bufs: &[Bytes],
    progress: &mut WriteProgress,
) -> Poll<io::Result<()>> {
    let mut index = progress.index as usize;
    let mut offset = progress.offset as usize;
    let polled = write_from(io, cx, bufs, &mut index, &mut offset);
    progress.index = u32::try_from(index).unwrap_or(u32::MAX);
    progress.offset = u32::try_from(offset).unwrap_or(u32::MAX);
    polled
}

/// [`poll_write_all`] from frame `index`, `offset` bytes into it.
fn write_from<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut std::task::Context<'_>,
    bufs: &[Bytes],
    index: &mut usize,
    offset: &mut usize,
) -> Poll<io::Result<()>> {
    loop {
        // Empty buffers (and finished ones) are stepped over first.
        while *index < bufs.len() && bufs[*index].len() == *offset {
            *index += 1;
            *offset = 0;
        }
        if *index == bufs.len() {
            break;
        }
        // Built per poll, on the stack: nothing is kept between writes.
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (slot, buf) in slices.iter_mut().zip(&bufs[*index..]) {
            let skip = if count == 0 { *offset } else { 0 };
            *slot = IoSlice::new(&buf[skip..]);
            count += 1;
        }
        let mut written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        // Step over what went out: whole buffers, then part of one.
        while written > 0 && *index < bufs.len() {
            let left = bufs[*index].len() - *offset;
            if written >= left {
                written -= left;
                *index += 1;
                *offset = 0;
            } else {
                *offset += written;
                written = 0;
            }
        }
    }
    Pin::new(&mut *io).poll_flush(cx)
}

/// The instant at which a token expiring at `exp` (Unix seconds) stops being
/// accepted, allowing `leeway`. `None` for sessions without a token.
pub fn expiry_deadline(exp: Option<u64>, leeway: Duration) -> Option<Instant> {
    let exp = exp?;
    let now = crate::clock::since_epoch();
    let until = Duration::from_secs(exp)
        .saturating_add(leeway)
        .saturating_sub(now);
    Some(Instant::now() + until)
}

/// When to send the `expiring` warning for a token expiring at `exp`: the
/// smaller of 60 s and half the time left before the deadline; `None` without
/// a token or with under 2 s left.
pub fn warning_deadline(exp: Option<u64>, leeway: Duration) -> Option<Instant> {
    let deadline = expiry_deadline(exp, leeway)?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_secs(2) {
        return None;
    }
    Some(deadline - (left / 2).min(Duration::from_secs(60)))
}

/// The `expiring` event for a token expiring at `exp` (Unix seconds).
pub fn expiring_event(
    exp: Option<u64>,
    leeway: Duration,
) -> Option<std::sync::Arc<crate::protocol::Event>> {
    let at = exp?.saturating_add(leeway.as_secs());
    let now = crate::clock::now_secs();
    Some(crate::protocol::Event::expiring(at, at.saturating_sub(now)))
}
