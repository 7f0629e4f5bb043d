//! Topics and filters inside a room. A topic is a `/`-separated name such as
//! `device/status/sn-7` (1 to 256 bytes, at most 16 levels, no empty level, no
//! `+` or `*`). A filter selects topics: `+` matches exactly one level, `*` as
//! the last level matches one or more levels.

use std::fmt;
use std::sync::Arc;

use crate::protocol::NameError;

/// Longest topic or filter, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most levels in a topic or filter.
pub const MAX_LEVELS: usize = 16;

/// A validated topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates a topic name.
    pub fn parse(name: &str) -> Result<Topic, NameError> {
        check_shape(name, "topic")?;
        if let Some(level) = name.split('/').find(|l| l.contains('+') || l.contains('*')) {
            return Err(NameError(format!(
                "topic level {level:?} holds + or *, which only filters may use"
            )));
        }
        Ok(Topic(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared name.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_shape(name: &str, what: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_TOPIC_BYTES {
        return Err(NameError(format!(
            "{what} must be 1 to {MAX_TOPIC_BYTES} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError(format!("{what} may not hold control characters")));
    }
    let levels = name.split('/').count();
    if levels > MAX_LEVELS {
        return Err(NameError(format!(
            "{what} has {levels} levels; at most {MAX_LEVELS}"
        )));
    }
    if name.split('/').any(str::is_empty) {
        return Err(NameError(format!(
            "{what} {name:?} has an empty level (leading, trailing or double /)"
        )));
    }
    Ok(())
}

/// One level of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: exactly one level.
    One,
    /// `*` (last level only): one or more levels.
    Rest,
}

/// A validated topic filter; an exact topic name is a filter too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: Arc<str>,
    levels: Vec<Level>,
}

impl TopicFilter {
    /// Validates a filter: `+` must be a whole level; `*` a whole, last level.
    pub fn parse(text: &str) -> Result<TopicFilter, NameError> {
        check_shape(text, "filter")?;
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::One,
                "*" if i == last => Level::Rest,
                "*" => {
                    return Err(NameError(format!(
                        "filter {text:?}: * may only be the last level"
                    )));
                }
                p if p.contains('+') || p.contains('*') => {
                    return Err(NameError(format!(
                        "filter {text:?}: + and * must be whole levels (got {p:?})"
                    )));
                }
                p => Level::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            text: Arc::from(text),
            levels,
        })
    }

    /// True when the filter names one topic (no wildcard).
    pub fn is_exact(&self) -> bool {
        self.levels.iter().all(|l| matches!(l, Level::Exact(_)))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when `topic` is selected by this filter.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return parts.next().is_some(),
                Level::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => {
                    if parts.next() != Some(want.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filter(f: &str) -> TopicFilter {
        TopicFilter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"))
    }

    #[test]
    fn names() {
        assert!(Topic::parse("device/status/sn-7").is_ok());
        assert!(Topic::parse("a").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/+/b", "a/*", "dev+ice", "a\nb"] {
            assert!(Topic::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Topic::parse(&["x"; 16].join("/")).is_ok());
        assert!(Topic::parse(&["x"; 17].join("/")).is_err());
        assert!(Topic::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn filters() {
        for ok in ["a", "a/+/c", "+", "*", "a/*", "+/+/*"] {
            assert!(TopicFilter::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/*/c", "a+", "a/b*", "a//b", "*/a"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
        assert!(filter("device/+/sn-7").matches("device/status/sn-7"));
        assert!(!filter("device/+/sn-7").matches("device/status/x/sn-7"));
        assert!(filter("device/*").matches("device/status"));
        assert!(filter("device/*").matches("device/status/sn-7"));
        assert!(
            !filter("device/*").matches("device"),
            "* needs at least one level"
        );
        assert!(filter("a").matches("a") && !filter("a").matches("a/b"));
        assert!(filter("a").is_exact() && !filter("a/+").is_exact());
    }

    /// The simple reference: split both and compare level by level, recursively.
    fn reference(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.split_first(), topic.split_first()) {
            (None, None) => true,
            (Some((&"*", [])), Some(_)) => true,
            (Some((&"+", f)), Some((_, t))) => reference(f, t),
            (Some((l, f)), Some((t0, t))) if l == t0 => reference(f, t),
            _ => false,
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned()),
            "[a-c]{1,3}"
        ]
    }

    fn topic() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(level(), 1..6)
    }

    fn filter_levels() -> impl Strategy<Value = Vec<String>> {
        (
            prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_owned())], 1..6),
            any::<bool>(),
        )
            .prop_map(|(mut levels, rest)| {
                if rest && let Some(last) = levels.last_mut() {
                    *last = "*".to_owned();
                }
                levels
            })
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_the_reference(f in filter_levels(), t in topic()) {
            let f_text = f.join("/");
            let t_text = t.join("/");
            let parsed = TopicFilter::parse(&f_text).map_err(|e| TestCaseError::fail(e.0))?;
            let f_refs: Vec<&str> = f.iter().map(String::as_str).collect();
            let t_refs: Vec<&str> = t.iter().map(String::as_str).collect();
            prop_assert_eq!(parsed.matches(&t_text), reference(&f_refs, &t_refs), "{} vs {}", f_text, t_text);
        }

        #[test]
        fn every_topic_matches_itself_as_a_filter(t in topic()) {
            let text = t.join("/");
            prop_assert!(Topic::parse(&text).is_ok());
            let f = TopicFilter::parse(&text).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert!(f.matches(&text));
            prop_assert!(f.is_exact());
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = Topic::parse(&s);
            let _ = TopicFilter::parse(&s);
        }
    }
}
