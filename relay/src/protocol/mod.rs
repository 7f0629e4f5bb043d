//! The wire contract shared by every transport: the names a client sends
//! (rooms, event ids, message types, idempotency keys), payloads, the ops
//! clients send and the one [`Publish`] a `pub` or a POST becomes, the
//! events the relay sends (serialized once, shared by every recipient), the
//! control messages sessions receive but never write, the close codes, and
//! the WebSocket frames that carry events.

mod close;
mod control;
mod event;
mod message;
mod names;
mod op;
mod payload;
mod publish;
pub mod wire;

pub use crate::clock::now_ms;
pub use close::CloseCode;
pub use control::{Control, Envelope};
pub use event::{Event, EventKind};
pub use message::{LeaveReason, Message, PeerInfo, PeerList, Status};
pub use names::{EventId, IdempotencyKey, MAX_KEY_LEN, NameError, RoomName, check_message_type};
pub use op::{Op, OpError, RawOp, parse_op};
pub use payload::{Payload, null_payload, payload_from_json, payload_from_raw, payload_from_text};
pub use publish::Publish;
