//! A publish: the one shape a message has from the edge (a `pub` op, a
//! POST) through the hub, which checks it and adds its sender, to the
//! broker, which gives it an id and a time and makes it a [`Message`].

use std::sync::Arc;

use super::{EventId, IdempotencyKey, Message, Payload, RoomName};

/// A message to publish, as the client asked for it.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Application message type (`message` unless the client names one).
    pub kind: Arc<str>,
    /// Payload.
    pub data: Payload,
    /// Direct recipient peer id.
    pub to: Option<Arc<str>>,
    /// Topic (checked by the hub).
    pub topic: Option<Arc<str>>,
    /// Store as the topic's retained value instead of sending a message.
    pub retain: bool,
    /// Lifetime of a retained value, in seconds.
    pub ttl: Option<u64>,
    /// Makes a retry return the first attempt's id and deliver nothing.
    pub key: Option<IdempotencyKey>,
}

impl Publish {
    /// A broadcast of `data` with the default type and nothing else set.
    pub fn data(data: Payload) -> Publish {
        Publish {
            kind: Arc::from("message"),
            data,
            to: None,
            topic: None,
            retain: false,
            ttl: None,
            key: None,
        }
    }

    /// The message this publish becomes in `room`, sent by `from`, once the
    /// broker gave it `id` at `ts`.
    pub fn into_message(self, room: RoomName, id: EventId, ts: u64, from: Arc<str>) -> Message {
        Message {
            room,
            id,
            ts,
            from,
            kind: self.kind,
            data: self.data,
            to: self.to,
            topic: self.topic,
        }
    }
}
