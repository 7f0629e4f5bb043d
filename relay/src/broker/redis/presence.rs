//! Presence, wills and the room index: who is in a room, on which
//! instance, and what they leave behind.

use std::collections::HashMap;
use std::sync::Arc;

use redis::{AsyncCommands, Value};

use super::errors::unavailable;
use super::keys::Layout;
use super::records::{PeerRecord, WillRecord, peer_member, template_error};
use super::{LocalPeer, RedisBroker};
use crate::broker::{BrokerError, Joined, RoomPage, RoomSnapshot, RoomSummary, Will};
use crate::protocol::{
    Event, LeaveReason, Payload, PeerInfo, PeerList, RoomName, payload_from_raw,
};

impl RedisBroker {
    pub(super) async fn presence(
        &self,
        room: &RoomName,
    ) -> Result<Vec<(String, u64, PeerInfo)>, BrokerError> {
        let all: HashMap<String, String> = self
            .conn()
            .hgetall(self.key(room, "presence"))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<(String, u64, PeerInfo)> = all
            .into_values()
            .filter_map(|v| parse_presence(&v))
            .collect();
        out.sort_by_key(|(_, order, _)| *order);
        Ok(out)
    }

    pub(in crate::broker) async fn join(
        &self,
        room: &RoomName,
        peer: PeerInfo,
    ) -> Result<Joined, BrokerError> {
        let peer_json = serde_json::to_string(&peer).map_err(|_| template_error())?;
        let event = Event::join(room, &peer);
        let _: i64 = self
            .scripts
            .join
            .key(self.key(room, "presence"))
            .key(self.key(room, "order"))
            .key(self.rooms_key(self.bucket(room)))
            .key(self.peers_key(&self.instance, self.bucket(room)))
            .arg(&*peer.id)
            .arg(&*self.instance)
            .arg(peer_json)
            .arg(event.json())
            .arg(self.channel(room))
            .arg(room.as_str())
            .arg(peer_member(room, &peer.id))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // Known as this instance's own only once Redis holds it: a join
        // that failed is never re-asserted.
        self.local_peers().insert(
            (room.clone(), peer.id.clone()),
            LocalPeer {
                info: peer.clone(),
                will: None,
            },
        );
        let mut snapshot = self.snapshot(room).await?;
        snapshot.peers.retain(|p| p.id != peer.id);
        Ok(Joined {
            peers: PeerList::Own(snapshot.peers),
            last_id: snapshot.last_id,
        })
    }

    pub(super) async fn leave_as(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
        instance: &str,
    ) -> Result<bool, BrokerError> {
        let event = Event::leave(room, peer, reason);
        let removed: i64 = self
            .scripts
            .leave
            .key(self.key(room, "presence"))
            .key(self.key(room, "retained"))
            .key(self.rooms_key(self.bucket(room)))
            .arg(&**peer)
            .arg(event.json())
            .arg(self.channel(room))
            .arg(instance)
            .arg(self.peers_key_prefix(self.bucket(room)))
            .arg(peer_member(room, peer))
            .arg(room.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    pub(in crate::broker) async fn leave(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
    ) -> Result<(), BrokerError> {
        self.local_peers().remove(&(room.clone(), peer.clone()));
        self.leave_as(room, peer, reason, "").await.map(|_| ())
    }

    /// This instance's own peers, as it last told Redis.
    pub(super) fn local_peers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(RoomName, Arc<str>), LocalPeer>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(in crate::broker) async fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        state: Payload,
    ) -> Result<(), BrokerError> {
        let missing = || BrokerError::NoSuchPeer {
            room: room.to_string(),
            peer: peer.to_string(),
        };
        for _ in 0..3 {
            let current: Option<String> = self
                .conn()
                .hget(self.key(room, "presence"), &**peer)
                .await
                .map_err(unavailable)?;
            let current = current.ok_or_else(missing)?;
            let Some((instance, order, mut info)) = parse_presence(&current) else {
                return Err(missing());
            };
            info.state = state.clone();
            let peer_json = serde_json::to_string(&info).map_err(|_| template_error())?;
            let event = Event::state(room, peer, &state);
            let done: i64 = self
                .scripts
                .set_state
                .key(self.key(room, "presence"))
                .arg(&**peer)
                .arg(&current)
                .arg(format!("{instance}\t{order}\t{peer_json}"))
                .arg(event.json())
                .arg(self.channel(room))
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if done == 1 {
                if let Some(local) = self.local_peers().get_mut(&(room.clone(), peer.clone())) {
                    local.info.state = state;
                }
                return Ok(());
            }
        }
        Err(BrokerError::Unavailable)
    }

    pub(in crate::broker) async fn snapshot(
        &self,
        room: &RoomName,
    ) -> Result<RoomSnapshot, BrokerError> {
        let peers = self
            .presence(room)
            .await?
            .into_iter()
            .map(|(_, _, p)| p)
            .collect();
        let last_id = self.stream_info(room).await?.and_then(|info| info.last);
        Ok(RoomSnapshot { peers, last_id })
    }

    pub(in crate::broker) async fn peer(
        &self,
        room: &RoomName,
        peer: &str,
    ) -> Result<Option<PeerInfo>, BrokerError> {
        let value: Option<String> = self
            .conn()
            .hget(self.key(room, "presence"), peer)
            .await
            .map_err(unavailable)?;
        Ok(value.as_deref().and_then(parse_presence).map(|(_, _, p)| p))
    }

    /// A page of the room index. On one server the cursor is the index's
    /// SSCAN cursor; on a cluster it is `<bucket>-<cursor>`, and a short page
    /// goes on into the next buckets (at most one round trip per bucket).
    pub(in crate::broker) async fn rooms(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RoomPage, BrokerError> {
        let buckets = self.layout.buckets();
        let (mut bucket, mut scan): (u32, u64) = match cursor {
            None => (0, 0),
            Some(c) => match c.split_once('-') {
                Some((b, n)) => (
                    b.parse().map_err(|_| BrokerError::BadCursor)?,
                    n.parse().map_err(|_| BrokerError::BadCursor)?,
                ),
                None => (0, c.parse().map_err(|_| BrokerError::BadCursor)?),
            },
        };
        if bucket >= buckets {
            return Err(BrokerError::BadCursor);
        }
        let limit = limit.max(1);
        let mut rooms = Vec::new();
        let mut trips = 0;
        let next = loop {
            let (next, page) = self.rooms_page(bucket, scan, limit - rooms.len()).await?;
            rooms.extend(page);
            trips += 1;
            match next {
                Some(n) => scan = n,
                None if bucket + 1 < buckets => (bucket, scan) = (bucket + 1, 0),
                None => break None,
            }
            if rooms.len() >= limit || trips >= ROOM_PAGE_TRIPS {
                break Some(match self.layout {
                    Layout::Single => scan.to_string(),
                    Layout::Cluster => format!("{bucket}-{scan}"),
                });
            }
        };
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(RoomPage { rooms, next })
    }

    /// One SSCAN page of a bucket's room index with each room's counts (see
    /// `ROOMS_PAGE`); the next cursor, `None` at the end of the bucket.
    async fn rooms_page(
        &self,
        bucket: u32,
        cursor: u64,
        limit: usize,
    ) -> Result<(Option<u64>, Vec<RoomSummary>), BrokerError> {
        let reply: Vec<Value> = self
            .scripts
            .rooms_page
            .key(self.rooms_key(bucket))
            .arg(cursor)
            .arg(limit.max(1))
            .arg(self.room_key_prefix(bucket))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut items = reply.into_iter();
        let next: u64 = items
            .next()
            .and_then(|v| redis::from_redis_value::<String>(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut rooms = Vec::new();
        while let (Some(room), Some(peers), Some(topics)) =
            (items.next(), items.next(), items.next())
        {
            let room: Option<String> = redis::from_redis_value(room).ok();
            let peers: usize = redis::from_redis_value(peers).unwrap_or(0);
            let topics: usize = redis::from_redis_value(topics).unwrap_or(0);
            if let Some(room) = room.and_then(|r| RoomName::parse(&r).ok()) {
                rooms.push(RoomSummary {
                    room,
                    peers,
                    topics,
                });
            }
        }
        Ok(((next != 0).then_some(next), rooms))
    }

    pub(in crate::broker) async fn put_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        let record = serde_json::to_string(&WillRecord {
            topic: will.topic.as_str(),
            data: &will.data,
            after: will.after.map(|d| d.as_secs_f64()),
        })
        .map_err(|_| template_error())?;
        let _: () = self
            .conn()
            .hset(self.key(room, "wills"), &**peer, &record)
            .await
            .map_err(unavailable)?;
        if let Some(local) = self.local_peers().get_mut(&(room.clone(), peer.clone())) {
            local.will = Some(record);
        }
        Ok(())
    }

    pub(in crate::broker) async fn take_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
    ) -> Result<Option<Will>, BrokerError> {
        if let Some(local) = self.local_peers().get_mut(&(room.clone(), peer.clone())) {
            local.will = None;
        }
        let record: Option<String> = self
            .scripts
            .take_will
            .key(self.key(room, "wills"))
            .arg(&**peer)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(record.as_deref().and_then(|r| {
            let rec: WillRecord<'_> = serde_json::from_str(r).ok()?;
            Will::new(rec.topic, payload_from_raw(rec.data), rec.after).ok()
        }))
    }
}

/// Parses `<instance>\t<order>\t<peer json>`.
pub(super) fn parse_presence(value: &str) -> Option<(String, u64, PeerInfo)> {
    let mut parts = value.splitn(3, '\t');
    let instance = parts.next()?.to_owned();
    let order = parts.next()?.parse().ok()?;
    let record: PeerRecord = serde_json::from_str(parts.next()?).ok()?;
    Some((
        instance,
        order,
        PeerInfo {
            id: Arc::from(record.id),
            user: Arc::from(record.user),
            meta: payload_from_raw(&record.meta),
            state: payload_from_raw(&record.state),
        },
    ))
}

/// Most round trips one page of `GET /rooms` makes on a cluster, going on
/// through buckets whose part of the index is short or empty: a page of a
/// sparse index still shows what there is (each trip is one small script).
const ROOM_PAGE_TRIPS: usize = super::keys::CLUSTER_BUCKETS as usize;
