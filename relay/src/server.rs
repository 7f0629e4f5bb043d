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
use crate::transport::conn_io::ConnIo;
use crate::transport::sse_direct::{self, Sniffed};

/// Largest request head (request line, URL and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// `SO_SNDBUF` of every accepted connection (Linux doubles it for its own
/// bookkeeping): what a stalled client can hold in the kernel.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Connections the kernel may hold for the relay before it accepts them
/// (capped by `net.core.somaxconn`). Every client of an instance that was
/// drained arrives within a second or two; std's 128 overflowed at a few
/// thousand connections/s, and each dropped SYN costs its client a 1 s
/// retransmit (measured: 9,400/s became 600/s in one run).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the relay's listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`
/// (a restarted relay is not refused its port while old connections linger
/// in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// True where an accepted socket inherits the listener's `TCP_NODELAY` and
/// `SO_SNDBUF` (Linux); elsewhere they are set on each accepted socket.
const INHERITS_SOCKET_OPTIONS: bool = cfg!(target_os = "linux");

/// Nagle off (events are written whole, and late ones are latency), and a
/// modest send buffer: a client that stops reading holds KBs of kernel
/// memory, not the MBs autotuning would give it.
fn set_socket_options(socket: socket2::SockRef<'_>) {
    let _ = socket.set_tcp_nodelay(true);
    let _ = socket.set_send_buffer_size(SEND_BUFFER_BYTES);
}

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configured key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Redis was configured but could not be reached at start-up.
    #[error(transparent)]
    Redis(#[from] crate::broker::StartError),
}

/// A relay whose keys are loaded and whose broker is connected, ready to
/// serve: `main` starts it before it says "listening", so a relay that cannot
/// reach Redis never claims to be up.
pub struct Relay {
    config: Arc<Config>,
    hub: Hub,
    shutdown: CancellationToken,
}

impl Relay {
    /// Loads the keys and connects the broker (Redis when configured).
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Relay, ServeError> {
        let config = Arc::new(config);
        let auth = Arc::new(Authenticator::from_config(&config)?);
        auth.prime().await;
        let hub = Hub::connect(config.clone(), auth, shutdown.clone()).await?;
        Ok(Relay {
            config,
            hub,
            shutdown,
        })
    }

    /// Serves on `listener` until the shutdown token is cancelled (see [`serve`]).
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServeError> {
        run(listener, self.config, self.hub, self.shutdown).await
    }
}

/// Serves the relay on `listener` until `shutdown` is cancelled, then closes every
/// session (WebSocket 1001, SSE with an `error` event) and returns once they
/// ended or the shutdown grace ran out.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    Relay::start(config, shutdown).await?.serve(listener).await
}

async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    hub: Hub,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
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
    // Set once on the listener: Linux copies both options to every socket it
    // accepts, which saves two system calls per connection.
    set_socket_options(socket2::SockRef::from(&listener));
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
    let accept = Acceptor {
        app,
        builder,
        tasks: hub.tasks().clone(),
        sniff_wait: config.handshake_timeout,
        write_timeout: config.write_timeout,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accept.one(accepted, &connections).await,
        }
    }
    // Every session picks its moment in the drain from here.
    hub.fanout().start_drain();
    // Draining: the listener stays open until the last session has closed or
    // the grace runs out, so a client or proxy that still arrives is told
    // `503 draining` (with Retry-After) by new-session routes and by
    // `/readyz`, instead of finding the port closed. Sessions close on their
    // own spread schedule within the grace; requests in flight finish.
    let deadline = tokio::time::Instant::now() + grace;
    hub.tasks().close();
    let sessions = hub.tasks().clone();
    let sessions_done = sessions.wait();
    tokio::pin!(sessions_done);
    let mut sessions_ended = false;
    loop {
        tokio::select! {
            _ = &mut sessions_done => {
                sessions_ended = true;
                break;
            }
            _ = tokio::time::sleep_until(deadline) => break,
            accepted = listener.accept() => accept.one(accepted, &connections).await,
        }
    }
    drop(listener);
    let requests = tokio::time::timeout_at(deadline, connections.shutdown()).await;
    if requests.is_err() || !sessions_ended {
        tracing::warn!("shutdown grace ran out with connections still open");
    }
    Ok(())
}

/// What each accepted connection needs: the router, hyper's settings, the
/// session tracker and the handshake deadline.
struct Acceptor {
    app: axum::Router,
    builder: Arc<Builder<TokioExecutor>>,
    tasks: tokio_util::task::TaskTracker,
    sniff_wait: Duration,
    write_timeout: Duration,
}

impl Acceptor {
    /// Serves one accepted connection on a task of its own; backs off briefly
    /// when accepting failed.
    async fn one(
        &self,
        accepted: std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
        connections: &GracefulShutdown,
    ) {
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or a reset before accept: back off
                // briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
        };
        if !INHERITS_SOCKET_OPTIONS {
            set_socket_options(socket2::SockRef::from(&stream));
        }
        // One deadline for the whole request head, from the accept on.
        let head_deadline = tokio::time::Instant::now() + self.sniff_wait;
        let app = self.app.clone();
        let builder = self.builder.clone();
        let watcher = connections.watcher();
        let tasks = self.tasks.clone();
        let sniff_wait = self.sniff_wait;
        let write_timeout = self.write_timeout;
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
                Sniffed::WebSocket(mut first) => {
                    first.request.extensions_mut().insert(ConnectInfo(peer));
                    crate::transport::ws::direct::serve(stream, first, app, write_timeout).await;
                    return;
                }
                // No request head within the handshake timeout: dropped.
                Sniffed::Silent => return,
                Sniffed::Other => {}
            }
            Box::pin(async move {
                let (stream, head_read) = ConnIo::new(stream, head_deadline, write_timeout);
                let service = tower::service_fn(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        head_read.done();
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
}
