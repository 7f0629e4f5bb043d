//! Room patterns (`lobby`, `doc-*`, `*`): what a token's `rooms` claim grants
//! rights on, and what the operator's public rooms are. Its own module, below
//! both the configuration and the authenticator that use it.

use crate::protocol::{NameError, RoomName};

/// A room pattern: an exact name, a prefix ending in `*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    /// Every room.
    Any,
    /// Rooms whose name starts with the prefix.
    Prefix(String),
    /// One room.
    Exact(String),
}

impl RoomPattern {
    /// Parses a pattern; the part before `*` must be a valid room-name prefix.
    pub fn parse(pattern: &str) -> Result<RoomPattern, NameError> {
        let pattern = pattern.trim();
        if pattern == "*" {
            return Ok(RoomPattern::Any);
        }
        if let Some(prefix) = pattern.strip_suffix('*') {
            RoomName::parse(prefix)
                .map_err(|e| NameError(format!("bad room pattern {pattern:?}: {}", e.0)))?;
            return Ok(RoomPattern::Prefix(prefix.to_owned()));
        }
        RoomName::parse(pattern)
            .map_err(|e| NameError(format!("bad room pattern {pattern:?}: {}", e.0)))?;
        Ok(RoomPattern::Exact(pattern.to_owned()))
    }

    /// True when the pattern covers `room`.
    pub fn matches(&self, room: &str) -> bool {
        match self {
            RoomPattern::Any => true,
            RoomPattern::Prefix(p) => room.starts_with(p.as_str()),
            RoomPattern::Exact(name) => room == name,
        }
    }
}
