//! WebSocket handshakes answered on the socket, as EventSource requests are
//! (`sse_direct`). The request goes through the same router (auth, CORS,
//! admission, tracing); a `101` answer's head is handed to the session with
//! the socket and written with its first events, so the handshake and the
//! `welcome` take one write where hyper wrote the `101` on its own, and
//! hyper's per-connection state is never built. Any other answer is written
//! whole and the connection closed.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use super::handshake::DirectUpgrade;
use crate::transport::conn_io::ConnIo;
use crate::transport::sse_direct::{DirectRequest, answer_whole, consume_head, response_head};

/// Answers a WebSocket handshake on its own connection with `app`. On a
/// `101`, the socket goes to the session the route started, and this task
/// ends.
pub async fn serve<S>(
    mut stream: TcpStream,
    first: Box<DirectRequest>,
    app: S,
    write_timeout: Duration,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let DirectRequest {
        mut request,
        head_len,
    } = *first;
    if !consume_head(&mut stream, head_len).await {
        return;
    }
    let (slot, socket) = DirectUpgrade::new();
    request.extensions_mut().insert(slot);
    let Ok(response) = app.oneshot(request).await;
    let (parts, body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let head = response_head(parts.status, &parts.headers, "");
        // The session, if the route started one, writes the head first.
        let _ = socket.send((ConnIo::established(stream, write_timeout), head));
        return;
    }
    answer_whole(stream, parts, body).await;
}
