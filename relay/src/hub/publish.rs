//! Writes and reads of a room's messages and topics, after the caller's
//! rights and the write's shape are checked: publish (broadcast, direct, to
//! a topic, or retained), set and clear retained values, read them and the
//! room's history.

use std::sync::Arc;

use super::{Hub, MAX_TTL_SECS};
use crate::auth::{Principal, Rights};
use crate::broker::{Draft, History, RetainDraft, Retained};
use crate::error::ApiError;
use crate::idempotency::{IdempotencyKey, Once};
use crate::metrics::Metrics;
use crate::protocol::{Event, EventId, Payload, Publish, RoomName, check_message_type};
use crate::topic::{Topic, TopicFilter};

impl Hub {
    /// Publishes to `room` as `from` after checking the caller's rights: a
    /// message (broadcast, direct, or to a topic), or with `retain` a topic's
    /// retained value.
    pub async fn publish(
        &self,
        principal: &Principal,
        room: &RoomName,
        from: Arc<str>,
        req: Publish,
    ) -> Result<Arc<Event>, ApiError> {
        let topic = req.topic.as_deref().map(Topic::parse).transpose()?;
        if req.retain {
            let topic = topic.ok_or_else(|| ApiError::BadRequest("retain needs a topic".into()))?;
            if req.to.is_some() {
                return Err(ApiError::BadRequest(
                    "a retained value cannot be a direct message".into(),
                ));
            }
            // As in MQTT, retaining nothing clears the topic.
            if req.data.get() == "null" {
                return self
                    .clear_retained(principal, room, topic, from, req.key.as_ref())
                    .await;
            }
            return self
                .set_retained(
                    principal,
                    room,
                    topic,
                    req.data,
                    from,
                    req.ttl,
                    req.key.as_ref(),
                )
                .await;
        }
        if req.ttl.is_some() {
            return Err(ApiError::BadRequest(
                "ttl applies only to retained values".into(),
            ));
        }
        principal.require(room, Rights::WRITE)?;
        check_message_type(&req.kind)?;
        if req.to.as_deref() == Some("") {
            return Err(ApiError::BadRequest("to must name a peer".into()));
        }
        let once = req.key.as_ref().map(|key| {
            // Whether `to` and `topic` are set is part of the write, not
            // only their text.
            let flags = match (req.to.is_some(), topic.is_some()) {
                (false, false) => "--",
                (true, false) => "t-",
                (false, true) => "-t",
                (true, true) => "tt",
            };
            Once::new(
                &principal.sub,
                key,
                &[
                    "pub",
                    flags,
                    &req.kind,
                    req.to.as_deref().unwrap_or(""),
                    topic.as_ref().map_or("", |t| t.as_str()),
                    req.data.get(),
                ],
            )
        });
        let publish = Publish {
            topic: topic.map(|t| t.as_arc().clone()),
            ..req
        };
        let draft = Draft {
            from,
            publish,
            once,
        };
        let event = self.broker().publish(room, draft).await?;
        Metrics::add(&self.inner.metrics.messages_in, 1);
        Ok(event)
    }

    /// Sets a topic's retained value (needs the `retain` right); with `key`,
    /// a retry returns the first attempt's id and does nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_retained(
        &self,
        principal: &Principal,
        room: &RoomName,
        topic: Topic,
        data: Payload,
        from: Arc<str>,
        ttl: Option<u64>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Arc<Event>, ApiError> {
        principal.require(room, Rights::RETAIN)?;
        let ttl = match ttl {
            Some(0) => return Err(ApiError::BadRequest("ttl must be at least 1 second".into())),
            Some(t) if t > MAX_TTL_SECS => {
                return Err(ApiError::BadRequest(format!(
                    "ttl may be at most {MAX_TTL_SECS} seconds"
                )));
            }
            t => t.map(std::time::Duration::from_secs),
        };
        let once = key.map(|key| {
            let ttl = ttl.map(|t| t.as_secs().to_string()).unwrap_or_default();
            Once::new(
                &principal.sub,
                key,
                &["set", topic.as_str(), data.get(), &ttl],
            )
        });
        let draft = RetainDraft {
            topic,
            data,
            from,
            ttl,
            once,
        };
        let event = self.broker().set_retained(room, draft).await?;
        Metrics::add(&self.inner.metrics.messages_in, 1);
        Ok(event)
    }

    /// Clears a topic's retained value (needs the `retain` right); `404` when
    /// it held none. With `key`, a retry of a clear that was done returns its
    /// id (not `404`) and does nothing.
    pub async fn clear_retained(
        &self,
        principal: &Principal,
        room: &RoomName,
        topic: Topic,
        from: Arc<str>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Arc<Event>, ApiError> {
        principal.require(room, Rights::RETAIN)?;
        let once = key.map(|key| Once::new(&principal.sub, key, &["clear", topic.as_str()]));
        match self
            .broker()
            .clear_retained(room, &topic, from, once.as_ref())
            .await?
        {
            Some(event) => Ok(event),
            None => Err(ApiError::NotFound(format!(
                "topic {topic} holds no value in room {room}"
            ))),
        }
    }

    /// Retained values matching `filter`, for a reader.
    pub async fn retained(
        &self,
        principal: &Principal,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, ApiError> {
        principal.require(room, Rights::READ)?;
        Ok(self.broker().retained(room, filter).await?)
    }

    /// Stored events after `since`, for a reader.
    pub async fn history(
        &self,
        principal: &Principal,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, ApiError> {
        principal.require(room, Rights::READ)?;
        Ok(self.broker().history(room, since, limit).await?)
    }
}
