//! EventSource streams written straight to the socket. hyper keeps a read
//! buffer (8 to 16 KiB) and a header buffer (8 KiB) for a connection's whole
//! life; an SSE connection sends one request and then only receives, so for a
//! stream that stays open for hours those buffers were most of its memory
//! (33 KB per idle stream). A connection whose first bytes are a complete
//! HTTP/1.1 `GET` accepting `text/event-stream` (what EventSource sends) is
//! answered here instead: the request still goes through the same router
//! (auth, CORS, admission, tracing) and a `text/event-stream` answer is
//! written as chunked HTTP/1.1; any other answer is written whole and the
//! connection closed. A WebSocket handshake is answered on the socket as
//! well (`ws::direct`). Other connections go to hyper untouched: their bytes
//! were only peeked.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tower::{Service, ServiceExt};

use super::sse::{DirectStream, SseStream};
use super::{WriteProgress, poll_write_all, write_all_vectored};

/// Most bytes looked at for the first request head; a larger head (long
/// cookies) is served by hyper.
const PEEK_BYTES: usize = 4096;
/// Most headers in a head served here.
const MAX_HEADERS: usize = 48;
/// Largest non-stream answer (an error body) written here.
const MAX_ANSWER: usize = 64 * 1024;

/// A connection's first request, when it is served on the socket (an
/// EventSource request or a WebSocket handshake).
#[derive(Debug)]
pub struct DirectRequest {
    /// The request, with an empty body.
    pub request: Request<Body>,
    /// Length of its head on the wire, to consume before answering.
    pub head_len: usize,
}

/// What a new connection's first bytes are.
#[derive(Debug)]
pub enum Sniffed {
    /// A complete HTTP/1.1 `GET` for an event stream, without a body or an upgrade.
    EventStream(Box<DirectRequest>),
    /// A complete HTTP/1.1 `GET` asking to upgrade to a WebSocket: answered
    /// on the socket too (`ws::direct`), so the `101` goes out with the
    /// session's first events in one write.
    WebSocket(Box<DirectRequest>),
    /// Anything else: hyper's to serve.
    Other,
    /// Nothing arrived within the handshake timeout (or the socket failed):
    /// the connection is dropped, as hyper drops a stalled head.
    Silent,
}

/// Looks at (without consuming) the first bytes of a new connection, waiting
/// at most `wait` for them.
pub async fn sniff(stream: &TcpStream, wait: Duration) -> Sniffed {
    let mut bytes = [0u8; PEEK_BYTES];
    match tokio::time::timeout(wait, stream.peek(&mut bytes)).await {
        Ok(Ok(n)) if n > 0 => match parse(&bytes[..n]) {
            Some((request, true)) => Sniffed::WebSocket(Box::new(request)),
            Some((request, false)) => Sniffed::EventStream(Box::new(request)),
            None => Sniffed::Other,
        },
        _ => Sniffed::Silent,
    }
}

/// Parses a request head that qualifies for this path; true when it asks
/// for a WebSocket upgrade (the handshake's other headers are checked by the
/// route, as on hyper's path).
fn parse(bytes: &[u8]) -> Option<(DirectRequest, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = head.parse(bytes).ok()? else {
        return None;
    };
    if head.method != Some("GET") || head.version != Some(1) {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(head.path?)
        .version(Version::HTTP_11);
    let mut accepts_stream = false;
    let mut websocket = false;
    for h in head.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::UPGRADE {
            // Only a WebSocket upgrade is served here; h2c and the rest are hyper's.
            if websocket || !h.value.eq_ignore_ascii_case(b"websocket") {
                return None;
            }
            websocket = true;
        } else if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return None;
        }
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::ACCEPT
            && value
                .to_str()
                .is_ok_and(|v| v.contains("text/event-stream"))
        {
            accepts_stream = true;
        }
        request = request.header(name, value);
    }
    if !accepts_stream && !websocket {
        return None;
    }
    let request = request.body(Body::empty()).ok()?;
    Some((DirectRequest { request, head_len }, websocket))
}

/// Answers an EventSource request on its own connection with `app`, then
/// closes the connection. A stream answer is written by a task of its own,
/// which holds only the socket, the body and `guard` (the relay's shutdown
/// waits for it): this task, with the request and the router's future, ends
/// as soon as the head is out.
pub async fn serve<S>(
    mut stream: TcpStream,
    first: Box<DirectRequest>,
    app: S,
    guard: TaskTrackerToken,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let DirectRequest { request, head_len } = *first;
    // The head was only peeked: take it off the socket now.
    if !consume_head(&mut stream, head_len).await {
        return;
    }
    let Ok(response) = app.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let is_stream = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        let head = response_head(parts.status, &parts.headers, "transfer-encoding: chunked");
        // The stream itself, written here; the body (its hyper form) is dropped.
        let sse = parts
            .extensions
            .get::<DirectStream>()
            .and_then(DirectStream::take);
        drop(body);
        drop(parts);
        if let Some(sse) = sse {
            tokio::spawn(StreamWriter {
                stream,
                sse: Some(sse),
                // The head goes out with the events already waiting (the
                // welcome, retained values): one write where there were two.
                outbox: vec![head],
                with_head: true,
                progress: WriteProgress::default(),
                deadline: None,
                ended: false,
                _guard: guard,
            });
        }
        return;
    }
    answer_whole(stream, parts, body).await;
}

/// Writes an answer that is not a stream (an error, a redirect: small)
/// whole, with its length, and closes the connection.
pub(crate) async fn answer_whole(
    mut stream: TcpStream,
    parts: axum::http::response::Parts,
    body: Body,
) {
    let body = axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .unwrap_or_default();
    let length = format!("content-length: {}\r\nconnection: close", body.len());
    let head = response_head(parts.status, &parts.headers, &length);
    let _ = write_all_vectored(&mut stream, &[head, body]).await;
    let _ = stream.shutdown().await;
}

/// Reads a peeked request's head off the socket, so that what follows is
/// the client's next bytes.
pub(crate) async fn consume_head(stream: &mut TcpStream, head_len: usize) -> bool {
    let mut head = vec![0u8; head_len];
    stream.read_exact(&mut head).await.is_ok()
}

/// The status line and headers, plus one framing header line.
pub(crate) fn response_head(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    framing: &str,
) -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    if !framing.is_empty() {
        head.put_slice(framing.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

/// Writes a session's stream as HTTP/1.1 chunks until it ends or the client
/// goes away, then shuts the socket. The frames ready at once go out as one
/// chunk in one `writev`, each still the event's shared bytes. While a chunk
/// waits for the client, the session's timers and drain still run; a client
/// that does not take a chunk within the write timeout is cut (its peer
/// leaves, reason `timeout`). A future written by hand: its task holds these
/// fields and nothing else (an async block kept its captures apart from its
/// steps' state, 128 B more in every idle stream's task).
struct StreamWriter {
    stream: TcpStream,
    /// The session's stream; dropped (the peer leaves) once it is over.
    sse: Option<SseStream>,
    outbox: Vec<Bytes>,
    /// The response head is in `outbox`: the first frames join it.
    with_head: bool,
    progress: WriteProgress,
    /// Armed only while a write waits for the client.
    deadline: Option<Pin<Box<Sleep>>>,
    ended: bool,
    /// Holds the relay's shutdown open until the stream is over.
    _guard: TaskTrackerToken,
}

impl Future for StreamWriter {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.sse.is_some() {
            let Poll::Ready(cut) = this.poll_write(cx) else {
                return Poll::Pending;
            };
            if let Some(sse) = this.sse.as_mut()
                && cut
            {
                tracing::debug!("SSE client took no bytes for the write timeout; cut");
                sse.cut_for_timeout();
            }
            this.sse = None;
        }
        Pin::new(&mut this.stream).poll_shutdown(cx).map(|_| ())
    }
}

impl StreamWriter {
    /// Writes until the stream ends or the client goes away; `true` when
    /// the client was cut for taking no bytes within the write timeout.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let StreamWriter {
            stream,
            sse,
            outbox,
            with_head,
            progress,
            deadline,
            ended,
            ..
        } = self;
        let Some(sse) = sse.as_mut() else {
            return Poll::Ready(false);
        };
        loop {
            if std::mem::take(with_head) {
                let _ = take_frames(sse, cx, true, outbox, ended);
            }
            if !outbox.is_empty() {
                match poll_write_all(&mut *stream, cx, outbox, progress) {
                    Poll::Ready(Ok(())) => {
                        *outbox = Vec::new();
                        *progress = WriteProgress::default();
                        *deadline = None;
                        if *ended {
                            return Poll::Ready(false);
                        }
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Pending => {
                        let timeout = sse.write_timeout();
                        let timer =
                            deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(true);
                        }
                    }
                }
            }
            if client_hung_up(stream, cx) {
                return Poll::Ready(false);
            }
            if *ended {
                return Poll::Pending;
            }
            let writable = outbox.is_empty();
            if take_frames(sse, cx, writable, outbox, ended).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Moves the frames ready now into `outbox` as one chunk (and the last
/// chunk when the stream ended); `Pending` when none is ready.
fn take_frames(
    sse: &mut SseStream,
    cx: &mut Context<'_>,
    writable: bool,
    outbox: &mut Vec<Bytes>,
    ended: &mut bool,
) -> Poll<()> {
    match sse.poll_frames(cx, writable) {
        Poll::Ready(Some(frames)) => {
            *ended = sse.is_done();
            outbox.extend(chunk(frames, *ended));
        }
        Poll::Ready(None) => {
            *ended = true;
            outbox.extend(chunk(Vec::new(), true));
        }
        Poll::Pending => return Poll::Pending,
    }
    Poll::Ready(())
}

/// Frames as one HTTP/1.1 chunk (its size line, the frames, the CRLF), then
/// the last chunk when the stream ends.
fn chunk(frames: Vec<Bytes>, last: bool) -> Vec<Bytes> {
    let size: usize = frames.iter().map(Bytes::len).sum();
    let mut parts = Vec::with_capacity(frames.len() + 3);
    if size > 0 {
        parts.push(Bytes::from(format!("{size:x}\r\n")));
        parts.extend(frames);
        parts.push(Bytes::from_static(b"\r\n"));
    }
    if last {
        parts.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    parts
}

/// True when the client closed its side (or the socket failed). Anything it
/// sends meanwhile is read and ignored: an event stream takes no input.
fn client_hung_up(stream: &TcpStream, cx: &mut Context<'_>) -> bool {
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) => {}
        }
        let mut sink = [0u8; 256];
        match stream.try_read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_complete_event_stream_get_qualifies() {
        let good = b"GET /rooms/r?token=t HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        let first = parse(good);
        assert!(
            first
                .as_ref()
                .is_some_and(|(f, websocket)| f.head_len == good.len() && !websocket)
        );
        assert_eq!(
            first.map(|(f, _)| f.request.uri().to_string()),
            Some("/rooms/r?token=t".to_owned())
        );
        let upgrade = b"GET /rooms/r HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(
            parse(upgrade).is_some_and(|(f, websocket)| websocket && f.head_len == upgrade.len())
        );
        for other in [
            &b"GET /rooms/r HTTP/1.1\r\nAccept: text/event-stream\r\n"[..],
            b"GET /rooms/r HTTP/1.1\r\nAccept: */*\r\n\r\n",
            b"POST /rooms/r HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /rooms/r HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /rooms/r HTTP/1.1\r\nAccept: text/event-stream\r\nUpgrade: h2c\r\n\r\n",
            b"GET /rooms/r HTTP/1.1\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n\r\n",
            b"POST /rooms/r HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /rooms/r HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 3\r\n\r\nabc",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(parse(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_response_head_carries_its_headers_and_one_framing_line() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        let head = response_head(StatusCode::OK, &headers, "transfer-encoding: chunked");
        assert_eq!(
            &head[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let head = response_head(StatusCode::SWITCHING_PROTOCOLS, &headers, "");
        assert_eq!(
            &head[..],
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
        );
    }
}
