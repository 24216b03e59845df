//! The dispatcher loop: timers that came due, a plan from the scheduler for the free slots, one
//! claim that starts the planned runs (claim is start), and a task per started attempt. A run
//! holds its slot ([`Slot`]) until its attempt's end is recorded, however it ends; an attempt that
//! ended hands its slot to the next run the scheduler plans, claimed in the write of its end, and
//! its task executes that run next. Free slots are counted from the slots held, not from the
//! tasks (a task goes on after its slot is free, to settle its commits), and finished tasks are
//! reaped all at once.

use super::attempt::Started;
use super::scheduler::Claim;
use super::*;

/// A run's hold on its lane's slot: released when its attempt's end is recorded, however the
/// attempt ends.
pub(super) struct Slot {
    engine: Arc<Engine>,
    lane: Lane,
}

impl Slot {
    pub(super) fn take(engine: &Arc<Engine>, lane: Lane) -> Slot {
        engine.held.fetch_add(1, Ordering::SeqCst);
        Slot {
            engine: engine.clone(),
            lane,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.engine.scheduler().release(&self.lane);
        self.engine.held.fetch_sub(1, Ordering::SeqCst);
        self.engine.wake.notify_one();
    }
}

impl Engine {
    /// Runs the dispatcher until `shutdown` turns true; then waits for executing attempts.
    ///
    /// Each pass: timers that came due, then a plan from the scheduler for the free slots,
    /// claimed and started in one store write. It sleeps until a trigger, a freed slot or the
    /// next timer.
    pub async fn dispatch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        loop {
            // Finished tasks are reaped all at once; their slots were given back already.
            while running.try_join_next().is_some() {}
            self.run_timers().await;
            let free = self
                .config
                .concurrency
                .saturating_sub(self.held.load(Ordering::SeqCst));
            let again = free > 0 && self.claim(free, &mut running).await;
            if *shutdown.borrow() {
                break;
            }
            if again {
                continue;
            }
            // Sleep until something can change: a trigger, a freed slot, or the next timer.
            let due = self.timer_due.load(Ordering::SeqCst);
            let sleep_for =
                Duration::from_millis(due.saturating_sub(self.now()).clamp(0, 3_600_000) as u64);
            tokio::select! {
                _ = self.wake.notified() => {}
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

    /// Plans up to `free` runs, claims and starts them, and spawns their attempts. Returns
    /// whether another pass may find more to start at once (lanes came up short while others are
    /// ready).
    async fn claim(self: &Arc<Self>, free: usize, running: &mut JoinSet<()>) -> bool {
        let plan = self.scheduler().plan(free);
        if plan.is_empty() {
            return false;
        }
        let request = plan.iter().map(|c| (c.lane.clone(), c.count)).collect();
        let staged = match self.store.claim_runs(request, self.now()).await {
            Ok(staged) => staged,
            Err(e) => {
                tracing::error!(error = %e, "claiming runs failed; trying again in a second");
                self.abandon(&plan);
                self.arm_timer(Some(self.now().saturating_add(1_000)));
                return false;
            }
        };
        let (starts, short) = self.started_from(&plan, staged.value, &staged.durable);
        // Lanes that came up short went idle; others may fill the slots left.
        let again = short && starts.len() < free && self.scheduler().has_ready();
        for (started, lane) in starts {
            let slot = Slot::take(self, lane);
            running.spawn(self.clone().execute_guarded(started, slot));
        }
        again
    }

    /// Gives the slots of claims that never reached the store back; their lanes stay as they were.
    pub(super) fn abandon(&self, claims: &[Claim]) {
        let mut scheduler = self.scheduler();
        for claim in claims {
            scheduler.abandoned(claim);
        }
    }

    /// Answers the scheduler for the runs the store claimed for `plan`: the attempts that
    /// started, each with its lane, and whether some lane came up short. Claims the store left
    /// unanswered (a backend that commits an end and the next claim apart, when the claim failed)
    /// give their slots back.
    pub(super) fn started_from(
        &self,
        plan: &[Claim],
        claimed: Vec<Vec<Claimed>>,
        durable: &Durability,
    ) -> (Vec<(Started, Lane)>, bool) {
        let mut starts = Vec::new();
        let mut short = false;
        let answered = claimed.len();
        let mut scheduler = self.scheduler();
        for (claim, claimed) in plan.iter().zip(claimed) {
            let mut found = 0;
            let mut started = 0;
            for c in claimed {
                match c {
                    Claimed::Started {
                        run,
                        start,
                        journal,
                    } => {
                        found += 1;
                        started += 1;
                        starts.push((
                            Started {
                                run: *run,
                                start,
                                journal,
                                durable: durable.clone(),
                            },
                            claim.lane.clone(),
                        ));
                    }
                    // Waits for a deploy now; the lane may still hold runs behind it.
                    Claimed::Parked { .. } => found += 1,
                    // Not a run: the lane's limit is held by runs executing elsewhere.
                    Claimed::Limited => self.hold_back(claim.lane.clone()),
                }
            }
            scheduler.claimed(claim, started);
            if found > started {
                scheduler.activate(claim.lane.clone());
            }
            short |= found < claim.count;
        }
        drop(scheduler);
        self.abandon(plan.get(answered..).unwrap_or_default());
        (starts, short)
    }

    /// Executes attempts one after another on this task: the one it was given, then each run
    /// that took over its slot ([`Engine::execute`]), with the commits each left open settling
    /// beside the next. If an attempt panics (a bug in kiln, never the guest's doing), its run
    /// fails as SYSTEM_FAILURE at once instead of staying executing until the next restart, and
    /// no run takes over after it.
    pub(super) async fn execute_guarded(self: Arc<Self>, started: Started, slot: Slot) {
        use futures_util::{FutureExt, StreamExt};
        let mut settling = futures_util::stream::FuturesUnordered::new();
        let mut next = Some((started, slot));
        while let Some((started, slot)) = next.take() {
            let (id, env) = (started.run.id.clone(), started.run.environment_id.clone());
            let attempt =
                std::panic::AssertUnwindSafe(self.clone().execute(started, slot)).catch_unwind();
            tokio::pin!(attempt);
            let executed = loop {
                tokio::select! {
                    executed = &mut attempt => break executed,
                    Some(_) = settling.next(), if !settling.is_empty() => {}
                }
            };
            match executed {
                Ok((settle, follow)) => {
                    let settle = std::panic::AssertUnwindSafe(settle)
                        .catch_unwind()
                        .map(|r| {
                            if r.is_err() {
                                tracing::error!(
                                    "settling an attempt's commits panicked (a bug: see above)"
                                );
                            }
                        });
                    settling.push(settle);
                    next = follow;
                }
                Err(_) => self.failed_in_panic(&env, &id).await,
            }
        }
        while settling.next().await.is_some() {}
    }

    async fn failed_in_panic(&self, env: &str, id: &str) {
        tracing::error!(run = %id, "executing the run panicked; failing it as SYSTEM_FAILURE");
        let message = "kiln failed while executing the run (a bug: see the host log)".to_owned();
        match self.store.run(env, id).await {
            Ok(Some(run)) if run.status == RunStatus::Executing => {
                self.fail_executing(&run, "SYSTEM_FAILURE", message).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(run = %id, error = %e, "could not fail the run"),
        }
    }
}
