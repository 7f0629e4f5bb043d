//! Wills in the memory broker, and the sweep that fires the due ones and
//! lets retained values and history lapse.

use std::sync::Arc;

use super::{MemoryBroker, lock};
use crate::broker::{DeferredWill, Will};
use crate::protocol::{RoomName, now_ms, null_payload};
use crate::topic::Topic;

impl MemoryBroker {
    pub(in crate::broker) fn put_will(&self, room: &RoomName, peer: &Arc<str>, will: Will) {
        let state = self.room(room);
        lock(&state)
            .wills
            .get_or_insert_with(Box::default)
            .insert(peer.clone(), will);
    }

    pub(in crate::broker) fn take_will(&self, room: &RoomName, peer: &Arc<str>) -> Option<Will> {
        let state = self.existing(room)?;
        let mut state = lock(&state);
        let wills = state.wills.as_mut()?;
        let will = wills.remove(peer);
        if wills.is_empty() {
            state.wills = None;
        }
        will
    }

    pub(in crate::broker) fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) {
        let due = now_ms().saturating_add(will.after.map_or(0, |d| d.as_millis() as u64));
        let deferred = DeferredWill {
            room: room.clone(),
            peer: peer.clone(),
            user: user.clone(),
            will,
            id: format!("{due}:{room}:{peer}"),
            handle: String::new(),
        };
        let mut list = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        list.push((due, deferred));
    }

    /// Takes the wills that are due: in one process there is no one to
    /// share them with, so claiming is taking.
    fn due_wills(&self) -> Vec<DeferredWill> {
        let now = now_ms();
        let mut list = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            return Vec::new();
        }
        let (due, waiting): (Vec<_>, Vec<_>) = list.drain(..).partition(|(at, _)| *at <= now);
        *list = waiting;
        let mut due = due;
        due.sort_by_key(|(at, _)| *at);
        due.into_iter().map(|(_, w)| w).collect()
    }

    pub(in crate::broker) fn sweep(&self, now: u64) -> Vec<DeferredWill> {
        let horizon = now.saturating_sub(self.limits.history_ttl.as_millis() as u64);
        for (room, state) in self.all_rooms() {
            {
                let mut state = lock(&state);
                let lapsed: Vec<Topic> = state
                    .retained
                    .values()
                    .filter(|r| r.expires_at.is_some_and(|t| t <= now))
                    .map(|r| r.topic.clone())
                    .collect();
                for topic in lapsed {
                    if let Some(held) = state.retained.remove(&topic) {
                        let (_, event) = state.status_event(
                            &room,
                            &topic,
                            null_payload(),
                            held.from,
                            &self.limits,
                        );
                        self.fanout.deliver(&room, event);
                    }
                }
                while state.kept().next().is_some_and(|(ts, _)| *ts <= horizon) {
                    state.drop_oldest();
                }
                if let Some(ledger) = state.once.as_mut() {
                    ledger.prune(now);
                    if ledger.is_empty() {
                        state.once = None;
                    }
                }
            }
            self.collect(&room);
        }
        self.due_wills()
    }
}
