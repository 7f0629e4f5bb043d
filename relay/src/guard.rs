//! Admission control: what keeps a public relay up under floods. Every check is
//! a counter or a small bucket behind a short lock, and every map is bounded
//! (idle entries are swept; a full map refuses rather than grows).
//!
//! - a cap on live sessions, per client address and per user;
//! - a cap on new sessions per second (a reconnect storm after a deploy);
//! - an auth-failure limit per client address, checked before any token is
//!   parsed, so a client reconnecting with a bad token costs a map lookup;
//! - a publish rate per session (WebSocket) and per user (HTTP).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Instant;
use crate::error::ApiError;

/// Most distinct addresses or users tracked by one limiter; beyond it new keys
/// are refused until idle ones are swept (memory stays bounded under a spray
/// of spoofed or rotating addresses).
pub const MAX_TRACKED: usize = 100_000;
/// Window of the auth-failure limit.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The limits in force, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    /// Live sessions in all.
    pub max_sessions: usize,
    /// Live sessions per client address.
    pub max_per_address: usize,
    /// Live sessions per user (`sub`).
    pub max_per_user: usize,
    /// New sessions per second (burst of the same size).
    pub new_per_second: u32,
    /// Failed authentications per address within [`AUTH_FAILURE_WINDOW`].
    pub auth_failures: u32,
    /// Publishes per second per session or user (burst of twice that).
    pub publish_per_second: u32,
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64) -> Bucket {
        Bucket {
            tokens: capacity,
            at: Instant::now(),
        }
    }

    /// Takes one token; otherwise the seconds until one is there.
    fn take(&mut self, rate: f64, capacity: f64) -> Result<(), u64> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// A publish rate limit for one session.
#[derive(Debug)]
pub struct PublishBucket {
    bucket: Bucket,
    rate: f64,
}

impl PublishBucket {
    /// A full bucket for `per_second` publishes (burst twice that).
    pub fn new(per_second: u32) -> PublishBucket {
        let rate = f64::from(per_second.max(1));
        PublishBucket {
            bucket: Bucket::full(rate * 2.0),
            rate,
        }
    }

    /// Takes one publish, or says when to retry.
    pub fn take(&mut self) -> Result<(), ApiError> {
        self.bucket
            .take(self.rate, self.rate * 2.0)
            .map_err(ApiError::RateLimited)
    }
}

/// Counts per key, bounded.
struct Counts<K> {
    map: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn try_add(&self, key: &K, max: usize) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_TRACKED {
            return false;
        }
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn remove(&self, key: &K) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }
}

/// Admission control shared by every route.
pub struct Guard {
    limits: GuardLimits,
    sessions: Mutex<usize>,
    per_address: Counts<IpAddr>,
    per_user: Counts<Arc<str>>,
    new_sessions: Mutex<Bucket>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    publishers: Mutex<HashMap<Arc<str>, PublishBucket>>,
}

/// One address's failed authentications in the current window, and how many
/// uncached tokens it has had checked since it was locked out.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    failed: u32,
    locked_checks: u32,
}

/// Uncached tokens a locked-out address may still have verified per window,
/// against the keys the relay already holds (never a JWKS fetch): enough for
/// an office of valid users behind one NAT, and a cheap ceiling for a flood.
pub const LOCKED_CHECKS_PER_WINDOW: u32 = 100;

/// A live session's place under the caps; released when dropped.
pub struct SessionPermit {
    guard: Arc<Guard>,
    address: IpAddr,
    user: Arc<str>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.guard.per_address.remove(&self.address);
        self.guard.per_user.remove(&self.user);
        let mut n = self
            .guard
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
    }
}

impl Guard {
    /// A guard enforcing `limits`.
    pub fn new(limits: GuardLimits) -> Arc<Guard> {
        Arc::new(Guard {
            limits,
            sessions: Mutex::new(0),
            per_address: Counts::new(),
            per_user: Counts::new(),
            new_sessions: Mutex::new(Bucket::full(f64::from(limits.new_per_second.max(1)))),
            failures: Mutex::new(HashMap::new()),
            publishers: Mutex::new(HashMap::new()),
        })
    }

    /// The cheap first check of every request: says when an address that
    /// failed authentication too often within the window is locked out, and
    /// for how long (`LockedOut`). The caller decides what still passes: a
    /// token that verifies is never refused (see [`Guard::take_locked_check`]).
    pub fn check_address(&self, address: IpAddr) -> Result<(), ApiError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&address) {
            Some(f) if f.failed >= self.limits.auth_failures => {
                let left = AUTH_FAILURE_WINDOW.saturating_sub(f.since.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(ApiError::LockedOut(crate::shutdown::retry_after_secs(left)))
                }
            }
            _ => Ok(()),
        }
    }

    /// Takes one verification of an uncached token for a locked-out address,
    /// if its budget for the window ([`LOCKED_CHECKS_PER_WINDOW`]) allows.
    pub fn take_locked_check(&self, address: IpAddr) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get_mut(&address) {
            Some(f) if f.locked_checks < LOCKED_CHECKS_PER_WINDOW => {
                f.locked_checks += 1;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Records a failed authentication from `address`.
    pub fn record_failure(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.contains_key(&address) && failures.len() >= MAX_TRACKED {
            return;
        }
        let fresh = Failures {
            since: Instant::now(),
            failed: 0,
            locked_checks: 0,
        };
        let entry = failures.entry(address).or_insert(fresh);
        if entry.since.elapsed() >= AUTH_FAILURE_WINDOW {
            *entry = fresh;
        }
        entry.failed = entry.failed.saturating_add(1);
    }

    /// Admits a new session of `user` from `address`, or refuses it: `503
    /// over_capacity` at a cap (total, per address, per user, or new per second).
    pub fn admit(
        self: &Arc<Guard>,
        address: IpAddr,
        user: &Arc<str>,
    ) -> Result<SessionPermit, ApiError> {
        {
            let mut bucket = self.new_sessions.lock().unwrap_or_else(|p| p.into_inner());
            let rate = f64::from(self.limits.new_per_second.max(1));
            bucket
                .take(rate, rate)
                .map_err(|_| ApiError::OverCapacity)?;
        }
        {
            let mut n = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if *n >= self.limits.max_sessions {
                return Err(ApiError::OverCapacity);
            }
            *n += 1;
        }
        let undo_total = || {
            let mut n = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            *n = n.saturating_sub(1);
        };
        if !self
            .per_address
            .try_add(&address, self.limits.max_per_address)
        {
            undo_total();
            return Err(ApiError::OverCapacity);
        }
        if !self.per_user.try_add(user, self.limits.max_per_user) {
            self.per_address.remove(&address);
            undo_total();
            return Err(ApiError::OverCapacity);
        }
        Ok(SessionPermit {
            guard: self.clone(),
            address,
            user: user.clone(),
        })
    }

    /// Live sessions.
    pub fn sessions(&self) -> usize {
        *self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one HTTP publish of `user`, or says when to retry (`429`).
    pub fn take_publish(&self, user: &Arc<str>) -> Result<(), ApiError> {
        let mut publishers = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        if !publishers.contains_key(user) && publishers.len() >= MAX_TRACKED {
            return Err(ApiError::RateLimited(1));
        }
        publishers
            .entry(user.clone())
            .or_insert_with(|| PublishBucket::new(self.limits.publish_per_second))
            .take()
    }

    /// A publish bucket for one WebSocket session.
    pub fn session_bucket(&self) -> PublishBucket {
        PublishBucket::new(self.limits.publish_per_second)
    }

    /// Forgets idle entries (expired failure windows, full publish buckets).
    pub fn sweep(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, f| f.since.elapsed() < AUTH_FAILURE_WINDOW);
        let mut publishers = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        publishers.retain(|_, b| b.bucket.at.elapsed() < Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GuardLimits {
        GuardLimits {
            max_sessions: 3,
            max_per_address: 2,
            max_per_user: 2,
            new_per_second: 100,
            auth_failures: 2,
            publish_per_second: 1,
        }
    }

    #[test]
    fn caps_and_release() {
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let (u, v, w): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("u"), Arc::from("v"), Arc::from("w"));
        // Per address: two from `a`, the third refused, `b` still fine.
        let guard = Guard::new(limits());
        let _p1 = guard.admit(a, &u);
        let _p2 = guard.admit(a, &v);
        assert_eq!(
            guard.admit(a, &w).err(),
            Some(ApiError::OverCapacity),
            "per address"
        );
        assert!(guard.admit(b, &w).is_ok());
        // Per user: two sessions of `u`, the third refused from any address.
        let guard = Guard::new(limits());
        let _q1 = guard.admit(a, &u);
        let _q2 = guard.admit(b, &u);
        assert_eq!(
            guard.admit(IpAddr::from([10, 0, 0, 3]), &u).err(),
            Some(ApiError::OverCapacity),
            "per user"
        );
        // Total: three in all; a slot frees when a permit drops.
        let guard = Guard::new(limits());
        let r1 = guard.admit(a, &u);
        let _r2 = guard.admit(b, &v);
        let _r3 = guard.admit(IpAddr::from([10, 0, 0, 3]), &w);
        assert_eq!(guard.sessions(), 3);
        assert_eq!(
            guard
                .admit(IpAddr::from([10, 0, 0, 4]), &Arc::from("x"))
                .err(),
            Some(ApiError::OverCapacity),
            "total"
        );
        drop(r1);
        assert_eq!(guard.sessions(), 2);
        assert!(
            guard
                .admit(IpAddr::from([10, 0, 0, 4]), &Arc::from("x"))
                .is_ok(),
            "a slot freed"
        );
    }

    #[test]
    fn auth_failures_lock_out_one_address() {
        let guard = Guard::new(limits());
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        guard.record_failure(a);
        assert!(guard.check_address(a).is_ok());
        guard.record_failure(a);
        assert!(matches!(guard.check_address(a), Err(ApiError::LockedOut(s)) if s >= 1));
        assert!(guard.check_address(b).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lockout_and_an_empty_bucket_end_with_time() {
        let guard = Guard::new(limits());
        let a = IpAddr::from([10, 0, 0, 1]);
        guard.record_failure(a);
        guard.record_failure(a);
        assert!(guard.check_address(a).is_err());
        tokio::time::sleep(AUTH_FAILURE_WINDOW).await;
        assert!(guard.check_address(a).is_ok(), "the window passed");

        let mut bucket = PublishBucket::new(1);
        while bucket.take().is_ok() {}
        assert!(matches!(bucket.take(), Err(ApiError::RateLimited(1))));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(bucket.take().is_ok(), "a second refills one");
        assert!(bucket.take().is_err());
    }

    #[test]
    fn publish_buckets_refuse_bursts() {
        let mut bucket = PublishBucket::new(1);
        assert!(bucket.take().is_ok());
        assert!(bucket.take().is_ok());
        assert!(matches!(bucket.take(), Err(ApiError::RateLimited(1))));
    }
}
