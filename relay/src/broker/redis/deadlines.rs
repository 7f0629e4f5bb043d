//! The deadline set: time-driven work (dead instances, lapsed retained
//! values, delayed wills) claimed from one sorted set, so its cost follows
//! what is due, not what exists.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::RedisBroker;
use super::errors::unavailable;
use super::records::{DeferredRecord, template_error};
use crate::broker::{BrokerError, DeferredWill, WILL_LEASE, Will};
use crate::protocol::{RoomName, payload_from_raw};
use crate::topic::Topic;

impl RedisBroker {
    pub(in crate::broker) async fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        let id = crate::hub::random_id(12);
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
            .key(self.due_key())
            .arg(format!("w:{record}"))
            .arg(delay)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
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
            .zrem(self.due_key(), &will.handle)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The time-driven work, from deadline sets only, so that its cost
    /// follows what is due, not what exists: dead instances (their peers
    /// leave, their wills fire or wait), lapsed retained values (cleared and
    /// announced), delayed wills. One command a second when nothing is due. Every
    /// instance sweeps; claims and conditional scripts make each step happen
    /// once. Rooms leave the index when a leave or a clear empties them.
    pub(in crate::broker) async fn sweep(
        &self,
        now: u64,
    ) -> Result<Vec<DeferredWill>, BrokerError> {
        // `now` on Redis's clock, where the deadlines are.
        let at = (now as i64 + self.clock_offset_ms.load(Ordering::Relaxed)).max(0) as u64;
        let judge = self.may_judge_others();
        let mut wills = Vec::new();
        for member in self.claim_due(&self.due_key(), at, judge).await? {
            let Some((kind, rest)) = member.split_once(':') else {
                continue;
            };
            match kind {
                // An instance whose heartbeat stopped (claimed only when this
                // instance may judge: not right after a break of its own).
                "i" => self.clean_dead_instance(rest).await?,
                // A retained value whose lifetime ended: cleared, announced as null.
                "x" => {
                    if let Ok((room, topic, id, from)) =
                        serde_json::from_str::<(String, String, String, String)>(rest)
                        && let (Ok(room), Ok(topic)) =
                            (RoomName::parse(&room), Topic::parse(&topic))
                    {
                        self.clear(&room, &topic, Arc::from(from), Some(&id), None)
                            .await?;
                    }
                    let _: i64 = self
                        .conn()
                        .zrem(self.due_key(), &member)
                        .await
                        .map_err(unavailable)?;
                }
                // A delayed will: for the hub to fire (or drop), then settle.
                "w" => match Self::deferred_will(&member) {
                    Some(will) => wills.push(will),
                    None => {
                        tracing::warn!("dropping an unreadable pending will");
                        let _: i64 = self
                            .conn()
                            .zrem(self.due_key(), &member)
                            .await
                            .map_err(unavailable)?;
                    }
                },
                _ => {}
            }
        }
        Ok(wills)
    }

    /// Claims up to 100 members of a deadline set due by `at` (see
    /// `CLAIM_DUE`): one command when none is due.
    pub(super) async fn claim_due(
        &self,
        key: &str,
        at: u64,
        instances: bool,
    ) -> Result<Vec<String>, BrokerError> {
        self.scripts
            .claim_due
            .key(key)
            .arg(at)
            .arg(100)
            .arg(WILL_LEASE.as_millis() as u64)
            .arg(if instances { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }
}
