//! Where state lives: key and channel names.
//!
//! On one Redis server a room's keys are `<prefix>:{<room>}:<what>` and the
//! shared sets are `<prefix>:due`, `<prefix>:rooms` and
//! `<prefix>:instance:<id>[:peers]`.
//!
//! On a Redis Cluster a Lua script may only touch keys of one hash slot, and
//! a room's scripts also maintain its deadline, its place in the room index
//! and its peers' instance sets. So rooms are spread over [`CLUSTER_BUCKETS`]
//! buckets, each one hash slot: a room's keys are
//! `<prefix>:{<bucket>}:{<room>}:<what>` (the first `{…}` is the hash tag), and
//! each bucket has its own deadline set, room index and per-instance peer
//! sets, in the same slot. Every key of a room is in one slot; no key is
//! global; the buckets spread rooms over the cluster's shards.

use super::RedisBroker;
use crate::idempotency::Once;
use crate::protocol::RoomName;

/// How many buckets (hash slots) rooms are spread over on a Redis Cluster:
/// enough to spread over dozens of shards, few enough that looking at every
/// bucket's deadline set now and then stays cheap.
pub const CLUSTER_BUCKETS: u32 = 64;

/// The bucket that holds the instances' heartbeats and their deadlines.
pub(super) const INSTANCE_BUCKET: u32 = 0;

/// Which key layout the broker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// One Redis server (or a primary with replicas): one deadline set.
    Single,
    /// A Redis Cluster: rooms in buckets, one hash slot each.
    Cluster,
}

impl Layout {
    /// How many buckets there are (one on a single server).
    pub(super) fn buckets(self) -> u32 {
        match self {
            Layout::Single => 1,
            Layout::Cluster => CLUSTER_BUCKETS,
        }
    }
}

/// FNV-1a of the room name: stable across instances and versions, which a
/// room's bucket must be.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

impl RedisBroker {
    /// The bucket a room's keys are in (always 0 on a single server).
    pub(super) fn bucket(&self, room: &RoomName) -> u32 {
        match self.layout {
            Layout::Single => 0,
            Layout::Cluster => fnv1a(room.as_str().as_bytes()) % CLUSTER_BUCKETS,
        }
    }

    /// The start of a bucket's own key names: `<prefix>:` on a single
    /// server, `<prefix>:{<bucket>}:` on a cluster.
    fn bucket_prefix(&self, bucket: u32) -> String {
        match self.layout {
            Layout::Single => format!("{}:", self.settings.prefix),
            Layout::Cluster => format!("{}:{{{bucket}}}:", self.settings.prefix),
        }
    }

    /// What a room's key names start with, up to the room itself: a script
    /// that builds a room's key names from the index gets it.
    pub(super) fn room_key_prefix(&self, bucket: u32) -> String {
        format!("{}{{", self.bucket_prefix(bucket))
    }

    /// The name of one of a room's keys.
    pub(super) fn key(&self, room: &RoomName, what: &str) -> String {
        format!("{}{room}}}:{what}", self.room_key_prefix(self.bucket(room)))
    }

    /// The key and fingerprint a keyed write's script remembers it by; with
    /// no key, an empty fingerprint (and a key name in the room's slot, as a
    /// cluster wants every key of a script there).
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
            None => (self.key(room, "once:"), ""),
        }
    }

    /// The room's pub/sub channel (sharded pub/sub on a cluster).
    pub(super) fn channel(&self, room: &RoomName) -> String {
        self.key(room, "events")
    }

    /// The room index of a room's bucket: rooms with peers or retained values.
    pub(super) fn rooms_key(&self, bucket: u32) -> String {
        format!("{}rooms", self.bucket_prefix(bucket))
    }

    /// A bucket's deadline set: everything the sweep must do at a time,
    /// scored by that time on Redis's clock. Members: `i:<instance>` (dead
    /// when due, in the instance bucket), `x:[room, topic, id, from]` (a
    /// retained value lapses), `w:<record>` (a delayed will). History needs
    /// no deadline: it is trimmed on write and aged out on read.
    pub(super) fn due_key(&self, bucket: u32) -> String {
        format!("{}due", self.bucket_prefix(bucket))
    }

    /// The set of an instance's own peers in a bucket's rooms, as
    /// `[room, peer]` JSON members: what a survivor cleans up when the
    /// instance dies.
    pub(super) fn peers_key(&self, instance: &str, bucket: u32) -> String {
        format!("{}{instance}:peers", self.peers_key_prefix(bucket))
    }

    /// What the peer sets of a bucket start with, up to the instance id.
    pub(super) fn peers_key_prefix(&self, bucket: u32) -> String {
        format!("{}instance:", self.bucket_prefix(bucket))
    }

    /// An instance's heartbeat key (in the instance bucket).
    pub(super) fn instance_key(&self, instance: &str) -> String {
        format!("{}instance:{instance}", self.bucket_prefix(INSTANCE_BUCKET))
    }

    /// The room a channel belongs to.
    pub(super) fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let rest = channel
            .strip_prefix(&self.settings.prefix)?
            .strip_suffix("}:events")?;
        // Room names hold no braces: the room is what follows the last `{`.
        let (_, room) = rest.rsplit_once('{')?;
        RoomName::parse(room).ok()
    }
}
