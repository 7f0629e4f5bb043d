//! The deadline sets: time-driven work (dead instances, lapsed retained
//! values, delayed wills) claimed from sorted sets (one per bucket), so its
//! cost follows what is due, not what exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::AsyncCommands;

use super::RedisBroker;
use super::errors::unavailable;
use super::keys::INSTANCE_BUCKET;
use super::records::{DeferredRecord, template_error};
use crate::broker::{BrokerError, DeferredWill, WILL_LEASE, Will};
use crate::protocol::{RoomName, now_ms, payload_from_raw};
use crate::topic::Topic;

impl RedisBroker {
    pub(in crate::broker) async fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        let id = crate::random::random_id(12);
        let record = serde_json::to_string(&DeferredRecord {
            id: &id,
            room: room.as_str(),
            peer,
            user,
            topic: will.topic.as_str(),
            data: &will.data,
            after: will.after.map(|d| d.as_secs_f64()),
        })
        .map_err(|_| template_error())?;
        let delay = will.after.map_or(0, |d| d.as_millis() as u64);
        let _: i64 = self
            .scripts
            .defer_will
            .key(self.due_key(self.bucket(room)))
            .arg(format!("w:{record}"))
            .arg(delay)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.sweep_plan
            .expect(self.bucket(room), self.redis_now().saturating_add(delay));
        Ok(())
    }

    /// A claimed `w:` member as the will it holds (`None` when unreadable).
    pub(super) fn deferred_will(member: &str) -> Option<DeferredWill> {
        let record = member.strip_prefix("w:")?;
        let r = serde_json::from_str::<DeferredRecord<'_>>(record).ok()?;
        Some(DeferredWill {
            room: RoomName::parse(r.room).ok()?,
            peer: Arc::from(r.peer),
            user: Arc::from(r.user),
            will: Will::new(r.topic, payload_from_raw(r.data), r.after).ok()?,
            id: r.id.to_owned(),
            handle: member.to_owned(),
        })
    }

    pub(in crate::broker) async fn settle_will(
        &self,
        will: &DeferredWill,
    ) -> Result<(), BrokerError> {
        let _: i64 = self
            .conn()
            .zrem(self.due_key(self.bucket(&will.room)), &will.handle)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The time-driven work, from deadline sets only, so that its cost
    /// follows what is due, not what exists: dead instances (their peers
    /// leave, their wills fire or wait), lapsed retained values (cleared and
    /// announced), delayed wills. Every instance sweeps; claims and
    /// conditional scripts make each step happen once. On one server that is
    /// one command a second when nothing is due; on a cluster, the instance
    /// bucket every second and each other bucket when something this
    /// instance set there falls due, after another instance died (what it
    /// set is found then), or every [`RECHECK_MS`]. Rooms leave the index
    /// when a leave or a clear empties them.
    pub(in crate::broker) async fn sweep(
        &self,
        now: u64,
    ) -> Result<Vec<DeferredWill>, BrokerError> {
        // `now` on Redis's clock, where the deadlines are.
        let at = self.on_redis_clock(now);
        let judge = self.may_judge_others();
        let mut wills = Vec::new();
        for bucket in 0..self.layout.buckets() {
            if !self.sweep_plan.is_due(bucket, at) {
                continue;
            }
            let (next, members) = self.claim_due(bucket, at, judge).await?;
            self.sweep_plan.looked(bucket, at, next);
            for member in members {
                if let Some(will) = self.run_due(bucket, &member).await? {
                    wills.push(will);
                }
            }
        }
        Ok(wills)
    }

    /// Does what one claimed deadline asks; a delayed will is returned for
    /// the hub to fire (or drop), then settle.
    async fn run_due(
        &self,
        bucket: u32,
        member: &str,
    ) -> Result<Option<DeferredWill>, BrokerError> {
        let Some((kind, rest)) = member.split_once(':') else {
            return Ok(None);
        };
        match kind {
            // An instance whose heartbeat stopped (claimed only when this
            // instance may judge: not right after a break of its own).
            "i" => self.clean_dead_instance(rest).await?,
            // A retained value whose lifetime ended: cleared, announced as null.
            "x" => {
                if let Ok((room, topic, id, from)) =
                    serde_json::from_str::<(String, String, String, String)>(rest)
                    && let (Ok(room), Ok(topic)) = (RoomName::parse(&room), Topic::parse(&topic))
                {
                    self.clear(&room, &topic, Arc::from(from), Some(&id), None)
                        .await?;
                }
                let _: i64 = self
                    .conn()
                    .zrem(self.due_key(bucket), member)
                    .await
                    .map_err(unavailable)?;
            }
            "w" => match Self::deferred_will(member) {
                Some(will) => return Ok(Some(will)),
                None => {
                    tracing::warn!("dropping an unreadable pending will");
                    let _: i64 = self
                        .conn()
                        .zrem(self.due_key(bucket), member)
                        .await
                        .map_err(unavailable)?;
                }
            },
            _ => {}
        }
        Ok(None)
    }

    /// Claims up to 100 members of a bucket's deadline set due by `at` (see
    /// `CLAIM_DUE`): one command when none is due. Returns the set's
    /// earliest time after the claim, and the claimed members.
    pub(super) async fn claim_due(
        &self,
        bucket: u32,
        at: u64,
        instances: bool,
    ) -> Result<(Option<u64>, Vec<String>), BrokerError> {
        let mut reply: Vec<String> = self
            .scripts
            .claim_due
            .key(self.due_key(bucket))
            .arg(at)
            .arg(100)
            .arg(WILL_LEASE.as_millis() as u64)
            .arg(if instances { "1" } else { "0" })
            // The next time matters only where buckets are skipped.
            .arg(if self.layout.buckets() > 1 { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if reply.is_empty() {
            return Ok((None, reply));
        }
        let next = reply.remove(0).parse::<f64>().ok().map(|t| t as u64);
        Ok((next, reply))
    }

    /// Now on Redis's clock, as last measured.
    pub(super) fn redis_now(&self) -> u64 {
        self.on_redis_clock(now_ms())
    }
}

/// How often (ms) a bucket's deadline set is looked at when this instance
/// knows of nothing due in it. Deadlines are swept by the instance that set
/// them; when one dies, the instance that cleans up after it looks at every
/// bucket (see [`SweepPlan::look_at_all`]). This is the backstop for
/// anything else.
pub const RECHECK_MS: u64 = 600_000;

/// When each bucket's deadline set next needs a look, as far as this
/// instance knows (its own deadlines, and the earliest one it last saw).
pub(super) struct SweepPlan {
    next: Vec<AtomicU64>,
    looked: Vec<AtomicU64>,
}

impl SweepPlan {
    /// A plan that looks at every bucket on the first sweep.
    pub(super) fn new(buckets: u32) -> SweepPlan {
        SweepPlan {
            next: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            looked: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether a sweep at `at` looks at `bucket`: the instance bucket (dead
    /// instances) always; another when something in it is due, or it has
    /// not been looked at for [`RECHECK_MS`].
    pub(super) fn is_due(&self, bucket: u32, at: u64) -> bool {
        let b = bucket as usize;
        bucket == INSTANCE_BUCKET
            || at >= self.next[b].load(Ordering::Relaxed)
            || at
                >= self.looked[b]
                    .load(Ordering::Relaxed)
                    .saturating_add(RECHECK_MS)
    }

    /// Notes a look at `bucket` at `at`, and its earliest remaining time.
    pub(super) fn looked(&self, bucket: u32, at: u64, next: Option<u64>) {
        let b = bucket as usize;
        self.looked[b].store(at, Ordering::Relaxed);
        self.next[b].store(next.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Looks at every bucket on the next sweep: after an instance died, the
    /// deadlines it set (and the claims it held) are this instance's to find.
    pub(super) fn look_at_all(&self) {
        for next in &self.next {
            next.store(0, Ordering::Relaxed);
        }
    }

    /// Notes a deadline this instance set in `bucket`.
    pub(super) fn expect(&self, bucket: u32, at: u64) {
        if let Some(next) = self.next.get(bucket as usize) {
            next.fetch_min(at, Ordering::Relaxed);
        }
    }
}
