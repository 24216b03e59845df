//! Queues and environment limits as the engine sees them: the scheduler's copy of every limit and
//! pause flag (changed here together with the store), the lanes it knows to have ready runs, and
//! the queue/environment views the API shows (with the runs holding slots now).

use super::*;
use crate::store::LaneHint;

/// A queue with the runs it holds and the runs waiting in it.
#[derive(Debug, Clone)]
pub struct QueueStats {
    pub queue: Queue,
    /// Runs holding a slot (DEQUEUED or EXECUTING).
    pub running: u32,
    /// Runs waiting (QUEUED, including retry backoff).
    pub queued: u64,
}

/// An environment with the concurrency limit in force and the runs holding a slot.
#[derive(Debug, Clone)]
pub struct EnvironmentLimit {
    pub environment: Environment,
    pub concurrency_limit: u32,
    pub running: u32,
    /// Outbound HTTP rules of the environment's tasks.
    pub allowed_outbound_hosts: Vec<String>,
}

pub(super) fn queue_ref_name(queue: &QueueRef) -> String {
    match queue {
        QueueRef::Id(id) => id.clone(),
        QueueRef::Task(task) => format!("{TASK_QUEUE_PREFIX}{task}"),
        QueueRef::Custom(name) => name.clone(),
    }
}

impl Engine {
    pub(super) fn scheduler(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the scheduler these lanes may have ready runs, and wakes the dispatcher.
    pub(super) fn activate(&self, lanes: impl IntoIterator<Item = Lane>) {
        let mut scheduler = self.scheduler();
        for lane in lanes {
            scheduler.activate(lane);
        }
        drop(scheduler);
        self.wake.notify_one();
    }

    /// Follows the store's lane hints, if its database is shared (see
    /// [`crate::store::Store::lane_hints`]): each lane named is activated, as one this host
    /// queued would be; a hint for every lane of an environment (or for all, after hints were
    /// missed) reads the ready lanes again. Ends when the store does.
    pub fn follow_lane_hints(self: &Arc<Self>) {
        let Some(mut hints) = self.store.lane_hints() else {
            return;
        };
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let hint = match hints.recv().await {
                    Ok(hint) => hint,
                    Err(RecvError::Lagged(_)) => LaneHint::All,
                    Err(RecvError::Closed) => return,
                };
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                match hint {
                    LaneHint::Lane(lane) => engine.activate([lane]),
                    LaneHint::Environment(environment_id) => match engine.store.ready_lanes().await
                    {
                        Ok(lanes) => engine.activate(
                            lanes
                                .into_iter()
                                .filter(|l| l.environment_id == environment_id),
                        ),
                        Err(e) => tracing::warn!(error = %e, "reading ready lanes failed"),
                    },
                    LaneHint::All => match engine.store.ready_lanes().await {
                        Ok(lanes) => engine.activate(lanes),
                        Err(e) => tracing::warn!(error = %e, "reading ready lanes failed"),
                    },
                }
            }
        });
    }

    pub(super) fn apply_queue(&self, queue: &Queue) {
        self.scheduler().set_queue(
            &queue.environment_id,
            &queue.name,
            QueueLimits {
                limit: queue.effective_limit(),
                paused: queue.paused,
            },
        );
    }

    /// Loads what the scheduler needs from the store: queue and environment limits, and the lanes
    /// with ready runs. Called once at start, before the API serves and the dispatcher runs.
    pub async fn load_scheduler(&self) -> Result<(), EngineError> {
        for env in self.store.environments().await? {
            self.scheduler()
                .set_environment_limit(&env.environment.id, env.concurrency_limit);
        }
        for queue in self.store.all_queues().await? {
            self.apply_queue(&queue);
        }
        self.activate(self.store.ready_lanes().await?);
        Ok(())
    }

    /// A queue of the environment with the runs it holds now.
    pub async fn queue(
        &self,
        env: &Environment,
        queue: QueueRef,
    ) -> Result<QueueStats, EngineError> {
        let shown = queue_ref_name(&queue);
        let queue = self
            .store
            .queue(&env.id, queue)
            .await?
            .ok_or(EngineError::QueueNotFound(shown))?;
        self.queue_stats(queue).await
    }

    pub(super) async fn queue_stats(&self, queue: Queue) -> Result<QueueStats, EngineError> {
        let queued = self
            .store
            .queued_count(&queue.environment_id, &queue.name)
            .await?;
        let running = match self
            .store
            .shared_holding(&queue.environment_id, Some(&queue.name))
            .await
        {
            Some(counted) => counted?,
            None => self
                .scheduler()
                .queue_running(&queue.environment_id, &queue.name),
        };
        Ok(QueueStats {
            queue,
            running,
            queued,
        })
    }

    /// One page of the environment's queues, and how many there are.
    pub async fn list_queues(
        &self,
        env: &Environment,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<QueueStats>, u64), EngineError> {
        let (queues, total) = self.store.list_queues(&env.id, offset, limit).await?;
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            out.push(self.queue_stats(queue).await?);
        }
        Ok((out, total))
    }

    /// Pauses (no run of the queue starts; executing ones finish) or resumes a queue.
    pub async fn pause_queue(
        &self,
        env: &Environment,
        queue: QueueRef,
        paused: bool,
    ) -> Result<QueueStats, EngineError> {
        let shown = queue_ref_name(&queue);
        let changed = self
            .store
            .set_queue_paused(&env.id, queue, paused, self.now())
            .await?;
        self.queue_changed(changed, shown).await
    }

    /// After a queue's settings changed in the store: the scheduler applies them at once.
    pub(super) async fn queue_changed(
        &self,
        changed: Option<Queue>,
        shown: String,
    ) -> Result<QueueStats, EngineError> {
        let queue = changed.ok_or(EngineError::QueueNotFound(shown))?;
        self.apply_queue(&queue);
        self.wake.notify_one();
        self.queue_stats(queue).await
    }

    /// Overrides a queue's concurrency limit (`None`: back to the limit its definition sets). The
    /// limit may not exceed the environment's.
    pub async fn override_queue_limit(
        &self,
        env: &Environment,
        queue: QueueRef,
        limit: Option<u32>,
    ) -> Result<QueueStats, EngineError> {
        if let Some(limit) = limit {
            let environment_limit = self.scheduler().environment_limit(&env.id);
            if limit > environment_limit {
                return Err(EngineError::LimitAboveEnvironment {
                    limit,
                    environment_limit,
                });
            }
        }
        let shown = queue_ref_name(&queue);
        let changed = self
            .store
            .override_queue_limit(&env.id, queue, limit, self.now())
            .await?;
        self.queue_changed(changed, shown).await
    }

    /// Changes an environment's concurrency limit and limits (see [`EnvironmentChange`]). `None`
    /// if there is no such environment.
    pub async fn update_environment(
        &self,
        project: &str,
        environment: &str,
        change: EnvironmentChange,
    ) -> Result<Option<EnvironmentLimit>, EngineError> {
        let Some(info) = self
            .store
            .update_environment(project, environment, change)
            .await?
        else {
            return Ok(None);
        };
        self.scheduler()
            .set_environment_limit(&info.environment.id, info.concurrency_limit);
        self.wake.notify_one();
        Ok(Some(self.environment_limit(info).await?))
    }

    /// Every environment with its limit and the runs it holds now.
    pub async fn environments(&self) -> Result<Vec<EnvironmentLimit>, EngineError> {
        let mut out = Vec::new();
        for info in self.store.environments().await? {
            out.push(self.environment_limit(info).await?);
        }
        Ok(out)
    }

    /// An environment's limit in force and the runs holding its slots (on every host, when the
    /// database is shared).
    pub(super) async fn environment_limit(
        &self,
        info: crate::store::EnvironmentInfo,
    ) -> Result<EnvironmentLimit, EngineError> {
        let shared = self
            .store
            .shared_holding(&info.environment.id, None)
            .await
            .transpose()?;
        let scheduler = self.scheduler();
        Ok(EnvironmentLimit {
            concurrency_limit: scheduler.environment_limit(&info.environment.id),
            running: shared.unwrap_or_else(|| scheduler.environment_running(&info.environment.id)),
            environment: info.environment,
            allowed_outbound_hosts: info.allowed_outbound_hosts,
        })
    }
}
