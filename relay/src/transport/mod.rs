//! Transports: thin adapters that move the hub's events onto WebSocket frames,
//! SSE frames or HTTP responses, and client input back to the hub.

pub mod clock;
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
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(crate::protocol::Event::expiring(at, at.saturating_sub(now)))
}

/// Waits until `deadline`, or forever without one.
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
