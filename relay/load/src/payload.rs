//! The benchmark message: a text stamp (`EWB:<room>:<seq>:<sent µs>:`) padded
//! to the requested size. Servers wrap it differently (Edgewire in a JSON
//! event, Nchan not at all), so subscribers find the stamp inside whatever
//! frame or `data:` line carries it.

/// Where every stamp starts.
pub const MARKER: &[u8] = b"EWB:";

/// What a received message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the room it was published to.
    pub room: u32,
    /// Its sequence number within that room.
    pub seq: u32,
    /// When it was sent, in µs since the run's epoch.
    pub sent_us: u64,
}

/// The body for one message, `size` bytes long (or the bare stamp when that
/// is longer). Padding is plain ASCII, so no server needs to escape it.
pub fn encode(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut body = format!("EWB:{}:{}:{}:", stamp.room, stamp.seq, stamp.sent_us).into_bytes();
    if body.len() < size {
        body.resize(size, b'x');
    }
    body
}

/// Finds and parses the first stamp in `text`; None when there is none (a
/// presence event, a welcome, a heartbeat) or it is malformed.
pub fn find(text: &[u8]) -> Option<Stamp> {
    let start = text.windows(MARKER.len()).position(|w| w == MARKER)? + MARKER.len();
    let mut fields = text[start..].splitn(4, |b| *b == b':');
    let room = number(fields.next()?)?;
    let seq = number(fields.next()?)?;
    let sent_us = number(fields.next()?)?;
    // The fourth piece is the padding; its presence proves the stamp ended.
    fields.next()?;
    Some(Stamp {
        room: u32::try_from(room).ok()?,
        seq: u32::try_from(seq).ok()?,
        sent_us,
    })
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_wrapping() {
        let stamp = Stamp {
            room: 7,
            seq: 41,
            sent_us: 123_456,
        };
        let body = encode(stamp, 128);
        assert_eq!(body.len(), 128);
        let text = String::from_utf8(body).unwrap_or_default();
        let wrapped = format!(r#"{{"kind":"message","data":"{text}"}}"#);
        assert_eq!(find(wrapped.as_bytes()), Some(stamp));
        assert_eq!(find(format!("data: {text}").as_bytes()), Some(stamp));
    }

    #[test]
    fn other_text_has_no_stamp() {
        assert_eq!(find(br#"{"kind":"join"}"#), None);
        assert_eq!(find(b"EWB:1:2"), None);
        assert_eq!(find(b"EWB:1:x:3:pad"), None);
    }
}
