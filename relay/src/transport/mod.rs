//! Transports: thin adapters that move the hub's events onto WebSocket frames,
//! SSE frames or HTTP responses, and client input back to the hub.

pub mod http;
pub mod sse;
pub mod ws;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The instant at which a token expiring at `exp` (Unix seconds) stops being
/// accepted, allowing `leeway`. `None` for sessions without a token.
pub fn expiry_deadline(exp: Option<u64>, leeway: Duration) -> Option<Instant> {
    let exp = exp?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let until = Duration::from_secs(exp)
        .saturating_add(leeway)
        .saturating_sub(now);
    Some(Instant::now() + until)
}

/// Waits until `deadline`, or forever without one.
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
