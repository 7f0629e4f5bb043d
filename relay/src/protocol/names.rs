//! Names a client sends and the relay checks: room names, event ids,
//! message types and idempotency keys.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

/// Why a name, filter or id from a client was refused; the text goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// A validated room name: 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Longest room name, in bytes; keeps keys and log lines short.
    pub const MAX_LEN: usize = 128;

    /// Validates a room name from a path, op or query.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(NameError(format!(
                "room name must be 1 to {} bytes",
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = name.chars().find(|c| !is_room_char(*c)) {
            return Err(NameError(format!(
                "room name may hold only A-Z a-z 0-9 _ . : - (found {bad:?})"
            )));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_room_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An event id, `<ms>-<seq>` like a Redis stream id: it grows within a room and
/// compares across relay instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId {
    /// Milliseconds since the epoch when the id was assigned (never goes back).
    pub ms: u64,
    /// Sequence within that millisecond.
    pub seq: u64,
}

impl EventId {
    /// The id that follows `self` at wall-clock time `now_ms`.
    pub fn next_after(self, now_ms: u64) -> EventId {
        if now_ms > self.ms {
            EventId { ms: now_ms, seq: 0 }
        } else {
            EventId {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError(format!("event id must look like <ms>-<seq>, got {s:?}"));
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        let ms = ms.parse().map_err(|_| bad())?;
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(EventId { ms, seq })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Checks an application message type: 1 to 64 bytes, no control characters.
pub fn check_message_type(kind: &str) -> Result<(), NameError> {
    if kind.is_empty() || kind.len() > 64 || kind.chars().any(char::is_control) {
        return Err(NameError(
            "type must be 1 to 64 bytes with no control characters".into(),
        ));
    }
    Ok(())
}

/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A checked idempotency key: 1 to 255 visible ASCII characters, as Stripe
/// and the IETF draft (`draft-ietf-httpapi-idempotency-key-header`) use them.
/// A key sent as a structured-field string (`"abc"`) is the same key as `abc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key from a header or an op.
    pub fn parse(raw: &str) -> Result<IdempotencyKey, NameError> {
        let key = raw
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(raw);
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(NameError(format!(
                "an idempotency key is 1 to {MAX_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::parse("game-42").is_ok());
        assert!(RoomName::parse("a.b:c_d-E9").is_ok());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse("a/b").is_err());
        assert!(RoomName::parse("a b").is_err());
        assert!(RoomName::parse(&"x".repeat(128)).is_ok());
        assert!(RoomName::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn ids_grow_and_round_trip() {
        let a = EventId { ms: 10, seq: 0 };
        let b = a.next_after(10);
        let c = b.next_after(5);
        let d = c.next_after(11);
        assert!(a < b && b < c && c < d);
        assert_eq!(d, EventId { ms: 11, seq: 0 });
        assert_eq!("10-2".parse::<EventId>(), Ok(c));
        assert!("x-1".parse::<EventId>().is_err());
    }
}
