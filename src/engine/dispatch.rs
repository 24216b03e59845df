//! The dispatcher loop: timers that came due, a plan from the scheduler for the free slots, one
//! claim transaction, and a task per claimed run. A run holds its slot ([`Slot`]) until its
//! attempt's task ends, however it ends.

use super::*;

/// A run's hold on its lane's slot: released when the attempt's task ends, however it ends.
pub(super) struct Slot {
    engine: Arc<Engine>,
    lane: Lane,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.engine.scheduler().release(&self.lane);
        self.engine.wake.notify_one();
    }
}

impl Engine {
    /// Runs the dispatcher until `shutdown` turns true; then waits for executing attempts.
    ///
    /// Each pass: timers that came due, then a plan from the scheduler for the free slots, claimed
    /// from the store in one transaction. It sleeps until a trigger, a finished attempt or the next
    /// timer.
    pub async fn dispatch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.load_scheduler().await {
            tracing::error!(error = %e, "loading the queues failed; queued runs start as they are triggered again");
        }
        let mut running = JoinSet::new();
        loop {
            self.run_timers().await;
            let free = self.config.concurrency.saturating_sub(running.len());
            let mut again = false;
            if free > 0 {
                let plan = self.scheduler().plan(free);
                if !plan.is_empty() {
                    let request = plan.iter().map(|c| (c.lane.clone(), c.count)).collect();
                    match self.store.claim_lanes(request, self.now()).await {
                        Ok(lanes) => {
                            let mut started = Vec::new();
                            let mut short = false;
                            let mut scheduler = self.scheduler();
                            for (claim, runs) in plan.iter().zip(lanes) {
                                scheduler.claimed(claim, runs.len());
                                short |= runs.len() < claim.count;
                                started.extend(runs.into_iter().map(|r| (r, claim.lane.clone())));
                            }
                            // Lanes that came up short went idle; others may fill the slots left.
                            again = short && started.len() < free && scheduler.has_ready();
                            drop(scheduler);
                            for (run, lane) in started {
                                let slot = Slot {
                                    engine: self.clone(),
                                    lane,
                                };
                                running.spawn(self.clone().execute_guarded(run, slot));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "claiming runs failed; trying again in a second");
                            let mut scheduler = self.scheduler();
                            for claim in &plan {
                                scheduler.abandoned(claim);
                            }
                            drop(scheduler);
                            self.arm_timer(Some(self.now().saturating_add(1_000)));
                        }
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
            if again {
                continue;
            }
            // Sleep until something can change: a trigger, a finished attempt, or the next timer.
            let due = self.timer_due.load(Ordering::SeqCst);
            let sleep_for =
                Duration::from_millis(due.saturating_sub(self.now()).clamp(0, 3_600_000) as u64);
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(sleep_for) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        while running.join_next().await.is_some() {}
    }

    /// [`Engine::execute`], and if it panics (a bug in kiln, never the guest's doing), the run
    /// fails as SYSTEM_FAILURE at once instead of staying claimed until the next restart.
    pub(super) async fn execute_guarded(self: Arc<Self>, run: Run, slot: Slot) {
        use futures_util::FutureExt;
        let (id, env) = (run.id.clone(), run.environment_id.clone());
        let executed = std::panic::AssertUnwindSafe(self.clone().execute(run, slot))
            .catch_unwind()
            .await;
        if executed.is_ok() {
            return;
        }
        tracing::error!(run = %id, "executing the run panicked; failing it as SYSTEM_FAILURE");
        let message = "kiln failed while executing the run (a bug: see the host log)".to_owned();
        match self.store.run(&env, &id).await {
            Ok(Some(run)) if run.status == RunStatus::Executing => {
                let attempt = run.attempt_count;
                self.fail_started(&run, &run_state(&run), attempt, message)
                    .await;
            }
            Ok(Some(run)) if run.status == RunStatus::Dequeued => {
                self.fail_unstarted(&run, "SYSTEM_FAILURE", message).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(run = %id, error = %e, "could not fail the run"),
        }
    }
}
