//! Where a room's state lives: key and channel names. A room's keys share
//! its hash tag, so a Redis Cluster keeps them in one slot.

use super::RedisBroker;
use crate::idempotency::Once;
use crate::protocol::RoomName;

impl RedisBroker {
    pub(super) fn key(&self, room: &RoomName, what: &str) -> String {
        format!("{}:{{{}}}:{what}", self.settings.prefix, room)
    }

    /// The key and fingerprint a keyed write's script remembers it by; an
    /// empty key name for a write without one.
    pub(super) fn once_args<'a>(
        &self,
        room: &RoomName,
        once: Option<&'a Once>,
    ) -> (String, &'a str) {
        match once {
            Some(once) => (
                self.key(room, &format!("once:{}", once.scope)),
                &once.fingerprint,
            ),
            None => (String::new(), ""),
        }
    }

    pub(super) fn channel(&self, room: &RoomName) -> String {
        self.key(room, "events")
    }

    pub(super) fn rooms_key(&self) -> String {
        format!("{}:rooms", self.settings.prefix)
    }

    /// The deadline set: everything the sweep must do at a time, scored by
    /// that time on Redis's clock. Members: `i:<instance>` (dead when due),
    /// `x:[room, topic, id, from]` (a retained value lapses), `w:<record>` (a
    /// delayed will). One set, so an idle sweep is one command. History needs
    /// no deadline: it is trimmed on write and aged out on read.
    pub(super) fn due_key(&self) -> String {
        format!("{}:due", self.settings.prefix)
    }

    /// The set of an instance's own peers, as `[room, peer]` JSON members:
    /// what a survivor cleans up when the instance dies.
    pub(super) fn peers_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}:peers", self.settings.prefix)
    }

    pub(super) fn instance_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}", self.settings.prefix)
    }

    pub(super) fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let rest = channel
            .strip_prefix(&self.settings.prefix)?
            .strip_prefix(":{")?;
        let room = rest.strip_suffix("}:events")?;
        RoomName::parse(room).ok()
    }
}
