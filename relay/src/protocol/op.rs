//! The ops clients send over WebSocket, parsed and checked into [`Op`].

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{IdempotencyKey, Payload, Publish, null_payload, payload_from_raw};

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
        /// What to publish, as the hub and the broker take it.
        publish: Publish,
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
            let key = match raw.idempotency_key.as_deref().map(IdempotencyKey::parse) {
                Some(Err(e)) => return Err(fail(reference, e.0)),
                Some(Ok(key)) => Some(key),
                None => None,
            };
            let publish = Publish {
                kind: raw.kind.map_or_else(|| Arc::from("message"), Arc::from),
                data,
                to: raw.to.map(Arc::from),
                topic: raw.topic.map(Arc::from),
                retain: raw.retain.unwrap_or(false),
                ttl: raw.ttl,
                key,
            };
            Op::Pub {
                room: raw.room,
                publish,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse_with_refs() {
        let (op, r) = parse_op(r#"{"op":"pub","ref":7,"data":{"x":1}}"#)
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert!(matches!(op, Op::Pub { ref publish, .. } if &*publish.kind == "message"));
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
        assert!(matches!(op, Op::Pub { ref publish, .. } if publish.data.get() == "null"));
    }
}
