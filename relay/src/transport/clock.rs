//! One timer per session: the deadlines a session loop watches (keep-alive,
//! idle timeout, token expiry and its warning, its moment in a shutdown drain)
//! kept as instants, with a single sleep armed at the earliest. A session costs
//! one timer entry and one wake-up per deadline instead of a future each.

use std::time::Duration;

use tokio::time::Instant;

use super::{expiry_deadline, warning_deadline};

/// How far "never" is: a resettable sleep needs an instant.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What came due when the session's timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The session's moment in the shutdown drain: close it.
    Drain,
    /// The token expired (with leeway): close it.
    Expired,
    /// Nothing heard from the client within the idle timeout: close it.
    Idle,
    /// Time to warn that the token expires soon.
    Warning,
    /// Time to send a keep-alive (WebSocket ping, SSE comment).
    KeepAlive,
    /// Nothing yet (a deadline moved later since the timer was armed).
    Nothing,
}

/// A session's deadlines.
#[derive(Debug)]
pub struct SessionClock {
    keep_alive_every: Duration,
    next_keep_alive: Instant,
    idle_timeout: Option<Duration>,
    idle_at: Option<Instant>,
    leeway: Duration,
    token_exp: Option<u64>,
    expiry_at: Option<Instant>,
    warning_at: Option<Instant>,
    drain_at: Option<Instant>,
}

impl SessionClock {
    /// Deadlines for a session with a keep-alive period, an optional idle
    /// timeout, and a token expiring at `exp` (Unix seconds) with `leeway`.
    pub fn new(
        keep_alive_every: Duration,
        idle_timeout: Option<Duration>,
        exp: Option<u64>,
        leeway: Duration,
    ) -> SessionClock {
        let now = Instant::now();
        SessionClock {
            keep_alive_every,
            next_keep_alive: now + keep_alive_every,
            idle_timeout,
            idle_at: idle_timeout.map(|t| now + t),
            leeway,
            token_exp: exp,
            expiry_at: expiry_deadline(exp, leeway),
            warning_at: warning_deadline(exp, leeway),
            drain_at: None,
        }
    }

    /// The earliest deadline, for the session's one sleep.
    pub fn next(&self) -> Instant {
        [
            Some(self.next_keep_alive),
            self.idle_at,
            self.expiry_at,
            self.warning_at,
            self.drain_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + NEVER)
    }

    /// What is due at `now`, most final first; a keep-alive or warning that is
    /// reported is rescheduled (or dropped) so it fires once.
    pub fn due(&mut self, now: Instant) -> Due {
        let passed = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if passed(self.drain_at) {
            Due::Drain
        } else if passed(self.expiry_at) {
            Due::Expired
        } else if passed(self.idle_at) {
            Due::Idle
        } else if passed(self.warning_at) {
            self.warning_at = None;
            Due::Warning
        } else if self.next_keep_alive <= now {
            self.next_keep_alive = now + self.keep_alive_every;
            Due::KeepAlive
        } else {
            Due::Nothing
        }
    }

    /// The client was heard from: the idle timeout starts again. No timer is
    /// touched; a stale wake-up finds [`Due::Nothing`] and re-arms.
    pub fn heard_from_client(&mut self) {
        if let Some(timeout) = self.idle_timeout {
            self.idle_at = Some(Instant::now() + timeout);
        }
    }

    /// The session's token changed (a refresh): move the expiry and warning.
    pub fn token_changed(&mut self, exp: Option<u64>) {
        if exp != self.token_exp {
            self.token_exp = exp;
            self.expiry_at = expiry_deadline(exp, self.leeway);
            self.warning_at = warning_deadline(exp, self.leeway);
        }
    }

    /// Shutdown started: the session closes `after` from now.
    pub fn start_drain(&mut self, after: Duration) {
        self.drain_at = Some(Instant::now() + after);
    }

    /// The token's expiry (Unix seconds), for the `expiring` warning.
    pub fn token_exp(&self) -> Option<u64> {
        self.token_exp
    }

    /// The leeway allowed after the token's expiry.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn reports_each_deadline_in_turn() {
        let mut clock = SessionClock::new(secs(20), Some(secs(50)), None, Duration::ZERO);
        let start = Instant::now();
        assert!(clock.next() >= start + secs(19) && clock.next() <= start + secs(20));
        assert_eq!(clock.due(start), Due::Nothing);
        assert_eq!(clock.due(start + secs(20)), Due::KeepAlive);
        assert_eq!(clock.next(), start + secs(40));
        clock.heard_from_client();
        assert_eq!(clock.due(start + secs(40)), Due::KeepAlive);
        assert_eq!(clock.due(start + secs(51)), Due::Idle);
        clock.start_drain(Duration::ZERO);
        assert_eq!(clock.due(Instant::now()), Due::Drain);
    }

    #[test]
    fn a_token_brings_an_expiry_and_a_warning() {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 600)
            .unwrap_or(0);
        let mut clock = SessionClock::new(Duration::from_secs(3600), None, None, Duration::ZERO);
        assert_eq!(
            clock.due(Instant::now() + Duration::from_secs(1000)),
            Due::Nothing
        );
        clock.token_changed(Some(exp));
        let warn = clock.next();
        assert!(warn < Instant::now() + Duration::from_secs(600));
        assert_eq!(clock.due(warn), Due::Warning);
        assert_eq!(clock.due(warn), Due::Nothing);
        assert_eq!(
            clock.due(Instant::now() + Duration::from_secs(601)),
            Due::Expired
        );
    }
}
