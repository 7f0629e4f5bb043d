//! Randomness the relay needs, in one place: ids for peers and instances
//! (from the system's entropy source), and random waits (full-jitter
//! backoff for retries, and the spread of a drain).
//! Jitter needs no cryptographic randomness, so it comes from a per-thread
//! xorshift generator seeded once from std's per-process hash keys, not from
//! a system call per wait (a connect burst made two `getrandom` calls per
//! session, one per drain slot).

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A non-zero seed: std's random hash keys, mixed with the thread's clock.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() | 1
}

/// A pseudo-random number (xorshift64*): for jitter, never for secrets.
pub fn random_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Full-jitter backoff: a random wait up to `min(cap, base * 2^attempt)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(if millis == 0 {
        0
    } else {
        random_u64() % (millis + 1)
    })
}

/// `n` random bytes as url-safe text (peer and instance ids).
pub fn random_id(n: usize) -> String {
    use base64::Engine;
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: time and a counter, still unique per process.
        let t = crate::protocol::now_ms()
            ^ RANDOM_FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (t >> ((i % 8) * 8)) as u8;
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

static RANDOM_FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_ceiling_and_spreads() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let wait = backoff(3, base, cap);
            assert!(wait <= Duration::from_millis(800), "{wait:?}");
            seen.insert(wait);
        }
        assert!(seen.len() > 100, "only {} distinct waits", seen.len());
        assert!(backoff(40, base, cap) <= cap);
        assert_eq!(backoff(0, Duration::ZERO, cap), Duration::ZERO);
    }
}
