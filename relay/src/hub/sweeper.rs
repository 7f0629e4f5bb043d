//! The hub's one timer: every [`SWEEP_INTERVAL`], the guard's and the
//! broker's sweep (lapsed retained values, old history), then the deferred
//! wills that came due.

use super::{Hub, SWEEP_INTERVAL};
use crate::idempotency::Once;
use crate::protocol::now_ms;

impl Hub {
    /// Runs the broker's sweep every [`SWEEP_INTERVAL`] until shutdown.
    pub fn start_sweeper(&self) {
        let hub = self.clone();
        self.tasks().spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = hub.shutdown().cancelled() => return,
                    _ = tick.tick() => {
                        hub.guard().sweep();
                        hub.sweep_broker().await;
                    }
                }
            }
        });
    }

    /// One broker sweep, then the deferred wills it found due.
    async fn sweep_broker(&self) {
        match self.broker().sweep(now_ms()).await {
            Ok(due) => self.fire_due_wills(due).await,
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }

    /// Fires each deferred will that is due, unless a session of its user is
    /// back in its room (a reload, a reconnect to another instance). The
    /// will's idempotency key makes it fire once even if two instances reach
    /// it (an instance died after firing and before settling it).
    async fn fire_due_wills(&self, due: Vec<crate::broker::DeferredWill>) {
        for deferred in due {
            let room = &deferred.room;
            let user_back = match self.broker().snapshot(room).await {
                Ok(snapshot) => snapshot.peers.iter().any(|p| p.user == deferred.user),
                Err(e) => {
                    // Left claimed: it is tried again when its lease ends.
                    tracing::warn!(%room, error = %e, "will not fired yet: presence unknown");
                    continue;
                }
            };
            if !user_back {
                let mut draft = deferred.will.clone().into_draft(deferred.peer.clone());
                draft.once = Some(Once {
                    scope: format!("will:{}", deferred.id),
                    fingerprint: "will".into(),
                });
                if let Err(e) = self.broker().set_retained(room, draft).await {
                    tracing::warn!(%room, error = %e, "will not fired yet");
                    continue;
                }
                tracing::info!(%room, peer = %deferred.peer, "fired a delayed will");
            }
            if let Err(e) = self.broker().settle_will(&deferred).await {
                tracing::warn!(%room, error = %e, "settling a will failed");
            }
        }
    }
}
