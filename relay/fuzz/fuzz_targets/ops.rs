//! Any WebSocket text frame: parsing never panics, and an error still carries
//! the op's `ref` when the frame had one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((_, reference)) = edgewire::protocol::parse_op(&text) {
        if let Some(r) = reference {
            assert!(!r.get().is_empty());
        }
    }
});
