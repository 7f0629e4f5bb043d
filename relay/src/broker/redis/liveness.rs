//! Instance liveness: the heartbeat, Redis's clock, re-asserting what Redis
//! lost, and cleaning up after a dead instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::RedisBroker;
use super::errors::unavailable;
use super::keys::INSTANCE_BUCKET;
use super::records::{peer_member, template_error};
use crate::broker::BrokerError;
use crate::protocol::{Event, LeaveReason, PeerInfo, RoomName, now_ms};

impl RedisBroker {
    /// Measures Redis's clock against this relay's (`TIME`, midway through
    /// the round trip), for [`RedisBroker::write_deadline`].
    pub(super) async fn measure_clock(&self) -> Result<(), BrokerError> {
        let sent = now_ms() as i64;
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let back = now_ms() as i64;
        let redis_ms = secs * 1000 + micros / 1000;
        self.clock_offset_ms
            .store(redis_ms - (sent + back) / 2, Ordering::Relaxed);
        Ok(())
    }

    pub(super) async fn beat(&self) -> Result<(), BrokerError> {
        // The clock is measured with every heartbeat: skew drifts slowly.
        let _ = self.measure_clock().await;
        let ttl = (self.settings.instance_ttl.as_millis() as u64).max(1);
        let result: Result<i64, _> = self
            .scripts
            .beat
            .key(self.instance_key(&self.instance))
            .key(self.due_key(INSTANCE_BUCKET))
            .arg(ttl)
            .arg(format!("i:{}", self.instance))
            .invoke_async(&mut self.conn())
            .await;
        let had_heartbeat = match result {
            Ok(previous) => previous,
            Err(e) => {
                self.commands_ok.store(false, Ordering::Relaxed);
                return Err(unavailable(e));
            }
        };
        if !self.commands_ok.swap(true, Ordering::Relaxed) {
            // Back after a break: other instances may not have beaten yet.
            self.connected_since.store(now_ms(), Ordering::Relaxed);
        }
        if had_heartbeat == 0 && self.beaten.swap(true, Ordering::Relaxed) {
            // Our heartbeat had lapsed: Redis lost its data, or we were cut
            // off for longer than the TTL (and may have been swept as dead).
            tracing::warn!("this instance's heartbeat had lapsed in Redis; re-asserting its peers");
            self.connected_since.store(now_ms(), Ordering::Relaxed);
            self.reassert_due.store(true, Ordering::Relaxed);
        }
        if self.reassert_due.load(Ordering::Relaxed) {
            let count = self.reassert().await?;
            self.reassert_due.store(false, Ordering::Relaxed);
            tracing::info!(peers = count, "re-asserted this instance's peers and wills");
        }
        Ok(())
    }

    /// True once this instance has reached Redis, heartbeat in place, for an
    /// instance TTL: any live instance has beaten since, so a missing
    /// heartbeat now means a dead instance.
    pub(super) fn may_judge_others(&self) -> bool {
        let since = self.connected_since.load(Ordering::Relaxed);
        self.commands_ok.load(Ordering::Relaxed)
            && !self.reassert_due.load(Ordering::Relaxed)
            && now_ms().saturating_sub(since) >= self.settings.instance_ttl.as_millis() as u64
    }

    /// Puts back every local peer (and will) that Redis no longer holds:
    /// after Redis lost its data, or this instance was unreachable for longer
    /// than the instance TTL and another took its peers for dead.
    pub(super) async fn reassert(&self) -> Result<usize, BrokerError> {
        let peers: Vec<(RoomName, PeerInfo, Option<String>)> = self
            .local_peers()
            .iter()
            .map(|((room, _), p)| (room.clone(), p.info.clone(), p.will.clone()))
            .collect();
        for (room, info, will) in &peers {
            let peer_json = serde_json::to_string(info).map_err(|_| template_error())?;
            let _: i64 = self
                .scripts
                .reassert
                .key(self.key(room, "presence"))
                .key(self.key(room, "order"))
                .key(self.rooms_key(self.bucket(room)))
                .key(self.key(room, "wills"))
                .key(self.peers_key(&self.instance, self.bucket(room)))
                .arg(&*info.id)
                .arg(&*self.instance)
                .arg(peer_json)
                .arg(Event::join(room, info).json())
                .arg(self.channel(room))
                .arg(room.as_str())
                .arg(will.as_deref().unwrap_or(""))
                .arg(peer_member(room, &info.id))
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        Ok(peers.len())
    }

    /// Removes a dead instance's peers from their rooms with `leave` (reason
    /// `timeout`): an immediate will fires first, a delayed one is deferred.
    /// The peers come from the instance's own set, so the cost is its peers,
    /// not the rooms that exist. Every step is conditional, so a second
    /// sweeper after a lost claim repeats nothing.
    pub(super) async fn clean_dead_instance(&self, instance: &str) -> Result<(), BrokerError> {
        if instance == &*self.instance {
            return Ok(());
        }
        // Its peers, from its set in every bucket (one, on a single server;
        // on a cluster each in its own slot, so asked for side by side).
        let members: Vec<Vec<String>> = try_join_all((0..self.layout.buckets()).map(|bucket| {
            let (mut conn, key) = (self.conn(), self.peers_key(instance, bucket));
            async move { conn.smembers(key).await }
        }))
        .await
        .map_err(unavailable)?;
        for member in members.into_iter().flatten() {
            let Ok((room, peer)) = serde_json::from_str::<(String, String)>(&member) else {
                continue;
            };
            let Ok(room) = RoomName::parse(&room) else {
                continue;
            };
            let peer: Arc<str> = Arc::from(peer);
            let user = self.peer(&room, &peer).await?.map(|p| p.user);
            // As for a local close: an immediate will goes out before the
            // leave; a delayed one waits in Redis. Taking the will is
            // atomic, so only one sweeping instance handles it.
            if let Some(will) = self.take_will(&room, &peer).await? {
                if will.after.is_none() {
                    let draft = will.into_draft(peer.clone());
                    if let Err(e) = self.set_retained(&room, draft).await {
                        tracing::warn!(%room, error = %e, "will of a dead instance's peer not fired");
                    }
                } else if let Some(user) = &user {
                    self.defer_will(&room, &peer, user, will).await?;
                }
            }
            self.leave_as(&room, &peer, LeaveReason::Timeout, instance)
                .await?;
        }
        self.forget_instance(instance, false)
            .await
            .map_err(unavailable)?;
        // What it had set to happen later is this instance's to sweep now.
        self.sweep_plan.look_at_all();
        tracing::info!(%instance, "cleaned up after a dead instance");
        Ok(())
    }

    /// Deletes an instance's peer sets and its deadline (and, with
    /// `heartbeat`, its heartbeat key), one command per key: on a cluster
    /// they are in different slots.
    async fn forget_instance(&self, instance: &str, heartbeat: bool) -> redis::RedisResult<()> {
        let mut keys: Vec<String> = (0..self.layout.buckets())
            .map(|bucket| self.peers_key(instance, bucket))
            .collect();
        if heartbeat {
            keys.push(self.instance_key(instance));
        }
        try_join_all(keys.into_iter().map(|key| {
            let mut conn = self.conn();
            async move { conn.del::<_, ()>(key).await }
        }))
        .await?;
        self.conn()
            .zrem(self.due_key(INSTANCE_BUCKET), format!("i:{instance}"))
            .await
    }
}

/// Keeps this instance's heartbeat key alive (and notes whether Redis answers).
pub(super) async fn heartbeat(broker: Arc<RedisBroker>, shutdown: CancellationToken) {
    let every = (broker.settings.instance_ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drained = drained(&broker, &shutdown);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => {
                // The last session has closed (each sent its own leave): only
                // now may the heartbeat go. Deleted earlier, other instances
                // took the draining sessions for dead and fired their wills.
                let _ = broker.forget_instance(&broker.instance, true).await;
                return;
            }
            _ = tick.tick() => {
                if let Err(e) = broker.beat().await {
                    tracing::warn!(error = %e, "redis heartbeat failed");
                }
            }
        }
    }
}

/// Resolves once shutdown has begun and this instance's last session has
/// closed: the heartbeat and the pub/sub connection serve draining sessions
/// until then. Checks every 50 ms, during the drain only.
pub(super) async fn drained(broker: &RedisBroker, shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    let mut check = tokio::time::interval(Duration::from_millis(50));
    while broker.fanout.peer_count() > 0 {
        check.tick().await;
    }
}
