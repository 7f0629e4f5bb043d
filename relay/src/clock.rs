//! The relay's one clock: tokio's, so that tests of expiry, idle and TTL run
//! under `tokio::time::pause` instead of sleeping. Wall time (the `ts` of
//! events, token expiry) is the real epoch time read once, advanced by that
//! clock: it never steps back when the system clock does.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// The moment the clock was first read, and the Unix time then.
fn anchor() -> (Instant, Duration) {
    static ANCHOR: OnceLock<(Instant, Duration)> = OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), unix)
    })
}

/// Time since the Unix epoch, by the relay's clock.
pub fn since_epoch() -> Duration {
    let (at, unix) = anchor();
    unix + Instant::now().saturating_duration_since(at)
}

/// Milliseconds since the Unix epoch: the `ts` of every event.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch: what a token's `exp` counts in.
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_the_paused_clock() {
        let before = now_ms();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let after = now_ms();
        assert!(after - before >= 3_600_000, "{before} {after}");
    }

    #[test]
    fn wall_time_is_near_the_system_clock() {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        assert!(now_secs().abs_diff(system) < 5);
    }
}
