//! Recently verified tokens. A client that publishes over HTTP sends the same
//! token with every request; checking its signature and parsing its claims
//! each time was the largest single cost of a POST (about 15% of the relay's
//! CPU in the publish benchmark). A hit still enforces `exp`, so a cached
//! token ends exactly when a verified one would; entries live at most
//! [`MAX_AGE`], so a key removed from a JWKS stops being honoured soon after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Instant;

use super::Principal;

/// Longest an entry is trusted without verifying the token again.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Most tokens remembered; a full cache is emptied (a bound, not an LRU: a
/// miss only costs one verification).
pub const CAPACITY: usize = 4096;
/// Tokens longer than this are not cached (they are verified every time).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A bounded map from token text to the principal it verified as.
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Arc<str>, (Principal, Instant)>>,
}

impl VerifiedTokens {
    /// The principal of `token` if it was verified within [`MAX_AGE`] and,
    /// at `now_secs` (Unix seconds) with `leeway_secs`, has not expired.
    pub fn get(&self, token: &str, now_secs: u64, leeway_secs: u64) -> Option<Principal> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (principal, at) = entries.get(token)?;
        let live = principal
            .expires_at
            .is_some_and(|exp| now_secs <= exp.saturating_add(leeway_secs));
        if live && at.elapsed() < MAX_AGE {
            return Some(principal.clone());
        }
        entries.remove(token);
        None
    }

    /// Remembers a token that was just verified.
    pub fn put(&self, token: &str, principal: &Principal) {
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(Arc::from(token), (principal.clone(), Instant::now()));
    }

    /// Number of tokens remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Grants;
    use crate::protocol::null_payload;

    fn principal(sub: &str, exp: u64) -> Principal {
        Principal {
            sub: Arc::from(sub),
            meta: null_payload(),
            grants: Arc::new(Grants::default()),
            public: Arc::new(Vec::new()),
            expires_at: Some(exp),
        }
    }

    #[test]
    fn a_hit_still_enforces_exp_with_leeway() {
        let cache = VerifiedTokens::default();
        cache.put("tok", &principal("alice", 1000));
        let hit = cache.get("tok", 1000, 0).map(|p| p.sub.to_string());
        assert_eq!(hit.as_deref(), Some("alice"));
        assert!(cache.get("tok", 1030, 30).is_some());
        // Past exp plus leeway: refused, and forgotten.
        assert!(cache.get("tok", 1031, 30).is_none());
        assert!(cache.is_empty());
        assert!(cache.get("other", 0, 0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_trusted_for_max_age_only() {
        let cache = VerifiedTokens::default();
        cache.put("tok", &principal("alice", u64::MAX));
        tokio::time::sleep(MAX_AGE - Duration::from_millis(1)).await;
        assert!(cache.get("tok", 0, 0).is_some());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            cache.get("tok", 0, 0).is_none(),
            "verified again after MAX_AGE"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedTokens::default();
        for i in 0..CAPACITY + 10 {
            cache.put(&format!("tok{i}"), &principal("a", u64::MAX));
        }
        assert!(cache.len() <= CAPACITY);
        cache.put(&"x".repeat(MAX_TOKEN_BYTES + 1), &principal("a", u64::MAX));
        assert!(cache.get(&"x".repeat(MAX_TOKEN_BYTES + 1), 0, 0).is_none());
    }
}
