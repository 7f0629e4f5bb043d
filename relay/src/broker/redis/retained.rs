//! Retained topics: per-room hash of the last value, with lifetimes kept in
//! the deadline set.

use std::collections::HashMap;
use std::sync::Arc;

use redis::AsyncCommands;

use super::RedisBroker;
use super::errors::{unavailable, write_failed};
use super::records::{RetainedRecord, split_at_id, template_error};
use crate::broker::{BrokerError, RetainDraft, Retained};
use crate::idempotency::Once;
use crate::protocol::{
    Event, EventId, Payload, RoomName, Status, now_ms, null_payload, payload_from_raw,
};
use crate::topic::{Topic, TopicFilter};

impl RedisBroker {
    pub(super) fn status_template(
        room: &RoomName,
        topic: &Topic,
        data: Payload,
        from: Arc<str>,
        ts: u64,
    ) -> Arc<Event> {
        Event::status(&Status {
            room: room.clone(),
            id: Some(EventId::default()),
            topic: topic.as_arc().clone(),
            data,
            ts,
            from,
            retained: false,
        })
    }

    pub(in crate::broker) async fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError> {
        let ts = now_ms();
        let event = Self::status_template(
            room,
            &draft.topic,
            draft.data.clone(),
            draft.from.clone(),
            ts,
        );
        let (prefix, suffix) = split_at_id(event.json()).ok_or_else(template_error)?;
        let expires = draft.ttl.map(|t| ts.saturating_add(t.as_millis() as u64));
        let record = serde_json::to_string(&RetainedRecord {
            id: "0-0",
            data: &draft.data,
            ts,
            from: &draft.from,
            x: expires,
        })
        .map_err(|_| template_error())?;
        let (record_prefix, record_suffix) = split_at_id(&record).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, draft.once.as_ref());
        let result: Result<String, _> = self
            .scripts
            .set_retained
            .key(self.key(room, "retained"))
            .key(self.key(room, "stream"))
            .key(self.rooms_key(self.bucket(room)))
            .key(self.key(room, "history-bytes"))
            .key(once_key)
            .key(self.key(room, "trimmed"))
            .key(self.due_key(self.bucket(room)))
            .arg(draft.topic.as_str())
            .arg(self.limits.max_topics)
            .arg(self.limits.history_size)
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(self.channel(room))
            .arg(record_prefix)
            .arg(record_suffix)
            .arg(room.as_str())
            .arg(self.limits.history_bytes)
            .arg(self.write_deadline())
            .arg(fingerprint)
            .arg(
                expires
                    .map(|x| self.on_redis_clock(x).to_string())
                    .unwrap_or_default(),
            )
            .arg(&*draft.from)
            .invoke_async(&mut self.conn())
            .await;
        if let (Ok(_), Some(expires)) = (&result, expires) {
            self.sweep_plan
                .expect(self.bucket(room), self.on_redis_clock(expires));
        }
        match result {
            Ok(id) => Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error),
            Err(e) if e.code() == Some("too_many_topics") => Err(BrokerError::TooManyTopics {
                room: room.to_string(),
                limit: self.limits.max_topics,
            }),
            Err(e) => Err(write_failed(e)),
        }
    }

    /// Clears a topic; with `expected`, only the value of that id (a lapsed one).
    pub(super) async fn clear(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        expected: Option<&str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        let event = Self::status_template(room, topic, null_payload(), from, now_ms());
        let (prefix, suffix) = split_at_id(event.json()).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, once);
        let id: Option<String> = self
            .scripts
            .clear_retained
            .key(self.key(room, "retained"))
            .key(self.key(room, "stream"))
            .key(self.key(room, "history-bytes"))
            .key(once_key)
            .key(self.key(room, "trimmed"))
            .key(self.key(room, "presence"))
            .key(self.rooms_key(self.bucket(room)))
            .arg(topic.as_str())
            .arg(expected.unwrap_or(""))
            .arg(self.limits.history_size)
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(self.channel(room))
            .arg(now_ms())
            .arg(self.limits.history_bytes)
            .arg(self.write_deadline())
            .arg(fingerprint)
            .arg(room.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(write_failed)?;
        match id {
            Some(id) => Ok(Some(
                Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error)?,
            )),
            None => Ok(None),
        }
    }

    pub(in crate::broker) async fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        self.clear(room, topic, from, None, once).await
    }

    pub(super) async fn retained_records(
        &self,
        room: &RoomName,
    ) -> Result<Vec<(Topic, String)>, BrokerError> {
        let all: HashMap<String, String> = self
            .conn()
            .hgetall(self.key(room, "retained"))
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(t, v)| Topic::parse(&t).ok().map(|t| (t, v)))
            .collect())
    }

    pub(in crate::broker) async fn retained(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, BrokerError> {
        let now = now_ms();
        let mut out: Vec<Retained> = self
            .retained_records(room)
            .await?
            .into_iter()
            .filter(|(topic, _)| filter.is_none_or(|f| f.matches(topic.as_str())))
            .filter_map(|(topic, record)| {
                let rec: RetainedRecord<'_> = serde_json::from_str(&record).ok()?;
                if rec.x.is_some_and(|x| x <= now) {
                    return None;
                }
                let data = payload_from_raw(rec.data);
                let from: Arc<str> = Arc::from(rec.from);
                let replay = Event::status(&Status {
                    room: room.clone(),
                    id: None,
                    topic: topic.as_arc().clone(),
                    data: data.clone(),
                    ts: rec.ts,
                    from: from.clone(),
                    retained: true,
                });
                Some(Retained {
                    topic,
                    data,
                    ts: rec.ts,
                    from,
                    expires_at: rec.x,
                    replay,
                })
            })
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(out)
    }
}
