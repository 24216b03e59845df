//! What a host does when other hosts share its database (PostgreSQL): it follows their hints —
//! slots given back, runs canceled, runs orphaned by a lapsed lease — and
//! every second it makes the checks those hints only speed up, since nothing may depend on
//! receiving one: lanes a limit held back are tried again, the timer pass runs (a deadline
//! another host set, or one a stopped host left, is seen within a second), and every few
//! seconds the limits and ready lanes are read again and runs no live host holds are taken over.
//! A cancel hint missed (while the session was reconnecting) is not caught up: that attempt runs
//! to its end, and its record then finds the run canceled.

use super::*;
use crate::store::HostHint;

/// How often a host on a shared database makes the checks hints only speed up.
const PASS_EVERY: Duration = Duration::from_secs(1);

/// Every how many passes the limits and ready lanes are read again.
const RELOAD_EVERY_PASSES: u64 = 5;

impl Engine {
    /// Notes that a limit held by runs executing elsewhere cut a claim of `lane` short: it is
    /// tried again when a slot of its environment comes free, or on the next pass.
    pub(super) fn hold_back(&self, lane: Lane) {
        self.held_back
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lane);
    }

    /// Puts the held-back lanes `which` selects back into the scheduler's rotation.
    fn release_held_back(&self, which: impl Fn(&Lane) -> bool) {
        let lanes: Vec<Lane> = self
            .held_back
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extract_if(|lane| which(lane))
            .collect();
        if !lanes.is_empty() {
            self.activate(lanes);
        }
    }

    /// Follows what other hosts on the database do (see the module doc), if the database is
    /// shared; nothing on SQLite. Ends when the store does.
    pub fn follow_host_hints(self: &Arc<Self>) {
        let Some(mut hints) = self.store.host_hints() else {
            return;
        };
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let mut pass = tokio::time::interval(PASS_EVERY);
            pass.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut passes = 0u64;
            loop {
                let hint = tokio::select! {
                    hint = hints.recv() => match hint {
                        Ok(hint) => Some(hint),
                        // Missed some: the pass below finds the same.
                        Err(RecvError::Lagged(_)) => None,
                        Err(RecvError::Closed) => return,
                    },
                    _ = pass.tick() => None,
                };
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                match hint {
                    Some(hint) => engine.on_host_hint(hint).await,
                    None => {
                        passes += 1;
                        engine
                            .shared_pass(passes.is_multiple_of(RELOAD_EVERY_PASSES))
                            .await;
                    }
                }
            }
        });
    }

    async fn on_host_hint(&self, hint: HostHint) {
        match hint {
            HostHint::Slots(environment_id) => {
                self.release_held_back(|lane| lane.environment_id == environment_id)
            }
            HostHint::Canceled(ids) => {
                for id in ids {
                    if let Some(handle) = self.executing_handle(&id) {
                        handle.cancel();
                    }
                }
            }
            HostHint::Orphans => match self.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(runs = n, "took over runs of a host whose lease lapsed"),
                Err(e) => tracing::warn!(error = %e, "taking over orphaned runs failed"),
            },
        }
    }

    /// The checks hints only speed up.
    async fn shared_pass(&self, reload: bool) {
        self.release_held_back(|_| true);
        if reload {
            if let Err(e) = self.load_scheduler().await {
                tracing::warn!(error = %e, "reading the queues' limits and ready lanes failed");
            }
            // Runs of a lapsed host whose hint was missed, or whose takeover failed midway.
            self.on_host_hint(HostHint::Orphans).await;
        }
        // A deadline set by another host, or left by a stopped one, is due by now perhaps.
        self.wake();
    }
}
