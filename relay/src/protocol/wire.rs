//! Server frames on the wire: the WebSocket frames the relay writes (RFC
//! 6455: never masked, FIN set), an event's built once and shared by every
//! socket. Part of the protocol, which builds each event's frame here; the
//! WebSocket transport decodes client frames with the same opcodes.

use bytes::{BufMut, Bytes, BytesMut};

/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const BINARY: u8 = 0x2;
/// Opcode of a continuation frame.
pub const CONTINUATION: u8 = 0x0;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;
/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: usize = 125;

/// The header of a server frame (never masked) with `opcode` and `len` bytes
/// of payload, FIN set.
fn header(opcode: u8, len: usize, out: &mut BytesMut) {
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    header(opcode, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A complete text frame carrying `text`.
pub fn text(text: &str) -> Bytes {
    frame(TEXT, text.as_bytes())
}

/// A ping frame with an empty payload.
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | PING, 0])
}

/// A pong frame echoing a ping's payload.
pub fn pong(payload: &[u8]) -> Bytes {
    frame(PONG, &payload[..payload.len().min(MAX_CONTROL)])
}

/// A close frame with no status code (the echo of a client's empty close).
pub fn close_empty() -> Bytes {
    Bytes::from_static(&[0x80 | CLOSE, 0])
}

/// A close frame with `code` and a reason cut to fit a control frame.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(CLOSE, &payload)
}
