//! Control messages: instructions for one session, carried between relay
//! instances on a room's channel as events are, but a type of their own with
//! no frame, so what they hold (a token) can never be written to a client.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Event;

/// An instruction for the session of one peer, wherever it is connected.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Control {
    /// A new token for the session of peer `to` (an SSE session's refresh,
    /// made by POST, perhaps on another instance).
    Refresh {
        /// The peer whose session takes the token.
        to: Arc<str>,
        /// The new token, verified again by the session.
        token: String,
    },
}

impl Control {
    /// The peer the instruction is for.
    pub fn to(&self) -> &Arc<str> {
        match self {
            Control::Refresh { to, .. } => to,
        }
    }

    /// The JSON text that carries it between instances.
    pub fn json(&self) -> String {
        // A struct of strings always serializes; an empty text is refused by
        // the receiving side and logged there.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Tokens are secrets: a control's debug form names the peer, never the token.
impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Refresh { to, .. } => f
                .debug_struct("Refresh")
                .field("to", to)
                .field("token", &"[redacted]")
                .finish(),
        }
    }
}

/// What reaches a session from outside: an event for its client, or a
/// control message for the session itself. Also what a room's channel
/// carries between instances.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// An event to write to the client.
    Event(Arc<Event>),
    /// An instruction for the session (boxed: rare, and larger than an event's pointer).
    Control(Box<Control>),
}

impl Envelope {
    /// Reads what another instance published on a room's channel; `None`
    /// when the text is neither an event nor a control message.
    pub fn from_json(json: String) -> Option<Envelope> {
        // Events first, read once: they are nearly all the traffic, and a
        // control message's `kind` is no event kind.
        match Event::read(json) {
            Ok(event) => Some(Envelope::Event(event)),
            Err(json) => serde_json::from_str(&json)
                .ok()
                .map(|control| Envelope::Control(Box::new(control))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_travels_as_before_and_never_shows_its_token() {
        let control = Control::Refresh {
            to: Arc::from("u.1"),
            token: "secret.jwt".into(),
        };
        let json = control.json();
        assert_eq!(
            json,
            r#"{"kind":"refresh","to":"u.1","token":"secret.jwt"}"#
        );
        assert!(!format!("{control:?}").contains("secret"));
        match Envelope::from_json(json) {
            Some(Envelope::Control(back)) => assert_eq!(*back, control),
            other => panic!("not a control: {other:?}"),
        }
        assert!(Event::from_json(control.json()).is_none());
    }
}
