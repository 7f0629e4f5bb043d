//! Room rights granted by a token's `rooms` claim (or by the operator's public
//! rooms), pattern by pattern.

use std::fmt;

use crate::pattern::RoomPattern;
use crate::protocol::NameError;

/// A set of rights on a room: `read`, `write`, `retain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);
    /// Join, subscribe, see presence, read retained values and history.
    pub const READ: Rights = Rights(1);
    /// Publish, direct messages, presence state.
    pub const WRITE: Rights = Rights(2);
    /// Set or clear retained topics, set a will.
    pub const RETAIN: Rights = Rights(4);
    /// Every right.
    pub const ALL: Rights = Rights(7);

    /// True when every right of `other` is in `self`.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Parses one right name.
    pub fn parse_one(name: &str) -> Result<Rights, NameError> {
        match name.trim() {
            "read" => Ok(Rights::READ),
            "write" => Ok(Rights::WRITE),
            "retain" => Ok(Rights::RETAIN),
            other => Err(NameError(format!(
                "unknown right {other:?} (expected read, write or retain)"
            ))),
        }
    }

    /// Parses a comma-separated list such as `read,write`.
    pub fn parse_list(list: &str) -> Result<Rights, NameError> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .try_fold(Rights::NONE, |acc, name| {
                Ok(acc.union(Rights::parse_one(name)?))
            })
    }

    /// The names of the rights in the set, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Rights::READ, "read"),
            (Rights::WRITE, "write"),
            (Rights::RETAIN, "retain"),
        ]
        .into_iter()
        .filter(|(r, _)| self.contains(*r))
        .map(|(_, n)| n)
        .collect()
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// The rights a principal holds, pattern by pattern; rights of every matching pattern add up.
#[derive(Debug, Clone, Default)]
pub struct Grants(Vec<(RoomPattern, Rights)>);

impl Grants {
    /// Builds grants from pattern/right pairs.
    pub fn new(grants: Vec<(RoomPattern, Rights)>) -> Grants {
        Grants(grants)
    }

    /// The rights on `room`.
    pub fn rights(&self, room: &str) -> Rights {
        self.0
            .iter()
            .filter(|(p, _)| p.matches(room))
            .fold(Rights::NONE, |acc, (_, r)| acc.union(*r))
    }

    /// True when no pattern is granted at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_rights_add_up() {
        let grants = Grants::new(vec![
            (
                RoomPattern::parse("game-*").unwrap_or(RoomPattern::Any),
                Rights::READ,
            ),
            (
                RoomPattern::parse("game-42").unwrap_or(RoomPattern::Any),
                Rights::WRITE,
            ),
        ]);
        assert_eq!(grants.rights("game-42"), Rights::READ.union(Rights::WRITE));
        assert_eq!(grants.rights("game-1"), Rights::READ);
        assert_eq!(grants.rights("lobby"), Rights::NONE);
        assert!(RoomPattern::parse("*").is_ok_and(|p| p.matches("anything")));
        assert!(RoomPattern::parse("a/b*").is_err());
        assert_eq!(
            Rights::parse_list("read, retain").map(|r| r.to_string()),
            Ok("read,retain".into())
        );
        assert!(Rights::parse_list("read,admin").is_err());
    }
}
