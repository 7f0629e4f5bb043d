//! Idempotency keys: a client names a write (`Idempotency-Key` over HTTP,
//! `idempotency_key` on a WebSocket `pub`), and a retry of it returns the
//! first attempt's id and delivers nothing twice, for the history TTL. That
//! is what makes a retry after `503 outcome_unknown` or a dropped connection
//! safe.

use std::collections::{HashMap, VecDeque};

use crate::protocol::EventId;

pub use crate::protocol::{IdempotencyKey, MAX_KEY_LEN};

/// What a broker needs to make a write happen once: the key scoped to its
/// user, and a fingerprint of what the write does, so that the same key on a
/// different write is refused rather than silently answered with the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Once {
    /// The user and the key, unambiguous (the user's length comes first).
    pub scope: String,
    /// FNV-1a of the write's parts, in hex: stable across builds and instances.
    pub fingerprint: String,
}

impl Once {
    /// The once-marker of a write by `user` under `key`, described by `parts`
    /// (the operation and its fields, not the sender's peer id, which a
    /// reconnect changes).
    pub fn new(user: &str, key: &IdempotencyKey, parts: &[&str]) -> Once {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            // Each part's length first, so that parts cannot run into each other.
            for byte in (part.len() as u64)
                .to_le_bytes()
                .iter()
                .chain(part.as_bytes())
            {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Once {
            scope: format!("{}:{user}{}", user.len(), key.as_str()),
            fingerprint: format!("{hash:016x}"),
        }
    }
}

/// What a ledger says of a keyed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// Not seen (or forgotten): do the write, then `remember` it.
    New,
    /// Done before: answer with this id and do nothing.
    Done(EventId),
    /// The key was used for a different write.
    Reused,
}

/// Most keys one room of the in-memory broker remembers; past it the oldest
/// are forgotten early (documented with `EDGEWIRE_HISTORY_TTL`).
pub const MAX_KEYS_PER_ROOM: usize = 10_000;

/// The in-memory broker's record of a room's keyed writes, each kept for the
/// history TTL. Pruned as it is used, so an idle room costs no timer work.
#[derive(Debug, Default)]
pub struct Ledger {
    done: HashMap<String, (EventId, String)>,
    /// Scopes in the order they were written, with their expiry (ms).
    order: VecDeque<(u64, String)>,
}

impl Ledger {
    /// What is known of `once` at `now_ms`.
    pub fn recall(&mut self, once: &Once, now_ms: u64) -> Recall {
        self.prune(now_ms);
        match self.done.get(&once.scope) {
            None => Recall::New,
            Some((id, fp)) if *fp == once.fingerprint => Recall::Done(*id),
            Some(_) => Recall::Reused,
        }
    }

    /// Records that `once` was done as `id`, until `expires_ms`.
    pub fn remember(&mut self, once: &Once, id: EventId, expires_ms: u64) {
        if self
            .done
            .insert(once.scope.clone(), (id, once.fingerprint.clone()))
            .is_none()
        {
            self.order.push_back((expires_ms, once.scope.clone()));
        }
        while self.order.len() > MAX_KEYS_PER_ROOM {
            if let Some((_, scope)) = self.order.pop_front() {
                self.done.remove(&scope);
            }
        }
    }

    /// Forgets keys whose time has passed.
    pub fn prune(&mut self, now_ms: u64) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now_ms {
                break;
            }
            if let Some((_, scope)) = self.order.pop_front() {
                self.done.remove(&scope);
            }
        }
    }

    /// True when it remembers nothing.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(k).unwrap_or_else(|e| panic!("{}", e.0))
    }

    #[test]
    fn keys_are_visible_ascii_and_quotes_are_optional() {
        assert_eq!(key("\"abc-1\"").as_str(), "abc-1");
        assert_eq!(key("abc-1"), key("\"abc-1\""));
        for bad in ["", "\"\"", "a b", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn scope_and_fingerprint_tell_users_keys_and_writes_apart() {
        let a = Once::new("ab", &key("c"), &["pub", "x"]);
        let b = Once::new("a", &key("bc"), &["pub", "x"]);
        assert_ne!(a.scope, b.scope);
        assert_eq!(a.fingerprint, b.fingerprint);
        let c = Once::new("ab", &key("c"), &["pub", "xy"]);
        let d = Once::new("ab", &key("c"), &["pubx", "y"]);
        assert_ne!(c.fingerprint, d.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn a_ledger_recalls_refuses_reuse_and_forgets_in_time() {
        let mut ledger = Ledger::default();
        let once = Once::new("u", &key("k"), &["pub", "1"]);
        assert_eq!(ledger.recall(&once, 0), Recall::New);
        let id = EventId { ms: 5, seq: 0 };
        ledger.remember(&once, id, 100);
        assert_eq!(ledger.recall(&once, 99), Recall::Done(id));
        let other = Once::new("u", &key("k"), &["pub", "2"]);
        assert_eq!(ledger.recall(&other, 99), Recall::Reused);
        assert_eq!(ledger.recall(&once, 100), Recall::New);
        assert!(ledger.is_empty());
    }

    #[test]
    fn a_ledger_is_bounded() {
        let mut ledger = Ledger::default();
        for i in 0..MAX_KEYS_PER_ROOM + 5 {
            let once = Once::new("u", &key(&format!("k{i}")), &[]);
            ledger.remember(
                &once,
                EventId {
                    ms: i as u64,
                    seq: 0,
                },
                u64::MAX,
            );
        }
        assert_eq!(ledger.done.len(), MAX_KEYS_PER_ROOM);
        let first = Once::new("u", &key("k0"), &[]);
        assert_eq!(ledger.recall(&first, 0), Recall::New);
    }
}
