//! Runs the relay on a bound listener until a shutdown token is cancelled; `main`
//! and the integration tests both call [`serve`].

use std::sync::Arc;

use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tower_http::trace::TraceLayer;

use crate::auth::{Authenticator, KeyError};
use crate::config::Config;
use crate::hub::Hub;
use crate::routes::router;
use crate::transport::sse_direct::{self, Sniffed};

/// Largest request head (request line, URL and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configured key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Redis was configured but could not be reached at start-up.
    #[error("{0}")]
    Redis(String),
}

/// Serves the relay on `listener` until `shutdown` is cancelled, then closes every
/// session (WebSocket 1001, SSE with an `error` event) and returns once they
/// ended or the shutdown grace ran out.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let auth = Arc::new(Authenticator::from_config(&config)?);
    auth.prime().await;
    let hub = Hub::connect(config.clone(), auth, shutdown.clone())
        .await
        .map_err(|e| ServeError::Redis(format!("EDGEWIRE_REDIS_URL: cannot reach Redis ({e})")))?;
    hub.start_sweeper();
    let app = router(hub.clone()).layer(
        // Spans carry the path and the query with any token redacted; headers
        // (Authorization, Sec-WebSocket-Protocol) are never logged.
        TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            tracing::debug_span!(
                "request",
                method = %req.method(),
                path = %req.uri().path(),
                query = %crate::redact::query(req.uri().query().unwrap_or("")),
            )
        }),
    );
    let grace = config.shutdown_grace;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A client that does not finish its request head in time (a slowloris
        // or a broken handshake) is dropped; the head, with the URL, is bounded.
        .header_read_timeout(config.handshake_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    // Shared, not cloned into each connection's task: the builder is a few
    // hundred bytes that every long-lived stream would otherwise carry.
    let builder = Arc::new(builder);
    let connections = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a reset before accept: back off
                    // briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = connections.watcher();
        let tasks = hub.tasks().clone();
        let sniff_wait = config.handshake_timeout;
        tokio::spawn(async move {
            // EventSource requests are answered without hyper's per-connection
            // buffers; everything else is hyper's (the bytes were only peeked).
            // The peek and hyper's path are boxed, and an event stream is
            // written by a task of its own, so a long-lived stream holds
            // neither the peek buffer, hyper's state nor this task.
            match Box::pin(sse_direct::sniff(&stream, sniff_wait)).await {
                Sniffed::EventStream(mut first) => {
                    first.request.extensions_mut().insert(ConnectInfo(peer));
                    sse_direct::serve(stream, first, app, tasks.token()).await;
                    return;
                }
                // No request head within the handshake timeout: dropped.
                Sniffed::Silent => return,
                Sniffed::Other => {}
            }
            Box::pin(async move {
                let service = tower::service_fn(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(peer));
                        app.clone().call(request)
                    },
                );
                let connection = builder
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service),
                    )
                    .into_owned();
                let _ = watcher.watch(connection).await;
            })
            .await;
        });
    }
    drop(listener);
    // One deadline for everything: in-flight requests and streams finish, and
    // sessions close on their own drain schedule, within the grace.
    let deadline = tokio::time::Instant::now() + grace;
    let (requests, sessions) = tokio::join!(
        tokio::time::timeout_at(deadline, connections.shutdown()),
        async {
            hub.tasks().close();
            tokio::time::timeout_at(deadline, hub.tasks().wait()).await
        }
    );
    if requests.is_err() || sessions.is_err() {
        tracing::warn!("shutdown grace ran out with connections still open");
    }
    Ok(())
}
