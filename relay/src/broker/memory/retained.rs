//! Retained topic values in the memory broker: set, cleared (also by a
//! retry of the same keyed write), and read by filter.

use std::sync::Arc;

use super::{MemoryBroker, lock};
use crate::broker::{BrokerError, RetainDraft, Retained};
use crate::idempotency::Once;
use crate::protocol::{Event, EventId, Payload, RoomName, Status, now_ms, null_payload};
use crate::topic::{Topic, TopicFilter};

impl MemoryBroker {
    pub(in crate::broker) fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError> {
        let state = self.room(room);
        let mut state = lock(&state);
        if let Some(id) = state.recall(draft.once.as_ref())? {
            return Ok(Self::status_replay(
                room,
                id,
                &draft.topic,
                draft.data,
                draft.from,
            ));
        }
        if !state.retained.contains_key(&draft.topic)
            && state.retained.len() >= self.limits.max_topics
        {
            return Err(BrokerError::TooManyTopics {
                room: room.to_string(),
                limit: self.limits.max_topics,
            });
        }
        let (ts, event) = state.status_event(
            room,
            &draft.topic,
            draft.data.clone(),
            draft.from.clone(),
            &self.limits,
        );
        let replay = Event::status(&Status {
            room: room.clone(),
            id: None,
            topic: draft.topic.as_arc().clone(),
            data: draft.data.clone(),
            ts,
            from: draft.from.clone(),
            retained: true,
        });
        let retained = Retained {
            topic: draft.topic.clone(),
            data: draft.data,
            ts,
            from: draft.from,
            expires_at: draft
                .ttl
                .map(|ttl| ts.saturating_add(ttl.as_millis() as u64)),
            replay,
        };
        state.retained.insert(draft.topic, retained);
        state.remember_once(draft.once.as_ref(), event.id(), &self.limits);
        self.fanout.deliver(room, event.clone());
        Ok(event)
    }

    /// The answer to a retried keyed topic write: its `status` event with the
    /// first attempt's id, not stored and not delivered again.
    fn status_replay(
        room: &RoomName,
        id: EventId,
        topic: &Topic,
        data: Payload,
        from: Arc<str>,
    ) -> Arc<Event> {
        Event::status(&Status {
            room: room.clone(),
            id: Some(id),
            topic: topic.as_arc().clone(),
            data,
            ts: now_ms(),
            from,
            retained: false,
        })
    }

    pub(in crate::broker) fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        let Some(state) = self.existing(room) else {
            return Ok(None);
        };
        let event = {
            let mut state = lock(&state);
            if let Some(id) = state.recall(once)? {
                return Ok(Some(Self::status_replay(
                    room,
                    id,
                    topic,
                    null_payload(),
                    from,
                )));
            }
            let Some(held) = state.retained.remove(topic) else {
                return Ok(None);
            };
            if held.expires_at.is_some_and(|t| t <= now_ms()) {
                // It had already lapsed; the sweep announces that.
                state.retained.insert(topic.clone(), held);
                return Ok(None);
            }
            let (_, event) = state.status_event(room, topic, null_payload(), from, &self.limits);
            state.remember_once(once, event.id(), &self.limits);
            self.fanout.deliver(room, event.clone());
            event
        };
        self.collect(room);
        Ok(Some(event))
    }

    pub(in crate::broker) fn retained(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Vec<Retained> {
        let Some(state) = self.existing(room) else {
            return Vec::new();
        };
        let state = lock(&state);
        let now = now_ms();
        state
            .retained
            .values()
            .filter(|r| r.expires_at.is_none_or(|t| t > now))
            .filter(|r| filter.is_none_or(|f| f.matches(r.topic.as_str())))
            .cloned()
            .collect()
    }
}
