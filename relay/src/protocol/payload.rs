//! Payloads: client JSON kept as its minified text, parsed once and never
//! encoded again.

use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
