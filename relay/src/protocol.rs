//! Wire types shared by every transport: room names, event ids, the events the
//! relay sends (serialized once, shared by all recipients), the ops clients send,
//! and the close-code table.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON value kept as its (minified) text, so it is parsed once and never re-encoded.
pub type Payload = Arc<RawValue>;

/// The JSON `null`, for events whose value is absent: one shared value, as
/// every peer without a state or `meta` holds it (an allocation of its own
/// cost each idle peer 24 B).
pub fn null_payload() -> Payload {
    static NULL: std::sync::LazyLock<Payload> =
        std::sync::LazyLock::new(|| Arc::from(RawValue::NULL.to_owned()));
    NULL.clone()
}

/// Parses client-supplied JSON text into a payload, minified onto one line so that
/// it fits in an SSE `data:` line.
pub fn payload_from_json(text: &str) -> Result<Payload, serde_json::Error> {
    let raw: &RawValue = serde_json::from_str(text)?;
    let minified = minify_json(raw.get());
    RawValue::from_string(minified).map(Arc::from)
}

/// Wraps arbitrary text as a JSON string payload.
pub fn payload_from_text(text: &str) -> Payload {
    let encoded = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    RawValue::from_string(encoded)
        .map(Arc::from)
        .unwrap_or_else(|_| null_payload())
}

/// Re-wraps an already validated raw value, minifying it.
pub fn payload_from_raw(raw: &RawValue) -> Payload {
    let minified = minify_json(raw.get());
    RawValue::from_string(minified)
        .map(Arc::from)
        .unwrap_or_else(|_| null_payload())
}

/// Removes insignificant whitespace from valid JSON text. JSON strings cannot hold
/// raw control characters, so the result is always one line.
fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Milliseconds since the Unix epoch, the `ts` of every event.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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

/// A peer as the room sees it: the presence entry sent in `welcome` and `join`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// `<sub>.<random>`, unique across relay instances.
    pub id: Arc<str>,
    /// The token's `sub`.
    pub user: Arc<str>,
    /// The token's `meta` claim, or `null`.
    pub meta: Payload,
    /// The state the peer set with the `state` op, or `null`.
    pub state: Payload,
}

/// The others present when a peer joined: a list built for it, or the JSON
/// array that every peer joining within one presence window shares (built
/// once per room per window; see `delivery/presence.rs`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum PeerList {
    /// Built for this joiner.
    Own(Vec<PeerInfo>),
    /// The array shared by the window's joiners: the room as the first of
    /// them found it. The changes since reach each of them in the window's
    /// `presence` event.
    Shared(Payload),
}

/// Why a peer left a room; the `reason` of a `leave` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    /// It left or its connection closed.
    Closed,
    /// It went silent (idle timeout) or its relay instance died.
    Timeout,
    /// A newer connection of the same peer replaced it.
    Replaced,
    /// Its token expired.
    Expired,
}

/// What kind of event an [`Event`] is (its `kind` field and SSE `event:` name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// First event of a session or a join.
    Welcome,
    /// An application message.
    Message,
    /// A topic value changed.
    Status,
    /// A peer joined.
    Join,
    /// A peer left.
    Leave,
    /// A peer changed its presence state.
    State,
    /// Several `join`/`leave`/`state` events of one room, coalesced.
    Presence,
    /// An op with `ref` succeeded.
    Ack,
    /// Something failed.
    Error,
    /// The relay could not replay all that was missed.
    Reset,
    /// Answer to `ping`.
    Pong,
    /// The session's token expires soon: refresh it.
    Expiring,
    /// Internal: a new token for a session, routed to its instance; never
    /// written to a client.
    Refresh,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Welcome => "welcome",
            EventKind::Message => "message",
            EventKind::Status => "status",
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::State => "state",
            EventKind::Presence => "presence",
            EventKind::Ack => "ack",
            EventKind::Error => "error",
            EventKind::Reset => "reset",
            EventKind::Pong => "pong",
            EventKind::Expiring => "expiring",
            EventKind::Refresh => "refresh",
        }
    }
}

/// One event, serialized once; every recipient shares its bytes.
#[derive(Debug)]
pub struct Event {
    kind: EventKind,
    id: Option<EventId>,
    json: String,
    sse: OnceLock<Bytes>,
    ws: OnceLock<Bytes>,
    /// The peer a presence event is about, so a session can skip its own echo.
    subject: Option<Arc<str>>,
    /// The recipient of a direct message.
    to: Option<Arc<str>>,
    /// The topic of a `status` event or a topic message, for filtered feeds.
    topic: Option<Arc<str>>,
}

/// The fields of an event's JSON that routing needs, read back from its text
/// (an event that arrived from another relay instance).
#[derive(Deserialize)]
struct Routing<'a> {
    #[serde(borrow)]
    kind: &'a str,
    id: Option<&'a str>,
    to: Option<&'a str>,
    topic: Option<&'a str>,
    peer: Option<PeerId<'a>>,
}

#[derive(Deserialize)]
struct PeerId<'a> {
    #[serde(borrow)]
    id: &'a str,
}

impl Event {
    fn build<T: Serialize>(
        kind: EventKind,
        id: Option<EventId>,
        body: &T,
        subject: Option<Arc<str>>,
        to: Option<Arc<str>>,
        topic: Option<Arc<str>>,
    ) -> Arc<Event> {
        // Serializing our own structs of strings and raw JSON cannot fail; fall back
        // to an error event rather than panic if it ever does.
        let mut json = serde_json::to_string(body).unwrap_or_else(|_| {
            r#"{"kind":"error","code":"internal","message":"encoding failed"}"#.to_owned()
        });
        // Growth while serializing can leave a large event with up to twice
        // its length in capacity (a 60 KB payload reserved exactly, then
        // doubled for the closing fields); history keeps events for minutes
        // and counts their length, so give the slack back once.
        if json.capacity() - json.len() > 1024 {
            json.shrink_to_fit();
        }
        Arc::new(Event {
            kind,
            id,
            json,
            sse: OnceLock::new(),
            ws: OnceLock::new(),
            subject,
            to,
            topic,
        })
    }

    /// Rebuilds an event from its JSON text (as published by another relay
    /// instance); `None` when the text is not an event.
    pub fn from_json(json: String) -> Option<Arc<Event>> {
        let routing: Routing<'_> = serde_json::from_str(&json).ok()?;
        let kind = match routing.kind {
            "welcome" => EventKind::Welcome,
            "message" => EventKind::Message,
            "status" => EventKind::Status,
            "join" => EventKind::Join,
            "leave" => EventKind::Leave,
            "state" => EventKind::State,
            "presence" => EventKind::Presence,
            "ack" => EventKind::Ack,
            "error" => EventKind::Error,
            "reset" => EventKind::Reset,
            "pong" => EventKind::Pong,
            "expiring" => EventKind::Expiring,
            "refresh" => EventKind::Refresh,
            _ => return None,
        };
        let id = match routing.id {
            Some(id) => Some(id.parse().ok()?),
            None => None,
        };
        let subject = match kind {
            EventKind::Join | EventKind::Leave | EventKind::State => {
                routing.peer.map(|p| Arc::from(p.id))
            }
            _ => None,
        };
        let to = routing.to.map(Arc::from);
        let topic = routing.topic.map(Arc::from);
        Some(Arc::new(Event {
            kind,
            id,
            json,
            sse: OnceLock::new(),
            ws: OnceLock::new(),
            subject,
            to,
            topic,
        }))
    }

    /// True for events kept in history (broadcast messages and live topic
    /// updates): only these are resume points.
    pub fn in_history(&self) -> bool {
        match self.kind {
            EventKind::Message => self.to.is_none() && self.id.is_some(),
            EventKind::Status => self.id.is_some(),
            _ => false,
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The event's id, for events kept in history (and direct messages).
    pub fn id(&self) -> Option<EventId> {
        self.id
    }

    /// The peer a presence event is about.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The recipient of a direct message.
    pub fn to(&self) -> Option<&str> {
        self.to.as_deref()
    }

    /// The topic of a `status` event or of a message published to a topic.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The recipient of a direct message, shared (no copy of the id).
    pub fn recipient(&self) -> Option<Arc<str>> {
        self.to.clone()
    }

    /// The event's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The complete WebSocket text frame, built at most once and shared by
    /// every socket the event goes to.
    pub fn ws_frame(&self) -> Bytes {
        self.ws
            .get_or_init(|| crate::wire::text(&self.json))
            .clone()
    }

    /// The complete SSE frame (`id:`, `event:`, `data:`), built at most once.
    /// Only events kept in history carry `id:`, so a client's `Last-Event-ID`
    /// is always a valid resume point.
    pub fn sse_frame(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let mut frame = String::with_capacity(self.json.len() + 48);
                if let Some(id) = self.id.filter(|_| self.in_history()) {
                    frame.push_str("id: ");
                    frame.push_str(&id.to_string());
                    frame.push('\n');
                }
                frame.push_str("event: ");
                frame.push_str(self.kind.as_str());
                frame.push_str("\ndata: ");
                frame.push_str(&self.json);
                frame.push_str("\n\n");
                Bytes::from(frame)
            })
            .clone()
    }

    /// A `message` event.
    pub fn message(msg: &Message) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            #[serde(flatten)]
            msg: &'a Message,
        }
        Event::build(
            EventKind::Message,
            Some(msg.id),
            &Body {
                kind: "message",
                msg,
            },
            None,
            msg.to.clone(),
            msg.topic.clone(),
        )
    }

    /// A `welcome` event: the session's own peer, the others, and the room's last id.
    pub fn welcome(
        room: Option<&RoomName>,
        me: &PeerInfo,
        peers: &PeerList,
        last_id: Option<EventId>,
    ) -> Arc<Event> {
        #[derive(Serialize)]
        struct Me<'a> {
            id: &'a str,
            user: &'a str,
            meta: &'a RawValue,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            room: Option<&'a RoomName>,
            peer: Me<'a>,
            peers: &'a PeerList,
            last_id: Option<EventId>,
        }
        let body = Body {
            kind: "welcome",
            room,
            peer: Me {
                id: &me.id,
                user: &me.user,
                meta: &me.meta,
            },
            peers,
            last_id,
        };
        Event::build(EventKind::Welcome, None, &body, None, None, None)
    }

    /// A `join` event for `peer`.
    pub fn join(room: &RoomName, peer: &PeerInfo) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            room: &'a RoomName,
            peer: &'a PeerInfo,
        }
        let body = Body {
            kind: "join",
            room,
            peer,
        };
        Event::build(
            EventKind::Join,
            None,
            &body,
            Some(peer.id.clone()),
            None,
            None,
        )
    }

    /// A `leave` event for the peer `peer_id`.
    pub fn leave(room: &RoomName, peer_id: &Arc<str>, reason: LeaveReason) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            room: &'a RoomName,
            peer: PeerRef<'a>,
            reason: LeaveReason,
        }
        let body = Body {
            kind: "leave",
            room,
            peer: PeerRef { id: peer_id },
            reason,
        };
        Event::build(
            EventKind::Leave,
            None,
            &body,
            Some(peer_id.clone()),
            None,
            None,
        )
    }

    /// A `state` event: `peer_id` set its presence state.
    pub fn state(room: &RoomName, peer_id: &Arc<str>, state: &RawValue) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            room: &'a RoomName,
            peer: PeerRef<'a>,
            state: &'a RawValue,
        }
        let body = Body {
            kind: "state",
            room,
            peer: PeerRef { id: peer_id },
            state,
        };
        Event::build(
            EventKind::State,
            None,
            &body,
            Some(peer_id.clone()),
            None,
            None,
        )
    }

    /// A `presence` event: the `join`, `leave` and `state` events of one
    /// room, in order, as one event (one frame per subscriber instead of
    /// one per change: a reconnect storm costs O(n), not O(n²), writes).
    /// The events' own JSON is embedded as is, not serialized again.
    pub fn presence(room: &RoomName, events: &[Arc<Event>]) -> Arc<Event> {
        let head = serde_json::to_string(room.as_str()).unwrap_or_else(|_| "\"\"".to_owned());
        let len = events.iter().map(|e| e.json.len() + 1).sum::<usize>();
        let mut json = String::with_capacity(len + head.len() + 40);
        json.push_str(r#"{"kind":"presence","room":"#);
        json.push_str(&head);
        json.push_str(r#","events":["#);
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&event.json);
        }
        json.push_str("]}");
        Arc::new(Event {
            kind: EventKind::Presence,
            id: None,
            json,
            sse: OnceLock::new(),
            ws: OnceLock::new(),
            subject: None,
            to: None,
            topic: None,
        })
    }

    /// A `status` event: a topic's value changed (live, with an id) or is
    /// replayed from the store (`retained: true`, no id). `data` null = cleared.
    pub fn status(status: &Status) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            room: &'a RoomName,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<EventId>,
            topic: &'a str,
            data: &'a RawValue,
            ts: u64,
            from: &'a str,
            retained: bool,
        }
        let body = Body {
            kind: "status",
            room: &status.room,
            id: status.id,
            topic: &status.topic,
            data: &status.data,
            ts: status.ts,
            from: &status.from,
            retained: status.retained,
        };
        Event::build(
            EventKind::Status,
            status.id,
            &body,
            None,
            None,
            Some(status.topic.clone()),
        )
    }

    /// A `reset`: what was missed cannot be replayed; resync from what follows.
    pub fn reset(room: &RoomName, reason: &str) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            room: &'a RoomName,
            reason: &'a str,
        }
        let body = Body {
            kind: "reset",
            room,
            reason,
        };
        Event::build(EventKind::Reset, None, &body, None, None, None)
    }

    /// An `expiring` warning: the session's token stops being accepted at
    /// `expires_at` (Unix seconds) unless a new one arrives.
    pub fn expiring(expires_at: u64, seconds_left: u64) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body {
            kind: &'static str,
            expires_at: u64,
            #[serde(rename = "in")]
            seconds_left: u64,
        }
        let body = Body {
            kind: "expiring",
            expires_at,
            seconds_left,
        };
        Event::build(EventKind::Expiring, None, &body, None, None, None)
    }

    /// Internal: carries a new token to the session of peer `to`, wherever it is.
    pub fn refresh_control(to: &Arc<str>, token: &str) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            to: &'a str,
            token: &'a str,
        }
        let body = Body {
            kind: "refresh",
            to,
            token,
        };
        Event::build(
            EventKind::Refresh,
            None,
            &body,
            None,
            Some(to.clone()),
            None,
        )
    }

    /// The token of an internal `refresh` event.
    pub fn refresh_token(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Body {
            token: String,
        }
        if self.kind != EventKind::Refresh {
            return None;
        }
        serde_json::from_str::<Body>(&self.json)
            .ok()
            .map(|b| b.token)
    }

    /// An `ack` for an op that carried `ref`.
    pub fn ack(reference: &RawValue, id: Option<EventId>) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            #[serde(rename = "ref")]
            reference: &'a RawValue,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<EventId>,
        }
        let body = Body {
            kind: "ack",
            reference,
            id,
        };
        Event::build(EventKind::Ack, None, &body, None, None, None)
    }

    /// A `pong` answering `ping`.
    pub fn pong(reference: Option<&RawValue>) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            #[serde(rename = "ref")]
            reference: Option<&'a RawValue>,
        }
        let body = Body {
            kind: "pong",
            reference,
        };
        Event::build(EventKind::Pong, None, &body, None, None, None)
    }

    /// An `error` event with one of the contract's codes.
    pub fn error(
        code: &str,
        message: &str,
        reference: Option<&RawValue>,
        retry_after: Option<u64>,
    ) -> Arc<Event> {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            code: &'a str,
            message: &'a str,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after: Option<u64>,
        }
        let body = Body {
            kind: "error",
            code,
            message,
            reference,
            retry_after,
        };
        Event::build(EventKind::Error, None, &body, None, None, None)
    }
}

#[derive(Serialize)]
struct PeerRef<'a> {
    id: &'a str,
}

/// An application message as stored and delivered: the body of a `message` event.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// The room it was published to.
    pub room: RoomName,
    /// Its id, growing within the room.
    pub id: EventId,
    /// When the relay accepted it (ms since the epoch).
    pub ts: u64,
    /// The sending peer id, or the token's `sub` for a POST without `conn`.
    pub from: Arc<str>,
    /// Application-defined message type (`message` by default).
    #[serde(rename = "type")]
    pub kind: Arc<str>,
    /// The payload.
    pub data: Payload,
    /// Recipient peer id of a direct message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Arc<str>>,
    /// Topic the message was published to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Arc<str>>,
}

/// A topic value as delivered in a `status` event.
#[derive(Debug, Clone)]
pub struct Status {
    /// The room.
    pub room: RoomName,
    /// Its id when live; `None` when replayed from the store.
    pub id: Option<EventId>,
    /// The topic.
    pub topic: Arc<str>,
    /// The value; `null` when cleared.
    pub data: Payload,
    /// When the value was set (ms since the epoch).
    pub ts: u64,
    /// Who set it.
    pub from: Arc<str>,
    /// True when replayed from the store, false for a live update.
    pub retained: bool,
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

/// A client op as it arrives in a WebSocket text frame, before validation.
#[derive(Debug, Deserialize)]
pub struct RawOp {
    /// The op name.
    pub op: String,
    /// Correlation value echoed in `ack`/`error`.
    #[serde(rename = "ref")]
    pub reference: Option<Box<RawValue>>,
    /// Target room (defaults to the URL's room).
    pub room: Option<String>,
    /// Message type for `pub`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Payload for `pub` and `will`: `None` when the field is absent, and
    /// `Some("null")` for an explicit `null` (a `pub` must carry `data`).
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Box<RawValue>>,
    /// Direct recipient for `pub`.
    pub to: Option<String>,
    /// Topic for `pub` and `will`.
    pub topic: Option<String>,
    /// Retain flag for `pub`.
    pub retain: Option<bool>,
    /// Resume point for `join`.
    pub since: Option<String>,
    /// Presence state for `state`.
    pub state: Option<Box<RawValue>>,
    /// New token for `refresh`.
    pub token: Option<String>,
    /// Lifetime in seconds of a retained value (`pub` with `retain`).
    pub ttl: Option<u64>,
    /// Delay in seconds before a will fires.
    pub after: Option<f64>,
    /// Names a `pub` so that a retry of it is done once (checked by the hub).
    pub idempotency_key: Option<String>,
}

/// Deserializes a field that is present (even as `null`) into `Some`, so an
/// absent field (`None`, by `default`) differs from an explicit `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    reference: Option<Box<RawValue>>,
}

/// A validated op.
#[derive(Debug)]
pub enum Op {
    /// Publish a message (broadcast, or direct with `to`).
    Pub {
        /// Target room, if not the URL's.
        room: Option<String>,
        /// Message type.
        kind: String,
        /// Payload.
        data: Payload,
        /// Direct recipient.
        to: Option<String>,
        /// Topic.
        topic: Option<String>,
        /// Whether to retain the value on the topic.
        retain: bool,
        /// Lifetime of a retained value, in seconds.
        ttl: Option<u64>,
        /// Idempotency key, as sent (the hub checks it).
        key: Option<String>,
    },
    /// Join a room, optionally resuming after an id.
    Join {
        /// The room.
        room: Option<String>,
        /// Resume point.
        since: Option<String>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: Option<String>,
    },
    /// Set the presence state.
    State {
        /// The room.
        room: Option<String>,
        /// The new state.
        state: Payload,
    },
    /// Set (with a topic) or cancel (without) the connection's will for a room:
    /// a retained publish made if the connection ends without `leave`.
    Will {
        /// The room.
        room: Option<String>,
        /// The topic to set; `None` cancels the will.
        topic: Option<String>,
        /// The value to set.
        data: Payload,
        /// Seconds to wait; the will fires only if no session of the same user
        /// joined the room meanwhile.
        after: Option<f64>,
    },
    /// Replace the session's token.
    Refresh {
        /// The new token.
        token: String,
    },
    /// Liveness check; answered by `pong`.
    Ping,
}

/// An op that could not be understood, with the `ref` to answer it by when one was found.
#[derive(Debug)]
pub struct OpError {
    /// The op's `ref`, if it had one.
    pub reference: Option<Box<RawValue>>,
    /// What was wrong.
    pub message: String,
}

/// Parses one WebSocket text frame into an op and its `ref`.
pub fn parse_op(text: &str) -> Result<(Op, Option<Box<RawValue>>), OpError> {
    let raw: RawOp = serde_json::from_str(text).map_err(|e| OpError {
        reference: serde_json::from_str::<RefOnly>(text)
            .ok()
            .and_then(|r| r.reference),
        message: format!("malformed op: {e}"),
    })?;
    let reference = raw.reference;
    let fail = |reference: Option<Box<RawValue>>, message: String| OpError { reference, message };
    let op = match raw.op.as_str() {
        "pub" => {
            // A message without `data` is a mistake more often than a wish to
            // send `null`: refuse it, and let `"data": null` say null.
            let Some(data) = raw.data.as_deref().map(payload_from_raw) else {
                return Err(fail(
                    reference,
                    "pub needs data (any JSON value; send \"data\": null for none)".into(),
                ));
            };
            Op::Pub {
                room: raw.room,
                kind: raw.kind.unwrap_or_else(|| "message".to_owned()),
                data,
                to: raw.to,
                topic: raw.topic,
                retain: raw.retain.unwrap_or(false),
                ttl: raw.ttl,
                key: raw.idempotency_key,
            }
        }
        "join" => Op::Join {
            room: raw.room,
            since: raw.since,
        },
        "leave" => Op::Leave { room: raw.room },
        "state" => Op::State {
            room: raw.room,
            state: raw
                .state
                .as_deref()
                .map(payload_from_raw)
                .unwrap_or_else(null_payload),
        },
        "will" => Op::Will {
            room: raw.room,
            topic: raw.topic,
            data: raw
                .data
                .as_deref()
                .map(payload_from_raw)
                .unwrap_or_else(null_payload),
            after: raw.after,
        },
        "refresh" => match raw.token {
            Some(token) => Op::Refresh { token },
            None => return Err(fail(reference, "refresh needs a token".into())),
        },
        "ping" => Op::Ping,
        other => {
            return Err(fail(reference, format!("unknown op {other:?}")));
        }
    };
    Ok((op, reference))
}

/// A WebSocket close code of the contract, defined once here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Normal close.
    Normal,
    /// Relay going away (shutdown, deploy).
    GoingAway,
    /// Policy violation: a session refused for a reason without a code of
    /// its own.
    Protocol,
    /// The client broke WebSocket framing (RFC 6455 protocol error).
    ProtocolError,
    /// A text message or close reason that is not UTF-8 (invalid payload data).
    InvalidPayload,
    /// Message too big.
    TooBig,
    /// Internal error.
    Internal,
    /// Token missing, invalid or expired.
    Unauthorized,
    /// Forbidden.
    Forbidden,
    /// Idle timeout.
    IdleTimeout,
    /// Replaced by a newer connection of the same peer.
    Replaced,
    /// Rate limited.
    RateLimited,
    /// Slow consumer: fell too far behind.
    SlowConsumer,
}

impl CloseCode {
    /// Every close code, for the shared fixture test.
    pub const ALL: [CloseCode; 13] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::Protocol,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Unauthorized,
        CloseCode::Forbidden,
        CloseCode::IdleTimeout,
        CloseCode::Replaced,
        CloseCode::RateLimited,
        CloseCode::SlowConsumer,
    ];

    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Protocol => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Unauthorized => 4401,
            CloseCode::Forbidden => 4403,
            CloseCode::IdleTimeout => 4408,
            CloseCode::Replaced => 4409,
            CloseCode::RateLimited => 4429,
            CloseCode::SlowConsumer => 4508,
        }
    }

    /// A short stable name, used in logs and the fixtures table.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::Protocol => "protocol_violation",
            CloseCode::TooBig => "message_too_big",
            CloseCode::Internal => "internal_error",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::Replaced => "replaced",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::SlowConsumer => "slow_consumer",
        }
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

    #[test]
    fn payloads_are_one_line() {
        let p = payload_from_json("{\n  \"a\" : [1, 2],\n \"b\": \"x \\\" y\\n\"\n}");
        assert_eq!(
            p.map(|p| p.get().to_owned()).ok().as_deref(),
            Some(r#"{"a":[1,2],"b":"x \" y\n"}"#)
        );
        assert!(payload_from_json("{").is_err());
        assert_eq!(payload_from_text("hi\n").get(), r#""hi\n""#);
    }

    #[test]
    fn sse_frame_has_id_event_and_one_data_line() {
        let msg = Message {
            room: RoomName::parse("r").unwrap_or_else(|_| unreachable!()),
            id: EventId { ms: 5, seq: 1 },
            ts: 5,
            from: Arc::from("a.1"),
            kind: Arc::from("chat"),
            data: payload_from_text("hi"),
            to: None,
            topic: None,
        };
        let ev = Event::message(&msg);
        let frame = ev.sse_frame();
        assert_eq!(
            std::str::from_utf8(&frame).ok(),
            Some(
                "id: 5-1\nevent: message\ndata: {\"kind\":\"message\",\"room\":\"r\",\"id\":\"5-1\",\"ts\":5,\"from\":\"a.1\",\"type\":\"chat\",\"data\":\"hi\"}\n\n"
            )
        );
    }

    #[test]
    fn ops_parse_with_refs() {
        let (op, r) = parse_op(r#"{"op":"pub","ref":7,"data":{"x":1}}"#)
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert!(matches!(op, Op::Pub { ref kind, .. } if kind == "message"));
        assert_eq!(r.map(|r| r.get().to_owned()).as_deref(), Some("7"));
        let err = parse_op(r#"{"op":"nope","ref":"a"}"#).err();
        assert_eq!(
            err.and_then(|e| e.reference)
                .map(|r| r.get().to_owned())
                .as_deref(),
            Some("\"a\"")
        );
        assert!(parse_op("not json").is_err());
    }

    #[test]
    fn pub_without_data_is_refused_and_explicit_null_is_kept() {
        let err = parse_op(r#"{"op":"pub","ref":1}"#).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.message.contains("pub needs data")),
            "{:?}",
            err.map(|e| e.message)
        );
        let (op, _) =
            parse_op(r#"{"op":"pub","data":null}"#).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(matches!(op, Op::Pub { ref data, .. } if data.get() == "null"));
    }

    /// Every event kind's bytes, frozen: the event type may change shape
    /// inside, never on the wire.
    #[test]
    fn every_event_kind_keeps_its_bytes() {
        let room = RoomName::parse("r").unwrap_or_else(|_| unreachable!());
        let me = PeerInfo {
            id: Arc::from("u.1"),
            user: Arc::from("u"),
            meta: payload_from_text("m"),
            state: null_payload(),
        };
        let peer_id: Arc<str> = Arc::from("u.1");
        let reference = payload_from_json("7").unwrap_or_else(|_| unreachable!());
        let status = Status {
            room: room.clone(),
            id: Some(EventId { ms: 9, seq: 2 }),
            topic: Arc::from("t"),
            data: payload_from_text("on"),
            ts: 9,
            from: Arc::from("u.1"),
            retained: false,
        };
        let direct = Message {
            room: room.clone(),
            id: EventId { ms: 5, seq: 1 },
            ts: 5,
            from: Arc::from("a.1"),
            kind: Arc::from("chat"),
            data: payload_from_text("hi"),
            to: Some(Arc::from("u.1")),
            topic: Some(Arc::from("t")),
        };
        let join = Event::join(&room, &me);
        let events = [
            Event::welcome(Some(&room), &me, &PeerList::Own(vec![me.clone()]), None),
            Event::welcome(
                None,
                &me,
                &PeerList::Shared(payload_from_text("x")),
                Some(EventId { ms: 3, seq: 0 }),
            ),
            Event::message(&direct),
            join.clone(),
            Event::leave(&room, &peer_id, LeaveReason::Expired),
            Event::state(&room, &peer_id, &payload_from_text("s")),
            Event::presence(&room, &[join]),
            Event::status(&status),
            Event::status(&Status {
                id: None,
                retained: true,
                ..status.clone()
            }),
            Event::reset(&room, "gap"),
            Event::expiring(100, 30),
            Event::ack(&reference, Some(EventId { ms: 1, seq: 0 })),
            Event::ack(&reference, None),
            Event::pong(Some(&reference)),
            Event::pong(None),
            Event::error("forbidden", "no", Some(&reference), Some(3)),
            Event::error("internal", "x", None, None),
        ];
        let got: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.sse_frame()).into_owned())
            .collect();
        const EXPECTED: &[&str] = &[
            "event: welcome\ndata: {\"kind\":\"welcome\",\"room\":\"r\",\"peer\":{\"id\":\"u.1\",\"user\":\"u\",\"meta\":\"m\"},\"peers\":[{\"id\":\"u.1\",\"user\":\"u\",\"meta\":\"m\",\"state\":null}],\"last_id\":null}\n\n",
            "event: welcome\ndata: {\"kind\":\"welcome\",\"room\":null,\"peer\":{\"id\":\"u.1\",\"user\":\"u\",\"meta\":\"m\"},\"peers\":\"x\",\"last_id\":\"3-0\"}\n\n",
            "event: message\ndata: {\"kind\":\"message\",\"room\":\"r\",\"id\":\"5-1\",\"ts\":5,\"from\":\"a.1\",\"type\":\"chat\",\"data\":\"hi\",\"to\":\"u.1\",\"topic\":\"t\"}\n\n",
            "event: join\ndata: {\"kind\":\"join\",\"room\":\"r\",\"peer\":{\"id\":\"u.1\",\"user\":\"u\",\"meta\":\"m\",\"state\":null}}\n\n",
            "event: leave\ndata: {\"kind\":\"leave\",\"room\":\"r\",\"peer\":{\"id\":\"u.1\"},\"reason\":\"expired\"}\n\n",
            "event: state\ndata: {\"kind\":\"state\",\"room\":\"r\",\"peer\":{\"id\":\"u.1\"},\"state\":\"s\"}\n\n",
            "event: presence\ndata: {\"kind\":\"presence\",\"room\":\"r\",\"events\":[{\"kind\":\"join\",\"room\":\"r\",\"peer\":{\"id\":\"u.1\",\"user\":\"u\",\"meta\":\"m\",\"state\":null}}]}\n\n",
            "id: 9-2\nevent: status\ndata: {\"kind\":\"status\",\"room\":\"r\",\"id\":\"9-2\",\"topic\":\"t\",\"data\":\"on\",\"ts\":9,\"from\":\"u.1\",\"retained\":false}\n\n",
            "event: status\ndata: {\"kind\":\"status\",\"room\":\"r\",\"topic\":\"t\",\"data\":\"on\",\"ts\":9,\"from\":\"u.1\",\"retained\":true}\n\n",
            "event: reset\ndata: {\"kind\":\"reset\",\"room\":\"r\",\"reason\":\"gap\"}\n\n",
            "event: expiring\ndata: {\"kind\":\"expiring\",\"expires_at\":100,\"in\":30}\n\n",
            "event: ack\ndata: {\"kind\":\"ack\",\"ref\":7,\"id\":\"1-0\"}\n\n",
            "event: ack\ndata: {\"kind\":\"ack\",\"ref\":7}\n\n",
            "event: pong\ndata: {\"kind\":\"pong\",\"ref\":7}\n\n",
            "event: pong\ndata: {\"kind\":\"pong\",\"ref\":null}\n\n",
            "event: error\ndata: {\"kind\":\"error\",\"code\":\"forbidden\",\"message\":\"no\",\"ref\":7,\"retry_after\":3}\n\n",
            "event: error\ndata: {\"kind\":\"error\",\"code\":\"internal\",\"message\":\"x\"}\n\n",
        ];
        assert_eq!(got, EXPECTED);
        // What travels between instances reads back with the same routing.
        for event in events.iter().filter(|e| {
            matches!(
                e.kind(),
                EventKind::Message
                    | EventKind::Join
                    | EventKind::Leave
                    | EventKind::State
                    | EventKind::Status
            )
        }) {
            let back = Event::from_json(event.json().to_owned());
            let back = back.as_deref();
            assert_eq!(back.map(Event::kind), Some(event.kind()));
            assert_eq!(back.and_then(Event::id), event.id());
            assert_eq!(back.and_then(Event::subject), event.subject());
            assert_eq!(back.and_then(Event::to), event.to());
            assert_eq!(back.and_then(Event::topic), event.topic());
        }
    }
}
