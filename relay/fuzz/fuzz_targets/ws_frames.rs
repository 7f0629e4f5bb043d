//! Any bytes from a WebSocket client, cut into reads anywhere: decoding never
//! panics, every text message is within the size limit, and after an error
//! the decoder is not asked again (the relay closes the socket).
#![no_main]

use edgewire::transport::ws::frame::{Decoder, Incoming};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, the rest is the wire.
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = Decoder::new(MAX);
    for chunk in wire.chunks(step) {
        decoder.feed(chunk);
        loop {
            match decoder.next() {
                Ok(Some(Incoming::Text(text))) => assert!(text.len() <= MAX),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
