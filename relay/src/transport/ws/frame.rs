//! WebSocket framing (RFC 6455), both directions, without a per-socket write
//! buffer: server frames are built once per event and shared; client frames
//! are decoded from whatever the socket gave, holding only the bytes of a frame
//! that has not fully arrived.

use bytes::Bytes;

use crate::protocol::wire::{BINARY, CLOSE, CONTINUATION, MAX_CONTROL, PING, PONG, TEXT};
pub use crate::protocol::wire::{close, close_empty, ping, pong, text};

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;
/// A decoder keeps an emptied buffer this large for the next frame; a larger
/// one (after a big op) is given back, so an idle socket holds little.
const KEEP_CAPACITY: usize = 512;

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (an op).
    Text(String),
    /// A binary message (not part of the protocol).
    Binary,
    /// A ping, whose payload the pong must echo.
    Ping(Bytes),
    /// A pong (the answer to our ping).
    Pong,
    /// The client's close frame, with its status code when it carried one
    /// (already checked: a code a peer may send, and a UTF-8 reason).
    Close(Option<u16>),
}

/// Why the client's frames cannot be read; each maps to a close code.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frames break RFC 6455's framing rules (close 1002).
    #[error("{0}")]
    Protocol(&'static str),
    /// A text message or a close reason is not UTF-8 (close 1007), found at
    /// the first invalid byte, across fragments too.
    #[error("{0}")]
    InvalidUtf8(&'static str),
    /// A frame or message is over the size limit (close 1009).
    #[error("frame over the message size limit")]
    TooLarge,
}

/// True for a status code a peer may send in a close frame (RFC 6455 §7.4:
/// the defined codes minus the reserved 1004, 1005, 1006 and 1015; the IANA
/// registered 1012 to 1014; and 3000 to 4999 for libraries and applications).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Decodes client frames into messages: checks masking, reserved bits,
/// control frame rules and fragmentation, and bounds every frame and message.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// Bytes received and not yet consumed (at most one partial frame).
    pending: Vec<u8>,
    /// A fragmented message being gathered (boxed: rare, and kept out of
    /// every idle socket).
    fragments: Option<Box<Fragmented>>,
}

/// A fragmented message being gathered.
#[derive(Debug)]
struct Fragmented {
    opcode: u8,
    /// The bytes so far.
    gathered: Vec<u8>,
    /// How many bytes of a text message are known to be UTF-8, so each
    /// fragment is checked once, and a bad byte is caught when it arrives.
    checked: usize,
}

/// One frame, parsed out of the pending bytes.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Decoder {
    /// A decoder that refuses frames and messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            pending: Vec::new(),
            fragments: None,
        }
    }

    /// Takes bytes read from the socket; call [`Decoder::next`] until it gives
    /// `None` before feeding more.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete message, `None` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some(frame) = self.take_frame()? else {
                if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
                    self.pending = Vec::new();
                }
                return Ok(None);
            };
            if let Some(message) = self.assemble(frame)? {
                return Ok(Some(message));
            }
        }
    }

    /// Cuts one whole frame off the pending bytes, unmasked.
    fn take_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let buf = &self.pending;
        if buf.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (buf[0], buf[1]);
        if first & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        if second & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let (len, mut at) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(b);
                    (u64::from_be_bytes(raw), 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode >= CLOSE && (!fin || len > MAX_CONTROL as u64) {
            return Err(FrameError::Protocol("bad control frame"));
        }
        let len = usize::try_from(len).map_err(|_| FrameError::TooLarge)?;
        if len > self.max_message {
            return Err(FrameError::TooLarge);
        }
        let Some(mask) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        at += 4;
        debug_assert!(at <= MAX_HEADER);
        // The buffer grows with the bytes that arrive, never with the length a
        // header declares: a 14-byte header reserves nothing.
        let Some(masked) = buf.get(at..at + len) else {
            return Ok(None);
        };
        let payload = masked
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        self.pending.drain(..at + len);
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
        }))
    }

    /// Applies one frame to the message being gathered.
    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, FrameError> {
        match frame.opcode {
            PING => Ok(Some(Incoming::Ping(Bytes::from(frame.payload)))),
            PONG => Ok(Some(Incoming::Pong)),
            CLOSE => close_status(&frame.payload).map(|code| Some(Incoming::Close(code))),
            TEXT | BINARY => {
                if self.fragments.is_some() {
                    return Err(FrameError::Protocol("new message inside a fragmented one"));
                }
                if frame.fin {
                    return finish(frame.opcode, frame.payload).map(Some);
                }
                let checked = if frame.opcode == TEXT {
                    utf8_prefix(&frame.payload, 0)?
                } else {
                    0
                };
                self.fragments = Some(Box::new(Fragmented {
                    opcode: frame.opcode,
                    gathered: frame.payload,
                    checked,
                }));
                Ok(None)
            }
            CONTINUATION => {
                let Some(mut message) = self.fragments.take() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                if message.gathered.len() + frame.payload.len() > self.max_message {
                    return Err(FrameError::TooLarge);
                }
                message.gathered.extend_from_slice(&frame.payload);
                if frame.fin {
                    return finish(message.opcode, message.gathered).map(Some);
                }
                if message.opcode == TEXT {
                    message.checked = utf8_prefix(&message.gathered, message.checked)?;
                }
                self.fragments = Some(message);
                Ok(None)
            }
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }
}

fn finish(opcode: u8, payload: Vec<u8>) -> Result<Incoming, FrameError> {
    if opcode == BINARY {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| FrameError::InvalidUtf8("text message is not UTF-8"))
}

/// Checks `bytes` from `from` on as UTF-8 that may stop inside a character
/// (more fragments follow); returns how far it is known good, or fails at the
/// first byte that no continuation can make valid.
fn utf8_prefix(bytes: &[u8], from: usize) -> Result<usize, FrameError> {
    match std::str::from_utf8(&bytes[from..]) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() => Ok(from + e.valid_up_to()),
        Err(_) => Err(FrameError::InvalidUtf8("text message is not UTF-8")),
    }
}

/// The status code of a client's close frame: none for an empty payload;
/// otherwise two bytes of a code a peer may send, then a UTF-8 reason.
fn close_status(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(FrameError::Protocol(
                    "close frame with an invalid status code",
                ));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8("close reason is not UTF-8"));
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    fn all(decoder: &mut Decoder) -> Result<Vec<Incoming>, FrameError> {
        let mut out = Vec::new();
        while let Some(m) = decoder.next()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        assert_eq!(&text("hi")[..], b"\x81\x02hi");
        let mid = text(&"x".repeat(300));
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = text(&"x".repeat(70_000));
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(&big[2..10], &70_000u64.to_be_bytes());
        assert_eq!(&close(1000, "bye")[..], b"\x88\x05\x03\xe8bye");
        assert_eq!(close(4401, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn decodes_byte_by_byte_and_in_one_read() {
        let mut wire = client(0x81, b"{\"op\":\"ping\"}");
        wire.extend(client(0x89, b"p"));
        wire.extend(client(0x81, &vec![b'a'; 70_000]));
        let expected = vec![
            Incoming::Text("{\"op\":\"ping\"}".into()),
            Incoming::Ping(Bytes::from_static(b"p")),
            Incoming::Text("a".repeat(70_000)),
        ];
        let mut whole = Decoder::new(100_000);
        whole.feed(&wire);
        assert_eq!(all(&mut whole), Ok(expected));

        let mut slow = Decoder::new(100_000);
        let mut got = Vec::new();
        for b in &wire {
            slow.feed(std::slice::from_ref(b));
            got.extend(all(&mut slow).unwrap_or_default());
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], Incoming::Text("a".repeat(70_000)));
        assert!(slow.pending.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn gathers_fragments_around_control_frames() {
        let mut d = Decoder::new(100);
        d.feed(&client(0x01, b"hel"));
        d.feed(&client(0x8A, b""));
        d.feed(&client(0x80, b"lo"));
        assert_eq!(
            all(&mut d),
            Ok(vec![Incoming::Pong, Incoming::Text("hello".into())])
        );
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                b"\x81\x02hi".to_vec(),
                FrameError::Protocol("client frames must be masked"),
            ),
            (
                client(0xC1, b"x"),
                FrameError::Protocol("reserved bits set"),
            ),
            (client(0x09, b""), FrameError::Protocol("bad control frame")),
            (
                client(0x89, &[0; 126]),
                FrameError::Protocol("bad control frame"),
            ),
            (
                client(0x80, b"x"),
                FrameError::Protocol("continuation without a message"),
            ),
            (client(0x83, b"x"), FrameError::Protocol("unknown opcode")),
            (
                client(0x81, &[0xff, 0xfe]),
                FrameError::InvalidUtf8("text message is not UTF-8"),
            ),
            (
                client(0x88, &[0x03]),
                FrameError::Protocol("close frame with a 1-byte payload"),
            ),
            (
                client(0x88, &1005u16.to_be_bytes()),
                FrameError::Protocol("close frame with an invalid status code"),
            ),
            (
                client(0x88, &[0x03, 0xe8, 0xff]),
                FrameError::InvalidUtf8("close reason is not UTF-8"),
            ),
            (client(0x81, &[b'x'; 11]), FrameError::TooLarge),
            (
                [client(0x01, b"x"), client(0x81, b"y")].concat(),
                FrameError::Protocol("new message inside a fragmented one"),
            ),
            (
                [client(0x01, &[b'x'; 6]), client(0x80, &[b'x'; 6])].concat(),
                FrameError::TooLarge,
            ),
        ];
        for (wire, error) in cases {
            let mut d = Decoder::new(10);
            d.feed(&wire);
            assert_eq!(all(&mut d), Err(error), "{wire:?}");
        }
    }

    #[test]
    fn close_codes_are_checked_and_returned() {
        for (code, ok) in [
            (1000, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1011, true),
            (1015, false),
            (999, false),
            (2999, false),
            (3000, true),
            (4999, true),
            (5000, false),
        ] {
            let mut d = Decoder::new(100);
            d.feed(&client(0x88, &u16::to_be_bytes(code)));
            let got = all(&mut d);
            if ok {
                assert_eq!(got, Ok(vec![Incoming::Close(Some(code))]), "{code}");
            } else {
                assert!(got.is_err(), "{code}");
            }
        }
        let mut d = Decoder::new(100);
        d.feed(&client(0x88, b""));
        assert_eq!(all(&mut d), Ok(vec![Incoming::Close(None)]));
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_brings_it() {
        let mut d = Decoder::new(100);
        // A character split across fragments is fine.
        d.feed(&client(0x01, &[b'a', 0xc3]));
        assert_eq!(all(&mut d), Ok(vec![]));
        d.feed(&client(0x00, &[0xa9, b'b']));
        assert_eq!(all(&mut d), Ok(vec![]));
        // A byte no continuation can fix fails now, before the final fragment.
        d.feed(&client(0x00, &[0xff]));
        assert_eq!(
            all(&mut d),
            Err(FrameError::InvalidUtf8("text message is not UTF-8"))
        );
    }

    #[test]
    fn a_declared_length_reserves_nothing_before_bytes_arrive() {
        let mut d = Decoder::new(1 << 16);
        let mut wire = client(0x81, &[b'x'; 60_000]);
        wire.truncate(14 + 10);
        d.feed(&wire);
        assert_eq!(d.next(), Ok(None));
        assert!(d.pending.capacity() < 1024, "{}", d.pending.capacity());
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_it_arrives() {
        let mut d = Decoder::new(1 << 16);
        d.feed(&[
            0x81,
            0x80 | 127,
            0x7f,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        assert_eq!(d.next(), Err(FrameError::TooLarge));
        assert!(d.pending.capacity() < 1024);
    }
}
