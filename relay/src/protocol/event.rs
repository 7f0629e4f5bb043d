//! The events the relay sends. What each kind says is one variant of
//! [`Body`], serialized with its `kind` tag first; the bytes are made once and
//! every recipient shares them and the frames built from them.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{EventId, LeaveReason, Message, PeerInfo, PeerList, RoomName, Status};

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
}

impl EventKind {
    /// Every kind, so that a name is read back through [`EventKind::as_str`],
    /// the one table of names.
    pub const ALL: [EventKind; 12] = [
        EventKind::Welcome,
        EventKind::Message,
        EventKind::Status,
        EventKind::Join,
        EventKind::Leave,
        EventKind::State,
        EventKind::Presence,
        EventKind::Ack,
        EventKind::Error,
        EventKind::Reset,
        EventKind::Pong,
        EventKind::Expiring,
    ];

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
        }
    }

    /// The kind with wire name `name`.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// What an event says, one variant per kind (but `presence`, which embeds
/// other events' bytes as they are). Serialized as the event's JSON: the
/// `kind` tag first, then the fields in the contract's order.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Body<'a> {
    Welcome {
        room: Option<&'a RoomName>,
        peer: Me<'a>,
        peers: &'a PeerList,
        last_id: Option<EventId>,
    },
    Message(&'a Message),
    Status(&'a Status),
    Join {
        room: &'a RoomName,
        peer: &'a PeerInfo,
    },
    Leave {
        room: &'a RoomName,
        peer: PeerRef<'a>,
        reason: LeaveReason,
    },
    State {
        room: &'a RoomName,
        peer: PeerRef<'a>,
        state: &'a RawValue,
    },
    Ack {
        #[serde(rename = "ref")]
        reference: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<EventId>,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    Reset {
        room: &'a RoomName,
        reason: &'a str,
    },
    Pong {
        #[serde(rename = "ref")]
        reference: Option<&'a RawValue>,
    },
    Expiring {
        expires_at: u64,
        #[serde(rename = "in")]
        seconds_left: u64,
    },
}

/// The joining peer in its own `welcome`: no state yet.
#[derive(Serialize)]
struct Me<'a> {
    id: &'a str,
    user: &'a str,
    meta: &'a RawValue,
}

/// A peer named by its id alone.
#[derive(Serialize)]
struct PeerRef<'a> {
    id: &'a Arc<str>,
}

impl Body<'_> {
    fn kind(&self) -> EventKind {
        match self {
            Body::Welcome { .. } => EventKind::Welcome,
            Body::Message(_) => EventKind::Message,
            Body::Status(_) => EventKind::Status,
            Body::Join { .. } => EventKind::Join,
            Body::Leave { .. } => EventKind::Leave,
            Body::State { .. } => EventKind::State,
            Body::Ack { .. } => EventKind::Ack,
            Body::Error { .. } => EventKind::Error,
            Body::Reset { .. } => EventKind::Reset,
            Body::Pong { .. } => EventKind::Pong,
            Body::Expiring { .. } => EventKind::Expiring,
        }
    }

    /// Who the event is for and what it is about, as sessions route it.
    fn route(&self) -> Route {
        match self {
            Body::Message(msg) => Route {
                id: Some(msg.id),
                subject: None,
                to: msg.to.clone(),
                topic: msg.topic.clone(),
            },
            Body::Status(status) => Route {
                id: status.id,
                topic: Some(status.topic.clone()),
                ..Route::default()
            },
            Body::Join { peer, .. } => Route {
                subject: Some(peer.id.clone()),
                ..Route::default()
            },
            Body::Leave { peer, .. } | Body::State { peer, .. } => Route {
                subject: Some(peer.id.clone()),
                ..Route::default()
            },
            _ => Route::default(),
        }
    }
}

/// An event's routing: read from its body when built, from its JSON when it
/// arrives from another relay instance.
#[derive(Debug, Default)]
struct Route {
    /// The id of a message or live topic value.
    id: Option<EventId>,
    /// The peer a presence event is about, so a session can skip its own echo.
    subject: Option<Arc<str>>,
    /// The recipient of a direct message.
    to: Option<Arc<str>>,
    /// The topic of a `status` event or a topic message, for filtered feeds.
    topic: Option<Arc<str>>,
}

/// One event, serialized once; every recipient shares its bytes.
#[derive(Debug)]
pub struct Event {
    kind: EventKind,
    route: Route,
    json: String,
    sse: OnceLock<Bytes>,
    ws: OnceLock<Bytes>,
}

/// The fields of an event's JSON that routing needs, read back from its text.
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
    fn new(body: &Body<'_>) -> Arc<Event> {
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
        Event::with_json(body.kind(), body.route(), json)
    }

    fn with_json(kind: EventKind, route: Route, json: String) -> Arc<Event> {
        Arc::new(Event {
            kind,
            route,
            json,
            sse: OnceLock::new(),
            ws: OnceLock::new(),
        })
    }

    /// Rebuilds an event from its JSON text (as published by another relay
    /// instance); `None` when the text is not an event.
    pub fn from_json(json: String) -> Option<Arc<Event>> {
        Event::read(json).ok()
    }

    /// [`Event::from_json`], giving the text back when it is not an event,
    /// for the caller to read as something else.
    pub(super) fn read(json: String) -> Result<Arc<Event>, String> {
        match Event::route_of(&json) {
            Some((kind, route)) => Ok(Event::with_json(kind, route, json)),
            None => Err(json),
        }
    }

    /// The kind and routing of an event's JSON text; `None` when it is not
    /// an event.
    fn route_of(json: &str) -> Option<(EventKind, Route)> {
        let routing: Routing<'_> = serde_json::from_str(json).ok()?;
        let kind = EventKind::from_name(routing.kind)?;
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
        let route = Route {
            id,
            subject,
            to: routing.to.map(Arc::from),
            topic: routing.topic.map(Arc::from),
        };
        Some((kind, route))
    }

    /// True for events kept in history (broadcast messages and live topic
    /// updates): only these are resume points.
    pub fn in_history(&self) -> bool {
        match self.kind {
            EventKind::Message => self.route.to.is_none() && self.route.id.is_some(),
            EventKind::Status => self.route.id.is_some(),
            _ => false,
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The event's id, for events kept in history (and direct messages).
    pub fn id(&self) -> Option<EventId> {
        self.route.id
    }

    /// The peer a presence event is about.
    pub fn subject(&self) -> Option<&str> {
        self.route.subject.as_deref()
    }

    /// The recipient of a direct message.
    pub fn to(&self) -> Option<&str> {
        self.route.to.as_deref()
    }

    /// The topic of a `status` event or of a message published to a topic.
    pub fn topic(&self) -> Option<&str> {
        self.route.topic.as_deref()
    }

    /// The recipient of a direct message, shared (no copy of the id).
    pub fn recipient(&self) -> Option<Arc<str>> {
        self.route.to.clone()
    }

    /// The event's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The complete WebSocket text frame, built at most once and shared by
    /// every socket the event goes to.
    pub fn ws_frame(&self) -> Bytes {
        self.ws
            .get_or_init(|| super::wire::text(&self.json))
            .clone()
    }

    /// The complete SSE frame (`id:`, `event:`, `data:`), built at most once.
    /// Only events kept in history carry `id:`, so a client's `Last-Event-ID`
    /// is always a valid resume point.
    pub fn sse_frame(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let mut frame = String::with_capacity(self.json.len() + 48);
                if let Some(id) = self.route.id.filter(|_| self.in_history()) {
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
        Event::new(&Body::Message(msg))
    }

    /// A `welcome` event: the session's own peer, the others, and the room's last id.
    pub fn welcome(
        room: Option<&RoomName>,
        me: &PeerInfo,
        peers: &PeerList,
        last_id: Option<EventId>,
    ) -> Arc<Event> {
        let peer = Me {
            id: &me.id,
            user: &me.user,
            meta: &me.meta,
        };
        Event::new(&Body::Welcome {
            room,
            peer,
            peers,
            last_id,
        })
    }

    /// A `join` event for `peer`.
    pub fn join(room: &RoomName, peer: &PeerInfo) -> Arc<Event> {
        Event::new(&Body::Join { room, peer })
    }

    /// A `leave` event for the peer `peer_id`.
    pub fn leave(room: &RoomName, peer_id: &Arc<str>, reason: LeaveReason) -> Arc<Event> {
        let peer = PeerRef { id: peer_id };
        Event::new(&Body::Leave { room, peer, reason })
    }

    /// A `state` event: `peer_id` set its presence state.
    pub fn state(room: &RoomName, peer_id: &Arc<str>, state: &RawValue) -> Arc<Event> {
        let peer = PeerRef { id: peer_id };
        Event::new(&Body::State { room, peer, state })
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
        Event::with_json(EventKind::Presence, Route::default(), json)
    }

    /// A `status` event: a topic's value changed (live, with an id) or is
    /// replayed from the store (`retained: true`, no id). `data` null = cleared.
    pub fn status(status: &Status) -> Arc<Event> {
        Event::new(&Body::Status(status))
    }

    /// A `reset`: what was missed cannot be replayed; resync from what follows.
    pub fn reset(room: &RoomName, reason: &str) -> Arc<Event> {
        Event::new(&Body::Reset { room, reason })
    }

    /// An `expiring` warning: the session's token stops being accepted at
    /// `expires_at` (Unix seconds) unless a new one arrives.
    pub fn expiring(expires_at: u64, seconds_left: u64) -> Arc<Event> {
        Event::new(&Body::Expiring {
            expires_at,
            seconds_left,
        })
    }

    /// An `ack` for an op that carried `ref`.
    pub fn ack(reference: &RawValue, id: Option<EventId>) -> Arc<Event> {
        Event::new(&Body::Ack { reference, id })
    }

    /// A `pong` answering `ping`.
    pub fn pong(reference: Option<&RawValue>) -> Arc<Event> {
        Event::new(&Body::Pong { reference })
    }

    /// An `error` event with one of the contract's codes.
    pub fn error(
        code: &str,
        message: &str,
        reference: Option<&RawValue>,
        retry_after: Option<u64>,
    ) -> Arc<Event> {
        Event::new(&Body::Error {
            code,
            message,
            reference,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{null_payload, payload_from_json, payload_from_text};

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
