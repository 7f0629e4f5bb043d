//! Fan-out between instances on a Redis Cluster: sharded pub/sub
//! (`SSUBSCRIBE`, Redis 7), one connection per shard that holds a watched
//! room, kept by the cluster client. The client resubscribes by itself after
//! a reconnect, a slot move or a failover; each confirmation it gets back
//! for a watched room makes this instance replay that room from its stream,
//! so what was published meanwhile is delivered (once: delivery dedups by
//! id). A room the server unsubscribes (its slot moved away) is subscribed
//! again, with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{AsyncPushSender, SendError};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisBroker;
use super::liveness::drained;
use crate::protocol::{Envelope, RoomName};
use crate::random::backoff;

/// How many pushes (messages and confirmations) wait for the loop at most.
/// Past it pushes are dropped and every watched room is replayed from its
/// stream instead: the queue is bounded, and nothing is lost.
pub(super) const PUSH_QUEUE: usize = 16_384;

/// Hands the cluster client's pushes to [`sharded_loop`] without blocking
/// the connection: when the queue is full, notes the overflow and drops.
pub(super) struct BoundedPush {
    tx: mpsc::Sender<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl BoundedPush {
    /// A sender and the receiving end for the loop.
    pub(super) fn new(overflowed: Arc<AtomicBool>) -> (BoundedPush, mpsc::Receiver<PushInfo>) {
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        (BoundedPush { tx, overflowed }, rx)
    }
}

impl AsyncPushSender for BoundedPush {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match self.tx.try_send(info) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

/// The first two values of a push as (channel, payload) strings.
fn channel_and_payload(data: &[Value]) -> (Option<String>, Option<String>) {
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    (text(data.first()), text(data.get(1)))
}

impl RedisBroker {
    /// Subscribes this instance to a room's sharded channel, waiting for the
    /// shard to confirm.
    pub(super) async fn sharded_watch(
        &self,
        conn: &mut ClusterConnection,
        room: &RoomName,
    ) -> Result<(), redis::RedisError> {
        match tokio::time::timeout(self.settings.timeout, conn.ssubscribe(self.channel(room))).await
        {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }
}

/// Delivers pushes from the cluster's sharded subscriptions; replays a room
/// whenever its subscription is confirmed again (after a reconnect, a slot
/// move, a failover) and resubscribes a room the server dropped. Idle, it
/// does nothing: work comes only from pushes and from retries that are due.
pub(super) async fn sharded_loop(
    broker: Arc<RedisBroker>,
    mut pushes: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let drained = drained(&broker, &shutdown);
    tokio::pin!(drained);
    // Rooms to resubscribe or replay again, after a failure, and when.
    let mut retry: HashSet<RoomName> = HashSet::new();
    let mut attempt = 0u32;
    let retry_at = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(retry_at);
    // Armed once when retries appear, not pushed back by every later push:
    // a busy shard's messages must not starve another room's retry.
    let mut armed = false;
    loop {
        tokio::select! {
            () = &mut drained => return,
            push = pushes.recv() => {
                let Some(push) = push else { return };
                if overflowed.swap(false, Ordering::Relaxed) {
                    tracing::warn!("sharded pub/sub queue overflowed; replaying every watched room");
                    retry.extend(broker.pubsub.lock().await.subscribed.iter().cloned());
                }
                let (channel, payload) = channel_and_payload(&push.data);
                let room = channel.as_deref().and_then(|c| broker.room_of_channel(c));
                match (push.kind, room) {
                    (PushKind::SMessage, Some(room)) => match payload.and_then(Envelope::from_json) {
                        Some(envelope) => broker.receive(&room, envelope),
                        None => tracing::warn!(%room, "unreadable event on the room channel"),
                    },
                    // Subscribed again (or for the first time): replay what
                    // the room published while this instance was not.
                    (PushKind::SSubscribe, Some(room)) => {
                        let watched = broker.pubsub.lock().await.subscribed.contains(&room);
                        if watched && !broker.catch_up(&room).await {
                            retry.insert(room);
                        }
                    }
                    // The server dropped the subscription (its slot moved):
                    // a room still watched is subscribed again.
                    (PushKind::SUnsubscribe, Some(room)) => {
                        let watched = broker.pubsub.lock().await.subscribed.contains(&room);
                        if watched {
                            retry.insert(room);
                        }
                    }
                    // A shard's connection dropped. The client reconnects to
                    // that node and resubscribes there, but only a command
                    // makes it learn of a failover: subscribing each watched
                    // room again routes it to whichever node now holds it
                    // (a no-op where nothing changed), then replays it.
                    (PushKind::Disconnection, _) => {
                        tracing::warn!("a redis cluster subscription connection dropped; resubscribing");
                        retry.extend(broker.pubsub.lock().await.subscribed.iter().cloned());
                    }
                    _ => {}
                }
                if !retry.is_empty() && !armed {
                    armed = true;
                    let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
                    retry_at.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            () = &mut retry_at, if armed => {
                armed = false;
                let rooms: Vec<RoomName> = retry.drain().collect();
                let mut failed = false;
                for room in rooms {
                    let state = broker.pubsub.lock().await;
                    if !state.subscribed.contains(&room) {
                        continue;
                    }
                    let Some(mut conn) = state.cluster.clone() else { continue };
                    drop(state);
                    let ok = broker.sharded_watch(&mut conn, &room).await.is_ok()
                        && broker.catch_up(&room).await;
                    if !ok {
                        failed = true;
                        retry.insert(room);
                    }
                }
                attempt = if failed { attempt.saturating_add(1) } else { 0 };
                if !retry.is_empty() {
                    armed = true;
                    let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
                    retry_at.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
        }
    }
}
