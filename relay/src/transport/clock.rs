//! One timer per session: the deadlines a session loop watches (keep-alive,
//! idle timeout, token expiry and its warning, its moment in a shutdown drain)
//! kept as instants, with a single sleep armed at the earliest. A session costs
//! one timer entry and one wake-up per deadline instead of a future each.

use std::num::NonZeroU64;
use std::sync::OnceLock;
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

/// A session's deadlines, packed: every idle session holds one, so instants
/// are kept as [`Stamp`]s (8 bytes, not 16) and the periods, which come from
/// the configuration, as milliseconds (64 bytes where `Instant`s and
/// `Duration`s took 144).
#[derive(Debug)]
pub struct SessionClock {
    keep_alive_every: Millis,
    idle_timeout: Option<Millis>,
    leeway: Millis,
    /// The relay's shutdown grace: the session's moment in a drain is drawn
    /// from it when the drain starts.
    grace: Millis,
    /// The token's expiry, Unix seconds (at least 1).
    token_exp: Option<NonZeroU64>,
    next_keep_alive: Stamp,
    idle_at: Option<Stamp>,
    expiry_at: Option<Stamp>,
    warning_at: Option<Stamp>,
    /// When the session closes in the relay's drain; set once the drain
    /// was seen, and kept.
    drain_at: Option<Stamp>,
}

impl SessionClock {
    /// Deadlines for a session with a keep-alive period, an optional idle
    /// timeout, a token expiring at `exp` (Unix seconds) with `leeway`, and
    /// the relay's shutdown grace.
    pub fn new(
        keep_alive_every: Duration,
        idle_timeout: Option<Duration>,
        exp: Option<u64>,
        leeway: Duration,
        grace: Duration,
    ) -> SessionClock {
        let now = Instant::now();
        let keep_alive_every = Millis::from(keep_alive_every);
        let idle_timeout = idle_timeout.map(Millis::from);
        let leeway = Millis::from(leeway);
        let mut clock = SessionClock {
            keep_alive_every,
            idle_timeout,
            leeway,
            grace: Millis::from(grace),
            token_exp: None,
            next_keep_alive: Stamp::at(now + keep_alive_every.get()),
            idle_at: idle_timeout.map(|t| Stamp::at(now + t.get())),
            expiry_at: None,
            warning_at: None,
            drain_at: None,
        };
        clock.set_token(exp);
        clock
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
        .map_or_else(|| Instant::now() + NEVER, Stamp::instant)
    }

    /// What is due at `now`, most final first; a keep-alive or warning that is
    /// reported is rescheduled (or dropped) so it fires once.
    pub fn due(&mut self, now: Instant) -> Due {
        let now_stamp = Stamp::reached(now);
        let passed = |at: Option<Stamp>| at.is_some_and(|at| at <= now_stamp);
        if passed(self.drain_at) {
            Due::Drain
        } else if passed(self.expiry_at) {
            Due::Expired
        } else if passed(self.idle_at) {
            Due::Idle
        } else if passed(self.warning_at) {
            self.warning_at = None;
            Due::Warning
        } else if self.next_keep_alive <= now_stamp {
            self.next_keep_alive = Stamp::at(now + self.keep_alive_every.get());
            Due::KeepAlive
        } else {
            Due::Nothing
        }
    }

    /// The client was heard from: the idle timeout starts again. No timer is
    /// touched; a stale wake-up finds [`Due::Nothing`] and re-arms.
    pub fn heard_from_client(&mut self) {
        if let Some(timeout) = self.idle_timeout {
            self.idle_at = Some(Stamp::at(Instant::now() + timeout.get()));
        }
    }

    /// The session's token changed (a refresh): move the expiry and warning.
    pub fn token_changed(&mut self, exp: Option<u64>) {
        if exp != self.token_exp() {
            self.set_token(exp);
        }
    }

    fn set_token(&mut self, exp: Option<u64>) {
        self.token_exp = exp.map(|exp| NonZeroU64::new(exp).unwrap_or(NonZeroU64::MIN));
        let leeway = self.leeway.get();
        self.expiry_at = expiry_deadline(exp, leeway).map(Stamp::at);
        self.warning_at = warning_deadline(exp, leeway).map(Stamp::at);
    }

    /// Shutdown started: the session closes `after` from now.
    pub fn start_drain(&mut self, after: Duration) {
        self.drain_at = Some(Stamp::at(Instant::now() + after));
    }

    /// True once [`SessionClock::start_drain`] ran.
    pub fn is_draining(&self) -> bool {
        self.drain_at.is_some()
    }

    /// The token's expiry (Unix seconds), for the `expiring` warning.
    pub fn token_exp(&self) -> Option<u64> {
        self.token_exp.map(NonZeroU64::get)
    }

    /// The relay's shutdown grace.
    pub fn grace(&self) -> Duration {
        self.grace.get()
    }

    /// The leeway allowed after the token's expiry.
    pub fn leeway(&self) -> Duration {
        self.leeway.get()
    }
}

/// A period of at most `u32::MAX` milliseconds (49 days; longer ones are
/// cut to it).
#[derive(Debug, Clone, Copy)]
struct Millis(u32);

impl From<Duration> for Millis {
    fn from(d: Duration) -> Millis {
        Millis(u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
    }
}

impl Millis {
    fn get(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }
}

/// An instant, as whole milliseconds (plus one, so it is never zero and an
/// `Option` of it takes no more room) since the process's first stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(NonZeroU64);

/// The instant stamps count from.
static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Stamp {
    fn epoch() -> Instant {
        *EPOCH.get_or_init(Instant::now)
    }

    /// The stamp of `at`, rounded up: a deadline never comes early.
    fn at(at: Instant) -> Stamp {
        let since = at.saturating_duration_since(Stamp::epoch());
        let ms = since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
        Stamp::from_ms(ms)
    }

    /// The stamp `now` has reached, rounded down.
    fn reached(now: Instant) -> Stamp {
        Stamp::from_ms(now.saturating_duration_since(Stamp::epoch()).as_millis())
    }

    fn from_ms(ms: u128) -> Stamp {
        let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1);
        Stamp(NonZeroU64::new(ms + 1).unwrap_or(NonZeroU64::MIN))
    }

    /// The instant this stamp stands for.
    fn instant(self) -> Instant {
        Stamp::epoch() + Duration::from_millis(self.0.get() - 1)
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
        let mut clock = SessionClock::new(secs(20), Some(secs(50)), None, Duration::ZERO, secs(1));
        let start = Instant::now();
        // Deadlines are kept to the millisecond, rounded up.
        let ms = Duration::from_millis(1);
        assert!(clock.next() >= start + secs(19) && clock.next() <= start + secs(20) + ms);
        assert_eq!(clock.due(start), Due::Nothing);
        assert_eq!(clock.due(start + secs(20) + ms), Due::KeepAlive);
        let next = clock.next();
        assert!(next >= start + secs(40) && next <= start + secs(40) + ms * 2);
        clock.heard_from_client();
        assert_eq!(clock.due(next), Due::KeepAlive);
        assert_eq!(clock.due(start + secs(51)), Due::Idle);
        clock.start_drain(Duration::ZERO);
        assert_eq!(clock.due(clock.next()), Due::Drain);
    }

    #[test]
    fn a_token_brings_an_expiry_and_a_warning() {
        let exp = crate::clock::now_secs() + 600;
        let mut clock = SessionClock::new(secs(3600), None, None, Duration::ZERO, secs(1));
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

    #[tokio::test(start_paused = true)]
    async fn a_token_expires_as_the_clock_moves() {
        let exp = crate::clock::now_secs() + 10;
        let mut clock = SessionClock::new(secs(3600), None, None, Duration::ZERO, secs(1));
        clock.token_changed(Some(exp));
        tokio::time::sleep_until(clock.next()).await;
        assert_eq!(clock.due(Instant::now()), Due::Warning);
        tokio::time::sleep_until(clock.next()).await;
        assert_eq!(clock.due(Instant::now()), Due::Expired);
        assert!(crate::clock::now_secs() >= exp);
    }
}
