//! Presence as one relay subscriber sees it: its own peer id and the others
//! present, kept from `welcome`, `join`, `leave` and `presence` events, so a
//! connect run can tell when every subscriber sees everyone in its room
//! (a storm is only over when presence has caught up, not at the welcome).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::Deserialize;

/// The fields of a relay event that presence needs, borrowed from the frame.
#[derive(Deserialize)]
struct Seen<'a> {
    #[serde(borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    peer: Option<PeerId<'a>>,
    #[serde(default, borrow)]
    peers: Vec<PeerId<'a>>,
    #[serde(default, borrow)]
    events: Vec<Seen<'a>>,
}

#[derive(Deserialize)]
struct PeerId<'a> {
    #[serde(borrow)]
    id: &'a str,
}

/// A peer id as a number: the generator keeps thousands of views, each of
/// up to a room's size, and parses every presence frame of a storm.
fn key(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// One subscriber's view of its room's presence.
#[derive(Debug, Default, Clone)]
pub struct PeerView {
    me: Option<u64>,
    others: HashSet<u64>,
    /// When it first saw every other peer of its room (µs since the epoch).
    pub complete_at_us: Option<u64>,
    /// Presence frames received (`welcome`, `join`, `leave`, `state`,
    /// `presence`), whole run.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl PeerView {
    /// Counts a frame (or an SSE `data:` line) if it is a presence event,
    /// without parsing it: what a storm delivered.
    pub fn count(&mut self, text: &[u8]) {
        let text = text.strip_prefix(b"data: ").unwrap_or(text);
        let Some(kind) = text.strip_prefix(br#"{"kind":""#) else {
            return;
        };
        const KINDS: [&[u8]; 5] = [
            b"welcome\"",
            b"join\"",
            b"leave\"",
            b"state\"",
            b"presence\"",
        ];
        if KINDS.iter().any(|k| kind.starts_with(k)) {
            self.frames += 1;
            self.bytes += text.len() as u64;
        }
    }

    /// Applies a frame (or an SSE `data:` line) if it is a presence event;
    /// `expected` is how many others share the room.
    pub fn take(&mut self, text: &[u8], expected: usize, now_us: u64) {
        let text = text.strip_prefix(b"data: ").unwrap_or(text);
        if !text.starts_with(br#"{"kind":""#) {
            return;
        }
        let Ok(seen) = serde_json::from_slice::<Seen>(text) else {
            return;
        };
        self.apply(seen);
        if self.complete_at_us.is_none() && self.me.is_some() && self.others.len() >= expected {
            self.complete_at_us = Some(now_us);
        }
    }

    fn apply(&mut self, seen: Seen<'_>) {
        match seen.kind {
            "welcome" => {
                self.me = seen.peer.map(|p| key(p.id));
                self.others = seen.peers.iter().map(|p| key(p.id)).collect();
                if let Some(me) = self.me {
                    self.others.remove(&me);
                }
            }
            "join" => {
                if let Some(peer) = seen.peer {
                    let id = key(peer.id);
                    if Some(id) != self.me {
                        self.others.insert(id);
                    }
                }
            }
            "leave" => {
                if let Some(peer) = seen.peer {
                    self.others.remove(&key(peer.id));
                }
            }
            "presence" => {
                for inner in seen.events {
                    self.apply(inner);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_follows_welcome_joins_leaves_and_batches() {
        let mut view = PeerView::default();
        view.take(br#"{"kind":"welcome","room":"r","peer":{"id":"me"},"peers":[{"id":"a"}],"last_id":null}"#, 3, 1);
        assert_eq!(view.complete_at_us, None);
        view.take(br#"data: {"kind":"presence","room":"r","events":[{"kind":"join","room":"r","peer":{"id":"me"}},{"kind":"join","room":"r","peer":{"id":"b"}},{"kind":"leave","room":"r","peer":{"id":"a"},"reason":"closed"}]}"#, 3, 2);
        assert_eq!(view.others.len(), 1);
        view.take(br#"{"kind":"join","room":"r","peer":{"id":"a"}}"#, 3, 3);
        view.take(br#"{"kind":"join","room":"r","peer":{"id":"c"}}"#, 3, 4);
        assert_eq!(view.complete_at_us, Some(4));
        view.take(b"EWB:1:2:3:", 3, 5);
        assert_eq!(view.complete_at_us, Some(4));
    }

    #[test]
    fn presence_frames_are_counted_and_others_are_not() {
        let mut view = PeerView::default();
        let welcome = br#"{"kind":"welcome","room":"r","peer":{"id":"me"},"peers":[]}"#;
        view.count(welcome);
        view.count(br#"data: {"kind":"presence","room":"r","events":[]}"#);
        view.count(br#"{"kind":"message","room":"r","data":"{\"kind\":\"join\"}"}"#);
        view.count(b"EWB:1:2:3:");
        assert_eq!(view.frames, 2);
        assert_eq!(view.bytes, welcome.len() as u64 + 42);
    }
}
