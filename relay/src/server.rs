//! Runs the relay on a bound listener until a shutdown token is cancelled; `main`
//! and the integration tests both call [`serve`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::{Authenticator, KeyError};
use crate::config::Config;
use crate::hub::Hub;
use crate::routes::router;

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configured key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Redis was configured but could not be reached at start-up.
    #[error("{0}")]
    Redis(String),
    /// The listener failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
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
    let signal = shutdown.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { signal.cancelled().await })
    .await?;
    hub.tasks().close();
    if tokio::time::timeout(grace, hub.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace ran out with sessions still open");
    }
    Ok(())
}
