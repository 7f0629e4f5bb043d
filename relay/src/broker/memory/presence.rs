//! A room's present peers, with their join order, as the memory broker
//! keeps them. Most rooms hold a few peers: they are a short list, scanned,
//! exactly as long as the room (a map's smallest table took 372 B for one
//! peer, a list takes 72 B). A room that grows past [`FEW`] peers becomes a
//! map, and a list again once it shrinks to half that.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::PeerInfo;

/// Most peers kept as a list.
pub const FEW: usize = 8;

/// A peer with its join order.
pub type Entry = (u64, PeerInfo);

/// The peers present in one room.
#[derive(Debug)]
pub enum Presence {
    /// Up to [`FEW`] peers, in join order.
    Few(Vec<Entry>),
    /// More, by id (boxed: 8 B in every room, where the map is 48).
    #[allow(clippy::box_collection, reason = "8 B inline in every room")]
    Many(Box<HashMap<Arc<str>, Entry>>),
}

impl Default for Presence {
    fn default() -> Presence {
        Presence::Few(Vec::new())
    }
}

impl Presence {
    /// The entry of peer `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        match self {
            Presence::Few(list) => list.iter().find(|(_, p)| &*p.id == id),
            Presence::Many(map) => map.get(id),
        }
    }

    /// The entry of peer `id`, to change its state.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        match self {
            Presence::Few(list) => list.iter_mut().find(|(_, p)| &*p.id == id),
            Presence::Many(map) => map.get_mut(id),
        }
    }

    /// True when peer `id` is present.
    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Adds a peer (or replaces the one with its id).
    pub fn insert(&mut self, order: u64, peer: PeerInfo) {
        if let Some(entry) = self.get_mut(&peer.id) {
            *entry = (order, peer);
            return;
        }
        match self {
            Presence::Few(list) if list.len() < FEW => {
                // Grown one peer at a time: a room of one holds one entry.
                list.reserve_exact(1);
                list.push((order, peer));
            }
            Presence::Few(list) => {
                let mut map: HashMap<Arc<str>, Entry> = std::mem::take(list)
                    .into_iter()
                    .map(|entry| (entry.1.id.clone(), entry))
                    .collect();
                map.insert(peer.id.clone(), (order, peer));
                *self = Presence::Many(Box::new(map));
            }
            Presence::Many(map) => {
                map.insert(peer.id.clone(), (order, peer));
            }
        }
    }

    /// Removes peer `id`; its entry, if it was present.
    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        match self {
            Presence::Few(list) => {
                let at = list.iter().position(|(_, p)| &*p.id == id)?;
                let entry = list.remove(at);
                // As long as the room, down to nothing.
                list.shrink_to_fit();
                Some(entry)
            }
            Presence::Many(map) => {
                let entry = map.remove(id)?;
                if map.len() <= FEW / 2 {
                    let mut list: Vec<Entry> = map.drain().map(|(_, entry)| entry).collect();
                    list.sort_by_key(|(order, _)| *order);
                    list.shrink_to_fit();
                    *self = Presence::Few(list);
                }
                Some(entry)
            }
        }
    }

    /// How many peers are present.
    pub fn len(&self) -> usize {
        match self {
            Presence::Few(list) => list.len(),
            Presence::Many(map) => map.len(),
        }
    }

    /// True when nobody is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        match self {
            Presence::Few(list) => Box::new(list.iter()),
            Presence::Many(map) => Box::new(map.values()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            id: Arc::from(id),
            user: Arc::from("u"),
            meta: crate::protocol::null_payload(),
            state: crate::protocol::null_payload(),
        }
    }

    fn ids(presence: &Presence) -> Vec<String> {
        let mut entries: Vec<&Entry> = presence.iter().collect();
        entries.sort_by_key(|(order, _)| *order);
        entries.iter().map(|(_, p)| p.id.to_string()).collect()
    }

    #[test]
    fn a_room_grows_into_a_map_and_shrinks_back_keeping_everyone() {
        let mut presence = Presence::default();
        let n = FEW * 3;
        for i in 0..n {
            presence.insert(i as u64, peer(&format!("p{i}")));
        }
        assert!(matches!(presence, Presence::Many(_)));
        assert_eq!(presence.len(), n);
        presence.insert(99, peer("p0"));
        assert_eq!(presence.len(), n, "a peer id is present once");
        assert_eq!(presence.get("p0").map(|(o, _)| *o), Some(99));
        for i in 0..n - 2 {
            assert!(presence.remove(&format!("p{i}")).is_some(), "p{i}");
        }
        assert!(presence.remove("p0").is_none());
        assert!(matches!(&presence, Presence::Few(list) if list.capacity() == 2));
        assert_eq!(
            ids(&presence),
            [format!("p{}", n - 2), format!("p{}", n - 1)]
        );
        assert!(presence.contains(&format!("p{}", n - 1)));
        presence.remove(&format!("p{}", n - 2));
        presence.remove(&format!("p{}", n - 1));
        assert!(presence.is_empty());
        assert!(matches!(&presence, Presence::Few(list) if list.capacity() == 0));
    }
}
