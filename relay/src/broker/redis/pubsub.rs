//! The pub/sub connection: one per instance, subscribed to each room with
//! local subscribers; resubscribes and replays what it missed after a break.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use tokio_util::sync::CancellationToken;

use super::RedisBroker;
use super::errors::unavailable;
use super::liveness::drained;
use crate::broker::BrokerError;
use crate::protocol::{Envelope, Event, EventId, RoomName};
use crate::random::backoff;

#[derive(Default)]
pub(super) struct PubSubState {
    /// The subscribing connection to a single server, while it is up.
    pub(super) sink: Option<PubSubSink>,
    /// The sharded-subscription connection to a cluster.
    pub(super) cluster: Option<ClusterConnection>,
    pub(super) subscribed: HashSet<RoomName>,
}

impl RedisBroker {
    /// Subscribes this instance to the room's channel, waiting for Redis to confirm.
    pub(in crate::broker) async fn watch(&self, room: &RoomName) -> Result<(), BrokerError> {
        let mut state = self.pubsub.lock().await;
        if state.subscribed.contains(room) {
            return Ok(());
        }
        if let Some(mut conn) = state.cluster.clone() {
            self.sharded_watch(&mut conn, room)
                .await
                .map_err(unavailable)?;
        } else {
            let mut sink = state.sink.clone().ok_or(BrokerError::Unavailable)?;
            tokio::time::timeout(self.settings.timeout, sink.subscribe(self.channel(room)))
                .await
                .map_err(|_| BrokerError::Unavailable)?
                .map_err(unavailable)?;
        }
        // Where this instance's delivery of the room starts: after a pub/sub
        // reconnect, the catch-up reads the stream from here (or from the
        // last event delivered), so a room that had delivered nothing yet is
        // caught up too. Subscribed first, so nothing falls between.
        let start = self
            .stream_info(room)
            .await?
            .and_then(|info| info.last)
            .unwrap_or_default();
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(room.clone())
            .or_insert(start);
        state.subscribed.insert(room.clone());
        Ok(())
    }

    /// Unsubscribes from a room that no longer has local subscribers.
    pub(in crate::broker) async fn unwatch(&self, room: &RoomName) -> Result<(), BrokerError> {
        let mut state = self.pubsub.lock().await;
        if self.fanout.is_watched(room) || !state.subscribed.remove(room) {
            return Ok(());
        }
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
        if let Some(mut conn) = state.cluster.clone() {
            let _ =
                tokio::time::timeout(self.settings.timeout, conn.sunsubscribe(self.channel(room)))
                    .await;
        } else if let Some(mut sink) = state.sink.clone() {
            let _ =
                tokio::time::timeout(self.settings.timeout, sink.unsubscribe(self.channel(room)))
                    .await;
        }
        Ok(())
    }

    /// Hands what arrived on a room's channel to this instance: an event to
    /// the room's local subscribers, a control message to its peer.
    pub(super) fn receive(&self, room: &RoomName, envelope: Envelope) {
        match envelope {
            Envelope::Event(event) => self.deliver(room, event),
            Envelope::Control(control) => {
                self.fanout.control(*control);
            }
        }
    }

    /// Hands an event that arrived on the room's channel to local subscribers,
    /// once: history events at or before the last delivered id are skipped.
    pub(super) fn deliver(&self, room: &RoomName, event: Arc<Event>) {
        if event.in_history()
            && let Some(id) = event.id()
        {
            let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            match delivered.get(room) {
                Some(last) if id <= *last => return,
                _ => {
                    delivered.insert(room.clone(), id);
                }
            }
        }
        self.fanout.deliver(room, event);
    }

    /// After a pub/sub reconnect: delivers what each watched room published
    /// while the connection was down, from its stream. False when a room's
    /// stream could not be read (the command connection may not be back yet):
    /// the caller then reconnects and tries again, rather than go silent.
    pub(super) async fn resync(&self) -> bool {
        let rooms: Vec<RoomName> = self
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for room in rooms {
            if !self.catch_up(&room).await {
                return false;
            }
        }
        true
    }

    /// Delivers what a watched room published after the last event this
    /// instance delivered, from its stream; a `reset` first when the stream
    /// no longer holds all of it. False when the stream could not be read.
    pub(super) async fn catch_up(&self, room: &RoomName) -> bool {
        let Some(last) = self
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .copied()
        else {
            return true;
        };
        // A room that was empty when first watched has no id to resume
        // after: everything its stream holds is new to this instance, and
        // only a stream cut to its size bound can have lost some.
        let fetched = if last == EventId::default() {
            self.history(room, None, usize::MAX).await.map(|mut h| {
                h.complete = h.events.len() < self.limits.history_size;
                h
            })
        } else {
            self.history(room, Some(last), usize::MAX).await
        };
        match fetched {
            Ok(history) => {
                if !history.complete {
                    // Redis no longer holds all that was missed (a restart
                    // without persistence, or more than history keeps): say
                    // so rather than go silent.
                    tracing::warn!(%room, "events were lost while pub/sub was down; announcing reset");
                    self.fanout.deliver(room, Event::reset(room, "events_lost"));
                }
                for event in history.events {
                    self.deliver(room, event);
                }
                true
            }
            Err(e) => {
                tracing::warn!(%room, error = %e, "catching up a room after a break failed; retrying");
                false
            }
        }
    }
}

/// Owns the pub/sub connection: (re)connects with backoff, resubscribes every
/// watched room, replays what was missed, delivers messages, and probes the
/// connection with PING so a silent one is replaced.
pub(super) async fn pubsub_loop(
    broker: Arc<RedisBroker>,
    client: redis::Client,
    shutdown: CancellationToken,
) {
    let probe_every = Duration::from_secs(5).min(broker.settings.timeout * 2);
    let mut attempt = 0u32;
    // Draining sessions keep receiving live events until their own close.
    let drained = drained(&broker, &shutdown);
    tokio::pin!(drained);
    loop {
        if shutdown.is_cancelled() && broker.fanout.peer_count() == 0 {
            return;
        }
        let connected =
            tokio::time::timeout(broker.settings.timeout, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            _ => {
                broker.pubsub_ok.store(false, Ordering::Relaxed);
                let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = &mut drained => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let resubscribed = {
            let mut state = broker.pubsub.lock().await;
            let mut wanted: HashSet<RoomName> = broker.fanout.watched_rooms().into_iter().collect();
            wanted.retain(|r| state.subscribed.contains(r));
            let mut ok = true;
            for room in &wanted {
                let done = tokio::time::timeout(
                    broker.settings.timeout,
                    sink.subscribe(broker.channel(room)),
                )
                .await;
                if !matches!(done, Ok(Ok(()))) {
                    ok = false;
                    break;
                }
            }
            if ok {
                state.subscribed = wanted;
                state.sink = Some(sink.clone());
            }
            ok
        };
        if !resubscribed || !broker.resync().await {
            // Resubscribing or catching up failed: back off before the next
            // connection, as for a failed connect.
            broker.pubsub.lock().await.sink = None;
            let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = &mut drained => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        broker.pubsub_ok.store(true, Ordering::Relaxed);
        if attempt > 0 {
            tracing::info!("redis pub/sub reconnected");
        }
        let up_since = tokio::time::Instant::now();
        let mut probe = tokio::time::interval(probe_every);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        loop {
            tokio::select! {
                () = &mut drained => return,
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(room) = broker.room_of_channel(message.get_channel_name()) else { continue };
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    match Envelope::from_json(payload) {
                        Some(envelope) => broker.receive(&room, envelope),
                        None => tracing::warn!(%room, "unreadable event on the room channel"),
                    }
                }
                _ = probe.tick() => {
                    // Any reply will do: on RESP2 a subscribed connection answers
                    // PING with an array ["pong", ""], on RESP3 with "PONG".
                    let pong: Result<Result<Value, _>, _> = tokio::time::timeout(broker.settings.timeout, sink.ping()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("redis pub/sub connection went silent; replacing it");
                        break;
                    }
                }
            }
        }
        broker.pubsub_ok.store(false, Ordering::Relaxed);
        broker.pubsub.lock().await.sink = None;
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        // A connection that held is forgiven its earlier failures; one that
        // keeps dropping right after it comes up backs off further each time.
        if up_since.elapsed() >= STABLE_CONNECTION {
            attempt = 0;
        }
        let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = &mut drained => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long a pub/sub connection must hold before its loss counts as the
/// first failure again (a fresh, short backoff).
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
