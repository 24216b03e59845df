//! The timer pass: delayed runs whose time came, due waitpoints and token timeouts, ended retry
//! backoffs, TTL expiries and cron fires — each one set-based store call — run once the earliest
//! known deadline (`timer_due`) has come; nothing polls.

use super::*;

/// Timer rows handled per pass, so one pass never holds the writer for long.
pub(super) const TIMER_BATCH: usize = 1_000;

impl Engine {
    /// Makes the dispatcher look at the queue and the timers again (after a clock change, say).
    pub fn wake(&self) {
        self.timer_due.store(i64::MIN, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Makes sure the timer pass runs by `at`. Call it after the deadline's row is committed.
    pub(super) fn arm_timer(&self, at: Option<Millis>) {
        if let Some(at) = at {
            self.timer_arms.fetch_add(1, Ordering::SeqCst);
            self.timer_due.fetch_min(at, Ordering::SeqCst);
        }
    }

    /// Enqueues delayed runs whose time came, expires runs whose TTL passed and fires due cron
    /// schedules, once the earliest known deadline has come.
    pub(super) async fn run_timers(&self) {
        let now = self.now();
        if self.timer_due.load(Ordering::SeqCst) > now {
            return;
        }
        let arms = self.timer_arms.load(Ordering::SeqCst);
        // Both transitions come from the state machine; the store applies them in bulk.
        debug_assert!(
            transition(
                &RunState {
                    status: RunStatus::Delayed,
                    attempt_count: 0,
                    retry: self.config.default_retry,
                    machine: self.config.default_machine,
                    oom_machine: None,
                    checkpointed: false,
                },
                Event::Enqueue,
                now
            )
            .is_ok_and(|t| t.state.status == RunStatus::Queued)
        );
        let expired = RunError::coded("TTL_EXPIRED", "the run did not start before its TTL passed");
        let mut again = false;
        // A failed write (a full disk) is tried again in a second, not at once.
        let mut failed = false;
        let mut log = |what: &str, e: StoreError| {
            failed = true;
            tracing::error!(error = %e, "{what} failed");
        };
        match self.store.enqueue_delayed(now, TIMER_BATCH).await {
            Ok(lanes) => {
                again |= lanes.len() == TIMER_BATCH;
                self.activate(lanes);
            }
            Err(e) => log("enqueuing delayed runs", e),
        }
        match self.store.resume_due(now, TIMER_BATCH).await {
            Ok(lanes) => {
                again |= lanes.len() == TIMER_BATCH;
                self.activate(lanes);
            }
            Err(e) => log("resuming waiting runs", e),
        }
        match self.store.end_backoffs(now, TIMER_BATCH).await {
            Ok(lanes) => {
                again |= lanes.len() == TIMER_BATCH;
                self.activate(lanes);
            }
            Err(e) => log("ending retry backoffs", e),
        }
        match self.store.expire_due(now, expired, TIMER_BATCH).await {
            Ok((n, resumed)) => {
                again |= n == TIMER_BATCH;
                self.activate(resumed);
            }
            Err(e) => log("expiring runs", e),
        }
        let retry_soon = failed.then(|| now.saturating_add(1_000));
        let schedules_next = self.fire_schedules(now).await;
        let next = if again {
            now
        } else {
            match self.store.next_timer().await {
                Ok(next) => next.unwrap_or(i64::MAX),
                Err(e) => {
                    tracing::error!(error = %e, "reading the next timer failed");
                    now.saturating_add(1_000)
                }
            }
        };
        let next = schedules_next.map_or(next, |at| at.min(next));
        let next = retry_soon.map_or(next, |at| at.max(next));
        // A deadline armed while this pass ran may be missing from what it read: then look again
        // at once instead of sleeping past it. Otherwise keep any earlier deadline armed since.
        let next = if self.timer_arms.load(Ordering::SeqCst) == arms {
            next
        } else {
            now
        };
        let _ = self
            .timer_due
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |due| {
                (due <= now).then_some(next)
            });
    }
}
