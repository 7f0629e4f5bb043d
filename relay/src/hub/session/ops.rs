//! What a session does for its client's ops (publish, join, leave, state,
//! will, refresh, ping) and for a token refresh: each answered by an `ack`
//! or an `error` carrying the op's `ref`.

use serde_json::value::RawValue;

use super::{Session, release_room};
use crate::auth::{Principal, Rights};
use crate::broker::Will;
use crate::error::ApiError;
use crate::protocol::{Event, EventId, LeaveReason, Op, RoomName};

impl Session {
    /// Sets this connection's will for a joined room (needs the `retain` right).
    pub async fn set_will(&mut self, room: &RoomName, will: Will) -> Result<(), ApiError> {
        self.principal.require(room, Rights::RETAIN)?;
        if !self.present.contains(room) {
            return Err(ApiError::BadRequest(format!(
                "join room {room} before setting a will"
            )));
        }
        self.hub.broker().put_will(room, &self.id, will).await?;
        Ok(())
    }

    /// Cancels this connection's will for a room.
    pub async fn cancel_will(&mut self, room: &RoomName) -> Result<(), ApiError> {
        self.hub.broker().take_will(room, &self.id).await?;
        Ok(())
    }

    /// Replaces the session's token with a newer one for the same `sub`.
    pub async fn refresh(&mut self, token: &str) -> Result<(), ApiError> {
        let verified = self.hub.auth().verify(token).await;
        self.apply_refresh(verified)
    }

    /// Takes a verified token's principal in place of the session's. Rights
    /// follow the token: every room the new token may not read ends here for
    /// this session, so a refresh never keeps what its token does not grant.
    pub(super) fn apply_refresh(
        &mut self,
        verified: Result<Principal, ApiError>,
    ) -> Result<(), ApiError> {
        let fresh = verified?;
        if fresh.sub != self.principal.sub {
            return Err(ApiError::Forbidden(
                "a refresh token must carry the same sub".into(),
            ));
        }
        let revoked: Vec<RoomName> = self
            .feeds
            .keys()
            .filter(|room| fresh.require(room, Rights::READ).is_err())
            .cloned()
            .collect();
        self.principal = fresh;
        for room in revoked {
            self.revoke(room);
        }
        Ok(())
    }

    /// Ends `room` for this session because its token no longer grants it:
    /// the session's own room ends the session (4403 on a WebSocket, the
    /// stream's last `error` on SSE); a room joined by op is left, with an
    /// `error` `forbidden` naming it, and the session goes on.
    fn revoke(&mut self, room: RoomName) {
        let error = ApiError::Forbidden(format!(
            "the refreshed token does not grant room {room}; it has ended for this session"
        ));
        self.feeds.remove(&room);
        release_room(&self.hub, &room);
        if self.home.as_ref() == Some(&room) {
            // Presence and wills are settled when the session drops.
            self.direct.close(error);
            return;
        }
        if let Some(at) = self.present.iter().position(|r| *r == room) {
            self.present.swap_remove(at);
            let hub = self.hub.clone();
            let id = self.id.clone();
            let left = room.clone();
            // A revoked room is left as by `leave`: the will is cancelled.
            self.hub.tasks().spawn(async move {
                let broker = hub.broker();
                if let Err(e) = broker.take_will(&left, &id).await {
                    tracing::warn!(room = %left, error = %e, "will cancel after revocation failed");
                }
                if let Err(e) = broker.leave(&left, &id, LeaveReason::Closed).await {
                    tracing::warn!(room = %left, error = %e, "leave after revocation failed");
                }
            });
        }
        self.push(error.to_event(None));
    }

    /// Handles one op; its answer (`ack`, `pong` or `error`) is queued as an event.
    pub async fn handle(
        &mut self,
        op: Op,
        reference: Option<Box<RawValue>>,
        default_room: Option<&RoomName>,
    ) {
        let reference = reference.as_deref();
        match self.apply(op, default_room).await {
            Ok(Answer::Pong) => self.push(Event::pong(reference)),
            Ok(Answer::Done(id)) => {
                if let Some(r) = reference {
                    self.push(Event::ack(r, id));
                }
            }
            Err(e) => self.push(e.to_event(reference)),
        }
    }

    async fn apply(&mut self, op: Op, default_room: Option<&RoomName>) -> Result<Answer, ApiError> {
        let room_of = |room: Option<String>| -> Result<RoomName, ApiError> {
            match room {
                Some(r) => Ok(RoomName::parse(&r)?),
                None => default_room
                    .cloned()
                    .ok_or_else(|| ApiError::BadRequest("this op needs a room".into())),
            }
        };
        match op {
            Op::Pub { room, publish } => {
                let room = room_of(room)?;
                self.publishes.take()?;
                let event = self
                    .hub
                    .publish(&self.principal, &room, self.id.clone(), publish)
                    .await?;
                Ok(Answer::Done(event.id()))
            }
            Op::Join { room, since } => {
                let room = room_of(room)?;
                let since = since.map(|s| s.parse::<EventId>()).transpose()?;
                self.join(room, since).await?;
                Ok(Answer::Done(None))
            }
            Op::Will {
                room,
                topic,
                data,
                after,
            } => {
                let room = room_of(room)?;
                self.publishes.take()?;
                match topic {
                    Some(topic) => {
                        let will = Will::new(&topic, data, after)?;
                        self.set_will(&room, will).await?;
                    }
                    None => self.cancel_will(&room).await?,
                }
                Ok(Answer::Done(None))
            }
            Op::Leave { room } => {
                let room = room_of(room)?;
                self.leave(&room).await?;
                Ok(Answer::Done(None))
            }
            Op::State { room, state } => {
                let room = room_of(room)?;
                self.publishes.take()?;
                self.principal.require(&room, Rights::WRITE)?;
                if !self.present.contains(&room) {
                    return Err(ApiError::BadRequest(format!("not joined to room {room}")));
                }
                self.hub.broker().set_state(&room, &self.id, state).await?;
                Ok(Answer::Done(None))
            }
            Op::Refresh { token } => {
                // Verifying may fetch keys: refreshes share the write budget.
                self.publishes.take()?;
                self.refresh(&token).await?;
                Ok(Answer::Done(None))
            }
            Op::Ping => Ok(Answer::Pong),
        }
    }
}

pub(super) enum Answer {
    Done(Option<EventId>),
    Pong,
}
