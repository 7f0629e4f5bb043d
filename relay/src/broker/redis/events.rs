//! A room's events: appended to its stream and published in one script,
//! read back for resume (history trimmed on write, aged on read).

use std::collections::HashMap;
use std::sync::Arc;

use super::RedisBroker;
use super::errors::{unavailable, write_failed};
use super::records::{split_at_id, template_error};
use crate::broker::{BrokerError, Draft, History};
use crate::idempotency::Once;
use crate::protocol::{Control, Event, EventId, RoomName, now_ms};

impl RedisBroker {
    /// Appends an event (JSON built with id `0-0`) and publishes it; returns the event.
    pub(super) async fn append(
        &self,
        room: &RoomName,
        template: &str,
        once: Option<&Once>,
    ) -> Result<Arc<Event>, BrokerError> {
        let (prefix, suffix) = split_at_id(template).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, once);
        let id: String = self
            .scripts
            .append
            .key(self.key(room, "stream"))
            .key(self.key(room, "trimmed"))
            .key(self.key(room, "history-bytes"))
            .key(once_key)
            .arg(self.limits.history_size)
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(self.channel(room))
            .arg(self.limits.history_bytes)
            .arg(self.write_deadline())
            .arg(fingerprint)
            .invoke_async(&mut self.conn())
            .await
            .map_err(write_failed)?;
        Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error)
    }

    pub(in crate::broker) async fn publish(
        &self,
        room: &RoomName,
        draft: Draft,
    ) -> Result<Arc<Event>, BrokerError> {
        // Built with id `0-0`; the script gives it the room's next id.
        let message =
            draft
                .publish
                .into_message(room.clone(), EventId::default(), now_ms(), draft.from);
        let event = Event::message(&message);
        let once = draft.once.as_ref();
        match &message.to {
            None => self.append(room, event.json(), once).await,
            Some(to) => self.direct_message(room, to, event.json(), once).await,
        }
    }

    /// Sends a direct message (JSON built with id `0-0`) to a present peer,
    /// with an id from the room's sequence; returns the event as sent.
    pub(super) async fn direct_message(
        &self,
        room: &RoomName,
        to: &Arc<str>,
        template: &str,
        once: Option<&Once>,
    ) -> Result<Arc<Event>, BrokerError> {
        let (prefix, suffix) = split_at_id(template).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, once);
        let id: Option<String> = self
            .scripts
            .direct_message
            .key(self.key(room, "presence"))
            .key(self.key(room, "stream"))
            .key(once_key)
            .arg(&**to)
            .arg(self.channel(room))
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(fingerprint)
            .invoke_async(&mut self.conn())
            .await
            .map_err(write_failed)?;
        let id = id.ok_or_else(|| BrokerError::NoSuchPeer {
            room: room.to_string(),
            peer: to.to_string(),
        })?;
        Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error)
    }

    /// Publishes an event for one present peer only (a direct message, or an
    /// internal event such as a token refresh); it is not kept in history.
    pub(in crate::broker) async fn control(
        &self,
        room: &RoomName,
        control: Control,
    ) -> Result<(), BrokerError> {
        let peer = control.to();
        let sent: i64 = self
            .scripts
            .direct
            .key(self.key(room, "presence"))
            .arg(&**peer)
            .arg(self.channel(room))
            .arg(control.json())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if sent == 0 {
            return Err(BrokerError::NoSuchPeer {
                room: room.to_string(),
                peer: peer.to_string(),
            });
        }
        Ok(())
    }

    /// The stream's last id, first entry and newest dropped id (see
    /// `STREAM_MARKS`); `None` when the stream does not exist.
    pub(super) async fn stream_info(
        &self,
        room: &RoomName,
    ) -> Result<Option<StreamInfo>, BrokerError> {
        let marks: Option<(String, String, String)> = self
            .scripts
            .stream_marks
            .key(self.key(room, "stream"))
            .key(self.key(room, "trimmed"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let id = |v: &str| -> Option<EventId> {
            v.parse()
                .ok()
                .filter(|id: &EventId| *id != EventId::default())
        };
        Ok(marks.map(|(last, first, dropped)| StreamInfo {
            last: id(&last),
            first: id(&first),
            dropped: id(&dropped),
        }))
    }

    /// Events after `since` (or the latest ones), with whether nothing was
    /// lost between. Entries past the history's age are treated as trimmed
    /// here (the append that comes next drops them), so a quiet room's
    /// history ages without any timer.
    pub(in crate::broker) async fn history(
        &self,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let Some(info) = self.stream_info(room).await? else {
            return Ok(History {
                events: Vec::new(),
                complete: since.is_none(),
            });
        };
        let key = self.key(room, "stream");
        let count = limit.min(self.limits.history_size.max(1));
        // The oldest id still within the history's age, on Redis's clock.
        let redis_now = self.on_redis_clock(now_ms()) as i64;
        let fresh = EventId {
            ms: (redis_now - self.ttl_ms() as i64).max(0) as u64,
            seq: 0,
        };
        let mut dropped = info.dropped;
        let entries: Vec<(String, HashMap<String, String>)> = match since {
            Some(since) => {
                if since < fresh {
                    // Aged entries after the resume point count as dropped.
                    let aged: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                        .arg(&key)
                        .arg(format!("({fresh}"))
                        .arg(format!("({since}"))
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut self.conn())
                        .await
                        .map_err(unavailable)?;
                    if let Some(newest) = aged.ids.first().and_then(|e| e.id.parse().ok()) {
                        dropped = dropped.max(Some(newest));
                    }
                }
                let start = if since < fresh {
                    fresh.to_string()
                } else {
                    format!("({since}")
                };
                let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                stream_entries(reply)
            }
            None => {
                let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg(fresh.to_string())
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                let mut entries = stream_entries(reply);
                entries.reverse();
                entries
            }
        };
        let events = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                Event::from_json(format!("{}{id}{}", fields.get("p")?, fields.get("s")?))
            })
            .collect();
        let complete = match since {
            None => true,
            // Events after the resume point were dropped; or nothing was dropped
            // from this stream yet but the resume point predates it (the stream
            // expired while idle and was made anew).
            Some(since) => match (dropped, info.first) {
                (Some(dropped), _) => since >= dropped,
                (None, Some(first)) => since >= first,
                (None, None) => true,
            },
        };
        Ok(History { events, complete })
    }
}

/// What `XINFO STREAM` says about a room's history.
pub(super) struct StreamInfo {
    pub(super) last: Option<EventId>,
    pub(super) dropped: Option<EventId>,
    pub(super) first: Option<EventId>,
}

pub(super) fn stream_entries(
    reply: redis::streams::StreamRangeReply,
) -> Vec<(String, HashMap<String, String>)> {
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry
                .map
                .into_iter()
                .filter_map(|(k, v)| {
                    redis::FromRedisValue::from_redis_value(v)
                        .ok()
                        .map(|v: String| (k, v))
                })
                .collect();
            (entry.id, fields)
        })
        .collect()
}
