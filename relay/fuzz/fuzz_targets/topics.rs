//! Any topic or filter text: parsing never panics, a valid topic matches itself
//! as a filter, and `*` in its parent matches it.
#![no_main]

use edgewire::topic::{Topic, TopicFilter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (left, right) = text.split_once('\n').unwrap_or((&text, ""));
    let topic = Topic::parse(left);
    let filter = TopicFilter::parse(right);
    if let Ok(topic) = &topic {
        let itself = TopicFilter::parse(topic.as_str());
        assert!(itself.is_ok_and(|f| f.matches(topic.as_str())));
        if let Some((parent, _)) = topic.as_str().rsplit_once('/') {
            let below = TopicFilter::parse(&format!("{parent}/*"));
            assert!(below.is_ok_and(|f| f.matches(topic.as_str())));
        }
    }
    if let (Ok(topic), Ok(filter)) = (&topic, &filter) {
        let _ = filter.matches(topic.as_str());
    }
});
