//! A session's feeds: joining a room (welcome, retained values, replay,
//! then the live ring, in one order with no gap or repeat), watching a
//! room's topics, and leaving.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::{MAX_ROOMS_PER_SESSION, Session, release_room};
use crate::auth::Rights;
use crate::broker::Retained;
use crate::delivery::{Lagged, RingReceiver};
use crate::error::ApiError;
use crate::protocol::{Event, EventId, EventKind, LeaveReason, RoomName};
use crate::topic::TopicFilter;

impl Session {
    /// Joins `room` as a peer: `welcome`, the room's retained values, then (when
    /// resuming after `since`) the missed events, then live events. When the
    /// missed events are no longer all in history, a `reset` comes first.
    pub async fn join(&mut self, room: RoomName, since: Option<EventId>) -> Result<(), ApiError> {
        self.principal.require(&room, Rights::READ)?;
        self.check_new_feed(&room)?;
        // Subscribe (locally, then across instances) before reading anything, so
        // nothing published meanwhile is missed.
        let (rx, room) = self.subscribe(&room);
        if let Err(e) = self.hub.broker().watch(&room).await {
            self.abandon(rx, &room);
            return Err(e.into());
        }
        let snapshot = match self.hub.broker().join(&room, self.me()).await {
            Ok(s) => s,
            Err(e) => {
                self.abandon(rx, &room);
                return Err(e.into());
            }
        };
        let start = match self.start_of(&room, None, since, snapshot.last_id).await {
            Ok(start) => start,
            Err(e) => {
                self.abandon(rx, &room);
                let _ = self
                    .hub
                    .broker()
                    .leave(&room, &self.id, LeaveReason::Closed)
                    .await;
                return Err(e);
            }
        };
        if start.reset {
            self.pending.push_back(Event::reset(&room, "history_gap"));
        }
        self.pending.push_back(Event::welcome(
            Some(&room),
            &self.me(),
            &snapshot.peers,
            snapshot.last_id,
        ));
        self.start_feed(rx, room.clone(), None, start);
        if !self.present.contains(&room) {
            // Grown one room at a time (at most MAX_ROOMS_PER_SESSION).
            self.present.reserve_exact(1);
            self.present.push(room);
        }
        Ok(())
    }

    /// Watches the topics of `room` that match `filter`, without joining its
    /// presence: retained values first, then (resuming after `since`) missed
    /// updates, then live `status` events and topic messages that match.
    pub async fn watch(
        &mut self,
        room: RoomName,
        filter: TopicFilter,
        since: Option<EventId>,
    ) -> Result<(), ApiError> {
        self.principal.require(&room, Rights::READ)?;
        self.check_new_feed(&room)?;
        let (rx, room) = self.subscribe(&room);
        let result = async {
            self.hub.broker().watch(&room).await?;
            let snapshot = self.hub.broker().snapshot(&room).await?;
            self.start_of(&room, Some(&filter), since, snapshot.last_id)
                .await
        }
        .await;
        match result {
            Ok(start) => {
                if start.reset {
                    self.pending.push_back(Event::reset(&room, "history_gap"));
                }
                self.start_feed(rx, room, Some(filter), start);
                Ok(())
            }
            Err(e) => {
                self.abandon(rx, &room);
                Err(e)
            }
        }
    }

    fn check_new_feed(&self, room: &RoomName) -> Result<(), ApiError> {
        if self.feeds.contains_key(room) {
            return Err(ApiError::BadRequest(format!("already joined room {room}")));
        }
        if self.feeds.len() >= MAX_ROOMS_PER_SESSION {
            return Err(ApiError::BadRequest(format!(
                "a connection may join at most {MAX_ROOMS_PER_SESSION} rooms"
            )));
        }
        Ok(())
    }

    fn abandon(&self, rx: RingReceiver, room: &RoomName) {
        drop(rx);
        release_room(&self.hub, room);
    }

    /// Reads what a new feed starts with: retained values and the replay.
    pub(super) async fn start_of(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
        since: Option<EventId>,
        last_id: Option<EventId>,
    ) -> Result<Start, ApiError> {
        let broker = self.hub.broker();
        let retained = broker.retained(room, filter).await?;
        let Some(since) = since else {
            return Ok(Start {
                retained,
                replay: Vec::new(),
                reset: false,
                skip_through: last_id,
            });
        };
        let history = broker.history(room, Some(since), usize::MAX).await?;
        if !history.complete {
            return Ok(Start {
                retained,
                replay: Vec::new(),
                reset: true,
                skip_through: last_id,
            });
        }
        let replay_through = history.events.iter().filter_map(|e| e.id()).max();
        let replay = history
            .events
            .into_iter()
            .filter(|e| filter.is_none_or(|f| e.topic().is_some_and(|t| f.matches(t))))
            .collect();
        Ok(Start {
            retained,
            replay,
            reset: false,
            // Live events up to the last one replayed (or the resume point) are
            // already covered; later ones come from the ring.
            skip_through: replay_through.max(Some(since)),
        })
    }

    pub(super) fn start_feed(
        &mut self,
        rx: RingReceiver,
        room: RoomName,
        filter: Option<TopicFilter>,
        start: Start,
    ) {
        self.pending
            .extend(start.retained.into_iter().map(|r: Retained| r.replay));
        self.pending.extend(start.replay);
        let feed = RoomFeed {
            inner: rx,
            skip_through: start.skip_through.map(Box::new),
            me: self.id.clone(),
            filter: filter.map(Box::new),
        };
        self.feeds.insert(room, feed);
    }

    /// Leaves `room` cleanly (reason `closed`); its will, if any, is cancelled.
    pub async fn leave(&mut self, room: &RoomName) -> Result<(), ApiError> {
        if self.feeds.remove(room).is_none() {
            return Err(ApiError::BadRequest(format!("not joined to room {room}")));
        }
        release_room(&self.hub, room);
        if let Some(at) = self.present.iter().position(|r| r == room) {
            self.present.swap_remove(at);
            let broker = self.hub.broker();
            broker.take_will(room, &self.id).await?;
            broker.leave(room, &self.id, LeaveReason::Closed).await?;
        }
        Ok(())
    }
}

pub(super) struct RoomFeed {
    inner: RingReceiver,
    /// After a resume, the last id the replay covered (boxed: only resumed
    /// feeds have one, and only until live events pass it).
    skip_through: Option<Box<EventId>>,
    me: Arc<str>,
    /// For a topic watch: only events whose topic matches (boxed: most
    /// feeds are a peer's, and an empty one inline cost each 32 B).
    filter: Option<Box<TopicFilter>>,
}

/// What a new feed starts with.
pub(super) struct Start {
    retained: Vec<Retained>,
    replay: Vec<Arc<Event>>,
    reset: bool,
    skip_through: Option<EventId>,
}

impl Stream for RoomFeed {
    type Item = Result<Arc<Event>, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => event,
                other => return other,
            };
            if item.kind() == EventKind::Join && item.subject() == Some(&*self.me) {
                continue;
            }
            if let Some(filter) = &self.filter
                && !item.topic().is_some_and(|t| filter.matches(t))
            {
                continue;
            }
            if let (Some(skip), Some(id)) = (self.skip_through.as_deref(), item.id()) {
                if id <= *skip {
                    continue;
                }
                self.skip_through = None;
            }
            return Poll::Ready(Some(Ok(item)));
        }
    }
}
