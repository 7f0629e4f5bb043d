//! Shutdown: SIGTERM or SIGINT cancels one token that every session watches;
//! the server then waits for session tasks up to the configured grace.

use tokio_util::sync::CancellationToken;

/// SIGTERM and SIGINT, listened for from the moment this is made: made
/// before the relay binds its port, so a signal sent as soon as the port
/// answers is never lost (a signal that came between the port opening and a
/// later registration was taken by the handler and never seen, and the relay
/// ran on).
pub struct Signals {
    #[cfg(unix)]
    listening: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts listening for SIGTERM and SIGINT (Ctrl-C where there are no
    /// Unix signals). Needs the runtime.
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listening = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            Signals { listening }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Cancels `token` on the first signal.
    pub fn cancel_on_signal(self, token: CancellationToken) {
        tokio::spawn(async move {
            self.recv().await;
            tracing::info!("shutdown signal received; draining");
            token.cancel();
        });
    }

    async fn recv(self) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.listening {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Share of the shutdown grace over which sessions are closed, so clients do
/// not all reconnect in the same second; the rest is margin for the last ones.
pub const DRAIN_SPREAD: f64 = 0.7;

/// When, after the drain starts, one session should close: random within
/// the spread share of `grace`, so closes spread.
pub fn drain_spread(grace: std::time::Duration) -> std::time::Duration {
    let spread = grace.mul_f64(DRAIN_SPREAD);
    crate::random::backoff(31, spread, spread)
}

/// The reconnect delay to suggest to a drained session's client: random,
/// so the clients' returns spread.
pub fn reconnect_after() -> std::time::Duration {
    std::time::Duration::from_millis(500)
        + crate::random::backoff(
            31,
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(5),
        )
}

/// A delay as the whole seconds of a `retry_after` or `Retry-After`, rounded
/// up (at least 1): a client that waits what it is told is never early.
pub fn retry_after_secs(delay: std::time::Duration) -> u64 {
    u64::try_from(delay.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(super::retry_after_secs(Duration::from_millis(1695)), 2);
        assert_eq!(super::retry_after_secs(Duration::from_millis(2000)), 2);
        assert_eq!(super::retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(super::retry_after_secs(Duration::ZERO), 1);
    }
}
